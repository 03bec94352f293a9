"""Extraction images/s from tar shards and Parquet / Arrow tables vs the same images as files.

The same N encoded images (PNG and JPEG mixed, ``--size``²) are written four ways: a folder of
files, webdataset tar shards (``key.png`` + ``key.cls``), a Parquet file (image bytes + label,
row groups of 100 rows, as ``datasets`` writes) and a ``datasets`` ``save_to_disk`` folder
(memory-mapped Arrow; skipped without ``datasets``). Each source is resolved and run through
the ``pixel`` encoder (decode + resize bound, as on a GPU) by :func:`evalkit.features.extract`
with the same workers, in a fresh process; best of ``--reps`` by CPU time. Wall images/s counts
resolve (scan, fingerprint) and extraction; the CPU seconds of the whole process tree (imports,
workers) are the comparison that a loaded machine does not blur.

    python benchmarks/bench_sources.py [--n 2000] [--size 256] [--workers 2] [--reps 3]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import child_main, format_table, measure  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _encoded(n: int, size: int) -> list[tuple[str, bytes, int]]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    out = []
    for k in range(n):  # smooth-ish images: realistic PNG / JPEG sizes
        img = Image.fromarray(np.roll(base, k, axis=0)).resize((size, size), Image.BILINEAR)
        buf = io.BytesIO()
        fmt = "JPEG" if k % 2 else "PNG"
        img.save(buf, format=fmt, quality=90)
        out.append((f"{k:06d}.{'jpg' if k % 2 else 'png'}", buf.getvalue(), k % 10))
    return out


def write_sources(root: Path, n: int, size: int) -> dict[str, str]:
    images = _encoded(n, size)
    (root / "folder").mkdir()
    for name, data, _ in images:
        (root / "folder" / name).write_bytes(data)
    (root / "shards").mkdir()
    per = max(1, n // 4)
    for s in range(0, n, per):
        with tarfile.open(root / "shards" / f"part-{s // per:06d}.tar", "w") as tf:
            for name, data, cls in images[s:s + per]:
                for member, payload in ((name, data), (name.split(".")[0] + ".cls",
                                                       str(cls).encode())):
                    info = tarfile.TarInfo(member)
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
    out = {"folder": str(root / "folder"), "tar": str(root / "shards")}
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return out
    table = pa.table({"image": [{"bytes": d, "path": None} for _, d, _ in images],
                      "label": [c for *_, c in images]})
    pq.write_table(table, root / "images.parquet", row_group_size=100)
    out["parquet"] = str(root / "images.parquet")
    try:
        import datasets
    except ImportError:
        return out
    datasets.Dataset(table).save_to_disk(str(root / "hf"))
    out["arrow (datasets)"] = str(root / "hf")
    return out


def run_task(task: dict) -> dict:
    sys.path.insert(0, ROOT)
    import torch

    from evalkit.encoders import build_encoder
    from evalkit.features.extract import extract
    from evalkit.images.sources import resolve_source

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    src = resolve_source(task["source"])
    t1 = time.perf_counter()
    fs = extract(src, build_encoder("pixel"), batch_size=64, device="cpu",
                 workers=task["workers"], quiet=True)
    t2 = time.perf_counter()
    return {"n": fs.n, "resolve_s": t1 - t0, "extract_s": t2 - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("EVALKIT_BENCH_DIR")) as tmp:
        sources = write_sources(Path(tmp), args.n, args.size)
        rows = []
        for kind, path in sources.items():
            best = None
            for _ in range(args.reps):
                m = measure(__file__, {"kind": "run", "source": path, "workers": args.workers})
                if m.get("error"):
                    raise SystemExit(f"{kind}: {m['error']}")
                if best is None or m["process_cpu_s"] < best["process_cpu_s"]:
                    best = m
            m = best
            total = m["resolve_s"] + m["extract_s"]
            rows.append({"source": kind, "n": m["n"], "resolve_s": m["resolve_s"],
                         "extract_s": m["extract_s"], "img_per_s": m["n"] / total,
                         "cpu_s": m["process_cpu_s"]})
        folder = rows[0]
        for r in rows:
            r["vs_folder"] = r["img_per_s"] / folder["img_per_s"]
            r["cpu_vs_folder"] = folder["cpu_s"] / r["cpu_s"]
        print(f"{args.n} images {args.size}² (PNG/JPEG), pixel encoder, CPU, "
              f"workers={args.workers}, best of {args.reps}")
        print(format_table(rows, [("source", "source"), ("n", "images", "d"),
                                  ("resolve_s", "resolve s", ".3f"),
                                  ("extract_s", "extract s", ".2f"),
                                  ("img_per_s", "images/s", ".0f"),
                                  ("vs_folder", "× folder", ".2f"),
                                  ("cpu_s", "cpu s (all processes)", ".2f"),
                                  ("cpu_vs_folder", "× folder (cpu)", ".2f")]))
        print("× folder > 1: faster than the folder. On a loaded machine compare the cpu "
              "columns (the whole process tree's CPU seconds, imports included); best run "
              "by CPU time.")


if __name__ == "__main__":
    if not child_main({"run": run_task}):
        main()
