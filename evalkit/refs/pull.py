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
extraction) and whenever size or mtime changed.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import DownloadError, InputError, OfflineError
from evalkit.features.options import ExtractOptions
from evalkit.files.download import download, verify_file
from evalkit.files.guards import check_folder_writable
from evalkit.refs import store as refs
from evalkit.refs.catalog import CatalogEntry, load_catalog, lookup

DROP = "_downloads"


def drop_dir(ref_dir: str | os.PathLike | None = None) -> Path:
    """Where downloads run (``FILE.part``) and where a file fetched by hand may be placed."""
    return refs._root(ref_dir) / DROP


def registered_name(name: str, ref_dir: str | os.PathLike | None = None) -> str | None:
    """The store name ``name`` resolves to: itself, else its catalog entry's name if registered."""
    if refs.is_registered(name, ref_dir):
        return name
    entry = lookup(name)
    if entry is not None and refs.is_registered(entry.name, ref_dir):
        return entry.name
    return None


def ensure(name: str, ref_dir: str | os.PathLike | None = None, *, quiet: bool = False) -> str:
    """Registered name for ``name``; a catalog name not yet registered is pulled first.

    Raises:
        InputError: ``name`` is neither registered nor in the catalog.
        OfflineError: the file cannot be downloaded (the message says where to place it).
    """
    have = registered_name(name, ref_dir)
    if have is not None:
        return have
    entry = lookup(name)
    if entry is None:
        raise InputError(refs._unknown_message(name, ref_dir)
                         + "; `evalkit ref list --available` lists the published ones")
    pull(entry.name, ref_dir, quiet=quiet)
    return entry.name


def pull(name: str, ref_dir: str | os.PathLike | None = None, *, quiet: bool = False,
         force: bool = False) -> dict[str, Any]:
    """Download (or take from the drop folder), verify and register catalog entry ``name``."""
    entry = lookup(name)
    if entry is None:
        raise InputError(f"{name!r} is not in the catalog (`evalkit ref list --available`)")
    check_folder_writable("--ref-dir", refs._root(ref_dir))  # before a long download
    with refs._locked(drop_dir(ref_dir)):  # one download of a file at a time
        if refs.is_registered(entry.name, ref_dir) and not force:
            manifest = refs.get_manifest(entry.name, ref_dir)
            refs.verify_stored_file(manifest, full=True)
            return manifest
        return _fetch_and_register(entry, ref_dir, quiet=quiet, force=force)


def _fetch_and_register(entry: CatalogEntry, ref_dir, *, quiet: bool, force: bool) -> dict[str, Any]:
    placed = drop_dir(ref_dir) / entry.file_name
    if placed.is_file():
        origin = f"placed by hand at {placed}"
        digest = verify_file(placed, size=entry.size, sha256=entry.sha256, what=str(placed))
    else:
        try:
            digest = download(entry.urls, placed, size=entry.size, sha256=entry.sha256, quiet=quiet)
        except DownloadError as exc:
            raise OfflineError(offline_message(entry, ref_dir, str(exc))) from None
        origin = "downloaded"
    return register(entry, placed, ref_dir, digest=digest, origin=origin, move=True, force=force)


def offline_message(entry: CatalogEntry, ref_dir, reason: str) -> str:
    """What to do when ``entry`` cannot be fetched: the URL and exactly where the file goes."""
    return (f"cannot download reference {entry.name!r} ({reason}). Fetch {entry.urls[0]} "
            f"elsewhere, then either place it at {drop_dir(ref_dir) / entry.file_name} or run "
            f"`evalkit ref add {entry.name} /path/to/{entry.file_name}`"
            " (labs with a copy: set EVALKIT_REF_MIRROR=http://host/prefix/)")


def add_file(name: str, source: str, ref_dir: str | os.PathLike | None = None, *,
             force: bool = False) -> dict[str, Any] | None:
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
                    move=False, force=force)


def register(entry: CatalogEntry, path: Path, ref_dir, *, digest: str, origin: str, move: bool,
             force: bool = False) -> dict[str, Any]:
    """Store ``path`` (already verified, sha256 ``digest``) as reference ``entry.name``."""
    fingerprint = "sha256:" + digest
    stats = [_stats_entry(entry, decl, mu_sigma, n, fingerprint)
             for decl, mu_sigma, n in read_stats(entry, path)]
    st = path.stat()
    manifest = {
        "source_fingerprint": fingerprint,
        "catalog": {"name": entry.name, "kind": entry.kind, "format": entry.format,
                    "file": entry.file_name, "url": entry.urls[0], "origin": origin,
                    "size": st.st_size, "sha256": digest,
                    "sha256_origin": "publisher" if entry.sha256 else "first-use",
                    "mtime_ns": st.st_mtime_ns, "verified": refs._now(),
                    "license": entry.license, "citation": entry.citation},
    }
    return refs.store_file_reference(entry.name, manifest, path, stats, ref_dir, move=move,
                                     force=force)


# ----------------------------------------------------------------------------- file formats


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays, dtypes and scalars and refuses every other global.

    EDM2's reference files are pickles of ``{"num_images": int, "fid": {"mu", "sigma"}, ...}``
    with numpy arrays; loading them with plain ``pickle`` would run any callable a tampered
    file names. Dicts, lists, strings and numbers need no globals.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a statistics file")


def load_numpy_pickle(path: Path) -> Any:
    """Unpickle ``path`` allowing numpy arrays only (see :class:`_NumpyOnlyUnpickler`)."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as exc:
        raise InputError(f"{path}: not a statistics pickle of numpy arrays ({exc})") from None


StatsItem = tuple[dict[str, Any], dict[str, np.ndarray], "int | None"]


def read_stats(entry: CatalogEntry, path: Path) -> list[StatsItem]:
    """``(declaration, {"mu", "sigma"[, "mu_s", "sigma_s"]}, N)`` per statistics item of the file.

    Raises:
        InputError: the file does not hold what the catalog entry declares (wrong format,
            missing keys, shapes that do not match).
    """
    out = []
    if entry.format in ("adm-batch", "npz-stats"):
        if entry.format == "adm-batch":
            _check_image_batch(path)
        stats = refs._load_stats(path)
        for decl in entry.stats:
            payload = dict(zip(("mu", "sigma"), stats.moments["features"]))
            if "spatial" in stats.moments:
                payload.update(zip(("mu_s", "sigma_s"), stats.moments["spatial"]))
            out.append((decl, payload, stats.n))
        return out
    data = load_numpy_pickle(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a dict of statistics, got {type(data).__name__}")
    n = data.get("num_images")
    for decl in entry.stats:
        item = data.get(decl.get("key"))
        if not isinstance(item, dict) or "mu" not in item or "sigma" not in item:
            raise InputError(f"{path}: no {decl.get('key')!r} statistics (mu, sigma); has "
                             f"{', '.join(map(str, data))}")
        mu = np.asarray(item["mu"], dtype=np.float64)
        sigma = np.asarray(item["sigma"], dtype=np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]) or not (
                np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise InputError(f"{path}: {decl.get('key')!r} mu {mu.shape} / sigma {sigma.shape} are "
                             "not a finite (D,) mean and (D, D) covariance")
        out.append((decl, {"mu": mu, "sigma": sigma}, int(n) if isinstance(n, (int, np.integer)) else None))
    return out


def _check_image_batch(path: Path) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not an .npz reference batch ({exc})") from None
    if "arr_0.npy" not in names:
        raise InputError(f"{path}: no images under 'arr_0' (not an ADM reference batch)")


def _stats_entry(entry: CatalogEntry, decl: dict[str, Any], payload: dict[str, np.ndarray],
                 n: int | None, fingerprint: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    encoder = decl["encoder"]
    # The identity evalkit's closest setting has: TF-graph Inception statistics (ADM, TTUR,
    # EDM2) are nearest to pytorch-fid's in-network bilinear resize (`legacy`).
    resize = decl.get("resize") or ("legacy" if encoder == "inception" else "clean")
    ident, known = refs.local_identity(ExtractOptions(encoder=encoder, arch=decl.get("arch"),
                                                      resize=resize))
    dim = int(payload["mu"].shape[0])
    expected = refs._declared_dim(encoder, ident.arch)
    if expected is not None and expected != dim:
        raise InputError(f"{entry.file_name}: {encoder} statistics of dimension {dim}, but "
                         f"{encoder}/{ident.arch} features have {expected}")
    rec = dict(refs._identity_entry(ident, known), stats_only=True, n=n, dim=dim,
               arrays=sorted(payload), labels=False, made_by=decl.get("made_by"),
               created=refs._now(), source_fingerprint=fingerprint,
               file=refs._entry_file(ident, True))
    if entry.kind == "images":
        rec["role"] = refs.PUBLISHED
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


def published_for(name: str | None, options, ref_dir: str | os.PathLike | None = None):
    """Statistics published inside registered reference ``name``'s image batch, or None.

    ``name`` is the reference name the scored reference resolved to (None when it was a
    path): then, or for references without published statistics, fd uses the features.
    """
    return refs.published_stats(name, options, ref_dir) if name else None
