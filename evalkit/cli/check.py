"""`evalkit check`: a CI regression gate (exit 0 ok, 1 regression, 2 bad input)."""
from __future__ import annotations

import os
import sys

import click

from evalkit.cli.app import main
from evalkit.results.check import DEFAULT_ATOL, DEFAULT_RTOL, check, in_github_actions


@main.command("check")
@click.argument("result", type=click.Path(dir_okay=False))
@click.option("--baseline", required=True, type=click.Path(dir_okay=False),
              help="Baseline result record to compare against.")
@click.option("--rtol", type=click.FloatRange(min=0), default=DEFAULT_RTOL, show_default=True,
              help="Relative tolerance: worse by more than atol + rtol*|baseline| regresses.")
@click.option("--atol", type=click.FloatRange(min=0), default=DEFAULT_ATOL, show_default=True,
              help="Absolute tolerance.")
@click.option("--metrics", default=None, help="Comma list of metrics (default: all in the baseline).")
def check_cmd(result, baseline, rtol, atol, metrics) -> None:
    """Compare RESULT with --baseline per metric, each in its better direction."""
    keys = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    report = check(result, baseline, rtol=rtol, atol=atol, metrics=keys)
    click.echo(report.table())
    if in_github_actions():
        for line in report.github_annotations():
            click.echo(line)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write("### evalkit check\n\n" + report.markdown() + "\n")
    sys.exit(report.exit_code)
