"""Run the planned metric functions on feature sets, each on its own random stream.

Randomness comes from one :class:`~evalkit.scoring.rng.RunRNG` of ``--seed``: the ``--nsample``
subsample of each role and each metric function (one child stream per function, by name)
draw from their own streams.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from evalkit.features.featureset import FeatureSet
from evalkit.images.sources import RowSample
from evalkit.metrics import MetricSpec
from evalkit.scoring.plan import array_for, fake_moments, moments_for
from evalkit.scoring.rng import RunRNG


def stream_name(spec: MetricSpec) -> str:
    """The RNG child of a metric function (shared by the entries one function reports)."""
    return f"{spec.fn.__module__}.{spec.fn.__qualname__}"


class ResidentRows:
    """Reference arrays moved once to a device, as tensors, for the metrics that take them.

    ``ResidentRows(real, kinds, device)`` converts each of ``kinds`` present in ``real``
    (``torch.as_tensor``: its own dtype, float32 for extracted features; in host memory no copy
    at all) and holds it with the numpy array it came from; ``test`` and ``test_kinds`` do the
    same for a held-out set (``ct``, ``fls``). :meth:`get` then gives the tensor
    for that very array object (by identity, so a subsample or another set falls back to its
    own numpy rows) and the array itself otherwise. Scoring passes the tensor to metrics whose
    registry entry declares ``device_rows``; the others get the numpy array as before. What a
    :class:`~evalkit.integrations.TrainingEvaluator` uses so that the reference rows cross to
    the device once, not in every evaluation's metric calls.
    """

    def __init__(self, real: FeatureSet, kinds: Any, device: Any, *,
                 test: FeatureSet | None = None, test_kinds: Any = ()):
        import warnings

        from evalkit.lazy import torch
        from evalkit.metrics.primitives.common import resolve_device

        self.device = resolve_device(device)
        self.conversions = 0  # arrays moved (once each, here)
        self._held: dict[int, tuple[Any, Any]] = {}
        wanted = [(real, k) for k in kinds] + [(test, k) for k in test_kinds if test is not None]
        for fs, kind in wanted:
            arr = fs.get(kind) if fs.has_samples else None
            if arr is None or id(arr) in self._held:
                continue
            with warnings.catch_warnings():  # read-only arrays: nothing writes to the tensor
                warnings.simplefilter("ignore")
                self._held[id(arr)] = (arr, torch.as_tensor(arr).to(self.device))
            self.conversions += 1

    def get(self, arr: Any) -> Any:
        """The device tensor held for ``arr`` (this very object), else ``arr`` itself."""
        held = self._held.get(id(arr))
        return held[1] if held is not None and held[0] is arr else arr

    def tensors(self) -> list[Any]:
        """The held tensors."""
        return [t for _, t in self._held.values()]


def resident_kinds(specs: list[MetricSpec], real: FeatureSet, role: str = "real") -> tuple[str, ...]:
    """The arrays of ``real`` that the metrics of ``specs`` declaring ``device_rows`` read
    (``role="test"``: of a held-out set, for the metrics that read one)."""
    kinds = []
    for spec in specs:
        needs = spec.needs_test if role == "test" else spec.needs_real
        if spec.device_rows and needs and real.has_samples:
            arr = array_for(spec, real)
            kind = spec.array if real.get(spec.array) is not None else spec.fallback
            if arr is not None and kind is not None:
                kinds.append(kind)
    return tuple(dict.fromkeys(kinds))


def compute_metrics(specs: list[MetricSpec], fake: FeatureSet, real: FeatureSet,
                    test: FeatureSet | None, *, rng: RunRNG, device: str,
                    overrides: dict[str, Any] | None = None, stream: tuple = (),
                    resident: ResidentRows | None = None,
                    ) -> tuple[dict[str, float], dict[str, Any], dict[str, float]]:
    """Call each metric function once (metrics sharing a function share one call).

    Each function draws from its own child of ``rng`` (``("metric", <function>, *stream)``).
    Returns (values, details, seconds per metric). Keys starting with "_" that a metric
    returns are details (curves, per-class values), kept out of the values. ``resident``:
    reference rows already on the device, given to the metrics that declare ``device_rows``.
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
            if fake_moments(spec, fake) is not None:  # a stream reduced to its moments
                done[memo_key] = _from_both_moments(spec, fake, real, device)
            elif not (spec.needs_real and moments_for(spec, real) is not None):
                done[memo_key] = _call(spec, fake, real, test, overrides,
                                       seed=rng.seed_for("metric", stream_name(spec), *stream),
                                       device=device, resident=resident)
            else:
                mu, cov = moments_for(spec, real)
                done[memo_key] = spec.moments(mu, cov, array_for(spec, fake), device=device)
            seconds[spec.name] = round(time.perf_counter() - t0, 4)
        out = done[memo_key]
        for key in spec.keys:
            if key in out and out[key] is not None:
                values[key] = float(out[key])
        extra = {k: v for k, v in out.items() if k.startswith("_")}
        if extra and spec.name == spec.keys[0]:
            details.setdefault(spec.name, {}).update(extra)
    return values, details, seconds


def _from_both_moments(spec: MetricSpec, fake: FeatureSet, real: FeatureSet,
                       device: str) -> dict[str, Any]:
    """A moments metric of a generated set that kept only its (mean, covariance): the
    reference's moments are its statistics, or computed from its rows as the metric does
    (:func:`evalkit.metrics.frechet.moments`, float64 over row chunks)."""
    from evalkit.metrics.frechet import moments
    from evalkit.metrics.primitives.common import resolve_device

    st = moments_for(spec, real)
    if st is None:
        st = moments(array_for(spec, real), resolve_device(device), spec.name, "reference")
    return spec.moments(*st, fake_moments(spec, fake), device=device)


def _call(spec: MetricSpec, fake: FeatureSet, real: FeatureSet, test: FeatureSet | None,
          overrides: dict[str, Any] | None, *, seed: int, device: str,
          resident: ResidentRows | None = None) -> dict[str, Any]:
    arrays: dict[str, Any] = {"fake": array_for(spec, fake), "labels": fake.labels}
    if spec.needs_real:
        arrays["real"] = array_for(spec, real)
        if resident is not None and spec.device_rows:
            arrays["real"] = resident.get(arrays["real"])
    if spec.needs_test:
        arrays["test"] = array_for(spec, test)
        if resident is not None and spec.device_rows:
            arrays["test"] = resident.get(arrays["test"])
    if spec.needs_real_labels:
        arrays["real_labels"] = real.labels
    if spec.needs_text:
        arrays["text"] = fake.get("text")
    if spec.needs_prompts:
        arrays["prompts"] = prompt_ids(fake.prompts)
    arrays.update((overrides or {}).get(spec.name, {}))
    return spec(seed=seed, device=device, **arrays)


def prompt_ids(prompts: list[str] | None) -> np.ndarray | None:
    """An int per prompt, equal for equal prompts (ids in order of first appearance)."""
    if prompts is None:
        return None
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(p, len(ids)) for p in prompts], dtype=np.int64)


def subsample(fs: FeatureSet | None, nsample: int | None, rng: RunRNG, role: str
              ) -> FeatureSet | None:
    """At most ``nsample`` rows of ``fs``, drawn without replacement on the run's
    ``("subsample", role)`` stream, kept in source order (:func:`row_sample`). Sources read
    from paths are sampled before extraction with the same rule (so they arrive here with at
    most ``nsample`` rows); this takes the sample of sets given as features."""
    if fs is None or nsample is None or not fs.has_samples:
        return fs
    rows = row_sample(nsample, rng, role).rows(fs.n)
    return fs if rows is None else fs.subset(rows)


def row_sample(nsample: int, rng: RunRNG, role: str) -> RowSample:
    """``--nsample`` of one role (``samples``, ``reference``, ``test``): ``nsample`` rows on
    the run's ``("subsample", role)`` stream."""
    return RowSample(int(nsample), rng.child("subsample", role))
