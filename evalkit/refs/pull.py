"""Catalog references in the store: fetch a published file, verify it, register it.

``pull("imagenet256")`` downloads ``VIRTUAL_imagenet256_labeled.npz`` (or takes it from the
drop folder ``REF_DIR/_downloads/`` when it was placed there by hand), checks its size and
sha256 where the publisher states them, and registers it as reference ``imagenet256``: the file
moves into ``REF_DIR/imagenet256/`` and the statistics it carries become manifest entries.
An image batch serves every encoder: features are extracted from it on first use and kept like
any registered reference's. Statistics files serve the encoders that made them.

Trust on first use: with no published sha256, the digest of the first download is recorded in
the manifest (``catalog.sha256_origin = "first-use"``) and checked on later use: a cheap
size/mtime check on every resolution, the full sha256 before the file is read again (feature
extraction) and whenever size or mtime changed. ``pull --force`` fetches again; bytes that
differ from the digest recorded at first use are refused unless ``trust_new`` says to re-trust
them (the publisher's own sha256, when stated, is simply checked).

Everything is checked while the download is still ``FILE.part`` (size, sha256, the format and
statistics the entry declares, a changed first-use digest): a rejected file leaves nothing in
the drop folder, so a later pull asks the server again. The manifest records where the bytes
came from (``fetched_from``: the mirror or redirect target) and which catalog declared the
entry (``entry_origin``), not only the publisher's URL.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.encoders import encoder_weights_spec
from evalkit.encoders.spec import WeightsSpec
from evalkit.encoders.weights import resolve_weights
from evalkit.errors import DownloadError, InputError, OfflineError, VerificationError
from evalkit.features.identity import local_identity
from evalkit.features.options import ExtractOptions
from evalkit.files.download import fetch, verify_file
from evalkit.files.guards import check_folder_writable
from evalkit.refs.catalog import CatalogEntry, load_catalog, lookup
from evalkit.refs.layout import drop_dir, locked, now, store_root
from evalkit.refs.manifest import PUBLISHED, Entry, Manifest, stats_entry
from evalkit.refs.statsfiles import check_image_batch, load_edm2_stats, load_stats, stats_payload
from evalkit.refs.store import (
    get_manifest,
    is_registered,
    store_file_reference,
    unknown_reference_message,
    verify_stored_file,
)


def registered_name(name: str, ref_dir: str | os.PathLike | None = None) -> str | None:
    """The store name ``name`` resolves to: itself, else its catalog entry's name if registered."""
    if is_registered(name, ref_dir):
        return name
    entry = lookup(name)
    if entry is not None and is_registered(entry.name, ref_dir):
        return entry.name
    return None


def ensure(name: str, ref_dir: str | os.PathLike | None = None, *, quiet: bool = False,
           options: ExtractOptions | None = None) -> str:
    """Registered name for ``name``; a catalog name not yet registered is pulled first.

    ``options``: the extraction the reference is pulled for; its encoder's weights are found
    (or fetched) before the reference is downloaded, so that missing weights are said at once,
    not after a download of gigabytes.

    Raises:
        InputError: ``name`` is neither registered nor in the catalog.
        OfflineError: the file (or, with ``options``, the encoder's weights) cannot be
            downloaded (the message says where to place it).
    """
    have = registered_name(name, ref_dir)
    if have is not None:
        return have
    entry = lookup(name)
    if entry is None:
        raise InputError(unknown_reference_message(name, ref_dir)
                         + "; `evalkit ref list --available` lists the published ones")
    if options is not None:
        wspec = encoder_weights_spec(options.encoder, options.arch)
        if wspec is not None or options.weights:
            resolve_weights(options.encoder, wspec or WeightsSpec(filename=str(options.weights)),
                            options.weights)
    pull(entry.name, ref_dir, quiet=quiet)
    return entry.name


def pull(name: str, ref_dir: str | os.PathLike | None = None, *, quiet: bool = False,
         force: bool = False, trust_new: bool = False) -> Manifest:
    """Download (or take from the drop folder), verify and register catalog entry ``name``.

    Args:
        force: fetch again and replace the registered copy.
        trust_new: accept bytes that differ from the sha256 recorded at first use (an entry
            without a published sha256 whose server now sends another file).

    Raises:
        InputError: not a catalog name, a rejected file (the message names the URL or the
            placed file), content that changed since first use without ``trust_new``.
        OfflineError: the file cannot be downloaded (the message says where to place it).
    """
    entry = lookup(name)  # every catalog entry's name and aliases are valid store names
    if entry is None:
        raise InputError(f"{name!r} is not in the catalog (`evalkit ref list --available`)")
    check_folder_writable("--ref-dir", store_root(ref_dir))  # before a long download
    with locked(drop_dir(ref_dir)):  # one download of a file at a time
        if is_registered(entry.name, ref_dir) and not force:
            manifest = get_manifest(entry.name, ref_dir)
            verify_stored_file(manifest, full=True)
            return manifest
        return _fetch_and_register(entry, ref_dir, quiet=quiet, force=force, trust_new=trust_new)


def _fetch_and_register(entry: CatalogEntry, ref_dir, *, quiet: bool, force: bool,
                        trust_new: bool) -> Manifest:
    placed = drop_dir(ref_dir) / entry.file_name
    trusted = _trusted_digest(entry, ref_dir) if not trust_new else None
    if placed.is_file():
        try:
            digest = _accept(entry, placed, str(placed), trusted)
        except InputError as exc:
            if not force:
                raise InputError(f"{exc}; remove it, or pass --force to download "
                                 f"{entry.urls[0]} again") from None
            placed.unlink()  # --force: a rejected hand-placed file makes way for a download
        else:
            return register(entry, placed, ref_dir, digest=digest, move=True, force=force,
                            origin=f"placed by hand at {placed}", fetched_from=str(placed))
    try:
        got = fetch(entry.urls, placed, size=entry.size, limit=entry.size_limit(), quiet=quiet,
                    check=lambda part: _accept(entry, part, "the file", trusted))
    except DownloadError as exc:
        raise OfflineError(offline_message(entry, ref_dir, str(exc))) from None
    return register(entry, placed, ref_dir, digest=got.sha256, origin="downloaded",
                    move=True, force=force, fetched_from=got.url)


def _trusted_digest(entry: CatalogEntry, ref_dir) -> str | None:
    """The sha256 recorded at first use by a registered copy of ``entry`` (None: none)."""
    if entry.sha256 or not is_registered(entry.name, ref_dir):
        return None
    cat = get_manifest(entry.name, ref_dir).get("catalog") or {}
    return cat.get("sha256") if cat.get("sha256_origin") == "first-use" else None


def _accept(entry: CatalogEntry, path: Path, what: str, trusted: str | None) -> str:
    """Verify ``path`` as ``entry``'s file (size, sha256, format, statistics); its sha256.

    Raises:
        InputError: naming ``what``: a size, digest or format the entry does not allow, or
            bytes other than the ``trusted`` ones recorded at first use.
    """
    digest = verify_file(path, size=entry.size, sha256=entry.sha256, what=what)
    if trusted is not None and digest != trusted:
        raise VerificationError(
            f"{what}: the content of {entry.name!r} changed: sha256 {digest}, but {trusted} "
            "was recorded at first download; `evalkit ref pull "
            f"{entry.name} --force --trust-new` accepts the new file")
    read_stats(entry, path, what)
    return digest


def offline_message(entry: CatalogEntry, ref_dir, reason: str) -> str:
    """What to do when ``entry`` cannot be fetched: the URL and exactly where the file goes."""
    return (f"cannot download reference {entry.name!r} ({reason}). Fetch {entry.urls[0]} "
            f"elsewhere, then either place it at {drop_dir(ref_dir) / entry.file_name} or run "
            f"`evalkit ref add {entry.name} /path/to/{entry.file_name}`"
            " (labs with a copy: set EVALKIT_REF_MIRROR=http://host/prefix/)")


def add_file(name: str, source: str, ref_dir: str | os.PathLike | None = None, *,
             force: bool = False) -> Manifest | None:
    """``evalkit ref add NAME FILE`` for a catalog name and its published file, else None.

    The file is verified like a download and linked (or copied) into the store; the user's
    file is left where it is.
    """
    entry = lookup(name)
    path = Path(source).expanduser()
    if entry is None or path.name != entry.file_name or not path.is_file():
        return None
    if registered_name(name, ref_dir) is not None and not force:
        raise InputError(f"reference {entry.name!r} is already registered; pass --force to replace it")
    digest = verify_file(path, size=entry.size, sha256=entry.sha256, what=str(path))
    return register(entry, path, ref_dir, digest=digest, origin=f"added from {path.resolve()}",
                    move=False, force=force, fetched_from=str(path.resolve()))


def register(entry: CatalogEntry, path: Path, ref_dir, *, digest: str, origin: str, move: bool,
             force: bool = False, fetched_from: str | None = None) -> Manifest:
    """Store ``path`` (already verified, sha256 ``digest``) as reference ``entry.name``."""
    fingerprint = "sha256:" + digest
    stats = [_stats_entry(entry, decl, mu_sigma, n, fingerprint)
             for decl, mu_sigma, n in read_stats(entry, path, str(path))]
    st = path.stat()
    manifest = {
        "source_fingerprint": fingerprint,
        "catalog": {"name": entry.name, "kind": entry.kind, "format": entry.format,
                    "file": entry.file_name, "url": entry.urls[0], "origin": origin,
                    "size": st.st_size, "sha256": digest,
                    "sha256_origin": "publisher" if entry.sha256 else "first-use",
                    "mtime_ns": st.st_mtime_ns, "verified": now(),
                    "license": entry.license, "citation": entry.citation,
                    "fetched_from": fetched_from or entry.urls[0], "entry_origin": entry.origin},
    }
    return store_file_reference(entry.name, manifest, path, stats, ref_dir, move=move,
                                     force=force)


# ----------------------------------------------------------------------------- file formats


StatsItem = tuple[dict[str, Any], dict[str, np.ndarray], "int | None"]


def read_stats(entry: CatalogEntry, path: Path, what: str | None = None) -> list[StatsItem]:
    """``(declaration, {"mu", "sigma"[, "mu_s", "sigma_s"]}, N)`` per statistics item of the file.

    Raises:
        InputError: naming ``what`` (default: ``path``): the file does not hold what the
            catalog entry declares (wrong format, missing keys, shapes that do not match).
    """
    what = what or str(path)
    if entry.format in ("adm-batch", "npz-stats"):
        if entry.format == "adm-batch":
            check_image_batch(path, what)
        stats = load_stats(path, what) if entry.stats or entry.format == "npz-stats" else None
        return [(decl, stats_payload(stats), stats.n) for decl in entry.stats]
    payloads, n = load_edm2_stats(path, [decl.get("key") for decl in entry.stats], what)
    return [(decl, payload, n) for decl, payload in zip(entry.stats, payloads)]


def _stats_entry(entry: CatalogEntry, decl: dict[str, Any], payload: dict[str, np.ndarray],
                 n: int | None, fingerprint: str) -> tuple[Entry, dict[str, np.ndarray]]:
    encoder = decl["encoder"]
    # The identity the declaration names; the built-in entries all declare theirs (ADM and
    # TTUR: tf1, EDM2: stylegan3, clean-fid: clean/legacy). An undeclared Inception resize is
    # read as pytorch-fid's (`legacy`), the most common origin of third-party mu/sigma files.
    resize = decl.get("resize") or ("legacy" if encoder == "inception" else "clean")
    ident, known = local_identity(ExtractOptions(encoder=encoder, arch=decl.get("arch"),
                                                 resize=resize))
    rec = stats_entry(ident, known, payload, n, entry.file_name)
    rec.update(made_by=decl.get("made_by"), created=now(), source_fingerprint=fingerprint)
    if entry.kind == "images":
        rec["role"] = PUBLISHED
    return rec, payload


def available() -> list[dict[str, Any]]:
    """Rows for ``ref list --available``: every catalog entry with size and what it serves."""
    rows = []
    for e in sorted(load_catalog().values(), key=lambda e: e.name):
        rows.append({"name": e.name, "aliases": list(e.aliases), "kind": e.kind,
                     "resolution": e.resolution, "n": e.n, "size": e.size,
                     "size_estimate": e.estimated_size(), "sha256": e.sha256,
                     "serves": e.serves(), "protocols": list(e.protocols), "url": e.urls[0],
                     "file": e.file_name, "license": e.license, "citation": e.citation,
                     "description": e.description, "origin": e.origin})
    return rows
