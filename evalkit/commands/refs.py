"""`evalkit ref add|list|rm`: the named-reference store (logic in evalkit.refs)."""
from __future__ import annotations

import json

import click

from evalkit.cli import main
from evalkit.commands._options import extract_options, options_from_kwargs
from evalkit.leaderboard import text_table
from evalkit.refs import add_reference, default_ref_dir, list_references, remove_reference

_REF_DIR = click.option(
    "--ref-dir", default=None, type=click.Path(file_okay=False),
    help="Reference store (default: $EVALKIT_REF_DIR, else $XDG_DATA_HOME/evalkit/refs).")


@main.group("ref")
def ref() -> None:
    """Named references: extract a reference set once, then score with --ref NAME."""


@ref.command("add")
@click.argument("name")
@click.argument("source")
@extract_options
@_REF_DIR
@click.option("--force", is_flag=True, help="Re-extract features already stored, or replace the source.")
def add(name: str, source: str, ref_dir: str | None, force: bool, **kwargs) -> None:
    """Register SOURCE (images, archive, .npz batch, feature file or mu/sigma stats) as NAME."""
    manifest = add_reference(name, source, options_from_kwargs(kwargs), ref_dir, force=force)
    entry = manifest["entries"][-1]
    kind = ("statistics only (fd/sfid)" if entry.get("stats_only")
            else f"{entry['n']} x {entry['dim']} features")
    click.echo(f"{name}: {_encoder(entry)}/{entry.get('arch')} {kind} from {manifest['source']}")


@ref.command("list")
@_REF_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON.")
def list_(ref_dir: str | None, as_json: bool) -> None:
    """Show the registered references, one row per stored encoder."""
    manifests = list_references(ref_dir)
    if as_json:
        click.echo(json.dumps(manifests, indent=2))
        return
    if not manifests:
        click.echo(f"no references in {ref_dir or default_ref_dir()}; "
                   "add one with `evalkit ref add NAME SOURCE`")
        return
    rows = [[m["name"], _encoder(e), e.get("arch") or "-",
             "stats" if e.get("stats_only") else "features", e.get("n") or "?", e.get("dim") or "?",
             e.get("created", "?")[:19], m["source"]]
            for m in manifests for e in m["entries"]]
    click.echo(text_table(["name", "encoder", "arch", "kind", "N", "dim", "created", "source"], rows))


@ref.command("rm")
@click.argument("name")
@_REF_DIR
def rm(name: str, ref_dir: str | None) -> None:
    """Remove reference NAME and its stored features."""
    remove_reference(name, ref_dir)
    click.echo(f"removed reference {name}")


def _encoder(entry: dict) -> str:
    """An entry's encoder name (``name``; manifests before EncoderIdentity said ``encoder``)."""
    return str(entry.get("name") or entry.get("encoder"))
