"""Leaderboards: result records -> one ranked table per protocol, as md/csv/html/latex/json.

Records whose protocol differs (encoder or its weights, preprocessing, reference
fingerprint, N; see :func:`evalkit.results.record.protocol_of`) never share a column: each protocol
gets its own table, with the protocol stated above it. Within a table, rows are models,
columns are metrics with their direction in the header (↓ lower is better, ↑ higher is
better, →0 closer to zero is better), a rank column, and the best value per column marked.
Numbers keep 4 significant digits; a 95% bootstrap interval (``metrics_ci``) is shown as
``value [lo, hi]``.
"""
from __future__ import annotations

import glob
import html
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import InputError
from evalkit.formatting import format_number  # noqa: F401 (check, report, tests)
from evalkit.lazy import pandas as pd
from evalkit.results.record import load_records, metric_keys, protocol_of

FORMATS = ("md", "csv", "html", "latex", "json")
ARROWS = {"lower": "↓", "higher": "↑", "zero": "→0", "none": ""}
# Default ranking key: the first of these present in a table.
RANK_PREFERENCE = ("fd", "fd_inf", "kd", "cmmd", "sfid", "precision", "is")


def metric_directions() -> dict[str, str]:
    """Direction of every result key, as the metric registry declares it."""
    from evalkit.metrics import result_directions

    return dict(result_directions())


def direction_of(key: str, directions: dict[str, str] | None = None) -> str:
    """``lower`` | ``higher`` | ``zero`` | ``none`` for ``key`` (``*_std``: none)."""
    directions = directions if directions is not None else metric_directions()
    return directions.get(key, "none")


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
    known = [k for k in metric_keys() if k in keys]
    return known + sorted(keys - set(known))


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _row_names(group: list[dict[str, Any]]) -> list[str]:
    """Model names, made unique with the record file's name (then a counter) when repeated."""
    names = [str(r.get("name") or Path(r.get("_path", "record")).stem) for r in group]
    out = []
    for i, (name, rec) in enumerate(zip(names, group)):
        if names.count(name) > 1:
            name = f"{name} [{Path(rec.get('_path', '')).name or i}]"
        while name in out:
            name = f"{name}#{i}"
        out.append(name)
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
        [lo, hi]), ``sort`` (the ranking key), ``protocol`` and ``references`` (names).

    Raises:
        InputError: an unknown or direction-less ``sort`` key, or no metric left to show.
    """
    directions = metric_directions()
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(_protocol_key(rec), []).append(rec)
    tables = []
    for key, group in groups.items():
        tables.append((json.loads(key), _build_one(group, sort, metrics, directions)))
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


def describe_protocol(protocol: dict[str, Any], references: Sequence[str] = ()) -> str:
    """One line stating a table's protocol: encoder/arch, weights, preprocessing, reference, N."""
    enc = f"{protocol.get('encoder') or '?'}/{protocol.get('arch') or '?'}"
    parts = [f"encoder {enc}"]
    if protocol.get("protocol"):
        short = " (sample count NOT met)" if protocol.get("protocol_complete") is False else ""
        parts.insert(0, f"paper protocol {protocol['protocol']}{short}")
    if protocol.get("weights_sha256"):
        parts.append(f"weights {str(protocol['weights_sha256'])[:12]}")
    pre = protocol.get("preprocess")
    if pre:
        try:
            p = json.loads(pre) if isinstance(pre, str) else pre
            parts.append(f"preprocess {p.get('resize', '?')} {p.get('size', '')}".rstrip())
        except (ValueError, AttributeError):
            parts.append(f"preprocess {str(pre)[:40]}")
    ref = ", ".join(references) if references else "reference"
    parts.append(f"{ref} {str(protocol.get('reference') or '?')[:12]}")
    parts.append(f"N={protocol.get('n') if protocol.get('n') is not None else '?'}")
    if protocol.get("nsample") is not None:
        parts.append(f"nsample={protocol['nsample']}")
    return "Protocol: " + " · ".join(parts)


def _header(col: str, dirs: dict[str, str]) -> str:
    arrow = ARROWS.get(dirs.get(col, "none"), "")
    return f"{col} {arrow}".rstrip()


def _cell(frame: pd.DataFrame, model: str, col: str) -> tuple[str, bool]:
    value = frame.at[model, col]
    text = format_number(value)
    bounds = frame.attrs["ci"].get(col, {}).get(model)
    if bounds is not None:
        text += f" [{format_number(bounds[0])}, {format_number(bounds[1])}]"
    return text, model in frame.attrs["best"].get(col, [])


def _metric_cols(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c != "rank"]


def render(tables: list[tuple[dict[str, Any], pd.DataFrame]], fmt: str = "md") -> str:
    """Render tables from :func:`build_tables` as ``md``, ``csv``, ``html``, ``latex`` or ``json``."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return {"md": _md, "csv": _csv, "html": _html, "latex": _latex, "json": _json}[fmt](tables)


def _title(frame: pd.DataFrame) -> str:
    return describe_protocol(frame.attrs["protocol"], frame.attrs["references"])


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md(tables) -> str:
    out = []
    for _, frame in tables:
        cols = _metric_cols(frame)
        dirs = frame.attrs["directions"]
        out.append(f"**{_md_escape(_title(frame))}** (ranked by `{frame.attrs['sort']}`)\n")
        out.append("| rank | model | " + " | ".join(_header(c, dirs) for c in cols) + " |")
        out.append("|---:|:---|" + "---:|" * len(cols))
        for model in frame.index:
            cells = []
            for c in cols:
                text, best = _cell(frame, model, c)
                cells.append(f"**{text}**" if best else text)
            out.append(f"| {frame.at[model, 'rank']} | {_md_escape(model)} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("↓ lower is better · ↑ higher is better · →0 closer to zero is better · "
               "**bold**: best in column")
    return "\n".join(out) + "\n"


def _csv_number(x: float) -> str:
    return "" if x is None or math.isnan(x) else format_number(x)


def _csv(tables) -> str:
    blocks = []
    for _, frame in tables:
        cols = _metric_cols(frame)
        dirs = frame.attrs["directions"]
        data: dict[str, list[str]] = {"rank": [str(r) for r in frame["rank"]], "model": list(frame.index)}
        for c in cols:
            data[_header(c, dirs)] = [
                _csv_number(frame.at[m, c]) + ("*" if m in frame.attrs["best"].get(c, []) else "")
                for m in frame.index
            ]
            if c in frame.attrs["ci"]:
                bounds = [frame.attrs["ci"][c].get(m, [float("nan")] * 2) for m in frame.index]
                data[f"{c} ci_lo"] = [_csv_number(b[0]) for b in bounds]
                data[f"{c} ci_hi"] = [_csv_number(b[1]) for b in bounds]
        text = pd.DataFrame(data).to_csv(index=False, lineterminator="\n")
        blocks.append(f"# {_title(frame)}; ranked by {frame.attrs['sort']}; * marks the best\n{text}")
    return "\n".join(blocks)


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 2em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th { background: #f4f4f4; } td.model, th.model { text-align: left; }
td.best { font-weight: bold; background: #eef7ee; }
p.protocol { font-size: 0.95em; color: #444; margin-bottom: 0; }
"""


def html_table(frame: pd.DataFrame) -> str:
    """One leaderboard table as an HTML ``<table>`` (used by ``render`` and the report)."""
    cols = _metric_cols(frame)
    dirs = frame.attrs["directions"]
    head = "".join(f"<th>{html.escape(_header(c, dirs))}</th>" for c in cols)
    rows = []
    for model in frame.index:
        cells = []
        for c in cols:
            text, best = _cell(frame, model, c)
            cls = ' class="best"' if best else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        rows.append(f"<tr><td>{frame.at[model, 'rank']}</td><td class=\"model\">"
                    f"{html.escape(model)}</td>{''.join(cells)}</tr>")
    return (f"<table><thead><tr><th>rank</th><th class=\"model\">model</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _html(tables) -> str:
    parts = []
    for _, frame in tables:
        parts.append(f"<p class=\"protocol\">{html.escape(_title(frame))} (ranked by "
                     f"<code>{html.escape(frame.attrs['sort'])}</code>)</p>")
        parts.append(html_table(frame))
    legend = ("<p>↓ lower is better · ↑ higher is better · →0 closer to zero is better · "
              "<b>bold</b>: best in column</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>evalkit leaderboard</title><style>{_HTML_STYLE}</style></head>"
            f"<body><h1>Leaderboard</h1>{''.join(parts)}{legend}</body></html>\n")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}
_LATEX_ARROWS = {"lower": r" $\downarrow$", "higher": r" $\uparrow$", "zero": r" $\to 0$", "none": ""}


def _tex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text).replace("–", "--").replace("·", r"$\cdot$")


def _latex(tables) -> str:
    out = []
    for _, frame in tables:
        cols = _metric_cols(frame)
        dirs = frame.attrs["directions"]
        out += [r"\begin{table}[t]", r"\centering",
                rf"\caption{{{_tex(_title(frame))} (ranked by {_tex(frame.attrs['sort'])})}}",
                r"\begin{tabular}{rl" + "r" * len(cols) + "}", r"\hline",
                "rank & model & " + " & ".join(_tex(c) + _LATEX_ARROWS[dirs[c]] for c in cols)
                + r" \\", r"\hline"]
        for model in frame.index:
            cells = []
            for c in cols:
                text, best = _cell(frame, model, c)
                cells.append(rf"\textbf{{{_tex(text)}}}" if best else _tex(text))
            out.append(f"{frame.at[model, 'rank']} & {_tex(model)} & " + " & ".join(cells) + r" \\")
        out += [r"\hline", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def _json_value(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _json(tables) -> str:
    payload = []
    for protocol, frame in tables:
        cols = _metric_cols(frame)
        rows = []
        for model in frame.index:
            rows.append({
                "model": model, "rank": int(frame.at[model, "rank"]),
                "metrics": {c: _json_value(frame.at[model, c]) for c in cols},
                "ci": {c: frame.attrs["ci"][c][model] for c in cols
                       if model in frame.attrs["ci"].get(c, {})},
                "best": [c for c in cols if model in frame.attrs["best"].get(c, [])],
                "record": frame.attrs["sources"].get(model),
            })
        payload.append({"protocol": protocol, "references": frame.attrs["references"],
                        "directions": frame.attrs["directions"], "sort": frame.attrs["sort"],
                        "rows": rows})
    return json.dumps(payload, indent=2, default=lambda o: None if isinstance(o, float) and
                      np.isnan(o) else str(o)) + "\n"


def leaderboard(inputs: Iterable[str], fmt: str = "md", sort: str | None = None,
                metrics: Sequence[str] | None = None) -> str:
    """Collect records from ``inputs`` and render their leaderboard(s) in ``fmt``."""
    return render(build_tables(collect_records(inputs), sort=sort, metrics=metrics), fmt)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table for terminals (first column left-aligned, others right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)]
                     + [line(r) for r in cells[1:]])
