"""`evalkit score`: a thin shell over :func:`evalkit.api.score`."""
from __future__ import annotations

import warnings

import click
from click.core import ParameterSource

from evalkit.cli.app import main
from evalkit.cli.options import (
    extract_options,
    generator_kwargs,
    generator_options,
    options_from_kwargs,
)
from evalkit.errors import InputError, ProtocolWarning
from evalkit.features.distributed import is_main
from evalkit.results.outputs import metrics_table, per_sample_path


@main.command("score")
@click.argument("samples", nargs=-1, required=False)
@click.option("--ref", default=None,
              help="Reference: a source, a registered name or a catalog name (`ref list --available`).")
@click.option("--protocol", default=None,
              help="Paper protocol: adm | edm2 | dgm-eval | coco30k (sets encoder, resize, N, "
                   "metrics, reference).")
@click.option("--test", default=None, help="Held-out real data (ct, fls, fls_pog).")
@click.option("--metrics", "metric_list", default="all", show_default=True,
              help="Comma list of metric keys, or `all`.")
@click.option("--nsample", type=click.IntRange(min=1), default=None,
              help="Use at most N images per set (seeded subsample, drawn before any image is read).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Run seed: subsampling, metric subsets and bootstrap rounds (same seed, same numbers).")
@click.option("--bootstrap", type=click.IntRange(min=0), default=0,
              help="Add 95% intervals from B half-samples of the generated set (README: Intervals).")
@click.option("--realism-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="k of the realism score's k-NN radii (5: dgm-eval; 3: the NVlabs code).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Result record JSON.")
@click.option("--name", default=None, help="Model name(s), comma-separated for several sets.")
@click.option("--per-sample", default=None, type=click.Path(dir_okay=False),
              help="CSV of realism, nearest reference and authenticity per generated sample.")
@click.option("--per-class", default=None, type=click.Path(dir_okay=False),
              help="CSV of the per-class values (counts, fd, precision, recall, density, coverage, "
                   "why missing), one row per class; needs labels in both sets.")
@click.option("--prompts", default=None, type=click.Path(dir_okay=False),
              help="Prompt of each generated image: .txt (one per line, sample order), .csv/.jsonl "
                   "(file -> prompt) or COCO caption .json; with --encoder clip: clip_score.")
@click.option("--rke-sigma", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Gaussian bandwidth of rke (default: the reference's median pairwise distance).")
@click.option("--ref-dir", default=None, type=click.Path(file_okay=False),
              help="Named-reference store (default: $EVALKIT_REF_DIR or the user data dir).")
@generator_options
@extract_options
def score_command(samples, ref, protocol, test, metric_list, nsample, seed, bootstrap, realism_k,
                  out, name, per_sample, per_class, prompts, rke_sigma, ref_dir, **kwargs):
    """Score SAMPLES (image folders, zips, npz/npy, feature files), or --num-samples images
    of a --generator, against --ref."""
    _check_cheaply(samples, test, kwargs.get("encoder"))
    from evalkit.api import score  # the engine imports torch: only when a command runs it

    gen = generator_kwargs(kwargs)
    if not samples and gen["generator"] is None:
        raise click.UsageError("give SAMPLES, or --generator pkg.module:function --num-samples N")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProtocolWarning)  # said below, louder
        results = score(list(samples) or None, ref, test=test, metrics=metric_list, seed=seed,
                        nsample=nsample, bootstrap=bootstrap, realism_k=realism_k,
                        names=name.split(",") if name else None, per_sample=per_sample, out=out,
                        ref_dir=ref_dir, options=options_from_kwargs(kwargs), protocol=protocol,
                        explicit=_typed({"encoder", "arch", "resize", "nsample", "metric_list"}),
                        prompts=prompts, rke_sigma=rke_sigma, per_class=per_class, **gen)
    if not isinstance(results, list):  # a generator: one sample set
        results = [results] if results is not None else []
    if is_main():
        blocks: dict[str, list] = {}
        for r in results:  # several encoders: one block each
            blocks.setdefault((r.record.get("encoder") or {}).get("name") or "?", []).append(r.record)
        for i, (enc, records) in enumerate(blocks.items()):
            if len(blocks) > 1:
                click.echo(("\n" if i else "") + f"encoder: {enc}")
            click.echo(metrics_table(records))
        for path in _written(results, out, per_sample, per_class):
            click.echo(f"wrote {path}", err=True)
        for r in results:
            proto = r.record.get("protocol") or {}
            if proto.get("complete") is False:
                click.secho(f"evalkit: WARNING: {r.record['name']}: PROTOCOL {proto['name'].upper()} "
                            f"EXPECTS {proto['n_expected']} SAMPLES, GOT {r.record['samples']['n']}: "
                            "NOT comparable with the published tables (record marked "
                            "protocol.complete = false)", err=True, fg="red", bold=True)


def _check_cheaply(samples, test, encoder: str | None) -> None:
    """What can be refused before torch loads (seconds) or weights are looked for: sample and
    --test paths that do not exist, unknown encoder names (the registry is readable without
    importing any encoder), Python packages an encoder needs that are not installed."""
    from evalkit.encoders import check_packages, encoder_summary
    from evalkit.images.sources import is_source_arg

    for path in [*samples, *([test] if test else [])]:
        if not is_source_arg(path):
            raise InputError(f"{path}: no such file or directory")
    for name in (encoder or "").split(","):
        if name.strip():
            encoder_summary(name.strip())  # unknown: UnknownNameError with close matches
            check_packages(name.strip())


def _written(results, out, per_sample, per_class=None) -> list[str]:
    """The files this run wrote: the record file and each set's per-sample / per-class CSV."""
    several = len({r.record["name"] for r in results}) > 1
    names = list(dict.fromkeys(r.record["name"] for r in results))
    csvs = [str(per_sample_path(str(base), name, several))
            for base in (per_sample, per_class) if base for name in names]
    return ([str(out)] if out else []) + csvs


def _typed(params: set[str]) -> set[str]:
    """The options among ``params`` given on the command line (or by environment)."""
    ctx = click.get_current_context()
    typed = {p for p in params if ctx.get_parameter_source(p) not in (ParameterSource.DEFAULT, None)}
    return typed | ({"metrics"} if "metric_list" in typed else set())
