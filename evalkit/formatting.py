"""The number and size formatters of every human-facing output (console table, leaderboards,
check reports, HTML report), so that one value reads the same everywhere."""
from __future__ import annotations

import math


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


def format_size(n: int) -> str:
    """A byte count in binary units: ``512 B``, ``1.5 KiB``, ``2.0 GiB`` (IEC 80000-13)."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"
