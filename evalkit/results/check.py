"""CI regression checks: compare a result record with a baseline, metric by metric.

A metric regresses when it moved in its *worse* direction (FD up, precision down, C_T away
from zero) by more than ``atol + rtol * |baseline|`` (numpy ``isclose``'s tolerance).
Moving the better way, or by less than the tolerance, is fine. Records must share a
protocol (:func:`evalkit.results.record.protocol_of`): comparing FD on another encoder, reference
or N is an error, not a regression. Metrics that read the test set (C_T, FLS) compare only
when both records used the same one (its fingerprint); otherwise their row says
``other test set`` (asked for by name: an error), never "improved".

The library returns a :class:`CheckReport`; the ``evalkit check`` command prints it and
turns it into the exit code (0 ok, 1 regression, 2 bad input or mismatched protocols).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import InputError, ProtocolMismatchError
from evalkit.formatting import format_number, text_table
from evalkit.results.directions import direction_of, metric_directions
from evalkit.results.record import load_records, protocol_of, test_fingerprint, test_set_keys

DEFAULT_RTOL = 0.01
DEFAULT_ATOL = 0.0
VERDICTS = ("ok", "improved", "regressed", "missing", "not checked", "other test set")


@dataclass
class MetricCheck:
    """The comparison of one metric of one model."""

    model: str
    metric: str
    baseline: float
    now: float
    direction: str
    tolerance: float
    verdict: str

    @property
    def change(self) -> float:
        return self.now - self.baseline

    @property
    def relative(self) -> float:
        return self.change / abs(self.baseline) if self.baseline else float("nan")

    def change_text(self) -> str:
        if not (math.isfinite(self.now) and math.isfinite(self.baseline)):
            return "–"
        sign = "+" if self.change > 0 else ""
        rel = f" ({sign}{self.relative * 100:.2f}%)" if math.isfinite(self.relative) else ""
        return f"{sign}{format_number(self.change)}{rel}"


@dataclass
class CheckReport:
    """Every metric comparison of a check, plus the protocol both records share."""

    checks: list[MetricCheck]
    protocol: dict[str, Any] = field(default_factory=dict)
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    @property
    def regressions(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.verdict in ("regressed", "missing")]

    @property
    def ok(self) -> bool:
        return not self.regressions

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def table(self) -> str:
        """The metric, baseline, now, change, verdict table as aligned text."""
        several = len({c.model for c in self.checks}) > 1
        headers = (["model"] if several else []) + ["metric", "baseline", "now", "change", "verdict"]
        rows = []
        for c in self.checks:
            verdict = c.verdict.upper() if c in self.regressions else c.verdict
            rows.append(([c.model] if several else []) + [
                c.metric, format_number(c.baseline), format_number(c.now), c.change_text(), verdict,
            ])
        summary = (f"{len(self.regressions)} regression(s)" if self.regressions
                   else "no regression") + f" (rtol={self.rtol:g}, atol={self.atol:g})"
        return text_table(headers, rows) + "\n" + summary

    def markdown(self) -> str:
        """The same table in GitHub markdown (for ``$GITHUB_STEP_SUMMARY``)."""
        lines = ["| model | metric | baseline | now | change | verdict |", "|---|---|---:|---:|---:|---|"]
        for c in self.checks:
            verdict = f"**{c.verdict}** ❌" if c in self.regressions else c.verdict
            lines.append(f"| {c.model} | {c.metric} | {format_number(c.baseline)} | "
                         f"{format_number(c.now)} | {c.change_text()} | {verdict} |")
        return "\n".join(lines) + "\n"

    def github_annotations(self) -> list[str]:
        """``::error title=...::...`` workflow commands, one per regressed metric."""
        out = []
        for c in self.regressions:
            what = "missing from the result" if c.verdict == "missing" else (
                f"{format_number(c.baseline)} -> {format_number(c.now)} ({c.change_text()}, "
                f"{_better(c.direction)}; tolerance {format_number(c.tolerance)})")
            title = f"evalkit check - {c.metric} regressed"
            out.append(f"::error title={_escape_property(title)}::"
                       f"{_escape_data(f'{c.model}: {c.metric} {what}')}")
        return out


def _better(direction: str) -> str:
    return {"lower": "lower is better", "higher": "higher is better",
            "zero": "closer to 0 is better"}.get(direction, "no direction")


def _escape_data(text: str) -> str:
    """GitHub workflow-command message escaping."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    """GitHub workflow-command property escaping (also ``:`` and ``,``)."""
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def in_github_actions() -> bool:
    """True when running as a GitHub Actions step (``GITHUB_ACTIONS=true``)."""
    return os.environ.get("GITHUB_ACTIONS", "").lower() == "true"


# ----------------------------------------------------------------------------- comparing


def verdict(baseline: float, now: float, direction: str, rtol: float, atol: float) -> tuple[str, float]:
    """``(verdict, tolerance)`` for one value: ok | improved | regressed | not checked."""
    tol = atol + rtol * abs(baseline) if math.isfinite(baseline) else 0.0
    if direction not in ("lower", "higher", "zero"):
        return "not checked", tol
    if not math.isfinite(now):
        return ("not checked" if not math.isfinite(baseline) else "regressed"), tol
    if not math.isfinite(baseline):
        return "improved", tol
    worse = {"lower": now - baseline, "higher": baseline - now,
             "zero": abs(now) - abs(baseline)}[direction]
    if worse > tol:
        return "regressed", tol
    return ("improved" if worse < -tol else "ok"), tol


def _records(value: Any, what: str) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, (str, os.PathLike)):
        return load_records(value)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    raise InputError(f"{what}: expected a result record or the path of one")


def _pairs(results, baselines) -> list[tuple[dict, dict]]:
    if len(results) == 1 and len(baselines) == 1:
        return [(results[0], baselines[0])]
    by_name = {b.get("name"): b for b in baselines}
    pairs = []
    for r in results:
        if r.get("name") not in by_name:
            raise InputError(f"no baseline record named {r.get('name')!r} "
                             f"(baseline has: {', '.join(map(str, by_name))})")
        pairs.append((r, by_name[r.get("name")]))
    return pairs


def _check_protocol(result: dict, baseline: dict) -> dict[str, Any]:
    a, b = protocol_of(result), protocol_of(baseline)
    diff = [k for k in a if a[k] != b.get(k)]
    if diff:
        detail = "; ".join(f"{k}: baseline {str(b.get(k))[:24]} vs now {str(a[k])[:24]}" for k in diff)
        raise ProtocolMismatchError(
            f"{result.get('_path', 'result')} and {baseline.get('_path', 'baseline')} are not "
            f"comparable ({detail}); re-run the baseline with the same protocol"
        )
    return a


def check(
    result: Any,
    baseline: Any,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    metrics: Sequence[str] | None = None,
) -> CheckReport:
    """Compare ``result`` with ``baseline`` per metric, in each metric's better direction.

    Args:
        result, baseline: a record dict, a list of records, or a record file path. With
            several records on either side, they are paired by ``name``.
        rtol, atol: a metric regresses when it got worse by more than ``atol + rtol*|baseline|``.
        metrics: the keys to compare (default: every baseline metric that has a direction).
            A key named here that either record lacks is an input error.

    Returns:
        A CheckReport; ``report.exit_code`` is 1 when anything regressed (or a baseline
        metric vanished from the result), else 0.

    Raises:
        ProtocolMismatchError: the records differ in encoder, weights, reference or N.
        InputError: unreadable records, an unknown metric, or negative tolerances.
    """
    if rtol < 0 or atol < 0:
        raise InputError(f"tolerances must be >= 0 (rtol={rtol}, atol={atol})")
    directions = metric_directions()
    checks: list[MetricCheck] = []
    protocol: dict[str, Any] = {}
    for res, base in _pairs(_records(result, "result"), _records(baseline, "baseline")):
        protocol = _check_protocol(res, base)
        model = str(res.get("name") or Path(res.get("_path", "result")).stem)
        now_m, base_m = res.get("metrics") or {}, base.get("metrics") or {}
        other_test = test_set_keys() if test_fingerprint(res) != test_fingerprint(base) else set()
        keys = list(metrics) if metrics else [k for k in base_m if direction_of(k, directions) != "none"]
        for key in keys:
            if metrics and (key not in base_m or key not in now_m):
                side = "baseline" if key not in base_m else "result"
                raise InputError(f"--metrics {key}: the {side} record "
                                 f"{(base if side == 'baseline' else res).get('_path', '')} has no {key!r}")
            d = direction_of(key, directions)
            b = _number(base_m.get(key), base, "baseline", key)
            if key in other_test:
                if metrics:
                    raise ProtocolMismatchError(
                        f"--metrics {key}: {key} depends on the test set, and the result and the "
                        f"baseline were scored with different ones ({_test_detail(base, res)})")
                checks.append(MetricCheck(model, key, b, _as_float(now_m.get(key)), d, 0.0,
                                          "other test set"))
                continue
            if key not in now_m:
                checks.append(MetricCheck(model, key, b, float("nan"), d, 0.0, "missing"))
                continue
            n = _number(now_m.get(key), res, "result", key)
            v, tol = verdict(b, n, d, rtol, atol)
            checks.append(MetricCheck(model, key, b, n, d, tol, v))
    return CheckReport(checks, protocol, rtol, atol)


def _test_detail(base: dict[str, Any], res: dict[str, Any]) -> str:
    return (f"test: baseline {str(test_fingerprint(base))[:24]} vs now "
            f"{str(test_fingerprint(res))[:24]}")


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _number(value: Any, record: dict[str, Any], side: str, key: str) -> float:
    """A compared metric value: a finite JSON number, else bad input (exit 2), never coerced.

    A NaN or infinite baseline would turn the gate off ("improved" whatever happens); a string
    such as "12.3" means the record was not written by evalkit: both are refused.
    """
    where = f"{record.get('_path', side)}: {side} metric {key!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where} is {value!r}, not a number")
    if not math.isfinite(value):
        raise InputError(f"{where} is {value!r}; a non-finite value cannot be compared "
                         "(re-score it, or leave it out with --metrics)")
    return float(value)
