"""A generator as a source: evalkit's time beyond the generator and the encoder, and the
write-PNGs-then-score path it replaces.

One process, one thread, CPU. The generator is as cheap as one can be (already-made uint8
tensors: a pool of distinct images indexed by the batch seed), so what is left is evalkit's
own cost. For each encoder (the weight-free ``pixel`` and a random-weight FID Inception):

* ``generator``: the generator calls alone, over the same batches;
* ``forward``: the encoder's forward pass alone on the already-preprocessed batches;
* ``resize``: the clean PIL resize of every image alone (:func:`evalkit.images.resize.prepare`;
  the same work scoring the same PNGs does, so not an overhead of the generator path);
* ``evalkit``: :func:`evalkit.features.extract.extract` of a
  :class:`~evalkit.features.generate.GeneratedSource` (sample, quantise, hash, resize, encode,
  store by shard);
* ``overhead``: evalkit − (generator + resize + forward), and its share of evalkit;
* ``PNG path``: writing the same images as PNG files, then extracting the folder (read,
  decode, resize, encode): the path a generator source replaces.

    python benchmarks/bench_generator.py [--n 10000] [--n-inception 200] [--size 32]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evalkit.encoders import build_encoder
from evalkit.features.extract import extract
from evalkit.features.generate import GeneratedSource
from evalkit.images.resize import prepare
from evalkit.images.sources import resolve_source

BATCH = 100
POOL = 512


def make_generator(size: int):
    rng = np.random.default_rng(0)
    pool = torch.from_numpy(rng.integers(0, 256, (POOL, 3, size, size), dtype=np.uint8))

    def generator(batch_size: int, *, seed: int, labels=None) -> torch.Tensor:
        start = seed % POOL
        return pool[(torch.arange(batch_size) + start) % POOL]

    return generator


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(encoder_name: str, n: int, size: int, repeats: int) -> dict:
    torch.set_num_threads(1)
    enc = build_encoder(encoder_name, random_init=encoder_name != "pixel").eval()
    gen = make_generator(size)
    src = GeneratedSource.make(gen, n, batch_size=BATCH)
    batches = list(src.batches(src.plan))
    images = [src.sample(lo, hi).numpy() for lo, hi in batches]  # N×H×W×3 uint8 per batch
    inputs = [torch.from_numpy(np.stack([prepare(im, enc.preprocess) for im in b]))
              for b in images]

    def gen_only():
        for lo, hi in batches:
            src.fn(hi - lo, seed=lo)

    def resize_only():
        for b in images:
            np.stack([prepare(im, enc.preprocess) for im in b])

    @torch.inference_mode()
    def forward_only():
        for x in inputs:
            enc(x.float())

    def evalkit_path():
        extract(src, enc, batch_size=BATCH, device="cpu", quiet=True, shards=src.plan)

    r = {"encoder": encoder_name, "n": n}
    evalkit_path()  # warm-up
    r["generator"] = best_of(gen_only, repeats)
    r["resize"] = best_of(resize_only, repeats)
    r["forward"] = best_of(forward_only, repeats)
    r["evalkit"] = best_of(evalkit_path, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pngs"
        folder.mkdir()
        t0 = time.perf_counter()
        k = 0
        for b in images:
            for im in b:
                Image.fromarray(im).save(folder / f"{k:06d}.png")
                k += 1
        r["png_write"] = time.perf_counter() - t0
        folder_src = resolve_source(folder)
        r["png_score"] = best_of(lambda: extract(folder_src, enc, batch_size=BATCH,
                                                 device="cpu", workers=0, quiet=True), repeats)
    r["overhead"] = r["evalkit"] - r["generator"] - r["resize"] - r["forward"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--n-inception", type=int, default=200)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rows = [run("pixel", args.n, args.size, args.repeats)]
    if args.n_inception:
        rows.append(run("inception", args.n_inception, args.size, args.repeats))
    print(f"{args.size}×{args.size} uint8 samples, batch {BATCH}, 1 thread, CPU, best of "
          f"{args.repeats}; seconds")
    print("| encoder | n | generator | resize | forward | evalkit | overhead (% of evalkit) "
          "| PNG write | PNG score | PNG path total |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['encoder']} | {r['n']} | {r['generator']:.3f} | {r['resize']:.3f} | "
              f"{r['forward']:.3f} | {r['evalkit']:.3f} | {r['overhead']:.3f} "
              f"({100 * r['overhead'] / r['evalkit']:.1f} %) | {r['png_write']:.3f} | "
              f"{r['png_score']:.3f} | {r['png_write'] + r['png_score']:.3f} |")


if __name__ == "__main__":
    main()
