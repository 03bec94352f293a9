"""Rarity score (Han et al. 2023): how uncommon each generated sample is on the real manifold."""
from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.lazy import torch
from evalkit.metrics._registry import Output, register_metric
from evalkit.metrics.primitives.common import Seed, check_points, resolve_device, seeded_generator, take_rows

RARITY_K = 3
_ELEMENTS = 1 << 24  # float64 distances per block (128 MiB)


def _sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_min_(0)


def rarity_scores(real: Any, fake: Any, *, nearest_k: int = RARITY_K, max_samples: int | None = 10000,
                  seed: Seed = 0, device: Any = None) -> np.ndarray:
    """Per generated sample: the smallest k-NN radius among the real balls that contain it
    (strictly closer than the radius), NaN for a sample in no ball. Distances in float64.
    A reference larger than ``max_samples`` is subsampled (seeded, as PRDC's reference). ``real``
    and ``fake`` may be numpy arrays or torch tensors on any device (taken there, no host copy)."""
    dev = resolve_device(device)
    n_real = int(real.shape[0])
    if max_samples is not None and n_real > max_samples:
        real = take_rows(real, np.sort(seeded_generator(seed).choice(n_real, max_samples, replace=False)))
    rows = max(1, _ELEMENTS // int(real.shape[0]))
    r = torch.as_tensor(real, dtype=torch.float64, device=dev)
    f = torch.as_tensor(fake if isinstance(fake, torch.Tensor) else np.asarray(fake),
                        dtype=torch.float64, device=dev)
    radii = torch.empty(r.shape[0], dtype=torch.float64, device=dev)
    for s in range(0, r.shape[0], rows):  # k-th other real sample (the row itself is 0th)
        radii[s:s + rows] = _sq(r[s:s + rows], r).kthvalue(nearest_k + 1, dim=1).values
    out = torch.empty(f.shape[0], dtype=torch.float64, device=dev)
    for s in range(0, f.shape[0], rows):
        inside = _sq(f[s:s + rows], r) < radii[None, :]
        out[s:s + rows] = torch.where(inside, radii[None, :], torch.inf).min(dim=1).values
    out = out.sqrt()
    out[torch.isinf(out)] = torch.nan
    return out.cpu().numpy()


@register_metric(
    Output("rarity", "none", "Rarity score: mean over generated samples inside the real manifold of "
           "the smallest k-NN radius (k=3) of the real balls containing them (Han et al. 2023)"),
    Output("rarity_outside", "none", "generated samples in no real k-NN ball (left out of rarity)",
           select=False),
    args=("real", "fake"), min_samples=RARITY_K + 1, position=75, device_rows=True,
)
def rarity(real: Any, fake: Any, *, nearest_k: int = RARITY_K, max_samples: int | None = 10000,
           seed: Seed = 0, device: Any = None) -> dict[str, float]:
    """Rarity score of the generated samples (mean over those on the real manifold).

    Han, Choi, Lee, Park, Yoo & Ko, "Rarity Score: A New Metric to Evaluate the Uncommonness of
    Synthesized Images", ICLR 2023 (reference implementation: github.com/hichoe95/Rarity-Score,
    ``MANIFOLD.rarity``): each real sample's ball has the radius of its k-th nearest other real
    sample (k = 3, the authors' default); a generated sample's score is the smallest radius
    among the balls that contain it (distance strictly below the radius) — a sample in a
    dense region gets a small score, one only inside sparse regions' large balls a large one.
    Samples in no ball have no score: they are left out of the mean and counted in
    ``rarity_outside``. Higher is rarer, neither better nor worse. Per-sample values are in
    the per-sample CSV (:func:`rarity_scores`). Euclidean distances in float64. A reference
    larger than ``max_samples`` is subsampled with ``seed`` (as PRDC's reference: the cost is
    O(N M D)); without subsampling the value does not depend on the seed or the row order.

    Args:
        real: reference features (N x D), N > k.
        fake: generated features.
        nearest_k: k of the real balls' radii.
        max_samples: most reference rows used (None: all).
        seed: seed of that subset.
        device: torch device.
    """
    check_points("rarity", "reference", real, nearest_k + 1)
    check_points("rarity", "generated", fake, 1, dim=int(real.shape[1]))
    s = rarity_scores(real, fake, nearest_k=nearest_k, max_samples=max_samples, seed=seed, device=device)
    inside = ~np.isnan(s)
    return {"rarity": float(s[inside].mean()) if inside.any() else float("nan"),
            "rarity_outside": float((~inside).sum())}
