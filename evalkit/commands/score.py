"""`evalkit score`: score sample sets against a reference and write result records."""
from __future__ import annotations

import os

import click
from click.core import ParameterSource

from evalkit.api import default_name, load_source
from evalkit.catalog_refs import published_for
from evalkit.cli import main
from evalkit.commands._options import extract_options, options_from_kwargs
from evalkit.distributed import is_main
from evalkit.errors import InputError
from evalkit.outputs import metrics_table, per_sample_path, write_per_sample_csv
from evalkit.protocols import resolve_protocol
from evalkit.record import write_records
from evalkit.scoring import ScoreConfig, parse_metric_list, score_set


@main.command("score")
@click.argument("samples", nargs=-1, required=True)
@click.option("--ref", default=None,
              help="Reference: a source, a registered name or a catalog name (`ref list --available`).")
@click.option("--protocol", default=None,
              help="Paper protocol: adm | edm2 | dgm-eval (sets encoder, resize, N, metrics, reference).")
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
def score_command(samples, ref, protocol, test, metric_list, nsample, seed, bootstrap, out, name,
                  per_sample, ref_dir, **kwargs):
    """Score SAMPLES (image folders, zips, npz/npy, feature files) against --ref."""
    options = options_from_kwargs(kwargs)
    names = name.split(",") if name else [default_name(s) for s in samples]
    if len(names) != len(samples):
        raise InputError(f"--name: {len(names)} names for {len(samples)} sample sets")
    metrics, proto, published = parse_metric_list(metric_list), None, None
    if protocol:
        ctx = click.get_current_context()
        explicit = {p for p in ("encoder", "arch", "resize", "nsample", "metric_list")
                    if ctx.get_parameter_source(p) not in (ParameterSource.DEFAULT, None)}
        explicit |= {"metrics"} if "metric_list" in explicit else set()
        proto = resolve_protocol(protocol, options, explicit=explicit, metrics=metrics,
                                 nsample=nsample, ref=ref, has_test=test is not None)
        options, ref, nsample, metrics = proto.options, proto.ref, proto.nsample, proto.metrics
    elif not ref:
        raise InputError("--ref is required (a source or reference name), or --protocol NAME")
    real = load_source(ref, options, role="reference", ref_dir=ref_dir)
    if proto and proto.protocol.published_stats:
        published = published_for(real.meta.get("reference_name"), options, ref_dir)
    config = ScoreConfig(metrics=metrics, seed=seed, nsample=nsample, device=options.device,
                         bootstrap=bootstrap, overrides=proto.overrides if proto else {},
                         reference_stats=published)
    test_fs = load_source(test, options, role="test") if test else None
    records = []
    for src, set_name in zip(samples, names):
        fake = load_source(src, options, role="samples")
        if not is_main():  # torchrun: the other ranks only help extract
            continue
        record, scored = score_set(fake, real, test_fs, config, name=set_name,
                                   ref_name=real.meta.get("reference_name"))
        warning = proto.annotate(record, published) if proto else None
        if warning:
            click.secho(f"evalkit: WARNING: {set_name}: {warning}", err=True, fg="red", bold=True)
        if per_sample:
            path = per_sample_path(per_sample, set_name, len(samples) > 1)
            write_per_sample_csv(path, scored, real, seed=seed, device=options.device)
            base = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
            record["per_sample"] = os.path.relpath(os.path.abspath(path), base)
        records.append(record)
    if not is_main():
        return
    click.echo(metrics_table(records))
    if out:
        write_records(records, out)
