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
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import InputError
from evalkit.featureset import (
    FeatureSet,
    is_feature_file,
    load_feature_file,
    save_feature_file,
)
from evalkit.fileio import atomic_write_bytes, atomic_write_text, file_sha256
from evalkit.options import ExtractOptions

MANIFEST = "manifest.json"
# Role of a statistics entry that came inside a published image batch (ADM's mu/sigma): kept
# apart from the reference's own features, used only when a protocol asks for it.
PUBLISHED = "published_stats"
# Provenance kept from the loader's meta in a stored feature file (timings etc. are dropped).
_KEEP_META = ("encoder", "precision", "versions", "classes", "n_skipped", "jpeg")
REF_SCHEMA = "evalkit.ref/1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class StatsOnlyReferenceError(InputError):
    """The reference holds only mean/covariance statistics, and features were asked for."""


@dataclass
class ReferenceStats:
    """Mean and covariance of a statistics-only reference (no per-sample features).

    ``spatial`` holds ``(mu_s, sigma_s)`` for ``sfid`` when the import had them.
    ``n`` is None when the statistics file does not say how many images it summarises.
    """

    mu: np.ndarray
    sigma: np.ndarray
    spatial: tuple[np.ndarray, np.ndarray] | None = None
    n: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    stats_only: bool = True

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])


# ----------------------------------------------------------------------------- store paths


def default_ref_dir() -> Path:
    """``$EVALKIT_REF_DIR``, else ``$XDG_DATA_HOME/evalkit/refs``, else ``~/.local/share/...``."""
    env = os.environ.get("EVALKIT_REF_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "evalkit" / "refs"


def _root(ref_dir: str | os.PathLike | None) -> Path:
    return Path(ref_dir).expanduser() if ref_dir else default_ref_dir()


def validate_name(name: str) -> str:
    """A reference name: letters, digits, ``.``, ``_``, ``-``; no path separators; <= 64 chars."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise InputError(
            f"invalid reference name {name!r}: use letters, digits, '.', '_' and '-' "
            "(no path separators, at most 64 characters, not starting with '.' or '-')"
        )
    return name


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An advisory exclusive lock on ``root/.lock`` (no-op where fcntl is unavailable)."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(root / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- manifests


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: reference manifest missing (remove the folder and add it again)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable reference manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != REF_SCHEMA:
        raise InputError(f"{path}: not an evalkit reference manifest (expected schema {REF_SCHEMA!r})")
    return data


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    manifest["stats_only"] = bool(manifest["entries"]) and all(
        e.get("stats_only") for e in manifest["entries"]
    )
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def list_references(ref_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Manifests of every reference in the store, sorted by name (unreadable ones skipped)."""
    root = _root(ref_dir)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            out.append(_read_manifest(folder))
        except InputError:
            continue
    return out


def known_names(ref_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the registered references."""
    return [m["name"] for m in list_references(ref_dir)]


def is_registered(name: str, ref_dir: str | os.PathLike | None = None) -> bool:
    """True when ``name`` is a valid reference name with a manifest in the store."""
    return bool(_NAME.match(name or "")) and (_root(ref_dir) / name / MANIFEST).is_file()


def get_manifest(name: str, ref_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest of reference ``name``; unknown name: InputError listing the known ones."""
    validate_name(name)
    folder = _root(ref_dir) / name
    if not (folder / MANIFEST).is_file():
        raise InputError(_unknown_message(name, ref_dir))
    return _read_manifest(folder)


def _unknown_message(name: str, ref_dir) -> str:
    names = known_names(ref_dir)
    have = f"known references: {', '.join(names)}" if names else "no references are registered"
    return (
        f"unknown reference {name!r} in {_root(ref_dir)} ({have}); "
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


def _meta_field(meta: dict[str, Any], *keys: str) -> Any:
    """First non-empty of ``keys`` in a feature file's meta (also inside an ``encoder`` dict)."""
    enc = meta.get("encoder")
    for key in keys:
        if isinstance(enc, dict) and enc.get("name" if key == "encoder" else key) is not None:
            return enc["name" if key == "encoder" else key]
        value = meta.get(key)
        if value is not None and not isinstance(value, dict):
            return value
    return None


def _default_arch(encoder: str) -> str | None:
    try:
        from evalkit.encoders import get_encoder_spec

        return get_encoder_spec(encoder).default_arch
    except Exception:  # unknown or unregistered plugin: no default known
        return None


def _declared_sha(encoder: str, arch: str | None) -> str | None:
    try:
        from evalkit.encoders import get_encoder_spec

        spec = get_encoder_spec(encoder)
        w = spec.weights.get(arch or spec.default_arch)
        return w.sha256 if w is not None else None
    except Exception:
        return None


def _declared_dim(encoder: str, arch: str | None) -> int | None:
    try:
        from evalkit.encoders import get_encoder_spec

        spec = get_encoder_spec(encoder)
        return int(spec.outputs[arch or spec.default_arch]["features"])
    except Exception:
        return None


def _identity(fs_meta: dict[str, Any], options: ExtractOptions, extracted: bool) -> dict[str, Any]:
    """Encoder identity of extracted/imported features: the file's meta first, then options.

    ``resize`` (the extraction option) is known only when evalkit extracted the features now,
    or when the features carry no encoder identity and the options are all there is.
    """
    from_meta = _meta_field(fs_meta, "encoder") is not None
    encoder = str(_meta_field(fs_meta, "encoder") or options.encoder)
    return {
        "encoder": encoder,
        "arch": _meta_field(fs_meta, "arch") or options.arch or _default_arch(encoder),
        "weights_sha256": _meta_field(fs_meta, "weights_sha256"),
        "preprocess": _meta_field(fs_meta, "preprocess", "preprocessing"),
        "resize": options.resize if extracted or not from_meta else None,
        "identity_from": "meta" if from_meta else "options",
    }


def _wanted_identity(options: ExtractOptions) -> dict[str, Any] | None:
    """The identity ``options`` would extract with, known without building or downloading.

    Like ``evalkit.encoders.encoder_identity`` but never downloads: the weights digest is
    that of ``options.weights``, else of the locally cached official file, else the declared
    sha256, else unknown (None matches any stored digest).
    """
    try:
        from evalkit import encoders
        from evalkit.encoders.weights import file_sha256, local_weights

        spec = encoders.get_encoder_spec(options.encoder)
        arch = options.arch or spec.default_arch
        pre = encoders.encoder_preprocess(options.encoder, arch, options.resize)
        wspec = encoders.encoder_weights_spec(options.encoder, arch)
    except Exception:  # encoder layer unavailable or unknown encoder: options only
        return None
    sha = None
    try:
        if options.weights:
            sha = file_sha256(Path(options.weights))
        elif wspec is not None:
            local = local_weights(wspec)
            if local is not None:
                sha = file_sha256(local)
            elif wspec.sha256 and len(wspec.sha256) == 64:
                sha = wspec.sha256.lower()
    except Exception:
        sha = None
    return {"name": options.encoder, "arch": arch, "weights_sha256": sha,
            "preprocess": pre.describe() if hasattr(pre, "describe") else pre}


def _entry_file(ident: dict[str, Any], stats_only: bool) -> str:
    key = json.dumps({k: ident.get(k) for k in ("encoder", "arch", "weights_sha256", "preprocess",
                                                "resize")}, sort_keys=True)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    stem = _UNSAFE.sub("_", f"{ident['encoder']}-{ident.get('arch') or 'default'}")
    return f"{'stats-' if stats_only else ''}{stem}-{digest}.npz"


def _same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("encoder", "arch", "weights_sha256", "preprocess", "resize"))


# ----------------------------------------------------------------------------- loading sources


def is_stats_file(path: str | os.PathLike) -> bool:
    """True for an ``.npz`` with ``mu``/``sigma`` and no images or features (pytorch-fid, ADM)."""
    return _stats_npz_keys(Path(path)) is not None


def load_stats_file(path: str | os.PathLike) -> ReferenceStats:
    """Read a statistics ``.npz`` (``mu``, ``sigma``, optional ``mu_s``/``sigma_s``, ``n``)."""
    return _load_stats(Path(path))


def _stats_npz_keys(path: Path) -> set[str] | None:
    """Keys of an .npz holding mu/sigma statistics and no images or features, else None."""
    if path.suffix.lower() != ".npz" or not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            keys = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, OSError):
        return None
    if {"mu", "sigma"} <= keys and not keys & {"arr_0", "features"}:
        return keys
    return None


def _load_stats(path: Path) -> ReferenceStats:
    """Read mu/sigma (and mu_s/sigma_s) from a statistics .npz, validating shapes."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k], dtype=np.float64) for k in z.files
                      if k in ("mu", "sigma", "mu_s", "sigma_s")}
            n = int(z["n"]) if "n" in z.files and np.asarray(z["n"]).ndim == 0 else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: cannot read statistics .npz ({exc})") from None
    pairs = [("mu", "sigma")] + ([("mu_s", "sigma_s")] if {"mu_s", "sigma_s"} <= set(arrays) else [])
    for m, s in pairs:
        mu, sigma = arrays[m], arrays[s]
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise InputError(f"{path}: '{m}' has shape {mu.shape} and '{s}' {sigma.shape}; "
                             "expected (D,) and (D, D)")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise InputError(f"{path}: '{m}'/'{s}' hold NaN or infinite values")
    spatial = (arrays["mu_s"], arrays["sigma_s"]) if len(pairs) == 2 else None
    return ReferenceStats(arrays["mu"], arrays["sigma"], spatial, n, {}, str(path))


def _load_source(source: str, options: ExtractOptions) -> FeatureSet:
    """Features of ``source``: feature files are read directly, everything else extracted."""
    try:
        from evalkit.pipeline import load_features
    except ImportError:
        load_features = None
    if load_features is not None:
        return load_features(source, options)
    if is_feature_file(source):  # extraction pipeline not installed: feature files only
        return load_feature_file(source)
    raise InputError(f"{source}: cannot extract features (evalkit.pipeline is not available); "
                     "pass a feature file (.npz with 'features')")


def _source_fingerprint(fs_meta: dict[str, Any], source: str) -> str | None:
    """The loader's content fingerprint (``meta["source"]["fingerprint"]``), else a file hash."""
    src = fs_meta.get("source")
    if isinstance(src, dict) and src.get("fingerprint"):
        return str(src["fingerprint"])
    return fs_meta.get("source_fingerprint") or _fingerprint_path(source)


def _abs_source(source: str) -> str:
    return str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else source


# ----------------------------------------------------------------------------- add / remove


def add_reference(
    name: str,
    source: str,
    options: ExtractOptions | None = None,
    ref_dir: str | os.PathLike | None = None,
    *,
    force: bool = False,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """Extract (or import) ``source`` and store it as reference ``name``; returns the manifest.

    A feature file is imported as is; an ``.npz`` with only ``mu``/``sigma`` is stored as
    statistics (``stats_only``); any other source goes through
    ``evalkit.pipeline.load_features(source, options)``. Adding a second encoder to an
    existing name requires the same source (same fingerprint); an identity already stored is
    replaced only with ``force``. ``fingerprint`` overrides the source's content fingerprint
    (a catalog reference is identified by its file's sha256, see :mod:`evalkit.catalog_refs`).

    Raises:
        InputError: invalid name, missing source, a different source under the same name, or
            features of that encoder identity already stored (without ``force``).
    """
    options = options or ExtractOptions()
    validate_name(name)
    src_path = Path(source).expanduser()
    if not src_path.exists():
        raise InputError(f"{source}: no such file or folder (reference source for {name!r})")
    stats_keys = _stats_npz_keys(src_path)
    if stats_keys is not None:
        stats = _load_stats(src_path)
        fingerprint = fingerprint or "sha256:" + file_sha256(src_path)
        ident = _identity({}, options, extracted=False)
        expected = _declared_dim(ident["encoder"], ident["arch"])
        if expected is not None and expected != stats.dim:
            raise InputError(
                f"{source}: statistics of dimension {stats.dim}, but {ident['encoder']}/"
                f"{ident['arch']} features have {expected}; pass the --encoder/--arch they "
                "were computed with (pytorch-fid and ADM statistics: --encoder inception)"
            )
        payload = {"mu": stats.mu, "sigma": stats.sigma}
        if stats.spatial is not None:
            payload.update(mu_s=stats.spatial[0], sigma_s=stats.spatial[1])
        entry = dict(ident, stats_only=True, n=stats.n, dim=stats.dim,
                     arrays=sorted(payload), labels=False)
        writer = _npz_writer(payload)
    else:
        if not force and not is_feature_file(src_path) and is_registered(name, ref_dir):
            found = find_entry(name, options, ref_dir)  # say so before a long extraction
            if found is not None and not found.get("stats_only"):
                raise InputError(f"reference {name!r} already has {_describe_entry(found)} "
                                 "features; pass --force to extract them again")
        fs = _load_source(source, options)
        if fs.meta.get("placeholder"):  # a non-zero torchrun rank: rank 0 stores the reference
            return {}
        fingerprint = fingerprint or _source_fingerprint(fs.meta, str(src_path))
        ident = _identity(fs.meta, options, extracted=not is_feature_file(src_path))
        entry = dict(ident, stats_only=False, n=fs.n, dim=fs.dim, arrays=sorted(fs.arrays),
                     labels=fs.labels is not None, files=fs.files is not None)
        meta = {k: v for k, v in fs.meta.items() if k in _KEEP_META}
        meta.update(reference_name=name, source={"source": _abs_source(source), "n": fs.n,
                                                 "fingerprint": fingerprint})
        if fs.files is not None:  # per-row image locators (pipeline convention), for galleries
            meta["files"] = list(fs.files)
        stored = FeatureSet(fs.arrays, fs.labels, meta, fs.source)
        writer = lambda path: save_feature_file(stored, path)  # noqa: E731
    entry.update(file=_entry_file(ident, entry["stats_only"]), created=_now(),
                 source_fingerprint=fingerprint)
    return _store_entry(name, _abs_source(source), fingerprint, entry, writer, ref_dir, force)


def _npz_writer(payload: dict[str, np.ndarray]):
    def write(path: Path) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, **payload)
        atomic_write_bytes(path, buf.getvalue())
    return write


def _store_entry(name, source, fingerprint, entry, writer, ref_dir, force) -> dict[str, Any]:
    root = _root(ref_dir)
    with _locked(root):
        folder = root / name
        if (folder / MANIFEST).is_file():
            manifest = _read_manifest(folder)
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
            same = [e for e in manifest["entries"] if _same_identity(e, entry)]
            if same and not force:
                raise InputError(
                    f"reference {name!r} already has {entry['encoder']}/{entry.get('arch')} "
                    "features; pass --force to extract them again"
                )
            writer(folder / entry["file"])
            manifest["entries"] = [e for e in manifest["entries"] if not _same_identity(e, entry)]
            manifest["entries"].append(entry)
            manifest.update(source=source, source_fingerprint=fingerprint)
            _write_manifest(folder, manifest)
            return manifest
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
        try:
            writer(tmp / entry["file"])
            manifest = {"schema": REF_SCHEMA, "name": name, "source": source,
                        "source_fingerprint": fingerprint, "created": entry["created"],
                        "entries": [entry]}
            _write_manifest(tmp, manifest)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest


def store_file_reference(name: str, manifest: dict[str, Any], file: Path,
                         stats: list[tuple[dict[str, Any], dict[str, np.ndarray]]],
                         ref_dir: str | os.PathLike | None = None, *, move: bool = False,
                         force: bool = False) -> dict[str, Any]:
    """Register a reference that keeps its source file (a downloaded catalog file) in its folder.

    The folder ``REF_DIR/NAME`` is built in a temporary folder (the file moved or linked/copied
    in, one statistics ``.npz`` per item of ``stats``, the manifest) and renamed into place,
    under the store lock: readers see no reference or the complete one. ``manifest`` supplies
    the top-level fields (``source_fingerprint``, ``catalog``...); ``source`` is set to the
    file's final path. An existing reference of that name is replaced only with ``force``.
    """
    root = _root(ref_dir)
    with _locked(root):
        folder = root / name
        if (folder / MANIFEST).is_file() and not force:
            old = _read_manifest(folder)["source"]
            raise InputError(f"reference {name!r} is already registered ({old}); "
                             f"`evalkit ref rm {name}` first or pass --force")
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
        try:
            target = tmp / file.name
            if move:
                os.replace(file, target)
            else:
                try:
                    os.link(file, target)
                except OSError:
                    shutil.copy2(file, target)
            entries = []
            for entry, payload in stats:
                _npz_writer(payload)(tmp / entry["file"])
                entries.append(entry)
            full = dict(manifest, schema=REF_SCHEMA, name=name, source=str(folder / file.name),
                        created=manifest.get("created") or _now(), entries=entries)
            _write_manifest(tmp, full)
            if folder.exists():  # force: swap the old folder out, then drop it
                trash = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".removing", dir=root))
                os.replace(folder, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, folder)
        except BaseException:
            if move and (tmp / file.name).exists() and not file.exists():
                os.replace(tmp / file.name, file)  # give the download back for a retry
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return full


def update_manifest(name: str, changes: dict[str, Any],
                    ref_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Merge ``changes`` into the top level of reference ``name``'s manifest (atomically)."""
    root = _root(ref_dir)
    with _locked(root):
        manifest = _read_manifest(root / name)
        manifest.update(changes)
        _write_manifest(root / name, manifest)
        return manifest


def published_stats(name: str, options: ExtractOptions | None = None,
                    ref_dir: str | os.PathLike | None = None) -> ReferenceStats | None:
    """The statistics published inside reference ``name``'s image batch for ``options``' encoder.

    ADM's reference batches carry Inception mu/sigma (and mu_s/sigma_s) over the whole dataset
    next to their 10,000 images; a protocol scores ``fd``/``sfid`` against these. None when the
    reference has no such entry for the encoder.
    """
    options = options or ExtractOptions()
    manifest = get_manifest(name, ref_dir)
    wanted = _wanted_identity(options)
    for entry in manifest["entries"]:
        if entry.get("role") == PUBLISHED and _matches(entry, options, wanted):
            stats = _load_stats(_root(ref_dir) / name / entry["file"])
            stats.meta = _provenance(name, manifest, entry)
            stats.meta["published"] = entry.get("made_by")
            stats.source = manifest["source"]
            stats.n = entry.get("n")
            return stats
    return None


def remove_reference(name: str, ref_dir: str | os.PathLike | None = None) -> None:
    """Delete reference ``name`` and all its stored features (unknown name: InputError)."""
    get_manifest(name, ref_dir)
    root = _root(ref_dir)
    with _locked(root):
        trash = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".removing", dir=root))
        os.replace(root / name, trash)  # atomic: the name disappears at once
        shutil.rmtree(trash, ignore_errors=True)


# ----------------------------------------------------------------------------- resolving


def _matches(entry: dict[str, Any], options: ExtractOptions, wanted: dict[str, Any] | None) -> bool:
    """Whether a stored entry holds what ``options`` would extract (unknown fields match)."""
    if entry.get("encoder") != options.encoder:
        return False
    arch = options.arch or (wanted or {}).get("arch") or _default_arch(options.encoder)
    if arch is not None and entry.get("arch") not in (None, arch):
        return False
    if entry.get("resize") not in (None, options.resize):
        return False
    if wanted is not None:
        checks = ("weights_sha256", "preprocess")
        return all(entry.get(k) is None or wanted.get(k) is None or entry[k] == wanted[k]
                   for k in checks)
    stored = entry.get("weights_sha256")
    want = file_sha256(Path(options.weights)) if options.weights else _declared_sha(
        options.encoder, arch)
    return stored is None or want is None or stored == want


def find_entry(name: str, options: ExtractOptions | None = None,
               ref_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The manifest entry of ``name`` for the encoder identity in ``options`` (None: absent).

    Feature entries are preferred over statistics-only ones, then the most recent.
    """
    options = options or ExtractOptions()
    manifest = get_manifest(name, ref_dir)
    wanted = _wanted_identity(options)
    cands = [e for e in manifest["entries"]
             if e.get("role") != PUBLISHED and _matches(e, options, wanted)]
    cands.sort(key=lambda e: (not e.get("stats_only"), e.get("created", "")), reverse=True)
    return cands[0] if cands else None


def resolve_reference(
    name: str,
    options: ExtractOptions | None = None,
    ref_dir: str | os.PathLike | None = None,
    *,
    allow_stats: bool = False,
) -> FeatureSet | ReferenceStats:
    """Features of reference ``name`` for the encoder in ``options``.

    When the reference lacks that encoder, it is extracted from the recorded source if that
    still exists (and still has the recorded fingerprint) and stored; otherwise an InputError
    says how to add it. The FeatureSet's ``meta`` carries ``reference_name``, ``source`` and
    ``source_fingerprint`` for the result record's ``reference`` field.

    Args:
        allow_stats: return a :class:`ReferenceStats` for a statistics-only reference
            instead of raising :class:`StatsOnlyReferenceError`.

    Raises:
        InputError: unknown name (listing the known ones), encoder missing and the source gone,
            or, with ``allow_stats=False``, a statistics-only reference.
    """
    options = options or ExtractOptions()
    manifest = get_manifest(name, ref_dir)
    if manifest.get("catalog"):  # trust on first use: the file is still the one verified
        from evalkit.catalog_refs import verify_stored_file

        verify_stored_file(manifest, full=False)
    entry = find_entry(name, options, ref_dir)
    if entry is None:
        entry = _extract_missing(name, manifest, options, ref_dir)
    path = _root(ref_dir) / name / entry["file"]
    if entry.get("stats_only"):
        if not allow_stats:
            raise StatsOnlyReferenceError(
                f"reference {name!r} holds only mean/covariance statistics ({manifest['source']}); "
                "only fd and sfid can run against it"
            )
        stats = _load_stats(path)
        stats.meta = _provenance(name, manifest, entry)
        stats.source = manifest["source"]
        return stats
    fs = load_feature_file(path)
    files = fs.meta.pop("files", None)
    if isinstance(files, list) and len(files) == fs.n:
        fs.files = [str(f) for f in files]
    fs.meta.update(_provenance(name, manifest, entry))
    fs.source = manifest["source"]
    return fs


def _provenance(name: str, manifest: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """Meta of a resolved reference, in the pipeline's shape (``source`` is a dict)."""
    return {"reference_name": name, "stats_only": bool(entry.get("stats_only")),
            "source": {"source": manifest["source"], "n": entry.get("n"),
                       "fingerprint": manifest.get("source_fingerprint")}}


def _describe_entry(entry: dict[str, Any]) -> str:
    """``encoder/arch`` plus what else tells identities apart (resize, weights, preprocessing)."""
    extra = []
    if entry.get("resize"):
        extra.append(f"resize {entry['resize']}")
    if entry.get("weights_sha256"):
        extra.append(f"weights {str(entry['weights_sha256'])[:8]}")
    if entry.get("preprocess"):
        digest = hashlib.sha256(str(entry["preprocess"]).encode("utf-8")).hexdigest()[:8]
        extra.append(f"preprocess {digest}")
    if entry.get("stats_only"):
        extra.append("statistics only")
    return f"{entry['encoder']}/{entry.get('arch')}" + (f" ({', '.join(extra)})" if extra else "")


def _extract_missing(name, manifest, options, ref_dir) -> dict[str, Any]:
    have = "; ".join(sorted({_describe_entry(e) for e in manifest["entries"]})) or "none"
    how = (f"add them with `evalkit ref add {name} SOURCE --encoder {options.encoder}"
           f"{' --arch ' + options.arch if options.arch else ''} --force`")
    source = manifest["source"]
    if (manifest.get("catalog") or {}).get("kind") == "statistics":
        raise InputError(f"reference {name!r} is a published statistics file ({have}); it has no "
                         f"images to extract {options.encoder} features from: pass the --encoder "
                         "(and --arch) it serves, see `evalkit ref list --available`")
    if not Path(source).exists():
        raise InputError(f"reference {name!r} has no {options.encoder} features (has: {have}) and "
                         f"its source {source} is gone; {how}")
    if is_feature_file(source) or _stats_npz_keys(Path(source)) is not None:
        raise InputError(f"reference {name!r} has no {options.encoder} features (has: {have}) and "
                         f"its source {source} holds features, not images; {how}")
    if manifest.get("catalog"):  # a downloaded file: check it is still the one first verified
        from evalkit.catalog_refs import verify_stored_file

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
    if isinstance(ref, ReferenceStats):
        if array == "features":
            return ref.mu, ref.sigma
        if array == "spatial" and ref.spatial is not None:
            return ref.spatial
        raise InputError(f"reference {name!r} has no {array} statistics (stats-only import)")
    x = ref.get(array)
    if x is None:
        raise InputError(f"reference {name!r} has no '{array}' array")
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1)
