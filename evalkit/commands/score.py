"""`evalkit score`: score sample sets against a reference and write result records."""
from __future__ import annotations

import os

import click

from evalkit.api import default_name, load_source
from evalkit.cli import main
from evalkit.commands._options import extract_options, options_from_kwargs
from evalkit.distributed import is_main
from evalkit.errors import InputError
from evalkit.intervals import check_rounds
from evalkit.outputs import metrics_table, per_sample_path, write_per_sample_csv
from evalkit.record import write_records
from evalkit.scoring import ScoreConfig, parse_metric_list, score_set


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
              help="Add 95% intervals from B half-samples of the generated set (README: Intervals).")
@click.option("--realism-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="k of the realism score's k-NN radii (5: dgm-eval; 3: the NVlabs code).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Result record JSON.")
@click.option("--name", default=None, help="Model name(s), comma-separated for several sets.")
@click.option("--per-sample", default=None, type=click.Path(dir_okay=False),
              help="CSV of realism, nearest reference and authenticity per generated sample.")
@click.option("--ref-dir", default=None, type=click.Path(file_okay=False),
              help="Named-reference store (default: $EVALKIT_REF_DIR or the user data dir).")
@extract_options
def score_command(samples, ref, test, metric_list, nsample, seed, bootstrap, realism_k, out, name,
                  per_sample, ref_dir, **kwargs):
    """Score SAMPLES (image folders, zips, npz/npy, feature files) against --ref."""
    options = options_from_kwargs(kwargs)
    names = name.split(",") if name else [default_name(s) for s in samples]
    if len(names) != len(samples):
        raise InputError(f"--name: {len(names)} names for {len(samples)} sample sets")
    config = ScoreConfig(metrics=parse_metric_list(metric_list), seed=seed, nsample=nsample,
                         device=options.device, bootstrap=bootstrap, realism_k=realism_k,
                         progress=not options.quiet)
    check_rounds(bootstrap)
    real = load_source(ref, options, role="reference", ref_dir=ref_dir)
    test_fs = load_source(test, options, role="test") if test else None
    records = []
    for src, set_name in zip(samples, names):
        fake = load_source(src, options, role="samples")
        if not is_main():  # torchrun: the other ranks only help extract
            continue
        record, scored = score_set(fake, real, test_fs, config, name=set_name,
                                   ref_name=real.meta.get("reference_name"))
        if per_sample:
            path = per_sample_path(per_sample, set_name, len(samples) > 1)
            write_per_sample_csv(path, scored, real, seed=seed, device=options.device,
                                 nearest_k=realism_k)
            base = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
            record["per_sample"] = os.path.relpath(os.path.abspath(path), base)
        records.append(record)
    if not is_main():
        return
    click.echo(metrics_table(records))
    if out:
        write_records(records, out)
