"""`evalkit ref add|list|rm`: the named-reference store (logic in evalkit.refs.store)."""
from __future__ import annotations

import json

import click

from evalkit.cli.app import main
from evalkit.cli.options import extract_options, options_from_kwargs
from evalkit.formatting import format_size, text_table
from evalkit.refs.layout import default_ref_dir
from evalkit.refs.manifest import LIST_COLUMNS, describe_added, describe_catalog, list_rows
from evalkit.refs.pull import add_file as add_catalog_file
from evalkit.refs.pull import available, pull, registered_name
from evalkit.refs.store import add_reference, list_references, remove_reference

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
    options = options_from_kwargs(kwargs)
    catalog = add_catalog_file(name, source, ref_dir, force=force)  # a published file, verified
    if catalog is not None:
        click.echo(describe_catalog(catalog))
        return
    click.echo(describe_added(add_reference(name, source, options, ref_dir, force=force)))


@ref.command("pull")
@click.argument("name")
@_REF_DIR
@click.option("--force", is_flag=True, help="Download again and replace the registered copy.")
@click.option("--trust-new", is_flag=True,
              help="With --force: accept a file whose sha256 differs from the one recorded at "
                   "first download (no published sha256).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pull_(name: str, ref_dir: str | None, force: bool, trust_new: bool, quiet: bool) -> None:
    """Download, verify and register catalog reference NAME (see `ref list --available`)."""
    click.echo(describe_catalog(pull(name, ref_dir, quiet=quiet, force=force,
                                     trust_new=trust_new)))


@ref.command("list")
@_REF_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON.")
@click.option("--available", is_flag=True,
              help="List the catalog of published references (sizes, what each serves).")
def list_(ref_dir: str | None, as_json: bool, available: bool) -> None:
    """Show the registered references, one row per stored encoder."""
    if available:
        _list_available(ref_dir, as_json)
        return
    manifests = list_references(ref_dir)
    if as_json:
        click.echo(json.dumps(manifests, indent=2))
        return
    if not manifests:
        click.echo(f"no references in {ref_dir or default_ref_dir()}; "
                   "add one with `evalkit ref add NAME SOURCE`")
        return
    click.echo(text_table(LIST_COLUMNS, list_rows(manifests)))


def _list_available(ref_dir: str | None, as_json: bool) -> None:
    rows = available()
    for r in rows:
        r["registered"] = registered_name(r["name"], ref_dir) is not None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [[r["name"], ", ".join(r["aliases"]) or "-", r["kind"], r["resolution"] or "?",
              r["n"] or "?", _size(r["size"], r["size_estimate"]),
              "publisher" if r["sha256"] else "TOFU", r["serves"], ",".join(r["protocols"]) or "-",
              "yes" if r["registered"] else "no"] for r in rows]
    from evalkit.cli.listing import echo_wrapped, print_rows

    print_rows([("name", "aliases", "kind", "res", "N", "size", "sha256", "serves", "protocols",
                 "registered"), *table])
    echo_wrapped("sizes with ~ are estimates (N x H x W x 3 bytes for image batches); TOFU: no "
                 "published sha256, recorded at first download and checked on later use. "
                 "`evalkit ref pull NAME` fetches one; EVALKIT_REF_MIRROR=http://host/prefix/ "
                 "fetches from a mirror.")


@ref.command("rm")
@click.argument("name")
@_REF_DIR
def rm(name: str, ref_dir: str | None) -> None:
    """Remove reference NAME and its stored features."""
    remove_reference(name, ref_dir)
    click.echo(f"removed reference {name}")



def _size(size: int | None, estimate: int | None) -> str:
    if size:
        return format_size(size)
    return f"~{format_size(estimate)}" if estimate else "~?"
