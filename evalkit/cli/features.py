"""`evalkit features SOURCE -o OUT.npz`: extract features once, reuse them anywhere."""
from __future__ import annotations

import click

from evalkit.cli.app import main
from evalkit.cli.options import extract_options, options_from_kwargs
from evalkit.files.guards import check_outputs


@main.command("features")
@click.argument("source")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Feature file to write (.npz): features, logits, ..., labels, meta.")
@click.option("--prompts", default=None, type=click.Path(dir_okay=False),
              help="Store each image's prompt (and, with --encoder clip, its text embedding).")
@extract_options
def features_command(source, out, prompts, **kwargs):
    """Extract the features of SOURCE (image folder, zip, npz/npy) into a feature file."""
    from evalkit.features.conditions import attach_prompts
    from evalkit.features.loader import check_feature_path, load_features, save_features

    options = options_from_kwargs(kwargs)
    check_feature_path(out)
    check_outputs({"-o": out}, inputs=[source])
    fs = attach_prompts(load_features(source, options), prompts, options)
    save_features(fs, out)
    arrays = ", ".join(f"{k} {v.shape[1]}" for k, v in fs.arrays.items())
    skipped = f", {fs.meta['n_skipped']} skipped" if fs.meta.get("n_skipped") else ""
    hit = " (from cache)" if fs.meta.get("cache_hit") else ""
    click.echo(f"{out}: {fs.n} images{skipped}; {arrays}{hit}", err=True)
