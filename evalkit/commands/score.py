"""`evalkit score`: a thin shell over :func:`evalkit.api.score`."""
from __future__ import annotations

import click

from evalkit.api import score
from evalkit.cli import main
from evalkit.commands._options import extract_options, options_from_kwargs
from evalkit.distributed import is_main
from evalkit.outputs import metrics_table


@main.command("score")
@click.argument("samples", nargs=-1, required=True)
@click.option("--ref", required=True, help="Reference: a source or a registered name.")
@click.option("--test", default=None, help="Held-out real data (ct, fls, fls_pog).")
@click.option("--metrics", "metric_list", default="all", show_default=True,
              help="Comma list of metric keys, or `all`.")
@click.option("--nsample", type=click.IntRange(min=1), default=None,
              help="Use at most N images per set (seeded subsample).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bootstrap", type=click.IntRange(min=0), default=0,
              help="Add a 95% bootstrap interval from B resamples of the generated set.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Result record JSON.")
@click.option("--name", default=None, help="Model name(s), comma-separated for several sets.")
@click.option("--per-sample", default=None, type=click.Path(dir_okay=False),
              help="CSV of realism, nearest reference and authenticity per generated sample.")
@click.option("--ref-dir", default=None, type=click.Path(file_okay=False),
              help="Named-reference store (default: $EVALKIT_REF_DIR or the user data dir).")
@extract_options
def score_command(samples, ref, test, metric_list, nsample, seed, bootstrap, out, name,
                  per_sample, ref_dir, **kwargs):
    """Score SAMPLES (image folders, zips, npz/npy, feature files) against --ref."""
    results = score(list(samples), ref, test=test, metrics=metric_list, seed=seed,
                    nsample=nsample, bootstrap=bootstrap,
                    names=name.split(",") if name else None, per_sample=per_sample, out=out,
                    ref_dir=ref_dir, options=options_from_kwargs(kwargs))
    if is_main():
        click.echo(metrics_table([r.record for r in results]))
