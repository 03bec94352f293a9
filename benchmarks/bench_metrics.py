"""Metric speed and memory: evalkit vs the anchor libraries on the same seeded feature arrays.

Issue 2, "Scale and speed". For every metric and every (N, D) asked for, evalkit's metric
function and its anchor run on *the same* arrays, each in its own fresh Python process
(``_common.measure``), and the script prints wall time, CPU time and peak resident memory of
both, the ratios anchor/evalkit, the issue's target beside each ratio and whether it is met.

Anchors (see :mod:`anchors_naive` for the ones written out here):

=================  ====================================================================
fd, sfid           pytorch-fid ``calculate_frechet_distance`` on ``np.mean``/``np.cov``
fd_inf             dgm-eval ``compute_FD_infinity`` (15 × np.cov + scipy sqrtm), naive
kd                 torch-fidelity ``kid_features_to_metric`` (100 subsets of 1000)
is                 torch-fidelity ``isc_features_to_metric`` on the same logits
prdc               ``prdc.compute_prdc`` (k=5), vs evalkit with no subsampling
realism            dgm-eval's N×N realism (k=3 on both sides), naive
vendi              vendi-score ``score_dual`` (D×D) and dgm-eval's N×N cosine kernel
authpct            dgm-eval ``compute_authpct``: two dense ``torch.cdist``, naive
ct                 dgm-eval ``compute_CTscore`` (sklearn PCA/KMeans/NN, scipy MWU), naive
fls, fls_pog       dgm-eval's FLS on CPU: 100 Adam steps over dense n×n matrices, naive
cmmd               google-research/cmmd's dense float32 kernels, naive (no target)
sw_approx          evalkit only (no anchor)
=================  ====================================================================

Memory is the kernel's peak resident set (``VmHWM``) of the measuring process, reset with
``/proc/self/clear_refs`` once the input arrays exist, so it is the arrays (shown as
"data") plus what the computation adds. Before an anchor runs, its memory is predicted from
the matrices it builds (e.g. prdc: N×N float32 distances + N×N int64 ``argpartition``,
≈12·N² bytes); when that exceeds ``--mem-limit-gib`` (or the memory free right now), or its
predicted time exceeds ``--anchor-max-s``, it is not run and the table shows the estimate
(time scaled from the closest measured size of the same anchor: N² for the N×N
formulations, N³ for the N×N eigendecomposition, 15 × the FD anchor for FD∞).

Inputs are synthetic but structured (a 32-dimensional latent, a random linear map, noise,
absolute values like Inception's post-ReLU pool3): real (role 0), generated (role 1, shifted
latent) and a held-out test set (role 2, real's distribution), all from ``--seed``. ``sfid``
uses D = 2023 (Inception's 7×17×17 spatial features) and ``is`` C = 1008 logits, whatever
``--d`` says.

Usage::

    python benchmarks/bench_metrics.py --quick                     # smoke run, small N and D
    python benchmarks/bench_metrics.py --n 10000 --d 1024,2048 --metrics fd,kd,prdc
    python benchmarks/bench_metrics.py --n 10000,50000 --d 2048 --json results_metrics.json
    python benchmarks/bench_metrics.py --full-set                  # evalkit score, 50k/50k/10k
    python benchmarks/bench_metrics.py --table-only --json results_metrics.json

``--json FILE`` keeps every measurement (also across invocations, so a long table can be
measured in parts with ``--metrics``) and later size estimates use all of them.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import child_main, describe_machine, format_table, loadavg, machine_info, measure, status_kb  # noqa: E402

GIB = 2**30
SPATIAL_D = 2023  # Inception mixed_6/conv, first 7 channels, 7×17×17
LOGITS_C = 1008   # Inception fc without bias
LATENT = 32


# ============================================================================ synthetic data

def make_array(kind: str, role: int, n: int, d: int, seed: int) -> np.ndarray:
    """A deterministic float32 N×D array (built in row blocks: no large temporaries).

    ``features``/``spatial``: |Z·W + 0.5·ε|, Z a 32-dim latent with decaying scales (shifted
    by 0.15 for the generated role 1), W a random map shared by all roles; ``logits``: class
    scores, a few confident classes per row on a Gaussian background.
    """
    rng = np.random.default_rng([seed, role, d, {"features": 0, "spatial": 1, "logits": 2}[kind]])
    out = np.empty((n, d), dtype=np.float32)
    step = 4096
    if kind == "logits":
        for s in range(0, n, step):
            e = min(s + step, n)
            block = rng.standard_normal((e - s, d), dtype=np.float32)
            hot = rng.integers(0, d, size=e - s)
            block[np.arange(e - s), hot] += 6.0 + (0.5 if role == 1 else 0.0)
            out[s:e] = block
        return out
    basis = np.random.default_rng([seed, d, 7])
    r = min(LATENT, d)
    w = basis.standard_normal((r, d), dtype=np.float32) / np.float32(math.sqrt(r))
    scales = np.linspace(3.0, 0.3, r, dtype=np.float32)
    shift = np.float32(0.15 if role == 1 else 0.0)
    for s in range(0, n, step):
        e = min(s + step, n)
        z = rng.standard_normal((e - s, r), dtype=np.float32) * scales + shift
        block = z @ w
        block += np.float32(0.5) * rng.standard_normal((e - s, d), dtype=np.float32)
        np.abs(block, out=block)
        out[s:e] = block
    return out


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs`` value 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


# ============================================================================ what is measured

@dataclass(frozen=True)
class Anchor:
    """One anchor implementation of a benchmarked metric.

    ``mem(n, d, n_test)``: predicted bytes the anchor adds on top of the input arrays;
    ``n_exp``/``d_exp``: time scaling exponents used for estimates; ``size(n, n_test)``: the
    size the scaling applies to (n itself, or FLS's capped subset size).
    """

    name: str
    label: str
    run: Callable[..., dict]
    mem: Callable[[int, int, int], float]
    n_exp: float
    d_exp: float
    target: float | None
    size: Callable[[int, int], int] = lambda n, nt: n


@dataclass(frozen=True)
class Bench:
    """A benchmarked metric: evalkit registry key, input kind, anchors, targets."""

    name: str
    key: str
    kind: str = "features"          # features | spatial | logits
    needs_real: bool = True
    needs_test: bool = False
    fixed_d: int | None = None
    anchors: tuple[Anchor, ...] = ()
    finishes_at_50k: bool = False   # issue target: "≥ x at 10k; 50k finishes"
    overrides: Callable[[int, int], dict] = field(default=lambda n, nt: {})


def _fls_n(n: int, n_test: int) -> int:
    return min(10000, n // 2, n_test, n)


# ---- anchor runners: (real, fake, test, seed) -> values

def _a_fd(real, fake, test, seed):
    from anchors_naive import frechet_sqrtm, gaussian_stats

    mu1, s1 = gaussian_stats(real)
    mu2, s2 = gaussian_stats(fake)
    return {"fd": frechet_sqrtm(mu1, s1, mu2, s2)}


def _a_fd_inf(real, fake, test, seed):
    from anchors_naive import fd_infinity_dgm

    return fd_infinity_dgm(real, fake, seed=seed)


def _a_kd(real, fake, test, seed):
    import torch
    from torch_fidelity.metric_kid import kid_features_to_metric

    m = min(1000, len(real), len(fake))
    out = kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=100,
                                 kid_subset_size=m, rng_seed=seed, verbose=False)
    return {"kd": out["kernel_inception_distance_mean"], "kd_std": out["kernel_inception_distance_std"]}


def _a_is(real, fake, test, seed):
    import torch
    from torch_fidelity.metric_isc import isc_features_to_metric

    out = isc_features_to_metric(torch.from_numpy(fake), splits=10)
    return {"is": out["inception_score_mean"], "is_std": out["inception_score_std"]}


def _a_prdc(real, fake, test, seed):
    import contextlib
    import io

    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Num real: ..."
        out = compute_prdc(real, fake, nearest_k=5)
    return {k: float(v) for k, v in out.items()}


def _a_realism(real, fake, test, seed):
    from anchors_naive import realism_dgm

    return realism_dgm(real, fake, nearest_k=3)


def _a_vendi_dual(real, fake, test, seed):
    from vendi_score.vendi import score_dual

    return {"vendi": float(score_dual(fake))}


def _a_vendi_nxn(real, fake, test, seed):
    from anchors_naive import vendi_nxn_dgm

    return vendi_nxn_dgm(fake)


def _a_authpct(real, fake, test, seed):
    from anchors_naive import authpct_dgm

    return authpct_dgm(real, fake)


def _a_ct(real, fake, test, seed):
    from anchors_naive import ct_dgm

    return ct_dgm(real, fake, test, seed=seed)


def _a_fls(real, fake, test, seed):
    from anchors_naive import fls_dgm

    return fls_dgm(real, fake, test, seed=seed, device="cpu")


def _a_fls_pog(real, fake, test, seed):
    from anchors_naive import fls_pog_dgm

    return fls_pog_dgm(real, fake, test, seed=seed, device="cpu")


def _a_cmmd(real, fake, test, seed):
    from anchors_naive import cmmd_naive

    return cmmd_naive(real, fake)


_NXN = 12.0  # bytes per N² entry of the prdc-style formulations (float32 + int64 argpartition)

BENCHES: dict[str, Bench] = {b.name: b for b in (
    Bench("fd", "fd", anchors=(Anchor(
        "pytorch-fid", "pytorch-fid calculate_frechet_distance (scipy sqrtm)", _a_fd,
        lambda n, d, t: 8.0 * n * d + 48.0 * d * d, 1.0, 3.0, 5.0),)),
    Bench("sfid", "sfid", kind="spatial", fixed_d=SPATIAL_D, anchors=(Anchor(
        "pytorch-fid", "pytorch-fid calculate_frechet_distance (scipy sqrtm)", _a_fd,
        lambda n, d, t: 8.0 * n * d + 48.0 * d * d, 1.0, 3.0, 5.0),)),
    # time exponent 0.25 in N: the 15 sqrtm (N-free) dominate; measured 20 s -> 30 s from
    # N=10k to 50k at D=1024 (the first session's exponent 1 estimated 254 s)
    Bench("fd_inf", "fd_inf", anchors=(Anchor(
        "dgm-eval", "dgm-eval compute_FD_infinity (15× np.cov + sqrtm), naive", _a_fd_inf,
        lambda n, d, t: 8.0 * n * d + 48.0 * d * d, 0.25, 3.0, 20.0),)),
    Bench("kd", "kd", anchors=(Anchor(
        "torch-fidelity", "torch-fidelity kid_features_to_metric", _a_kd,
        lambda n, d, t: 4.0 * n * d + 3 * 8e6, 0.0, 1.0, 1.0),)),
    Bench("is", "is", kind="logits", needs_real=False, fixed_d=LOGITS_C, anchors=(Anchor(
        "torch-fidelity", "torch-fidelity isc_features_to_metric", _a_is,
        lambda n, d, t: 24.0 * n * d, 1.0, 1.0, None),)),
    Bench("prdc", "precision", finishes_at_50k=True,
          overrides=lambda n, nt: {"max_samples": n}, anchors=(Anchor(
              "prdc", "prdc.compute_prdc (k=5)", _a_prdc,
              lambda n, d, t: _NXN * n * n, 2.0, 0.3, 3.0),)),
    Bench("realism", "realism", finishes_at_50k=True,
          overrides=lambda n, nt: {"max_samples": n}, anchors=(Anchor(
              "dgm-eval", "dgm-eval N×N realism (k=3), naive", _a_realism,
              lambda n, d, t: _NXN * n * n, 2.0, 0.3, 3.0),)),
    Bench("vendi", "vendi", needs_real=False, anchors=(
        Anchor("vendi-score", "vendi-score score_dual (D×D)", _a_vendi_dual,
               lambda n, d, t: 8.0 * n * d + 24.0 * d * d, 1.0, 2.0, 1.0),
        Anchor("dgm-eval-NxN", "dgm-eval compute_vendi_score (N×N kernel + eigvalsh)", _a_vendi_nxn,
               lambda n, d, t: 12.0 * n * n, 3.0, 0.0, 100.0))),
    Bench("authpct", "authpct", finishes_at_50k=True, anchors=(Anchor(
        "dgm-eval", "dgm-eval compute_authpct (2× torch.cdist N×N), naive", _a_authpct,
        lambda n, d, t: 12.0 * n * n, 2.0, 0.3, 2.0),)),
    Bench("ct", "ct", needs_test=True, anchors=(Anchor(
        "dgm-eval", "dgm-eval compute_CTscore (sklearn PCA/KMeans/NN), naive", _a_ct,
        lambda n, d, t: 8.0 * (n + t) * d, 1.0, 1.0, 1.0),)),
    Bench("fls", "fls", needs_test=True, anchors=(Anchor(
        "dgm-eval", "dgm-eval compute_fls on CPU (100 Adam steps, n×n), naive", _a_fls,
        lambda n, d, t: 24.0 * _fls_n(n, t) ** 2, 2.0, 0.3, 5.0, size=_fls_n),)),
    Bench("fls_pog", "fls_pog", needs_test=True, anchors=(Anchor(
        "dgm-eval", "dgm-eval compute_fls_overfit on CPU, naive", _a_fls_pog,
        lambda n, d, t: 24.0 * _fls_n(n, t) ** 2, 2.0, 0.3, 5.0, size=_fls_n),)),
    Bench("fls+pog", "fls", needs_test=True, anchors=(Anchor(
        "dgm-eval", "dgm-eval compute_fls + compute_fls_overfit (derived: sum of the two runs)",
        _a_fls, lambda n, d, t: 24.0 * _fls_n(n, t) ** 2, 2.0, 0.3, 5.0, size=_fls_n),)),
    Bench("sw_approx", "sw_approx"),
    Bench("cmmd", "cmmd", anchors=(Anchor(
        "cmmd-naive", "google-research/cmmd dense float32 kernels, naive", _a_cmmd,
        lambda n, d, t: 12.0 * n * n, 2.0, 0.3, None),)),
)}

# Anchor times quoted in the issue (this machine class), used only when nothing was measured.
ISSUE_FIGURES = {
    ("fd", "pytorch-fid"): (10000, 2048, 65.0),
    ("fd_inf", "dgm-eval"): (10000, 1024, 380.0),
    ("vendi", "dgm-eval-NxN"): (10000, None, 127.0),
    ("fls", "dgm-eval"): (10000, None, 470.0),
    ("fls_pog", "dgm-eval"): (10000, None, 470.0),
}


def bench_dim(bench: Bench, d: int, quick: bool = False) -> int:
    """The array width a metric is measured at: its fixed width (sfid, is) except in --quick."""
    return d if quick else (bench.fixed_d or d)


# ============================================================================ child tasks

def _arrays_for(bench: Bench, n: int, d: int, n_test: int, seed: int):
    kind = bench.kind
    real = make_array(kind, 0, n, d, seed) if bench.needs_real else None
    fake = make_array(kind, 1, n, d, seed)
    test = make_array(kind, 2, n_test, d, seed) if bench.needs_test else None
    return real, fake, test


def _finite_values(out: dict) -> dict:
    return {k: float(v) for k, v in out.items()
            if not k.startswith("_") and isinstance(v, (int, float, np.floating, np.integer))}


def task_metric(task: dict) -> dict:
    """Child: build the arrays, reset the peak-RSS mark, run one side, time it."""
    bench = BENCHES[task["metric"]]
    n, d, n_test, seed = task["n"], task["d"], task["n_test"], task["seed"]
    if os.environ.get("EVALKIT_BENCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["EVALKIT_BENCH_THREADS"]))
    if task["side"] == "evalkit":
        import torch  # noqa: F401  (imported before the timer, like the anchors' libraries)

        from evalkit.metrics import get_metric
    real, fake, test = _arrays_for(bench, n, d, n_test, seed)
    data_bytes = sum(a.nbytes for a in (real, fake, test) if a is not None)
    gc.collect()
    reset_peak_rss()
    rss0 = status_kb("self", "VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    if task["side"] == "evalkit":
        spec = get_metric(bench.key)
        arrays = {"fake": fake}
        if real is not None:
            arrays["real"] = real
        if test is not None:
            arrays["test"] = test
        kwargs = {**arrays, **bench.overrides(n, n_test)}
        if task.get("profile"):
            import cProfile

            prof = cProfile.Profile()
            out = prof.runcall(spec, seed=seed, device="cpu", **kwargs)
        else:
            out = spec(seed=seed, device="cpu", **kwargs)
    else:
        anchor = next(a for a in bench.anchors if a.name == task["side"])
        out = anchor.run(real, fake, test, seed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if bench.name == "sfid" and "fd" in out:  # the FD anchor names its value fd
        out = {"sfid": out["fd"]}
    result = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "values": _finite_values(out),
              "data_mb": round(data_bytes / 2**20, 1),
              "rss_start_mb": None if rss0 is None else round(rss0 / 1024, 1)}
    if task.get("profile") and task["side"] == "evalkit":
        result["profile"] = profile_top(prof)
    return result


def profile_top(prof, limit: int = 12) -> list[list]:
    """The ``limit`` functions with the most own time: [name, calls, own s, cumulative s]."""
    import pstats

    stats = pstats.Stats(prof).stats
    rows = []
    for (path, line, func), (_, calls, own, cum, _) in stats.items():
        where = f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}:{line}" if line else path
        rows.append([f"{where}({func})" if line else func, calls, round(own, 3), round(cum, 3)])
    rows.sort(key=lambda r: -r[2])
    return rows[:limit]


def task_prepare_full(task: dict) -> dict:
    """Child: write the feature files of the --full-set run (skipped when they exist)."""
    folder = Path(task["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    n, d, n_test, seed, classes = task["n"], task["d"], task["n_test"], task["seed"], task["classes"]
    written = []
    for role, name, rows in ((0, "real", n), (1, "fake", n), (2, "test", n_test)):
        path = folder / f"{name}.npz"
        if path.exists():
            continue
        arrays = {"features": make_array("features", role, rows, d, seed)}
        if role != 2:
            arrays["logits"] = make_array("logits", role, rows, LOGITS_C, seed)
            arrays["spatial"] = make_array("spatial", role, rows, SPATIAL_D, seed)
        if role == 1 and classes:
            arrays["labels"] = np.random.default_rng([seed, 99]).integers(0, classes, rows)
        tmp = folder / f".{name}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        written.append(str(path))
        del arrays
        gc.collect()
    return {"written": written}


def task_full_set(task: dict) -> dict:
    """Child: `evalkit score fake.npz --ref real.npz --test test.npz --metrics all` in-process.

    Peak RSS is the whole process's (imports, loading the three files, every metric).
    """
    from evalkit.cli.app import main

    folder = Path(task["dir"])
    out = folder / "record.json"
    args = ["score", str(folder / "fake.npz"), "--ref", str(folder / "real.npz"),
            "--test", str(folder / "test.npz"), "--metrics", task["metrics"],
            "--seed", str(task["seed"]), "--device", "cpu", "--out", str(out), "--quiet"]
    if task.get("per_sample"):
        args += ["--per-sample", str(folder / "per_sample.csv")]
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        main.main(args=args, standalone_mode=False)
    except SystemExit as exc:  # the CLI turns evalkit errors into sys.exit(2)
        if exc.code not in (0, None):
            raise RuntimeError(f"evalkit score exited {exc.code}") from None
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    record = json.loads(out.read_text())
    record = record[0] if isinstance(record, list) else record
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "metrics": record.get("metrics"),
            "metrics_s": (record.get("timing") or {}).get("metrics_s"),
            "metrics_total_s": (record.get("timing") or {}).get("metrics_total_s"),
            "skipped": record.get("skipped")}


HANDLERS = {"metric": task_metric, "prepare_full": task_prepare_full, "full_set": task_full_set}


# ============================================================================ parent: planning

def mem_available_bytes() -> float:
    text = Path("/proc/meminfo").read_text()
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024.0
    return float("inf")


def _key(metric: str, side: str, n: int, d: int) -> str:
    return f"{metric}|{side}|{n}|{d}"


def estimate_time(results: dict, bench: Bench, anchor: Anchor, n: int, d: int, n_test: int):
    """Predicted anchor seconds at (n, d) from the closest measured size of the same anchor.

    Returns (wall seconds, CPU seconds or None, basis text); wall is None when there is
    nothing to scale from.
    """
    done = [r for r in results.values() if r["metric"] == bench.name and r["side"] == anchor.name
            and r.get("status") == "ok"]
    size = anchor.size(n, n_test)
    if done:
        def distance(r):
            return (r["d"] != d, abs(math.log(anchor.size(r["n"], r["n_test"]) / size)))
        r = min(done, key=distance)
        s0 = anchor.size(r["n"], r["n_test"])
        f = (size / s0) ** anchor.n_exp * (d / r["d"]) ** anchor.d_exp
        t, c = r["wall_s"] * f, (r["cpu_s"] * f if r.get("cpu_s") else None)
        if s0 == size and r["d"] == d:
            if r["n"] == n:
                return t, c, "measured"
            return t, c, (f"the N={r['n']} run ({r['wall_s']:.0f} s): same work, the anchor's "
                          f"subset size is capped at {size}")
        what = "N" if s0 == r["n"] and size == n else "subset size"
        return t, c, (f"{r['wall_s']:.0f} s at N={r['n']}, D={r['d']} × ({what} ratio)^{anchor.n_exp:g}"
                      + (f" × (D ratio)^{anchor.d_exp:g}" if r["d"] != d else ""))
    if bench.name == "fd_inf":
        fd = results.get(_key("fd", "pytorch-fid", n, d))
        if fd and fd.get("status") == "ok":
            return (15 * fd["wall_s"], 15 * fd["cpu_s"] if fd.get("cpu_s") else None,
                    f"15 × the pytorch-fid FD run at the same N, D ({fd['wall_s']:.0f} s)")
    fig = ISSUE_FIGURES.get((bench.name, anchor.name))
    if fig:
        n0, d0, t0 = fig
        s0 = anchor.size(n0, 10000)
        t = t0 * (size / s0) ** anchor.n_exp * ((d / d0) ** anchor.d_exp if d0 else 1.0)
        return t, None, f"issue's figure {t0:.0f} s at N={n0}" + (f", D={d0}" if d0 else "") + " scaled"
    return None, None, "no measurement to scale from"


def plan(args) -> list[tuple[str, int, int]]:
    """(metric, n, d) in measuring order: small N first (its anchors feed later estimates)."""
    out, seen = [], set()
    for n in sorted(args.n):
        for d in sorted(args.d):
            for name in args.metrics:
                dd = bench_dim(BENCHES[name], d, args.quick)
                if (name, n, dd) not in seen:
                    seen.add((name, n, dd))
                    out.append((name, n, dd))
    return out


def thread_env(threads: int | None) -> dict | None:
    """Environment pinning the BLAS/OpenMP thread pools of a child (None: library defaults)."""
    if not threads:
        return None
    v = str(threads)
    return {"OMP_NUM_THREADS": v, "MKL_NUM_THREADS": v, "OPENBLAS_NUM_THREADS": v,
            "EVALKIT_BENCH_THREADS": v}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {loadavg()}] {msg}", file=sys.stderr, flush=True)


def run_one(args, results: dict, metric: str, side: str, n: int, d: int, timeout: float) -> dict:
    old = results.get(_key(metric, side, n, d))
    if old and old.get("status") == "ok" and not args.rerun:
        log(f"{metric} {side} N={n} D={d}: kept from --json ({old['wall_s']} s)")
        return old
    task = {"kind": "metric", "metric": metric, "side": side, "n": n, "d": d,
            "n_test": args.n_test, "seed": args.seed, "profile": args.profile}
    log(f"{metric} {side} N={n} D={d} ...")
    m = measure(os.path.abspath(__file__), task, timeout=timeout, env=thread_env(args.threads))
    rec = {"metric": metric, "side": side, "n": n, "d": d, "n_test": args.n_test,
           "seed": args.seed, "threads": args.threads, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if m.get("error"):
        timed_out = "timed out" in m["error"]
        rec.update(status="timeout" if timed_out else "error", error=m["error"][-400:],
                   wall_s=timeout if timed_out else None)
    else:
        if m.get("profile"):
            rec["profile"] = m["profile"]
        rec.update(status="ok", wall_s=m["wall_s"], cpu_s=m["cpu_s"], values=m["values"],
                   peak_gib=round(m["main_peak_mb"] / 1024, 3),
                   tree_peak_gib=round(m["tree_peak_mb"] / 1024, 3),
                   data_gib=round(m["data_mb"] / 1024, 3))
    rec.update(load_before=m.get("load_before"), load_after=m.get("load_after"))
    results[_key(metric, side, n, d)] = rec
    log(f"  -> {rec['status']} {rec.get('wall_s')} s, peak {rec.get('peak_gib')} GiB "
        f"{rec.get('values') or rec.get('error', '')}")
    return rec


def run_all(args, results: dict, save: Callable[[], None]) -> None:
    limit = args.mem_limit_gib * GIB
    for metric, n, d in plan(args):
        bench = BENCHES[metric]
        if "evalkit" in args.sides:
            run_one(args, results, metric, "evalkit", n, d, args.timeout)
            save()
        for anchor in bench.anchors:
            if "anchors" not in args.sides:
                continue
            data = 4.0 * d * (n * (2 if bench.needs_real else 1) + (args.n_test if bench.needs_test else 0))
            mem = anchor.mem(n, d, args.n_test) + data + 0.4 * GIB
            t_est, _, basis = estimate_time(results, bench, anchor, n, d, args.n_test)
            free = mem_available_bytes()
            timeout = args.fls_timeout if metric in ("fls", "fls_pog") else args.timeout
            max_s = args.anchor_max_s if args.anchor_max_s is not None else timeout
            why = None
            if mem > limit:
                why = f"memory: needs ≈{mem / GIB:.0f} GiB > {args.mem_limit_gib:g} GiB limit"
            elif mem > 0.9 * free:
                why = f"memory: needs ≈{mem / GIB:.1f} GiB, only {free / GIB:.1f} GiB free now"
            elif t_est is not None and basis != "measured" and t_est > max_s:
                why = f"time: ≈{t_est:.0f} s > {max_s:g} s budget"
            if why:
                results[_key(metric, anchor.name, n, d)] = {
                    "metric": metric, "side": anchor.name, "n": n, "d": d, "n_test": args.n_test,
                    "seed": args.seed, "status": "estimated", "why": why,
                    "est_gib": round(mem / GIB, 1)}  # its time is estimated when rendering
                log(f"{metric} {anchor.name} N={n} D={d}: not run ({why}; est. {t_est} s from {basis})")
                save()
                continue
            run_one(args, results, metric, anchor.name, n, d, timeout)
            save()


# ============================================================================ parent: tables

def _fmt_s(x):
    return "-" if x is None else (f"{x:.3g}" if x < 10 else f"{x:.0f}")


def _fmt_ratio(x, est=False):
    if x is None:
        return "-"
    s = f"{x:.2g}" if x < 10 else f"{x:.0f}"
    return ("≈" if est else "") + s + "×"


def _values_text(ev: dict | None, av: dict | None, keys: list[str]) -> str:
    parts = []
    for k in keys:
        a = None if ev is None else ev.get(k)
        b = None if av is None else av.get(k)
        if a is None and b is None:
            continue
        if a is not None and b is not None:
            rel = abs(a - b) / max(abs(b), 1e-300)
            parts.append(f"{k} {a:.6g} / {b:.6g} (Δ {rel:.1e})")
        else:
            parts.append(f"{k} {a if a is not None else '-'} / {b if b is not None else '-'}")
    return "; ".join(parts)


def _main_keys(bench: Bench) -> list[str]:
    if bench.name == "prdc":
        return ["precision", "recall", "density", "coverage"]
    if bench.name == "fls+pog":
        return ["fls", "fls_pog"]
    return [bench.name]


def with_combined_fls(results: dict) -> dict:
    """Add derived ``fls+pog`` entries: evalkit computes fls and fls_pog in one call (its
    ``fls`` measurement), dgm-eval in two (``compute_fls`` + ``compute_fls_overfit``, three
    bandwidth fits in all), so the fair whole-job comparison is one call vs the two anchors."""
    out = dict(results)
    for r in results.values():
        if r["metric"] != "fls" or r["side"] != "evalkit":
            continue
        n, d = r["n"], r["d"]
        out[_key("fls+pog", "evalkit", n, d)] = {**r, "metric": "fls+pog"}
        parts = [results.get(_key(m, "dgm-eval", n, d)) for m in ("fls", "fls_pog")]
        if None in parts or any(a["status"] not in ("ok", "estimated") for a in parts):
            continue
        if all(a["status"] == "ok" for a in parts):
            out[_key("fls+pog", "dgm-eval", n, d)] = {
                **parts[0], "metric": "fls+pog", "wall_s": sum(a["wall_s"] for a in parts),
                "cpu_s": sum(a.get("cpu_s") or 0 for a in parts),
                "peak_gib": max(a["peak_gib"] for a in parts),
                "values": {k: v for a in parts for k, v in (a.get("values") or {}).items()}}
        else:
            out[_key("fls+pog", "dgm-eval", n, d)] = {
                **parts[0], "metric": "fls+pog", "status": "estimated", "parts": parts,
                "why": "see the fls and fls_pog rows",
                "est_gib": max(a.get("est_gib") or a.get("peak_gib") or 0 for a in parts)}
    return out


def _estimate(results: dict, bench: Bench, anchor: Anchor, rec: dict):
    """(wall, cpu, basis) of an anchor that was not run, from the current measurements."""
    if rec.get("parts"):  # derived fls+pog: the sum of its two anchors
        tw, tc = 0.0, 0.0
        for part, name in zip(rec["parts"], ("fls", "fls_pog")):
            if part["status"] == "ok":
                w, c = part["wall_s"], part.get("cpu_s")
            else:
                b = BENCHES[name]
                w, c, _ = estimate_time(results, b, b.anchors[0], rec["n"], rec["d"], rec["n_test"])
            if w is None:
                return None, None, "no measurement to scale from"
            tw += w
            tc = None if (tc is None or c is None) else tc + c
        return tw, tc, "the sum of the fls and fls_pog anchors (measured or estimated)"
    return estimate_time(results, bench, anchor, rec["n"], rec["d"], rec["n_test"])


def table_rows(results: dict) -> list[dict]:
    results = with_combined_fls(results)
    rows = []
    order = {name: i for i, name in enumerate(BENCHES)}
    configs = sorted({(r["metric"], r["n"], r["d"]) for r in results.values()},
                     key=lambda c: (c[1], c[2], order.get(c[0], 99)))
    for metric, n, d in configs:
        bench = BENCHES.get(metric)
        if bench is None:
            continue
        ev = results.get(_key(metric, "evalkit", n, d))
        anchors = bench.anchors or (None,)
        for anchor in anchors:
            an = results.get(_key(metric, anchor.name, n, d)) if anchor else None
            row = {"metric": metric, "N": n, "D": d, "anchor": anchor.name if anchor else "(none)"}
            e_ok = bool(ev and ev["status"] == "ok")
            row["ev_s"] = _fmt_s(ev["wall_s"]) if e_ok else (ev["status"] if ev else "-")
            row["ev_cpu"] = _fmt_s(ev.get("cpu_s")) if e_ok else "-"
            row["an_cpu"] = "-"
            row["ev_gib"] = f"{ev['peak_gib']:.2f}" if e_ok else "-"
            row["data_gib"] = f"{ev['data_gib']:.2f}" if e_ok else "-"
            t_ratio = m_ratio = c_ratio = None
            est = False
            if an is None:
                row["an_s"] = row["an_gib"] = "-"
            elif an["status"] == "ok":
                row["an_s"] = _fmt_s(an["wall_s"])
                row["an_cpu"] = _fmt_s(an.get("cpu_s"))
                row["an_gib"] = f"{an['peak_gib']:.2f}"
                if e_ok:
                    t_ratio = an["wall_s"] / ev["wall_s"]
                    m_ratio = an["peak_gib"] / ev["peak_gib"]
                    if an.get("cpu_s") and ev.get("cpu_s"):
                        c_ratio = an["cpu_s"] / ev["cpu_s"]
            elif an["status"] == "estimated":
                est = True
                est_w, est_c, est_basis = _estimate(results, bench, anchor, an)
                row["an_s"] = ("≈" + _fmt_s(est_w)) if est_w else "?"
                row["an_cpu"] = ("≈" + _fmt_s(est_c)) if est_c else "-"
                row["an_gib"] = f"≈{an['est_gib']:.0f}"
                if e_ok and est_w:
                    t_ratio = est_w / ev["wall_s"]
                    m_ratio = an["est_gib"] / ev["peak_gib"]
                    if est_c and ev.get("cpu_s"):
                        c_ratio = est_c / ev["cpu_s"]
            elif an["status"] == "timeout":
                row["an_s"] = f">{an['wall_s']:.0f}"
                row["an_gib"] = "-"
                if e_ok:
                    t_ratio, est = an["wall_s"] / ev["wall_s"], True
            else:
                row["an_s"] = an["status"]
                row["an_gib"] = "-"
            row["x_time"] = (">" if an and an["status"] == "timeout" else "") + _fmt_ratio(
                t_ratio, est and an["status"] == "estimated") if t_ratio else "-"
            row["x_cpu"] = _fmt_ratio(c_ratio, est and an["status"] == "estimated")
            # Single-threaded runs: CPU time is the time on an idle core (wall time adds the
            # waiting for a core that other work on the machine causes), so judge on it.
            single = bool(ev and an and ev.get("threads") == 1 and an.get("threads") == 1)
            j_ratio = c_ratio if single and c_ratio else t_ratio
            row["x_mem"] = _fmt_ratio(m_ratio, est)
            target = anchor.target if anchor else None
            if anchor is None or target is None:
                row["target"], row["met"] = "-", "-"
            elif bench.finishes_at_50k and n > 10000:
                row["target"] = "finishes"
                row["met"] = "yes" if e_ok else "NO"
            else:
                row["target"] = f"≥ {target:g}×"
                if j_ratio is None:
                    row["met"] = "?"
                else:
                    row["met"] = ("yes" if j_ratio >= target else "NO") + (" (est.)" if est else "")
            note = ""
            if an and an["status"] == "estimated":
                note = f"anchor not run: {an['why']}; time from {est_basis}"
            elif an and an["status"] in ("error", "timeout"):
                note = f"anchor {an['status']}: {an.get('error', '')[-160:]}"
            elif ev and ev["status"] != "ok":
                note = f"evalkit {ev['status']}: {ev.get('error', '')[-160:]}"
            row["values"] = _values_text(ev.get("values") if e_ok else None,
                                         an.get("values") if an and an["status"] == "ok" else None,
                                         _main_keys(bench))
            row["note"] = note
            rows.append(row)
    return rows


COLUMNS = [("metric", "metric"), ("N", "N"), ("D", "D"), ("anchor", "anchor"),
           ("ev_s", "evalkit s"), ("an_s", "anchor s"), ("x_time", "× time"),
           ("ev_cpu", "evalkit cpu s"), ("an_cpu", "anchor cpu s"), ("x_cpu", "× cpu"),
           ("data_gib", "data GiB"), ("ev_gib", "evalkit GiB"), ("an_gib", "anchor GiB"),
           ("x_mem", "× mem"), ("target", "target"), ("met", "met")]


def render(results: dict, info: dict | None) -> str:
    rows = table_rows(results)
    lines = []
    if info:
        lines.append(f"Machine: {describe_machine(info)}")
    threads = sorted({str(r.get("threads") or "default") for r in results.values()
                      if r.get("status") == "ok"})
    if threads:
        lines.append(f"Threads per measurement (BLAS/OpenMP/torch): {', '.join(threads)}")
    loads = [v for r in results.values() for v in (r.get("load_before"), r.get("load_after"))
             if v is not None]
    if loads:
        lines.append(f"1-min load average during the measurements: {min(loads):.1f}–{max(loads):.1f} "
                     f"(mean {sum(loads) / len(loads):.1f})")
    lines += ["", "× = anchor / evalkit (time: wall clock; cpu: process CPU time; mem: peak RSS). "
              "`met` compares the target with the CPU-time ratio where both sides ran "
              "single-threaded (--threads 1: CPU time is the time on an idle core, unaffected by "
              "other load), else with the wall-clock ratio. ≈: the anchor was not run (see "
              "Notes), its time is scaled from a measured size.",
              "", format_table(rows, COLUMNS), ""]
    checks = [r for r in rows if r["values"]]
    if checks:
        lines.append("Values (evalkit / anchor, relative difference):")
        lines += [f"- {r['metric']} N={r['N']} D={r['D']} vs {r['anchor']}: {r['values']}" for r in checks]
    profiled = [r for r in results.values() if r.get("profile")]
    if profiled:
        lines.append("")
        lines.append("Profiles of evalkit's side (cProfile, functions with the most own time):")
        for r in sorted(profiled, key=lambda r: (r["n"], r["d"], r["metric"])):
            lines.append("")
            lines.append(f"{r['metric']} N={r['n']} D={r['d']}: {r['wall_s']} s")
            lines.append(format_table(
                [dict(zip(("fn", "calls", "own", "cum"), p)) for p in r["profile"]],
                [("fn", "function"), ("calls", "calls"), ("own", "own s", ".3f"), ("cum", "cum s", ".3f")]))
    notes = [r for r in rows if r["note"]]
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines += [f"- {r['metric']} N={r['N']} D={r['D']} {r['anchor']}: {r['note']}" for r in notes]
    return "\n".join(lines)


# ============================================================================ --full-set

def full_set(args) -> str:
    folder = Path(args.data_dir) / f"full_n{args.full_n}_d{args.full_d}_t{args.full_test}_s{args.seed}"
    script = os.path.abspath(__file__)
    log(f"preparing feature files in {folder} ...")
    prep = measure(script, {"kind": "prepare_full", "dir": str(folder), "n": args.full_n,
                            "d": args.full_d, "n_test": args.full_test, "seed": args.seed,
                            "classes": args.full_classes}, timeout=1800)
    if prep.get("error"):
        raise SystemExit(f"preparing the feature files failed: {prep['error']}")
    log(f"evalkit score --metrics {args.full_metrics} ...")
    m = measure(script, {"kind": "full_set", "dir": str(folder), "seed": args.seed,
                         "metrics": args.full_metrics, "per_sample": args.per_sample},
                timeout=args.full_timeout, env=thread_env(args.threads))
    files = {p.name: round(p.stat().st_size / GIB, 2) for p in sorted(folder.glob("*.npz"))}
    lines = [f"`evalkit score` on feature files: {args.full_n:,} generated and {args.full_n:,} "
             f"reference samples (features D={args.full_d}, logits {LOGITS_C}, spatial {SPATIAL_D}"
             f"{f', {args.full_classes} classes' if args.full_classes else ''}), test set "
             f"{args.full_test:,} (features); --metrics {args.full_metrics}"
             f"{' --per-sample' if args.per_sample else ''}; files (GiB): {files}",
             f"load average before/after: {m.get('load_before')} / {m.get('load_after')}; "
             f"threads: {args.threads or 'default'}", ""]
    if m.get("error"):
        lines.append(f"FAILED: {m['error']}")
        return "\n".join(lines)
    peak = m["main_peak_mb"] / 1024
    lines.append(f"total wall {m['wall_s']:.0f} s (process incl. imports {m['process_wall_s']:.0f} s), "
                 f"CPU {m['cpu_s']:.0f} s, peak RSS {peak:.2f} GiB (process tree PSS peak "
                 f"{m['tree_peak_mb'] / 1024:.2f} GiB); target < 6 GiB: "
                 f"{'met' if peak < 6 else 'NOT met'}")
    lines.append("")
    per = m.get("metrics_s") or {}
    vals = m.get("metrics") or {}
    rows = [{"metric": k, "s": v, "value": vals.get(k)} for k, v in per.items()]
    rows += [{"metric": k, "s": None, "value": v} for k, v in vals.items() if k not in per]
    lines.append(format_table(rows, [("metric", "metric"), ("s", "seconds", ".1f"),
                                     ("value", "value", ".6g")]))
    if m.get("skipped"):
        lines.append("")
        lines.append(f"skipped: {m['skipped']}")
    return "\n".join(lines)


# ============================================================================ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    csv_int = lambda s: [int(float(x)) for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--n", type=csv_int, default=[10000, 50000], help="sample counts per set (comma list)")
    p.add_argument("--d", type=csv_int, default=[1024, 2048], help="feature dims (comma list)")
    p.add_argument("--n-test", type=int, default=10000, help="test-set size (ct, fls, fls_pog)")
    p.add_argument("--metrics", default="all", help=f"comma list of: {', '.join(BENCHES)}; or all")
    p.add_argument("--sides", default="evalkit,anchors", help="evalkit,anchors (or one of them)")
    p.add_argument("--quick", action="store_true", help="smoke run: N=2000, D=256, test 1000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS/OpenMP/torch threads per measurement (default: the libraries' own, "
                        "= cores); 1 is steadier on a loaded machine")
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    p.add_argument("--fls-timeout", type=float, default=1500, help="seconds per FLS anchor run")
    p.add_argument("--anchor-max-s", type=float, default=None,
                   help="estimate instead of running an anchor predicted to take longer "
                        "(default: its timeout)")
    p.add_argument("--mem-limit-gib", type=float, default=None,
                   help="estimate instead of running an anchor predicted to need more (default: 85%% of RAM)")
    p.add_argument("--json", default=None, help="keep/extend all measurements in this JSON file")
    p.add_argument("--out", default=None, help="also write the Markdown table here")
    p.add_argument("--profile", action="store_true",
                   help="run evalkit's side under cProfile and print where its time goes "
                        "(use a separate --json: profiling adds a little time)")
    p.add_argument("--rerun", action="store_true", help="measure again what --json already holds")
    p.add_argument("--table-only", action="store_true", help="print the table from --json and exit")
    p.add_argument("--full-set", action="store_true", help="time `evalkit score` at 50k/50k/10k, D=2048")
    p.add_argument("--full-n", type=int, default=50000)
    p.add_argument("--full-d", type=int, default=2048)
    p.add_argument("--full-test", type=int, default=10000)
    p.add_argument("--full-classes", type=int, default=1000, help="labels on the generated set (0: none)")
    p.add_argument("--full-metrics", default="all")
    p.add_argument("--full-timeout", type=float, default=3000)
    p.add_argument("--per-sample", action="store_true", help="--full-set: also write --per-sample")
    p.add_argument("--data-dir", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "evalkit-bench", "metrics"),
        help="where --full-set writes its feature files")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.d, args.n_test = [2000], [256], 1000
        args.timeout = min(args.timeout, 300)
        args.fls_timeout = min(args.fls_timeout, 300)
        args.full_n, args.full_d, args.full_test = 5000, 256, 1000
        args.full_classes = min(args.full_classes, 10)
    if args.metrics == "all":
        args.metrics = [b for b in BENCHES if b != "fls+pog"]
    else:
        args.metrics = [m.strip() for m in args.metrics.split(",")]
    unknown = [m for m in args.metrics if m not in BENCHES or m == "fls+pog"]
    if unknown:
        p.error(f"unknown metric(s) {unknown}; known: {', '.join(BENCHES)}")
    args.sides = {s.strip() for s in args.sides.split(",")}
    if args.mem_limit_gib is None:
        total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
        args.mem_limit_gib = round(0.85 * total / GIB, 1)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    results: dict = {}
    if args.json and os.path.exists(args.json):
        results = json.loads(Path(args.json).read_text()).get("results", {})

    def save():
        if args.json:
            tmp = args.json + ".tmp"
            Path(tmp).write_text(json.dumps({"results": results}, indent=1, sort_keys=True))
            os.replace(tmp, args.json)

    info = machine_info()
    if args.full_set:
        text = full_set(args)
    else:
        if not args.table_only:
            log(f"machine: {describe_machine(info)}; mem limit {args.mem_limit_gib} GiB")
            run_all(args, results, save)
        text = render(results, info)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    child_main(HANDLERS)
    sys.exit(main())
