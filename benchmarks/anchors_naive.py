"""Naive anchors: dgm-eval's formulations of the metrics that no installable package provides.

dgm-eval (layer6ai-labs/dgm-eval, the code behind Stein et al. 2023, "Exposing flaws of
generative model evaluation metrics") is not on PyPI, so :mod:`bench_metrics` cannot import it.
The functions below re-state, for timing and memory only, the procedure its metric modules run
on feature arrays: the same matrices are built (N x N distances, full covariances, dense
kernels), with the same libraries (numpy, scipy, scikit-learn, torch) and the same
precisions, so that their time and peak memory are what a dgm-eval user pays. They are written
from the published description, kept deliberately plain, and are *not* part of evalkit.

Two changes against dgm-eval, both neutral for cost: every random draw comes from an explicit
``seed`` (dgm-eval uses the unseeded global numpy state), and the FLS code runs on ``device``
(dgm-eval hard-codes ``.cuda()``; here the benchmark passes ``cpu``).

Each function returns a dict of result values, so the benchmark can print them beside
evalkit's numbers as a sanity check.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------- FD and FD-infinity

def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.mean`` and ``np.cov(rowvar=False)`` (float64, N-1), as pytorch-fid and dgm-eval."""
    return np.atleast_1d(np.mean(x, axis=0)), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_sqrtm(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """The Fréchet distance with ``scipy.linalg.sqrtm`` of Σ1Σ2 (pytorch-fid's procedure).

    Delegates to pytorch-fid itself (the anchor SPEC.md names for ``fd``), which dgm-eval's
    ``compute_FD_with_stats`` copies line for line.
    """
    from pytorch_fid.fid_score import calculate_frechet_distance

    return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps))


def fd_infinity_dgm(real: np.ndarray, fake: np.ndarray, *, num_points: int = 15,
                    seed: int = 0) -> dict[str, float]:
    """dgm-eval's ``compute_FD_infinity``: FD at 15 subset sizes, linear fit in 1/n, value at 0.

    The reference statistics are computed once; every subset size draws ``rng.choice(fake, n,
    replace=False)`` (a copy of the rows), computes its own mean and full covariance with
    ``np.cov`` and one ``scipy.linalg.sqrtm`` of the D x D product (15 of them in all);
    ``sklearn.linear_model.LinearRegression`` fits the line. dgm-eval's sizes are
    ``linspace(min(5000, max(Ng//10, 2)), Ng, 15).astype('int32')``.
    """
    from sklearn.linear_model import LinearRegression

    sizes = np.linspace(min(5000, max(len(fake) // 10, 2)), len(fake), num_points).astype("int32")
    mu1, sigma1 = gaussian_stats(real)
    rng = np.random.default_rng(seed)
    fds = []
    for n in sizes:
        sub = rng.choice(fake, n, replace=False)
        mu2, sigma2 = gaussian_stats(sub)
        del sub
        fds.append(frechet_sqrtm(mu1, sigma1, mu2, sigma2))
    reg = LinearRegression().fit(1.0 / sizes.reshape(-1, 1), np.asarray(fds).reshape(-1, 1))
    return {"fd_inf": float(reg.predict(np.array([[0.0]]))[0, 0])}


# ---------------------------------------------------------------------------- k-NN metrics

def _pairwise(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Full N x M Euclidean distance matrix via scikit-learn, as ``prdc`` and dgm-eval build it."""
    import sklearn.metrics

    return sklearn.metrics.pairwise_distances(a, a if b is None else b, metric="euclidean",
                                              n_jobs=8)


def _kth(dist: np.ndarray, k: int) -> np.ndarray:
    """k-th smallest value per row through an N x N int64 ``argpartition`` (prdc's way)."""
    idx = np.argpartition(dist, k, axis=-1)[..., :k]
    return np.take_along_axis(dist, idx, axis=-1).max(axis=-1)


def realism_dgm(real: np.ndarray, fake: np.ndarray, *, nearest_k: int = 3) -> dict[str, float]:
    """dgm-eval's realism score (``compute_prdc(..., realism=True)``), realism part only.

    Builds the N x N real-real distance matrix and its k-NN radii (``argpartition``), the
    N x M real-fake distance matrix, keeps the spheres below the median radius and takes, per
    generated sample, ``max(radius / distance)`` over a dense (N/2) x M ratio matrix.
    (dgm-eval also computes precision/recall/density/coverage in the same call; leaving them
    out makes this anchor cheaper, not dearer.)
    """
    d_rr = _pairwise(real)
    radii = _kth(d_rr, nearest_k + 1)
    del d_rr
    d_rf = _pairwise(real, fake)
    mask = radii < np.median(radii)
    scores = (np.expand_dims(radii[mask], axis=1) / d_rf[mask]).max(axis=0)
    return {"realism": float(np.mean(scores))}


def authpct_dgm(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """dgm-eval's ``compute_authpct``: two dense ``torch.cdist`` matrices (real-real, real-fake).

    A generated sample is authentic when its nearest real sample is closer to its own nearest
    real neighbour than to the generated sample (Alaa et al. 2022).
    """
    import torch

    with torch.no_grad():
        r = torch.tensor(real, dtype=torch.float32)
        g = torch.tensor(fake, dtype=torch.float32)
        real_dists = torch.cdist(r, r)
        real_dists.fill_diagonal_(float("inf"))
        gen_dists = torch.cdist(r, g)
        real_min = real_dists.min(dim=0)
        gen_min = gen_dists.min(dim=0)
        authen = real_min.values[gen_min.indices] < gen_min.values
        return {"authpct": float(100 * torch.sum(authen) / len(authen))}


# ---------------------------------------------------------------------------- C_T

def _zu(test: np.ndarray, gen: np.ndarray, train: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of the train-NN distances of gen vs test (Meehan et al. 2020)."""
    from scipy.stats import mannwhitneyu
    from sklearn.neighbors import NearestNeighbors

    m, n = gen.shape[0], test.shape[0]
    nn = NearestNeighbors(n_neighbors=1).fit(train)
    lq, _ = nn.kneighbors(X=gen, n_neighbors=1)
    lp, _ = nn.kneighbors(X=test, n_neighbors=1)
    u, _ = mannwhitneyu(lq, lp, alternative="less")
    mean = (n * m / 2) - 0.5
    std = np.sqrt(n * m * (n + m + 1) / 12)
    return float(np.ravel((u - mean) / std)[0])


def ct_dgm(real: np.ndarray, fake: np.ndarray, test: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """dgm-eval's ``compute_CTscore``: PCA to 64 dims (scikit-learn, fit on the reference),
    ``KMeans(3, n_init=10)`` on the reference, per cell a ``NearestNeighbors`` fit on the
    reference cell and the Mann-Whitney Z of generated vs test distances, cells with more than
    τ = 20/m of the generated samples averaged with the test-set shares as weights.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    train, tst, gen = real, test, fake
    if train.shape[1] > 64:
        pca = PCA(n_components=64, random_state=seed).fit(train)
        train, tst, gen = pca.transform(train), pca.transform(tst), pca.transform(gen)
    km = KMeans(n_clusters=3, n_init=10, random_state=seed).fit(train)
    t_lab, p_lab, q_lab = km.predict(train), km.predict(tst), km.predict(gen)
    k = 3
    m, n = gen.shape[0], tst.shape[0]
    q_share = np.bincount(q_lab, minlength=k) / m
    p_share = np.bincount(p_lab, minlength=k) / n
    keep = q_share > 20 / m
    zs = np.zeros(k)
    for i in range(k):
        if (q_lab == i).any():
            zs[i] = _zu(tst[p_lab == i], gen[q_lab == i], train[t_lab == i])
    return {"ct": float(p_share[keep].dot(zs[keep]) / p_share[keep].sum())}


# ---------------------------------------------------------------------------- FLS

def fls_subsets(real: np.ndarray, fake: np.ndarray, test: np.ndarray, *, seed: int = 0,
                reduced_n: int = 10000):
    """dgm-eval's FLS input selection: n = min(reduced_n, Nr//2, Nt, Ng) random test and
    generated samples and 2n reference samples split into train / baseline halves."""
    n = min(reduced_n, real.shape[0] // 2, test.shape[0], fake.shape[0])
    rng = np.random.default_rng(seed)
    t = test[rng.choice(test.shape[0], n, replace=False)]
    g = fake[rng.choice(fake.shape[0], n, replace=False)]
    tr = real[rng.choice(real.shape[0], 2 * n, replace=False)]
    return tr[:n], tr[n:], t, g


def _fls_preprocess(train, baseline, test, gen, device):
    import torch

    feats = [torch.tensor(a, dtype=torch.float32, device=device) for a in (train, baseline, test, gen)]
    allf = torch.cat(feats, dim=0)
    mean, std = allf.mean(dim=0), allf.std(dim=0)
    del allf
    return [(f - mean) / std for f in feats]


def _sq_dists(x, y):
    import torch

    return (torch.cdist(x, y) ** 2).detach()


def _nll(dists, log_sigmas, dim, detailed=False):
    import torch

    expo = (-0.5 * dists) / torch.exp(log_sigmas)
    expo -= (dim / 2) * log_sigmas
    expo += torch.log(torch.tensor(1 / dists.shape[1]))
    inner = torch.logsumexp(expo, dim=1)
    total = torch.mean(-inner)
    return (total, -inner) if detailed else total


def _optimize_sigmas(x_data, x_kernel, device, init_val=0.0):
    """100 Adam steps (lr 0.5, ×0.1 after 50) on per-kernel log-bandwidths over a dense n x n
    squared-distance matrix, clamped to [-100, 20] after each step (dgm-eval/FLS)."""
    import torch

    log_sigmas = torch.ones(x_kernel.shape[0], requires_grad=True, device=device)
    log_sigmas.data = init_val * log_sigmas
    optim = torch.optim.Adam([log_sigmas], lr=0.5)
    sched = torch.optim.lr_scheduler.MultiStepLR(optim, milestones=[50], gamma=0.1)
    dim = x_data.shape[1]
    dists = _sq_dists(x_data, x_kernel)
    for _ in range(100):
        loss = _nll(dists, log_sigmas, dim)
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        with torch.no_grad():
            log_sigmas.data = log_sigmas.clamp(-100, 20).data
    return log_sigmas


def fls_dgm(real: np.ndarray, fake: np.ndarray, test: np.ndarray, *, seed: int = 0,
            device: Any = "cpu") -> dict[str, float]:
    """dgm-eval's ``compute_fls``: two bandwidth fits (generated and baseline kernels, each 100
    Adam steps over an n x n matrix), test NLL under each, ``100·e^(-2(NLLgen-NLLbase)/D)``."""
    import torch

    train, base, tst, gen = _fls_preprocess(*fls_subsets(real, fake, test, seed=seed), device)
    gen_ls = _optimize_sigmas(train, gen, device)
    with torch.no_grad():
        gen_nll = float(_nll(_sq_dists(tst, gen), gen_ls, gen.shape[1], detailed=True)[0])
    base_ls = _optimize_sigmas(train, base, device)
    with torch.no_grad():
        base_nll = float(_nll(_sq_dists(tst, base), base_ls, base.shape[1], detailed=True)[0])
    diff = 2 * (gen_nll - base_nll) / train.shape[1]
    return {"fls": float(math.e ** (-diff) * 100)}


def _pairwise_ll(x_data, x_kernel, log_sigmas):
    import torch

    dists = _sq_dists(x_data, x_kernel)
    expo = (-0.5 * dists) / torch.exp(log_sigmas)
    expo -= (x_kernel.shape[1] / 2) * log_sigmas
    expo += torch.log(torch.tensor(1 / dists.shape[1]))
    return expo


def fls_pog_dgm(real: np.ndarray, fake: np.ndarray, test: np.ndarray, *, seed: int = 0,
                device: Any = "cpu") -> dict[str, float]:
    """dgm-eval's ``compute_fls_overfit``: one bandwidth fit on the generated kernels, dense
    n x n log-likelihoods of train and of test samples, share of kernels with a higher train
    likelihood, in percent, minus 50."""
    import torch

    train, _, tst, gen = _fls_preprocess(*fls_subsets(real, fake, test, seed=seed), device)
    gen_ls = _optimize_sigmas(train, gen, device)
    with torch.no_grad():
        size = min(tst.shape[0], train.shape[0])
        train_ll = _pairwise_ll(train[:size], gen, gen_ls)
        test_ll = _pairwise_ll(tst[:size], gen, gen_ls)
        diff = train_ll.logsumexp(dim=0) - test_ll.logsumexp(dim=0)
        score = float((diff > 0).sum()) / diff.shape[0] * 100
    return {"fls_pog": score - 50}


# ---------------------------------------------------------------------------- Vendi, CMMD

def vendi_nxn_dgm(fake: np.ndarray) -> dict[str, float]:
    """dgm-eval's ``compute_vendi_score`` (linear kernel): L2-normalise, the N x N similarity
    matrix ``X Xᵀ``, ``scipy.linalg.eigvalsh(S / N)``, exp of the Shannon entropy."""
    import scipy.linalg
    from sklearn import preprocessing

    x = preprocessing.normalize(fake, axis=1)
    s = x @ x.T
    w = scipy.linalg.eigvalsh(s / x.shape[0])
    p = w[w > 0]
    return {"vendi": float(np.exp(-(p * np.log(p)).sum()))}


def cmmd_naive(real: np.ndarray, fake: np.ndarray, *, sigma: float = 10.0,
               scale: float = 1000.0) -> dict[str, float]:
    """The CMMD reference implementation's estimator (google-research/cmmd ``distance.mmd``):
    three dense Gaussian kernel matrices in float32, biased MMD² (diagonals included), ×1000.
    Rows are L2-normalised first (evalkit does so too when it falls back to ``features``)."""
    x = (real / np.linalg.norm(real, axis=1, keepdims=True)).astype(np.float32)
    y = (fake / np.linalg.norm(fake, axis=1, keepdims=True)).astype(np.float32)
    gamma = 1.0 / (2 * sigma ** 2)
    xs, ys = (x * x).sum(1), (y * y).sum(1)
    kxx = np.mean(np.exp(-gamma * (-2 * x @ x.T + xs[:, None] + xs[None, :])))
    kyy = np.mean(np.exp(-gamma * (-2 * y @ y.T + ys[:, None] + ys[None, :])))
    kxy = np.mean(np.exp(-gamma * (-2 * x @ y.T + xs[:, None] + ys[None, :])))
    return {"cmmd": float(scale * (kxx + kyy - 2 * kxy))}
