"""Training curves from result records: each metric against the training ``step``.

The records of one run (or several, by ``name``) scored at different steps (the training
integrations write ``step``; `evalkit score --step`) become a table (one row per step, the
best value of each metric marked ``*``, as the leaderboards mark it) and a plot (one panel
per metric, the 95% bootstrap band when the records have ``metrics_ci``, the best step
starred). "Best" follows each metric's declared direction (lower FD, higher precision).
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.errors import InputError
from evalkit.files.fileio import atomic_write_bytes
from evalkit.formatting import format_number
from evalkit.results.directions import ARROWS, direction_of, metric_directions
from evalkit.results.leaderboard import collect_records


@dataclass
class Curve:
    """One run's values of one metric over steps (sorted), with optional 95% bounds."""

    name: str
    metric: str
    direction: str
    steps: list[int]
    values: list[float]
    bounds: list[tuple[float, float] | None]

    @property
    def best(self) -> int | None:
        """Index of the best finite value (the first of ties), by the metric's direction."""
        finite = [(v, i) for i, v in enumerate(self.values) if math.isfinite(v)]
        if not finite or self.direction not in ("lower", "higher", "zero"):
            return None
        key = {"lower": lambda t: t[0], "higher": lambda t: -t[0],
               "zero": lambda t: abs(t[0])}[self.direction]
        return min(finite, key=lambda t: (key(t), t[1]))[1]


def curves(records: Sequence[dict[str, Any]], metrics: Sequence[str] | None = None
           ) -> list[Curve]:
    """The curves of ``records`` (those with a ``step``), per run name and metric.

    Raises:
        InputError: no record has a step, a metric no record has, or two records of one run
            at the same step.
    """
    stepped = [r for r in records if isinstance(r.get("step"), int)]
    if not stepped:
        raise InputError("no record has a training step ('step'): score with --step, or "
                         "with evalkit.integrations")
    dirs = metric_directions()
    present = list(dict.fromkeys(k for r in stepped for k in r.get("metrics") or {}))
    if metrics:
        missing = [m for m in metrics if m not in present]
        if missing:
            raise InputError(f"--metrics {','.join(missing)}: not in the records (they have "
                             f"{', '.join(present)})")
        keys = list(metrics)
    else:
        keys = [k for k in present if direction_of(k, dirs) != "none"]
    out = []
    for name in dict.fromkeys(str(r.get("name")) for r in stepped):
        run = sorted((r for r in stepped if str(r.get("name")) == name), key=lambda r: r["step"])
        steps = [r["step"] for r in run]
        dup = sorted({s for s in steps if steps.count(s) > 1})
        if dup:
            raise InputError(f"run {name}: several records at step {dup[0]}")
        for key in keys:
            values = [_num((r.get("metrics") or {}).get(key)) for r in run]
            bounds = [_bounds((r.get("metrics_ci") or {}).get(key)) for r in run]
            out.append(Curve(name, key, direction_of(key, dirs), steps, values, bounds))
    return out


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _bounds(b: Any) -> tuple[float, float] | None:
    if isinstance(b, (list, tuple)) and len(b) == 2:
        lo, hi = _num(b[0]), _num(b[1])
        return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None
    return None


def track_table(cs: Sequence[Curve]) -> str:
    """A markdown table per run: step, then each metric (best marked ``*``)."""
    blocks = []
    for name in dict.fromkeys(c.name for c in cs):
        run = [c for c in cs if c.name == name]
        head = ["step"] + [f"{c.metric} {ARROWS.get(c.direction, '')}".strip() for c in run]
        lines = [f"run: {name}", "", "| " + " | ".join(head) + " |",
                 "|" + "|".join("---:" for _ in head) + "|"]
        for i, step in enumerate(run[0].steps):
            cells = [str(step)]
            for c in run:
                text = format_number(c.values[i]) if math.isfinite(c.values[i]) else "—"
                cells.append(text + (" *" if c.best == i else ""))
            lines.append("| " + " | ".join(cells) + " |")
        best = ", ".join(f"{c.metric} at step {c.steps[c.best]}" for c in run
                         if c.best is not None)
        blocks.append("\n".join(lines) + (f"\n\nbest: {best}" if best else ""))
    return "\n\n".join(blocks) + "\n"


def track_plot(cs: Sequence[Curve]) -> bytes:
    """PNG bytes: one panel per metric, a line per run, bands from ``metrics_ci``, the best
    step of each run starred."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = list(dict.fromkeys(c.metric for c in cs))
    fig = Figure(figsize=(5.0, 2.6 * len(keys)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for k, key in enumerate(keys):
        ax = fig.add_subplot(len(keys), 1, k + 1)
        for c in (c for c in cs if c.metric == key):
            line, = ax.plot(c.steps, c.values, "o-", ms=3, label=c.name)
            have = [i for i, b in enumerate(c.bounds) if b is not None]
            if have:
                ax.fill_between([c.steps[i] for i in have], [c.bounds[i][0] for i in have],
                                [c.bounds[i][1] for i in have], color=line.get_color(),
                                alpha=0.2, linewidth=0)
            if c.best is not None:
                ax.plot([c.steps[c.best]], [c.values[c.best]], "*", ms=14,
                        color=line.get_color(), markeredgecolor="black",
                        label=f"best {c.name}: step {c.steps[c.best]}")
        ax.set_ylabel(f"{key} {ARROWS.get(c.direction, '')}".strip())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.axes[-1].set_xlabel("training step")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def track(inputs: Iterable[str], *, metrics: Sequence[str] | None = None,
          plot: str | os.PathLike | None = None) -> str:
    """The table of ``inputs``' records over steps; with ``plot``, also the PNG (atomically)."""
    cs = curves(collect_records(inputs), metrics)
    if plot is not None:
        atomic_write_bytes(plot, track_plot(cs))
    return track_table(cs)


def best_steps(records: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """``records`` with each run's stepped records reduced to its best step by ``metric``
    (records without a ``step`` are kept as they are); for leaderboards of training runs."""
    cs = {c.name: c for c in curves(records, [metric])}
    keep_step = {name: c.steps[c.best] for name, c in cs.items() if c.best is not None}
    return [r for r in records if not isinstance(r.get("step"), int)
            or keep_step.get(str(r.get("name"))) == r["step"]]
