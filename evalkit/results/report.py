"""Self-contained HTML reports of result records.

``evalkit report RESULT -o report.html`` writes ONE HTML file that needs nothing else: no
scripts, no external style sheets, every plot and thumbnail embedded as a base64 PNG. It holds
the provenance of the run, the metric table (with 95% bootstrap intervals when the record has
``metrics_ci``), and the plots that explain the numbers:

- FD against 1/N with the linear FD∞ fit (Chong & Forsyth 2020), from
  ``details.fd_inf._curve``;
- precision / recall / density / coverage (Kynkäänniemi et al. 2019; Naeem et al. 2020);
- per-class Vendi scores (Friedman & Dieng 2023) when the record has them;
- a memorization gallery from the per-sample CSV: the generated samples closest to a
  reference image (smallest ``nn_distance``), each beside that nearest reference image;
- for records of a training run over steps (two or more records with ``step``, e.g. the
  ``step-*.json`` files :mod:`evalkit.integrations` writes): first, each metric against the
  step with the best step starred and bootstrap bands (:mod:`evalkit.results.track`), and
  the table of values per step.

Missing pieces (no curve, no per-sample file, images no longer on disk) are left out with a
note; they never stop the report. Plots use matplotlib's Agg canvas without pyplot, so no
global backend state is touched.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import InputError
from evalkit.files.fileio import atomic_write_text
from evalkit.files.guards import inside
from evalkit.formatting import format_number
from evalkit.images.locators import parse, rebase
from evalkit.images.sources import open_image
from evalkit.results.directions import ARROWS, direction_of, metric_directions
from evalkit.results.record import load_records, metric_keys

PRDC_KEYS = ("precision", "recall", "density", "coverage")
THUMB = 128


# ----------------------------------------------------------------------------- plots


def _figure(width: float = 6.0, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="{uri}">'


def plot_fd_curve(curve: dict[str, Any], fd_inf: float | None = None) -> str:
    """FD at each subset size against 1/N, the least-squares line, and its 1/N=0 intercept."""
    n = np.asarray(curve["n"], dtype=np.float64)
    fd = np.asarray(curve["fd"], dtype=np.float64)
    if n.shape != fd.shape or n.size < 2 or (n <= 0).any():
        raise ValueError("curve needs matching 'n' (positive) and 'fd' lists of 2+ points")
    x = 1.0 / n
    slope, intercept = np.polyfit(x, fd, 1)
    value = intercept if fd_inf is None or not math.isfinite(fd_inf) else fd_inf
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(x, fd, "o", color="#1f77b4", label="FD on a subset of N samples")
    grid = np.linspace(0.0, x.max() * 1.05, 50)
    ax.plot(grid, intercept + slope * grid, "-", color="#ff7f0e", label="linear fit in 1/N")
    ax.plot([0.0], [value], "*", color="#d62728", markersize=14, label=f"FD∞ = {format_number(value)}")
    ax.set_xlabel("1 / N")
    ax.set_ylabel("FD")
    ax.set_title("FD against 1/N (FD∞ = value at 1/N = 0)")
    ax.set_xlim(left=-x.max() * 0.03)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png_uri(fig)


def plot_prdc(metrics: dict[str, Any], ci: dict[str, Any] | None = None) -> str:
    """Bar chart of precision, recall, density, coverage (with CI whiskers when known)."""
    keys = [k for k in PRDC_KEYS if _finite(metrics.get(k))]
    if not keys:
        raise ValueError("no PRDC values")
    vals = np.array([float(metrics[k]) for k in keys])
    fig = _figure(5.0, 3.4)
    ax = fig.add_subplot()
    colors = ["#4c72b0", "#55a868", "#c44e52", "#8172b2"][: len(keys)]
    bars = ax.bar(keys, vals, color=colors)
    ci = ci or {}
    tops = vals.copy()
    for i, k in enumerate(keys):
        if k in ci and len(ci[k]) == 2 and all(_finite(b) for b in ci[k]):
            lo, hi = float(ci[k][0]), float(ci[k][1])
            ax.errorbar(i, vals[i], yerr=[[max(vals[i] - lo, 0)], [max(hi - vals[i], 0)]],
                        color="black", capsize=4)
            tops[i] = max(vals[i], hi)
    for bar, v, top in zip(bars, vals, tops):
        ax.annotate(format_number(v), (bar.get_x() + bar.get_width() / 2, top), ha="center",
                    va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylim(0, max(1.15, float(tops.max()) * 1.15))
    ax.set_title("Fidelity (precision, density), diversity (recall, coverage)", fontsize=10)
    return _png_uri(fig)


def plot_vendi_per_class(per_class: dict[str, Any], overall: float | None = None) -> str:
    """Per-class Vendi scores: bars for up to 40 classes, else the sorted profile."""
    items = sorted(((str(k), float(v)) for k, v in per_class.items() if _finite(v)),
                   key=lambda kv: (not kv[0].lstrip("-").isdigit(),
                                   int(kv[0]) if kv[0].lstrip("-").isdigit() else 0, kv[0]))
    if not items:
        raise ValueError("no per-class values")
    labels, vals = zip(*items)
    fig = _figure(7.0, 3.4)
    ax = fig.add_subplot()
    if len(items) <= 40:
        ax.bar(range(len(vals)), vals, color="#4c72b0")
        ax.set_xticks(range(len(vals)), labels, rotation=90 if len(vals) > 12 else 0, fontsize=7)
        ax.set_xlabel("class")
    else:
        ax.plot(np.sort(vals)[::-1], color="#4c72b0")
        ax.set_xlabel(f"classes sorted by Vendi score ({len(vals)} classes)")
    if overall is not None and _finite(overall):
        ax.axhline(float(overall), color="#d62728", linestyle="--",
                   label=f"mean over classes = {format_number(float(overall))}")
        ax.legend(fontsize=8)
    ax.set_ylabel("Vendi score")
    ax.set_title("Per-class diversity (Vendi)")
    return _png_uri(fig)


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- images


def _resolve(locator: str, source: str | None, record_dir: Path) -> str:
    """An image locator made absolute against the set's source (folder, archive or array)."""
    src = Path(source).expanduser() if source else None

    def base_path(part: str) -> str:
        p = Path(part).expanduser()
        if p.is_absolute() or p.exists():
            return str(p)
        if src is not None and src.name == p.name and src.exists():
            return str(src)
        for root in ([src] if src is not None and src.is_dir() else []) + \
                    ([src.parent] if src is not None else []) + [record_dir]:
            if (root / p).exists():
                return str(root / p)
        return str(p)

    return rebase(locator, base_path)


def gallery_image(locator: str, root: str | None = None, record_dir: Path | None = None):
    """The PIL image behind a locator, or None when it is gone, unreadable or not reached
    through the set's source (a placeholder).

    Locators (``FeatureSet.files``, the per-sample CSV): ``rel/path.png`` relative to the
    set's source folder ``root``, ``archive.zip::member``, ``file.npz[i]``, resolved against
    the source, its folder and the record's folder, then read with
    :func:`evalkit.images.sources.open_image` (the one RGB conversion, as the encoder saw the
    image). Only images inside the source the record names are embedded, symlinks followed:
    a CSV cannot make the report show an arbitrary file of the machine.
    """
    record_dir = record_dir or Path.cwd()
    resolved = _resolve(locator, root, record_dir)
    if not _within_source(resolved, root, record_dir):
        return None
    try:
        return open_image(resolved, None)
    except InputError:  # missing or unreadable: a placeholder
        return None


def _within_source(resolved: str, source: str | None, record_dir: Path) -> bool:
    """True when the file (or container) of locator ``resolved`` is the source or lies in it."""
    if not source:
        return False
    src = Path(source).expanduser()
    if not src.is_absolute() and not src.exists():
        src = record_dir / src
    src = Path(os.path.realpath(src))
    base = Path(os.path.realpath(parse(resolved).path))
    return base == src or (src.is_dir() and src in base.parents)


def _thumb_uri(img) -> str:
    img = img.convert("RGB")
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _thumb_html(locator: Any, source: str | None, record_dir: Path, alt: str) -> str:
    if not isinstance(locator, str) or not locator.strip():
        return '<div class="missing">no image locator</div>'
    img = gallery_image(locator, source, record_dir)
    if img is None:
        return f'<div class="missing" title="{html.escape(locator)}">image not available</div>'
    return _img(_thumb_uri(img), alt, "thumb")


# ----------------------------------------------------------------------------- sections


def _record_dir(record: dict[str, Any]) -> Path:
    return Path(record.get("_path", ".")).expanduser().resolve().parent


def _per_sample_path(record: dict[str, Any]) -> Path | None:
    ref = record.get("per_sample")
    if not ref:
        return None
    what = f"{record.get('_path', 'record')}: per_sample"
    return inside(_record_dir(record), str(ref), what)  # never a file outside the record's folder


def _metric_rows(record: dict[str, Any]) -> str:
    metrics = record.get("metrics") or {}
    ci = record.get("metrics_ci") or {}
    directions = metric_directions()
    order = metric_keys()
    keys = [k for k in order if k in metrics] + sorted(set(metrics) - set(order))
    rows = []
    for k in keys:
        d = direction_of(k, directions)
        value = format_number(_float(metrics[k]))
        bounds = ci.get(k)
        interval = (f"[{format_number(_float(bounds[0]))}, {format_number(_float(bounds[1]))}]"
                    if isinstance(bounds, (list, tuple)) and len(bounds) == 2 else "")
        better = {"lower": "lower is better", "higher": "higher is better",
                  "zero": "closer to 0 is better"}.get(d, "")
        rows.append(f"<tr><td class=\"key\">{html.escape(k)}</td><td>{html.escape(value)}</td>"
                    f"<td>{html.escape(interval)}</td><td class=\"dir\">{ARROWS.get(d, '')} "
                    f"{html.escape(better)}</td><td class=\"desc\">{html.escape(_describe(k))}</td></tr>")
    head = ("<tr><th>metric</th><th>value</th><th>95% CI</th><th>direction</th>"
            "<th>what it measures</th></tr>")
    return f'<table class="metrics"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _describe(key: str) -> str:
    """The registry's one-line description of a result key ("" for keys it does not declare)."""
    from evalkit.metrics import result_descriptions

    return result_descriptions().get(key, "")


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _provenance(record: dict[str, Any]) -> str:
    s, r, t = record.get("samples") or {}, record.get("reference") or {}, record.get("test") or {}
    e, c = record.get("encoder") or {}, record.get("config") or {}
    ref_name = f" (named reference <b>{html.escape(str(r['name']))}</b>)" if r.get("name") else ""
    items = [
        ("samples", f"{html.escape(str(s.get('source', '?')))} · N = {s.get('n', '?')}"),
        ("reference", f"{html.escape(str(r.get('source', '?')))}{ref_name} · N = {r.get('n', '?')}"),
        ("test", f"{html.escape(str(t.get('source')))} · N = {t.get('n', '?')}" if t else "none"),
        ("encoder", html.escape(f"{e.get('name', '?')} / {e.get('arch', '?')} · " + _weights_text(e))),
        ("preprocessing", html.escape(_settings_text(e.get("preprocess")))),
        ("config", html.escape(_settings_text({k: v for k, v in c.items() if k != "metrics"}))),
        ("created", html.escape(str(record.get("created", "?")))),
        ("versions", html.escape(", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items()))),
    ]
    return "<table class=\"prov\">" + "".join(
        f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in items) + "</table>"


def _weights_text(encoder: dict[str, Any]) -> str:
    """``weights sha256 <16 hex>``; an encoder recorded without weights has none to name."""
    sha = encoder.get("weights_sha256")
    if sha:
        return f"weights sha256 {str(sha)[:16]}"
    return "no weights (weight-free encoder)" if encoder.get("name") else "weights unknown"


def _settings_text(value: Any) -> str:
    """A settings dict (or its JSON text) as ``key value · key value``; anything else as text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict):
        return " · ".join(f"{k} {_settings_text(v) if isinstance(v, dict) else v}"
                          for k, v in value.items()) or "none"
    return "unknown" if value is None else str(value)


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _plots(record: dict[str, Any]) -> str:
    metrics, details = record.get("metrics") or {}, record.get("details") or {}
    parts = []
    curve = ((details.get("fd_inf") or {}).get("_curve")) if isinstance(details.get("fd_inf"), dict) else None
    if curve:
        try:
            parts.append(_figure_block(plot_fd_curve(curve, _float(metrics.get("fd_inf"))),
                                       "FD against 1/N with the FD∞ fit"))
        except (ValueError, KeyError, TypeError, np.linalg.LinAlgError) as exc:
            parts.append(_note(f"FD∞ curve present but unusable ({exc})."))
    else:
        parts.append(_note("No FD∞ curve in this record (score with fd_inf to plot FD against 1/N)."))
    if any(_finite(metrics.get(k)) for k in PRDC_KEYS):
        parts.append(_figure_block(plot_prdc(metrics, record.get("metrics_ci")),
                                   "Precision, recall, density, coverage"))
    else:
        parts.append(_note("No precision/recall/density/coverage in this record."))
    vendi = details.get("vendi")
    per_class = vendi.get("_per_class") if isinstance(vendi, dict) else None
    if per_class:
        try:
            parts.append(_figure_block(plot_vendi_per_class(per_class, metrics.get("vendi_per_class")),
                                       "Per-class Vendi score"))
        except (ValueError, TypeError) as exc:
            parts.append(_note(f"Per-class Vendi present but unusable ({exc})."))
    elif "vendi" in metrics:
        parts.append(_note("No per-class Vendi scores (the samples carry no class labels)."))
    return "".join(parts)


def _figure_block(uri: str, caption: str) -> str:
    return f"<figure>{_img(uri, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _gallery(record: dict[str, Any], k: int) -> str:
    path = _per_sample_path(record)
    if path is None:
        return _note("No per-sample file in this record (score with --per-sample FILE.csv "
                     "for the memorization gallery).")
    if not path.is_file():
        return _note(f"Per-sample file {path} not found; gallery omitted.")
    import pandas as pd

    try:
        table = pd.read_csv(path, keep_default_na=True)
    except (OSError, ValueError) as exc:
        return _note(f"Per-sample file {path} unreadable ({exc}); gallery omitted.")
    if "nn_distance" not in table.columns:
        return _note(f"Per-sample file {path} has no nn_distance column; gallery omitted.")
    table = table.assign(nn_distance=pd.to_numeric(table["nn_distance"], errors="coerce"))
    closest = table.dropna(subset=["nn_distance"]).nsmallest(k, "nn_distance", keep="first")
    if k == 0:
        return _note("Gallery disabled (--gallery 0).")
    if closest.empty:
        return _note("Per-sample file has no distances; gallery omitted.")
    rdir = _record_dir(record)
    s_src = (record.get("samples") or {}).get("source")
    r_src = (record.get("reference") or {}).get("source")
    median = float(table["nn_distance"].median())
    cards = []
    for rank, (_, row) in enumerate(closest.iterrows(), start=1):
        sample = _thumb_html(row.get("path"), s_src, rdir, f"generated sample {row.get('index')}")
        nearest = _thumb_html(row.get("nn_path"), r_src, rdir, f"reference {row.get('nn_index')}")
        facts = [f"#{rank} · distance {format_number(float(row['nn_distance']))}"]
        facts.append(f"sample {html.escape(str(row.get('index', '?')))} → reference "
                     f"{html.escape(str(row.get('nn_index', '?')))}")
        if "realism" in row and _finite(row["realism"]):
            facts.append(f"realism {format_number(float(row['realism']))}")
        if "authentic" in row and str(row["authentic"]) not in ("", "nan"):
            facts.append("authentic" if str(row["authentic"]).lower() in ("1", "true", "1.0")
                         else "<b>not authentic</b>")
        cards.append(f'<div class="pair"><div class="imgs"><div>{sample}<span>generated</span></div>'
                     f'<div>{nearest}<span>nearest reference</span></div></div>'
                     f'<p>{"<br>".join(facts)}</p></div>')
    intro = (f"The {len(closest)} generated samples closest to a reference image "
             f"(median nearest-reference distance over all {len(table)} samples: "
             f"{format_number(median)}). Near-duplicates here suggest memorization.")
    return f'<p>{html.escape(intro)}</p><div class="gallery">{"".join(cards)}</div>'


def _skipped(record: dict[str, Any]) -> str:
    skipped = record.get("skipped") or {}
    if not skipped:
        return ""
    items = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                    for k, v in skipped.items())
    return f"<h3>Skipped metrics</h3><ul class=\"skipped\">{items}</ul>"


_STYLE = """
body { font-family: system-ui, -apple-system, sans-serif; margin: 0 auto; max-width: 1150px;
       padding: 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left; vertical-align: top; }
table.metrics td:nth-child(2), table.metrics td:nth-child(3) { text-align: right;
       font-variant-numeric: tabular-nums; white-space: nowrap; }
td.dir { white-space: nowrap; }
table.metrics th { background: #f4f4f4; } td.key { font-weight: bold; } td.desc { color: #555; }
table.prov th { color: #555; font-weight: normal; width: 9em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
img.plot { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; text-align: center; }
p.note { color: #8a6d3b; background: #fcf8e3; padding: 0.4em 0.8em; border-radius: 4px; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; }
.pair { border: 1px solid #ddd; border-radius: 6px; padding: 8px; width: 290px; }
.pair .imgs { display: flex; gap: 8px; } .pair .imgs > div { text-align: center; }
.pair span { display: block; font-size: 0.8em; color: #666; }
.pair p { font-size: 0.85em; margin: 6px 0 0; }
img.thumb { width: 128px; height: 128px; object-fit: contain; background: #f4f4f4; }
div.missing { width: 128px; height: 128px; background: #f1f1f1; color: #999; font-size: 0.8em;
       display: flex; align-items: center; justify-content: center; text-align: center; }
"""


def _track_section(records: Sequence[dict[str, Any]]) -> str:
    """Metric-against-step plot and table when the records are a run over steps, else ''."""
    from evalkit.results.track import curves, track_plot

    steps = {r["step"] for r in records if isinstance(r.get("step"), int)
             and not isinstance(r.get("step"), bool)}
    if len(steps) < 2:
        return ""
    try:
        cs = curves(records)
    except InputError as exc:
        return f"<section><h2>Training curves</h2>{_note(f'No curves ({exc}).')}</section>"
    if not cs:
        return ""
    uri = "data:image/png;base64," + base64.b64encode(track_plot(cs)).decode("ascii")
    tables = []
    for name in dict.fromkeys(c.name for c in cs):
        run = [c for c in cs if c.name == name]
        head = "".join(f"<th>{html.escape(c.metric)} {ARROWS.get(c.direction, '')}</th>"
                       for c in run)
        rows = []
        for i, step in enumerate(run[0].steps):
            cells = "".join(
                f"<td>{format_number(c.values[i]) if math.isfinite(c.values[i]) else '—'}"
                f"{' ★' if c.best == i else ''}</td>" for c in run)
            rows.append(f"<tr><td>{step}</td>{cells}</tr>")
        tables.append(f"<p>run: {html.escape(name)}</p><table><tr><th>step</th>{head}</tr>"
                      f"{''.join(rows)}</table>")
    return ("<section><h2>Training curves</h2>"
            f"{_figure_block(uri, 'Each metric against the training step (best step starred)')}"
            f"{''.join(tables)}</section>")


def build_report(records: Sequence[dict[str, Any]], gallery: int = 8) -> str:
    """The HTML text of a report on ``records`` (one section per record; first, for a run
    over training steps, the metric-against-step plot and table).

    Each record's ``_path`` (set by :func:`evalkit.results.record.load_records`) is the base that a
    relative ``per_sample`` path is resolved against.
    """
    sections = []
    for rec in records:
        name = html.escape(str(rec.get("name") or "result"))
        sections.append(
            f"<section><h2>{name}</h2>{_provenance(rec)}<h3>Metrics</h3>{_metric_rows(rec)}"
            f"{_skipped(rec)}<h3>Plots</h3>{_plots(rec)}<h3>Memorization gallery</h3>"
            f"{_gallery(rec, gallery)}</section>"
        )
    title = "evalkit report: " + ", ".join(str(r.get("name") or "result") for r in records)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{_track_section(records)}{''.join(sections)}"
            "<p class=\"foot\">Generated by evalkit. ↓ lower is better · ↑ higher is better · "
            "→0 closer to zero is better.</p></body></html>\n")


def write_report(result: str | os.PathLike | Sequence[str | os.PathLike],
                 out: str | os.PathLike, name: str | None = None, gallery: int = 8) -> Path:
    """Read the record file ``result`` (or several files, folders of ``*.json``, globs: the
    records of a training run, one file per step) and write their report to ``out``
    atomically.

    Args:
        name: report only the record with this ``name`` (default: every record in the file).
        gallery: how many closest generated samples the memorization gallery shows.
    """
    if isinstance(result, (str, os.PathLike)):
        every = load_records(result)
    else:
        from evalkit.results.leaderboard import collect_records

        every = collect_records([str(r) for r in result])
        result = ", ".join(str(r) for r in result)
    records = every
    if name is not None:
        records = [r for r in records if r.get("name") == name]
        if not records:
            names = ", ".join(dict.fromkeys(str(r.get("name")) for r in every))
            raise InputError(f"{result}: no record named {name!r} (has: {names})")
    if gallery < 0:
        raise InputError(f"--gallery must be >= 0, got {gallery}")
    atomic_write_text(out, build_report(records, gallery))
    return Path(out)
