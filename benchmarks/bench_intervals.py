"""Cost of ``score --bootstrap B``: one half-sampling round against one full evaluation, per metric.

    python benchmarks/bench_intervals.py --n 2000 --d 256 --rounds 20

For each metric: CPU seconds of one full evaluation (what every round cost before: the old
bootstrap recomputed every metric on a resample), CPU seconds per round of
:func:`evalkit.scoring.intervals.bootstrap_intervals` (including its one-off per-sample precomputation,
spread over the rounds), and their ratio. Process CPU time, single-threaded.

    python benchmarks/bench_intervals.py --all --examples --rounds 100 --check
    python benchmarks/bench_intervals.py --all --n 10000 --d 2048 --rounds 2 --no-warm

``--all``: every metric the default plan runs on a reference, samples and test set (the 64
example images through ``pixel``, or n random D-dimensional features read from feature
files), as ``score --bootstrap B`` runs them: one evaluation (CPU seconds, first in the
process as ``score`` runs it, and repeated), the bootstrap's one-off preparation, each metric
group's CPU seconds per round, and B = 100 (projected from the rounds run when fewer) as a
multiple of one evaluation. The target is B = 100 within 5× one evaluation.
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
    ap.add_argument("--examples", action="store_true",
                    help="with --all: the 64 example images through the pixel encoder")
    ap.add_argument("--no-warm", action="store_true", help="with --all: skip the repeated evaluation")
    ap.add_argument("--check", action="store_true",
                    help="with --all and --rounds 100: also time bootstrap_intervals end to end")
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
    if args.all:
        return _whole_plan(args, g, FeatureSet, bootstrap_intervals, RunRNG, compute_metrics)
    print(f"N = {args.n}, D = {args.d}, B = {args.rounds}")
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
    """One evaluation of every default metric the sets allow, then B half-sampling rounds:
    the one-off preparation and each metric group's rounds timed apart, B = 100 projected
    from them when fewer rounds were run."""
    import tempfile

    import numpy as np

    from evalkit.features.featureset import save_feature_file
    from evalkit.features.loader import load_features
    from evalkit.features.options import ExtractOptions
    from evalkit.scoring.intervals import plan_resamplers
    from evalkit.scoring.plan import plan_metrics

    if args.examples:  # the 64 example images through the pixel encoder, as `score` reads them
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples")
        opts = ExtractOptions(encoder="pixel", device="cpu", use_cache=False, quiet=True, workers=0)
        real, test, fake = (load_features(os.path.join(root, k), opts) for k in ("real", "test", "fake"))
        what = "the 64 example images, pixel encoder (D = 3,072)"
    else:  # random features written to feature files and read back, as `score` reads them
        g = np.random.default_rng(0)
        tmp = tempfile.mkdtemp(prefix="bench_intervals_")
        sets = []
        for role, scale, shift in (("real", 1.0, 0.0), ("test", 1.0, 0.0), ("fake", 1.1, 0.05)):
            path = os.path.join(tmp, f"{role}.npz")
            feats = (scale * g.random((args.n, args.d), dtype=np.float32) + shift).astype("float32")
            save_feature_file(FeatureSet({"features": feats}), path)
            sets.append(load_features(path))
        real, test, fake = sets
        what = f"random features N = {args.n:,}, D = {args.d:,} (feature files)"
    specs, _ = plan_metrics(None, fake, real, test)
    print(f"{what}; metrics: {','.join(s.name for s in specs)}", flush=True)

    t0 = time.process_time()
    values, _, _ = compute_metrics(specs, fake, real, test, rng=RunRNG(0), device="cpu")
    cold = time.process_time() - t0
    warm = None
    if not args.no_warm:
        t0 = time.process_time()
        compute_metrics(specs, fake, real, test, rng=RunRNG(0), device="cpu")
        warm = time.process_time() - t0
    print(f"one evaluation: {cold:.3g} cpu s (first in the process, as `score` runs it)"
          + (f", {warm:.3g} cpu s repeated" if warm is not None else ""), flush=True)

    run_rng = RunRNG(0)
    t0 = time.process_time()
    resamplers = plan_resamplers(specs, fake, real, test, run_rng=run_rng, device="cpu", rounds=args.rounds)
    prep = time.process_time() - t0
    print(f"bootstrap preparation (per-sample statistics, kernel tables, projections): {prep:.3g} cpu s",
          flush=True)
    print("| metric group | rounds run | cpu s per round |")
    print("|---|---|---|")
    per_round = 0.0
    for res in resamplers:
        gen = run_rng.generator("bootstrap", "resample", res.name)
        t0 = time.process_time()
        ok = True
        for _ in range(args.rounds):
            try:
                res.fn(gen)
            except Exception as err:  # noqa: BLE001 (as bootstrap_intervals: the group gets no interval)
                ok = False
                print(f"| {res.name.rsplit('.', 1)[-1]} | failed: {err} | |", flush=True)
                break
        if ok:
            each = (time.process_time() - t0) / args.rounds
            per_round += each
            print(f"| {res.name.rsplit('.', 1)[-1]} | {args.rounds} | {each:.3g} |", flush=True)
    total100 = prep + 100 * per_round
    kind = "measured" if args.rounds == 100 else f"projected from {args.rounds} rounds"
    print(f"B = 100 ({kind}): {total100:.4g} cpu s = {total100 / cold:.2f}x one evaluation"
          + (f" ({total100 / warm:.2f}x the repeated one)" if warm is not None else ""))
    if args.rounds == 100 and args.check:  # the library's own entry point, end to end
        t0 = time.process_time()
        ci = bootstrap_intervals(specs, fake, real, test, estimates=values, rounds=100, rng=RunRNG(0),
                                 device="cpu", progress=False)
        boot = time.process_time() - t0
        print(f"bootstrap_intervals(B = 100): {boot:.4g} cpu s = {boot / cold:.2f}x one evaluation; "
              f"intervals for {len(ci)} of {len(values)} keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
