"""Named references: a store of reference features, one feature file per encoder identity.

``evalkit ref add imagenet /data/imagenet/val`` extracts (or imports) a reference once and
keeps its *features*, not only their mean and covariance, because PRDC, Vendi and the
memorization metrics need the samples. ``--ref imagenet`` then resolves from the store.

Layout of the store (default ``$EVALKIT_REF_DIR``, else ``$XDG_DATA_HOME/evalkit/refs``,
else ``~/.local/share/evalkit/refs``)::

    REF_DIR/NAME/manifest.json          source, its fingerprint, one entry per encoder identity
    REF_DIR/NAME/<encoder>-<arch>-<id>.npz   a SPEC feature file (or, stats-only, mu/sigma)

A manifest entry records the encoder, arch, weights sha256, preprocessing, resize mode, N,
dimension, the arrays stored and the creation time. Statistics-only imports (an ``.npz``
with ``mu``/``sigma`` and no images, as written by pytorch-fid ``--save-stats`` or the ADM
evaluation suite) are entries with ``stats_only: true``: only ``fd`` (and ``sfid`` when
``mu_s``/``sigma_s`` are present) can be computed against them, see
:func:`resolve_reference` with ``allow_stats=True`` and :func:`reference_stats`.

Every write goes through a temporary file and ``os.replace`` (a new reference is built in a
temporary folder and renamed into place), under an advisory lock on ``REF_DIR/.lock``.
Where things are on disk is :mod:`evalkit.refs.layout`; the manifest's fields and entries
:mod:`evalkit.refs.manifest`; reading statistics files :mod:`evalkit.refs.statsfiles`.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import InputError, StatsOnlyReferenceError
from evalkit.features.featureset import (
    FeatureSet,
    load_feature_file,
    save_feature_file,
)
from evalkit.features.identity import EncoderIdentity, local_identity
from evalkit.features.options import ExtractOptions
from evalkit.files.fileio import atomic_write_bytes, file_sha256
from evalkit.files.guards import check_folder_writable
from evalkit.images.sources import is_feature_file, is_source_arg, stats_npz_keys
from evalkit.refs.layout import (
    MANIFEST,  # noqa: F401 - re-exported: store.MANIFEST
    NAME_RE,
    building,
    discard,
    is_reference_folder,
    locked,
    now,
    store_root,
    validate_name,
)
from evalkit.refs.manifest import (
    PUBLISHED,
    Entry,
    Manifest,
    describe_entry,
    entry_file_name,
    entry_identity,
    identity_fields,
    new_manifest,
    read_manifest,
    same_identity,
    stats_entry,
    write_manifest,
)
from evalkit.refs.statsfiles import load_stats, stats_payload

# Provenance kept from the loader's meta in a stored feature file (timings etc. are dropped).
_KEEP_META = ("encoder", "precision", "versions", "classes", "n_skipped", "jpeg")


# ----------------------------------------------------------------------------- manifests


def list_references(ref_dir: str | os.PathLike | None = None) -> list[Manifest]:
    """Manifests of every reference in the store, sorted by name (unreadable ones skipped)."""
    root = store_root(ref_dir)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            out.append(read_manifest(folder))
        except InputError:
            continue
    return out


def known_names(ref_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the registered references."""
    return [m["name"] for m in list_references(ref_dir)]


def is_registered(name: str, ref_dir: str | os.PathLike | None = None) -> bool:
    """True when ``name`` is a valid reference name with a manifest in the store."""
    return (isinstance(name, str) and bool(NAME_RE.match(name))
            and is_reference_folder(store_root(ref_dir) / name))


def get_manifest(name: str, ref_dir: str | os.PathLike | None = None) -> Manifest:
    """The manifest of reference ``name``; unknown name: InputError listing the known ones."""
    validate_name(name)
    folder = store_root(ref_dir) / name
    if not is_reference_folder(folder):
        raise InputError(unknown_reference_message(name, ref_dir))
    return read_manifest(folder)


def stored_encoders(name: str, ref_dir: str | os.PathLike | None = None) -> list[str] | None:
    """The encoder names reference ``name`` holds features or statistics of (sorted), or None
    when no reference of that name is registered."""
    try:
        validate_name(name)
    except InputError:
        return None
    folder = store_root(ref_dir) / name
    if not is_reference_folder(folder):
        return None
    return sorted({entry_identity(e)[0].name for e in read_manifest(folder)["entries"]})


def unknown_reference_message(name: str, ref_dir: str | os.PathLike | None = None) -> str:
    """An unknown name's message: the store, the names it has, how to add one."""
    names = known_names(ref_dir)
    have = f"known references: {', '.join(names)}" if names else "no references are registered"
    return (
        f"unknown reference {name!r} in {store_root(ref_dir)} ({have}); "
        f"add one with `evalkit ref add {name} SOURCE [--encoder ...]`"
    )


# ----------------------------------------------------------------------------- identities


def _fingerprint_path(source: str) -> str | None:
    """Fallback content fingerprint of a file or folder (when the loader recorded none)."""
    p = Path(source)
    if p.is_file():
        return "sha256:" + file_sha256(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode("utf-8") + b"\0")
            h.update(file_sha256(f).encode("ascii"))
        return "sha256:" + h.hexdigest()
    return None


def _identity(fs_meta: dict[str, Any], options: ExtractOptions) -> tuple[EncoderIdentity, bool]:
    """(encoder identity of extracted/imported features, whether its weights are known).

    The features' own meta is authoritative (extraction writes the full identity there);
    features or statistics without one are identified by ``options``, never downloading
    (weights not on this machine stay unknown and are recorded as such).
    """
    enc = fs_meta.get("encoder")
    if isinstance(enc, dict):
        ident = EncoderIdentity.from_dict(
            dict(enc, precision=enc.get("precision") or fs_meta.get("precision")))
        if ident is not None:
            return ident, True
    return local_identity(options)


# ----------------------------------------------------------------------------- loading sources


def _source_fingerprint(fs_meta: dict[str, Any], source: str) -> str | None:
    """The loader's content fingerprint (``meta["source"]["fingerprint"]``), else a file hash."""
    src = fs_meta.get("source")
    if isinstance(src, dict) and src.get("fingerprint"):
        return str(src["fingerprint"])
    return fs_meta.get("source_fingerprint") or _fingerprint_path(source)


def _abs_source(source: str) -> str:
    path = Path(source).expanduser()
    return str(path.resolve()) if is_source_arg(path) else source  # a shard pattern too


# ----------------------------------------------------------------------------- add / remove


def verify_stored_file(manifest: Manifest, *, full: bool) -> None:
    """Check a catalog reference's file against the sha256 recorded at registration.

    ``full=False``: only when size or mtime changed is the file hashed again; a missing file
    is then fine (the stored features and statistics stay valid). ``full=True``: always hash,
    and a missing file is an error (it is about to be read).

    Raises:
        InputError: the file changed since it was verified, or is gone when ``full``.
    """
    cat = manifest.get("catalog") or {}
    path = Path(manifest["source"])
    if not path.is_file():
        if full:
            raise InputError(f"{path}: the file of reference {manifest['name']!r} is gone; "
                             f"`evalkit ref pull {manifest['name']} --force` fetches it again")
        return
    st = path.stat()
    if not full and st.st_size == cat.get("size") and st.st_mtime_ns == cat.get("mtime_ns"):
        return
    digest = file_sha256(path)
    if digest != cat.get("sha256"):
        how = "published" if cat.get("sha256_origin") == "publisher" else "recorded at first download"
        raise InputError(f"{path}: sha256 {digest} differs from the {how} {cat.get('sha256')}; the "
                         f"file changed since it was registered: `evalkit ref pull "
                         f"{manifest['name']} --force` to fetch it again")


def add_reference(
    name: str,
    source: str,
    options: ExtractOptions | None = None,
    ref_dir: str | os.PathLike | None = None,
    *,
    force: bool = False,
    fingerprint: str | None = None,
) -> Manifest:
    """Extract (or import) ``source`` and store it as reference ``name``; returns the manifest.

    A feature file is imported as is; an ``.npz`` with only ``mu``/``sigma`` is stored as
    statistics (``stats_only``); any other source goes through
    ``evalkit.features.loader.load_features(source, options)``. Adding a second encoder to an
    existing name requires the same source (same fingerprint); an identity already stored is
    replaced only with ``force``. ``fingerprint`` overrides the source's content fingerprint
    (a catalog reference is identified by its file's sha256, see :mod:`evalkit.refs.pull`).

    Raises:
        InputError: invalid name, missing source, a different source under the same name, or
            features of that encoder identity already stored (without ``force``).
    """
    options = options or ExtractOptions()
    validate_name(name)
    check_folder_writable("--ref-dir", store_root(ref_dir))  # before a long extraction
    src_path = Path(source).expanduser()
    if not is_source_arg(src_path):
        raise InputError(f"{source}: no such file or folder (reference source for {name!r})")
    stats_keys = stats_npz_keys(src_path)
    if stats_keys is not None:
        stats = load_stats(src_path)
        fingerprint = fingerprint or "sha256:" + file_sha256(src_path)
        ident, known = _identity({}, options)
        payload = stats_payload(stats)
        entry = stats_entry(ident, known, payload, stats.n, source,
                            "; pass the --encoder/--arch they were computed with (pytorch-fid "
                            "and ADM statistics: --encoder inception)")
        writer = _npz_writer(payload)
    else:
        if not force and not is_feature_file(src_path) and is_registered(name, ref_dir):
            found = find_entry(name, options, ref_dir)  # say so before a long extraction
            if found is not None and not found.get("stats_only"):
                raise InputError(f"reference {name!r} already has {describe_entry(found)} "
                                 "features; pass --force to extract them again")
        from evalkit.features.loader import load_features  # torch-heavy: only when extracting

        fs = load_features(source, options)
        if fs.meta.get("placeholder"):  # a non-zero torchrun rank: rank 0 stores the reference
            return {}
        fingerprint = fingerprint or _source_fingerprint(fs.meta, str(src_path))
        ident, known = _identity(fs.meta, options)
        entry = dict(identity_fields(ident, known), stats_only=False, n=fs.n, dim=fs.dim,
                     arrays=sorted(fs.arrays),
                     labels=fs.labels is not None, files=fs.files is not None)
        meta = {k: v for k, v in fs.meta.items() if k in _KEEP_META}
        meta.update(reference_name=name, source={"source": _abs_source(source), "n": fs.n,
                                                 "fingerprint": fingerprint})
        if fs.files is not None:  # per-row image locators (pipeline convention), for galleries
            meta["files"] = list(fs.files)
        stored = FeatureSet(fs.arrays, fs.labels, meta, fs.source)
        writer = lambda path: save_feature_file(stored, path)  # noqa: E731
    entry.update(file=entry_file_name(ident, entry["stats_only"]), created=now(),
                 source_fingerprint=fingerprint)
    return _store_entry(name, _abs_source(source), fingerprint, entry, writer, ref_dir, force)


def _npz_writer(payload: dict[str, np.ndarray]):
    def write(path: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, **payload)
        atomic_write_bytes(path, buf.getvalue())
    return write


def _store_entry(name, source, fingerprint, entry: Entry, writer, ref_dir, force) -> Manifest:
    root = store_root(ref_dir)
    with locked(root):
        folder = root / name
        if is_reference_folder(folder):
            manifest = read_manifest(folder)
            if manifest.get("source_fingerprint") != fingerprint:
                if not force:
                    raise InputError(
                        f"reference {name!r} already holds {manifest.get('source')} (fingerprint "
                        f"{str(manifest.get('source_fingerprint'))[:12]}), not {source}; "
                        f"`evalkit ref rm {name}` first, pick another name, or pass --force "
                        "to replace it"
                    )
                for old in manifest["entries"]:  # another source: the old features go
                    (folder / old["file"]).unlink(missing_ok=True)
                manifest["entries"], manifest["created"] = [], entry["created"]
            mine = entry_identity(entry)
            same = [e for e in manifest["entries"] if e.get("role") == entry.get("role")
                    and same_identity(entry_identity(e), mine)]
            if same and not force:
                raise InputError(
                    f"reference {name!r} already has {describe_entry(entry)} features; "
                    "pass --force to extract them again"
                )
            writer(folder / entry["file"])
            manifest["entries"] = [e for e in manifest["entries"] if e not in same]
            manifest["entries"].append(entry)
            manifest.update(source=source, source_fingerprint=fingerprint)
            write_manifest(folder, manifest)
            return manifest
        manifest = new_manifest(name, source, fingerprint, entry["created"], [entry])
        with building(root, name) as tmp:
            writer(tmp / entry["file"])
            write_manifest(tmp, manifest)
        return manifest


def store_file_reference(name: str, manifest: dict[str, Any], file: Path,
                         stats: list[tuple[Entry, dict[str, np.ndarray]]],
                         ref_dir: str | os.PathLike | None = None, *, move: bool = False,
                         force: bool = False) -> Manifest:
    """Register a reference that keeps its source file (a downloaded catalog file) in its folder.

    The folder ``REF_DIR/NAME`` is built in a temporary folder (the file moved or linked/copied
    in, one statistics ``.npz`` per item of ``stats``, the manifest) and renamed into place,
    under the store lock: readers see no reference or the complete one. ``manifest`` supplies
    the top-level fields (``source_fingerprint``, ``catalog``...); ``source`` is set to the
    file's final path. An existing reference of that name is replaced only with ``force``.
    """
    root = store_root(ref_dir)
    with locked(root):
        folder = root / name
        if is_reference_folder(folder) and not force:
            old = read_manifest(folder)["source"]
            raise InputError(f"reference {name!r} is already registered ({old}); "
                             f"`evalkit ref rm {name}` first or pass --force")
        def give_back(tmp: Path) -> None:  # a moved download goes back for a retry
            if move and (tmp / file.name).exists() and not file.exists():
                os.replace(tmp / file.name, file)

        with building(root, name, replace=force, on_error=give_back) as tmp:
            target = tmp / file.name
            if move:
                os.replace(file, target)
            else:
                try:
                    os.link(file, target)
                except OSError:
                    shutil.copy2(file, target)
            for entry, payload in stats:
                _npz_writer(payload)(tmp / entry["file"])
            full = new_manifest(name, str(folder / file.name), manifest.get("source_fingerprint"),
                                manifest.get("created") or now(), [e for e, _ in stats],
                                **{k: v for k, v in manifest.items()
                                   if k not in ("source_fingerprint", "created")})
            write_manifest(tmp, full)
        return full


def published_stats(name: str, options: ExtractOptions | None = None,
                    ref_dir: str | os.PathLike | None = None) -> FeatureSet | None:
    """The statistics published inside reference ``name``'s image batch for ``options``' encoder.

    ADM's reference batches carry Inception mu/sigma (and mu_s/sigma_s) over the whole dataset
    next to their 10,000 images; a protocol scores ``fd``/``sfid`` against these. They match
    on encoder, arch and preprocessing (weights and precision are not theirs to say). A
    statistics-only :class:`FeatureSet`, or None when the reference has no such entry.
    """
    options = options or ExtractOptions()
    manifest = get_manifest(name, ref_dir)
    wanted, _ = local_identity(options)
    for entry in manifest["entries"]:
        ident, _ = entry_identity(entry)
        if entry.get("role") == PUBLISHED and (ident.name, ident.arch, ident.preprocess) == (
                wanted.name, wanted.arch, wanted.preprocess):
            stats = load_stats(store_root(ref_dir) / name / entry["file"])
            stats.meta.update(_provenance(name, manifest, entry), published=entry.get("made_by"),
                              n=entry.get("n"))
            stats.source = manifest["source"]
            return stats
    return None


def remove_reference(name: str, ref_dir: str | os.PathLike | None = None) -> None:
    """Delete reference ``name`` and all its stored features (unknown name: InputError)."""
    get_manifest(name, ref_dir)
    root = store_root(ref_dir)
    with locked(root):
        discard(root / name)  # atomic: the name disappears at once


# ----------------------------------------------------------------------------- resolving


def find_entry(name: str, options: ExtractOptions | None = None,
               ref_dir: str | os.PathLike | None = None) -> Entry | None:
    """The manifest entry of ``name`` for the encoder identity in ``options`` (None: absent).

    Feature entries are preferred over statistics-only ones, then the most recent.
    """
    options = options or ExtractOptions()
    manifest = get_manifest(name, ref_dir)
    wanted = local_identity(options)
    cands = [e for e in manifest["entries"]
             if e.get("role") != PUBLISHED and same_identity(entry_identity(e), wanted)]
    cands.sort(key=lambda e: (not e.get("stats_only"), e.get("created", "")), reverse=True)
    return cands[0] if cands else None


def resolve_reference(
    name: str,
    options: ExtractOptions | None = None,
    ref_dir: str | os.PathLike | None = None,
    *,
    allow_stats: bool = False,
) -> FeatureSet:
    """Features of reference ``name`` for the encoder in ``options``.

    When the reference lacks that encoder, it is extracted from the recorded source if that
    still exists (and still has the recorded fingerprint) and stored; otherwise an InputError
    says how to add it. The FeatureSet's ``meta`` carries ``reference_name``, ``source`` and
    ``source_fingerprint`` for the result record's ``reference`` field.

    Args:
        allow_stats: return a statistics-only :class:`FeatureSet` for such a reference
            instead of raising :class:`StatsOnlyReferenceError`.

    Raises:
        InputError: unknown name (listing the known ones), encoder missing and the source gone,
            or, with ``allow_stats=False``, a statistics-only reference.
    """
    options = options or ExtractOptions()
    manifest = get_manifest(name, ref_dir)
    if manifest.get("catalog"):  # trust on first use: the file is still the one verified
        verify_stored_file(manifest, full=False)
    entry = find_entry(name, options, ref_dir)
    if entry is None:
        entry = _extract_missing(name, manifest, options, ref_dir)
    path = store_root(ref_dir) / name / entry["file"]
    if entry.get("stats_only"):
        if not allow_stats:
            raise StatsOnlyReferenceError(
                f"reference {name!r} holds only mean/covariance statistics ({manifest['source']}); "
                "only fd and sfid can run against it"
            )
        stats = load_stats(path)
        stats.meta.update(_provenance(name, manifest, entry))
        stats.source = manifest["source"]
        return stats
    fs = load_feature_file(path)
    files = fs.meta.pop("files", None)
    if isinstance(files, list) and len(files) == fs.n:
        fs.files = [str(f) for f in files]
    fs.meta.update(_provenance(name, manifest, entry))
    fs.source = manifest["source"]
    return fs


def _provenance(name: str, manifest: Manifest, entry: Entry) -> dict[str, Any]:
    """Meta of a resolved reference, in the pipeline's shape (``source`` is a dict)."""
    return {"reference_name": name, "stats_only": bool(entry.get("stats_only")),
            "source": {"source": manifest["source"], "n": entry.get("n"),
                       "fingerprint": manifest.get("source_fingerprint")}}


def _extract_missing(name, manifest: Manifest, options, ref_dir) -> Entry:
    have = "; ".join(sorted({describe_entry(e) for e in manifest["entries"]})) or "none"
    how = (f"add them with `evalkit ref add {name} SOURCE --encoder {options.encoder}"
           f"{' --arch ' + options.arch if options.arch else ''} --force`")
    source = manifest["source"]
    if (manifest.get("catalog") or {}).get("kind") == "statistics":
        raise InputError(f"reference {name!r} is a published statistics file ({have}); it has no "
                         f"images to extract {options.encoder} features from: pass the --encoder "
                         "(and --arch, --resize) it serves, see `evalkit ref list --available`")
    if not is_source_arg(source):
        raise InputError(f"reference {name!r} has no {options.encoder} features (has: {have}) and "
                         f"its source {source} is gone; {how}")
    if is_feature_file(source) or stats_npz_keys(source) is not None:
        raise InputError(f"reference {name!r} has no {options.encoder} features (has: {have}) and "
                         f"its source {source} holds features, not images; {how}")
    if manifest.get("catalog"):  # a downloaded file: check it is still the one first verified
        verify_stored_file(manifest, full=True)
    add_reference(name, source, options, ref_dir,
                  fingerprint=manifest.get("source_fingerprint") if manifest.get("catalog") else None)
    entry = find_entry(name, options, ref_dir)
    if entry is None:  # the extractor reported another identity than the one asked for
        raise InputError(f"reference {name!r}: extracting {source} with {options.encoder} did not "
                         f"produce matching features (stored: {have})")
    return entry


def reference_stats(
    name: str,
    options: ExtractOptions | None = None,
    ref_dir: str | os.PathLike | None = None,
    array: str = "features",
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of reference ``name`` in float64 (sigma with N-1, as pytorch-fid).

    Stored statistics are returned as imported; a feature reference's statistics are computed
    from its features. ``array="spatial"`` gives the sFID statistics (``mu_s``/``sigma_s``).
    """
    ref = resolve_reference(name, options, ref_dir, allow_stats=True)
    if not ref.has_samples:
        if array in ref.moments:
            return ref.moments[array]
        raise InputError(f"reference {name!r} has no {array} statistics (stats-only import)")
    x = ref.get(array)
    if x is None:
        raise InputError(f"reference {name!r} has no '{array}' array")
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1)
