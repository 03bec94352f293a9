"""`evalkit leaderboard`: ranked tables of result records, one per protocol."""
from __future__ import annotations

import click

from evalkit.cli.app import main
from evalkit.files.fileio import atomic_write_text
from evalkit.files.guards import check_outputs
from evalkit.results.leaderboard import build_tables, collect_records, leaderboard
from evalkit.results.renderers import FORMATS, render
from evalkit.results.track import best_steps


@main.command("leaderboard")
@click.argument("results", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True)
@click.option("--sort", default=None, help="Metric to rank by (default: fd when present).")
@click.option("--metrics", default=None, help="Comma list of metric columns to show (default: all).")
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False),
              help="Write to FILE (atomically) instead of stdout.")
@click.option("--best-step", is_flag=True,
              help="Records of training runs (with `step`): one row per run, its best step "
                   "by --sort.")
def leaderboard_cmd(results, fmt, sort, metrics, out, best_step) -> None:
    """Tabulate RESULTS (record files, folders of *.json, globs): rows = models, ranked.

    Records with different protocols (encoder, weights, reference, N) go to separate tables.
    """
    check_outputs({"-o": out}, inputs=results)
    keys = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    if best_step:
        records = best_steps(collect_records(results), sort or "fd")
        text = render(build_tables(records, sort=sort, metrics=keys), fmt)
    else:
        text = leaderboard(results, fmt=fmt, sort=sort, metrics=keys)
    if out:
        atomic_write_text(out, text)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)
