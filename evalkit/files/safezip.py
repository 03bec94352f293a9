"""Reading zip members with bounded memory: zip bombs are refused, corrupt data detected.

A zip member is refused, before anything is decompressed, when its declared size passes
:data:`MAX_MEMBER_BYTES` or when it is large and its compression ratio is absurd for an image
(:data:`MAX_RATIO`); while reading, the bytes actually produced are counted, so a member whose
directory entry lies is stopped at the limit too. ``zipfile`` checks each member's CRC-32 at
its end, so data corrupted behind an intact directory is an error, never an image.

``.npz`` files are zips of ``.npy`` members: :func:`check_npz` refuses, before numpy reads
anything, a member that is a bomb or whose ``.npy`` header claims more (or fewer) bytes than
the member holds (a header claiming 10^12 elements would otherwise be a terabyte allocation),
and :func:`read_npy_member` reads one member with bounded memory.
"""
from __future__ import annotations

import io
import lzma
import os
import zipfile
import zlib

import numpy as np

from evalkit.errors import InputError
from evalkit.formatting import format_size

MAX_MEMBER_BYTES = int(os.environ.get("EVALKIT_ZIP_MEMBER_LIMIT", 256 << 20))
"""Largest image file accepted inside a zip (256 MiB: more than PIL's pixel limit needs)."""
MAX_RATIO = 100
"""Expanded/compressed ratio refused for members above :data:`RATIO_MIN_BYTES`."""
RATIO_MIN_BYTES = 16 << 20
_CHUNK = 1 << 20
_READ_ERRORS = (OSError, KeyError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError,
                NotImplementedError, zlib.error, lzma.LZMAError)


def member_problem(info: zipfile.ZipInfo, limit: int | None = None) -> str | None:
    """Why ``info`` must not be read (declared size or ratio), or None when it may be."""
    limit = MAX_MEMBER_BYTES if limit is None else limit
    size, packed = info.file_size, max(info.compress_size, 1)
    if size > limit:
        return f"refused, member expands to {format_size(size)} (limit {format_size(limit)})"
    if size > RATIO_MIN_BYTES and size / packed > MAX_RATIO:
        return (f"refused, member expands to {format_size(size)} from {format_size(packed)} "
                f"(compression ratio {size / packed:.0f}:1 is not an image's)")
    return None


def read_member(zf: zipfile.ZipFile, name: str | zipfile.ZipInfo, display: str,
                limit: int | None = None) -> bytes:
    """The bytes of member ``name``, read in chunks and never more than ``limit``.

    Raises:
        InputError: naming ``display``: refused (too large or absurdly compressed), missing,
            encrypted, or corrupt (bad CRC-32, truncated or undecodable compressed data).
    """
    limit = MAX_MEMBER_BYTES if limit is None else limit
    try:
        info = name if isinstance(name, zipfile.ZipInfo) else zf.getinfo(name)
        problem = member_problem(info, limit)
        if problem:
            raise InputError(f"{display}: {problem}")
        parts, total = [], 0
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise InputError(f"{display}: refused, member expands to more than "
                                     f"{format_size(limit)} (its directory entry says "
                                     f"{format_size(info.file_size)})")
                parts.append(chunk)
        return b"".join(parts)
    except _READ_ERRORS as exc:  # bad CRC-32, truncated or undecodable compressed data
        raise InputError(f"{display}: cannot read from the zip ({type(exc).__name__}: {exc})") \
            from None



NO_SIZE_LIMIT = 1 << 62  # :func:`check_npz` default: only ratio and header checks


def _npy_header(fh, display: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, bytes of data the header claims)`` of the ``.npy`` stream ``fh``."""
    try:
        version = np.lib.format.read_magic(fh)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, _, dtype = header(fh)
    except (ValueError, TypeError, SyntaxError, EOFError, OSError) + _READ_ERRORS as exc:
        raise InputError(f"{display}: not an .npy array ({type(exc).__name__}: {exc})") from None
    if dtype.hasobject:
        raise InputError(f"{display}: an object array (pickled data is not read)")
    return shape, dtype, int(np.prod(shape, dtype=object)) * dtype.itemsize


def check_npz(path: str | os.PathLike, display: str | None = None,
              limit: int = NO_SIZE_LIMIT) -> None:
    """Refuse an ``.npz`` whose members are bombs or whose ``.npy`` headers lie about their size.

    Each member's directory entry passes :func:`member_problem` (``limit``: the largest
    member accepted) and its header's shape x itemsize is exactly the data the member holds
    (its declared size less the header). Only the headers are decompressed.

    Raises:
        InputError: naming ``display`` (default: the path) and the member.
    """
    display = display or str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                where = f"{display}: member {info.filename}"
                problem = member_problem(info, limit)
                if problem:
                    raise InputError(f"{where}: {problem}")
                with zf.open(info) as fh:
                    shape, dtype, claimed = _npy_header(fh, where)
                    held = info.file_size - fh.tell()
                if claimed != held:
                    raise InputError(f"{where}: its header claims shape {shape} of {dtype} "
                                     f"({claimed} bytes) but the member holds {held}")
    except _READ_ERRORS as exc:
        raise InputError(f"{display}: not a readable .npz ({type(exc).__name__}: {exc})") from None


def read_npy_member(zf: zipfile.ZipFile, member: str, display: str,
                    limit: int | None = None) -> np.ndarray:
    """Array ``member`` of an open ``.npz``, never reading or allocating more than ``limit``.

    Raises:
        InputError: naming ``display`` and the member: refused by :func:`read_member`, not an
            ``.npy``, an object array, or a header whose shape and dtype do not add up to the
            bytes that follow it.
    """
    where = f"{display}: member {member}"
    raw = read_member(zf, member, where, limit=limit)
    fh = io.BytesIO(raw)
    shape, dtype, claimed = _npy_header(fh, where)
    held = len(raw) - fh.tell()
    if claimed != held:
        raise InputError(f"{where}: its header claims shape {shape} of {dtype} "
                         f"({claimed} bytes) but {held} bytes follow")
    fh.seek(0)
    try:
        return np.lib.format.read_array(fh, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{where}: unreadable .npy array ({exc})") from None

