"""A uint8 image array: ``.npz`` with ``arr_0`` (N×H×W×C, the ADM reference-batch format;
optional ``arr_1`` labels) or ``.npy`` N×H×W×C, C in {1, 3, 4}.

Uncompressed arrays are memory-mapped (each DataLoader worker maps the file itself); a
compressed ``arr_0`` is loaded once by :meth:`ArraySource.open` before the workers fork.
Locators are ``images.npz[i]``.
"""
from __future__ import annotations

import hashlib
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from evalkit.errors import InputError
from evalkit.files.fileio import file_sha256
from evalkit.files.safezip import check_npz
from evalkit.images.decode import array_to_rgb_uint8
from evalkit.images.locators import Locator, array_item
from evalkit.images.sources.base import Source, container, hash_lines, resolve_source

SUFFIXES = (".npz", ".npy")


@dataclass
class ArraySource(Source):
    """Rows of an N×H×W×C uint8 array; fingerprint: the file's bytes. A row's digest is the
    sha256 of its raw pixel bytes."""

    kind: ClassVar[str] = "array"
    locator_kind: ClassVar[str | None] = "array"
    accepts: ClassVar[tuple[str, ...]] = SUFFIXES

    array_key: str | None = None
    array_shape: tuple[int, ...] | None = None
    _array_offset: int | None = field(default=None, repr=False)
    _array_fortran: bool = field(default=False, repr=False)
    _array: Any = field(default=None, repr=False)
    _row_of: dict[int, int] | None = field(default=None, repr=False)  # source row -> _array row

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._array_offset is not None:  # memory-mapped: reopen in the worker, don't pickle
            state["_array"] = None
        return state

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix.lower() in SUFFIXES

    @classmethod
    def resolve(cls, text: str, path: Path, fingerprint: bool = True) -> ArraySource:
        if path.suffix.lower() == ".npy":
            key, shape, dtype, offset, fortran = None, *_npy_header(text, path)
            labels = None
            held = path.stat().st_size - offset
            if int(np.prod(shape, dtype=object)) * dtype.itemsize != held:
                raise InputError(f"{text}: its header claims shape {tuple(shape)} of {dtype} "
                                 f"but {held} bytes follow it")
        else:
            check_npz(path, text)  # bombs and headers that lie about their size
            key, (shape, dtype, offset, fortran), labels = "arr_0", *_npz_arrays(text, path)
        if dtype != np.uint8 or len(shape) != 4 or shape[3] not in (1, 3, 4):
            raise InputError(f"{text}: expected N×H×W×C uint8 images with C in 1, 3, 4 "
                             f"(got {dtype} array of shape {tuple(shape)})")
        if shape[0] == 0 or shape[1] == 0 or shape[2] == 0:
            raise InputError(f"{text}: the image array is empty (shape {tuple(shape)})")
        n = int(shape[0])
        if labels is not None and (labels.ndim != 1 or labels.shape[0] != n
                                   or not np.issubdtype(labels.dtype, np.integer)):
            raise InputError(f"{text}: 'arr_1' labels must be {n} integers "
                             f"(got {labels.dtype} shape {labels.shape})")
        locators = [array_item(text, i) for i in range(n)]
        fp = hash_lines(["array", key or "", file_sha256(path)]) if fingerprint else ""
        return cls(text, path, locators=locators, names=[str(i) for i in range(n)],
                   labels=None if labels is None else labels.astype(np.int64), fingerprint=fp,
                   array_key=key, array_shape=tuple(int(s) for s in shape),
                   _array_offset=offset, _array_fortran=fortran)

    @classmethod
    def open_locator(cls, loc: Locator, text: str, root: Path | None) -> Image.Image:
        src = resolve_source(str(container(loc.path, root, SUFFIXES)), fingerprint=False)
        rgb, _, _ = src.load_rgb(int(loc.index or 0))
        return Image.fromarray(rgb)

    def open(self) -> None:
        if self._array is None:
            self._get_array()

    def open_rows(self, rows: np.ndarray) -> None:
        """Only ``rows`` will be read: a compressed C-order ``arr_0`` is inflated as a stream
        and only those rows are kept (memory: the rows, not the array); a memory-mapped one
        needs nothing (only the pages read are touched)."""
        if self._array is not None or self._array_offset is not None:
            return
        try:
            self._array, self._row_of = _read_npz_rows(self.path, self.arg, self.array_key,
                                                       np.asarray(rows, dtype=np.int64))
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise InputError(f"{self.arg}: cannot read '{self.array_key}' ({exc})") from None

    def iter_digests(self):
        """Each row's digest (sha256 of its raw bytes), one row at a time: a memory-mapped
        array row by row, a compressed one inflated as a stream (never held whole)."""
        if self._array_offset is not None or self._array_fortran or (
                self._array is not None and self._row_of is None):
            array = self._get_array() if self._row_of is None else self._whole_array()
            for i in range(len(self)):
                yield i, hashlib.sha256(np.ascontiguousarray(array[i]).tobytes()).hexdigest()
            return
        try:
            yield from _stream_row_digests(self.path, self.arg, self.array_key)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise InputError(f"{self.arg}: cannot read '{self.array_key}' ({exc})") from None

    def _whole_array(self) -> np.ndarray:
        with np.load(self.path, allow_pickle=False) as z:
            return np.asarray(z[self.array_key])

    def read_rgb(self, i: int) -> tuple[np.ndarray, str, bool]:
        array = self._get_array()
        row = np.ascontiguousarray(array[self._row_of[i]] if self._row_of is not None
                                   else array[i])
        digest = hashlib.sha256(row.tobytes()).hexdigest()
        return array_to_rgb_uint8(row), digest, False

    def _get_array(self) -> np.ndarray:
        if self._array is None:
            if self._array_offset is not None:
                self._array = np.memmap(self.path, dtype=np.uint8, mode="r",
                                        offset=self._array_offset, shape=self.array_shape,
                                        order="F" if self._array_fortran else "C")
            else:
                with np.load(self.path, allow_pickle=False) as z:
                    self._array = np.asarray(z[self.array_key])
        return self._array


READ_CHUNK = 1 << 20  # bytes inflated at a time while skipping rows that are not kept


def _read_npz_rows(path: Path, text: str, key: str, rows: np.ndarray
                   ) -> tuple[np.ndarray, dict[int, int] | None]:
    """``rows`` (sorted) of the compressed array ``key`` of an npz, inflated as a stream:
    (those rows stacked, source row -> stacked row). A Fortran-order array has no contiguous
    rows: it is loaded whole (mapping None)."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
        shape, dtype, fortran = _read_header(fh, text)
        if fortran:
            with np.load(path, allow_pickle=False) as z:
                return np.asarray(z[key]), None
        row_shape = tuple(int(d) for d in shape[1:])
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        out = np.empty((len(rows), *row_shape), dtype=dtype)
        at = 0  # rows consumed from the stream
        for k, r in enumerate(rows):
            skip = (int(r) - at) * row_bytes
            while skip > 0:
                got = len(fh.read(min(skip, READ_CHUNK)))
                if got == 0:
                    break
                skip -= got
            data = fh.read(row_bytes)
            if skip > 0 or len(data) != row_bytes:
                raise InputError(f"{text}: '{key}' ends before row {int(r)} of {shape[0]}")
            out[k] = np.frombuffer(data, dtype=dtype).reshape(row_shape)
            at = int(r) + 1
    return out, {int(r): k for k, r in enumerate(rows)}


def _stream_row_digests(path: Path, text: str, key: str):
    """(i, sha256 hex of row i's bytes) of a C-order array in an npz, inflated as a stream."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
        shape, dtype, _ = _read_header(fh, text)
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        for i in range(int(shape[0])):
            data = fh.read(row_bytes)
            if len(data) != row_bytes:
                raise InputError(f"{text}: '{key}' ends before row {i} of {shape[0]}")
            yield i, hashlib.sha256(data).hexdigest()


def _read_header(fh, text: str):
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{text}: not a valid .npy array ({exc})") from None
    return shape, dtype, fortran


def _npy_header(text: str, path: Path):
    with open(path, "rb") as fh:
        shape, dtype, fortran = _read_header(fh, text)
        offset = fh.tell()
    return shape, dtype, offset, fortran


def _npz_arrays(text: str, path: Path):
    """Header of ``arr_0`` (with a file offset when stored uncompressed) and ``arr_1`` labels."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{text}: not a readable .npz ({exc})") from None
    with zf:
        names = zf.namelist()
        if "arr_0.npy" not in names:
            have = ", ".join(n[:-4] for n in names if n.endswith(".npy")) or "nothing"
            raise InputError(f"{text}: neither a feature file ('features') nor an image batch "
                             f"('arr_0'); it has: {have}")
        info = zf.getinfo("arr_0.npy")
        with zf.open(info) as fh:
            shape, dtype, fortran = _read_header(fh, text)
            header_len = fh.tell() if info.compress_type == zipfile.ZIP_STORED else None
        labels = None
        if "arr_1.npy" in names:
            with zf.open("arr_1.npy") as fh:
                try:
                    labels = np.lib.format.read_array(fh, allow_pickle=False)
                except ValueError as exc:
                    raise InputError(f"{text}: cannot read 'arr_1' labels ({exc})") from None
    offset = None
    if header_len is not None:
        with open(path, "rb") as raw:  # local file header: 30 bytes + name + extra field
            raw.seek(info.header_offset)
            local = raw.read(30)
            if local[:4] == b"PK\x03\x04":
                name_len = int.from_bytes(local[26:28], "little")
                extra_len = int.from_bytes(local[28:30], "little")
                offset = info.header_offset + 30 + name_len + extra_len + header_len
    return (shape, dtype, offset, fortran), labels
