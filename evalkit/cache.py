"""The feature cache: one SPEC feature file per (source, encoder, preprocessing, precision).

Keys hash content and configuration (STYLE.md rule 6): the cache schema version, the source's
fast fingerprint, the encoder identity (name, arch, weights sha256, preprocessing) and the
precision; never a bare name (dgm-eval's cache key ignored arch and resizing). Entries are
written atomically (temp file + ``os.replace``, as torch-fidelity does) and carry their key and a
sha256 of their arrays in ``meta["cache"]``; an entry that fails to load, holds another key or
whose arrays do not match the checksum is warned about, deleted and recomputed, never used.

Location: ``cache_dir`` argument, else ``$EVALKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/evalkit``,
else ``~/.cache/evalkit``; entries live under ``<dir>/features/``.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evalkit.errors import InputError
from evalkit.featureset import FeatureSet, load_feature_file, save_feature_file

CACHE_SCHEMA = 1


class CacheWarning(UserWarning):
    """A cache entry was corrupt (and is rebuilt) or the cache could not be written."""


def default_cache_dir() -> Path:
    """``$EVALKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/evalkit``, else ``~/.cache/evalkit``."""
    env = os.environ.get("EVALKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "evalkit"
    return Path.home() / ".cache" / "evalkit"


def cache_key(fingerprint: str, encoder_identity: dict[str, Any], precision: str) -> str:
    """sha256 hex of the JSON of (schema, source fingerprint, encoder identity, precision)."""
    ident = {k: encoder_identity.get(k) for k in ("name", "arch", "weights_sha256", "preprocess")}
    payload = {"schema": CACHE_SCHEMA, "source": fingerprint, "encoder": ident,
               "precision": precision}
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def arrays_checksum(fs: FeatureSet) -> str:
    """sha256 over every array (name, dtype, shape, bytes) and the labels."""
    h = hashlib.sha256()
    items = sorted(fs.arrays.items())
    if fs.labels is not None:
        items.append(("labels", fs.labels))
    for name, arr in items:
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}\n".encode())
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


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

    def get_or_compute(self, key: str, compute_fn: Callable[[], FeatureSet]) -> FeatureSet:
        """The cached FeatureSet for ``key``, else ``compute_fn()`` stored under ``key``.

        ``compute_fn`` (which builds the encoder and extracts) runs only on a miss. The
        returned set has ``meta["cache_hit"]`` True or False.
        """
        fs = self.load(key)
        if fs is not None:
            fs.meta["cache_hit"] = True
            return fs
        fs = compute_fn()
        self.store(key, fs)
        fs.meta["cache_hit"] = False
        return fs

    def _discard(self, path: Path, why: str) -> None:
        warnings.warn(f"feature cache entry {path} is corrupt ({why}); recomputing it",
                      CacheWarning, stacklevel=3)
        try:
            path.unlink()
        except OSError:
            pass
        return None
