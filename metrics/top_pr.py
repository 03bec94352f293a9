"""TopP&R (Kim et al. 2023): topological precision and recall with KDE confidence bands."""
from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.errors import MetricInputError
from evalkit.lazy import torch
from evalkit.metrics._registry import Output, register_metric
from evalkit.metrics.primitives.common import Seed, check_points, seeded_generator

# the top-pr package's fixed seeds: numpy's global seed (bootstraps), torch's for the projection
PACKAGE_SEED = 42
PROJECTION_SEED = 99
PROJECTION_DIM = 32
# most rows of each set top_pr uses: its bandwidth and KDEs are O(N^2) (as rarity's and rke's cap)
MAX_SAMPLES = 10000
# the package's d <= 3 branch (a KDE on a grid + gudhi persistence for the bandwidth) never
# computes the KDE scores it then reads: compute_top_pr fails there (UnboundLocalError)
MIN_DIM = 4
_ELEMENTS = 1 << 23  # float64 distances per block


def _dist32(a: np.ndarray, b: np.ndarray, diagonal: int | None = None) -> np.ndarray:
    """Euclidean distances as sklearn's ``euclidean_distances`` gives them for float32 input:
    squared distances by the float64 expansion, rounded to float32, clamped at 0, square-rooted
    in float32; ``diagonal``: a is rows ``diagonal..`` of b, whose self-distances are set to 0
    (sklearn does so when X is Y)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    sq = (-2 * a64 @ b64.T + (a64 * a64).sum(1)[:, None]) + (b64 * b64).sum(1)[None, :]
    sq = np.maximum(sq.astype(np.float32), 0)
    if diagonal is not None:
        i = np.arange(len(a))
        sq[i, diagonal + i] = 0
    return np.sqrt(sq)


def kde(data: np.ndarray, positions: np.ndarray, h: float) -> np.ndarray:
    """top-pr's ``compact_KDE`` with the cosine kernel: at each position, (1/n) (pi/(4h))^d
    times the sum of cos(pi/2 * dist/h) over the data points with dist^2 <= h^2."""
    n, d = data.shape
    out = np.empty(len(positions))
    rows = max(1, _ELEMENTS // max(n, 1))
    for s in range(0, len(positions), rows):
        dist = _dist32(positions[s:s + rows], data, s if positions is data else None)
        inside = dist ** 2 <= h ** 2
        out[s:s + rows] = np.where(inside, np.cos((np.pi / 2) * (dist / h)), 0.0).sum(1)
    return (1 / n) * (np.pi / (4 * h)) ** d * out


def balloon_bandwidth(x: np.ndarray, k: int) -> float:
    """top-pr's bandwidth: for each row but the last k, the k-th smallest distance to the rows
    after it; the element at ``int(0.5 m) - 1`` of those m values sorted."""
    n = len(x)
    vals = np.empty(n - k)
    rows = max(1, _ELEMENTS // max(n, 1))
    for s in range(0, n - k, rows):
        dist = np.sqrt(np.maximum(0, _sqdist64(x[s:min(s + rows, n - k)], x)))
        for j in range(dist.shape[0]):
            i = s + j
            vals[i] = np.partition(dist[j, i + 1:], k - 1)[k - 1]
    vals.sort()
    return float(vals[int(len(vals) * 0.5) - 1])


def _sqdist64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances as scipy's ``cdist`` (float64, per pair: no expansion)."""
    out = np.empty((len(a), len(b)))
    b64 = b.astype(np.float64)
    for i, row in enumerate(a.astype(np.float64)):
        diff = b64 - row
        out[i] = np.einsum("ij,ij->i", diff, diff)
    return out


def confidence_band(x: np.ndarray, h: float, rs: np.random.RandomState, alpha: float,
          repeat: int = 10) -> tuple[float, np.ndarray]:
    """top-pr's ``confband_est`` on the data's own points: (band c, KDE at each point)."""
    n = len(x)
    p_hat = kde(x, x, h)
    theta = []
    for _ in range(repeat):
        boot = x[rs.choice(np.arange(n), size=n, replace=True)]
        theta.append(np.sqrt(n) * np.max(np.abs(p_hat - kde(boot, x, h))))
    return float(np.quantile(theta, 1 - alpha)) / np.sqrt(n), p_hat


def projection(dim: int) -> np.ndarray:
    """top-pr's random projection to 32 dimensions: a bias-free ``Linear(dim, 32)`` whose weight is
    ``xavier_normal_`` under ``torch.manual_seed(99)`` (32 x dim float32)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PROJECTION_SEED)
        w = torch.empty(PROJECTION_DIM, dim)
        torch.nn.init.xavier_normal_(w)
    return w


@register_metric(
    Output("top_precision", "higher", "TopP&R precision: generated samples in the reference's "
           "significant KDE support (Kim et al. 2023)"),
    Output("top_recall", "higher", "TopP&R recall: reference samples in the generated set's "
           "significant KDE support"),
    Output("top_f1", "higher", "harmonic mean of top_precision and top_recall", select=False),
    # 5 x 32 + 2: enough for the bandwidth at any width (projected to at most 32 dimensions)
    args=("real", "fake"), min_samples=162, min_dim=MIN_DIM, order_invariant=False, position=72,
)
def top_pr(real: Any, fake: Any, *, alpha: float = 0.1, random_proj: bool = True,
           max_samples: int | None = MAX_SAMPLES, seed: Seed = 0) -> dict[str, Any]:
    """Topological precision and recall, as the ``top-pr`` package computes them.

    Kim, Jang, Kim, Yoo & Ko, "TopP&R: Robust Support Estimation Approach for Evaluating Fidelity
    and Diversity in Generative Models", NeurIPS 2023; reference implementation: the ``top-pr``
    package (``top_pr.compute_top_pr``, cosine kernel), which this equals on the same inputs.
    Features wider than 32 are projected to 32 dimensions with the package's fixed random
    projection (:func:`projection`). Each set's KDE bandwidth is the package's "balloon"
    estimate (k = 5 d: the median over rows of the k-th nearest *later* row), its confidence
    band the (1 - alpha) quantile of 10 bootstrap sup-deviations of the KDE drawn from numpy's
    ``RandomState(42)`` (the package's fixed seed: the reference's 10 draws, then the generated
    set's). A sample is significant where its own set's KDE exceeds the band; precision is the
    fraction of significant generated samples where the reference's KDE also exceeds the
    reference's band, recall the converse.

    Row order matters: the bandwidth reads each row's *later* rows and leaves the last k out,
    and the bootstraps draw row positions, so this is the one metric not invariant to the
    order of the samples (match the package, not an order-free variant).

    Cost: the bandwidth and the 22 KDE evaluations are O(N^2) in each set's size, so a set
    larger than ``max_samples`` (10,000) is replaced by a seeded subsample of that many rows
    kept in source order (``seed``: the run's stream for this metric), as ``rarity`` and
    ``rke`` cap theirs; ``_subsampled`` lists the sets that were. At or below the cap the value
    is the package's on the full sets and does not depend on the seed.

    Features of at most 3 dimensions (after the projection) are refused (MetricInputError;
    ``--metrics all`` lists top_pr as skipped): there the package takes another path (KDE on a
    grid, bandwidth chosen by gudhi persistence) that never computes the per-sample KDE values
    it then compares, so ``compute_top_pr`` fails with an UnboundLocalError after the grid
    work — there is no reference number to match.

    Args:
        real, fake: reference and generated features (N x D, D > 3, N > 5 min(D, 32) + 1).
        alpha: significance level of the confidence bands.
        random_proj: project D > 32 to 32 dimensions (the package's default).
        max_samples: most rows of each set used (None: all; O(N^2) time).
        seed: seed of those subsets (reference first, then generated).
    """
    n_r = check_points("top_pr", "reference", real, 2)
    n_f = check_points("top_pr", "generated", fake, 2, dim=np.shape(real)[1])
    real, fake, capped = np.asarray(real), np.asarray(fake), []
    if max_samples is not None and max(n_r, n_f) > max_samples:
        gen = seeded_generator(seed)
        if n_r > max_samples:
            real, n_r = real[np.sort(gen.choice(n_r, max_samples, replace=False))], max_samples
            capped.append("reference")
        if n_f > max_samples:
            fake, n_f = fake[np.sort(gen.choice(n_f, max_samples, replace=False))], max_samples
            capped.append("generated")
    r = torch.as_tensor(real, dtype=torch.float32)
    f = torch.as_tensor(fake, dtype=torch.float32)
    if random_proj and r.shape[1] > PROJECTION_DIM:
        w = projection(r.shape[1])
        r, f = torch.nn.functional.linear(r, w), torch.nn.functional.linear(f, w)
    r, f = r.numpy(), f.numpy()
    d = r.shape[1]
    if d < MIN_DIM:
        raise MetricInputError(f"top_pr: {d}-dimensional features; TopP&R needs more than 3 "
                               "(the top-pr package's d <= 3 path fails: it never computes "
                               "the KDE values it compares)")
    k = 5 * d
    if min(n_r, n_f) < k + 2:
        raise MetricInputError(f"top_pr needs more than {k + 1} samples per set for its bandwidth "
                               f"(k = 5 x {d} dimensions), got {n_r} reference, {n_f} generated")
    h_r, h_f = balloon_bandwidth(r, k), balloon_bandwidth(f, k)
    rs = np.random.RandomState(PACKAGE_SEED)
    c_r, score_rr = confidence_band(r, h_r, rs, alpha)
    c_g, score_gg = confidence_band(f, h_f, rs, alpha)
    score_rg = kde(f, r, h_f)
    score_gr = kde(r, f, h_r)
    sig_r, sig_g = score_rr > c_r, score_gg > c_g
    precision = float(np.sum(sig_g & (score_gr > c_r)) / np.sum(sig_g))
    recall = float(np.sum(sig_r & (score_rg > c_g)) / np.sum(sig_r))
    f1 = 2 / (1 / precision + 1 / recall) if precision > 0.0001 and recall > 0.0001 else 0.0
    out: dict[str, Any] = {"top_precision": precision, "top_recall": recall, "top_f1": float(f1)}
    if capped:
        out["_subsampled"] = {"sets": capped, "max_samples": int(max_samples)}
    return out
