"""Cost of ``evalkit leaderboard`` as the number of records grows (it used to be quadratic).

    python benchmarks/bench_leaderboard.py --records 1000,2000,10000

Writes N synthetic result records (one JSON file each, with intervals; 5 metric columns, one
protocol) into a temporary folder, then times :func:`evalkit.results.leaderboard.leaderboard`
(reading the files, building the table, rendering) for each format. Process CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def record(i: int) -> dict:
    from evalkit.results.record import SCHEMA

    return {"schema": SCHEMA, "name": f"model{i}", "created": "2026-01-01T00:00:00+00:00",
            "samples": {"source": f"/s/{i}", "n": 1000, "fingerprint": f"f{i}"},
            "reference": {"source": "/r", "name": "ref", "n": 5000, "fingerprint": "fpA"},
            "test": None,
            "encoder": {"name": "dinov2", "arch": "vitl14", "weights_sha256": "ab" * 32,
                        "preprocess": "{}"},
            "config": {"seed": 0, "nsample": None},
            "metrics": {"fd": 10.0 + i % 97, "precision": 0.5 + (i % 7) / 100, "recall": 0.3,
                        "kd": 0.01, "kd_std": 0.001},
            "metrics_ci": {"fd": [9.0 + i % 97, 11.0 + i % 97]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default="1000,2000,10000")
    ap.add_argument("--formats", default="md,csv,html,latex,json")
    args = ap.parse_args(argv)
    from evalkit.results.leaderboard import leaderboard

    print("| records | format | cpu s |")
    print("|---|---|---|")
    for n in [int(x) for x in args.records.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(n):
                (Path(tmp) / f"r{i:05d}.json").write_text(json.dumps(record(i)))
            for fmt in args.formats.split(","):
                t0 = time.process_time()
                leaderboard([str(Path(tmp) / "*.json")], fmt=fmt)
                print(f"| {n} | {fmt} | {time.process_time() - t0:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
