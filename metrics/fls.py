"""Feature likelihood score (Jiralerspong et al. 2023) and its overfitting companion, as dgm-eval runs them.

The score fits a Gaussian kernel density estimate in feature space: one isotropic kernel per
generated sample, each with its own bandwidth, the bandwidths chosen to maximise the likelihood of
training (reference) samples; the held-out test set's likelihood under that KDE is compared with
the likelihood under a KDE centred at other reference samples (the "baseline").

dgm-eval holds the full n x n distance matrix on the GPU and lets autograd differentiate a dense
``logsumexp`` 100 times per fit. Here the distances are kept in float32 (one n x n matrix at a
time) and the negative log-likelihood and its gradient with respect to the log-bandwidths are
computed together, analytically, in one streamed pass over row chunks per Adam step:

    E_ij  = -0.5 d_ij / exp(s_j) - (D/2) s_j - log M
    NLL   = -mean_i logsumexp_j E_ij
    dNLL/ds_j = -(1/N) sum_i P_ij (0.5 d_ij / exp(s_j) - D/2),   P = softmax_j(E)

which is exactly what autograd computes for dgm-eval's loss, with one ``exp`` per entry and the
chunk kept in cache. The optimiser is torch's own Adam with dgm-eval's schedule.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from evalkit.lazy import torch
from evalkit.metrics._registry import Output, register_metric
from evalkit.metrics.primitives.common import (
    Seed,
    check_points,
    resolve_device,
    seeded_generator,
    take_rows,
)

# Bytes of one chunk of the n x M likelihood matrix (~L3-sized: the passes run from cache, and
# there are few enough chunks that thread synchronisation stays cheap on a busy machine).
CHUNK_BYTES = 16 * 2**20
# exp() of arguments below this underflows to a float32 denormal (slow on x86, and negligible).
_EXP_FLOOR = -87.0


def _rows(n_cols: int) -> int:
    return max(8, CHUNK_BYTES // (4 * max(n_cols, 1)))


def _tensor(x: Any, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows ``idx`` as float32 values (dgm-eval's ``torch.tensor(feat, dtype=float32)`` comes
    before its standardisation), held in float64 for the moment sums."""
    i = torch.as_tensor(idx, device=x.device if isinstance(x, torch.Tensor) else "cpu")
    t = x[i] if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x)[idx])
    t = t.to(torch.float32)
    return t.to(device=device, dtype=torch.float64)


def _sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances in float32, ``|a|^2 + |b|^2 - 2 a.b`` clamped at 0."""
    if b_sq is None:
        b_sq = torch.einsum("ij,ij->i", b, b)
    d = torch.addmm(b_sq.unsqueeze(0), a, b.T, beta=1.0, alpha=-2.0)
    d += torch.einsum("ij,ij->i", a, a).unsqueeze(1)
    return d.clamp_min_(0.0)


def _nll_grad(d: torch.Tensor, log_s: torch.Tensor, dim: int) -> tuple[float, torch.Tensor]:
    """Mean NLL of the rows of ``d`` under the KDE, and its gradient w.r.t. ``log_s``."""
    n, m = d.shape
    es = torch.exp(log_s)
    const = -(dim / 2.0) * log_s + math.log(1.0 / m)
    total = torch.zeros((), dtype=torch.float64, device=d.device)
    g_p = torch.zeros(m, dtype=torch.float32, device=d.device)
    g_pd = torch.zeros(m, dtype=torch.float32, device=d.device)
    step = _rows(m)
    buf = torch.empty(min(step, n), m, dtype=torch.float32, device=d.device)
    for s in range(0, n, step):
        dc = d[s:s + step]
        r = dc.shape[0]
        e = buf[:r]
        torch.addcdiv(const.expand(r, m), dc, es.expand(r, m), value=-0.5, out=e)
        mx = e.amax(1, keepdim=True)
        e.sub_(mx).clamp_(min=_EXP_FLOOR).exp_()
        ssum = e.sum(1, keepdim=True)
        total += (mx + ssum.log()).sum().to(torch.float64)
        w = (1.0 / ssum).squeeze(1)
        g_p += w @ e
        e.mul_(dc)
        g_pd += w @ e
    grad = -(0.5 * g_pd / es - (dim / 2.0) * g_p) / n
    return float(-total / n), grad


def _nll_grad_batch(d: torch.Tensor, log_s: torch.Tensor, dim: int) -> torch.Tensor:
    """:func:`_nll_grad`'s gradient for a (B, n, M) stack of distance matrices and (B, M)
    log-bandwidths, all at once (small matrices: one chunk each)."""
    n, m = d.shape[1], d.shape[2]
    es = torch.exp(log_s).unsqueeze(1)
    const = (-(dim / 2.0) * log_s + math.log(1.0 / m)).unsqueeze(1)
    e = torch.addcdiv(const, d, es, value=-0.5)
    mx = e.amax(2, keepdim=True)
    e.sub_(mx).clamp_(min=_EXP_FLOOR).exp_()
    w = (1.0 / e.sum(2, keepdim=True)).transpose(1, 2)
    g_p = torch.bmm(w, e).squeeze(1)
    e.mul_(d)
    g_pd = torch.bmm(w, e).squeeze(1)
    return -(0.5 * g_pd / es.squeeze(1) - (dim / 2.0) * g_p) / n


def _row_nll(d: torch.Tensor, log_s: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-row NLL ``-logsumexp_j E_ij`` (float64) of a chunk of distances."""
    m = d.shape[1]
    e = torch.addcdiv(-(dim / 2.0) * log_s + math.log(1.0 / m), d, torch.exp(log_s), value=-0.5)
    return -torch.logsumexp(e, dim=1).to(torch.float64)


def _col_lse(d: torch.Tensor, log_s: torch.Tensor, dim: int, state: tuple[torch.Tensor, torch.Tensor] | None):
    """Streaming ``logsumexp`` over rows (per kernel) of ``E``; returns the updated (max, sum)."""
    m = d.shape[1]
    e = torch.addcdiv(-(dim / 2.0) * log_s + math.log(1.0 / m), d, torch.exp(log_s), value=-0.5)
    cm = e.amax(0)
    if state is None:
        mx = cm
        acc = torch.zeros_like(cm)
    else:
        mx, acc = state
        new = torch.maximum(mx, cm)
        acc = acc * torch.exp((mx - new).clamp(min=_EXP_FLOOR))
        mx = new
    acc = acc + e.sub_(mx).clamp_(min=_EXP_FLOOR).exp_().sum(0)
    return mx, acc


def _fit_log_sigmas(d: torch.Tensor, dim: int, steps: int) -> torch.Tensor:
    """dgm-eval's ``optimize_sigmas``: Adam(lr=0.5), lr x0.1 after 50 steps, clamp to [-100, 20].

    The Adam update is written out (torch's single-tensor ``Adam`` step with its defaults,
    betas (0.9, 0.999), eps 1e-8, the same tensor operations in the same order, so the same
    bits as ``torch.optim.Adam`` + ``MultiStepLR``: ``tests/test_metrics_moments.py``) to spare
    the optimiser's per-step bookkeeping, which costs more than a step on small sets.
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    lr = 0.5
    log_s = torch.zeros(d.shape[:-2] + d.shape[-1:], dtype=torch.float32, device=d.device)
    exp_avg = torch.zeros_like(log_s)
    exp_avg_sq = torch.zeros_like(log_s)
    for step in range(1, steps + 1):
        grad = _nll_grad(d, log_s, dim)[1] if d.dim() == 2 else _nll_grad_batch(d, log_s, dim)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1 ** float(step))
        denom = (exp_avg_sq.sqrt() / (1 - beta2 ** float(step)) ** 0.5).add_(eps)
        log_s.addcdiv_(exp_avg, denom, value=-step_size)
        log_s.clamp_(-100.0, 20.0)
        if step == 50:  # MultiStepLR(milestones=[50], gamma=0.1)
            lr = lr * 0.1
    return log_s


def _eval_nll(data: torch.Tensor, kernels: torch.Tensor, log_s: torch.Tensor, dim: int, lse: bool):
    """Mean NLL of ``data`` under the KDE (and the per-kernel logsumexp over ``data`` if asked)."""
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    state = None
    step = _rows(kernels.shape[0])
    k_sq = torch.einsum("ij,ij->i", kernels, kernels)
    for s in range(0, data.shape[0], step):
        d = _sq_dists(data[s:s + step], kernels, k_sq)
        total += _row_nll(d, log_s, dim).sum()
        if lse:
            state = _col_lse(d, log_s, dim, state)
    col = None if state is None else state[0] + torch.log(state[1])
    return float(total / data.shape[0]), col


def _train_lse(d: torch.Tensor, log_s: torch.Tensor, dim: int) -> torch.Tensor:
    state = None
    step = _rows(d.shape[1])
    for s in range(0, d.shape[0], step):
        state = _col_lse(d[s:s + step], log_s, dim, state)
    return state[0] + torch.log(state[1])


@register_metric(
    Output("fls", "higher", "feature likelihood score: held-out likelihood under a KDE on generated samples "
           "vs real ones, 100 = as good as real (Jiralerspong et al. 2023)", range=(0.0, math.inf)),
    Output("fls_pog", "zero",
           "FLS overfitting: % of generated kernels more likely under train than test samples, minus 50",
           range=(-50.0, 50.0)),
    args=("real", "fake", "test"), min_samples=2, order_invariant=False, position=110,
    device_rows=True,
)
def fls(
    real: Any,
    fake: Any,
    test: Any,
    *,
    seed: Seed = 0,
    max_samples: int = 10000,
    steps: int = 100,
    device: Any = None,
) -> dict[str, float]:
    """Feature likelihood score and its overfitting percentage, dgm-eval's protocol.

    Jiralerspong, Bose, Gemp, Qin, Bachrach, Gidel, "Feature Likelihood Score: Evaluating the
    Generalization of Generative Models Using Samples" (2023; later renamed Feature Likelihood
    Divergence), as dgm-eval's ``compute_fls`` / ``compute_fls_overfit`` run it:

    - n = min(``max_samples``, N_ref // 2, N_test, N_gen); seeded subsets (one
      ``numpy.random.default_rng(seed)``, drawn in this order) of n test, n generated and 2n
      reference samples, the latter split into n "train" and n "baseline" samples (dgm-eval draws
      the same subsets from the unseeded global numpy RNG);
    - the features rounded to float32 first (dgm-eval's ``torch.tensor(..., dtype=float32)``:
      float64 inputs with a large offset lose the same digits), then all 4n standardised with
      their joint mean and (N-1) standard deviation, in float32 arithmetic (a constant feature is
      left unscaled instead of divided by 0, where dgm-eval returns NaN);
    - per-kernel log-bandwidths s (log of the variance) for the kernels at the generated samples,
      fit to the train samples by 100 Adam steps (lr 0.5, x0.1 after 50, init 0, clamped to
      [-100, 20]) on the NLL above; the same for kernels at the baseline samples;
    - ``fls = 100 exp(-2 (NLL_gen - NLL_base) / D)`` with NLL the mean NLL of the test samples:
      100 means the generated samples explain held-out data as well as real samples do, lower is
      worse (poor fidelity or coverage, or memorised training samples whose kernels collapse);
      higher is better for this form (FLD, the later difference form, is lower-better);
    - ``fls_pog = 100 * share(LSE_i E(train_i, g_j) > LSE_i E(test_i, g_j)) - 50``: the share of
      generated kernels under which the n train samples are more likely than the n test samples,
      minus 50; 0 for a model that does not overfit, up to 50 when every kernel sits on training
      data.

    Distances and likelihoods are float32 (as in dgm-eval), sums float64.

    Returns:
        ``{"fls": ..., "fls_pog": ...}``; the registry lists ``fls`` (higher is better) and
        ``fls_pog`` (closer to 0 is better) as two metrics sharing this function.
    """
    train, base, tst, gen = _fls_sets(real, fake, test, seed, max_samples, resolve_device(device))
    dim = int(train.shape[1])

    d_tg = _sq_dists(train, gen)
    s_gen = _fit_log_sigmas(d_tg, dim, steps)
    lse_train = _train_lse(d_tg, s_gen, dim)
    del d_tg

    d_tb = _sq_dists(train, base)
    s_base = _fit_log_sigmas(d_tb, dim, steps)
    del d_tb
    return _fls_scores(base, tst, gen, s_gen, s_base, lse_train)


def _fls_sets(real: Any, fake: Any, test: Any, seed: Seed, max_samples: int, dev: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """fls's seeded train, baseline, test and generated rows, standardised (:func:`fls`)."""
    nr = check_points("fls", "reference", real, 2)
    ng = check_points("fls", "generated", fake, 1, dim=real.shape[1])
    nt = check_points("fls", "test", test, 1, dim=real.shape[1])
    n = min(int(max_samples), nr // 2, nt, ng)
    rng = seeded_generator(seed)
    ti = rng.choice(nt, n, replace=False)
    gi = rng.choice(ng, n, replace=False)
    ri = rng.choice(nr, 2 * n, replace=False)
    sets = [(real, ri[:n]), (real, ri[n:]), (test, ti), (fake, gi)]
    # joint mean and (N-1) standard deviation of the 4n rows, accumulated in float64
    total = torch.zeros(int(real.shape[1]), dtype=torch.float64, device=dev)
    for x, idx in sets:
        for s in range(0, n, 4096):
            total += _tensor(x, idx[s:s + 4096], dev).sum(0)
    mean = total / (4 * n)
    var = torch.zeros_like(mean)
    for x, idx in sets:
        for s in range(0, n, 4096):
            var += (_tensor(x, idx[s:s + 4096], dev) - mean).pow(2).sum(0)
    std = torch.sqrt(var / max(4 * n - 1, 1))
    std[std == 0] = 1.0
    mean32, std32 = mean.to(torch.float32), std.to(torch.float32)  # dgm-eval standardises in float32
    return tuple(
        torch.cat([(_tensor(x, idx[s:s + 4096], dev).to(torch.float32) - mean32) / std32
                   for s in range(0, n, 4096)])
        for x, idx in sets
    )


def _fls_scores(base: torch.Tensor, tst: torch.Tensor, gen: torch.Tensor, s_gen: torch.Tensor,
                s_base: torch.Tensor, lse_train: torch.Tensor) -> dict[str, float]:
    """fls and fls_pog from the fitted log-bandwidths (:func:`fls`)."""
    dim = int(tst.shape[1])
    nll_gen, lse_test = _eval_nll(tst, gen, s_gen, dim, lse=True)
    nll_base, _ = _eval_nll(tst, base, s_base, dim, lse=False)
    score = 100.0 * math.exp(-2.0 * (nll_gen - nll_base) / dim)
    pog = 100.0 * int(((lse_train - lse_test) > 0).sum()) / lse_train.numel() - 50.0
    return {"fls": score, "fls_pog": pog}


# float32 entries a batched fit (fls_batch) holds at once: its stacked distance matrices, and
# the standardised rows of the sets being prepared
BATCH_ELEMENTS = 1 << 22
BATCH_ROW_ELEMENTS = 1 << 20


def fls_batch(real: Any, fake: Any, test: Any, rows: list[np.ndarray], seeds: list[Seed], *,
              max_samples: int = 10000, steps: int = 100, device: Any = None
              ) -> list[dict[str, float]]:
    """``[fls(real, fake[r], test, seed=s) for r, s in zip(rows, seeds)]`` with the bandwidth
    fits of several of them run as one batch (for resampling: half-sampling intervals on small
    sets, where a fit's cost is its 100 steps' per-call overhead, not arithmetic).

    Equal to the one-at-a-time values to float32 round-off: the fits' column sums are batched
    matrix products instead of one matrix-vector product per set, which may sum in another order.
    Batches hold at most ``BATCH_ELEMENTS`` distances (large sets: one set per batch,
    :func:`fls`'s own path), and are standardised ``BATCH_ROW_ELEMENTS`` feature values at a time.
    """
    dev = resolve_device(device)
    if not rows:
        return []
    n = max(1, min(int(max_samples), int(real.shape[0]) // 2, int(test.shape[0]), len(rows[0])))
    per = max(1, BATCH_ELEMENTS // (4 * n * n))
    out = []
    for b0 in range(0, len(rows), per):
        if per == 1:
            out.append(fls(real, take_rows(fake, rows[b0]), test, seed=seeds[b0],
                           max_samples=max_samples, steps=steps, device=dev))
            continue
        out += _fls_group(real, fake, test, rows[b0:b0 + per], seeds[b0:b0 + per], max_samples,
                          steps, dev)
    return out


def _fls_group(real: Any, fake: Any, test: Any, rows: list[np.ndarray], seeds: list[Seed],
               max_samples: int, steps: int, dev: torch.device) -> list[dict[str, float]]:
    """:func:`fls` for R row subsets of ``fake`` at once: every step below is fls's, on a
    leading batch axis of R sets (their subsets drawn one by one as fls draws them)."""
    nr = check_points("fls", "reference", real, 2)
    nt = check_points("fls", "test", test, 1, dim=real.shape[1])
    n = min(int(max_samples), nr // 2, nt, len(rows[0]))
    idx = {"train": [], "base": [], "test": [], "gen": []}
    check_points("fls", "generated", fake, 1, dim=real.shape[1])
    for r, seed in zip(rows, seeds):
        rng = seeded_generator(seed)
        ti = rng.choice(nt, n, replace=False)
        gi = rng.choice(len(r), n, replace=False)
        ri = rng.choice(nr, 2 * n, replace=False)
        for key, v in (("train", ri[:n]), ("base", ri[n:]), ("test", ti), ("gen", np.asarray(r)[gi])):
            idx[key].append(v)
    dim = int(real.shape[1])
    # standardised in chunks of rounds that stay in cache; only the n×n distances are kept
    step = max(1, BATCH_ROW_ELEMENTS // (4 * n * dim))
    dists: list[list[torch.Tensor]] = [[], [], [], []]
    # the sets' rows rounded to float32 once (fls's _tensor); each chunk gathers its rounds' rows
    pools = [(a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))).to(torch.float32).to(dev)
             for a in (real, test, fake)]
    order = ((0, "train"), (0, "base"), (1, "test"), (2, "gen"))
    for c in range(0, len(rows), step):
        # (c, 4n, D): the rows of each set in fls's set order
        x32 = torch.cat([pools[p][torch.as_tensor(np.stack(idx[key][c:c + step]), device=dev)]
                         for p, key in order], dim=1)
        x64 = x32.to(torch.float64)
        mean = x64.sum(1, keepdim=True) / (4 * n)
        std = torch.sqrt(x64.sub_(mean).square_().sum(1, keepdim=True) / max(4 * n - 1, 1))
        std[std == 0] = 1.0
        z = x32.sub_(mean.to(torch.float32)).div_(std.to(torch.float32))
        # the rows' squared norms, once per row (the products _sq_dists forms, bit for bit)
        sq = torch.einsum("rij,rij->ri", z, z)
        parts = [(z[:, i * n:(i + 1) * n], sq[:, i * n:(i + 1) * n]) for i in range(4)]
        train, base, tst, gen = parts
        for out, (a, b) in zip(dists, ((train, gen), (train, base), (tst, gen), (tst, base))):
            out.append(_sq_dists_batch(a, b))
    d_tg, d_tb, d_eg, d_eb = (torch.cat(d) for d in dists)
    log_s = _fit_log_sigmas(torch.cat([d_tg, d_tb]), dim, steps)
    s_gen, s_base = log_s[:len(rows)], log_s[len(rows):]
    e_tg, e_eg, e_eb = (_log_kernel(d, ls, dim) for d, ls in ((d_tg, s_gen), (d_eg, s_gen), (d_eb, s_base)))
    nll_gen = -torch.logsumexp(e_eg, dim=2).to(torch.float64).mean(1)
    nll_base = -torch.logsumexp(e_eb, dim=2).to(torch.float64).mean(1)
    above = (torch.logsumexp(e_tg, dim=1) - torch.logsumexp(e_eg, dim=1)) > 0
    return [{"fls": 100.0 * math.exp(-2.0 * (float(g) - float(b)) / dim),
             "fls_pog": 100.0 * int(a.sum()) / n - 50.0}
            for g, b, a in zip(nll_gen, nll_base, above)]


def _sq_dists_batch(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]
                    ) -> torch.Tensor:
    """:func:`_sq_dists` for (R, n, D) and (R, m, D) batches, each given with its rows' squared
    norms (R, n) and (R, m)."""
    (a, a_sq), (b, b_sq) = a, b
    d = torch.baddbmm(b_sq.unsqueeze(1), a, b.transpose(1, 2), beta=1.0, alpha=-2.0)
    d += a_sq.unsqueeze(2)
    return d.clamp_min_(0.0)


def _log_kernel(d: torch.Tensor, log_s: torch.Tensor, dim: int) -> torch.Tensor:
    """E = -0.5 d / exp(s) - (D/2) s - log M for (R, n, M) distances and (R, M) log-bandwidths."""
    m = d.shape[2]
    const = (-(dim / 2.0) * log_s + math.log(1.0 / m)).unsqueeze(1)
    return torch.addcdiv(const, d, torch.exp(log_s).unsqueeze(1), value=-0.5)


fls_pog = fls
