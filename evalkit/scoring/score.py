"""Run registered metrics on feature sets and build result records.

Data flows one way: FeatureSets (already extracted or loaded) -> metric functions -> records.
Nothing here reads images or builds encoders.

Randomness comes from one :class:`~evalkit.scoring.rng.RunRNG` of ``--seed``: the ``--nsample``
subsample of each role, the bootstrap resampling, and each metric function (one child stream
per function, by name) draw from their own streams.

A statistics-only reference (``FeatureSet.has_samples`` False) is used by the metrics whose
registry entry declares ``moments`` (a function of the reference's mean and covariance);
every other metric is skipped (or, asked for by name, an input error).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from evalkit.errors import InputError, MetricInputError
from evalkit.features.featureset import FeatureSet
from evalkit.features.identity import EncoderIdentity
from evalkit.metrics import MetricSpec, get_metric, list_metrics
from evalkit.metrics.prdc import REALISM_K
from evalkit.provenance import versions
from evalkit.results.record import SCHEMA
from evalkit.scoring.intervals import BOOTSTRAP_METHOD, bootstrap_intervals
from evalkit.scoring.rng import RunRNG

ROLES = ("samples", "reference", "test")


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
    realism_k: int = REALISM_K
    progress: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "metrics": list(self.metrics) if self.metrics else "all",
                "nsample": self.nsample, "bootstrap": self.bootstrap,
                "confidence": self.confidence if self.bootstrap else None,
                "bootstrap_method": BOOTSTRAP_METHOD if self.bootstrap else None,
                "realism_k": self.realism_k}

    def metric_overrides(self) -> dict[str, Any]:
        """Per-metric keyword overrides, with the realism k folded in."""
        out = dict(self.overrides)
        out["realism"] = {"nearest_k": self.realism_k, **out.get("realism", {})}
        return out


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


def _moments_for(spec: MetricSpec, real: FeatureSet) -> tuple[np.ndarray, np.ndarray] | None:
    """The statistics-only reference's (mean, covariance) that ``spec`` can run from, or None."""
    if spec.moments is None:
        return None
    return real.moments.get(spec.array) or (real.moments.get(spec.fallback)
                                            if spec.fallback else None)


def _missing_inputs(spec: MetricSpec, fake: FeatureSet, real: FeatureSet,
                    test: FeatureSet | None) -> str | None:
    """Why ``spec`` cannot run on these sets, or None when it can."""
    if spec.needs_real and not real.has_samples and _moments_for(spec, real) is None:
        if spec.moments is not None:
            return f"needs {spec.array} statistics, the reference statistics have none"
        return "needs a reference with samples (the reference has statistics only)"
    if spec.needs_test and test is None:
        return "needs --test (held-out real data)"
    if spec.needs_labels and fake.labels is None:
        return "needs labels (class subfolders or a 'labels' array)"
    sets = (("samples", fake), ("reference", real if spec.needs_real and real.has_samples else None),
            ("test set", test if spec.needs_test else None))
    for role, fs in sets:
        if fs is not None and _array_for(spec, fs) is None:
            return f"needs '{spec.array}' arrays in the {role} (use an encoder that has them)"
        if fs is not None and fs.n < spec.min_samples:
            return f"needs at least {spec.min_samples} samples, the {role} has {fs.n}"
    return None


def plan_metrics(requested: tuple[str, ...] | None, fake: FeatureSet, real: FeatureSet,
                 test: FeatureSet | None) -> tuple[list[MetricSpec], dict[str, str]]:
    """Which metrics run, and which are skipped with the reason.

    With an explicit list, a metric whose inputs are missing is an input error; with ``all``
    it is skipped and reported.
    """
    names = requested or tuple(list_metrics())
    run, skipped = [], {}
    for name in names:
        spec = get_metric(name)
        why = _missing_inputs(spec, fake, real, test)
        if why is None:
            run.append(spec)
        elif requested:
            raise MetricInputError(f"metric {name} {why} ({fake.source})")
        else:
            skipped[name] = why
    return run, skipped


def check_dims(specs: Iterable[MetricSpec], fake: FeatureSet, real: FeatureSet,
               test: FeatureSet | None) -> None:
    """Feature dimensions must agree between the sets a metric compares."""
    for spec in specs:
        a = _array_for(spec, fake).shape[1]
        others = []
        if spec.needs_real:
            st = _moments_for(spec, real)
            others.append(("reference statistics" if st is not None else "reference", real,
                           st[0].shape[0] if st is not None else _array_for(spec, real).shape[1]))
        if spec.needs_test:
            others.append(("test", test, _array_for(spec, test).shape[1]))
        for role, fs, b in others:
            if a != b:
                raise InputError(
                    f"{spec.array} dims differ: samples {a} ({fake.source}) vs {role} {b} "
                    f"({fs.source}) (same --encoder for both?)")


def stream_name(spec: MetricSpec) -> str:
    """The RNG child of a metric function (shared by the entries one function reports)."""
    return f"{spec.fn.__module__}.{spec.fn.__qualname__}"


def compute_metrics(specs: list[MetricSpec], fake: FeatureSet, real: FeatureSet,
                    test: FeatureSet | None, *, rng: RunRNG, device: str,
                    overrides: dict[str, Any] | None = None, stream: tuple = (),
                    ) -> tuple[dict[str, float], dict[str, Any], dict[str, float]]:
    """Call each metric function once (metrics sharing a function share one call).

    Each function draws from its own child of ``rng`` (``("metric", <function>, *stream)``).
    Returns (values, details, seconds per metric). Keys starting with "_" that a metric
    returns are details (curves, per-class values), kept out of the values.
    """
    values: dict[str, float] = {}
    details: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    done: dict[tuple[int, str], dict[str, Any]] = {}
    for spec in specs:
        memo_key = (id(spec.fn), spec.array)
        if memo_key not in done:
            t0 = time.perf_counter()
            # moments first: a statistics-only reference, or published statistics a protocol
            # attached to a reference with samples (ADM's batch: fd/sfid vs the whole dataset)
            if not (spec.needs_real and _moments_for(spec, real) is not None):
                done[memo_key] = _call(spec, fake, real, test, overrides,
                                       seed=rng.seed_for("metric", stream_name(spec), *stream),
                                       device=device)
            else:
                mu, cov = _moments_for(spec, real)
                done[memo_key] = spec.moments(mu, cov, _array_for(spec, fake), device=device)
            seconds[spec.name] = round(time.perf_counter() - t0, 4)
        out = done[memo_key]
        for key in spec.keys:
            if key in out and out[key] is not None:
                values[key] = float(out[key])
        extra = {k: v for k, v in out.items() if k.startswith("_")}
        if extra and spec.name == spec.keys[0]:
            details.setdefault(spec.name, {}).update(extra)
    return values, details, seconds


def _call(spec: MetricSpec, fake: FeatureSet, real: FeatureSet, test: FeatureSet | None,
          overrides: dict[str, Any] | None, *, seed: int, device: str) -> dict[str, Any]:
    arrays: dict[str, Any] = {"fake": _array_for(spec, fake), "labels": fake.labels}
    if spec.needs_real:
        arrays["real"] = _array_for(spec, real)
    if spec.needs_test:
        arrays["test"] = _array_for(spec, test)
    arrays.update((overrides or {}).get(spec.name, {}))
    return spec(seed=seed, device=device, **arrays)


def subsample(fs: FeatureSet | None, nsample: int | None, rng: RunRNG, role: str
              ) -> FeatureSet | None:
    """At most ``nsample`` rows of ``fs``, drawn without replacement on the run's
    ``("subsample", role)`` stream, kept in source order."""
    if fs is None or nsample is None or not fs.has_samples or fs.n <= nsample:
        return fs
    gen = rng.generator("subsample", role)
    return fs.subset(np.sort(gen.choice(fs.n, size=nsample, replace=False)))


def fingerprint_of(fs: FeatureSet) -> str | None:
    """The source's content fingerprint, else a hash of the feature array itself."""
    fp = (fs.meta.get("source") or {}).get("fingerprint")
    if fp or not fs.has_samples:
        return fp
    feats = np.ascontiguousarray(fs.arrays["features"])
    return "sha256:" + hashlib.sha256(feats.tobytes()).hexdigest()


def describe_set(fs: FeatureSet | None, name: str | None = None) -> dict[str, Any] | None:
    """The record's ``samples``/``reference``/``test`` entry of ``fs``."""
    if fs is None:
        return None
    out: dict[str, Any] = {"source": fs.source, "n": fs.n, "fingerprint": fingerprint_of(fs)}
    if name is not None:
        out["name"] = name
    if not fs.has_samples:
        out["stats_only"] = True
    if fs.meta.get("n_skipped"):
        out["n_skipped"] = fs.meta["n_skipped"]
    return out


def identity_of(fs: FeatureSet | None) -> EncoderIdentity | None:
    """The encoder identity recorded in ``fs.meta`` (None when it records none)."""
    if fs is None:
        return None
    enc = fs.meta.get("encoder")
    if not isinstance(enc, dict):
        return None
    return EncoderIdentity.from_dict(dict(enc, precision=enc.get("precision")
                                          or fs.meta.get("precision")))


def check_same_encoder(fake: FeatureSet, other: FeatureSet | None, role: str) -> None:
    """Refuse to compare sets whose recorded encoder identities differ."""
    a, b = identity_of(fake), identity_of(other)
    if a is not None and b is not None and a != b:
        raise InputError(f"{fake.source} and {role} {other.source} were encoded differently "
                         f"({', '.join(a.differences(b))})")


def score_set(fake: FeatureSet, real: FeatureSet, test: FeatureSet | None, config: ScoreConfig,
              *, name: str, ref_name: str | None = None) -> tuple[dict[str, Any], FeatureSet]:
    """Score one generated set; returns (record, the generated set actually scored)."""
    rng = RunRNG(config.seed)
    fake_s, real_s, test_s = (subsample(fs, config.nsample, rng, role)
                              for fs, role in zip((fake, real, test), ROLES))
    check_same_encoder(fake_s, real_s, "reference")
    check_same_encoder(fake_s, test_s, "test set")
    specs, skipped = plan_metrics(config.metrics, fake_s, real_s, test_s)
    check_dims(specs, fake_s, real_s, test_s)
    t0 = time.perf_counter()
    values, details, seconds = compute_metrics(specs, fake_s, real_s, test_s, rng=rng,
                                               device=config.device,
                                               overrides=config.metric_overrides())
    ident = identity_of(fake_s) or identity_of(real_s)
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "samples": describe_set(fake_s),
        "reference": describe_set(real_s, ref_name),
        "test": describe_set(test_s),
        "encoder": ident.as_dict() if ident is not None else dict.fromkeys(
            ("name", "arch", "weights_sha256", "preprocess")),
        "config": config.as_dict(),
        "metrics": values,
    }
    if config.bootstrap:
        record["metrics_ci"] = bootstrap_intervals(
            specs, fake_s, real_s, test_s, estimates=values, rounds=config.bootstrap, rng=rng,
            device=config.device, confidence=config.confidence,
            overrides=config.metric_overrides(), progress=config.progress)
    record["skipped"] = skipped
    record["details"] = details
    record["per_sample"] = None
    record["timing"] = {"extract_s": float(fake.meta.get("extract_s", 0.0)),
                        "metrics_s": seconds,
                        "metrics_total_s": round(time.perf_counter() - t0, 4)}
    record["versions"] = versions()
    return record, fake_s
