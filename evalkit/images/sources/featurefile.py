"""A feature file: an ``.npz`` holding a ``features`` array (already extracted; no images)."""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from evalkit.files.fileio import file_sha256
from evalkit.images.sources.base import Source, is_source_arg


def is_feature_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is an .npz holding a ``features`` array (not an image batch)."""
    p = Path(path)
    if p.suffix.lower() != ".npz" or not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as zf:
            return "features.npy" in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def stats_npz_keys(path: str | os.PathLike) -> set[str] | None:
    """Keys of an .npz holding mu/sigma statistics and no images or features, else None
    (pytorch-fid's, clean-fid's and EDM2-converted statistics files)."""
    path = Path(path)
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


def is_image_source(path: str | os.PathLike) -> bool:
    """True when ``path`` exists (or is a brace pattern of shards) and holds images to decode
    (a folder, a zip, tar shards, an image array),
    not already-made features or statistics."""
    return is_source_arg(path) and not is_feature_file(path) and stats_npz_keys(path) is None


@dataclass
class FeatureFileSource(Source):
    """A feature file; fingerprint: the file's bytes. It has no images (length 0)."""

    kind: ClassVar[str] = "features"

    @classmethod
    def claims(cls, path: Path) -> bool:
        return is_feature_file(path)

    @classmethod
    def resolve(cls, text: str, path: Path, fingerprint: bool = True) -> FeatureFileSource:
        return cls(text, path, fingerprint=file_sha256(path) if fingerprint else "")
