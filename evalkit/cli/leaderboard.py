"""`evalkit leaderboard`: ranked tables of result records, one per protocol."""
from __future__ import annotations

import click

from evalkit.cli.app import main
from evalkit.files.fileio import atomic_write_text
from evalkit.files.guards import check_outputs
from evalkit.results.leaderboard import leaderboard
from evalkit.results.renderers import FORMATS


@main.command("leaderboard")
@click.argument("results", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True)
@click.option("--sort", default=None, help="Metric to rank by (default: fd when present).")
@click.option("--metrics", default=None, help="Comma list of metric columns to show (default: all).")
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False),
              help="Write to FILE (atomically) instead of stdout.")
def leaderboard_cmd(results, fmt, sort, metrics, out) -> None:
    """Tabulate RESULTS (record files, folders of *.json, globs): rows = models, ranked.

    Records with different protocols (encoder, weights, reference, N) go to separate tables.
    """
    check_outputs({"-o": out}, inputs=results)
    keys = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    text = leaderboard(results, fmt=fmt, sort=sort, metrics=keys)
    if out:
        atomic_write_text(out, text)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)
