"""Query helpers over evalkit's exact k-NN primitives, for the tests.

Each is a few lines over :func:`evalkit.metrics.primitives.knn.prepare`, ``knn_self_sq`` and
``sphere_pass`` (what prdc/authpct/realism use); the tests compare them with brute-force and
reference-package distances.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from evalkit.devices import resolve_device
from evalkit.metrics.primitives.knn import knn_self_sq, knn_sq, prepare, sphere_pass


def kth_neighbour_distance(
    x: Any,
    k: int,
    exclude_self: bool = True,
    *,
    device: Any = None,
) -> torch.Tensor:
    """Exact Euclidean distance from every row of ``x`` to its k-th nearest neighbour in ``x``.

    With ``exclude_self`` (the PRDC / improved-precision-recall convention) the row itself does not
    count: this equals ``prdc``'s ``compute_nearest_neighbour_distances(x, k)``, i.e. the
    (k+1)-th smallest entry of each row of the full distance matrix. Without it, the row itself is
    its own first neighbour (distance 0).

    Returns:
        float64 tensor of N distances on ``device``.
    """
    if not exclude_self:
        if k == 1:
            n = len(x)
            return torch.zeros(n, dtype=torch.float64, device=resolve_device(device))
        k = k - 1
    space, (p,) = prepare(x, device=device, fast=k == 1)
    sq, _ = knn_self_sq(p, space, k, kth_only=True)
    return space.unscale(torch.sqrt(sq))


def count_within(points: Any, centres: Any, radii: Any, *, device: Any = None) -> torch.Tensor:
    """For each point, how many spheres ``(centres[j], radii[j])`` contain it (strict ``<``).

    Distances are exact (float64). Returns an int64 tensor of ``len(points)``.
    """
    space, (p, c) = prepare(points, centres, device=device)
    r = torch.as_tensor(np.asarray(radii, dtype=np.float64), device=space.device) * space.scale
    counts, _, _ = sphere_pass(p, c, space, r, torch.float64)
    return counts


def any_within(centres: Any, radii: Any, points: Any, *, device: Any = None) -> torch.Tensor:
    """For each sphere ``(centres[j], radii[j])``, whether some point lies strictly inside it."""
    space, (p, c) = prepare(points, centres, device=device)
    r = torch.as_tensor(np.asarray(radii, dtype=np.float64), device=space.device) * space.scale
    _, covered, _ = sphere_pass(p, c, space, r, torch.float64)
    return covered


def nearest(
    query: Any,
    base: Any,
    k: int = 1,
    *,
    device: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest rows of ``base`` for each row of ``query``.

    Returns:
        (distances, indices): float64 and int64 tensors of shape ``len(query) x k``, ascending
        per row, ties broken by the lower base index.
    """
    space, (q, b) = prepare(query, base, device=device, fast=k == 1)
    sq, idx = knn_sq(q, b, space, k)
    return space.unscale(torch.sqrt(sq)), idx
