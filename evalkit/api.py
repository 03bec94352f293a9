"""The Python API: `evalkit.score(samples, ref, ...)`, mirroring `evalkit score`."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from evalkit.errors import InputError
from evalkit.featureset import FeatureSet, validate
from evalkit.options import ExtractOptions
from evalkit.scoring import ScoreConfig, parse_metric_list, score_set

SourceLike = Union[str, os.PathLike, FeatureSet, np.ndarray]


@dataclass
class Result:
    """One scored sample set: ``metrics`` (key -> value) and the full result ``record``."""

    record: dict[str, Any]
    scored: FeatureSet | None = field(default=None, repr=False)

    @property
    def metrics(self) -> dict[str, float]:
        return self.record["metrics"]

    def __getitem__(self, key: str) -> float:
        return self.record["metrics"][key]


def load_source(source: SourceLike, options: ExtractOptions, *, role: str = "samples",
                ref_dir: str | None = None) -> FeatureSet:
    """Any source (path, feature array, FeatureSet, registered reference name) -> FeatureSet."""
    if isinstance(source, FeatureSet):
        return source
    if isinstance(source, np.ndarray):
        fs = FeatureSet({"features": source}, source=f"<array {role}>")
        validate(fs, fs.source)
        return fs
    path = Path(source)
    if path.exists():
        if role == "reference":
            from evalkit.refs import is_stats_file, load_stats_file

            if is_stats_file(path):
                return load_stats_file(path)
        from evalkit.pipeline import load_features

        return load_features(str(path), options)
    if role == "reference" and os.sep not in str(source) and path.suffix == "":
        from evalkit.catalog_refs import ensure
        from evalkit.refs import resolve_reference

        name = ensure(str(source), ref_dir, quiet=options.quiet)  # a catalog name: pulled once
        return resolve_reference(name, options, ref_dir, allow_stats=True)
    raise InputError(f"{source}: no such file or directory")


def default_name(source: SourceLike) -> str:
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        return p.stem if p.suffix else p.name
    if isinstance(source, FeatureSet) and source.source:
        return Path(source.source).stem or "samples"
    return "samples"


def score(samples: SourceLike | Sequence[SourceLike], ref: SourceLike, *,
          test: SourceLike | None = None, metrics: str | Sequence[str] = "all", seed: int = 0,
          nsample: int | None = None, bootstrap: int = 0, names: Sequence[str] | None = None,
          ref_dir: str | None = None, options: ExtractOptions | None = None,
          **extract: Any) -> Result | list[Result]:
    """Score one or several sample sets against one reference (loaded once).

    Args:
        samples: a source (image folder, zip, npz/npy, feature file), a FeatureSet, an N×D
            feature array, or a list of these.
        ref: the same kinds, or a registered reference name.
        test: held-out real data for ct / fls / fls_pog.
        metrics: "all" or metric keys ("fd,kd" or a list).
        options / extract: extraction options (ExtractOptions fields, e.g. encoder="inception").

    Returns:
        a Result per sample set (a single Result when ``samples`` is one source). Under
        torchrun, ranks other than 0 only extract and get ``[]`` / None.
    """
    opts = options or ExtractOptions(**extract)
    many = isinstance(samples, (list, tuple))
    sources = list(samples) if many else [samples]
    metric_names = metrics if isinstance(metrics, str) else ",".join(metrics)
    config = ScoreConfig(metrics=parse_metric_list(metric_names), seed=seed, nsample=nsample,
                         device=opts.device, bootstrap=bootstrap)
    real = load_source(ref, opts, role="reference", ref_dir=ref_dir)
    test_fs = load_source(test, opts, role="test") if test is not None else None
    ref_name = real.meta.get("reference_name")
    results = []
    for i, src in enumerate(sources):
        fake = load_source(src, opts, role="samples")
        if fake.meta.get("placeholder"):  # a non-zero torchrun rank: rank 0 scores
            continue
        name = names[i] if names else default_name(src)
        record, scored = score_set(fake, real, test_fs, config, name=name, ref_name=ref_name)
        results.append(Result(record, scored))
    return results if many else (results[0] if results else None)
