"""Resizing, both halves: PIL on the CPU (per image, in the data workers) and the same clean
resize as matrix products on the device (per batch).

CPU half: :func:`clean_resize` resizes with PIL bicubic on float32 channels, antialiased and
without re-quantisation: clean-fid's ``clean`` mode (Parmar et al., "On Aliased Resizing and
Surprising Subtleties in GAN Evaluation", CVPR 2022), equal to
``cleanfid.resize.make_resizer("PIL", False, "bicubic", (S, S))``; :func:`pil_resize` is
torchvision's ``Resize`` on the 8-bit image (dgm-eval's transforms); :func:`prepare` applies an
encoder's ``Preprocess`` with one of them.

Device half: the clean resize as matrix products, batched. PIL's ``Image.resize(...,
BICUBIC)`` on a mode ``F`` image is a separable filter: a horizontal pass then a vertical
pass, each output pixel a weighted sum of input pixels. The weights depend only on (input size,
output size), so each pass is one matrix product with a fixed (out × in) matrix, built exactly
as Pillow's ``precompute_coeffs`` (``src/libImaging/Resample.c``) does:

* ``scale = in / out``; the filter is stretched by ``filterscale = max(scale, 1)`` (antialiasing
  when downscaling): support ``2 · filterscale`` for bicubic;
* output pixel ``j`` is centred at ``(j + 0.5) · scale`` in input coordinates; it reads input
  pixels ``[int(centre − support + 0.5), int(centre + support + 0.5))`` clipped to the image;
* the weight of input pixel ``i`` is ``bicubic((i − centre + 0.5) / filterscale)`` with
  ``a = −0.5`` (Keys' cubic convolution), normalised to sum 1 per output pixel (in float64);
* a pass whose size does not change is skipped (PIL copies that axis).

Pillow accumulates each pass in float64 and stores float32 between the passes; here the passes
are float32 matrix products (float64 on request), clipped to [0, 255] at the end like clean-fid,
never re-quantised. Measured against PIL on random images: max |Δ| ≈ 3e-5 on the [0, 255] scale
in float32 (256 → 299), below clean-fid's own float32 output precision.

The same code runs on CPU and CUDA tensors; :func:`resize_batch` takes an N×H×W×3 uint8 batch
(what the data workers ship) and returns N×3×S×S float32 in [0, 255], the encoders' input.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

_A = -0.5  # Keys' cubic convolution parameter, as in Pillow's bicubic_filter
_SUPPORT = 2.0


def _bicubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    near = ((_A + 2.0) * x - (_A + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * _A
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def pil_bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """The (out_size × in_size) float64 matrix of PIL's antialiased bicubic resample.

    Row ``j`` holds the normalised weights with which Pillow's ``precompute_coeffs`` forms
    output pixel ``j`` from the input pixels of one row (or column); see the module doc.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    out = np.zeros((out_size, in_size), dtype=np.float64)
    for j in range(out_size):
        center = (j + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)  # C's (int) truncates; negatives clip to 0
        hi = min(int(center + support + 0.5), in_size)
        if hi <= lo:
            continue
        w = _bicubic((np.arange(lo, hi) - center + 0.5) / filterscale)
        total = w.sum()
        out[j, lo:hi] = w / total if total != 0.0 else w
    return out


# -- device half: matrix products ----------------------------------------------------------
_CACHE: dict[tuple, torch.Tensor] = {}
_CACHE_LOCK = threading.Lock()


def weights(in_size: int, out_size: int, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32, rows: tuple[int, int] | None = None
            ) -> torch.Tensor:
    """:func:`pil_bicubic_weights` as a tensor on ``device``, cached per (sizes, device,
    dtype, rows); ``rows = (start, stop)`` keeps only those output pixels (a centre crop)."""
    key = (in_size, out_size, str(torch.device(device)), dtype, rows)
    with _CACHE_LOCK:
        w = _CACHE.get(key)
    if w is None:
        full = pil_bicubic_weights(in_size, out_size)
        if rows is not None:
            full = full[rows[0]:rows[1]]
        w = torch.from_numpy(np.ascontiguousarray(full)).to(device=device, dtype=dtype)
        with _CACHE_LOCK:
            _CACHE[key] = w
    return w


def target_size(h: int, w: int, size: int, crop: bool = False, crop_from: int = 0
                ) -> tuple[int, int, int, int]:
    """(resized height, resized width, crop top, crop left) of an H×W image.

    Without ``crop``: S×S, no offset. With ``crop``: the shorter side to ``crop_from or size``
    (the longer to ``int(short · long / shorter)``, torchvision's ``Resize(int)`` rule), then
    torchvision's ``CenterCrop`` offsets ``int(round((side − size) / 2))``.
    """
    if not crop:
        return size, size, 0, 0
    short = crop_from or size
    if w <= h:
        tw, th = short, int(short * h / w)
    else:
        tw, th = int(short * w / h), short
    return th, tw, int(round((th - size) / 2.0)), int(round((tw - size) / 2.0))


@contextmanager
def _strict_fp32(device: torch.device):
    """No autocast and no TF32 around the resize: its products stay float32 exact-ish."""
    with torch.autocast(device_type=device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved


def resize_planes(x: torch.Tensor, size: int, crop: bool = False, crop_from: int = 0,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Clean-resize a float batch N×C×H×W (values in [0, 255]) to N×C×S×S, clipped to [0, 255].

    Two matrix products (horizontal then vertical, as Pillow orders its passes) with the cached
    :func:`weights`; with ``crop`` only the rows and columns of the centre crop are computed.
    ``dtype`` is the arithmetic precision (float32 by default; float64 to follow Pillow's float64
    accumulation more closely); the result is float32.
    """
    n, c, h, w = x.shape
    th, tw, top, left = target_size(h, w, size, crop, crop_from)
    oh, ow = (size, size) if crop else (th, tw)
    if (th, tw) == (h, w):  # PIL returns a copy: only the crop, if any
        return x[:, :, top:top + oh, left:left + ow].float().clamp_(0, 255)
    dev = x.device
    with _strict_fp32(dev):
        y = x.to(dtype)
        if tw != w:
            y = torch.matmul(y, weights(w, tw, dev, dtype, (left, left + ow)).T)
            y = y.float().to(dtype)  # Pillow stores the first pass in float32
        else:
            y = y[..., left:left + ow]
        if th != h:
            y = torch.matmul(weights(h, th, dev, dtype, (top, top + oh)), y)
        else:
            y = y[..., top:top + oh, :]
    return y.to(torch.float32).clamp_(0, 255).contiguous()


def resize_batch(images: torch.Tensor, preprocess, dtype: torch.dtype = torch.float32
                 ) -> torch.Tensor:
    """An encoder's input from an N×H×W×3 uint8 batch, on the batch's device.

    ``preprocess.resize == "clean"``: :func:`resize_planes` to ``preprocess.size`` (with its
    ``crop`` / ``crop_from``); ``"none"``: native size. Either way N×3×H'×W' float32 in
    [0, 255], equal to :func:`prepare` on each image to float rounding.
    """
    planes = images.permute(0, 3, 1, 2)
    if preprocess.resize == "none":
        return planes.float()
    if preprocess.resize != "clean":
        raise ValueError(f"unknown Preprocess.resize {preprocess.resize!r} (clean | none)")
    return resize_planes(planes, preprocess.size, preprocess.crop,
                         getattr(preprocess, "crop_from", 0), dtype)


def flops_per_image(h: int, w: int, size: int) -> int:
    """Multiply-adds of :func:`resize_planes` for one 3-channel image (for benchmarks)."""
    return 3 * (h * w * size + size * h * size)


# -- CPU half: PIL, per image ------------------------------------------------------------------
_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def _resize_channel(ch: np.ndarray, width: int, height: int, resample=Image.BICUBIC) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(ch, dtype=np.float32))  # mode "F"
    return np.asarray(img.resize((width, height), resample=resample))


def _target(h: int, w: int, size: int, crop: bool, crop_from: int, keep_aspect: bool
            ) -> tuple[int, int]:
    """(width, height) before any crop: torchvision ``Resize(S)`` rule for the shorter side."""
    if not (crop or keep_aspect):
        return size, size
    short = (crop_from or size) if crop else size
    if w <= h:
        return short, int(short * h / w)
    return int(short * w / h), short


def _centre_crop(out: np.ndarray, size: int) -> np.ndarray:
    th, tw = out.shape[-2:]
    top = int(round((th - size) / 2.0))
    left = int(round((tw - size) / 2.0))
    return out[:, top:top + size, left:left + size]


def pil_resize(arr: np.ndarray, size: int, crop: bool = False, crop_from: int = 0,
               keep_aspect: bool = False, interpolation: str = "bicubic") -> np.ndarray:
    """torchvision ``Resize`` (+ ``CenterCrop``) on the 8-bit PIL image, as dgm-eval and timm's
    eval transforms run it: PIL's antialiased filter on uint8 (re-quantised), 3×H'×W' float32
    in [0, 255]. Geometry as :func:`clean_resize`; ``keep_aspect`` keeps non-square shapes."""
    h, w = arr.shape[:2]
    tw, th = _target(h, w, size, crop, crop_from, keep_aspect)
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    if (tw, th) != (w, h):
        img = img.resize((tw, th), resample=_FILTERS[interpolation])
    out = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)
    if crop:
        out = _centre_crop(out, size)
    return np.ascontiguousarray(out, dtype=np.float32)


def clean_resize(arr: np.ndarray, size: int, crop: bool = False, crop_from: int = 0,
                 interpolation: str = "bicubic") -> np.ndarray:
    """Resize an H×W×3 uint8 image to a 3×S×S float32 array in [0, 255], clean-fid style.

    Each channel becomes a float32 PIL image (mode ``F``) resized with PIL's antialiased
    bicubic filter; values are clipped to [0, 255] and never re-quantised. Without ``crop`` this
    equals ``cleanfid.resize.make_resizer("PIL", False, "bicubic", (S, S))`` (Parmar et al.
    2022). With ``crop`` (CLIP-style) the shorter side is resized to ``S`` (the longer one to
    ``int(S * long / short)``, torchvision's ``Resize(S)`` rule) and the centre S×S is cut out
    with torchvision's ``CenterCrop`` offsets. ``crop_from`` (with ``crop``) resizes the shorter
    side to that size first, e.g. ``Resize(256)`` + ``CenterCrop(224)``. ``interpolation``:
    ``bicubic`` (default) or ``bilinear`` (timm models whose pretrained config says so).
    """
    h, w = arr.shape[:2]
    tw, th = _target(h, w, size, crop, crop_from, False)
    if (tw, th) == (w, h):
        out = arr.astype(np.float32).transpose(2, 0, 1)
    else:
        resample = _FILTERS[interpolation]
        out = np.stack([_resize_channel(arr[:, :, c], tw, th, resample) for c in range(3)])
        np.clip(out, 0, 255, out=out)
    if crop:
        out = _centre_crop(out, size)
    return np.ascontiguousarray(out, dtype=np.float32)


def prepare(arr: np.ndarray, preprocess) -> np.ndarray:
    """Apply an encoder's ``Preprocess`` to an H×W×3 uint8 image: 3×H'×W' float32 in [0, 255].

    ``resize == "clean"``: :func:`clean_resize` to ``preprocess.size`` (with its ``crop``);
    ``resize == "pil"``: :func:`pil_resize` (dgm-eval's transforms, ``--resize legacy``);
    ``resize == "none"``: native size (the encoder resizes in-network).
    """
    if preprocess.resize == "none":
        return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
    interpolation = getattr(preprocess, "interpolation", "bicubic")
    if preprocess.resize == "clean":
        return clean_resize(arr, preprocess.size, crop=preprocess.crop,
                            crop_from=getattr(preprocess, "crop_from", 0),
                            interpolation=interpolation)
    if preprocess.resize == "pil":
        return pil_resize(arr, preprocess.size, crop=preprocess.crop,
                          crop_from=preprocess.crop_from, keep_aspect=preprocess.keep_aspect,
                          interpolation=interpolation)
    raise ValueError(f"unknown Preprocess.resize {preprocess.resize!r} (clean | pil | none)")
def tf1_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1.x ``ResizeBilinear`` (``align_corners=False``, no half-pixel centres) to S×S.

    The resize inside the TF FID Inception graph (``classify_image_graph_def.pb``) that the
    ADM evaluator (Dhariwal & Nichol 2021, guided-diffusion ``evaluations/evaluator.py``) and
    TTUR feed images of their stored size. TF's kernel (``resize_bilinear_op.cc``) samples
    output pixel ``i`` at source position ``i · (in / out)`` computed in float32 (no half-pixel
    offset, unlike ``F.interpolate(align_corners=False)``), reads pixels ``floor`` and
    ``min(floor + 1, in − 1)``, and interpolates horizontally first, then vertically:
    ``top + (bottom − top) · dy`` with ``top = a + (b − a) · dx``. The same arithmetic, in the
    same float32 order, as torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``
    (bit-exact to TF on CPU according to its authors).

    Args:
        x: N×C×H×W float batch (values in any range; [0, 255] for the Inception graph).
        size: the output side S.

    Returns:
        N×C×S×S float32.
    """
    x = x.to(torch.float32)
    h, w = int(x.shape[-2]), int(x.shape[-1])

    def grid(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.arange(size, dtype=torch.float32, device=x.device) * torch.tensor(
            n_in / size, dtype=torch.float32, device=x.device)
        lo = pos.long()  # floor: positions are >= 0
        return lo, (lo + 1).clamp_max(n_in - 1), pos - lo.to(torch.float32)

    ylo, yhi, dy = grid(h)
    xlo, xhi, dx = grid(w)
    top, bottom = x.index_select(-2, ylo), x.index_select(-2, yhi)
    dx = dx.view(1, 1, 1, size)
    top = top.index_select(-1, xlo) + (top.index_select(-1, xhi) - top.index_select(-1, xlo)) * dx
    bottom = (bottom.index_select(-1, xlo)
              + (bottom.index_select(-1, xhi) - bottom.index_select(-1, xlo)) * dx)
    return top + (bottom - top) * dy.view(1, 1, size, 1)


def stylegan3_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """The resize of StyleGAN's TorchScript Inception detector to S×S (``grid_sample``).

    NVlabs' ``inception-2015-12-05.pkl`` (StyleGAN2-ADA/StyleGAN3 ``metrics``, EDM2
    ``calculate_metrics.py``) is a TorchScript translation of the TF FID graph; its forward
    resamples the float32 image with an affine grid: ``theta = eye(2, 3)`` (float32) whose x and
    y translations get ``1/W − 1/S`` and ``1/H − 1/S`` added in place, ``affine_grid(theta,
    [N, C, S, S], align_corners=False)``, then ``grid_sample(x, grid, "bilinear", "border",
    align_corners=False)``. Output pixel ``j`` then reads source position ``j · W / S``: TF1
    ``ResizeBilinear``'s positions (:func:`tf1_bilinear`), computed through the normalised grid
    in float32 and interpolated in one bilinear step, so the two differ by float32 round-off of
    the positions and of the interpolation (up to ~0.01 of 255 at 512 px). This function runs
    the detector's own sequence of operations, so its output is the detector's.

    Args:
        x: N×C×H×W float batch (values in [0, 255] for the Inception graph).
        size: the output side S.

    Returns:
        N×C×S×S float32.
    """
    x = x.to(torch.float32)
    n, c, h, w = (int(v) for v in x.shape)
    theta = torch.eye(2, 3, dtype=torch.float32, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    grid = torch.nn.functional.affine_grid(theta.unsqueeze(0).repeat(n, 1, 1), [n, c, size, size],
                                           align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                           align_corners=False)


def prepare_batch(batch: np.ndarray, preprocess) -> np.ndarray:
    """:func:`prepare` of every image of an N×H×W×3 uint8 batch: N×3×H'×W' float32.

    Identical to stacking :func:`prepare` per image. Where that is only a conversion (no
    resize: ``resize == "none"``, or a clean resize to the size the images already have,
    without a crop) it runs as one batched transpose-and-convert, without a loop per image.
    """
    n, h, w = batch.shape[:3]
    same = (preprocess.resize == "none" or
            (preprocess.resize == "clean" and not preprocess.crop and
             (h, w) == (preprocess.size, preprocess.size)))
    if same:
        out = np.empty((n, 3, h, w), dtype=np.float32)
        np.copyto(out, batch.transpose(0, 3, 1, 2), casting="unsafe")
        return out
    return np.stack([prepare(img, preprocess) for img in batch])

