"""Extraction throughput with 1 and several processes under torchrun (torch.distributed).

What it does (issue 5, "Speed"):

1. writes ``--n`` deterministic, varied PNG images (``--size``², default 1,000 at 128²) into
   ``--data-dir`` (reused when present with the same count and size) or a temporary folder;
2. saves seeded random FID-Inception weights (pytorch-fid's state-dict format) for the
   ``inception`` rows, so no download is needed;
3. for each encoder (``pixel``, ``inception``) and each process count in ``--procs``, runs

       python -m torch.distributed.run --nproc_per_node=K -m evalkit features DATA -o OUT.npz \\
           --encoder E --device DEV --workers W --batch-size B --cache-dir FRESH --quiet

   in a fresh process tree with ``OMP_NUM_THREADS`` = cores // K (every row uses all cores),
   and reads rank 0's extraction seconds from the feature file's ``meta["extract_s"]``: from
   the cache lookup to the assembled FeatureSet, i.e. extraction by every rank, gathering of
   the shards on rank 0 and assembly (the process start, imports and rendezvous are in
   ``wall_s`` only);
4. checks that every K gives the same features as K = 1 (max relative difference);
5. prints a table: images/s (``n / extract_s``), speed-up over one process, wall seconds.

The ``inception`` rows use the first ``--n-inception`` images (default 256: four shards of 64).

Usage::

    python benchmarks/bench_distributed.py                          # CPU, gloo, 1 and 2 procs
    python benchmarks/bench_distributed.py --procs 1,2,4 --device cuda --n 50000 \\
        --n-inception 50000 --workers 8 --batch-size 200 --data-dir /data/bench50k
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_images(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` PNGs of smooth random colour fields plus noise (compress like photos, roughly)."""
    from PIL import Image

    stamp = folder / ".bench-images.json"
    want = {"n": n, "size": size, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, size=(size, size, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.png")
    stamp.write_text(json.dumps(want))
    return folder


def subset(folder: Path, n: int, target: Path) -> Path:
    """A folder of the first ``n`` images of ``folder`` (symlinks)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for p in sorted(folder.glob("*.png"))[:n]:
        (target / p.name).symlink_to(p.resolve())
    return target


def random_inception_weights(path: Path) -> Path:
    """Seeded random FID-Inception weights, saved as pytorch-fid's state dict."""
    import torch

    from evalkit.encoders import build_encoder

    torch.manual_seed(0)
    enc = build_encoder("inception", random_init=True)
    torch.save(enc.net.state_dict(), path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(data: Path, encoder: str, procs: int, args, work: Path, weights: Path | None):
    """One `evalkit features` run under torchrun with ``procs`` processes; its numbers."""
    out = work / f"{encoder}-{procs}.npz"
    cache = work / f"cache-{encoder}-{procs}"
    shutil.rmtree(cache, ignore_errors=True)
    threads = max(1, (os.cpu_count() or 1) // procs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: gloo on the loopback
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
           f"--master_port={free_port()}", "-m", "evalkit", "features", str(data), "-o",
           str(out), "--encoder", encoder, "--device", args.device, "--workers",
           str(args.workers), "--batch-size", str(args.batch_size), "--cache-dir", str(cache),
           "--quiet"]
    if weights is not None:
        cmd += ["--weights", str(weights)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    with np.load(out, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        feats = np.asarray(z["features"])
    shutil.rmtree(cache, ignore_errors=True)
    return {"encoder": encoder, "procs": procs, "threads": threads, "n": int(feats.shape[0]),
            "extract_s": float(meta["extract_s"]), "wall_s": wall,
            "forward_s": float(meta.get("timing", {}).get("forward_s", 0.0)),
            "shards": meta.get("shards", {}).get("count"), "features": feats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="images for the pixel rows")
    ap.add_argument("--n-inception", type=int, default=256, help="images for inception")
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--procs", default="1,2", help="process counts, comma-separated")
    ap.add_argument("--encoders", default="pixel,inception")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--data-dir", default=None, help="image folder to (re)use")
    args = ap.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    encoders = args.encoders.split(",")
    work = Path(tempfile.mkdtemp(prefix="evalkit-bench-dist-"))
    try:
        data = write_images(Path(args.data_dir) if args.data_dir else work / "images",
                            args.n, args.size)
        rows = []
        for encoder in encoders:
            weights, src = None, data
            if encoder == "inception":
                weights = random_inception_weights(work / "pt_inception-random.pth")
                src = subset(data, min(args.n_inception, args.n), work / "inception-images")
            base = None
            for k in procs:
                r = run_one(src, encoder, k, args, work, weights)
                base = base or r
                denom = np.maximum(np.abs(base["features"]), 1e-6)
                r["max_rel_diff"] = float(np.max(np.abs(r["features"] - base["features"])
                                                 / denom))
                r["speedup"] = base["extract_s"] / r["extract_s"]
                rows.append(r)
                print(f"  {encoder} x{k}: {r['n'] / r['extract_s']:.1f} img/s", file=sys.stderr)
        print(table(rows, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(rows, args) -> str:
    import torch

    head = (f"evalkit extraction under torchrun ({args.device}, "
            f"{'nccl+gloo' if args.device.startswith('cuda') else 'gloo'}), "
            f"{os.cpu_count()} cores, torch {torch.__version__}, {args.size}² PNGs, "
            f"batch {args.batch_size}, {args.workers} workers per process\n\n")
    lines = ["| encoder | processes | threads/proc | images | shards | extract s | images/s "
             "| speed-up | forward s (sum over ranks) | wall s | max rel diff vs 1 proc |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['procs']} | {r['threads']} | {r['n']} | "
                     f"{r['shards']} | {r['extract_s']:.2f} | {r['n'] / r['extract_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['forward_s']:.2f} | {r['wall_s']:.1f} | "
                     f"{r['max_rel_diff']:.1e} |")
    return head + "\n".join(lines)


if __name__ == "__main__":
    main()
