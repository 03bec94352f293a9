"""An independent numpy reimplementation of guided-diffusion's ``evaluations/evaluator.py``
numbers (Dhariwal & Nichol 2021), written from its description for the tests: what the ADM
evaluator does with pool_3 / spatial activations and logits once TensorFlow has produced them.

* FID / sFID: ``mu = mean`` (float32 activations), ``sigma = np.cov(rowvar=False)``, Fréchet
  distance against the statistics stored in the reference batch. ADM takes
  ``trace(sqrtm(sigma1 @ sigma2))``; for sample activations (sigma1 = XᵀX / (N − 1), X centred)
  the same trace is the sum of the square roots of the eigenvalues of the small symmetric
  ``X sigma2 Xᵀ / (N − 1)`` (same nonzero spectrum): :func:`fid_against` uses that, because a
  2048² ``sqrtm`` takes minutes on a loaded test machine; :func:`frechet` is ADM's own form.
* IS: softmax in float32 of ``pool_3 @ W`` (no bias), ordered splits ``range(0, N, 5000)``,
  per split ``exp(mean(sum(p * (log p - log mean p))))`` in float32, mean of the splits.
* precision / recall: float16 squared distances (float32 per block when not finite), radius =
  entry k of the sorted row (self included), ``<=``, blocks of ``block`` rows and columns.
"""
from __future__ import annotations

import numpy as np
from scipy import linalg


def frechet(mu1, sigma1, mu2, sigma2) -> float:
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    covmean = linalg.sqrtm(np.asarray(sigma1).dot(sigma2))
    if not np.isfinite(covmean).all():
        off = np.eye(len(mu1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + off).dot(sigma2 + off))
    covmean = np.real(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_against(acts: np.ndarray, mu_ref, sigma_ref) -> float:
    """ADM's FID of activations ``acts`` against stored (mu, sigma), N << D (see above)."""
    acts = np.asarray(acts, np.float32)
    mu = np.mean(acts, axis=0)
    x = acts.astype(np.float64) - acts.astype(np.float64).mean(0)
    small = x @ np.asarray(sigma_ref, np.float64) @ x.T / (len(x) - 1)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((small + small.T) / 2), 0, None)).sum()
    diff = mu.astype(np.float64) - mu_ref
    tr1 = np.trace(np.cov(acts, rowvar=False))
    return float(diff.dot(diff) + tr1 + np.trace(sigma_ref) - 2 * tr_covmean)


def inception_score(logits: np.ndarray, split_size: int = 5000) -> float:
    z = np.asarray(logits, np.float32)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    preds = (e / e.sum(1, keepdims=True)).astype(np.float32)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def _dist(u: np.ndarray, v: np.ndarray, squared: bool = True) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        u16, v16 = u.astype(np.float16), v.astype(np.float16)
        nu = np.square(u16).astype(np.float32).sum(1).astype(np.float16)
        nv = np.square(v16).astype(np.float32).sum(1).astype(np.float16)
        mm = (u16.astype(np.float32) @ v16.astype(np.float32).T).astype(np.float16)
        d = np.maximum(nu[:, None] - np.float16(2) * mm + nv[None, :], np.float16(0))
        if not squared:
            d = np.sqrt(d)
        if np.isfinite(d).all():
            return d.astype(np.float32)
        u32, v32 = u.astype(np.float32), v.astype(np.float32)
        d = np.maximum((u32 * u32).sum(1)[:, None] - 2 * (u32 @ v32.T) + (v32 * v32).sum(1)[None, :], 0)
        return d if squared else np.sqrt(d)


def radii(x: np.ndarray, k: int = 3, block: int = 10000, squared: bool = True) -> np.ndarray:
    n = len(x)
    out = np.zeros(n, np.float32)
    for b1 in range(0, n, block):
        row = np.concatenate([_dist(x[b1:b1 + block], x[b2:b2 + block], squared)
                              for b2 in range(0, n, block)], axis=1)
        out[b1:b1 + block] = np.partition(row, k, axis=1)[:, k]
    return out


def precision_recall(ref: np.ndarray, sam: np.ndarray, k: int = 3, block: int = 10000,
                     strict: bool = False, squared: bool = True) -> tuple[float, float]:
    """ADM's (precision, recall); ``strict``/``squared=False`` plant the other conventions."""
    r_ref, r_sam = radii(ref, k, block, squared), radii(sam, k, block, squared)
    ref_in = np.zeros(len(ref), bool)
    sam_in = np.zeros(len(sam), bool)
    cmp = np.less if strict else np.less_equal
    for b1 in range(0, len(ref), block):
        for b2 in range(0, len(sam), block):
            d = _dist(ref[b1:b1 + block], sam[b2:b2 + block], squared)
            ref_in[b1:b1 + block] |= cmp(d, r_sam[None, b2:b2 + block]).any(1)
            sam_in[b2:b2 + block] |= cmp(d, r_ref[b1:b1 + block, None]).any(0)
    return float(sam_in.mean()), float(ref_in.mean())
