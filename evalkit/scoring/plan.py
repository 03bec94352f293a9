"""Which metrics run on which feature sets: the metric list, missing inputs, dimensions.

A statistics-only reference (``FeatureSet.has_samples`` False) is used by the metrics whose
registry entry declares ``moments`` (a function of the reference's mean and covariance);
every other metric is skipped (or, asked for by name, an input error). The same holds for a
generated set streamed to its moments (:func:`evalkit.features.loader.load_generated` with
``moments``): only those metrics run on it.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from evalkit.errors import InputError, MetricInputError
from evalkit.features.featureset import FeatureSet
from evalkit.metrics import MetricSpec, get_metric, list_metrics


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


def array_for(spec: MetricSpec, fs: FeatureSet) -> np.ndarray | None:
    """The array ``spec`` reads from ``fs`` (its declared array, else its fallback), or None."""
    arr = fs.get(spec.array)
    if arr is None and spec.fallback:
        arr = fs.get(spec.fallback)
    return arr


def moments_for(spec: MetricSpec, real: FeatureSet) -> tuple[np.ndarray, np.ndarray] | None:
    """The statistics-only reference's (mean, covariance) that ``spec`` can run from, or None."""
    if spec.moments is None:
        return None
    return real.moments.get(spec.array) or (real.moments.get(spec.fallback)
                                            if spec.fallback else None)


def fake_moments(spec: MetricSpec, fake: FeatureSet) -> tuple[np.ndarray, np.ndarray] | None:
    """The (mean, covariance) of a generated set streamed to its moments (no rows kept),
    when ``spec`` can run from them."""
    if spec.moments is None or fake.has_samples:
        return None
    return fake.moments.get(spec.array) or (fake.moments.get(spec.fallback)
                                            if spec.fallback else None)


def missing_inputs(spec: MetricSpec, fake: FeatureSet, real: FeatureSet,
                    test: FeatureSet | None) -> str | None:
    """Why ``spec`` cannot run on these sets, or None when it can."""
    if not fake.has_samples and fake_moments(spec, fake) is None:
        return ("needs the generated rows (the samples were reduced to their mean and "
                "covariance)")
    if spec.needs_real and not real.has_samples and moments_for(spec, real) is None:
        if spec.moments is not None:
            return f"needs {spec.array} statistics, the reference statistics have none"
        return "needs a reference with samples (the reference has statistics only)"
    if spec.needs_test and test is None:
        return "needs --test (held-out real data)"
    if spec.needs_labels and fake.labels is None:
        return "needs labels (class subfolders or a 'labels' array)"
    if spec.needs_real_labels and (not real.has_samples or real.labels is None):
        return "needs reference labels (class subfolders or a 'labels' array in the reference)"
    if spec.needs_prompts and fake.prompts is None:
        return "needs prompts (--prompts FILE)"
    if spec.needs_text and fake.get("text") is None:
        return ("needs prompt embeddings (--prompts FILE with --encoder clip)" if fake.prompts is None
                else "needs prompt embeddings (prompts are embedded with --encoder clip)")
    sets = (("samples", fake if fake.has_samples else None),
            ("reference", real if spec.needs_real and real.has_samples else None),
            ("test set", test if spec.needs_test else None))
    if not fake.has_samples and fake.n is not None and fake.n < spec.min_samples:
        return f"needs at least {spec.min_samples} samples, the samples have {fake.n}"
    for role, fs in sets:
        if fs is not None and array_for(spec, fs) is None:
            return f"needs '{spec.array}' arrays in the {role} (use an encoder that has them)"
        if fs is not None and fs.n < spec.min_samples:
            return (f"needs at least {spec.min_samples} samples, the {role} "
                    f"{'have' if role == 'samples' else 'has'} {fs.n}")
        if fs is not None and array_for(spec, fs).shape[1] < spec.min_dim:
            return (f"needs features of at least {spec.min_dim} dimensions, the {role} "
                    f"{'have' if role == 'samples' else 'has'} {array_for(spec, fs).shape[1]}")
    return None


def moment_arrays(requested: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The arrays a generated set may be reduced to (mean, covariance) as it streams, when
    every requested metric runs from those alone (``fd``, ``sfid``); None when any needs
    rows (``fd_inf``, ``kd``, ``is``, ...) or the list is ``all``."""
    if not requested:
        return None
    specs = [get_metric(name) for name in requested]
    if any(spec.moments is None or spec.fallback for spec in specs):
        return None
    return tuple(dict.fromkeys(spec.array for spec in specs))


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
        why = missing_inputs(spec, fake, real, test)
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
        st = fake_moments(spec, fake)
        a = st[0].shape[0] if st is not None else array_for(spec, fake).shape[1]
        others = []
        if spec.needs_real:
            st = moments_for(spec, real)
            others.append(("reference statistics" if st is not None else "reference", real,
                           st[0].shape[0] if st is not None else array_for(spec, real).shape[1]))
        if spec.needs_test:
            others.append(("test", test, array_for(spec, test).shape[1]))
        for role, fs, b in others:
            if a != b:
                raise InputError(
                    f"{spec.array} dims differ: samples {a} ({fake.source}) vs {role} {b} "
                    f"({fs.source}) (same --encoder for both?)")
