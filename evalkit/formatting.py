"""The number, size and table formatters of every human-facing output (console tables,
leaderboards, check reports, HTML report), so that one value reads the same everywhere."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def format_number(x: float | None, digits: int = 4) -> str:
    """``digits`` significant digits, no exponent between 1e-3 and 1e4 (integers above)."""
    if x is None or not math.isfinite(x):
        return "–" if x is None or math.isnan(x) else ("∞" if x > 0 else "-∞")
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag >= digits:
        return f"{x:.0f}"
    if mag < -3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{max(0, digits - 1 - mag)}f}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table for terminals (first column left-aligned, others right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)]
                     + [line(r) for r in cells[1:]])
def format_size(n: int) -> str:
    """A byte count in binary units: ``512 B``, ``1.5 KiB``, ``2.0 GiB`` (IEC 80000-13)."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"
