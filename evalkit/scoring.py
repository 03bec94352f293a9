"""Run registered metrics on feature sets and build result records.

Data flows one way: FeatureSets (already extracted or loaded) -> metric functions -> records.
Nothing here reads images or builds encoders.
"""
from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from evalkit import __version__
from evalkit.errors import InputError, MetricInputError
from evalkit.featureset import FeatureSet
from evalkit.metrics import METRICS, MetricSpec, get_metric
from evalkit.metrics._tensor import resolve_device
from evalkit.metrics.frechet import frechet_from_stats, moments
from evalkit.record import SCHEMA

# Metrics that a statistics-only reference (mu/sigma, e.g. ADM's or pytorch-fid's .npz) supports,
# with the statistics attribute they need.
STATS_METRICS = {"fd": "features", "sfid": "spatial"}


@dataclass(frozen=True)
class ScoreConfig:
    """What to compute: metric list (None = all whose inputs exist), seed, subsampling, CIs."""

    metrics: tuple[str, ...] | None = None
    seed: int = 0
    nsample: int | None = None
    device: str = "auto"
    bootstrap: int = 0
    confidence: float = 0.95
    overrides: dict[str, Any] = field(default_factory=dict)
    # Published statistics (ADM's mu/sigma inside its reference batch) that fd/sfid use
    # instead of the reference's own features; set by a protocol (evalkit.protocols).
    reference_stats: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "metrics": list(self.metrics) if self.metrics else "all",
                "nsample": self.nsample, "bootstrap": self.bootstrap,
                "confidence": self.confidence if self.bootstrap else None}


def parse_metric_list(text: str | None) -> tuple[str, ...] | None:
    """``"all"``/None -> None; ``"fd,kd"`` -> validated tuple (unknown names raise)."""
    if text is None or text.strip().lower() == "all":
        return None
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise InputError("--metrics: empty list (use `all` or e.g. fd,kd)")
    for name in names:
        get_metric(name)
    return names


def _array_for(spec: MetricSpec, fs: FeatureSet) -> np.ndarray | None:
    arr = fs.get(spec.array)
    if arr is None and spec.fallback:
        arr = fs.get(spec.fallback)
    return arr


def _stats_for(stats: Any, spec: MetricSpec) -> tuple[Any, Any] | None:
    """(mu, sigma) of a statistics-only reference for ``spec``, or None."""
    if stats is None or spec.name not in STATS_METRICS:
        return None
    return (stats.mu, stats.sigma) if STATS_METRICS[spec.name] == "features" else stats.spatial


def _missing_inputs(spec: MetricSpec, fake: FeatureSet, real: FeatureSet | None,
                    test: FeatureSet | None, stats: Any = None) -> str | None:
    """Why ``spec`` cannot run on these sets, or None when it can."""
    if spec.needs_real and real is None and _stats_for(stats, spec) is None:
        if stats is not None and spec.name in STATS_METRICS:
            return "needs spatial statistics (mu_s/sigma_s), the reference statistics have none"
        return "needs a reference with samples (the reference has statistics only)"
    if spec.needs_test and test is None:
        return "needs --test (held-out real data)"
    if spec.needs_labels and fake.labels is None:
        return "needs labels (class subfolders or a 'labels' array)"
    for role, fs in (("samples", fake), ("reference", real if spec.needs_real else None),
                     ("test set", test if spec.needs_test else None)):
        if fs is not None and _array_for(spec, fs) is None:
            return f"needs '{spec.array}' arrays in the {role} (use an encoder that has them)"
        if fs is not None and fs.n < spec.min_samples:
            return f"needs at least {spec.min_samples} samples, the {role} has {fs.n}"
    return None


def plan_metrics(requested: tuple[str, ...] | None, fake: FeatureSet, real: FeatureSet | None,
                 test: FeatureSet | None, stats: Any = None,
                 ) -> tuple[list[MetricSpec], dict[str, str]]:
    """Which metrics run, and which are skipped with the reason.

    With an explicit list, a metric whose inputs are missing is an input error; with ``all``
    it is skipped and reported.
    """
    names = requested or tuple(METRICS.names())
    run, skipped = [], {}
    for name in names:
        spec = get_metric(name)
        why = _missing_inputs(spec, fake, real, test, stats)
        if why is None:
            run.append(spec)
        elif requested:
            raise MetricInputError(f"metric {name} {why} ({fake.source})")
        else:
            skipped[name] = why
    return run, skipped


def check_dims(specs: Iterable[MetricSpec], fake: FeatureSet, real: FeatureSet | None,
               test: FeatureSet | None, stats: Any = None) -> None:
    """Feature dimensions must agree between the sets a metric compares."""
    for spec in specs:
        a = _array_for(spec, fake)
        st = _stats_for(stats, spec)
        if st is not None and st[0].shape[0] != a.shape[1]:
            raise InputError(
                f"{spec.array} dims differ: samples {a.shape[1]} ({fake.source}) vs reference "
                f"statistics {st[0].shape[0]} ({stats.source}) (same --encoder for both?)")
        for role, fs in (("reference", real), ("test", test)):
            if fs is None or (role == "reference" and not spec.needs_real) or \
                    (role == "test" and not spec.needs_test):
                continue
            b = _array_for(spec, fs)
            if a.shape[1] != b.shape[1]:
                raise InputError(
                    f"{spec.array} dims differ: samples {a.shape[1]} ({fake.source}) vs {role} "
                    f"{b.shape[1]} ({fs.source}) (same --encoder for both?)")


def compute_metrics(specs: list[MetricSpec], fake: FeatureSet, real: FeatureSet | None,
                    test: FeatureSet | None, *, seed: int, device: str,
                    overrides: dict[str, Any] | None = None, stats: Any = None,
                    ) -> tuple[dict[str, float], dict[str, Any], dict[str, float]]:
    """Call each metric function once (metrics sharing a function share one call).

    Returns (values, details, seconds per metric). Keys starting with "_" that a metric
    returns are details (curves, per-class values), kept out of the values.
    """
    values: dict[str, float] = {}
    details: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    done: dict[tuple[int, str], dict[str, Any]] = {}
    for spec in specs:
        memo_key = (id(spec.fn), spec.array)
        st = _stats_for(stats, spec)
        if st is not None:
            t0 = time.perf_counter()
            dev = resolve_device(device)
            mu_g, cov_g = moments(_array_for(spec, fake), dev, spec.name)
            mu_r, cov_r = (torch.as_tensor(np.asarray(a, np.float64), device=dev) for a in st)
            done[memo_key] = {spec.name: frechet_from_stats(mu_r, cov_r, mu_g, cov_g)}
            seconds[spec.name] = round(time.perf_counter() - t0, 4)
        elif memo_key not in done:
            arrays: dict[str, Any] = {"fake": _array_for(spec, fake)}
            if spec.needs_real:
                arrays["real"] = _array_for(spec, real)
            if spec.needs_test:
                arrays["test"] = _array_for(spec, test)
            arrays["labels"] = fake.labels
            arrays.update((overrides or {}).get(spec.name, {}))
            t0 = time.perf_counter()
            done[memo_key] = spec(seed=seed, device=device, **arrays)
            seconds[spec.name] = round(time.perf_counter() - t0, 4)
        out = done[memo_key]
        for key in spec.keys:
            if key in out and out[key] is not None:
                values[key] = float(out[key])
        extra = {k: v for k, v in out.items() if k.startswith("_")}
        if extra and spec.name == spec.keys[0]:
            details.setdefault(spec.name, {}).update(extra)
    return values, details, seconds


def bootstrap_intervals(specs: list[MetricSpec], fake: FeatureSet, real: FeatureSet | None,
                        test: FeatureSet | None, *, rounds: int, seed: int, device: str,
                        confidence: float = 0.95, stats: Any = None) -> dict[str, list[float]]:
    """Percentile bootstrap interval of every metric, resampling generated samples.

    Each round draws N generated samples with replacement (seeded from ``seed``) and recomputes
    every metric against the unchanged reference/test sets.
    """
    rng = np.random.default_rng([seed, 0xB007])
    draws: dict[str, list[float]] = {}
    for r in range(rounds):
        idx = rng.integers(0, fake.n, size=fake.n)
        vals, _, _ = compute_metrics(specs, fake.subset(idx), real, test, seed=seed + r + 1,
                                     device=device, stats=stats)
        for k, v in vals.items():
            draws.setdefault(k, []).append(v)
    alpha = (1.0 - confidence) / 2
    return {k: [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))]
            for k, v in draws.items() if len(v) == rounds}


def subsample(fs: FeatureSet, nsample: int | None, seed: int, salt: int) -> FeatureSet:
    """At most ``nsample`` rows, drawn without replacement with a seeded generator (sorted)."""
    if nsample is None or fs.n <= nsample:
        return fs
    rng = np.random.default_rng([seed, salt])
    return fs.subset(np.sort(rng.choice(fs.n, size=nsample, replace=False)))


def fingerprint_of(fs: FeatureSet) -> str:
    """The source's content fingerprint, else a hash of the feature array itself."""
    fp = (fs.meta.get("source") or {}).get("fingerprint")
    if fp:
        return fp
    feats = np.ascontiguousarray(fs.arrays["features"])
    return "sha256:" + hashlib.sha256(feats.tobytes()).hexdigest()


def describe_set(fs: FeatureSet | None, name: str | None = None) -> dict[str, Any] | None:
    if fs is None:
        return None
    if getattr(fs, "stats_only", False):
        return {"source": fs.source, "name": name, "n": fs.n,
                "fingerprint": (fs.meta.get("source") or {}).get("fingerprint"),
                "stats_only": True}
    out = {"source": fs.source, "n": fs.n, "fingerprint": fingerprint_of(fs)}
    if name is not None:
        out["name"] = name
    if fs.meta.get("n_skipped"):
        out["n_skipped"] = fs.meta["n_skipped"]
    return out


def encoder_of(fs: FeatureSet) -> dict[str, Any]:
    enc = fs.meta.get("encoder") or {}
    return {k: enc.get(k) for k in ("name", "arch", "weights_sha256", "preprocess")}


def check_same_encoder(fake: FeatureSet, other: FeatureSet | None, role: str) -> None:
    """Refuse to compare sets whose recorded encoder identities differ."""
    if other is None:
        return
    a, b = encoder_of(fake), encoder_of(other)
    if a["name"] and b["name"] and a != b:
        diff = [k for k in a if a[k] != b[k]]
        raise InputError(
            f"{fake.source} and {role} {other.source} were encoded differently "
            f"({', '.join(f'{k}: {a[k]} vs {b[k]}' for k in diff)})")


def versions() -> dict[str, str]:
    import torch

    return {"evalkit": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def score_set(fake: FeatureSet, real: FeatureSet, test: FeatureSet | None, config: ScoreConfig,
              *, name: str, ref_name: str | None = None) -> tuple[dict[str, Any], FeatureSet]:
    """Score one generated set; returns (record, the generated set actually scored)."""
    stats_only = getattr(real, "stats_only", False)
    stats = real if stats_only else config.reference_stats
    fake_s = subsample(fake, config.nsample, config.seed, 1)
    real_s = None if stats_only else subsample(real, config.nsample, config.seed, 2)
    test_s = subsample(test, config.nsample, config.seed, 3) if test is not None else None
    check_same_encoder(fake_s, real, "reference")
    check_same_encoder(fake_s, test_s, "test set")
    specs, skipped = plan_metrics(config.metrics, fake_s, real_s, test_s, stats)
    check_dims(specs, fake_s, real_s, test_s, stats)
    t0 = time.perf_counter()
    values, details, seconds = compute_metrics(specs, fake_s, real_s, test_s, seed=config.seed,
                                               device=config.device, overrides=config.overrides,
                                               stats=stats)
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "samples": describe_set(fake_s),
        "reference": describe_set(real if stats_only else real_s, ref_name),
        "test": describe_set(test_s),
        "encoder": encoder_of(fake_s) if fake_s.meta.get("encoder") else encoder_of(real),
        "config": config.as_dict(),
        "metrics": values,
    }
    if config.bootstrap:
        record["metrics_ci"] = bootstrap_intervals(
            specs, fake_s, real_s, test_s, rounds=config.bootstrap, seed=config.seed,
            device=config.device, confidence=config.confidence, stats=stats)
    record["skipped"] = skipped
    record["details"] = details
    record["per_sample"] = None
    record["timing"] = {"extract_s": float(fake.meta.get("extract_s", 0.0)),
                        "metrics_s": seconds,
                        "metrics_total_s": round(time.perf_counter() - t0, 4)}
    record["versions"] = versions()
    return record, fake_s
