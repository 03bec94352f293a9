"""The result record (SPEC "Result record"): constants, construction, JSON I/O.

Result keys are constants used everywhere, tests included.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from evalkit.errors import InputError
from evalkit.fileio import atomic_write_text

SCHEMA = "evalkit.result/1"
METRIC_KEYS = (
    "fd", "fd_inf", "sfid", "kd", "kd_std", "is", "is_std", "precision", "recall", "density",
    "coverage", "realism", "vendi", "vendi_per_class", "authpct", "ct", "fls", "fls_pog",
    "sw_approx", "cmmd",
)
# Renamed keys map old -> new here so old records keep loading.
DEPRECATED_KEYS: dict[str, str] = {}


def protocol_of(record: dict[str, Any]) -> dict[str, Any]:
    """What must match for two records to be comparable: encoder + weights, reference, protocol."""
    enc = record.get("encoder") or {}
    ref = record.get("reference") or {}
    cfg = record.get("config") or {}
    proto = record.get("protocol") or {}
    return {
        # a paper protocol (evalkit.protocols) and whether its sample count was met
        "protocol": proto.get("name"),
        "protocol_complete": proto.get("complete") if proto else None,
        "encoder": enc.get("name"),
        "arch": enc.get("arch"),
        "weights_sha256": enc.get("weights_sha256"),
        "preprocess": enc.get("preprocess"),
        "reference": ref.get("fingerprint"),
        "n": (record.get("samples") or {}).get("n"),
        "nsample": cfg.get("nsample"),
    }


def write_records(records: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write one record as an object, several as a list; atomically."""
    payload: Any = records[0] if len(records) == 1 else records
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a record file (one object or a list); InputError naming the file when invalid."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not a JSON result record ({exc})") from None
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not isinstance(item, dict) or item.get("schema") != SCHEMA or "metrics" not in item:
            raise InputError(f"{p}: not an evalkit result record (expected schema {SCHEMA!r})")
        for old, new in DEPRECATED_KEYS.items():
            if old in item["metrics"] and new not in item["metrics"]:
                item["metrics"][new] = item["metrics"].pop(old)
        item.setdefault("_path", str(p))
    return items
