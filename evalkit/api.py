"""The Python API: `evalkit.score(samples, ref, ...)`, the scoring entry point `evalkit score`
wraps."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.distributed import is_main
from evalkit.errors import InputError
from evalkit.featureset import FeatureSet, validate
from evalkit.metrics import get_metric
from evalkit.options import ExtractOptions
from evalkit.outputs import per_sample_path, write_per_sample_csv
from evalkit.record import write_records
from evalkit.rng import RunRNG
from evalkit.scoring import ScoreConfig, parse_metric_list, score_set, stream_name

SourceLike = str | os.PathLike | FeatureSet | np.ndarray


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
        from evalkit.refs import resolve_reference

        return resolve_reference(str(source), options, ref_dir, allow_stats=True)
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
          per_sample: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
          ref_dir: str | None = None, options: ExtractOptions | None = None,
          **extract: Any) -> Result | list[Result] | None:
    """Score one or several sample sets against one reference (loaded once).

    The one scoring loop: ``evalkit score`` is a thin shell over it.

    Args:
        samples: a source (image folder, zip, npz/npy, feature file), a FeatureSet, an N×D
            feature array, or a list of these.
        ref: the same kinds, a statistics ``.npz`` (mu/sigma), or a registered reference name.
        test: held-out real data for ct / fls / fls_pog.
        metrics: "all" or metric keys ("fd,kd" or a list).
        seed: the run seed: subsampling, bootstrap and every metric's draws derive from it.
        nsample: use at most this many rows of each set (seeded subsample).
        bootstrap: B > 0 adds ``metrics_ci``, 95% percentile intervals from B resamples.
        names: model names, one per sample set (default: the sources' stems).
        per_sample: CSV path of realism, nearest reference and authenticity per generated
            sample (with several sets, one file per set: ``stem.NAME.csv``).
        out: write the records here (JSON, atomically): one object, or a list for several sets.
        options / extract: extraction options (ExtractOptions fields, e.g. encoder="inception").

    Returns:
        a Result per sample set (a single Result when ``samples`` is one source). Under
        torchrun, ranks other than 0 only help extract and get ``[]`` / None.

    Raises:
        InputError: bad sources, names or metric inputs (see :mod:`evalkit.errors`).
    """
    opts = options or ExtractOptions(**extract)
    many = isinstance(samples, (list, tuple))
    sources = list(samples) if many else [samples]
    names = list(names) if names else [default_name(s) for s in sources]
    if len(names) != len(sources):
        raise InputError(f"--name: {len(names)} names for {len(sources)} sample sets")
    metric_names = metrics if isinstance(metrics, str) else ",".join(metrics)
    config = ScoreConfig(metrics=parse_metric_list(metric_names), seed=seed, nsample=nsample,
                         device=opts.device, bootstrap=bootstrap)
    real = load_source(ref, opts, role="reference", ref_dir=ref_dir)
    test_fs = load_source(test, opts, role="test") if test is not None else None
    results = []
    for src, name in zip(sources, names):
        fake = load_source(src, opts, role="samples")
        if not is_main():  # torchrun: the other ranks only help extract
            continue
        record, scored = score_set(fake, real, test_fs, config, name=name,
                                   ref_name=real.meta.get("reference_name"))
        if per_sample is not None:
            path = per_sample_path(str(per_sample), name, len(sources) > 1)
            write_per_sample(path, scored, real, config)
            base = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
            record["per_sample"] = os.path.relpath(os.path.abspath(path), base)
        results.append(Result(record, scored))
    if out is not None and results:
        write_records([r.record for r in results], out)
    return results if many else (results[0] if results else None)


def write_per_sample(path: str | os.PathLike, scored: FeatureSet, real: FeatureSet,
                     config: ScoreConfig) -> None:
    """The per-sample CSV of ``scored`` against ``real``, on the realism metric's stream (so
    the CSV's realism values average to the record's ``realism``)."""
    if not real.has_samples:
        raise InputError(f"--per-sample needs reference features; {real.source} holds "
                         "statistics only")
    seed = RunRNG(config.seed).seed_for("metric", stream_name(get_metric("realism")))
    write_per_sample_csv(path, scored, real, seed=seed, device=config.device)
