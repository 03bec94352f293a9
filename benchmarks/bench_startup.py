"""Start-up time of the light commands: `evalkit --help`, `check`, `metrics`, `leaderboard`,
`encoders`, each in a fresh process, beside `python -c "import torch"` (what every command
paid before torch was imported lazily).

    python benchmarks/bench_startup.py [--repeat 5]

Prints per command the median wall and CPU seconds (CPU: user+system of the child, which
barely moves with other load on the machine), the ratio to the torch import, and whether the
command imported torch. Target (issue 13): `--help` and `check` under 1 s.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECORD = {"schema": "evalkit.result/1", "name": "m", "samples": {"n": 10},
          "reference": {"fingerprint": "f"}, "encoder": {"name": "e"}, "config": {},
          "metrics": {"fd": 1.0, "precision": 0.5}}

# Runs the CLI in this process as `python -m evalkit` does, then says whether torch came in.
CHILD = ("import runpy, sys; sys.argv = ['evalkit'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('evalkit', run_name='__main__', alter_sys=True)\n"
         "except SystemExit:\n    pass\n"
         "sys.stderr.write('TORCH=%d\\n' % ('torch' in sys.modules))")


def run_once(argv: list[str], cwd: str) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("a.json", "b.json"):
            Path(tmp, name).write_text(json.dumps(RECORD))
        cases = {
            "import torch": [sys.executable, "-c", "import torch"],
            "evalkit --help": ["--help"],
            "evalkit check": ["check", "a.json", "--baseline", "b.json"],
            "evalkit metrics": ["metrics"],
            "evalkit leaderboard": ["leaderboard", "a.json", "b.json"],
            "evalkit encoders": ["encoders"],
        }
        rows = []
        for label, argv in cases.items():
            if argv[0] != sys.executable:
                argv = [sys.executable, "-c", CHILD, *argv]
            runs = [run_once(argv, tmp) for _ in range(args.repeat)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            torch = "yes" if label == "import torch" or "TORCH=1" in runs[-1][2] else "no"
            rows.append((label, wall, cpu, torch))
    base_wall, base_cpu = rows[0][1], rows[0][2]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeat}")
    print(f"{'command':<22}{'wall s':>8}{'cpu s':>8}{'× torch wall':>14}{'× torch cpu':>13}  torch?")
    for label, wall, cpu, torch in rows:
        print(f"{label:<22}{wall:>8.2f}{cpu:>8.2f}{wall / base_wall:>14.2f}{cpu / base_cpu:>13.2f}"
              f"  {torch}")


if __name__ == "__main__":
    main()
