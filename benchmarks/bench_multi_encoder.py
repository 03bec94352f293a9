"""Several encoders, one decode (issue 10): CPU time of one extraction pass running every
encoder (`evalkit score --encoder a,b`) vs one pass per encoder (dgm-eval's way: it reads
every image once per encoder).

Each configuration runs in its own process (:func:`_common.measure`), single-threaded, with
the decoding in that process (``workers=0``), on the same PNGs; the child reports the CPU
seconds of the extraction calls alone (encoders built beforehand). Encoders: the weight-free
``pixel`` (32×32, so its cost is almost all read + decode + resize) and a random-weight FID
Inception (299×299), and ``pixel`` twice (a network as cheap as a GPU's forward pass, where
reading and decoding dominate). The saving is one read + decode per image and extra encoder
(and one resize when the input sizes agree).

    python benchmarks/bench_multi_encoder.py [--n 100] [--size 256]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import child_main, cpu_seconds, measure

ENCODERS = ("pixel", "inception")


def _build(name: str):
    from evalkit.encoders import build_encoder

    return build_encoder(name, random_init=name != "pixel")


def run_task(task: dict) -> dict:
    import torch

    from evalkit.features.extract import extract
    from evalkit.images.sources import resolve_source

    torch.set_num_threads(1)
    src = resolve_source(task["images"])
    encoders = [_build(n) for n in task["encoders"]]
    kw = {"batch_size": 25, "device": "cpu", "workers": 0, "quiet": True}
    extract(src, encoders[0], **kw)  # warm-up: page cache, allocator, lazy imports
    t0 = cpu_seconds()
    if task["together"]:
        extract(src, encoders, **kw)
    else:
        for enc in encoders:
            extract(src, enc, **kw)
    return {"cpu_s": cpu_seconds() - t0}


def _write_pngs(root: Path, n: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):  # smooth gradients plus noise: PNGs that compress like photos, roughly
        base = np.stack([xx, yy, (xx + yy) / 2], -1) * rng.uniform(100, 255, 3)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i:04d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2, help="best of R runs per configuration")
    args = ap.parse_args()
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pairs = (list(ENCODERS), ["pixel", "pixel"])  # the second: a network as cheap as on a GPU

    def cpu(images: Path, encs: list[str], together: bool) -> float:
        best = None
        for _ in range(args.repeat):
            m = measure(__file__, {"kind": "run", "images": str(images), "encoders": encs,
                                   "together": together}, env=env)
            if m.get("error"):
                raise SystemExit(f"{encs}: {m['error']}")
            best = m["cpu_s"] if best is None else min(best, m["cpu_s"])
        return best

    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "imgs"
        _write_pngs(images, args.n, args.size)
        rows = [(encs, cpu(images, encs, False), cpu(images, encs, True)) for encs in pairs]
    print(f"{args.n} PNGs {args.size}², 1 thread, workers=0; CPU seconds of the extraction, "
          f"best of {args.repeat}")
    print("| encoders | separate runs cpu s | one pass cpu s | × (separate / one pass) |")
    print("|---|---:|---:|---:|")
    for encs, sep, tog in rows:
        print(f"| {','.join(encs)} | {sep:.2f} | {tog:.2f} | {sep / tog:.2f}× |")


if __name__ == "__main__":
    if not child_main({"run": run_task}):
        main()
