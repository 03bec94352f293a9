"""PNG decoders side by side: CPU time per image and whether every pixel equals evalkit's PIL path.

PNG is lossless, so a correct decoder gives the pixels PIL gives; this measures which decoder
is fastest on 256² PNGs (in one process, one thread, CPU time per image, best of ``--reps``) and
checks identical H×W×3 uint8 output against ``evalkit.images.decode.to_rgb_uint8(PIL)`` for every
PNG kind (RGB, RGBA, L, LA, P, P+tRNS, RGB+tRNS, 16-bit grey, 16-bit RGB, interlaced). The
kinds a decoder gets wrong are the ones :func:`evalkit.images.decode.decode_rgb` sends to PIL.

    python benchmarks/bench_decode.py [--n 200] [--size 256] [--reps 3]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evalkit.images.decode import decode_image, decode_rgb, to_rgb_uint8  # noqa: E402


def _png(arr: np.ndarray, mode: str, **save) -> bytes:
    buf = io.BytesIO()
    rgb = Image.fromarray(arr[:, :, :3])
    if mode == "RGB":
        img = rgb
    elif mode == "RGBA":
        img = Image.fromarray(arr)
    elif mode == "L":
        img = rgb.convert("L")
    elif mode == "LA":
        img = Image.merge("LA", (rgb.convert("L"), Image.fromarray(arr[:, :, 3])))
    elif mode == "P":
        img = rgb.quantize(64)
    elif mode == "I;16":
        img = Image.fromarray(arr[:, :, 0].astype(np.uint16) * 251)
    else:
        raise ValueError(mode)
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def _rgb16(arr: np.ndarray) -> bytes:
    import cv2  # PIL cannot write 16-bit RGB PNG

    ok, enc = cv2.imencode(".png", (arr[:, :, 2::-1].astype(np.uint16) * 257 + 3))
    return enc.tobytes()


def _interlaced_rgb(arr: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG written by hand (PIL does not write interlaced PNG)."""
    import struct
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(
            ">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    h, w = arr.shape[:2]
    raw = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                           (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
        sub = np.ascontiguousarray(arr[y0::dy, x0::dx, :3])
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def kinds(size: int, seed: int = 0) -> dict[str, bytes]:
    """One PNG per kind, smooth-ish content (compressible like real images)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size // 8, size // 8, 4), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC))
    arr = np.ascontiguousarray(arr)
    return {"RGB": _png(arr, "RGB"), "RGBA": _png(arr, "RGBA"), "L": _png(arr, "L"),
            "LA": _png(arr, "LA"), "P": _png(arr, "P"),
            "P+tRNS": _png(arr, "P", transparency=3),
            "RGB+tRNS": _png(arr, "RGB", transparency=(1, 2, 3)),
            "L+tRNS": _png(arr, "L", transparency=7),
            "I;16": _png(arr, "I;16"), "RGB16": _rgb16(arr),
            "RGB interlaced": _interlaced_rgb(arr)}


def decoders() -> dict[str, callable]:
    out = {"PIL": lambda b: to_rgb_uint8(decode_image(b, "x"))}
    try:
        import pyspng

        out["pyspng"] = lambda b: pyspng.load(b)
    except ImportError:
        pass
    try:
        import imagecodecs

        out["imagecodecs"] = lambda b: imagecodecs.png_decode(b)
        if hasattr(imagecodecs, "spng_decode"):
            out["imagecodecs-spng"] = lambda b: imagecodecs.spng_decode(b)
    except ImportError:
        pass
    try:
        import cv2

        def _cv(b):
            a = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED)
            return a[:, :, 2::-1] if a.ndim == 3 else a
        out["opencv"] = _cv
    except ImportError:
        pass
    out["evalkit.decode_rgb"] = lambda b: decode_rgb(b, "x")[0]
    return out


def _as_rgb(a: np.ndarray) -> np.ndarray | None:
    """A decoder's raw output as H×W×3 uint8 the way evalkit uses it (grey copied, alpha
    dropped); None when it is not 8-bit."""
    if a.dtype != np.uint8:
        return None
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] in (1, 2):
        return np.repeat(a[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def _cpu_per_image(fn, blobs: list[bytes], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        for b in blobs:
            fn(b)
        best = min(best, (time.process_time() - t0) / len(blobs))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="distinct RGB PNGs timed per decoder")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)
    decs = decoders()
    per_kind = kinds(args.size)
    print(f"identical pixels to evalkit's PIL path (to_rgb_uint8), {args.size}² PNG:")
    print("| kind | " + " | ".join(decs) + " |")
    print("|---|" + "---|" * len(decs))
    for kind, blob in per_kind.items():
        ref = to_rgb_uint8(decode_image(blob, kind))
        cells = []
        for fn in decs.values():
            try:
                got = _as_rgb(np.asarray(fn(blob)))
                cells.append("yes" if got is not None and got.shape == ref.shape
                             and np.array_equal(got, ref) else "NO")
            except Exception as exc:  # noqa: BLE001 - a decoder that fails is reported, not fatal
                cells.append(f"error ({type(exc).__name__})")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    blobs = [kinds(args.size, seed)["RGB"] for seed in range(args.n)]
    print(f"\nCPU time per image, {args.n} distinct RGB {args.size}² PNGs "
          f"({np.mean([len(b) for b in blobs]) / 1024:.0f} KiB each), one thread, "
          f"best of {args.reps}:")
    print("| decoder | CPU ms/img | × PIL |")
    print("|---|---:|---:|")
    times = {name: _cpu_per_image(fn, blobs, args.reps) for name, fn in decs.items()}
    import hashlib

    sha = _cpu_per_image(lambda b: hashlib.sha256(b).digest(), blobs, args.reps)
    for name, t in times.items():
        print(f"| {name} | {t * 1e3:.3f} | {times['PIL'] / t:.2f} |")
    print(f"| (sha256 of the bytes, the content fingerprint) | {sha * 1e3:.3f} | – |")


if __name__ == "__main__":
    main()
