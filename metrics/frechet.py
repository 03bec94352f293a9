"""Fréchet distances between Gaussian fits of two feature sets: ``fd``, ``sfid`` and ``fd_inf``.

All statistics are accumulated in float64 over row chunks (no N×N matrix, no float64 copy of a
whole set; only ``fd_inf`` keeps one float64 N×D projection), so the same code runs on CPU and
GPU with memory O(chunk·D + D²). ``moments`` and ``frechet_from_stats`` are also what the scorer
uses against statistics-only references (mu/sigma files).

The matrix square-root term uses no ``sqrtm``. For any factor F with F Fᵀ = Σr,

    Tr (Σr Σg)^½ = Σᵢ sqrt(λᵢ(Fᵀ Σg F)),

because Σr Σg = F (Fᵀ Σg) and Fᵀ Σg F share their eigenvalues, and Fᵀ Σg F is symmetric
positive semi-definite. F is the Cholesky factor of Σr (cheap), or, when Σr is singular and the
factorisation fails, V·diag(sqrt(max(w, 0))) from Σr's eigendecomposition. Tiny negative
eigenvalues produced by rounding are clamped to 0. This is exact for singular covariances
(N <= D) too: unlike pytorch-fid, nothing (no 1e-6·I) is added to the covariances; pytorch-fid
only adds its offset when scipy's ``sqrtm`` returns non-finite values, and where it does not, the
two agree to float precision.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from evalkit.errors import MetricInputError
from evalkit.lazy import scipy_blas, torch
from evalkit.metrics._registry import Output, register_metric
from evalkit.metrics.primitives.common import (
    Seed,
    as_tensor,
    check_finite,
    check_pair,
    mean_rows,
    resolve_device,
    rows_per_chunk,
    seeded_generator,
    take_rows,
)


def gram_t(a: torch.Tensor) -> torch.Tensor:
    """``aᵀ a`` for a contiguous 2-D tensor.

    On CPU numpy dispatches ``a.T @ a`` to BLAS ``syrk`` (half the flops of a general matrix
    product; torch has no syrk); elsewhere a plain ``torch.mm``.
    """
    if a.device.type == "cpu":
        an = a.contiguous().numpy()
        return torch.from_numpy(an.T @ an)
    return a.T @ a


class ScatterSum:
    """Σ aᵀa over row chunks ``a`` (float64, D×D).

    On CPU each chunk goes through BLAS ``dsyrk`` straight into one upper triangle (half the
    flops of a matrix product, no D×D temporary per chunk; the lower triangle is mirrored once
    at the end); elsewhere ``torch.mm``.
    """

    def __init__(self, dim: int, device: torch.device):
        self.cpu = device.type == "cpu"
        self.dim = dim
        if self.cpu:
            self.acc = np.zeros((dim, dim), dtype=np.float64, order="F")
        else:
            self.acc = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, a: torch.Tensor) -> None:
        if not self.cpu:
            self.acc += a.T @ a
            return
        at = a.contiguous().numpy().T  # D×rows, Fortran order: no copy into BLAS
        self.acc = scipy_blas.dsyrk(1.0, at, beta=1.0, c=self.acc, trans=0, lower=0, overwrite_c=1)

    def total(self, mirror: bool = True) -> torch.Tensor:
        """The sum; with ``mirror=False`` only its lower triangle is guaranteed (on CPU the
        upper one is zero), enough for :func:`trace_sqrt_eigs`, which reads nothing else."""
        if not self.cpu:
            return self.acc
        if not mirror:
            return torch.from_numpy(self.acc.T)  # C order: the filled upper becomes the lower
        full = self.acc + np.triu(self.acc, 1).T  # strictly-lower part of acc is still zero
        return torch.from_numpy(full.T if full.flags.f_contiguous else full)  # symmetric


def is_lower_triangular(f: torch.Tensor) -> bool:
    """A square factor with nothing above its diagonal (a Cholesky factor)."""
    return f.ndim == 2 and f.shape[0] == f.shape[1] and not bool(torch.triu(f, 1).any())


def congruence(f: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``fᵀ s f`` for a symmetric ``s``; with a lower-triangular ``f`` on CPU as two BLAS
    ``dtrmm`` (half the flops of two matrix products)."""
    if s.device.type != "cpu" or not is_lower_triangular(f):
        return f.T @ s @ f
    upper = f.contiguous().numpy().T  # U = fᵀ, Fortran order
    sym = s.contiguous().numpy().T    # s itself (symmetric), Fortran order
    t = scipy_blas.dtrmm(1.0, upper, sym, side=1, lower=0, trans_a=1)          # s·Uᵀ = s f
    t = scipy_blas.dtrmm(1.0, upper, t, side=0, lower=0, trans_a=0, overwrite_b=1)  # U·(s f) = fᵀ s f
    return torch.from_numpy(np.ascontiguousarray(t))


def project(x: torch.Tensor, f: torch.Tensor, lower: bool | None = None) -> torch.Tensor:
    """``x f`` (rows × D times D × k); a lower-triangular ``f`` on CPU through BLAS ``dtrmm``.

    ``lower``: whether ``f`` is lower-triangular, when the caller already knows (a D×D check
    per call otherwise).
    """
    if lower is None:
        lower = is_lower_triangular(f)
    if x.device.type != "cpu" or not lower:
        return x @ f
    upper = f.contiguous().numpy().T
    xt = x.contiguous().numpy().T  # D×rows, Fortran order
    return torch.from_numpy(scipy_blas.dtrmm(1.0, upper, xt, side=0, lower=0, trans_a=0).T)


def _gram_rows2d(a: torch.Tensor) -> torch.Tensor:
    """``a aᵀ`` (numpy ``syrk`` on CPU)."""
    if a.device.type == "cpu":
        an = a.contiguous().numpy()
        return torch.from_numpy(an @ an.T)
    return a @ a.T


def moments(x: Any, device: torch.device, metric: str = "fd", which: str = "generated"):
    """Mean and covariance (N−1) of the rows of ``x`` in float64, in one pass over row chunks.

    The rows are shifted by the first chunk's mean before the sums (Σ c, Σ c cᵀ), so the final
    correction n·m mᵀ is small and cancels nothing that matters; with one chunk the shift is
    the exact mean (the textbook two-pass formula).

    Returns:
        (mu, cov): float64 tensors of shape (D,) and (D, D) on ``device``.
    """
    n, d = int(x.shape[0]), int(x.shape[1])
    step = rows_per_chunk(d)
    shift = None
    total = torch.zeros(d, dtype=torch.float64, device=device)
    scatter = ScatterSum(d, device)
    on_host = device.type == "cpu" and not isinstance(x, torch.Tensor)
    for i in range(0, n, step):
        if on_host:  # numpy on CPU: convert and centre in one pass, straight into BLAS
            raw = np.asarray(x[i:i + step])
            if shift is None:
                shift = torch.from_numpy(np.asarray(raw.mean(0, dtype=np.float64)))
                check_finite(metric, shift, which)
            chunk = torch.from_numpy(np.subtract(raw, shift.numpy(), dtype=np.float64))
        else:
            chunk = as_tensor(x[i:i + step], device, torch.float64)
            if shift is None:
                shift = chunk.mean(0)
                check_finite(metric, shift, which)
            chunk = chunk - shift  # not in place: as_tensor may share the caller's memory
        total += chunk.sum(0)
        scatter.add(chunk)
    m = total / n
    mu = shift + m
    check_finite(metric, mu, which)
    cov = torch.addr(scatter.total(), m, m, beta=1.0 / (n - 1), alpha=-n / (n - 1))
    if not bool(torch.isfinite(cov.diagonal()).all()):  # squares beyond 1e308
        raise MetricInputError(
            f"{metric}: the {which} covariance overflows float64 (features of magnitude "
            f"{float(mu.abs().max()):.3g}); rescale the features"
        )
    return mu, cov


class RunningMoments:
    """The mean and covariance (N−1) of rows that arrive in batches, without keeping them.

    The same float64 sums as :func:`moments` (rows shifted by the first batch's mean, Σ c and
    Σ c cᵀ through BLAS ``dsyrk`` on CPU), so :meth:`result` equals :func:`moments` of all
    the rows to float64 round-off. Memory O(D²) whatever the number of rows. Two
    accumulators (e.g. of two processes) combine with :meth:`merge`: the other's sums are
    re-centred on this one's shift (exact algebra, Chan et al.'s pairwise update).
    """

    def __init__(self, metric: str = "fd"):
        self.metric = metric
        self.n = 0
        self.shift: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.scatter: ScatterSum | None = None

    def add(self, rows: Any) -> None:
        """Add the rows of an N×D float array (host memory)."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or not len(rows):
            return
        d = rows.shape[1]
        if self.shift is None:
            self.shift = rows.mean(0, dtype=np.float64)
            check_finite(self.metric, torch.from_numpy(self.shift), "generated")
            self.total = np.zeros(d, np.float64)
            self.scatter = ScatterSum(d, torch.device("cpu"))
        step = min(rows_per_chunk(d), 256)  # a small float64 copy: memory flat in the batch
        for i in range(0, len(rows), step):
            c = np.subtract(rows[i:i + step], self.shift, dtype=np.float64)
            self.total += c.sum(0)
            self.scatter.add(torch.from_numpy(c))
        self.n += len(rows)

    def merge(self, other: RunningMoments) -> None:
        """Add ``other``'s rows (as if they had been added here)."""
        if other.n == 0:
            return
        if self.n == 0:
            self.n, self.shift, self.total, self.scatter = \
                other.n, other.shift, other.total, other.scatter
            return
        delta = other.shift - self.shift  # other's rows relative to this shift: c + delta
        s_o = other.scatter.total().numpy()
        mine = self.scatter.total().numpy()
        cross = np.outer(delta, other.total)
        full = mine + s_o + cross + cross.T + other.n * np.outer(delta, delta)
        self.scatter.acc = np.asfortranarray(np.triu(full))  # ScatterSum keeps the upper half
        self.total = self.total + other.total + other.n * delta
        self.n += other.n

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, covariance with N−1), float64 numpy (once: the covariance is built in the
        accumulator's own memory).

        Raises:
            MetricInputError: fewer than 2 rows, or non-finite statistics.
        """
        if self.n < 2:
            raise MetricInputError(f"{self.metric} needs at least 2 samples, got {self.n}")
        n = self.n
        m = self.total / n
        mu = self.shift + m
        check_finite(self.metric, torch.from_numpy(mu), "generated")
        # (S − n m mᵀ) / (n − 1) in the accumulator itself: no D×D temporary (D = 3072 is
        # 75 MB each); the upper triangle by BLAS dsyr, then mirrored block by block
        acc = self.scatter.acc
        acc *= 1.0 / (n - 1)
        acc = scipy_blas.dsyr(-n / (n - 1), m, a=acc, lower=0, overwrite_a=1)
        _mirror_upper(acc)
        self.scatter = None  # consumed
        if not np.isfinite(np.diagonal(acc)).all():
            raise MetricInputError(f"{self.metric}: the generated covariance overflows float64; "
                                   "rescale the features")
        return mu, acc


def _mirror_upper(a: np.ndarray, block: int = 256) -> None:
    """Copy the upper triangle of a square array onto its lower one, in place."""
    d = a.shape[0]
    for lo in range(0, d, block):
        hi = min(d, lo + block)
        a[lo:hi, :lo] = a[:lo, lo:hi].T
        diag = a[lo:hi, lo:hi]
        low = np.tril_indices(hi - lo, -1)
        diag[low] = diag.T[low]


def cov_factor(cov: torch.Tensor) -> torch.Tensor:
    """A factor F with F Fᵀ = cov: Cholesky when it succeeds, else from the eigendecomposition."""
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) == 0 and bool(torch.isfinite(chol).all()):
        return chol
    w, v = torch.linalg.eigh(cov)
    return v * w.clamp_min(0).sqrt()


def trace_sqrt_eigs(m: torch.Tensor) -> float:
    """Σ sqrt(λ) over the eigenvalues of a symmetric PSD matrix, rounding negatives clamped to 0.

    Only the lower triangle of ``m`` is read (LAPACK ``syevd`` with UPLO='L').
    """
    return float(torch.linalg.eigvalsh(m, UPLO="L").clamp_min(0).sqrt().sum())


def frechet_from_stats(mu_r, cov_r, mu_g, cov_g, factor_r: torch.Tensor | None = None) -> float:
    """‖μr−μg‖² + Tr Σr + Tr Σg − 2 Tr (Σr Σg)^½ from float64 statistics (see module doc).

    Raises:
        MetricInputError: the means and covariances do not have matching shapes.
    """
    d = mu_r.shape[0]
    if tuple(mu_g.shape) != (d,) or tuple(cov_r.shape) != (d, d) or tuple(cov_g.shape) != (d, d):
        raise MetricInputError(
            f"fd: statistics shapes differ: reference mu {tuple(mu_r.shape)} sigma {tuple(cov_r.shape)}, "
            f"generated mu {tuple(mu_g.shape)} sigma {tuple(cov_g.shape)} (same encoder for both?)"
        )
    f = cov_factor(cov_r) if factor_r is None else factor_r
    return _combine(mu_r, cov_r, mu_g, cov_g, trace_sqrt_eigs(congruence(f, cov_g)))


def _combine(mu_r, cov_r, mu_g, cov_g, tr_sqrt: float) -> float:
    return _combine_traces(mu_r - mu_g, torch.trace(cov_r), torch.trace(cov_g), tr_sqrt)


def _combine_traces(diff, tr_r, tr_g, tr_sqrt: float) -> float:
    value = float(diff @ diff + tr_r + tr_g) - 2.0 * tr_sqrt
    if not math.isfinite(value):  # squares of features beyond ~1e154 overflow float64
        raise MetricInputError(
            "Fréchet distance: the feature statistics overflow float64 (features of magnitude "
            f"{float(diff.abs().max()):.3g} or covariances beyond 1e308); rescale the features"
        )
    return value


def reference_factor(real: Any, mu_r: torch.Tensor, cov_r: torch.Tensor,
                     dev: torch.device) -> torch.Tensor:
    """A factor F (D×k) with F Fᵀ = Σr and as few columns as possible.

    With Nr <= D samples the centred data itself is a factor, (Xr − μr)ᵀ / sqrt(Nr − 1), with
    k = Nr columns and no D×D factorisation at all; otherwise the Cholesky (or eigen) factor.
    """
    nr, d = int(real.shape[0]), int(real.shape[1])
    if nr <= d:
        return ((as_tensor(real, dev, torch.float64) - mu_r) / float(np.sqrt(nr - 1))).T.contiguous()
    return cov_factor(cov_r)


def reference_stats(real: Any, dev: torch.device, metric: str = "fd"):
    """``(mu, cov or None, F, Tr cov)`` of the reference, F F^T = cov with few columns
    (:func:`reference_factor`). With Nr <= D rows no D×D matrix is formed at all (``cov`` is
    None): the centred data is the factor and the trace is its squared norm."""
    nr, d = int(real.shape[0]), int(real.shape[1])
    if nr > d:
        mu, cov = moments(real, dev, metric, "reference")
        return mu, cov, cov_factor(cov), torch.trace(cov)
    mu = mean_rows(real, dev, metric, "reference")
    f = ((as_tensor(real, dev, torch.float64) - mu) / float(np.sqrt(nr - 1))).T.contiguous()
    return mu, None, f, (f * f).sum()


# float64 entries one batch of SubsetFrechet.many's stacked subset matrices may hold
SUBSET_BATCH_ELEMENTS = 1 << 22


class SubsetFrechet:
    """FD between fixed reference statistics and row subsets of one generated set, for
    resampling (half-sampling intervals): ``SubsetFrechet(...)(idx) -> float``.

    With Z = (X − μg) F (F Fᵀ = Σr, D×k), the centred rows of Z over a subset of m rows have
    Gram matrix Fᵀ Σsub F (m−1), whose non-zero eigenvalues are those of the m×m Gram matrix
    of the same rows: each subset costs one min(m, k)-sized symmetric eigenproblem, not a D×D
    one (a half-sample of m < D rows has rank <= m − 1). When neither m nor k is below D
    (large sets against a full-rank reference) each subset takes the D×D route of
    :func:`frechet_from_stats` as before, without keeping an N×D projection.

    Args:
        mu_r, cov_r: reference mean and covariance (float64 tensors on the device).
        factor: F with F Fᵀ = cov_r (:func:`reference_factor` or :func:`cov_factor`).
        fake: the generated features, N×D.
        m: the subset size the projection is prepared for.
        metric: the metric's name, for error messages.
        tr_r: Tr Σr when ``cov_r`` is None (:func:`reference_stats` with Nr <= D: then only
            the m×m / k×k route is available, ``small`` is True whenever k = Nr < D).
    """

    def __init__(self, mu_r, cov_r, factor: torch.Tensor, fake: Any, m: int, dev: torch.device,
                 metric: str = "fd", tr_r: Any = None):
        self.mu_r, self.cov_r, self.factor, self.fake, self.dev, self.metric = \
            mu_r, cov_r, factor, fake, dev, metric
        n, d = int(fake.shape[0]), int(fake.shape[1])
        k = int(factor.shape[1])
        self.small = min(m, k) < d
        self.tr_r = float(torch.trace(cov_r)) if tr_r is None else float(tr_r)
        if not self.small:
            return
        self.mu_g = mean_rows(fake, dev, metric, "generated")
        lower = is_lower_triangular(factor)
        step = rows_per_chunk(d)
        self.xc = torch.empty(n, d, dtype=torch.float64, device=dev)
        self.z = torch.empty(n, k, dtype=torch.float64, device=dev)
        for i in range(0, n, step):
            xc = as_tensor(fake[i:i + step], dev, torch.float64) - self.mu_g
            self.xc[i:i + step] = xc
            self.z[i:i + step] = project(xc, factor, lower)
        self.sq = (self.xc * self.xc).sum(1)

    def many(self, subsets: list[np.ndarray]) -> list[float]:
        """``[self(idx) for idx in subsets]``, the subsets of one size computed together (for
        the bootstrap's rounds on small sets, where a subset's cost is per-call overhead): their
        rows of the projection gathered into one stack, centred, multiplied and handed to one
        batched eigensolver; the traces and mean terms from the generated set's n×n Gram
        matrix. Equal to one at a time to float64 round-off (sums in another order)."""
        if not self.small:
            return [self(idx) for idx in subsets]
        if not hasattr(self, "gram"):
            self.gram = _gram_rows2d(self.xc)  # n×n, formed on first use
            self.lin = self.xc @ (self.mu_g - self.mu_r)
            self.base = float((self.mu_g - self.mu_r) @ (self.mu_g - self.mu_r))
        out = [0.0] * len(subsets)
        by_size: dict[int, list[int]] = {}
        for j, idx in enumerate(subsets):
            by_size.setdefault(len(idx), []).append(j)
        k = int(self.z.shape[1])
        for m, js in by_size.items():
            per = max(1, SUBSET_BATCH_ELEMENTS // (m * (m + k) + min(m, k) ** 2))
            for c in range(0, len(js), per):
                part = js[c:c + per]
                rows = torch.as_tensor(np.stack([np.asarray(subsets[j]) for j in part]), device=self.dev)
                g = self.gram[rows[:, :, None], rows[:, None, :]]  # (b, m, m) of xc xcᵀ
                ss = g.sum((1, 2)) / (m * m)  # |subset mean − μg|²
                tr_g = (self.sq[rows].sum(1) - m * ss) / (m - 1)
                diff2 = self.base + 2.0 * self.lin[rows].mean(1) + ss  # |subset mean − μr|²
                z = self.z[rows]
                z = z - z.mean(1, keepdim=True)
                small = z @ z.transpose(1, 2) if m <= k else z.transpose(1, 2) @ z
                eig = torch.linalg.eigvalsh(small / (m - 1), UPLO="L").clamp_min(0).sqrt().sum(1)
                values = diff2 + self.tr_r + tr_g - 2.0 * eig
                for j, v in zip(part, values.tolist()):
                    if not math.isfinite(v):
                        raise MetricInputError(f"{self.metric}: the feature statistics overflow float64; "
                                               "rescale the features")
                    out[j] = v
        return out

    def __call__(self, idx: np.ndarray) -> float:
        if not self.small:
            mu_g, cov_g = moments(take_rows(self.fake, idx), self.dev, self.metric)
            return frechet_from_stats(self.mu_r, self.cov_r, mu_g, cov_g, factor_r=self.factor)
        rows = torch.as_tensor(np.asarray(idx), device=self.dev)
        m = int(rows.shape[0])
        shift = self.xc[rows].mean(0)  # subset mean − μg
        tr_g = float((self.sq[rows].sum() - m * (shift @ shift)) / (m - 1))
        z = self.z[rows]
        z = z - z.mean(0)
        small = _gram_rows2d(z) if m <= z.shape[1] else gram_t(z)
        diff = self.mu_g + shift - self.mu_r
        value = float(diff @ diff) + self.tr_r + tr_g - 2.0 * trace_sqrt_eigs(small / (m - 1))
        if not math.isfinite(value):
            raise MetricInputError(f"{self.metric}: the feature statistics overflow float64; "
                                   "rescale the features")
        return value


def _fd(metric: str, real: Any, fake: Any, device: Any) -> float:
    nr, ng, d = check_pair(metric, real, fake, 2)
    dev = resolve_device(device)
    if ng >= d and nr > d:
        mu_r, cov_r = moments(real, dev, metric, "reference")
        mu_g, cov_g = moments(fake, dev, metric, "generated")
        return frechet_from_stats(mu_r, cov_r, mu_g, cov_g)
    # A set with fewer samples than dims: Fᵀ Σg F = WᵀW / (ng − 1) with W = (Xg − μg) F, whose
    # non-zero eigenvalues are those of the smaller of WᵀW and W Wᵀ: no D×D eigenproblem, and
    # no D×D covariance of a set with fewer rows than dims (traces from the centred rows).
    mu_r, _, f, tr_r = reference_stats(real, dev, metric)
    mu_g = mean_rows(fake, dev, metric, "generated")
    step = rows_per_chunk(d)
    parts, tr_g = [], 0.0
    for i in range(0, ng, step):
        xc = as_tensor(fake[i:i + step], dev, torch.float64) - mu_g
        parts.append(xc @ f)
        tr_g = tr_g + (xc * xc).sum()
    w = torch.cat(parts)
    small = _gram_rows2d(w) if ng <= w.shape[1] else gram_t(w)
    return _combine_traces(mu_r - mu_g, tr_r, tr_g / (ng - 1), trace_sqrt_eigs(small / (ng - 1)))


def _as64(a: Any, dev: torch.device) -> torch.Tensor:
    """A float64 tensor on ``dev`` (no copy for one already there: a device-resident reference)."""
    if isinstance(a, torch.Tensor):
        return a.to(device=dev, dtype=torch.float64)
    return torch.as_tensor(np.asarray(a, np.float64), device=dev)


def _from_moments(metric: str):
    """The metric's value from the reference's float64 mean and covariance alone (numpy, or
    tensors, e.g. kept on the device); ``fake`` is the generated rows, or their own
    ``(mean, covariance)`` (:class:`RunningMoments` of a stream that kept no rows)."""

    def from_moments(mu_real: Any, cov_real: Any, fake: Any, *, device: Any = None) -> dict[str, float]:
        dev = resolve_device(device)
        if isinstance(fake, tuple):  # the generated set's own (mean, covariance)
            mu_g, cov_g = (_as64(a, dev) for a in fake)
        else:
            mu_g, cov_g = moments(fake, dev, metric)
        mu_r, cov_r = (_as64(a, dev) for a in (mu_real, cov_real))
        return {metric: frechet_from_stats(mu_r, cov_r, mu_g, cov_g)}

    return from_moments


@register_metric(
    Output("fd", "lower", "Fréchet distance between Gaussian fits of the features (FID with Inception)",
           range=(0.0, math.inf)),
    array="features", min_samples=2, moments=_from_moments("fd"), position=10,
    device_rows=True,
)
def fd(real: Any, fake: Any, *, device: Any = None) -> dict[str, float]:
    """Fréchet distance (FID when the features are Inception pool3).

    ‖μr−μg‖² + Tr(Σr + Σg − 2(Σr Σg)^½) with float64 means and N−1 covariances (Heusel et al.
    2017, "GANs trained by a two time-scale update rule converge to a local Nash equilibrium").
    Equals pytorch-fid's ``calculate_frechet_distance`` on the same features; the square-root
    trace comes from one Cholesky factorisation and one symmetric eigenvalue problem instead of
    ``scipy.linalg.sqrtm`` (see the module docstring, also for singular covariances).

    Args:
        real: reference features, N×D (numpy array or tensor).
        fake: generated features, M×D.
        device: torch device for the computation (None: cuda when available).

    Returns:
        ``{"fd": value}``.
    """
    return {"fd": _fd("fd", real, fake, device)}


@register_metric(
    Output("sfid", "lower",
           "Fréchet distance on spatial features (sFID: Inception mixed_6/conv, 7 channels)",
           range=(0.0, math.inf)),
    array="spatial", min_samples=2, moments=_from_moments("sfid"), position=30,
    device_rows=True,
)
def sfid(real: Any, fake: Any, *, device: Any = None) -> dict[str, float]:
    """Spatial FID (Nash et al. 2021, "Generating images with sparse representations").

    The same Fréchet distance as :func:`fd`, read from the ``spatial`` array (for Inception the
    ADM evaluator's first 7 channels of ``mixed_6/conv``, 2023 values).

    Returns:
        ``{"sfid": value}``.
    """
    return {"sfid": _fd("sfid", real, fake, device)}


def fd_inf_sizes(n_fake: int, num_points: int = 15) -> np.ndarray:
    """The sample sizes of FD∞: ``linspace(min(5000, max(Ng//10, 2)), Ng, num_points)`` floored."""
    start = min(5000, max(n_fake // 10, 2))
    return np.floor(np.linspace(start, n_fake, num_points)).astype(np.int64)


@register_metric(
    Output("fd_inf", "lower", "FD extrapolated to infinitely many generated samples (linear fit in 1/n)"),
    array="features", min_samples=3, order_invariant=False, position=20,
    device_rows=True,
)
def fd_inf(real: Any, fake: Any, *, seed: Seed = 0, num_points: int = 15,
           device: Any = None) -> dict[str, Any]:
    """FD∞ (Chong & Forsyth 2020, "Effectively unbiased FID and Inception Score and where to find them").

    FD between the full reference and seeded random subsets (without replacement, drawn
    independently for each size) of the generated set at ``num_points`` sizes
    ``linspace(min(5000, max(Ng//10, 2)), Ng)`` floored; an ordinary least-squares line of FD
    against 1/n; its value at 1/n = 0. The protocol of dgm-eval's ``compute_FD_infinity``, but
    seeded (numpy ``default_rng(seed)``, one ``choice`` per size, in order).

    Fast path: the reference mean, covariance and factor F (F Fᵀ = Σr) are computed once, and
    the generated set is projected once, Z = (X − μg) F, with its full Gram matrix Σ zzᵀ. For a
    subset, Fᵀ Σsub F is the centred Gram matrix of its rows of Z over n−1: accumulated over
    the subset's rows, or over the complement's and subtracted from the full one when that is
    shorter; when n < D the n×n Gram matrix of the rows is used instead (same non-zero
    eigenvalues). Each subset then costs at most min(n, Ng−n) rank-one updates and one
    symmetric eigenvalue problem; subset means and traces come from one pass with an
    indicator matrix.

    Args:
        real: reference features, N×D.
        fake: generated features, M×D (M >= 3).
        seed: seeds the subsets.
        num_points: number of sample sizes on the curve.
        device: torch device.

    Returns:
        ``{"fd_inf": value, "_curve": {"n": [...], "fd": [...]}}``; ``_curve`` is a detail for
        the report, not a result.
    """
    _, ng, d = check_pair("fd_inf", real, fake, 3)
    if num_points < 2:
        raise MetricInputError(f"fd_inf: num_points must be >= 2 to fit a line, got {num_points}")
    sizes = fd_inf_sizes(ng, num_points)
    if len(np.unique(sizes)) < 2:
        raise MetricInputError(
            f"fd_inf needs at least 2 distinct sample sizes, got {sizes.tolist()} from {ng} generated samples"
        )
    dev = resolve_device(device)
    mu_r, _, factor, tr_r = reference_stats(real, dev, "fd_inf")
    return fd_inf_from_reference(mu_r, tr_r, factor, fake, sizes=sizes, seed=seed, dev=dev)


def fd_inf_from_reference(mu_r, tr_r, factor: torch.Tensor, fake: Any, *, sizes: np.ndarray,
                          seed: Seed, dev: torch.device) -> dict[str, Any]:
    """:func:`fd_inf` from the reference's float64 mean, covariance trace and factor
    (F Fᵀ = Σr, :func:`reference_stats`), computed once by the caller: what resampling the
    generated set reuses."""
    ng, d = int(fake.shape[0]), int(fake.shape[1])
    rng = seeded_generator(seed)
    subsets = [np.sort(rng.choice(ng, n, replace=False)) for n in sizes.tolist()]
    k_cols = int(factor.shape[1])
    lower = is_lower_triangular(factor)
    tr_r = float(tr_r)
    mu_g = mean_rows(fake, dev, "fd_inf", "generated")

    # One pass over the generated set: Z, its Gram matrix, and per-subset sums of X − μg.
    member = torch.zeros(ng, len(subsets), dtype=torch.float64, device=dev)
    for k, idx in enumerate(subsets):
        member[torch.as_tensor(idx, device=dev), k] = 1.0
    step = rows_per_chunk(d)
    z = torch.empty(ng, k_cols, dtype=torch.float64, device=dev)
    gram_acc = ScatterSum(k_cols, dev)
    sum_x = torch.zeros(d, len(subsets), dtype=torch.float64, device=dev)
    sq_x = torch.zeros(len(subsets), dtype=torch.float64, device=dev)
    for i in range(0, ng, step):
        xc = as_tensor(fake[i:i + step], dev, torch.float64) - mu_g
        zc = project(xc, factor, lower)
        z[i:i + step] = zc
        gram_acc.add(zc)
        sum_x += xc.T @ member[i:i + step]
        sq_x += (xc * xc).sum(1) @ member[i:i + step]
    del member
    sum_z_all = z.sum(0)
    gram_all = gram_acc.total(mirror=False)

    fds = []
    for k, idx in enumerate(subsets):
        n = len(idx)
        mean_x = sum_x[:, k] / n
        tr_g = float((sq_x[k] - n * (mean_x @ mean_x)) / (n - 1))
        if n < k_cols:
            rows = z[torch.as_tensor(idx, device=dev)]
            tr_sqrt = trace_sqrt_eigs(_gram_rows2d(rows - rows.mean(0)) / (n - 1))
        else:
            tr_sqrt = trace_sqrt_eigs(_subset_scatter(z, idx, gram_all, sum_z_all, step) / (n - 1))
        diff = mu_g + mean_x - mu_r
        fds.append(float(diff @ diff) + tr_r + tr_g - 2.0 * tr_sqrt)

    return fd_inf_fit(sizes, fds)


def fd_inf_fit(sizes: np.ndarray, fds: list[float]) -> dict[str, Any]:
    """FD∞: the intercept of the least-squares line of FD against 1/n (and the curve)."""
    x = 1.0 / sizes.astype(np.float64)
    y = np.asarray(fds, dtype=np.float64)
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    intercept = float(y.mean() - slope * x.mean())
    return {"fd_inf": intercept, "_curve": {"n": sizes.tolist(), "fd": fds}}


def _subset_scatter(z: torch.Tensor, idx: np.ndarray, gram_all: torch.Tensor,
                    sum_all: torch.Tensor, step: int) -> torch.Tensor:
    """Σ (z−z̄)(z−z̄)ᵀ over rows ``idx`` of z: from those rows, or from the full Gram matrix
    minus the complement's when the complement is shorter (no cancellation: the subset holds
    at least half the rows). On CPU only the lower triangle is filled (what
    :func:`trace_sqrt_eigs` reads)."""
    ng, n = z.shape[0], len(idx)
    use_complement = ng - n < n
    rows = np.setdiff1d(np.arange(ng), idx, assume_unique=True) if use_complement else idx
    acc = ScatterSum(gram_all.shape[0], z.device)
    total = torch.zeros_like(sum_all)
    for i in range(0, len(rows), step):
        part = z[torch.as_tensor(rows[i:i + step], device=z.device)]
        acc.add(part)
        total += part.sum(0)
    gram = acc.total(mirror=False)
    if use_complement:
        gram, total = gram_all - gram, sum_all - total
    mean = total / n
    return gram - n * torch.outer(mean, mean)
