"""Leaderboards: result records -> one ranked table per protocol, as md/csv/html/latex/json.

Records whose protocol differs (encoder or its weights, preprocessing, reference
fingerprint, N; see :func:`evalkit.results.record.protocol_of`) never share a column: each protocol
gets its own table, with the protocol stated above it. Metrics that read the test set (C_T,
FLS) of records scored against different test sets get one table per test set. Within a
table, rows are models, columns are metrics with their direction in the header (↓ lower is better, ↑ higher is
better, →0 closer to zero is better), a rank column, and the best value per column marked.
Numbers keep 4 significant digits; a 95% bootstrap interval (``metrics_ci``) is shown as
``value [lo, hi]``.

Per-condition values (the metrics that declare an ``Output.column``: ``fd_per_class`` and the
other per-class PRDC values, ``prompt_vendi``/``prompt_similarity``) come after the overall
columns, each group's together: under one header group ("per class", "per prompt") in md
(``per class: fd``), html and latex, as ``per_class.fd`` columns in csv.
"""
from __future__ import annotations

import glob
import json
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evalkit.errors import InputError
from evalkit.lazy import pandas as pd
from evalkit.metrics import result_column_groups
from evalkit.results.directions import direction_of, metric_directions
from evalkit.results.record import (
    load_records,
    metric_keys,
    protocol_of,
    test_fingerprint,
    test_set_keys,
)
from evalkit.results.renderers import render

# Default ranking key: the first of these present in a table.
RANK_PREFERENCE = ("fd", "fd_inf", "kd", "cmmd", "sfid", "precision", "is")


# ----------------------------------------------------------------------------- inputs


def collect_records(inputs: Iterable[str]) -> list[dict[str, Any]]:
    """Records from files, directories (every ``*.json`` directly inside) and glob patterns.

    An explicit file that is not a record is an InputError; JSON files found in a directory or
    through a glob that are not records are skipped with a warning.
    """
    records: list[dict[str, Any]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            records.extend(load_records(path))
            continue
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            origin = f"directory {path}"
        else:
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            origin = f"pattern {item!r}"
            if not glob.has_magic(str(item)):
                raise InputError(f"{item}: no such file or directory")
        if not found:
            raise InputError(f"{item}: no result records (*.json) found in {origin}")
        for f in found:
            try:
                records.extend(load_records(f))
            except InputError as exc:
                warnings.warn(f"skipping {exc}", stacklevel=2)
    if not records:
        raise InputError("no result records found in: " + ", ".join(map(str, inputs)))
    return records


# ----------------------------------------------------------------------------- tables


def _protocol_key(record: dict[str, Any]) -> str:
    return json.dumps(protocol_of(record), sort_keys=True, default=str)


def _metric_order(keys: set[str]) -> list[str]:
    """Overall columns in listing order (unknown keys after them), then each per-condition
    group's columns together, groups in the order their first key is listed."""
    known = [k for k in metric_keys() if k in keys]
    groups = result_column_groups()
    overall = [k for k in known if k not in groups] + sorted(keys - set(known))
    by_group: dict[str, list[str]] = {}
    for k in known:
        if k in groups:
            by_group.setdefault(groups[k][0], []).append(k)
    return overall + [k for cols in by_group.values() for k in cols]


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _row_names(group: list[dict[str, Any]]) -> list[str]:
    """Model names, made unique with the record file's name (then a counter) when repeated."""
    names = [str(r.get("name") or Path(r.get("_path", "record")).stem) for r in group]
    counts = Counter(names)
    out: list[str] = []
    taken: set[str] = set()
    for i, (name, rec) in enumerate(zip(names, group)):
        if counts[name] > 1:
            name = f"{name} [{Path(rec.get('_path', '')).name or i}]"
        while name in taken:
            name = f"{name}#{i}"
        out.append(name)
        taken.add(name)
    return out


def _score_for_ranking(values: pd.Series, direction: str) -> pd.Series:
    """Values turned so that smaller is better (NaN stays NaN)."""
    if direction == "higher":
        return -values
    if direction == "zero":
        return values.abs()
    return values


def build_tables(
    records: Sequence[dict[str, Any]],
    sort: str | None = None,
    metrics: Sequence[str] | None = None,
) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Group records by protocol and build one ranked table per protocol.

    Args:
        records: result records (as returned by :func:`evalkit.results.record.load_records`).
        sort: metric key to rank by (default: the first of ``RANK_PREFERENCE`` present,
            else the first metric with a direction).
        metrics: keep only these metric columns (default: every metric present).

    Returns:
        ``[(protocol, frame)]`` in order of first appearance. ``frame`` is indexed by model
        name, holds a ``rank`` column (1 = best by the sort key; ties share the lower rank)
        and raw float metric columns, sorted by rank. ``frame.attrs`` holds ``directions``
        (per column), ``best`` (column -> list of best models), ``ci`` (column -> model ->
        [lo, hi]), ``sort`` (the ranking key), ``protocol``, ``references`` (names) and
        ``groups`` (per-condition column -> (group, label)).

    Raises:
        InputError: an unknown or direction-less ``sort`` key, or no metric left to show.
    """
    directions = metric_directions()
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(_protocol_key(rec), []).append(rec)
    tables = []
    test_keys = test_set_keys()
    for key, group in groups.items():
        proto = json.loads(key)
        tested = [r for r in group if set(r.get("metrics") or {}) & test_keys]
        fps = list(dict.fromkeys(test_fingerprint(r) for r in tested))
        if len(fps) <= 1:
            tables.append((proto, _build_one(group, sort, metrics, directions)))
            continue
        # C_T and FLS of records scored against different test sets never share a column:
        # the other metrics in one table, those in one table per test set.
        present = set().union(*(set(r.get("metrics") or {}) for r in group))
        wanted = present if metrics is None else set(metrics) & present
        for cols, recs, where in [(wanted - test_keys, group, None)] + [
                (wanted & test_keys, [r for r in tested if test_fingerprint(r) == fp], fp) for fp in fps]:
            if not cols:
                continue
            frame = _build_one(recs, sort if sort in cols else None, sorted(cols), directions)
            frame.attrs["protocol"] = proto if where is None else dict(proto, test=where)
            tables.append((frame.attrs["protocol"], frame))
    return tables


def _build_one(group, sort, metrics, directions) -> pd.DataFrame:
    present = set().union(*(set((r.get("metrics") or {}).keys()) for r in group))
    cols = _metric_order(present if metrics is None else set(metrics) & present)
    if not cols:
        wanted = ", ".join(metrics) if metrics else "any metric"
        raise InputError(f"no records hold {wanted} (they have: {', '.join(sorted(present))})")
    names = _row_names(group)
    _refuse_mixed_exactness(group, names, cols)
    frame = pd.DataFrame(
        [[_as_float((r.get("metrics") or {}).get(c)) for c in cols] for r in group],
        index=pd.Index(names, name="model"), columns=cols, dtype=float,
    )
    dirs = {c: direction_of(c, directions) for c in cols}
    key = _sort_key(sort, cols, dirs)
    score = _score_for_ranking(frame[key], dirs[key])
    frame.insert(0, "rank", score.rank(method="min", na_option="bottom").astype(int))
    frame = frame.assign(_s=score).sort_values(["_s"], kind="stable", na_position="last")
    frame = frame.drop(columns="_s")
    best = {}
    for c in cols:
        if dirs[c] == "none" or frame[c].isna().all():
            continue
        s = _score_for_ranking(frame[c], dirs[c])
        best[c] = list(frame.index[s == s.min()])
    ci: dict[str, dict[str, list[float]]] = {}
    for name, rec in zip(names, group):
        for c, bounds in (rec.get("metrics_ci") or {}).items():
            if c in cols and isinstance(bounds, (list, tuple)) and len(bounds) == 2:
                ci.setdefault(c, {})[name] = [_as_float(bounds[0]), _as_float(bounds[1])]
    frame.attrs.update(
        directions=dirs, best=best, ci=ci, sort=key, protocol=protocol_of(group[0]),
        groups={c: g for c, g in result_column_groups().items() if c in cols},
        references=sorted({str((r.get("reference") or {}).get("name")) for r in group
                           if (r.get("reference") or {}).get("name")}),
        sources={n: r.get("_path") for n, r in zip(names, group)},
    )
    return frame


def _refuse_mixed_exactness(group, names, cols) -> None:
    """A column must not hold a paper-exact number (``protocol.exact``: every convention the
    original tool's) beside one that is not: they are not comparable."""
    for c in cols:
        held = [(n, c in ((r.get("protocol") or {}).get("exact") or ())) for n, r in zip(names, group)
                if c in (r.get("metrics") or {})]
        if len({exact for _, exact in held}) > 1:
            exact = ", ".join(n for n, e in held if e)
            other = ", ".join(n for n, e in held if not e)
            raise InputError(f"{c}: paper-exact in {exact} but not in {other} (records of another "
                             "evalkit version or protocol); score them again with the same "
                             "--protocol to compare")


def _sort_key(sort: str | None, cols: list[str], dirs: dict[str, str]) -> str:
    if sort is not None:
        if sort not in cols:
            raise InputError(f"--sort {sort}: no such metric in these records "
                             f"(have: {', '.join(cols)})")
        if dirs[sort] == "none":
            raise InputError(f"--sort {sort}: this key has no better direction; pick a metric")
        return sort
    for k in RANK_PREFERENCE:
        if k in cols:
            return k
    ranked = [c for c in cols if dirs[c] != "none"]
    return ranked[0] if ranked else cols[0]


# ----------------------------------------------------------------------------- formatting


def leaderboard(inputs: Iterable[str], fmt: str = "md", sort: str | None = None,
                metrics: Sequence[str] | None = None) -> str:
    """Collect records from ``inputs`` and render their leaderboard(s) in ``fmt``."""
    return render(build_tables(collect_records(inputs), sort=sort, metrics=metrics), fmt)


