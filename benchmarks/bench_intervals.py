"""Cost of ``score --bootstrap B``: one half-sampling round against one full evaluation, per metric.

    python benchmarks/bench_intervals.py --n 2000 --d 256 --rounds 20

For each metric: CPU seconds of one full evaluation (what every round cost before: the old
bootstrap recomputed every metric on a resample), CPU seconds per round of
:func:`evalkit.scoring.intervals.bootstrap_intervals` (including its one-off per-sample precomputation,
spread over the rounds), and their ratio. Process CPU time, single-threaded.

    python benchmarks/bench_intervals.py --n 64 --d 3072 --rounds 100 --all

``--all``: every metric the default plan runs (reference, samples and test set of n rows each,
as ``score --bootstrap B`` on the 64 example images with ``pixel``), one row for the whole
plan: one full evaluation against B rounds. The issue's target is B = 100 within 5× one
evaluation.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--metrics", default="precision,realism,authpct,fd,kd,is,vendi")
    ap.add_argument("--all", action="store_true", help="the whole default plan, with a test set")
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from evalkit.features.featureset import FeatureSet
    from evalkit.metrics import get_metric
    from evalkit.scoring.intervals import bootstrap_intervals
    from evalkit.scoring.rng import RunRNG
    from evalkit.scoring.run import compute_metrics

    g = np.random.default_rng(0)
    real = FeatureSet({"features": g.standard_normal((args.n, args.d)).astype(np.float32)})
    fake = FeatureSet({"features": (1.1 * g.standard_normal((args.n, args.d)) + 0.1).astype(np.float32),
                       "logits": g.standard_normal((args.n, 1008)).astype(np.float32)})
    print(f"N = {args.n}, D = {args.d}, B = {args.rounds}")
    if args.all:
        return _whole_plan(args, g, FeatureSet, bootstrap_intervals, RunRNG, compute_metrics)
    print("| metric | full evaluation cpu s | per round cpu s | round / evaluation |")
    print("|---|---|---|---|")
    for name in args.metrics.split(","):
        spec = get_metric(name)
        rng = RunRNG(0)
        t0 = time.process_time()
        values, _, _ = compute_metrics([spec], fake, real, None, rng=rng, device="cpu")
        full = time.process_time() - t0
        t0 = time.process_time()
        bootstrap_intervals([spec], fake, real, None, estimates=values, rounds=args.rounds, rng=rng,
                            device="cpu", progress=False)
        per = (time.process_time() - t0) / args.rounds
        print(f"| {name} | {full:.3g} | {per:.3g} | {per / full:.3f} |", flush=True)
    return 0


def _whole_plan(args, g, FeatureSet, bootstrap_intervals, RunRNG, compute_metrics) -> int:
    import numpy as np

    from evalkit.scoring.plan import plan_metrics

    def pixels(scale=1.0, shift=0.0):  # [0, 1] like the pixel encoder's features
        return FeatureSet({"features": (scale * g.random((args.n, args.d)) + shift).astype("float32")})

    g = np.random.default_rng(0)  # (the seed matters: some draws leave a ct cell empty)
    real, test, fake = pixels(), pixels(), pixels(1.1, 0.05)
    specs, _ = plan_metrics(None, fake, real, test)
    rng = RunRNG(0)
    t0 = time.process_time()
    values, _, _ = compute_metrics(specs, fake, real, test, rng=rng, device="cpu")
    full = time.process_time() - t0
    t0 = time.process_time()
    ci = bootstrap_intervals(specs, fake, real, test, estimates=values, rounds=args.rounds, rng=rng,
                             device="cpu", progress=False)
    boot = time.process_time() - t0
    print(f"metrics: {','.join(s.name for s in specs)}; intervals for {len(ci)} of {len(values)} keys")
    print("| full evaluation cpu s | B rounds cpu s | B rounds / evaluation |")
    print("|---|---|---|")
    print(f"| {full:.3g} | {boot:.3g} | {boot / full:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
