"""The one number formatter of every human-facing output (console table, leaderboards,
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
