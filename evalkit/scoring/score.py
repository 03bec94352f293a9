"""Score one generated set against a reference: subsample, plan, run, bootstrap.

Data flows one way: FeatureSets (already extracted or loaded) -> metric functions ->
:class:`Scores`, which :func:`evalkit.results.record.build_record` turns into the result
record. Nothing here reads images or builds encoders.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import InputError
from evalkit.features.featureset import FeatureSet
from evalkit.features.identity import EncoderIdentity
from evalkit.metrics.prdc import REALISM_K
from evalkit.scoring.intervals import BOOTSTRAP_METHOD, bootstrap_intervals
from evalkit.scoring.plan import check_dims, plan_metrics
from evalkit.scoring.rng import RunRNG
from evalkit.scoring.run import ResidentRows, compute_metrics, subsample

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


@dataclass
class Scores:
    """What scoring one generated set produced; the result record is built from it."""

    name: str
    ref_name: str | None
    config: ScoreConfig
    samples: FeatureSet  # the set actually scored (after --nsample)
    reference: FeatureSet
    test: FeatureSet | None
    identity: EncoderIdentity | None
    values: dict[str, float]
    details: dict[str, Any]
    skipped: dict[str, str]
    intervals: dict[str, list[float]] | None = None
    no_interval: dict[str, str] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)


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
              *, name: str, ref_name: str | None = None,
              resident: ResidentRows | None = None) -> Scores:
    """Score one generated set: metric values, details, skipped metrics and intervals.

    ``resident``: ``real``'s rows already held on the device (:class:`ResidentRows`), given to
    the metrics that take tensors (the point estimates; intervals resample host arrays)."""
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
                                               overrides=config.metric_overrides(),
                                               resident=resident)
    intervals, no_interval = None, {}
    if config.bootstrap:
        intervals = bootstrap_intervals(
            specs, fake_s, real_s, test_s, estimates=values, rounds=config.bootstrap, rng=rng,
            device=config.device, confidence=config.confidence,
            overrides=config.metric_overrides(), progress=config.progress, label=name,
            missing=no_interval)
    timing = {"extract_s": float(fake.meta.get("extract_s", 0.0)), "metrics_s": seconds,
              "metrics_total_s": round(time.perf_counter() - t0, 4)}
    return Scores(name=name, ref_name=ref_name, config=config, samples=fake_s, reference=real_s,
                  test=test_s, identity=identity_of(fake_s) or identity_of(real_s), values=values,
                  details=details, skipped=skipped, intervals=intervals, no_interval=no_interval,
                  timing=timing)
