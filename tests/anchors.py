"""Reference values that evalkit's metrics must equal: the anchor packages SPEC names, and
brute-force numpy definitions written out independently of the code under test.

Shared by the per-metric tests (edge cases) and by ``test_metric_contract.py`` (one anchor
check per registered metric at its defaults), so each reference is written once.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch


def pytorch_fid(x: np.ndarray, y: np.ndarray) -> float:
    """pytorch-fid's ``calculate_frechet_distance`` on ``np.mean``/``np.cov`` (N−1) of the rows."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return float(calculate_frechet_distance(
            x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)))


def torch_fidelity_kid(x: np.ndarray, y: np.ndarray, subsets: int, size: int) -> tuple[float, float]:
    """torch-fidelity's ``kid_features_to_metric``: (mean, std) over ``subsets`` subsets."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    out = kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y),
                                 kid_subsets=subsets, kid_subset_size=size, verbose=False)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


def torch_fidelity_isc(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """torch-fidelity's ``isc_features_to_metric`` (shuffle with its rng_seed 2020)."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    out = isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=True, rng_seed=2020)
    return out["inception_score_mean"], out["inception_score_std"]


def prdc_package(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """The ``prdc`` package's ``compute_prdc`` (clovaai)."""
    prdc_pkg = pytest.importorskip("prdc")
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints the set sizes
        out = prdc_pkg.compute_prdc(real, fake, k)
    return {key: float(v) for key, v in out.items()}


def vendi_package(x: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """vendi-score's ``score_dual``; with labels also the mean of the per-class scores."""
    vs = pytest.importorskip("vendi_score.vendi")
    out = {"vendi": float(vs.score_dual(x))}
    if labels is not None:
        out["vendi_per_class"] = float(np.mean([vs.score_dual(x[labels == c]) for c in np.unique(labels)]))
    return out


def brute_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All squared Euclidean distances, float64, difference form (N_a × N_b)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def authentic_brute(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alaa et al. 2022 as dgm-eval's ``compute_authpct`` defines it, per generated sample.

    For each generated g with nearest real r*: authentic when r*'s distance to its own nearest
    real neighbour (itself excluded) is strictly smaller than ‖g − r*‖. Returns (flags, r*).
    """
    rr = np.sqrt(brute_sq(real, real))
    np.fill_diagonal(rr, np.inf)
    rf = np.sqrt(brute_sq(real, fake))
    r_star = rf.argmin(0)
    return rr.min(0)[r_star] < rf.min(0), r_star


def authpct_brute(real: np.ndarray, fake: np.ndarray) -> float:
    return 100.0 * float(np.mean(authentic_brute(real, fake)[0]))


def cmmd_brute(a: np.ndarray, b: np.ndarray, sigma: float = 10.0) -> float:
    """google-research/cmmd's biased MMD² (diagonals included), Gaussian kernel, ×1000."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)

    def k(p, q):
        return np.exp(-((p[:, None, :] - q[None, :, :]) ** 2).sum(-1) / (2 * sigma ** 2)).mean()

    return 1000 * (k(a, a) + k(b, b) - 2 * k(a, b))
