"""The result record: constants, the one builder, JSON I/O.

Result keys are constants used everywhere, tests included.
"""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evalkit.errors import InputError
from evalkit.features.identity import IDENTITY_FIELDS, EncoderIdentity
from evalkit.files.fileio import atomic_write_text, read_json
from evalkit.provenance import versions

if TYPE_CHECKING:
    from evalkit.features.featureset import FeatureSet
    from evalkit.scoring.score import Scores

SCHEMA = "evalkit.result/1"
# Wall-clock facts: the only fields two runs with the same inputs and --seed may differ in.
VOLATILE_KEYS = ("created", "timing")
# Renamed keys map old -> new here so old records keep loading.
DEPRECATED_KEYS: dict[str, str] = {}


def metric_keys() -> tuple[str, ...]:
    """Every result key the metric registry declares, in listing order (the order `evalkit metrics` prints).

    Derived when asked (importing the metrics pulls in torch, which reading or writing a record
    does not need); ``METRIC_KEYS`` is the same tuple.
    """
    from evalkit.metrics import result_keys

    return result_keys()


def __getattr__(name: str) -> Any:
    if name == "METRIC_KEYS":
        return metric_keys()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def protocol_of(record: dict[str, Any]) -> dict[str, Any]:
    """What must match for two records to be comparable: encoder identity, reference, protocol.

    The encoder part is the record's :class:`~evalkit.features.identity.EncoderIdentity` (name as
    ``encoder``, arch, weights sha256, preprocessing, precision).
    """
    ident = EncoderIdentity.from_dict(record.get("encoder"))
    enc = ident.as_dict() if ident is not None else dict.fromkeys(IDENTITY_FIELDS)
    enc["encoder"] = enc.pop("name")
    ref = record.get("reference") or {}
    cfg = record.get("config") or {}
    proto = record.get("protocol") or {}
    return {
        # a paper protocol (evalkit.scoring.protocols) and whether its sample count was met
        "protocol": proto.get("name"),
        "protocol_complete": proto.get("complete") if proto else None,
        **enc,
        "reference": ref.get("fingerprint"),
        "n": (record.get("samples") or {}).get("n"),
        "nsample": cfg.get("nsample"),
    }


def test_set_keys() -> frozenset[str]:
    """Result keys of the metrics that read the held-out test set (C_T, FLS): their values
    depend on which test set was used, so records compare on them only with the same one."""
    from evalkit.metrics import metric_specs

    return frozenset(k for spec in metric_specs() if spec.needs_test for k in spec.keys)


def test_fingerprint(record: dict[str, Any]) -> str | None:
    """The fingerprint of the test set a record was scored with (None: no test set)."""
    return (record.get("test") or {}).get("fingerprint")


def protocol_for(record: dict[str, Any], key: str) -> dict[str, Any]:
    """:func:`protocol_of`, plus the test set's fingerprint for a key that reads the test set:
    what must match for two records' values of ``key`` to be comparable."""
    out = protocol_of(record)
    if key in test_set_keys():
        out["test"] = test_fingerprint(record)
    return out


def build_record(scores: Scores, *, per_sample: str | None = None,
                 per_class: str | None = None, protocol: dict[str, Any] | None = None,
                 generator: dict[str, Any] | None = None,
                 step: int | None = None) -> dict[str, Any]:
    """The result record of one scored set (the only place a record is assembled).

    Args:
        scores: what :func:`evalkit.scoring.score.score_set` computed.
        per_sample: the per-sample CSV's path relative to the record's folder, if written.
        per_class: the per-class CSV's path relative to the record's folder, if written.
        protocol: the paper protocol's fields
            (:meth:`evalkit.scoring.protocols.ResolvedProtocol.describe`), if one was used.
        generator: when the samples came from a generator
            (:meth:`evalkit.features.generate.GeneratedSource.describe`): its name, keyword
            arguments, sample count, batch size, seed, label mode and per-class count range.
        step: the training step (or epoch) the samples were drawn at, for `evalkit track`.
    """
    ident = scores.identity
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "name": scores.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "samples": describe_set(scores.samples),
        "reference": describe_set(scores.reference, scores.ref_name),
        "test": describe_set(scores.test),
        "encoder": ident.as_dict() if ident is not None else dict.fromkeys(
            ("name", "arch", "weights_sha256", "preprocess")),
        "config": scores.config.as_dict(),
        "metrics": scores.values,
    }
    if scores.intervals is not None:
        record["metrics_ci"] = scores.intervals
        if scores.no_interval:
            record["metrics_ci_missing"] = scores.no_interval  # key -> why it has no interval
    record["skipped"] = scores.skipped
    record["details"] = scores.details
    record["per_sample"] = per_sample
    if per_class is not None:
        record["per_class"] = per_class
    record["timing"] = scores.timing
    record["versions"] = versions()
    if protocol is not None:
        record["protocol"] = protocol
    if generator is not None:
        record["generator"] = generator
    if step is not None:
        record["step"] = int(step)
    return record


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
    sampled_from = (fs.meta.get("source") or {}).get("sampled_from")
    if sampled_from:  # --nsample taken at the source: of how many listed images
        out["sampled_from"] = int(sampled_from)
    for key in ("prompts", "text"):  # conditions: where the prompts came from, how they were embedded
        if fs.meta.get(key):
            out[key] = fs.meta[key]
    return out


def stable_view(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without its :data:`VOLATILE_KEYS`: equal (byte for byte as JSON) for two runs
    with the same inputs, options and ``--seed``."""
    return {k: v for k, v in record.items() if k not in VOLATILE_KEYS}


def write_records(records: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write one record as an object, several as a list; atomically."""
    payload: Any = records[0] if len(records) == 1 else records
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a record file (one object or a list); InputError naming the file when invalid."""
    p = Path(path)
    data = read_json(p, missing="no such file", bad="not a JSON result record")
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not isinstance(item, dict) or item.get("schema") != SCHEMA or "metrics" not in item:
            raise InputError(f"{p}: not an evalkit result record (expected schema {SCHEMA!r})")
        for old, new in DEPRECATED_KEYS.items():
            if old in item["metrics"] and new not in item["metrics"]:
                item["metrics"][new] = item["metrics"].pop(old)
        item.setdefault("_path", str(p))
    return items
