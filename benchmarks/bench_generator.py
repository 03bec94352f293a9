"""A generator as a source: evalkit's time beyond the generator and the encoder, the floor of
the bytes it must move, memory against n, and the write-PNGs-then-score path it replaces.

One process, one thread, CPU. The generator is as cheap as one can be (already-made uint8
tensors: a pool of distinct images indexed by the batch seed), so what is left is evalkit's
own cost. For each encoder (the weight-free ``pixel`` and a random-weight FID Inception):

* ``generator``: the generator calls alone, over the same batches;
* ``resize``: the encoder's preprocessing of every batch alone
  (:func:`evalkit.images.resize.prepare_batch`: a batched uint8→float32 conversion for
  ``pixel``, whose 32×32 samples need no resize; PIL's clean resize per image to 299 px for
  Inception; the same work scoring the same PNGs does);
* ``forward``: the encoder's forward pass alone on the already-preprocessed batches;
* ``evalkit``: :func:`evalkit.features.loader.load_generated` (what ``evalkit.score(generator=)``
  runs: sample, quantise to H×W×3 uint8, hash each image for the content fingerprint,
  preprocess, encode, store rows by shard, assemble the FeatureSet);
* ``overhead``: evalkit − (generator + resize + forward), and its share of evalkit;
* ``floor``: the bytes that path must move whatever the code: the N×3×H×W → N×H×W×3 uint8
  copy, one sha256 per image, and one copy of the feature rows into a fresh N×D float32
  matrix, each timed bare (numpy/hashlib, no evalkit);
* ``PNG path``: writing the same images as PNG files, then extracting the folder (read,
  decode, resize, encode): the path a generator source replaces.

``--memory``: peak resident memory of ``load_generated`` above the process's memory before
the call (a fresh process per row, pixel encoder), keeping the rows vs reducing them to
running float64 sums (``moments=("features",)``, what fd-only scoring does; applied only when
the rows would outweigh the D×D sums, N > 2·D = 6144 for pixel).

    python benchmarks/bench_generator.py [--n 10000] [--n-inception 200] [--size 32] [--memory]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evalkit.encoders import build_encoder
from evalkit.features.extract import extract
from evalkit.features.generate import GeneratedSource
from evalkit.features.loader import load_generated
from evalkit.features.options import ExtractOptions
from evalkit.images.resize import prepare_batch
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
    """The least CPU time (this process, one thread) of ``repeats`` calls: on a shared box the
    wall clock measures the other processes too."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def options(encoder_name: str) -> ExtractOptions:
    return ExtractOptions(encoder=encoder_name, batch_size=BATCH, device="cpu", workers=0,
                          use_cache=False, quiet=True)


def run(encoder_name: str, n: int, size: int, repeats: int) -> dict:
    torch.set_num_threads(1)
    enc = build_encoder(encoder_name, random_init=encoder_name != "pixel").eval()
    gen = make_generator(size)
    src = GeneratedSource.make(gen, n, batch_size=BATCH)
    batches = list(src.batches(src.plan))
    nchw = [gen(hi - lo, seed=lo) for lo, hi in batches]
    images = [src.sample(lo, hi).numpy() for lo, hi in batches]  # N×H×W×3 uint8 per batch
    inputs = [torch.from_numpy(prepare_batch(b, enc.preprocess)) for b in images]
    dims = {k: int(v) for k, v in enc.outputs.items()}

    def gen_only():
        for lo, hi in batches:
            src.fn(hi - lo, seed=lo)

    def resize_only():
        for b in images:
            prepare_batch(b, enc.preprocess)

    @torch.inference_mode()
    def forward_only():
        for x in inputs:
            enc(x.float())

    def evalkit_path():
        load_generated(src, options(encoder_name), encoder=enc)

    def floor():
        out = {k: np.empty((n, d), np.float32) for k, d in dims.items()}
        rows = {k: np.ones((BATCH, d), np.float32) for k, d in dims.items()}
        at = 0
        for x in nchw:
            hwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
            for img in hwc:
                hashlib.sha256(img.tobytes()).hexdigest()
            for k in dims:
                out[k][at:at + len(x)] = rows[k][:len(x)]
            at += len(x)

    r = {"encoder": encoder_name, "n": n}
    evalkit_path()  # warm-up
    r["generator"] = best_of(gen_only, repeats)
    r["resize"] = best_of(resize_only, repeats)
    r["forward"] = best_of(forward_only, repeats)
    r["evalkit"] = best_of(evalkit_path, repeats)
    r["floor"] = best_of(floor, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pngs"
        folder.mkdir()
        t0 = time.process_time()
        k = 0
        for b in images:
            for im in b:
                Image.fromarray(im).save(folder / f"{k:06d}.png")
                k += 1
        r["png_write"] = time.process_time() - t0
        folder_src = resolve_source(folder)
        r["png_score"] = best_of(lambda: extract(folder_src, enc, batch_size=BATCH,
                                                 device="cpu", workers=0, quiet=True), repeats)
    r["overhead"] = r["evalkit"] - r["generator"] - r["resize"] - r["forward"]
    return r


def _rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


def _peak_kb() -> int:
    """The resident high-water mark (VmHWM) since the last :func:`_reset_peak`."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # Linux: "5" resets VmHWM to VmRSS
        fh.write("5")


def memory_probe(n: int, streamed: bool, size: int) -> dict:
    """One row of the memory table, in this (fresh) process."""
    torch.set_num_threads(1)
    enc = build_encoder("pixel").eval()
    src = GeneratedSource.make(make_generator(size), n, batch_size=BATCH)
    load_generated(GeneratedSource.make(make_generator(size), 200, batch_size=BATCH),
                   options("pixel"), encoder=enc)  # warm-up: lazy imports, BLAS buffers
    before = _rss_kb()
    _reset_peak()
    t0 = time.perf_counter()
    fs = load_generated(src, options("pixel"), encoder=enc,
                        moments=("features",) if streamed else None)
    seconds = time.perf_counter() - t0
    peak = _peak_kb()
    return {"n": n, "asked": "moments" if streamed else "rows",
            "kept": "rows" if fs.has_samples else "moments (D×D)",
            "peak_mb": (peak - before) / 1024, "seconds": seconds}


def memory_table(ns: list[int], size: int) -> list[dict]:
    rows = []
    for streamed in (False, True):
        for n in ns:
            out = subprocess.run([sys.executable, __file__, "--probe", str(n),
                                  "--size", str(size)] + (["--streamed"] if streamed else []),
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--n-inception", type=int, default=200)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--memory", action="store_true", help="add the memory-against-n table")
    ap.add_argument("--memory-n", default="2000,7000,20000,50000")
    ap.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--streamed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(memory_probe(args.probe, args.streamed, args.size)))
        return
    rows = [run("pixel", args.n, args.size, args.repeats)] if args.n else []
    if args.n_inception:
        rows.append(run("inception", args.n_inception, args.size, args.repeats))
    print(f"{args.size}×{args.size} uint8 samples, batch {BATCH}, 1 thread, CPU; CPU seconds of "
          f"this process, best of {args.repeats} (µs/img in brackets)")
    print("| encoder | n | generator | resize | forward | evalkit | overhead (% of evalkit) "
          "| floor | overhead − floor | PNG write | PNG score | PNG path total |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per = 1e6 / r["n"]
        print(f"| {r['encoder']} | {r['n']} | {r['generator']:.3f} | {r['resize']:.3f} | "
              f"{r['forward']:.3f} | {r['evalkit']:.3f} | {r['overhead']:.3f} "
              f"({100 * r['overhead'] / r['evalkit']:.1f} %, {r['overhead'] * per:.1f} µs) | "
              f"{r['floor']:.3f} ({r['floor'] * per:.1f} µs) | "
              f"{r['overhead'] - r['floor']:.3f} ({(r['overhead'] - r['floor']) * per:.1f} µs) | "
              f"{r['png_write']:.3f} | {r['png_score']:.3f} | "
              f"{r['png_write'] + r['png_score']:.3f} |")
    if args.memory:
        print("\nPeak RSS (VmHWM) of load_generated above the process before it (pixel, "
              "D = 3072, fresh process per row); MB; rows of n images: n × 12 kB")
        print("| n | asked for | kept | peak MB | seconds |")
        print("|---:|---|---|---:|---:|")
        for m in memory_table([int(v) for v in args.memory_n.split(",")], args.size):
            print(f"| {m['n']} | {m['asked']} | {m['kept']} | {m['peak_mb']:.1f} | "
                  f"{m['seconds']:.2f} |")


if __name__ == "__main__":
    main()
