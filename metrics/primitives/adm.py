"""Precision and recall as guided-diffusion's evaluator computes them (the ADM convention).

Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs on Image Synthesis") report the improved
precision/recall of Kynkäänniemi et al. 2019 through ``ManifoldEstimator``/``DistanceBlock`` in
openai/guided-diffusion ``evaluations/evaluator.py``. Its conventions, each of which moves the
number:

* **squared** Euclidean distances ``max(|u|² − 2 u·v + |v|², 0)`` computed from features cast
  to **float16**: the squared norms and the products are float16 values (float32 accumulation,
  as TF's GPU kernels do), the two additions are float16 operations; a 10,000 × 10,000 block
  whose float16 result is not finite is recomputed in float32 from the float32 features;
* the radius of a point is entry ``k`` (k = 3) of its sorted row of distances to its own set,
  self included (the 3rd neighbour excluding self: the self-distance is 0 or a float16 crumb);
* a point counts when its distance is ``<=`` some radius of the other set (Kynkäänniemi's
  code and the prdc package use strict ``<`` on plain distances);
* precision: share of samples inside some reference sphere; recall: share of reference points
  inside some sample sphere; 10,000-row blocks.

float16 rounding depends on the order of the float32 accumulation (TF's GPU kernels, numpy,
torch differ in it), so a sample whose distance lies within one float16 ulp of the radius that
decides it can fall either way in another implementation; :func:`adm_precision_recall` counts
those samples (``_float16_borderline``) so that a difference from a published number can be
bounded.
"""
from __future__ import annotations

from typing import Any

from evalkit.lazy import torch
from evalkit.metrics.primitives.common import fp32_matmul_is_ieee, resolve_device

# Rows (and columns) of one ADM distance block: its float16/float32 choice is made per block.
ADM_BLOCK = 10000
# Rows of a block computed at once (memory: rows × block × 6 bytes).
_SUB_ROWS = 1024


def _as_tensor(x: Any, device) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    return t.to(device=device, dtype=torch.float32)


class _Half:
    """Features cast to float16 and their float16 squared norms (float32 accumulation).

    ``acc`` is the dtype of the products' accumulation: float32, or float64 where float32
    products are not IEEE (TF32 on CUDA would round the float16 inputs to 10 mantissa bits).
    """

    def __init__(self, x32: torch.Tensor):
        self.acc = torch.float32 if fp32_matmul_is_ieee(x32.device) else torch.float64
        self.x32 = x32
        self.x16 = x32.to(torch.float16)
        self.sq16 = (self.x16 * self.x16).float().sum(1).to(torch.float16)
        self.sq32 = (x32 * x32).sum(1)


def _sq_dist(a: _Half, b: _Half, rows: slice, cols: slice, half: bool) -> torch.Tensor:
    """ADM's squared distances of rows × cols, float16 arithmetic (``half``) or float32."""
    if half:
        mm = (a.x16[rows].to(a.acc) @ b.x16[cols].to(a.acc).T).to(torch.float16)
        d = (a.sq16[rows].unsqueeze(1) - 2 * mm) + b.sq16[cols].unsqueeze(0)
    else:
        mm = (a.x32[rows].to(a.acc) @ b.x32[cols].to(a.acc).T).float()
        d = (a.sq32[rows].unsqueeze(1) - 2 * mm) + b.sq32[cols].unsqueeze(0)
    return d.clamp_min(0).float()


def _block_map(a: _Half, b: _Half, i0: int, i1: int, j0: int, j1: int, fn) -> tuple[list, bool]:
    """``fn(distances, row offset, half)`` over the rows of block [i0, i1) × [j0, j1), in
    float16 (``half``) unless some float16 distance of the block is not finite (then the whole
    block again in float32, as ADM's ``tf.cond`` decides per block)."""
    for half in (True, False):
        out, finite = [], True
        for s in range(i0, i1, _SUB_ROWS):
            d = _sq_dist(a, b, slice(s, min(s + _SUB_ROWS, i1)), slice(j0, j1), half)
            if half and not bool(torch.isfinite(d).all()):
                finite = False
                break
            out.append(fn(d, s - i0, half))
        if finite:
            return out, half
    raise AssertionError("unreachable")  # pragma: no cover


def ulp(v: torch.Tensor, half: bool) -> torch.Tensor:
    """One unit in the last place of ``v`` (>= 0) in float16 (``half``) or float32."""
    bits, tiny, normal = (11, 2.0**-24, 2.0**-14) if half else (24, 2.0**-149, 2.0**-126)
    _, e = torch.frexp(v)
    u = torch.ldexp(torch.ones_like(v), e - bits)
    return torch.where(v < normal, torch.full_like(v, tiny), u)


def adm_radii(x: Any, *, nearest_k: int = 3, device: Any = None) -> torch.Tensor:
    """ADM's k-NN radii (squared, float16 values as float32) of the rows of ``x``."""
    dev = resolve_device(device)
    a = _Half(_as_tensor(x, dev))
    return _radii(a, nearest_k)


def _radii(a: _Half, k: int) -> torch.Tensor:
    n = a.x32.shape[0]
    parts = []
    for i0 in range(0, n, ADM_BLOCK):
        i1 = min(i0 + ADM_BLOCK, n)
        cands = []
        for j0 in range(0, n, ADM_BLOCK):
            j1 = min(j0 + ADM_BLOCK, n)
            kk = min(k + 1, j1 - j0)
            out, _ = _block_map(a, a, i0, i1, j0, j1,
                                lambda d, _s, _h, kk=kk: torch.topk(d, kk, dim=1, largest=False).values)
            cands.append(torch.cat(out))
        parts.append(torch.cat(cands, 1).kthvalue(k + 1, dim=1).values)
    return torch.cat(parts)


def adm_precision_recall(real: Any, fake: Any, *, nearest_k: int = 3, device: Any = None
                         ) -> dict[str, Any]:
    """Precision and recall of ``fake`` against ``real`` with the ADM evaluator's conventions.

    See the module docstring. Equals guided-diffusion's ``Evaluator.compute_prec_recall`` up to
    the samples counted in ``_float16_borderline``: those whose decision would change if the
    deciding distances moved by one float16 ulp (float32 ulp in blocks computed in float32).

    Args:
        real: N_r × D reference features (ADM: the 10,000 images of the reference batch).
        fake: N_g × D generated features.
        nearest_k: k of the radii (3).
        device: torch device.

    Returns:
        ``{"precision", "recall", "_float16_borderline": {"precision": n, "recall": n}}``.
    """
    dev = resolve_device(device)
    R, F = _Half(_as_tensor(real, dev)), _Half(_as_tensor(fake, dev))
    r_rad, f_rad = _radii(R, nearest_k), _radii(F, nearest_k)
    nr, nf = R.x32.shape[0], F.x32.shape[0]
    # per point: inside (<=), inside with every deciding distance one ulp larger, or one smaller
    f_in, f_in_hi, f_in_lo = (torch.zeros(nf, dtype=torch.bool, device=dev) for _ in range(3))
    r_in, r_in_hi, r_in_lo = (torch.zeros(nr, dtype=torch.bool, device=dev) for _ in range(3))
    for i0 in range(0, nr, ADM_BLOCK):
        i1 = min(i0 + ADM_BLOCK, nr)
        for j0 in range(0, nf, ADM_BLOCK):
            j1 = min(j0 + ADM_BLOCK, nf)

            def decide(d, s, half, i0=i0, j0=j0, j1=j1):
                rr = r_rad[i0 + s:i0 + s + d.shape[0]].unsqueeze(1)  # reference spheres (rows)
                fr = f_rad[j0:j1].unsqueeze(0)  # sample spheres (columns)
                u_r, u_f = ulp(torch.maximum(d, rr), half), ulp(torch.maximum(d, fr), half)
                return ((d <= rr).any(0), (d + u_r <= rr).any(0), (d - u_r <= rr).any(0),
                        (d <= fr).any(1), (d + u_f <= fr).any(1), (d - u_f <= fr).any(1))

            out, _ = _block_map(R, F, i0, i1, j0, j1, decide)
            for parts in out:
                for acc, v in zip((f_in, f_in_hi, f_in_lo), parts[:3]):
                    acc[j0:j1] |= v
            s = i0
            for parts in out:
                e = s + parts[3].shape[0]
                for acc, v in zip((r_in, r_in_hi, r_in_lo), parts[3:]):
                    acc[s:e] |= v
                s = e
    return {"precision": int(f_in.sum()) / nf, "recall": int(r_in.sum()) / nr,
            "_float16_borderline": {"precision": int((f_in_lo & ~f_in_hi).sum()),
                                    "recall": int((r_in_lo & ~r_in_hi).sum())}}
