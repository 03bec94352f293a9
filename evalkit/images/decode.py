"""Image decoding and RGB conversion, the same way for every input.

Every image that enters an encoder is read in two steps, both here, then resized
(:mod:`evalkit.images.resize`):

1. :func:`decode_image` turns file bytes into a fully loaded PIL image; anything that is not a
   readable image (zero bytes, truncated data, a text file named ``.png``, a decompression bomb)
   is an :class:`~evalkit.errors.InputError` naming the file.
2. :func:`to_rgb_uint8` turns any PIL mode into an H×W×3 uint8 array by one documented rule
   per mode (see its docstring).
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from evalkit.errors import InputError

JPEG_FORMATS = ("JPEG", "MPO")


def decode_image(data: bytes, name: str) -> Image.Image:
    """Decode ``data`` into a fully loaded PIL image (first frame for multi-frame files).

    Args:
        data: the file's bytes.
        name: how to name the file in error messages (path or locator).

    Raises:
        InputError: zero-byte file, not an image, truncated or corrupt data, or more pixels than
            ``PIL.Image.MAX_IMAGE_PIXELS`` (PIL's decompression-bomb limit; its warning is an
            error here too).
    """
    if len(data) == 0:
        raise InputError(f"{name}: empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(f"{name}: refused as a decompression bomb ({exc})") from None
        except Image.UnidentifiedImageError:
            raise InputError(f"{name}: not an image file PIL can read") from None
        except Exception as exc:  # noqa: BLE001 — PIL raises many types; re-raised as InputError
            raise InputError(f"{name}: corrupt or truncated image ({reason(exc)})") from None
    return img


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR colour types a fast decoder returns exactly as to_rgb_uint8 reads PIL's image, at 8 bits:
# grey, RGB, grey+alpha, RGBA (palette and 1/2/4/16-bit images go through PIL's conversions)
_FAST_PNG_COLOUR_TYPES = frozenset({0, 2, 4, 6})
_fast_png = None  # resolved on first use: a bytes -> ndarray PNG decoder, or False


def _resolve_fast_png():
    """The fastest installed PNG decoder that gives PIL's pixels (benchmarks/bench_decode.py):
    pyspng (libspng), else OpenCV's libpng; False when neither is installed (PIL only)."""
    global _fast_png
    if _fast_png is None:
        _fast_png = False
        try:
            import pyspng

            _fast_png = pyspng.load
        except ImportError:
            try:
                import cv2

                def _cv2(data: bytes) -> np.ndarray:
                    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                    if a is None:
                        raise ValueError("cv2.imdecode failed")
                    return a[:, :, 2::-1] if a.ndim == 3 else a  # BGR(A) -> RGB
                _fast_png = _cv2
            except ImportError:
                pass
    return _fast_png


def _fast_png_rgb(data: bytes) -> np.ndarray | None:
    """H×W×3 uint8 of an 8-bit non-palette PNG by the fast decoder, or None (use PIL): not
    such a PNG, no fast decoder, above PIL's decompression-bomb limit, or any decoder error
    (PIL then decodes it or names what is wrong)."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    if data[24] != 8 or data[25] not in _FAST_PNG_COLOUR_TYPES:
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return None
    decode = _resolve_fast_png()
    if not decode:
        return None
    try:
        arr = np.asarray(decode(data))
    except Exception:  # noqa: BLE001 - any failure: PIL decides (and names the problem)
        return None
    if arr.dtype != np.uint8 or arr.shape[:2] != (height, width):
        return None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] in (1, 2):
        return np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def decode_rgb(data: bytes, name: str) -> tuple[np.ndarray, bool]:
    """File bytes -> (H×W×3 uint8, is_jpeg): :func:`decode_image` + :func:`to_rgb_uint8`.

    8-bit grey / grey+alpha / RGB / RGBA PNGs (with or without tRNS, interlaced or not) go
    through a faster lossless decoder when one is installed (``pip install "evalkit-gen[fast]"``:
    pyspng), whose pixels equal PIL's for those kinds (tests/test_extract_device.py,
    benchmarks/bench_decode.py); everything else, and anything that decoder refuses, is PIL's.

    Raises:
        InputError: as :func:`decode_image`.
    """
    arr = _fast_png_rgb(data)
    if arr is not None:
        return arr, False
    img = decode_image(data, name)
    return to_rgb_uint8(img), img.format in JPEG_FORMATS


def reason(exc: Exception) -> str:
    """A short reason for a decode or read failure, for one-line messages."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to an H×W×3 uint8 array, the same way every time.

    Rules (alpha is dropped, never composited: that is what ``convert("RGB")`` in clean-fid,
    pytorch-fid and dgm-eval does, so the colour values match theirs):

    * ``RGB``: as is. ``L``: grey copied to the three channels. ``1``: 0 -> 0, 1 -> 255.
    * ``P`` (with or without transparency), ``PA``: the palette colour of each pixel.
    * ``RGBA``, ``LA``, ``RGBa``, ``La``: colour channels, alpha dropped (premultiplied modes
      are un-premultiplied first, as PIL does).
    * ``I;16`` / ``I;16L`` / ``I;16B`` / ``I;16N`` (16-bit): rounded ``v / 257``, i.e. the full
      0..65535 range scaled to 0..255 (not clipped; 257·k maps back to k exactly).
    * ``I`` (32-bit int): taken as 16-bit data (how PIL stores 16-bit PNG/TIFF samples), clipped
      to 0..65535 then scaled like ``I;16``.
    * ``F`` (32-bit float): PIL's own ``F -> L`` convention (the 0..255 scale of ``L``): NaN ->
      0, rounded, clipped to 0..255.
    * ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and any other mode: PIL's ``convert("RGB")``.

    EXIF orientation is not applied (no anchor applies it).
    """
    mode = img.mode
    if mode == "RGB":
        arr = np.asarray(img)
    elif mode == "L":
        arr = np.repeat(np.asarray(img)[:, :, None], 3, axis=2)
    elif mode == "1":
        arr = np.repeat(np.asarray(img.convert("L"))[:, :, None], 3, axis=2)
    elif mode in ("P", "PA", "RGBA", "LA", "RGBa", "La"):
        arr = np.asarray(img.convert("RGBA"))[:, :, :3]
    elif mode.startswith("I;16") or mode == "I":
        v = np.asarray(img).astype(np.int64)
        v = np.clip(v, 0, 65535)
        grey = ((v + 128) // 257).astype(np.uint8)
        arr = np.repeat(grey[:, :, None], 3, axis=2)
    elif mode == "F":
        v = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        grey = np.clip(np.round(v), 0, 255).astype(np.uint8)
        arr = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        arr = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(arr, dtype=np.uint8)


def array_to_rgb_uint8(arr: np.ndarray) -> np.ndarray:
    """An H×W×C uint8 array (C = 1, 3 or 4) as H×W×3: grey copied, alpha dropped."""
    c = arr.shape[2]
    if c == 3:
        return np.ascontiguousarray(arr)
    if c == 1:
        return np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])
