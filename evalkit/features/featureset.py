"""FeatureSet: the arrays one source yields, and the feature-file format (.npz)."""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import InputError
from evalkit.files.fileio import atomic_write_bytes
from evalkit.files.safezip import check_npz

ARRAY_KEYS = ("features", "logits", "spatial", "embedding", "projected", "text")


@dataclass
class FeatureSet:
    """Features of one set of images (or of a feature file), with provenance.

    ``arrays`` maps ``features`` (required for a set with samples), and optionally
    ``logits``, ``spatial``, ``embedding`` to float arrays with N rows; ``labels`` is an int
    array of N or None; ``files`` one image locator per row (or None). ``meta`` is the
    provenance dictionary stored in the file's ``meta`` entry.

    Conditions: ``labels`` (a class per row) and ``prompts`` (a text prompt per row, or None);
    ``arrays["text"]``, when present, holds the L2-normalised CLIP text embedding of each row's
    prompt (same model as ``embedding``; ``meta["text"]`` says which and how many prompts were
    truncated). Both travel with the rows through :meth:`subset` and the feature file.

    A *statistics-only* set (``has_samples`` False: pytorch-fid's ``--save-stats`` or an ADM
    statistics ``.npz``) has no rows, only ``moments``: array kind -> (float64 mean,
    covariance with N-1). Metrics that declare they run from moments can use it as reference.
    """

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    files: list[str] | None = None  # per-row image locators ("dir/a.png", "x.zip::a.png"), if images
    moments: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    prompts: list[str] | None = None

    @classmethod
    def from_moments(cls, moments: dict[str, tuple[np.ndarray, np.ndarray]], *,
                     n: int | None = None, source: str = "",
                     meta: dict[str, Any] | None = None) -> FeatureSet:
        """A statistics-only set: ``moments`` kind -> (mean, covariance); ``n`` when known."""
        meta = dict(meta or {}, stats_only=True)
        meta.setdefault("n", n)
        return cls({}, None, meta, source, None,
                   {k: (np.asarray(m, np.float64), np.asarray(c, np.float64))
                    for k, (m, c) in moments.items()})

    @property
    def has_samples(self) -> bool:
        """False for a statistics-only set (moments, no rows)."""
        return "features" in self.arrays

    @property
    def n(self) -> int | None:
        """Rows; for a statistics-only set the count its statistics summarise (None: unknown)."""
        if not self.has_samples:
            n = self.meta.get("n")
            return None if n is None else int(n)
        return int(self.arrays["features"].shape[0])

    @property
    def dim(self) -> int:
        if not self.has_samples:
            return int(self.moments["features"][0].shape[0])
        return int(self.arrays["features"].shape[1])

    def get(self, kind: str) -> np.ndarray | None:
        return self.arrays.get(kind)

    def subset(self, index: np.ndarray) -> FeatureSet:
        """Rows ``index`` (repeats allowed) of every array, with their labels and locators.

        The one way rows are selected (``--nsample``, bootstrap resamples).
        """
        if not self.has_samples:
            raise InputError(f"{self.source}: statistics-only reference has no rows to select")
        index = np.asarray(index, dtype=np.intp)
        return FeatureSet(
            {k: v[index] for k, v in self.arrays.items()},
            None if self.labels is None else self.labels[index],
            dict(self.meta),
            self.source,
            None if self.files is None else [self.files[i] for i in index],
            dict(self.moments),  # statistics published for the whole set (a protocol's) stay
            None if self.prompts is None else [self.prompts[i] for i in index],
        )


def load_feature_file(path: str | os.PathLike) -> FeatureSet:
    """Read and validate a feature file (:func:`save_feature_file`'s format); every problem is
    an InputError naming the file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if zipfile.is_zipfile(p):
        check_npz(p)  # a bomb or a header claiming 10^12 values: refused before numpy reads
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            if "features" not in keys:
                raise InputError(
                    f"{p}: no 'features' array (has: {', '.join(sorted(keys)) or 'nothing'}); "
                    "a feature file needs N×D 'features'"
                )
            arrays = {k: np.asarray(z[k]) for k in ARRAY_KEYS if k in keys}
            labels = np.asarray(z["labels"]) if "labels" in keys else None
            prompts = [str(t) for t in z["prompts"]] if "prompts" in keys else None
            meta_raw = z["meta"] if "meta" in keys else None
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{p}: cannot read as .npz ({exc})") from None
    meta: dict[str, Any] = {}
    if meta_raw is not None:
        try:
            meta = json.loads(str(meta_raw))
        except (json.JSONDecodeError, RecursionError):
            raise InputError(f"{p}: 'meta' is not a JSON string") from None
    fs = FeatureSet(arrays, labels, meta, str(p), prompts=prompts)
    validate(fs, str(p))
    return fs


def validate(fs: FeatureSet, name: str) -> None:
    """Shapes agree, values are finite; raises InputError naming ``name``."""
    feats = fs.arrays.get("features")
    if feats is None or feats.ndim != 2:
        raise InputError(f"{name}: 'features' must be a 2-D N×D array, got shape "
                         f"{None if feats is None else feats.shape}")
    n = feats.shape[0]
    if n == 0:
        raise InputError(f"{name}: 'features' has no rows")
    for key, arr in fs.arrays.items():
        if arr.ndim != 2 or arr.shape[0] != n:
            raise InputError(f"{name}: '{key}' has shape {arr.shape}, expected {n} rows of a 2-D array")
        if not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"{name}: '{key}' is not numeric (dtype {arr.dtype})")
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).any(axis=1).sum())
            raise InputError(f"{name}: '{key}' has NaN or infinite values in {bad} rows")
    if fs.labels is not None and (fs.labels.ndim != 1 or fs.labels.shape[0] != n):
        raise InputError(f"{name}: 'labels' has shape {fs.labels.shape}, expected ({n},)")
    if fs.prompts is not None and len(fs.prompts) != n:
        raise InputError(f"{name}: {len(fs.prompts)} prompts for {n} rows")


def save_feature_file(fs: FeatureSet, path: str | os.PathLike) -> None:
    """Write ``fs`` as a feature file (.npz: one array per output, ``meta`` as JSON), atomically."""
    payload: dict[str, Any] = {k: v for k, v in fs.arrays.items()}
    if fs.labels is not None:
        payload["labels"] = fs.labels
    if fs.prompts is not None:
        payload["prompts"] = np.array(fs.prompts, dtype=str)  # unicode, no pickle
    payload["meta"] = np.array(json.dumps(fs.meta, sort_keys=True))
    buf = io.BytesIO()
    np.savez(buf, **payload)
    atomic_write_bytes(path, buf.getvalue())
