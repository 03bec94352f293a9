"""Vendi score (Friedman & Dieng 2023): the effective number of distinct samples."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from evalkit.errors import MetricInputError
from evalkit.lazy import scipy, torch
from evalkit.metrics._registry import Output, register_metric
from evalkit.metrics.primitives.common import check_points, fp32_matmul_is_ieee, resolve_device

# Rows normalised and multiplied per step of the D x D Gram accumulation.
_ROWS = 8192


def renyi_entropy(p: np.ndarray, q: float | str) -> float:
    """Order-q Rényi entropy of eigenvalues ``p`` (vendi-score's ``entropy_q``)."""
    if q == "inf" or q == float("inf"):
        return float(-np.log(np.max(p)))
    pp = p[p > 0]
    if q == 1:
        return float(-(pp * np.log(pp)).sum())
    q = float(q)
    return float(np.log((pp**q).sum()) / (1.0 - q))


def _normalised(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm; zero rows stay zero (sklearn ``normalize``)."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    norm[norm == 0] = 1
    return x / norm


def _gram_dual(x: Any, device: torch.device, dtype: torch.dtype) -> np.ndarray:
    """``X^T X / N`` of the row-normalised features, accumulated in float64 (D x D)."""
    n, d = int(x.shape[0]), int(x.shape[1])
    if device.type == "cpu" and isinstance(x, torch.Tensor) and x.device.type == "cpu":
        x = x.detach().numpy()
    if device.type == "cpu" and not isinstance(x, torch.Tensor):
        # numpy hands X^T X to BLAS syrk, half the flops of torch's general product on CPU
        ndt = np.float32 if dtype == torch.float32 else np.float64
        arr = np.asarray(x)
        g = np.zeros((d, d), dtype=np.float64)
        for s in range(0, n, _ROWS):
            c = arr[s:s + _ROWS].astype(ndt, copy=False)
            norm = np.sqrt(np.einsum("ij,ij->i", c, c, dtype=np.float64))
            norm[norm == 0] = 1
            c = c * (1.0 / norm).astype(ndt)[:, None]
            g += c.T @ c
        return g / n
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    g = torch.zeros(d, d, dtype=torch.float64, device=device)
    for s in range(0, n, _ROWS):
        c = t[s:s + _ROWS].to(device=device, dtype=torch.float64)
        c = _normalised(c).to(dtype)
        g += (c.T @ c).to(torch.float64)
    return (g / n).cpu().numpy()


def _gram_primal(x: Any, device: torch.device) -> np.ndarray:
    """``K / N`` with K the N x N cosine kernel, in float64."""
    if device.type == "cpu":  # small per-class problems: a few numpy calls, no dispatch overhead
        a = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)
        norm = np.sqrt(np.einsum("ij,ij->i", a, a))
        norm[norm == 0] = 1
        a /= norm[:, None]
        return a @ a.T / a.shape[0]
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    c = _normalised(t.to(device=device, dtype=torch.float64))
    return (c @ c.T / c.shape[0]).cpu().numpy()


def _vendi_one(x: Any, q: float | str, device: torch.device) -> float:
    n, d = int(x.shape[0]), int(x.shape[1])
    if n <= d:
        k = _gram_primal(x, device)
    else:
        in32 = getattr(x, "dtype", None) in (np.float32, torch.float32, np.float16, torch.float16)
        dtype = torch.float32 if in32 and fp32_matmul_is_ieee(device) else torch.float64
        k = _gram_dual(x, device, dtype)
    w = scipy.linalg.eigvalsh(k, driver="evd", check_finite=False)
    return float(np.exp(renyi_entropy(w, q)))


@register_metric(
    Output("vendi", "higher", "Vendi score: exp entropy of the cosine-kernel eigenvalues of generated "
           "features (Friedman & Dieng 2023)", range=(1.0, math.inf)),
    Output("vendi_per_class", "higher", "mean over classes of the per-class Vendi score (with labels)",
           select=False, range=(1.0, math.inf), column=("per class", "vendi")),
    args=("fake",), optional=("labels",), min_samples=1, position=80,
)
def vendi(
    fake: Any,
    *,
    labels: Any = None,
    q: float | str = 1,
    device: Any = None,
) -> dict[str, Any]:
    """Vendi score of the generated features, and its per-class mean when labels are given.

    Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning",
    TMLR 2023: ``exp(H_q(eig(K / N)))`` with K the cosine-similarity kernel of the L2-normalised
    features and ``H_q`` the order-q (Rényi) entropy, Shannon for q=1 (eigenvalues <= 0 dropped).
    The non-zero eigenvalues of ``K/N = X X^T / N`` are those of ``X^T X / N``, so the D x D dual
    form is used when D < N (streamed over rows, no N x N matrix) and the N x N form otherwise.

    Equals ``vendi_score.vendi.score_dual(X)`` (= ``score_K(K)``) of the vendi-score package.
    The Gram matrix is accumulated in float64 from float32 products of at most 8192 rows for
    float32 input (float64 products for float64 input), and the eigenvalues are computed in
    float64; vendi-score keeps float32 input in float32 throughout, so for float32 features this
    is the more accurate of the two (they differ by ~1e-6 relative).

    With ``labels`` (one per generated sample), ``vendi_per_class`` is the mean over classes of
    the per-class Vendi score (dgm-eval's ``compute_per_class_vendi_scores``), and the detail
    ``_per_class`` maps ``str(label)`` to each class's score.

    Args:
        fake: N x D generated features.
        labels: optional N class labels.
        q: entropy order (1, any float, or ``"inf"``).
        device: torch device (None: cuda when available).

    Returns:
        ``{"vendi": v}`` plus ``vendi_per_class`` and ``_per_class`` with labels; higher is better.
    """
    n = check_points("vendi", "generated", fake, 1)
    dev = resolve_device(device)
    out: dict[str, Any] = {"vendi": _vendi_one(fake, q, dev)}
    if labels is not None:
        lab = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if lab.shape[0] != n:
            raise MetricInputError(f"vendi: {lab.shape[0]} labels for {n} generated samples")
        per: dict[str, float] = {}
        for c in np.unique(lab):
            idx = np.nonzero(lab == c)[0]
            if isinstance(fake, torch.Tensor):
                rows = fake[torch.as_tensor(idx, device=fake.device)]
            else:
                rows = np.asarray(fake)[idx]
            per[str(c.item() if hasattr(c, "item") else c)] = _vendi_one(rows, q, dev)
        out["vendi_per_class"] = float(np.mean(list(per.values())))
        out["_per_class"] = per
    return out
