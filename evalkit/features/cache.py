"""The feature cache: one feature file per (source, encoder, preprocessing, precision).

Keys hash content and configuration, as torch-fidelity's and clean-fid's caches do: the cache
schema version, the source's fast fingerprint, the encoder identity (name, arch, weights
sha256, preprocessing), the precision and the version of the encoder's declared output set;
never a bare name (dgm-eval's cache key ignored arch
and resizing). Entries are written atomically (temp file + ``os.replace``, as torch-fidelity
does) and carry their key and a sha256 of their arrays in ``meta["cache"]``; an entry that
fails to load, holds another key or whose arrays do not match the checksum is warned about,
deleted and recomputed, never used.

Shards: while an entry is being extracted, each finished shard of its images is written as
``<key>.shard-00012-of-00030.npz`` next to where the entry will be (atomically, stamped with
the key, its range and a sha256 of its arrays and bookkeeping), so an interrupted run resumes
from the shards already written; once the entry is stored its shard files are deleted.

Location: ``cache_dir`` argument, else ``$EVALKIT_CACHE_DIR``, else
``$XDG_CACHE_HOME/evalkit``, else ``~/.cache/evalkit``; entries live under ``<dir>/features/``."""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evalkit import encoders
from evalkit.errors import CacheWarning, InputError
from evalkit.features.featureset import FeatureSet, load_feature_file, save_feature_file
from evalkit.features.identity import EncoderIdentity
from evalkit.files.fileio import atomic_write_bytes, default_cache_dir

CACHE_SCHEMA = 2  # 2: keys from EncoderIdentity.key() (precision inside the identity)


def cache_key(fingerprint: str, identity: EncoderIdentity) -> str:
    """sha256 hex of the JSON of (cache schema, source fingerprint, encoder identity key and
    the version of the encoder's output set).

    The identity (:class:`evalkit.features.identity.EncoderIdentity`) carries the encoder, arch,
    weights sha256, preprocessing and precision; changing any of them changes the key. The
    encoder's declared ``outputs_version`` (:class:`evalkit.encoders.spec.Builtin`) is hashed
    too, so an entry holding another set of outputs (clip features cached before
    ``projected`` existed) is never served; it enters the payload only when it is not 1, so
    the keys of encoders whose outputs never changed are the ones they always had.
    """
    payload = {"schema": CACHE_SCHEMA, "source": fingerprint, "encoder": identity.key()}
    version = encoders.encoder_outputs_version(identity.name)
    if version != 1:
        payload["outputs"] = version
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def arrays_checksum(fs: FeatureSet) -> str:
    """sha256 over every array (name, dtype, shape, bytes) and the labels."""
    items = sorted(fs.arrays.items())
    if fs.labels is not None:
        items.append(("labels", fs.labels))
    return _hash_arrays(items).hexdigest()


def shard_checksum(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """sha256 over a shard's arrays (as :func:`arrays_checksum`) and its bookkeeping JSON."""
    h = _hash_arrays(sorted(arrays.items()))
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return h.hexdigest()


def _hash_arrays(items) -> hashlib._Hash:
    h = hashlib.sha256()
    for name, arr in items:
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}\n".encode())
        h.update(np.ascontiguousarray(arr).data)
    return h


class FeatureCache:
    """Feature files keyed by :func:`cache_key` under ``<cache_dir>/features``."""

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / "features" / f"{key}.npz"

    def load(self, key: str) -> FeatureSet | None:
        """The entry for ``key``, or None when absent or invalid (an invalid one is deleted)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            fs = load_feature_file(path)
        except InputError as exc:
            return self._discard(path, f"unreadable: {exc}")
        stamp = fs.meta.pop("cache", None) or {}
        if stamp.get("key") != key:
            return self._discard(path, "its key does not match its file name")
        if stamp.get("checksum") != arrays_checksum(fs):
            return self._discard(path, "checksum mismatch")
        return fs

    def store(self, key: str, fs: FeatureSet) -> None:
        """Write ``fs`` as the entry for ``key`` (atomically); a failure only warns."""
        meta = dict(fs.meta)
        meta["cache"] = {"key": key, "checksum": arrays_checksum(fs), "schema": CACHE_SCHEMA}
        try:
            save_feature_file(FeatureSet(fs.arrays, fs.labels, meta, fs.source), self.path(key))
        except OSError as exc:
            warnings.warn(f"could not write the feature cache at {self.path(key)} ({exc}); "
                          "continuing without it", CacheWarning, stacklevel=2)

    # -- shards of an entry being extracted ------------------------------------------------
    def shard_path(self, key: str, index: int, count: int) -> Path:
        """``<root>/features/<key>.shard-<index>-of-<count>.npz`` (indices 5 digits or more)."""
        return self.root / "features" / f"{key}.shard-{index:05d}-of-{count:05d}.npz"

    def store_shard(self, key: str, rng: Sequence[int], arrays: dict[str, np.ndarray],
                    meta: dict[str, Any]) -> Path:
        """Write one shard atomically, stamped with ``key``, its range and a checksum.

        ``rng`` is (index, count, start, stop); ``meta`` any JSON-able bookkeeping. Unlike
        :meth:`store`, a failure raises (OSError): a run that cannot write its shards would
        lose them.
        """
        index, count, start, stop = (int(v) for v in rng)
        stamp = {"key": key, "range": [index, count, start, stop], "schema": CACHE_SCHEMA,
                 "checksum": shard_checksum(arrays, meta)}
        buf = io.BytesIO()
        np.savez(buf, **arrays, __meta__=np.array(json.dumps({"meta": meta, "cache": stamp})))
        path = self.shard_path(key, index, count)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def load_shard(self, key: str, rng: Sequence[int],
                   parse: Callable[[dict[str, np.ndarray], dict[str, Any]], Any] | None = None
                   ) -> Any:
        """(arrays, meta) of a shard written by :meth:`store_shard` (or ``parse(arrays, meta)``
        when given), or None when absent.

        A shard file that cannot be read, holds another key or range, fails its checksum, or
        that ``parse`` rejects (ValueError, KeyError, TypeError) is warned about, deleted and
        reported absent (it is extracted again).
        """
        index, count, start, stop = (int(v) for v in rng)
        path = self.shard_path(key, index, count)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files if k != "__meta__"}
                head = json.loads(str(z["__meta__"]))
            meta, stamp = head["meta"], head["cache"]
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            return self._discard(path, f"unreadable: {exc}")
        if stamp.get("key") != key or stamp.get("range") != [index, count, start, stop]:
            return self._discard(path, "its key or range does not match its file name")
        if stamp.get("checksum") != shard_checksum(arrays, meta):
            return self._discard(path, "checksum mismatch")
        if parse is None:
            return arrays, meta
        try:
            return parse(arrays, meta)
        except (ValueError, KeyError, TypeError) as exc:
            return self._discard(path, f"malformed: {exc}")

    def shard_files(self, key: str) -> list[Path]:
        """The shard files of ``key`` present now (any shard layout), sorted."""
        folder = self.root / "features"
        if not folder.is_dir():
            return []
        return sorted(folder.glob(f"{key}.shard-*.npz"))

    def remove_shards(self, key: str) -> None:
        """Delete every shard file of ``key`` (after its entry was stored)."""
        for path in self.shard_files(key):
            try:
                path.unlink()
            except OSError:
                pass

    def _discard(self, path: Path, why: str) -> None:
        warnings.warn(f"feature cache entry {path} is corrupt ({why}); recomputing it",
                      CacheWarning, stacklevel=3)
        try:
            path.unlink()
        except OSError:
            pass
        return None
