"""Source kinds (evalkit.images.sources): the registry resolve_source asks, the fingerprints
feature caches and records are keyed on (pinned: a change invalidates every cache), and a new
kind added as one class plus one registration."""
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from evalkit.errors import InputError
from evalkit.images.sources import Source, content_fingerprint, resolve_source, source_kinds
from evalkit.images.sources import base as kinds_base

MTIME_NS = 1_600_000_000_123_456_789
DATE = (2020, 1, 2, 3, 4, 6)


def _npy_bytes(arr: np.ndarray) -> bytes:
    """A version 1.0 .npy file written by hand (independent of numpy's writer)."""
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {arr.shape}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + arr.tobytes()


def _store(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    zf.writestr(zipfile.ZipInfo(name, date_time=DATE), data)


def make_fixed_sources(tmp_path: Path) -> Path:
    """Byte-for-byte reproducible sources of every kind (fixed bytes, times and zip dates)."""
    folder = tmp_path / "imgs"
    for rel, data in [("cat/1.png", b"one"), ("cat/2.png", b"two!"), ("dog/3.JPG", b"3")]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        os.utime(folder / rel, ns=(MTIME_NS, MTIME_NS))
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as zf:
        for name, data in [("wrap/a/1.png", b"one"), ("wrap/b/2.png", b"two"), ("../x.png", b"x")]:
            _store(zf, name, data)
    rows = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)
    (tmp_path / "rows.npy").write_bytes(_npy_bytes(rows))
    with zipfile.ZipFile(tmp_path / "rows.npz", "w") as zf:
        _store(zf, "arr_0.npy", _npy_bytes(rows))
    with zipfile.ZipFile(tmp_path / "feats.npz", "w") as zf:
        _store(zf, "features.npy", b"not read")
    return tmp_path


@pytest.fixture
def fixed_sources(tmp_path):
    return make_fixed_sources(tmp_path)


# Recorded from the code before sources were split into one module per kind.
GOLDEN = {  # name: (kind, fingerprint, labels)
    "imgs": ("dir", "194db48b1fd937411cf88cc82b5f01eaa21794ea174a5ab3fa7bf7f56bd516c2", [0, 0, 1]),
    "set.zip": ("zip", "c8023f0d02cfab6c52c2131734248a8f0581f86cae0d5976a2b346149900eaca", [0, 1, 1]),
    "rows.npy": ("array", "574db7918c0995b8630c668d7e8489a98a0eb48fff93c7c4a69334c8e56d1ead", None),
    "rows.npz": ("array", "b62926be5121d59dfe3ca6ce418171899508c9112f519219bbe132f900b7a51c", None),
    "feats.npz": ("features", "c77b6f173f35a629639991f68516e46808aa66436fc4aeb1568cc36c125d901d", None),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_fingerprints_are_pinned(fixed_sources, name):
    src = resolve_source(fixed_sources / name)
    labels = None if src.labels is None else src.labels.tolist()
    assert (src.kind, src.fingerprint, labels) == GOLDEN[name]
    again = pickle.loads(pickle.dumps(src))
    assert (type(again), again.fingerprint, again.locators) == (type(src), src.fingerprint,
                                                                 src.locators)


def test_content_fingerprint_is_pinned():
    assert content_fingerprint(["a/1.png", "2"], ["d1", "d2"]) == (
        "sha256:10516fd68a7c0db0e15deb0020c829ebacc2d877c5869e0473dd5c8d12a07aa6")


def test_builtin_kinds_in_the_order_they_are_asked():
    assert [k.kind for k in source_kinds()] == ["tar", "table", "dir", "features", "zip", "array"]


@dataclass
class LinesSource(Source):
    """A toy kind: a ``.lines`` text file, one grey level per line, each a 2×2 image."""

    kind: ClassVar[str] = "lines"
    accepts: ClassVar[tuple[str, ...]] = (".lines",)

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix == ".lines"

    @classmethod
    def resolve(cls, text, path, fingerprint=True):
        levels = path.read_text().split()
        return cls(text, path, locators=[f"{text}#{i}" for i in range(len(levels))],
                   names=[str(i) for i in range(len(levels))])

    def read_rgb(self, i):
        level = int(self.path.read_text().split()[i])
        return np.full((2, 2, 3), level, np.uint8), str(level), False


def test_a_new_kind_is_one_class_and_one_registration(tmp_path, monkeypatch):
    monkeypatch.setattr(kinds_base, "KINDS", list(kinds_base.KINDS))
    (tmp_path / "x.lines").write_text("7\n200\n")
    (tmp_path / "x.txt").write_text("7\n")
    with pytest.raises(InputError, match=r"expected \.tar shards, \.parquet / \.arrow, an image "
                                         r"folder, \.zip, \.npz or \.npy\)$"):
        resolve_source(tmp_path / "x.lines")
    kinds_base.register_kinds(LinesSource)
    src = resolve_source(tmp_path / "x.lines")
    assert isinstance(src, LinesSource) and len(src) == 2
    assert src.load_rgb(1)[0].tolist() == np.full((2, 2, 3), 200).tolist()
    with pytest.raises(InputError, match=r"expected \.tar shards, \.parquet / \.arrow, an image "
                                         r"folder, \.zip, \.npz, \.npy or \.lines\)$"):
        resolve_source(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="registered twice"):
        kinds_base.register_kinds(LinesSource)
