"""Memorization metrics: authenticity (Alaa et al. 2022) and the C_T data-copying test
(Meehan et al. 2020)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from evalkit.errors import MetricInputError
from evalkit.lazy import scipy, torch
from evalkit.metrics._registry import Output, register_metric
from evalkit.metrics.primitives.common import Seed, check_points, resolve_device, seeded_generator
from evalkit.metrics.primitives.knn import knn_self_sq, knn_sq, prepare

# ----------------------------------------------------------------------------------------------
# authenticity

# Above this share of distinct nearest reference points, all reference self-distances are
# computed (symmetric pass, ~half a product) instead of only those of the nearest points.
_ALL_SELF_SHARE = 0.55


def authenticity(real: Any, fake: Any, *, device: Any = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest reference sample of every generated sample, and whether the sample is authentic.

    A generated sample g with nearest reference sample r* is authentic when r*'s own nearest
    *other* reference sample is strictly closer to r* than g is: ``d(r*, NN_ref(r*)) < d(g, r*)``
    (dgm-eval's ``compute_authpct``). Distances are exact (float64); the reference self-distances
    are only computed for the reference samples that are somebody's nearest neighbour (hubness
    makes that a fraction of the set) unless most of them are.

    Returns:
        (nn_index int64, nn_distance float64, authentic bool), one entry per generated sample.
    """
    space, (R, F) = prepare(real, fake, device=device, fast=True)
    d_sq, idx = knn_sq(F, R, space, 1)
    d_sq, idx = d_sq[:, 0], idx[:, 0]
    hubs = torch.unique(idx)
    if hubs.numel() > _ALL_SELF_SHARE * R.n:
        own_sq, _ = knn_self_sq(R, space, 1, kth_only=True)
    else:
        own_sq = torch.empty(R.n, dtype=torch.float64, device=space.device)
        h_sq, _ = knn_sq(R.rows(hubs), R, space, 1, exclude=hubs)
        own_sq[hubs] = h_sq[:, 0]
    dist = torch.sqrt(d_sq)
    authentic = torch.sqrt(own_sq[idx]) < dist
    return idx, space.unscale(dist), authentic


@register_metric(
    Output("authpct", "higher", "authenticity %: generated samples farther from their nearest real sample "
           "than it is from its own (Alaa et al. 2022)", range=(0.0, 100.0)),
    min_samples=2, position=90, device_rows=True,
)
def authpct(real: Any, fake: Any, *, device: Any = None) -> dict[str, float]:
    """Authenticity percentage of the generated samples.

    Alaa, van Breugel, Saveliev, van der Schaar, "How Faithful is your Synthetic Data?
    Sample-level Metrics for Evaluating and Auditing Generative Models", ICML 2022, as dgm-eval's
    ``compute_authpct`` (from the FLS repository) computes it: the share, in percent (0-100), of
    generated samples g whose nearest reference sample r* satisfies
    ``d(r*, NN_ref(r*)) < d(g, r*)`` (strict; r* itself excluded from its own neighbours).

    All samples of both sets are used, as in dgm-eval; the distances are exact and chunked, so no
    N x N matrix is held (dgm-eval's two N x N float32 ``cdist`` matrices run out of memory at 50k).

    Returns:
        ``{"authpct": percent}``; higher is better (near 0 for copies of the reference).
    """
    check_points("authpct", "reference", real, 2)
    check_points("authpct", "generated", fake, 1, dim=real.shape[1])
    _, _, authentic = authenticity(real, fake, device=device)
    return {"authpct": 100.0 * int(authentic.sum()) / authentic.numel()}


# ----------------------------------------------------------------------------------------------
# C_T


def mann_whitney_u(x: Any, y: Any) -> float:
    """Mann-Whitney U statistic of ``x`` against ``y`` (ties get mid-ranks).

    ``U = R_x - m (m + 1) / 2`` with ``R_x`` the rank sum of the m values of ``x`` in the pooled
    sample: the number of pairs with ``x_i > y_j`` plus half the tied pairs. Equals the
    ``statistic`` of ``scipy.stats.mannwhitneyu(x, y)``.
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    pooled = np.concatenate([xa, ya])
    _, inverse, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    midrank = ends - (counts - 1) / 2.0
    ranks = midrank[inverse]
    m = xa.shape[0]
    return float(ranks[:m].sum() - m * (m + 1) / 2.0)


def _z_u(l_gen: np.ndarray, l_test: np.ndarray) -> float:
    """Z-scored U of generated vs test distances, as Meehan et al.'s ``Zu`` (continuity 0.5)."""
    m, n = l_gen.shape[0], l_test.shape[0]
    u = mann_whitney_u(l_gen, l_test)
    mean = n * m / 2.0 - 0.5
    std = math.sqrt(n * m * (n + m + 1) / 12.0)
    return (u - mean) / std


def _pca(train: Any, others: list[Any], dims: int, device: torch.device) -> list[torch.Tensor]:
    """Project every set on the top ``dims`` principal axes of ``train`` (float64 results).

    The covariance is accumulated in float64 from products of at most 8192 centred rows (float32
    products for float32 features, BLAS ``syrk`` on CPU), and the top eigenvectors come from
    LAPACK's ``syevx`` in float64: deterministic, and much closer to the exact PCA than the
    randomized solver scikit-learn picks for dgm-eval's ``PCA(n_components=64)``. With fewer
    rows than dimensions (rank <= n − 1) the axes come from the n×n Gram matrix instead
    (:func:`_pca_axes_from_gram`): same axes up to sign, no D×D eigenproblem.
    """
    is32 = getattr(train, "dtype", None) in (np.float32, torch.float32)
    step = 8192
    if isinstance(train, torch.Tensor):
        t = train.detach()
        if t.device.type == "cpu" and device.type == "cpu":
            t = t.numpy()
    else:
        t = np.asarray(train)
    n, d = int(t.shape[0]), int(t.shape[1])
    if n < d:  # rank <= n − 1: the axes from the n×n Gram matrix, no D×D eigenproblem
        mean_t, axes = _pca_axes_from_gram(t, dims, device)
    else:
        mean_t, axes = _pca_axes_from_cov(t, is32, dims, device)
    out = []
    for x in [train, *others]:
        xt = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        pdt = torch.float32 if xt.dtype == torch.float32 else torch.float64
        parts = [
            ((xt[s:s + step].to(device=device, dtype=pdt) - mean_t.to(pdt)) @ axes.to(pdt)).to(torch.float64)
            for s in range(0, int(xt.shape[0]), step)
        ]
        out.append(torch.cat(parts))
    return out


def _pca_axes_from_gram(t: Any, dims: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and top principal axes of n < D rows from the n×n Gram matrix G = Xc Xcᵀ (float64):
    G u = λ u gives the axis Xcᵀ u / sqrt(λ), the same as the covariance's up to sign (which no
    distance sees). Only axes with λ above round-off are returned (at most n − 1): a zero-variance
    axis would be an arbitrary direction of the null space."""
    x = (t.detach().to(device=device, dtype=torch.float64) if isinstance(t, torch.Tensor)
         else torch.as_tensor(np.asarray(t, dtype=np.float64), device=device))
    mean_t = x.mean(0)
    xc = x - mean_t
    n, d = int(xc.shape[0]), int(xc.shape[1])
    gram = (xc @ xc.T).cpu().numpy()
    k = min(dims, n)
    w, u = scipy.linalg.eigh(gram, subset_by_index=[n - k, n - 1], driver="evx", check_finite=False)
    w, u = w[::-1], u[:, ::-1]
    keep = w > max(n, d) * np.finfo(np.float64).eps * max(float(w[0]), 0.0)
    u = torch.as_tensor(np.ascontiguousarray(u[:, keep]), device=device)
    axes = (xc.T @ u) / torch.as_tensor(np.sqrt(w[keep]), device=device)
    return mean_t, axes


def _pca_axes_from_cov(t: Any, is32: bool, dims: int,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    step = 8192
    n, d = int(t.shape[0]), int(t.shape[1])
    if isinstance(t, np.ndarray):
        ndt = np.float32 if is32 else np.float64
        mean = np.zeros(d)
        for s in range(0, n, step):
            mean += t[s:s + step].sum(0, dtype=np.float64)
        mean /= n
        cov = np.zeros((d, d))
        m_nd = mean.astype(ndt)
        for s in range(0, n, step):
            c = t[s:s + step].astype(ndt, copy=False) - m_nd
            cov += c.T @ c
        mean_t = torch.as_tensor(mean, device=device)
    else:
        tdt = torch.float32 if is32 else torch.float64
        mean_t = torch.zeros(d, dtype=torch.float64, device=device)
        for s in range(0, n, step):
            mean_t += t[s:s + step].to(device=device, dtype=torch.float64).sum(0)
        mean_t /= n
        cov_t = torch.zeros(d, d, dtype=torch.float64, device=device)
        for s in range(0, n, step):
            c = t[s:s + step].to(device=device, dtype=tdt) - mean_t.to(tdt)
            cov_t += (c.T @ c).to(torch.float64)
        cov = cov_t.cpu().numpy()
    k = min(dims, d)
    _, v = scipy.linalg.eigh(cov, subset_by_index=[d - k, d - 1], driver="evx", check_finite=False)
    axes = torch.as_tensor(np.ascontiguousarray(v[:, ::-1]), device=device)
    return mean_t, axes


def _sq_to_centres(x: np.ndarray, centres: np.ndarray, x_sq: np.ndarray | None = None) -> np.ndarray:
    if x_sq is None:
        x_sq = np.einsum("ij,ij->i", x, x)
    d2 = x_sq[:, None] - 2.0 * (x @ centres.T) + np.einsum("ij,ij->i", centres, centres)[None, :]
    return np.maximum(d2, 0.0, out=d2)


def kmeans(
    x: Any, n_clusters: int, *, seed: int = 0, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4
) -> np.ndarray:
    """Deterministic k-means (Lloyd) with greedy k-means++ seeding; returns the best centres.

    Follows scikit-learn's ``KMeans(n_clusters, n_init=10)`` as dgm-eval calls it: greedy
    k-means++ initialisation with ``2 + ln(k)`` local trials, Lloyd iterations until the labels
    stop changing or the centres move less than ``tol`` times the mean feature variance, best
    inertia of ``n_init`` runs. Every random choice comes from ``numpy.random.default_rng(seed)``.
    Runs in float64 numpy (the inputs are at most 64-dimensional here).
    """
    rng = seeded_generator(seed)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    n = x.shape[0]
    x_sq = np.einsum("ij,ij->i", x, x)
    tol_abs = float(tol * x.var(axis=0).mean())
    trials = 2 + int(np.log(n_clusters))
    best, best_inertia = None, math.inf
    for _ in range(n_init):
        ids = [int(rng.integers(n))]  # greedy k-means++
        closest = _sq_to_centres(x, x[ids], x_sq)[:, 0]
        pot = closest.sum()
        for _c in range(1, n_clusters):
            cand = np.searchsorted(np.cumsum(closest), rng.uniform(size=trials) * pot)
            cand = np.clip(cand, None, n - 1)
            dist = np.minimum(closest[None, :], _sq_to_centres(x, x[cand], x_sq).T)
            pots = dist.sum(1)
            b = int(np.argmin(pots))
            pot, closest = pots[b], dist[b]
            ids.append(int(cand[b]))
        centres = x[ids].copy()
        labels = None
        for _it in range(max_iter):
            d2 = _sq_to_centres(x, centres, x_sq)
            new_labels = d2.argmin(1)
            counts = np.bincount(new_labels, minlength=n_clusters).astype(np.float64)
            new = np.zeros_like(centres)
            for c in range(n_clusters):
                if counts[c]:
                    new[c] = x[new_labels == c].sum(0)
                else:  # relocate an empty cluster to the point farthest from its centre
                    new[c] = x[int(d2[np.arange(n), new_labels].argmax())]
                    counts[c] = 1.0
            new /= counts[:, None]
            shift = float(((new - centres) ** 2).sum())
            same = labels is not None and bool((new_labels == labels).all())
            centres, labels = new, new_labels
            if same or shift <= tol_abs:
                break
        inertia = float(_sq_to_centres(x, centres, x_sq).min(1).sum())
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


@register_metric(
    Output("ct", "zero", "C_T data-copying test: Mann-Whitney Z of nearest-train distances, generated vs "
           "test, per k-means cell (Meehan et al. 2020)"),
    args=("real", "fake", "test"), min_samples=61, order_invariant=False, position=100,
    device_rows=True,
)
def ct(
    real: Any,
    fake: Any,
    test: Any,
    *,
    seed: Seed = 0,
    n_cells: int = 3,
    pca_dims: int = 64,
    device: Any = None,
) -> dict[str, float]:
    """C_T data-copying statistic of the generated samples.

    Meehan, Chaudhuri, Dasgupta, "A Non-Parametric Test to Detect Data-Copying in Generative
    Models", AISTATS 2020, as dgm-eval's ``compute_CTscore`` runs it (reference = training set T,
    ``test`` = held-out P_n, generated = Q_m):

    1. when D > 64, project all sets on the top 64 principal axes of T (float64-accumulated
       covariance, float64 eigenvectors; sklearn's PCA that dgm-eval calls picks an unseeded
       randomized solver here);
    2. k-means with 3 cells fit on T (:func:`kmeans`, seeded, 10 initialisations);
    3. in each cell, the distances of the cell's test and generated samples to their nearest
       training sample of the same cell, and the Mann-Whitney U of generated vs test distances,
       Z-scored as ``(U - (nm/2 - 0.5)) / sqrt(nm(n+m+1)/12)``;
    4. C_T = the average of the cell Z's weighted by the cells' share of test samples, over the
       cells holding more than tau*m generated samples, tau = 20/m (i.e. more than 20).

    Nearest-neighbour distances are exact and chunked. Values far below 0 mean generated samples
    sit closer to the training set than fresh data does (copying); far above 0, underfitting.

    Returns:
        ``{"ct": C_T}``; closer to 0 is better.
    """
    check_points("ct", "reference", real, n_cells)
    check_points("ct", "generated", fake, 1, dim=real.shape[1])
    check_points("ct", "test", test, 1, dim=real.shape[1])
    dev = resolve_device(device)
    if int(real.shape[1]) > pca_dims:
        t, q, p = _pca(real, [fake, test], pca_dims, dev)
    else:
        t, q, p = (
            (x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))).to(dev, torch.float64)
            for x in (real, fake, test)
        )
    centres = kmeans(t.cpu().numpy(), n_cells, seed=seed)
    lt, lq, lp = (
        torch.as_tensor(_sq_to_centres(x.cpu().numpy(), centres).argmin(1), device=dev) for x in (t, q, p)
    )
    m, n = int(q.shape[0]), int(p.shape[0])
    tau = 20.0 / m
    q_share = np.bincount(lq.cpu().numpy(), minlength=n_cells) / m
    p_share = np.bincount(lp.cpu().numpy(), minlength=n_cells) / n
    zs = np.zeros(n_cells)
    for c in range(n_cells):
        tc, qc, pc = t[lt == c], q[lq == c], p[lp == c]
        if tc.shape[0] == 0 or pc.shape[0] == 0:
            raise MetricInputError(
                f"ct: k-means cell {c} holds no test and/or reference samples; use more test samples"
            )
        if qc.shape[0] == 0 or q_share[c] <= tau:
            continue
        space, (T, Q, P) = prepare(tc, qc, pc, device=dev)
        lq_d = torch.sqrt(knn_sq(Q, T, space, 1)[0][:, 0]).cpu().numpy()
        lp_d = torch.sqrt(knn_sq(P, T, space, 1)[0][:, 0]).cpu().numpy()
        zs[c] = _z_u(lq_d, lp_d)
    keep = q_share > tau
    if not keep.any():
        raise MetricInputError(
            f"ct: no k-means cell holds more than 20 of the {m} generated samples; "
            "need more generated samples"
        )
    value = float(p_share[keep].dot(zs[keep]) / p_share[keep].sum())
    return {"ct": value}
