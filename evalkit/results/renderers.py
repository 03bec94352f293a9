"""Leaderboard tables rendered as md, csv, html, latex or json, and protocols described in words.

Each protocol's table is preceded by its description; metric columns carry their direction
arrow; the best value per column is marked; a 95% bootstrap interval (``metrics_ci``) shows as
``value [lo, hi]``. Those decorations are for people (md, html, latex); csv is plain data (one
header row, numbers, best marks and intervals in columns of their own) and json is structured.

Per-condition columns (``frame.attrs["groups"]``: column -> (group, label)) sit under a header
group: a second header row above the labels in html (``colspan``) and latex (``\\multicolumn``
with a ``\\cline`` under it); md has one header row, so there each is headed ``group: label``;
csv names them ``group.label`` (``per_class.fd``); json keeps the metric keys and lists the
groups.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from evalkit.errors import InputError
from evalkit.formatting import format_number
from evalkit.lazy import pandas as pd
from evalkit.results.directions import ARROWS

FORMATS = ("md", "csv", "html", "latex", "json")


def _header(col: str, dirs: dict[str, str], label: str | None = None) -> str:
    arrow = ARROWS.get(dirs.get(col, "none"), "")
    return f"{label or col} {arrow}".rstrip()


def _groups(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return frame.attrs.get("groups") or {}


def _runs(frame: pd.DataFrame, cols: list[str]) -> list[tuple[str | None, list[str]]]:
    """Consecutive columns by header group: ``[(None, overall columns), ("per class", [...])]``."""
    groups = _groups(frame)
    runs: list[tuple[str | None, list[str]]] = []
    for c in cols:
        g = groups[c][0] if c in groups else None
        if runs and runs[-1][0] == g:
            runs[-1][1].append(c)
        else:
            runs.append((g, [c]))
    return runs


def _label(frame: pd.DataFrame, col: str) -> str | None:
    """A grouped column's own label (``fd`` under "per class"), None for an overall one."""
    g = _groups(frame).get(col)
    return g[1] if g else None


def _csv_name(frame: pd.DataFrame, col: str) -> str:
    """``per_class.fd`` for a grouped column, the metric key otherwise."""
    g = _groups(frame).get(col)
    return f"{g[0].replace(' ', '_')}.{g[1]}" if g else col


class _Grid(dict):
    """A frame's cells as ``{model: {column: value}}`` plus ``best`` (column -> set of models),
    read once per rendering: every ``frame.at`` lookup makes pandas deep-copy ``frame.attrs``
    (the intervals and best marks of every row), which made rendering quadratic in the number
    of records, and ties can make a best list as long as the table."""

    def __init__(self, frame: pd.DataFrame):
        columns = {c: frame[c].tolist() for c in frame.columns}
        super().__init__((m, {c: columns[c][i] for c in columns}) for i, m in enumerate(frame.index))
        self.best = {c: set(v) for c, v in frame.attrs["best"].items()}


def _grid(frame: pd.DataFrame) -> _Grid:
    return _Grid(frame)


def _cell(frame: pd.DataFrame, grid: _Grid, model: str,
          col: str) -> tuple[str, bool]:
    value = grid[model][col]
    text = format_number(value)
    bounds = frame.attrs["ci"].get(col, {}).get(model)
    if bounds is not None:
        text += f" [{format_number(bounds[0])}, {format_number(bounds[1])}]"
    return text, model in grid.best.get(col, ())


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
        grid = _grid(frame)
        dirs = frame.attrs["directions"]
        out.append(f"**{_md_escape(_title(frame))}** (ranked by `{frame.attrs['sort']}`)\n")
        heads = [_header(c, dirs, f"{_groups(frame)[c][0]}: {_label(frame, c)}"
                         if _label(frame, c) else None) for c in cols]
        out.append("| rank | model | " + " | ".join(_md_escape(h) for h in heads) + " |")
        out.append("|---:|:---|" + "---:|" * len(cols))
        for model in frame.index:
            cells = []
            for c in cols:
                text, best = _cell(frame, grid, model, c)
                cells.append(f"**{text}**" if best else text)
            out.append(f"| {grid[model]['rank']} | {_md_escape(model)} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("↓ lower is better · ↑ higher is better · →0 closer to zero is better · "
               "**bold**: best in column")
    return "\n".join(out) + "\n"


def _csv_number(x: float | None) -> str:
    """Full precision (``repr``), empty for a missing value: plain data for pandas and friends."""
    return "" if x is None or math.isnan(x) else repr(float(x))


def _csv(tables) -> str:
    """One plain table for data tools (``pandas.read_csv`` reads it as is): one header row, no
    comment lines or arrows, numeric cells at full precision; ``table`` names the protocol, the
    best marks are ``<metric>_best`` columns (1/0), intervals ``<metric>_ci_lo``/``_ci_hi``.
    Tables of different protocols share the header (a metric a table lacks is empty)."""
    rows: list[dict[str, str]] = []
    header = ["table", "rank", "model"]
    for _, frame in tables:
        grid = _grid(frame)
        title = _title(frame)
        cols = _metric_cols(frame)
        for c in cols:
            n = _csv_name(frame, c)
            extra = [n, f"{n}_best"] + ([f"{n}_ci_lo", f"{n}_ci_hi"] if c in frame.attrs["ci"] else [])
            header += [h for h in extra if h not in header]
        for m in frame.index:
            row = {"table": title, "rank": str(grid[m]["rank"]), "model": m}
            for c in cols:
                n = _csv_name(frame, c)
                row[n] = _csv_number(grid[m][c])
                row[f"{n}_best"] = "1" if m in grid.best.get(c, ()) else "0"
                if c in frame.attrs["ci"]:
                    lo, hi = frame.attrs["ci"][c].get(m, [None, None])
                    row[f"{n}_ci_lo"], row[f"{n}_ci_hi"] = _csv_number(lo), _csv_number(hi)
            rows.append(row)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 2em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th { background: #f4f4f4; } td.model, th.model { text-align: left; }
th.group { text-align: center; }
td.best { font-weight: bold; background: #eef7ee; }
p.protocol { font-size: 0.95em; color: #444; margin-bottom: 0; }
"""


def html_table(frame: pd.DataFrame) -> str:
    """One leaderboard table as an HTML ``<table>`` (used by ``render`` and the report)."""
    cols = _metric_cols(frame)
    grid = _grid(frame)
    dirs = frame.attrs["directions"]
    runs = _runs(frame, cols)
    if any(g for g, _ in runs):  # a header group row above the grouped columns' labels
        top, span = [], ' rowspan="2"'
        for g, run in runs:
            if g is None:
                top += [f"<th{span}>{html.escape(_header(c, dirs))}</th>" for c in run]
            else:
                top.append(f'<th colspan="{len(run)}" class="group">{html.escape(g)}</th>')
        sub_row = "".join(f"<th>{html.escape(_header(c, dirs, _label(frame, c)))}</th>"
                          for g, run in runs if g for c in run)
        head = (f'<tr><th{span}>rank</th><th{span} class="model">model</th>{"".join(top)}</tr>'
                f"<tr>{sub_row}</tr>")
    else:
        head = ('<tr><th>rank</th><th class="model">model</th>'
                + "".join(f"<th>{html.escape(_header(c, dirs))}</th>" for c in cols) + "</tr>")
    rows = []
    for model in frame.index:
        cells = []
        for c in cols:
            text, best = _cell(frame, grid, model, c)
            cls = ' class="best"' if best else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        rows.append(f"<tr><td>{grid[model]['rank']}</td><td class=\"model\">"
                    f"{html.escape(model)}</td>{''.join(cells)}</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


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
        grid = _grid(frame)
        dirs = frame.attrs["directions"]
        out += [r"\begin{table}[t]", r"\centering",
                rf"\caption{{{_tex(_title(frame))} (ranked by {_tex(frame.attrs['sort'])})}}",
                r"\begin{tabular}{rl" + "r" * len(cols) + "}", r"\hline",
                *_latex_group_rows(frame, cols),
                "rank & model & " + " & ".join(_tex(_label(frame, c) or c) + _LATEX_ARROWS[dirs[c]]
                                               for c in cols) + r" \\", r"\hline"]
        for model in frame.index:
            cells = []
            for c in cols:
                text, best = _cell(frame, grid, model, c)
                cells.append(rf"\textbf{{{_tex(text)}}}" if best else _tex(text))
            out.append(f"{grid[model]['rank']} & {_tex(model)} & " + " & ".join(cells) + r" \\")
        out += [r"\hline", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def _latex_group_rows(frame: pd.DataFrame, cols: list[str]) -> list[str]:
    """The header-group row (``\\multicolumn`` over each group's columns, a ``\\cline`` under
    it), or nothing when no column is grouped."""
    runs = _runs(frame, cols)
    if not any(g for g, _ in runs):
        return []
    cells, lines, at = ["", ""], [], 3  # rank and model are columns 1 and 2
    for g, run in runs:
        if g is None:
            cells += [""] * len(run)
        else:
            cells.append(rf"\multicolumn{{{len(run)}}}{{c}}{{{_tex(g)}}}")
            lines.append(rf"\cline{{{at}-{at + len(run) - 1}}}")
        at += len(run)
    return [" & ".join(cells) + r" \\", "".join(lines)]


def _json_value(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _json(tables) -> str:
    payload = []
    for protocol, frame in tables:
        cols = _metric_cols(frame)
        grid = _grid(frame)
        rows = []
        for model in frame.index:
            rows.append({
                "model": model, "rank": int(grid[model]["rank"]),
                "metrics": {c: _json_value(grid[model][c]) for c in cols},
                "ci": {c: frame.attrs["ci"][c][model] for c in cols
                       if model in frame.attrs["ci"].get(c, {})},
                "best": [c for c in cols if model in grid.best.get(c, ())],
                "record": frame.attrs["sources"].get(model),
            })
        payload.append({"protocol": protocol, "references": frame.attrs["references"],
                        "directions": frame.attrs["directions"], "sort": frame.attrs["sort"],
                        "groups": {c: list(g) for c, g in _groups(frame).items()},
                        "rows": rows})
    return json.dumps(payload, indent=2, default=lambda o: None if isinstance(o, float) and
                      np.isnan(o) else str(o)) + "\n"


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
