"""Inception Score, with torch-fidelity's conventions."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from evalkit.errors import MetricInputError
from evalkit.lazy import torch
from evalkit.metrics._registry import Output, register_metric
from evalkit.metrics.primitives.common import as_tensor, require_samples, resolve_device, take_rows

# torch-fidelity shuffles with its fixed rng_seed, whatever the run's seed: IS keeps that
# convention so its numbers equal torch-fidelity's (the one metric whose draws do not follow --seed).
IS_SHUFFLE_SEED = 2020


@register_metric(
    Output("is", "higher", "Inception Score: exp E[KL(p(y|x) || p(y))] over 10 splits",
           range=(1.0, math.inf)),
    Output("is_std", "none", "standard deviation of the Inception Score over the splits", select=False,
           range=(0.0, math.inf)),
    array="logits", args=("fake",), min_samples=10, order_invariant=False, position=50,
)
def inception_score(fake: Any, *, splits: int = 10, device: Any = None,
                    convention: str = "torch-fidelity", split_size: int = 5000) -> dict[str, float]:
    """Inception Score (Salimans et al. 2016, "Improved techniques for training GANs").

    Softmax of the class ``logits`` (Inception: the 1008-way fc layer without bias), samples
    shuffled with ``np.random.RandomState(2020).permutation``, ``splits`` consecutive splits
    at i·N//splits, per split exp(mean KL(p(y|x) ‖ mean p(y))), softmax and log-softmax in
    float64; mean and ``np.std`` (ddof 0) over the splits. Equals torch-fidelity's ``isc``
    (``isc_features_to_metric``) on the same logits.

    ``convention="adm"``: guided-diffusion's ``compute_inception_score`` instead: no shuffle,
    ordered splits ``range(0, N, split_size)`` of 5,000 (the last one shorter when N is not a
    multiple), the mean of the split scores (``is_std``: their ``np.std``); ``splits`` unused.
    ADM runs the softmax in float32 and the KL in float32 numpy; here float64 (the difference
    is float32 round-off, ~1e-6 relative).

    Args:
        fake: generated logits, N×C (N >= splits).
        splits: number of splits.
        device: torch device.
        convention: ``"torch-fidelity"`` or ``"adm"``.
        split_size: rows per split under ``convention="adm"``.

    Returns:
        ``{"is": mean, "is_std": std}``.
    """
    if len(tuple(fake.shape)) != 2:
        raise MetricInputError(f"is: logits must be a 2-D N×C array, got shape {tuple(fake.shape)}")
    if splits < 1:
        raise MetricInputError(f"is: splits must be >= 1, got {splits}")
    n = int(fake.shape[0])
    dev = resolve_device(device)
    if convention == "adm":
        if split_size < 1:
            raise MetricInputError(f"is: split_size must be >= 1, got {split_size}")
        parts = [np.arange(s, min(s + split_size, n)) for s in range(0, n, split_size)]
    elif convention == "torch-fidelity":
        require_samples("is", n, splits, "generated")
        perm = np.random.RandomState(IS_SHUFFLE_SEED).permutation(n)
        parts = [perm[i * n // splits:(i + 1) * n // splits] for i in range(splits)]
    else:
        raise MetricInputError(f"is: unknown convention {convention!r} (torch-fidelity or adm)")
    scores = []
    for rows in parts:
        logits = as_tensor(take_rows(fake, rows), dev, torch.float64)
        if not bool(torch.isfinite(logits).all()):
            raise MetricInputError("is: logits contain NaN or inf")
        p = logits.softmax(dim=1)
        log_p = logits.log_softmax(dim=1)
        q = p.mean(dim=0, keepdim=True)
        scores.append(float((p * (log_p - q.log())).sum(dim=1).mean().exp()))
    return {"is": float(np.mean(scores)), "is_std": float(np.std(scores))}
