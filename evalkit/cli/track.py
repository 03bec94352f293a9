"""`evalkit track`: metrics against training step, from the records of a run."""
from __future__ import annotations

import click

from evalkit.cli.app import main
from evalkit.files.guards import check_outputs
from evalkit.results.track import track


@main.command("track")
@click.argument("records", nargs=-1, required=True)
@click.option("--metrics", default=None, help="Comma list of metrics (default: every ranked one).")
@click.option("--plot", default=None, type=click.Path(dir_okay=False),
              help="Also write a PNG: each metric against step, best step starred.")
def track_cmd(records, metrics, plot) -> None:
    """Tabulate RECORDS (files, folders of *.json, globs) of a training run by `step`."""
    check_outputs({"--plot": plot}, inputs=records)
    keys = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    click.echo(track(records, metrics=keys, plot=plot), nl=False)
    if plot:
        click.echo(f"wrote {plot}", err=True)
