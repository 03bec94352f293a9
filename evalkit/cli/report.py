"""`evalkit report`: one self-contained HTML report of a result record."""
from __future__ import annotations

from pathlib import Path

import click

from evalkit.cli.app import main
from evalkit.files.guards import check_outputs
from evalkit.results.report import write_report


@main.command("report")
@click.argument("result", nargs=-1, required=True)
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False),
              help="HTML file to write (default: RESULT with .html; several: report.html).")
@click.option("--name", default=None, help="Report only the record with this model name.")
@click.option("--gallery", type=click.IntRange(min=0), default=8, show_default=True,
              help="Closest generated samples shown in the memorization gallery.")
def report_cmd(result, out, name, gallery) -> None:
    """Write an HTML report of RESULT: metric table, plots and memorization gallery.

    Several RESULTs (files, folders of *.json, globs), e.g. the per-step records of a
    training run, make one report; records with a ``step`` add each metric plotted against
    the step."""
    one = len(result) == 1 and Path(result[0]).is_file()
    target = out or (str(Path(result[0]).with_suffix(".html")) if one else "report.html")
    check_outputs({"-o": target}, inputs=list(result))
    write_report(result[0] if one else list(result), target, name=name, gallery=gallery)
    click.echo(f"wrote {target}", err=True)
