"""Confidence intervals for every metric by half-sampling the generated set (``score --bootstrap B``).

Why not the textbook bootstrap: resampling N generated samples *with replacement* duplicates
rows. Duplicates sit at distance 0 from each other, which shrinks k-NN radii (recall, coverage,
density move) and removes spread from the covariance (FD moves); the resampled values are then
centred far from the estimate, and percentile intervals miss it (FD 17.87 with an interval
[22.23, 24.28]).

Method (``BOOTSTRAP_METHOD``): each of B rounds draws m = floor(n/2) of the n generated samples
*without* replacement (no duplicates; every statistic stays defined), with the reference and
test sets held fixed, and recomputes the metric on that subset. The subsample values' deviations
from their median, rescaled by ``sqrt(m / (n - m))`` (= 1 for m = n/2: the delete-d jackknife
factor of Shao & Wu 1989, the finite-population form of Politis, Romano & Wolf's subsampling
rate ``sqrt(m/n)``), estimate the sampling distribution of the n-sample estimate; the interval is
the basic (reflected) one,

    [theta_n - f q_(1-a/2),  theta_n - f q_(a/2)],   q = quantiles of (theta*_m - median theta*_m).

Centring on the subsample median removes the part of ``theta*_m - theta_n`` that comes from the
metric's own sample-size dependence (FD's bias grows like 1/m, k-NN radii grow as m shrinks):
that is a property of the estimator at size n, not sampling noise. The interval therefore always
contains the estimate itself. It describes the noise of the generated set *given the reference*
(the reference is not resampled).

Cost: per round, metrics with per-sample statistics cost a subset mean, not an evaluation:
precision / density / coverage (which real spheres each generated sample lies in, computed
once), realism, authenticity and rarity (per-sample scores, computed once; rarity while the
reference is used whole). FD, sFID and FD∞ reuse the reference's moments and factor and project
the generated set once (per FD: the subset's Gram matrix and one min(m, k) x min(m, k)
eigenproblem, k the factor's rank, Nr or D; the D x D route only when m and k are both at least
D; FD∞ does this for each of its sizes). kd, rke and cmmd read kernel matrices of the whole sets
computed once (:class:`~evalkit.metrics.kernel.KernelTable`; rke while its bandwidth is the same
in every round), a round summing entries instead of forming inner products. fls fits the
rounds' bandwidths as one batch (:func:`~evalkit.metrics.fls.fls_batch`). On small sets the
rounds of several groups run as batches (:func:`_batched`: the half-samples of the rounds ahead
drawn from the group's stream in order): recall from exact distance tables of the whole sets
(:class:`~evalkit.metrics.prdc.RecallTable`, bit-identical), FD and FD∞ from one batched
eigensolver (:meth:`SubsetFrechet.many`), sw_approx and vendi from a Gram table of the
generated set; larger sets recompute recall's radii and spheres per round. The others (is, ct,
...) are evaluated on the half-size subset. Every fast path gives the values a
recomputation on the half-sample gives, to round-off (``tests/test_intervals.py``), from the
same per-round streams.

Floors: a round cannot cost less than what the metric must recompute for a new set of rows:
fls refits its bandwidths on every half-sample (its n is min(N_ref/2, N_gen/2) in a round and
min(N_ref/2, N_gen) in an evaluation: the same size for N_ref <= N_gen, so each round costs
one fls evaluation), FD needs one eigenproblem of min(m, k) rows per round, FD∞ one per size.
Measured in ``benchmarks/README.md`` ("Bootstrap intervals").
"""
from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from evalkit.devices import resolve_device
from evalkit.errors import InputError, MetricInputError
from evalkit.lazy import torch
from evalkit.metrics import result_ranges
from evalkit.metrics.fls import fls_batch
from evalkit.metrics.frechet import (
    SubsetFrechet,
    cov_factor,
    fd_inf_fit,
    fd_inf_from_reference,
    fd_inf_sizes,
    reference_stats,
)
from evalkit.metrics.kernel import CMMD_SCALE, CMMD_SIGMA, KernelTable, gaussian_kernel_mean, l2_normalise
from evalkit.metrics.memorization import authenticity
from evalkit.metrics.prdc import RecallTable, prdc_parts, realism_scores, recall_of
from evalkit.metrics.primitives.common import seeded_generator, take_rows
from evalkit.metrics.rarity import RARITY_K, rarity_scores
from evalkit.metrics.rke import median_distance, sq_dists
from evalkit.scoring.plan import array_for, moments_for
from evalkit.scoring.rng import RunRNG
from evalkit.scoring.run import compute_metrics, stream_name

BOOTSTRAP_METHOD = "half-sampling"
# Rounds above which a warning is printed, and the most accepted.
WARN_ROUNDS = 2000
MAX_ROUNDS = 20000
# Per-sample fast paths, by metric name.
_PRDC = ("precision", "recall", "density", "coverage")
_MOMENTS = ("fd", "sfid")
# kd's, rke's and cmmd's rounds read kernel matrices of the whole sets, computed once, while
# each metric's fit in this many bytes
TABLE_BYTES = 3 << 30


def check_rounds(rounds: int, warn: bool = True) -> None:
    """Refuse absurd round counts, warn about merely large ones (once: the entry point warns)."""
    if rounds < 0 or rounds > MAX_ROUNDS:
        raise InputError(f"--bootstrap {rounds}: use 0 (off) to {MAX_ROUNDS} rounds "
                         "(200-1000 give stable 95% intervals)")
    if warn and rounds > WARN_ROUNDS:
        warnings.warn(f"--bootstrap {rounds}: more than {WARN_ROUNDS} rounds rarely changes a 95% interval "
                      "and multiplies the cost", stacklevel=2)


def interval(estimate: float, draws: np.ndarray, n: int, m: int, confidence: float,
             bounds: tuple[float, float] = (-math.inf, math.inf)) -> list[float]:
    """Median-centred, rescaled basic interval from subsample values (see module docstring),
    built inside the metric's declared range ``bounds``.

    Each side's half-width w is measured against the room R between the estimate and the bound
    on that side and becomes R·tanh(w/R): the basic interval itself where the bound is far
    (w ≪ R), approaching the bound but never passing it where it is near, and no width at all
    on the side of an estimate that sits on its bound (a share of 1.000 has no room above).
    """
    f = math.sqrt(m / (n - m))
    dev = np.asarray(draws, dtype=np.float64) - np.median(draws)
    alpha = (1.0 - confidence) / 2
    lo_q, hi_q = np.quantile(dev, [alpha, 1.0 - alpha])
    below, above = max(float(f * hi_q), 0.0), max(float(-f * lo_q), 0.0)
    return [float(estimate - _within(below, estimate - bounds[0])),
            float(estimate + _within(above, bounds[1] - estimate))]


def _within(width: float, room: float) -> float:
    """``width`` squeezed into ``room`` (R·tanh(w/R); w itself for an unbounded side)."""
    if math.isinf(room):
        return width
    if room <= 0.0 or width == 0.0:
        return 0.0
    return room * math.tanh(width / room)


class _Resampler:
    """One metric group's per-round computation: ``values(rng) -> {key: value}``, with its n."""

    def __init__(self, name: str, keys: tuple[str, ...], n: int,
                 fn: Callable[[np.random.Generator], dict[str, float]]):
        self.name, self.keys, self.n, self.fn = name, keys, n, fn
        self.m = n // 2


# Rounds a batched group computes together (their half-samples drawn ahead, in order)
AHEAD = 100
# Most n×n×D multiply-adds a group's one-off Gram table of the generated set may take, the
# most entries it may hold, and the most entries one batch of rounds may gather from it
GRAM_WORK = 1 << 28
GRAM_ENTRIES = 1 << 24
BATCH_ENTRIES = 1 << 22


def _gram_fits(n: int, d: int) -> bool:
    return n * n * d <= GRAM_WORK and n * n <= GRAM_ENTRIES


def _stacks(halves: list[np.ndarray], dev) -> list[torch.Tensor]:
    """The rounds' half-samples as (b, m) index tensors, b rounds per stack so that a stack's
    m×m gathers hold at most ``BATCH_ENTRIES`` entries."""
    m = len(halves[0])
    per = max(1, BATCH_ENTRIES // (m * m))
    return [torch.as_tensor(np.stack(halves[c:c + per]), device=dev) for c in range(0, len(halves), per)]


def _batched(n: int, rounds: int, batch: Callable[[list[np.ndarray], int], list[dict[str, float]]]
             ) -> Callable[[np.random.Generator], dict[str, float]]:
    """A group's ``values(rng)`` whose rounds are computed in batches: when none is ready, the
    half-samples of the next rounds (up to ``AHEAD``, at most the ``rounds`` left) are drawn from
    the group's stream in the order one round at a time draws them, and ``batch(halves, first)``
    (``first`` the first of their 1-based round numbers) returns their values in that order."""
    count = [0]
    ready: list[dict[str, float]] = []

    def values(rng: np.random.Generator) -> dict[str, float]:
        if not ready:
            ahead = max(1, min(rounds - count[0], AHEAD))
            ready.extend(batch([_half(rng, n) for _ in range(ahead)], count[0] + 1))
        count[0] += 1
        return ready.pop(0)

    return values


def _prdc_resampler(spec, fake, real, *, seed: int, device: str, wanted: set[str],
                    nearest_k: int = 5, max_samples: int = 10000, convention: str = "prdc",
                    rounds: int = 1) -> _Resampler:

    real_a, fake_a = array_for(spec, real), array_for(spec, fake)
    parts = prdc_parts(real_a, fake_a, nearest_k=nearest_k, max_samples=max_samples, seed=seed,
                       device=device)
    gp, rp = parts["pairs"]
    n, nr, k = parts["n_fake"], parts["n_real"], parts["k"]
    counts = np.bincount(gp, minlength=n)
    real_used = take_rows(real_a, parts["real_index"])
    fake_used = take_rows(fake_a, parts["fake_index"])
    m = n // 2
    recall = "recall" in wanted and m > k
    dim = int(real_used.shape[1])
    table = (RecallTable(real_used, fake_used, nearest_k=k, device=device)
             if recall and RecallTable.fits(nr, n, dim) else None)

    def shares(idx: np.ndarray) -> dict[str, float]:
        member = np.zeros(n, dtype=bool)
        member[idx] = True
        return {"precision": float((counts[idx] > 0).mean()),
                "density": float(counts[idx].mean() / k),
                "coverage": float(np.unique(rp[member[gp]]).size / nr)}

    def values(rng: np.random.Generator) -> dict[str, float]:
        idx = _half(rng, n)
        out = shares(idx)
        if recall:
            out["recall"] = recall_of(real_used, take_rows(fake_used, idx), nearest_k=k, device=device)
        return out

    def batch(halves: list[np.ndarray], first: int) -> list[dict[str, float]]:
        rec = table.recall(np.stack(halves))  # every round's recall from the distance tables
        return [{**shares(idx), "recall": r} for idx, r in zip(halves, rec)]

    return _Resampler("prdc", _PRDC, n, values if table is None else _batched(n, rounds, batch))


def _mean_resampler(key: str, per_sample: np.ndarray, scale: float = 1.0) -> _Resampler:
    v = np.asarray(per_sample, dtype=np.float64)
    n = v.shape[0]

    def values(rng: np.random.Generator) -> dict[str, float]:
        return {key: scale * float(v[rng.choice(n, n // 2, replace=False)].mean())}

    return _Resampler(key, (key,), n, values)


def _moments_resampler(spec, fake, real, device: str, rounds: int = 1) -> _Resampler:

    dev = resolve_device(device)
    fake_a = array_for(spec, fake)
    n = int(fake_a.shape[0])
    tr_r = None
    st = moments_for(spec, real)  # the statistics the estimate itself used, when there are any
    if st is None:  # with Nr <= D rows the factor is the centred data: no D×D matrix at all
        mu_r, cov_r, factor, tr_r = reference_stats(array_for(spec, real), dev, spec.name)
    else:  # a statistics-only reference, or published statistics a protocol attached (ADM)
        mu_r, cov_r = (torch.as_tensor(a, dtype=torch.float64, device=dev) for a in st)
        factor = cov_factor(cov_r)
    subset_fd = SubsetFrechet(mu_r, cov_r, factor, fake_a, n // 2, dev, spec.name, tr_r=tr_r)

    def values(rng: np.random.Generator) -> dict[str, float]:
        return {spec.name: subset_fd(_half(rng, n))}

    def batch(halves: list[np.ndarray], first: int) -> list[dict[str, float]]:
        return [{spec.name: v} for v in subset_fd.many(halves)]

    return _Resampler(spec.name, (spec.name,), n, _batched(n, rounds, batch) if subset_fd.small else values)


def _fd_inf_resampler(spec, fake, real, *, run_rng, device: str, overrides, rounds: int = 1) -> _Resampler:
    """fd_inf on each half-sample, with the reference's moments and factor computed once (the
    metric's own subset draws on the same per-round stream as a recomputation would use). When
    the half-sample or the factor is narrower than D, the generated set is projected once
    (:class:`SubsetFrechet`) and each of a round's sizes is one small eigenproblem on rows of
    that projection; else each round takes :func:`fd_inf_from_reference`'s one pass."""
    dev = resolve_device(device)
    fake_a, real_a = array_for(spec, fake), array_for(spec, real)
    mu_r, cov_r, factor, tr_r = reference_stats(real_a, dev, spec.name)
    num_points = overrides.get(spec.name, {}).get("num_points", 15)
    n = int(fake_a.shape[0])
    sub_fd = SubsetFrechet(mu_r, cov_r, factor, fake_a, n // 2, dev, spec.name, tr_r=tr_r)
    count = [0]

    def values(rng: np.random.Generator) -> dict[str, float]:
        idx = np.sort(rng.choice(n, n // 2, replace=False))
        count[0] += 1
        sizes = fd_inf_sizes(len(idx), num_points)
        if len(idx) < spec.min_samples or len(np.unique(sizes)) < 2:
            raise MetricInputError(f"{spec.name}: too few samples in a half-sample")
        seed = run_rng.seed_for("metric", stream_name(spec), "bootstrap", count[0])
        if sub_fd.small:  # fd_inf's own draws: subsets of the half-sample, as it makes them
            draw = seeded_generator(seed)
            fds = [sub_fd(idx[np.sort(draw.choice(len(idx), k, replace=False))]) for k in sizes.tolist()]
            return {spec.name: fd_inf_fit(sizes, fds)[spec.name]}
        out = fd_inf_from_reference(mu_r, tr_r, factor, take_rows(fake_a, idx), sizes=sizes, seed=seed,
                                    dev=dev)
        return {spec.name: out[spec.name]}

    def batch(halves: list[np.ndarray], first: int) -> list[dict[str, float]]:
        """The rounds' subsets (each round's drawn as ``values`` draws them, from its own seed)
        scored together (:meth:`SubsetFrechet.many`), then each round's line fitted."""
        sizes = fd_inf_sizes(len(halves[0]), num_points)
        if len(halves[0]) < spec.min_samples or len(np.unique(sizes)) < 2:
            raise MetricInputError(f"{spec.name}: too few samples in a half-sample")
        subsets = []
        for j, idx in enumerate(halves):
            draw = seeded_generator(run_rng.seed_for("metric", stream_name(spec), "bootstrap", first + j))
            subsets += [idx[np.sort(draw.choice(len(idx), k, replace=False))] for k in sizes.tolist()]
        fds = sub_fd.many(subsets)
        p = len(sizes)
        return [{spec.name: fd_inf_fit(sizes, fds[j * p:(j + 1) * p])[spec.name]} for j in range(len(halves))]

    return _Resampler(spec.name, (spec.name,), n, _batched(n, rounds, batch) if sub_fd.small else values)


def _kd_resampler(spec, fake, real, *, run_rng, device: str, overrides) -> _Resampler:
    """kd on each half-sample from the kernel matrices of the whole sets (:class:`KernelTable`),
    its subsets drawn on the per-round stream a recomputation would use."""
    fake_a, real_a = array_for(spec, fake), array_for(spec, real)
    kw = overrides.get(spec.name, {})
    table = KernelTable(real_a, fake_a, subsets=kw.get("subsets", 100),
                        subset_size=kw.get("subset_size", 1000), device=device)
    n = int(fake_a.shape[0])
    count = [0]

    def values(rng: np.random.Generator) -> dict[str, float]:
        idx = np.sort(rng.choice(n, n // 2, replace=False))
        count[0] += 1
        return table.kd_of(idx, run_rng.seed_for("metric", stream_name(spec), "bootstrap", count[0]))

    return _Resampler(stream_name(spec), spec.keys, n, values)


def _fls_resampler(spec, fake, real, test, *, run_rng, overrides, rounds: int, device: str
                   ) -> _Resampler:
    """fls/fls_pog on each half-sample, the rounds' bandwidth fits run as batches
    (:func:`fls_batch`): the half-samples of the rounds ahead are drawn from this group's own
    stream, in the order one round at a time would draw them, and scored together."""
    fake_a, real_a, test_a = array_for(spec, fake), array_for(spec, real), array_for(spec, test)
    kw = overrides.get(spec.name, {})
    n = int(fake_a.shape[0])
    count = [0]
    ready: list[dict[str, float]] = []

    def values(rng: np.random.Generator) -> dict[str, float]:
        if not ready:
            ahead = max(1, min(rounds - count[0], 100))
            rows = [np.sort(rng.choice(n, n // 2, replace=False)) for _ in range(ahead)]
            seeds = [run_rng.seed_for("metric", stream_name(spec), "bootstrap", count[0] + j + 1)
                     for j in range(ahead)]
            ready.extend(fls_batch(real_a, fake_a, test_a, rows, seeds, device=device, **kw))
        count[0] += 1
        return ready.pop(0)

    return _Resampler(stream_name(spec), ("fls", "fls_pog"), n, values)


def _half(rng: np.random.Generator, n: int) -> np.ndarray:
    """One round's half-sample: n // 2 of n rows without replacement, sorted (every
    resampler draws exactly this from its own stream, once per round)."""
    return np.sort(rng.choice(n, n // 2, replace=False))


def _rarity_resampler(spec, fake, real, *, overrides, device: str) -> _Resampler | None:
    """rarity from its per-sample scores, computed once: each generated sample's score depends
    only on the reference (used whole when it has at most ``max_samples`` rows; else None:
    the rounds' reference subsets would differ and the recomputation runs)."""
    kw = overrides.get(spec.name, {})
    max_samples = kw.get("max_samples", 10000)
    if not set(kw) <= {"nearest_k", "max_samples"} or (max_samples is not None and real.n > max_samples):
        return None
    fake_a = array_for(spec, fake)
    scores = rarity_scores(array_for(spec, real), fake_a, nearest_k=kw.get("nearest_k", RARITY_K),
                           max_samples=max_samples, device=device)
    n = int(fake_a.shape[0])

    def values(rng: np.random.Generator) -> dict[str, float]:
        sub = scores[_half(rng, n)]
        inside = ~np.isnan(sub)
        return {"rarity": float(sub[inside].mean()) if inside.any() else math.nan,
                "rarity_outside": float((~inside).sum())}

    return _Resampler(stream_name(spec), spec.keys, n, values)


def _rke_resampler(spec, fake, real, *, overrides, device: str) -> _Resampler | None:
    """rke from the squared Gaussian kernel matrix of the whole generated set, computed once:
    a round's sum is over its rows and columns. Only where the bandwidth is the same in every
    round (given, or the median distance of a reference of at most ``max_median`` rows) and
    half-samples are not subsampled further; else None (the recomputation runs)."""
    kw = overrides.get(spec.name, {})
    n = fake.n
    sigma, max_median, max_samples = kw.get("sigma"), kw.get("max_median", 2000), kw.get("max_samples", 10000)
    if (not set(kw) <= {"sigma", "max_median", "max_samples"} or (sigma is None and real.n > max_median)
            or (max_samples is not None and n // 2 > max_samples) or 8 * n * n > TABLE_BYTES):
        return None
    dev = resolve_device(device)
    if sigma is None:
        sigma = median_distance(array_for(spec, real), max_samples=max_median, device=dev)
    if not sigma > 0:
        return None  # each round raises rke's own error
    f = torch.as_tensor(np.asarray(array_for(spec, fake)), dtype=torch.float64, device=dev)
    k2 = torch.exp(-sq_dists(f, f) / float(sigma) ** 2)

    def values(rng: np.random.Generator) -> dict[str, float]:
        rows = torch.as_tensor(_half(rng, n), device=dev)
        m = int(rows.shape[0])
        return {"rke": float(m * m / float(k2[rows][:, rows].sum())), "rke_sigma": float(sigma)}

    return _Resampler(stream_name(spec), spec.keys, n, values)


def _cmmd_resampler(spec, fake, real, *, device: str) -> _Resampler | None:
    """cmmd from the Gaussian kernel matrices of the whole sets, computed once (the reference's
    own kernel mean is the same in every round); None where they would not fit in
    ``TABLE_BYTES`` or the embeddings cannot be normalised (each round then raises cmmd's error)."""
    n, nr = fake.n, real.n
    if 8 * n * (n + nr) > TABLE_BYTES:
        return None
    dev = resolve_device(device)
    try:
        x = l2_normalise(array_for(spec, real), dev, "reference")
        y = l2_normalise(array_for(spec, fake), dev, "generated")
    except MetricInputError:
        return None
    kxx = gaussian_kernel_mean(x, None, CMMD_SIGMA)
    gamma = 1.0 / (2.0 * CMMD_SIGMA * CMMD_SIGMA)
    ny = (y * y).sum(1)
    kyy = torch.exp(-gamma * (ny[:, None] + ny[None, :] - 2.0 * (y @ y.T)))
    kxy = torch.exp(-gamma * ((x * x).sum(1)[:, None] + ny[None, :] - 2.0 * (x @ y.T)))

    def values(rng: np.random.Generator) -> dict[str, float]:
        rows = torch.as_tensor(_half(rng, n), device=dev)
        m = int(rows.shape[0])
        yy = float(kyy[rows][:, rows].sum()) / (m * m)
        xy = float(kxy[:, rows].sum()) / (nr * m)
        return {"cmmd": CMMD_SCALE * (kxx + yy - 2.0 * xy)}

    return _Resampler(stream_name(spec), spec.keys, n, values)


def _sw_resampler(spec, fake, real, *, overrides, device: str, rounds: int = 1) -> _Resampler | None:
    """sw_approx on each half-sample: the reference's mean and m2 computed once (as the metric
    computes them); each round's generated mean and centred second moment from the n×n Gram
    matrix of the generated rows centred on their whole-set mean, all rounds of a batch at once
    (|μr − μsub|² = |μr − μg|² − 2 (μr − μg)·s + |s|², s = μsub − μg). None where that matrix
    would cost more than ``GRAM_WORK`` (the recomputation runs)."""
    from evalkit.metrics.sliced import mean_and_m2

    fake_a, real_a = array_for(spec, fake), array_for(spec, real)
    n, d = int(fake_a.shape[0]), int(fake_a.shape[1])
    if overrides.get(spec.name) or not _gram_fits(n, d) or n // 2 < spec.min_samples:
        return None
    dev = resolve_device(device)
    mu_r, m2_r = mean_and_m2(real_a, dev, "reference")
    x = torch.as_tensor(np.asarray(fake_a), device=dev).to(torch.float64)
    mu_g = x.mean(0)
    xc = x - mu_g
    gram, sq, lin = xc @ xc.T, (xc * xc).sum(1), xc @ (mu_r - mu_g)
    base = float((mu_r - mu_g) @ (mu_r - mu_g))

    def batch(halves: list[np.ndarray], first: int) -> list[dict[str, float]]:
        out = []
        for rows in _stacks(halves, dev):
            m = rows.shape[1]
            ss = gram[rows[:, :, None], rows[:, None, :]].sum((1, 2)) / (m * m)
            diff2 = base - 2.0 * lin[rows].mean(1) + ss
            m2_g = (sq[rows].sum(1) - m * ss) / (m * d)
            out += [{"sw_approx": math.sqrt(a / d + (math.sqrt(m2_r) - math.sqrt(max(b, 0.0))) ** 2)}
                    for a, b in zip(diff2.tolist(), m2_g.tolist())]
        return out

    return _Resampler(stream_name(spec), spec.keys, n, _batched(n, rounds, batch))


def _vendi_resampler(spec, fake, *, overrides, device: str, rounds: int = 1) -> _Resampler | None:
    """vendi on each half-sample from the cosine kernel of the whole generated set, computed
    once: a round's K/m is its rows and columns of it, and the rounds' eigenvalues come from one
    batched eigensolver. Only for the n×n (primal) route of half-samples (n/2 <= D), without
    labels (per-class scores) or options, and while the kernel costs at most ``GRAM_WORK``;
    else None (the recomputation runs)."""
    from evalkit.metrics.vendi import renyi_entropy

    fake_a = array_for(spec, fake)
    n, d = int(fake_a.shape[0]), int(fake_a.shape[1])
    if overrides.get(spec.name) or fake.labels is not None or n // 2 > d or not _gram_fits(n, d):
        return None
    a = np.asarray(fake_a).astype(np.float64)  # as vendi's primal route normalises the rows
    norm = np.sqrt(np.einsum("ij,ij->i", a, a))
    norm[norm == 0] = 1
    a /= norm[:, None]
    dev = resolve_device(device)
    kernel = torch.as_tensor(a @ a.T, device=dev)

    def batch(halves: list[np.ndarray], first: int) -> list[dict[str, float]]:
        out = []
        for rows in _stacks(halves, dev):
            m = rows.shape[1]
            w = torch.linalg.eigvalsh(kernel[rows[:, :, None], rows[:, None, :]] / m).cpu().numpy()
            out += [{"vendi": float(np.exp(renyi_entropy(wi, 1)))} for wi in w]
        return out

    return _Resampler(stream_name(spec), ("vendi",), n, _batched(n, rounds, batch))


def _generic_resampler(specs, fake, real, test, *, run_rng, device: str, overrides) -> _Resampler:

    n = fake.n
    keys = tuple(k for s in specs for k in s.keys)
    count = [0]

    def values(rng: np.random.Generator) -> dict[str, float]:
        idx = np.sort(rng.choice(n, n // 2, replace=False))
        count[0] += 1  # the metrics' own draws (kd subsets, fls splits) vary from round to round
        vals, _, _ = compute_metrics(list(specs), fake.subset(idx), real, test, rng=run_rng,
                                     device=device, overrides=overrides, stream=("bootstrap", count[0]))
        return vals

    return _Resampler(stream_name(specs[0]), keys, n, values)


_TABLES = {
    "rarity": _rarity_resampler,
    "rke": _rke_resampler,
    "cmmd": lambda spec, fake, real, *, overrides, device: (
        _cmmd_resampler(spec, fake, real, device=device) if not overrides.get("cmmd") else None),
}


def plan_resamplers(specs, fake, real, test, *, run_rng, device: str, overrides=None, rounds: int = 1
                    ) -> list[_Resampler]:
    """One resampler per metric group: per-sample fast paths where the metric allows, else a
    recomputation on the subset (see the module docstring). Per-sample statistics are computed
    with the seed the metric itself got (``run_rng``'s metric stream), so they average to the
    recorded values."""

    overrides = overrides or {}
    names = {s.name for s in specs}
    samples = real is not None and real.has_samples
    out: list[_Resampler] = []
    generic = []
    prdc_done = False
    for spec in specs:
        seed = run_rng.seed_for("metric", stream_name(spec))
        kw = overrides.get(spec.name, {})
        if spec.name in _PRDC and samples and kw.get("convention", "prdc") == "prdc":
            if not prdc_done:  # the per-sample fast path knows the prdc convention only
                out.append(_prdc_resampler(spec, fake, real, seed=seed, device=device,
                                           wanted=names & set(_PRDC), rounds=rounds, **kw))
            prdc_done = True
        elif spec.name == "realism" and samples:
            kw = {k: v for k, v in overrides.get("realism", {}).items()
                  if k in ("nearest_k", "max_samples", "eps")}
            scores = realism_scores(array_for(spec, real), array_for(spec, fake), seed=seed,
                                    device=device, **kw)
            out.append(_mean_resampler("realism", scores.cpu().numpy()))
        elif spec.name == "authpct" and samples:
            _, _, auth = authenticity(array_for(spec, real), array_for(spec, fake), device=device)
            out.append(_mean_resampler("authpct", auth.detach().cpu().numpy(), 100.0))
        elif spec.name in _MOMENTS and real is not None:
            out.append(_moments_resampler(spec, fake, real, device, rounds=rounds))
        elif (spec.name == "kd" and samples and set(kw) <= {"subsets", "subset_size"}
              and KernelTable.bytes_needed(real.n, fake.n) <= TABLE_BYTES):
            out.append(_kd_resampler(spec, fake, real, run_rng=run_rng, device=device,
                                     overrides=overrides))
        elif spec.name in _TABLES and samples and (res := _TABLES[spec.name](
                spec, fake, real, overrides=overrides, device=device)) is not None:
            out.append(res)
        elif spec.name == "fd_inf" and samples and set(overrides.get("fd_inf", {})) <= {"num_points"}:
            out.append(_fd_inf_resampler(spec, fake, real, run_rng=run_rng, device=device,
                                         overrides=overrides, rounds=rounds))
        elif spec.name == "sw_approx" and samples and (res := _sw_resampler(
                spec, fake, real, overrides=overrides, device=device, rounds=rounds)) is not None:
            out.append(res)
        elif spec.name == "vendi" and (res := _vendi_resampler(
                spec, fake, overrides=overrides, device=device, rounds=rounds)) is not None:
            out.append(res)
        else:
            generic.append(spec)
    groups: dict[tuple[int, str], list] = {}
    for spec in generic:  # metrics sharing a function (fls, fls_pog) share a call
        groups.setdefault((id(spec.fn), spec.array), []).append(spec)
    for group in groups.values():
        if (group[0].name in ("fls", "fls_pog") and test is not None
                and set(overrides.get(group[0].name, {})) <= {"max_samples", "steps"}):
            out.append(_fls_resampler(group[0], fake, real, test, run_rng=run_rng, overrides=overrides,
                                      rounds=rounds, device=device))
            continue
        out.append(_generic_resampler(group, fake, real, test, run_rng=run_rng, device=device,
                                      overrides=overrides))
    return out


def bootstrap_intervals(specs, fake, real, test, *, estimates: dict[str, float], rounds: int,
                        rng: RunRNG | int, device: str, confidence: float = 0.95,
                        overrides: dict[str, Any] | None = None, progress: bool = True,
                        label: str | None = None, missing: dict[str, str] | None = None,
                        ) -> dict[str, list[float]]:
    """Half-sampling intervals (module docstring) for every metric in ``specs``.

    Args:
        specs: the metric plan (registry specs) that produced ``estimates``.
        fake, real, test: the feature sets scored (``real`` may be statistics-only).
        estimates: the full-sample values, each interval's centre.
        rounds: B, the number of half-samples.
        rng: the run's :class:`~evalkit.scoring.rng.RunRNG` (or its seed): each metric group's
            half-samples come from its own ``("bootstrap", "resample", <group>)`` stream, the
            metrics' seeds from their own streams.
        confidence: nominal coverage (0.95).
        overrides: per-metric keyword overrides (as for the estimates).
        progress: a tqdm bar on stderr, titled ``bootstrap <label>`` (the set's name).
        missing: when given, filled with ``{key: why}`` for every estimated key that gets no
            interval.

    Returns:
        ``{key: [lo, hi]}`` for every key with an estimate whose subsamples could be scored
        (a metric that needs more samples than n/2 gets no interval).
    """
    from tqdm.auto import tqdm

    check_rounds(rounds, warn=False)
    why: dict[str, str] = {} if missing is None else missing
    if rounds == 0:
        return {}
    if fake.n < 4:
        why.update(dict.fromkeys(estimates, f"half-samples of {fake.n} generated samples are too small"))
        return {}
    run_rng = rng if isinstance(rng, RunRNG) else RunRNG(int(rng))
    resamplers = plan_resamplers(specs, fake, real, test, run_rng=run_rng, device=device,
                                 overrides=overrides, rounds=rounds)
    # one stream per metric group: asking for another metric never moves these draws
    gens = [run_rng.generator("bootstrap", "resample", res.name) for res in resamplers]
    draws: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    failed: set[int] = set()
    bar = f"bootstrap {label}" if label else "bootstrap"
    for _ in tqdm(range(rounds), desc=bar, unit="round", disable=not progress, file=sys.stderr,
                  leave=False):
        for j, res in enumerate(resamplers):
            if j in failed:
                continue
            try:
                vals = res.fn(gens[j])
            except MetricInputError as err:  # e.g. ct or kd needing more than n/2 samples
                failed.add(j)
                for key in (k for k in res.keys if k in estimates):
                    why[key] = f"not computable on half-samples of {res.m} ({err})"
                continue
            for key, v in vals.items():
                if key in estimates and v is not None and math.isfinite(v):
                    draws.setdefault(key, []).append(float(v))
                    sizes[key] = res.n
    for key in estimates:
        if key not in why and len(draws.get(key, ())) != rounds:
            why[key] = f"no finite value on every half-sample of {fake.n // 2}"
    ranges = result_ranges()
    return {key: interval(estimates[key], np.array(v), sizes[key], sizes[key] // 2, confidence,
                          ranges.get(key, (-math.inf, math.inf)))
            for key, v in draws.items() if len(v) == rounds}
