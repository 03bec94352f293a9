"""Exact, chunked nearest-neighbour primitives shared by the PRDC, realism and memorization metrics.

Every pairwise question here ("which are the k nearest?", "is this point inside that sphere?") is
answered *exactly* -- as if all distances were computed in float64 -- while the heavy work runs as
float32 matrix products in row chunks, so memory stays O(N*k) + chunk*N and no N x N matrix is ever
held:

1. **Screening.** Points are centred on a common mean and squared distances are computed in
   float32 as ``|a|^2 + |b|^2 - 2 a.b`` with one ``addmm`` per chunk. The rounding error of that
   expression is bounded rigorously (any summation order, FMA or not) by
   ``eta * (|a|^2 + |b|^2)`` with ``eta = gamma_(D+16) = (D+16) u / (1 - (D+16) u)``, ``u = 2^-24``;
   the bound covers the float64->float32 rounding of the inputs, of the norms and of the two
   additions.
2. **Refinement.** Only the pairs whose screened value lies within that bound of a decision
   threshold (a k-th neighbour distance, a sphere radius) are recomputed in float64 in difference
   form ``sum((a - b)^2)`` from the original arrays. These are a handful per row.

Why not float64 throughout: a float64 matrix product costs twice a float32 one on CPU (and far
more on consumer GPUs); with the refinement the float32 pass gives float64 answers.  When float32
matrix products are allowed to use reduced precision (TF32 on CUDA, bf16 in oneDNN), the screening
runs in float64 instead, because the bound above would not hold.

On CPUs with native bfloat16 dot products (AVX512-BF16, AMX) a bfloat16 product is ~4x faster
than a float32 one. Nearest-neighbour searches (``prepare(..., fast=True)``), the PRDC cross pass
and the realism maximum screen with it first: the bound becomes ``~3 * 2^-8`` relative (inputs and
output rounded to bfloat16, float32 accumulation as oneDNN and torch's own kernels do), so more
pairs are refined, and the sphere/realism passes fall back to float32 screening as soon as a chunk
leaves too many pairs undecided (data whose distances concentrate). Answers stay exact.

Exact means: as computed from the inputs in float64 in difference form. Only pairs whose exact
distances tie (duplicated or lattice-valued points) can be decided differently from a library that
computes ``|a|^2 + |b|^2 - 2 a.b`` in float64, whose last-bit noise breaks such ties arbitrarily.

The ``prdc`` package compares sklearn ``pairwise_distances`` with strict ``<``. sklearn computes
distances of float32 inputs in float64 and then rounds the squared distance to float32 and takes a
float32 square root. ``round_like`` reproduces that rounding so that ties at float32 resolution
fall the same way as in ``prdc`` (see :mod:`evalkit.metrics.prdc`).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalkit.errors import MetricInputError
from evalkit.lazy import torch
from evalkit.metrics.primitives.common import (  # noqa: F401  (check_points: re-exported)
    Seed,
    check_points,
    fp32_matmul_is_ieee,
    resolve_device,
    seeded_generator,
)

# Bytes one chunk of the screening matrix may use (the dominant temporary; cache-sized).
CHUNK_BYTES = 16 * 2**20
# Fewest rows per chunk (keeps the products efficient when rows are very wide).
MIN_CHUNK_ROWS = 64
# Bytes one batch of exact (float64, difference-form) pair recomputations may use.
PAIR_BYTES = 8 * 2**20
# Extra neighbours kept beyond k so that the refinement window rarely needs a second look.
EXTRA = 4
# The same for bfloat16 screening, whose windows are wider.
EXTRA_FAST = 24


# ----------------------------------------------------------------------------------------------
# precision helpers


def _unit_roundoff(dtype: torch.dtype) -> float:
    return 2.0**-24 if dtype == torch.float32 else 2.0**-53


def _eta(dim: int, dtype: torch.dtype) -> float:
    """Relative error bound of a screened squared distance, in units of |a|^2 + |b|^2."""
    nu = (dim + 16) * _unit_roundoff(dtype)
    return 1.01 * nu / (1.0 - nu) + 1e-15


def _eta_bf16(dim: int) -> float:
    """Error bound of a squared distance screened with a bfloat16 product (fp32 accumulation).

    Rounding both inputs to bfloat16 (unit roundoff 2^-8) moves ``a.b`` by at most
    ``(2u + u^2) |a||b|``, the float32 accumulation by ``gamma_D |a||b|``, the bfloat16 output by
    ``u |a.b|``; ``2 |a||b| <= |a|^2 + |b|^2`` turns the ``-2 a.b`` term into the usual form.
    """
    u = 2.0**-8
    return 1.01 * (3 * u + u * u + _eta(dim, torch.float32)) + 1e-12


def bf16_products_are_fast(device: torch.device) -> bool:
    """True on CPUs with native bfloat16 dot products (AVX512-BF16 or AMX), where a bfloat16
    matrix product is several times faster than a float32 one and accumulates in float32."""
    if device.type != "cpu":
        return False
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private torch API gone in this version: assume not
        return False


def _rounding_margin(dtype: torch.dtype) -> float:
    """Relative gap in squared distance beyond which ``round_like`` cannot merge two values."""
    return 2.0**-19 if dtype == torch.float32 else 2.0**-48


def round_like(sq: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Distances from exact squared distances, rounded the way sklearn rounds them for ``dtype``.

    For float32 inputs sklearn's ``euclidean_distances`` computes the squared distance in float64,
    stores it as float32 and takes the square root in float32; for float64 inputs everything stays
    float64. The result is returned as float64 either way (holding float32 values for float32).
    """
    if dtype == torch.float32:
        # IEEE sqrt of the float32 value: in float64 then rounded (exact for sqrt, 53 >= 2*24+2
        # bits); torch's vectorised float32 sqrt on CPU is not always correctly rounded
        return torch.sqrt(sq.to(torch.float32).to(torch.float64)).to(torch.float32).to(torch.float64)
    return torch.sqrt(sq.to(torch.float64))


def compare_dtype(*arrays: Any) -> torch.dtype:
    """float32 when every array is float32 (sklearn keeps float32 then), else float64."""
    for a in arrays:
        if getattr(a, "dtype", None) not in (np.float32, torch.float32):
            return torch.float64
    return torch.float32


# ----------------------------------------------------------------------------------------------
# prepared point sets


@dataclass
class Points:
    """One point set prepared for screening.

    Attributes:
        raw: the original values on the device (float32 or float64; used for exact refinement).
        scr: the centred copy in the screening dtype.
        sq: float64 squared norms of the rows of ``scr``.
        sq_s: ``sq`` in the screening dtype (added inside the chunk products).
    """

    raw: torch.Tensor
    scr: torch.Tensor
    sq: torch.Tensor
    sq_s: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.raw.shape[0])

    def rows(self, index: torch.Tensor | slice) -> Points:
        return Points(self.raw[index], self.scr[index], self.sq[index], self.sq_s[index])


@dataclass
class Space:
    """Device, dtypes and error constant shared by point sets that are compared.

    ``sdtype`` is the dtype of screened squared distances, ``mdtype`` the dtype of the matrix
    products (``sdtype``, or bfloat16 for the fast nearest-neighbour searches), ``eta`` the
    relative error bound and ``extra`` the candidates kept beyond k.
    """

    device: torch.device
    sdtype: torch.dtype
    eta: float
    dim: int
    mdtype: torch.dtype = field(default_factory=lambda: torch.float32)  # lazy: no torch at import
    extra: int | None = None
    scale: float = 1.0

    def unscale(self, dist: torch.Tensor) -> torch.Tensor:
        """Distances computed on the rescaled points, back in the units of the inputs."""
        return dist if self.scale == 1.0 else dist / self.scale


def _raw_tensor(x: Any, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
        with warnings.catch_warnings():  # read-only arrays are fine: nothing writes to them
            warnings.simplefilter("ignore")
            t = torch.as_tensor(arr)
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float64)
    if t.ndim != 2:
        raise MetricInputError(f"expected a 2-D array of points, got shape {tuple(t.shape)}")
    return t.to(device)


# Largest absolute feature value kept as is: beyond it (or below its inverse) the points are
# rescaled by a power of two, so that squared norms and distances stay far inside the float32
# range of the screening (D * (2 * 2^32)^2 < 2^100 for any D < 2^30).
SAFE_MAGNITUDE = 2.0**32


def safe_scale(max_abs: float) -> float:
    """Power of two bringing ``max_abs`` into [0.5, 1) when it lies outside the safe range, else 1.

    Multiplying by a power of two is exact in floating point (barring underflow below 2^-126 of
    the largest value), so every distance ordering, ratio and float32-rounded comparison is the
    same as on the original points: features of magnitude 1e30 or 1e-30 give the metrics of the
    same features at magnitude 1 instead of overflowing (inf - inf = NaN) or underflowing to 0.
    """
    if not math.isfinite(max_abs):
        raise MetricInputError("features contain NaN or infinite values")
    if max_abs == 0.0 or 1.0 / SAFE_MAGNITUDE <= max_abs <= SAFE_MAGNITUDE:
        return 1.0
    return math.ldexp(1.0, -math.frexp(max_abs)[1])


def _max_abs(raws: Sequence[torch.Tensor]) -> float:
    return max((float(r.abs().max()) for r in raws if r.numel()), default=0.0)


def prepare(*arrays: Any, device: Any = None, fast: bool = False) -> tuple[Space, list[Points]]:
    """Centre ``arrays`` on their common mean and build screening copies on ``device``.

    Points whose magnitude leaves the safe range are first multiplied by one power of two
    (:func:`safe_scale`, recorded as ``Space.scale``): exact, so the answers do not change.

    With ``fast`` the products run in bfloat16 where that is much faster (CPUs with AVX512-BF16
    or AMX): the screening is ~100x coarser, which suits nearest-neighbour searches (a few more
    candidates to refine) but not sphere membership counts.
    """
    dev = resolve_device(device)
    raws = [_raw_tensor(a, dev) for a in arrays]
    dims = {int(r.shape[1]) for r in raws}
    if len(dims) != 1:
        raise MetricInputError(f"point sets have different dimensions: {sorted(dims)}")
    dim = dims.pop()
    scale = safe_scale(_max_abs(raws))
    if scale != 1.0:
        raws = [r * scale for r in raws]
    sdtype = torch.float32 if fp32_matmul_is_ieee(dev) else torch.float64
    total = sum(r.shape[0] for r in raws)
    mean = torch.zeros(dim, dtype=torch.float64, device=dev)
    step = _rows_for(dim * 8, 4 * CHUNK_BYTES)
    for r in raws:
        for s in range(0, r.shape[0], step):
            mean += r[s:s + step].sum(0, dtype=torch.float64)
    # Any common shift leaves distances unchanged, so the centre may be rounded to the screening
    # dtype first; the centred copy then carries only its own rounding (covered by ``eta``).
    centre = (mean / max(total, 1)).to(sdtype)
    space = Space(dev, sdtype, _eta(dim, sdtype), dim, sdtype, scale=scale)
    if fast and sdtype == torch.float32 and bf16_products_are_fast(dev):
        space = Space(dev, sdtype, _eta_bf16(dim), dim, torch.bfloat16, extra=EXTRA_FAST, scale=scale)
    pts = []
    for r in raws:
        scr = torch.empty(r.shape, dtype=sdtype, device=dev)
        sq = torch.empty(r.shape[0], dtype=torch.float64, device=dev)
        for s in range(0, r.shape[0], step):
            c = scr[s:s + step]
            if r.dtype == sdtype:
                torch.sub(r[s:s + step], centre, out=c)
            else:  # subtract before rounding so the error stays relative to the centred value
                c.copy_(r[s:s + step] - centre.to(r.dtype))
            c64 = c.to(torch.float64)
            sq[s:s + step] = torch.einsum("ij,ij->i", c64, c64)
        if space.mdtype != sdtype:
            scr = scr.to(space.mdtype)
        pts.append(Points(r, scr, sq, sq.to(sdtype)))
    return space, pts


def _rows_for(bytes_per_row: int, budget: int = CHUNK_BYTES) -> int:
    return max(1, int(budget // max(bytes_per_row, 1)))


def chunk_rows(n_cols: int, itemsize: int = 4, budget: int | None = None) -> int:
    """Rows per chunk so that a chunk x ``n_cols`` matrix stays within the memory budget.

    The budget is small (cache-sized) on purpose: the elementwise passes over a chunk then run
    from cache; ``MIN_CHUNK_ROWS`` rows keep the matrix products efficient for very wide chunks.
    """
    return max(MIN_CHUNK_ROWS, _rows_for(n_cols * itemsize, CHUNK_BYTES if budget is None else budget))


def approx_sq(a: Points, b: Points) -> torch.Tensor:
    """Screened squared distances ``|a|^2 + |b|^2 - 2 a.b`` (rows of ``a`` x rows of ``b``)."""
    if a.scr.dtype == torch.bfloat16:
        s = torch.add(b.sq_s.unsqueeze(0), torch.mm(a.scr, b.scr.T), alpha=-2.0)
    else:
        s = torch.addmm(b.sq_s.unsqueeze(0), a.scr, b.scr.T, beta=1.0, alpha=-2.0)
    s += a.sq_s.unsqueeze(1)
    return s


def exact_sq(a_raw: torch.Tensor, b_raw: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """Float64 squared distances of the pairs ``(a_raw[ia], b_raw[ib])`` in difference form."""
    out = torch.empty(ia.shape[0], dtype=torch.float64, device=a_raw.device)
    step = _rows_for(a_raw.shape[1] * 8 * 2, PAIR_BYTES)
    for s in range(0, ia.shape[0], step):
        d = a_raw.index_select(0, ia[s:s + step]).to(torch.float64)
        d.sub_(b_raw.index_select(0, ib[s:s + step]))
        out[s:s + step] = torch.einsum("ij,ij->i", d, d)
    return out


# ----------------------------------------------------------------------------------------------
# k nearest neighbours


def _select_k(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int, k: int):
    """The k smallest ``vals`` per row (ties by column index); every row has >= k candidates."""
    o = torch.argsort(cols, stable=True)
    o = o[torch.argsort(vals[o], stable=True)]
    o = o[torch.argsort(rows[o], stable=True)]
    r, c, v = rows[o], cols[o], vals[o]
    counts = torch.bincount(r, minlength=n_rows)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(r.shape[0], device=r.device) - starts[r]
    keep = rank < k
    out_v = v[keep].view(n_rows, k)
    out_c = c[keep].view(n_rows, k)
    return out_v, out_c


def _refine(q: Points, b: Points, cand_r, cand_c, n_rows: int, k: int):
    vals = exact_sq(q.raw, b.raw, cand_r, cand_c)
    return _select_k(cand_r, cand_c, vals, n_rows, k)


def _window(space: Space, q: Points, kth: torch.Tensor, b_max: float) -> torch.Tensor:
    """Screened values up to this threshold may hold one of the k exact nearest neighbours."""
    bound = space.eta * (q.sq + b_max)
    return kth.to(torch.float64) + 2.0 * bound + 1e-300


def knn_sq(
    query: Points,
    base: Points,
    space: Space,
    k: int,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest rows of ``base`` for every row of ``query`` (squared distances, indices).

    Args:
        exclude: optional base index per query row to leave out (the query's own position when
            the query rows are members of ``base``); -1 means none.
    Returns:
        (float64 squared distances, int64 indices), each ``len(query) x k``, ascending, ties
        broken by the lower index.
    """
    nb = base.n - (0 if exclude is None else 1)
    if k > nb:
        raise MetricInputError(f"k={k} neighbours requested from {nb} points")
    kp = min(k + (EXTRA if space.extra is None else space.extra), nb)
    b_max = float(base.sq.max())
    out_v = torch.empty(query.n, k, dtype=torch.float64, device=space.device)
    out_i = torch.empty(query.n, k, dtype=torch.int64, device=space.device)
    step = chunk_rows(base.n, 4 if space.sdtype == torch.float32 else 8)
    for s in range(0, query.n, step):
        e = min(s + step, query.n)
        qc = query.rows(slice(s, e))
        S = approx_sq(qc, base)
        if exclude is not None:
            ex = exclude[s:e]
            ok = ex >= 0
            rr = torch.arange(e - s, device=space.device)[ok]
            S[rr, ex[ok]] = float("inf")
        v, ix = torch.topk(S, kp, dim=1, largest=False, sorted=True)
        thr = _window(space, qc, v[:, k - 1], b_max)
        inside = v.to(torch.float64) <= thr.unsqueeze(1)
        over = inside[:, -1].clone() if kp < nb else torch.zeros_like(inside[:, -1])
        if bool(over.any()):
            inside[over] = False
            orow = torch.nonzero(over).squeeze(1)
            so = S[orow].to(torch.float64) <= thr[orow].unsqueeze(1)
            r2, c2 = torch.nonzero(so, as_tuple=True)
            r2 = orow[r2]
        else:
            r2 = c2 = torch.empty(0, dtype=torch.int64, device=space.device)
        r1, j1 = torch.nonzero(inside, as_tuple=True)
        rows = torch.cat([r1, r2])
        cols = torch.cat([ix[r1, j1], c2])
        del S
        sv, si = _refine(qc, base, rows, cols, e - s, k)
        out_v[s:e] = sv
        out_i[s:e] = si
    return out_v, out_i


def _select_rank(rows: torch.Tensor, vals: torch.Tensor, n_rows: int, want: torch.Tensor) -> torch.Tensor:
    """Per row, the ``want[row]``-th smallest (0-based) of its ``vals``."""
    o = torch.argsort(vals, stable=True)
    o = o[torch.argsort(rows[o], stable=True)]
    r, v = rows[o], vals[o]
    counts = torch.bincount(r, minlength=n_rows)
    starts = torch.cumsum(counts, 0) - counts
    return v[starts + want]


def knn_self_sq(
    points: Points, space: Space, k: int, kth_only: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Exact k nearest *other* rows of a set, exploiting symmetry (about half the products).

    Row block ``I`` is multiplied with the rows from its own start to the end; the block's rows
    take their candidates along the rows of that product and the later rows take theirs along its
    columns, so each unordered pair is screened once.

    With ``kth_only`` only the k-th smallest squared distance per row is returned (indices None):
    neighbours that are certainly closer than the k-th are counted without being recomputed, so
    only the few pairs near the k-th distance are refined.

    Returns:
        (float64 squared distances ``N x k``, int64 indices ``N x k``), or (``N`` k-th squared
        distances, None) with ``kth_only``.
    """
    n = points.n
    if k > n - 1:
        raise MetricInputError(f"k={k} neighbours requested from {n - 1} other points")
    kp = min(k + (EXTRA if space.extra is None else space.extra), n - 1)
    dev = space.device
    inf = float("inf")
    st_v = torch.full((n, kp), inf, dtype=space.sdtype, device=dev)
    st_i = torch.full((n, kp), -1, dtype=torch.int64, device=dev)
    per_chunk = chunk_rows(n, 4 if space.sdtype == torch.float32 else 8)
    step = max(1, min(per_chunk, max(MIN_CHUNK_ROWS, -(-n // 16))))

    def merge(lo: int, hi: int, v: torch.Tensor, i: torch.Tensor) -> None:
        cv = torch.cat([st_v[lo:hi], v], 1)
        ci = torch.cat([st_i[lo:hi], i], 1)
        tv, tj = torch.topk(cv, kp, dim=1, largest=False, sorted=True)
        st_v[lo:hi] = tv
        st_i[lo:hi] = torch.gather(ci, 1, tj)

    def merge_sparse(rows: torch.Tensor, v: torch.Tensor, i: torch.Tensor) -> None:
        """Merge scattered candidates (row, value, index) into the kept lists of those rows."""
        u = torch.unique(rows)
        rr = torch.cat([u.repeat_interleave(kp), rows])
        vv = torch.cat([st_v[u].reshape(-1), v])
        ii = torch.cat([st_i[u].reshape(-1), i])
        o = torch.argsort(vv, stable=True)
        o = o[torch.argsort(rr[o], stable=True)]
        rr, vv, ii = rr[o], vv[o], ii[o]
        counts = torch.bincount(rr, minlength=n)[u]
        starts = torch.cumsum(counts, 0) - counts
        take = (starts.unsqueeze(1) + torch.arange(kp, device=dev)).reshape(-1)
        st_v[u] = vv[take].view(-1, kp)
        st_i[u] = ii[take].view(-1, kp)

    for s in range(0, n, step):
        e = min(s + step, n)
        S = approx_sq(points.rows(slice(s, e)), points.rows(slice(s, n)))
        S.diagonal().fill_(inf)
        kk = min(kp, n - s)
        v, ix = torch.topk(S, kk, dim=1, largest=False, sorted=True)
        merge(s, e, v, ix + s)
        if e < n:
            sc = S[:, e - s:]
            if s == 0:  # nothing kept yet for the later rows
                kc = min(kp, e - s)
                vc, ic = torch.topk(sc, kc, dim=0, largest=False, sorted=True)
                merge(e, n, vc.T, ic.T + s)
            else:  # only entries below a row's current kp-th kept value can enter its list
                t, j = torch.nonzero(sc < st_v[e:, kp - 1].unsqueeze(0), as_tuple=True)
                if t.numel():
                    merge_sparse(j + e, sc[t, j], t + s)
        del S
    b_max = float(points.sq.max())
    bound = 2.0 * space.eta * (points.sq + b_max) + 1e-300
    kth = st_v[:, k - 1].to(torch.float64)
    hi = kth + bound
    lo = kth - bound if kth_only else torch.full_like(kth, -inf)
    vals64 = st_v.to(torch.float64)
    below = (vals64 < lo.unsqueeze(1)).sum(1)
    inside = (vals64 >= lo.unsqueeze(1)) & (vals64 <= hi.unsqueeze(1))
    over = inside[:, -1].clone() if kp < n - 1 else torch.zeros_like(inside[:, -1])
    inside[over] = False
    r1, j1 = torch.nonzero(inside, as_tuple=True)
    rows, cols = r1, st_i[r1, j1]
    if bool(over.any()):  # the window reaches past the kept candidates: rescreen those rows
        orow = torch.nonzero(over).squeeze(1)
        rr, cc = [], []
        for s in range(0, orow.shape[0], step):
            o = orow[s:s + step]
            S = approx_sq(points.rows(o), points).to(torch.float64)
            S[torch.arange(o.shape[0], device=dev), o] = inf
            below[o] = (S < lo[o].unsqueeze(1)).sum(1)
            a, c = torch.nonzero((S >= lo[o].unsqueeze(1)) & (S <= hi[o].unsqueeze(1)), as_tuple=True)
            rr.append(o[a])
            cc.append(c)
        rows = torch.cat([rows, *rr])
        cols = torch.cat([cols, *cc])
    vals = exact_sq(points.raw, points.raw, rows, cols)
    if kth_only:
        return _select_rank(rows, vals, n, k - 1 - below), None
    return _select_k(rows, cols, vals, n, k)


# ----------------------------------------------------------------------------------------------
# spheres


def bf16_twins(space: Space, *sets: Points) -> tuple[Space, list[Points]] | None:
    """The same prepared sets with bfloat16 product copies, where those are fast (else None)."""
    if space.mdtype != torch.float32 or not bf16_products_are_fast(space.device):
        return None
    fast = Space(space.device, space.sdtype, _eta_bf16(space.dim), space.dim, torch.bfloat16, EXTRA_FAST,
                 space.scale)
    return fast, [Points(p.raw, p.scr.to(torch.bfloat16), p.sq, p.sq_s) for p in sets]


def sphere_pass(
    pts: Points,
    centres: Points,
    space: Space,
    c_radius: torch.Tensor,
    c_cmp: torch.dtype,
    p_radius: torch.Tensor | None = None,
    cross_cmp: torch.dtype | None = None,  # None: float64
    p_cmp: torch.dtype | None = None,
    fast: tuple[Space, list[Points]] | None = None,
    max_uncertain: float = 24.0,
):
    """Exact strict-``<`` sphere membership between two sets, in one chunked pass.

    ``d(p, c)`` is compared as ``round_like(d^2, cross_cmp)``; radii are given as already rounded
    distances (float64 tensors) together with the dtype they were rounded for.

    With ``fast`` (bfloat16 twins of ``pts`` and ``centres`` from :func:`bf16_twins`) the chunks
    are screened with bfloat16 products as long as the pairs left undecided stay below
    ``max_uncertain`` per point (data whose distances spread out); once a chunk exceeds it (data
    whose distances concentrate, where the coarse screen decides too little) the remaining chunks
    use the float32 sets. Either way every decision is exact.

    Returns:
        counts: per point, the number of centres ``c`` with ``d(p, c) < c_radius[c]``;
        covered: per centre, whether any point lies strictly inside its sphere;
        reached: per centre, whether it lies strictly inside some point's sphere
        (``d(p, c) < p_radius[p]``), or None without ``p_radius``.
    """
    cross_cmp = torch.float64 if cross_cmp is None else cross_cmp
    dev = space.device
    counts = torch.zeros(pts.n, dtype=torch.int64, device=dev)
    covered = torch.zeros(centres.n, dtype=torch.bool, device=dev)
    reached = None if p_radius is None else torch.zeros(centres.n, dtype=torch.bool, device=dev)
    margin = _rounding_margin(torch.float32 if torch.float32 in (c_cmp, cross_cmp, p_cmp) else torch.float64)
    c_sq = c_radius.to(torch.float64).pow(2)
    c_lo_base = c_sq - margin * c_sq
    p_sq_all = None if p_radius is None else p_radius.to(torch.float64).pow(2)
    c_max = float(centres.sq.max())
    tier = (fast[0], fast[1][0], fast[1][1]) if fast is not None else (space, pts, centres)
    step = chunk_rows(centres.n, 4 if space.sdtype == torch.float32 else 8)
    for s in range(0, pts.n, step):
        e = min(s + step, pts.n)
        sp, pc, cc = tier[0], tier[1].rows(slice(s, e)), tier[2]
        S = approx_sq(pc, cc)
        bc = sp.eta * (cc.sq + float(pc.sq.max()))
        lo = (c_lo_base - bc).to(sp.sdtype)
        hi = (c_sq + bc).to(sp.sdtype)
        sure = S < lo.unsqueeze(0)
        maybe = S <= hi.unsqueeze(0)
        counts[s:e] += sure.sum(1)
        covered |= sure.any(0)
        unc_r, unc_c = torch.nonzero(maybe ^ sure, as_tuple=True)
        n_unc = unc_r.numel()
        if n_unc:
            d = round_like(exact_sq(pc.raw, cc.raw, unc_r, unc_c), cross_cmp)
            ins = d < c_radius[unc_c]
            counts[s:e] += torch.bincount(unc_r[ins], minlength=e - s)
            covered[unc_c[ins]] = True
        if p_radius is not None:
            p_sq = p_sq_all[s:e]
            bp = sp.eta * (pc.sq + c_max)
            lo = (p_sq - margin * p_sq - bp).to(sp.sdtype)
            hi = (p_sq + bp).to(sp.sdtype)
            sure = S < lo.unsqueeze(1)
            reached |= sure.any(0)
            unc_r, unc_c = torch.nonzero((S <= hi.unsqueeze(1)) ^ sure, as_tuple=True)
            n_unc += unc_r.numel()
            if unc_r.numel():
                d = round_like(exact_sq(pc.raw, cc.raw, unc_r, unc_c), cross_cmp)
                ins = d < p_radius[s:e][unc_r]
                reached[unc_c[ins]] = True
        del S
        if tier[0] is not space and n_unc > max_uncertain * (e - s):
            tier = (space, pts, centres)
    return counts, covered, reached


def sphere_pairs(
    pts: Points, centres: Points, space: Space, c_radius: torch.Tensor, cross_cmp: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (point, centre) pair with ``d(p, c) < c_radius[c]``, decided exactly as
    :func:`sphere_pass` decides it (float32/float64 screening, exact refinement of the pairs near
    a radius, ``round_like(d^2, cross_cmp)`` compared strictly).

    Returns:
        (point indices, centre indices), int64 tensors of equal length, ordered by point.
    """
    margin = _rounding_margin(torch.float32 if torch.float32 == cross_cmp else torch.float64)
    c_sq = c_radius.to(torch.float64).pow(2)
    c_lo_base = c_sq - margin * c_sq
    out_p, out_c = [], []
    step = chunk_rows(centres.n, 4 if space.sdtype == torch.float32 else 8)
    for s in range(0, pts.n, step):
        e = min(s + step, pts.n)
        pc = pts.rows(slice(s, e))
        S = approx_sq(pc, centres)
        bc = space.eta * (centres.sq + float(pc.sq.max()))
        sure = S < (c_lo_base - bc).to(space.sdtype).unsqueeze(0)
        maybe = S <= (c_sq + bc).to(space.sdtype).unsqueeze(0)
        r1, c1 = torch.nonzero(sure, as_tuple=True)
        unc_r, unc_c = torch.nonzero(maybe ^ sure, as_tuple=True)
        d = round_like(exact_sq(pc.raw, centres.raw, unc_r, unc_c), cross_cmp)
        ins = d < c_radius[unc_c]
        rows = torch.cat([r1, unc_r[ins]]) + s
        cols = torch.cat([c1, unc_c[ins]])
        o = torch.argsort(rows, stable=True)
        out_p.append(rows[o])
        out_c.append(cols[o])
        del S
    empty = torch.empty(0, dtype=torch.int64, device=space.device)
    return (torch.cat(out_p) if out_p else empty), (torch.cat(out_c) if out_c else empty)


# ----------------------------------------------------------------------------------------------
# public API


def seeded_subsets(sizes: Sequence[int], max_samples: int | None, seed: Seed) -> list[np.ndarray | None]:
    """Sorted indices of seeded subsets of at most ``max_samples`` rows, one per set size.

    One ``numpy.random.default_rng(seed)`` draws, in order, a subset (without replacement) for
    every set larger than ``max_samples``; smaller sets are kept whole (``None``).
    """
    rng = seeded_generator(seed)
    out: list[np.ndarray | None] = []
    for n in sizes:
        if max_samples is None or n <= max_samples:
            out.append(None)
        else:
            out.append(np.sort(rng.choice(n, size=int(max_samples), replace=False)))
    return out


__all__: Sequence[str] = (
    "round_like",
    "compare_dtype",
    "prepare",
    "knn_sq",
    "knn_self_sq",
    "sphere_pass",
    "sphere_pairs",
    "exact_sq",
    "approx_sq",
    "chunk_rows",
    "seeded_subsets",
    "check_points",
)
