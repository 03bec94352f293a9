"""Reading zip members with bounded memory: zip bombs are refused, corrupt data detected.

A zip member is refused, before anything is decompressed, when its declared size passes
:data:`MAX_MEMBER_BYTES` or when it is large and its compression ratio is absurd for an image
(:data:`MAX_RATIO`); while reading, the bytes actually produced are counted, so a member whose
directory entry lies is stopped at the limit too. ``zipfile`` checks each member's CRC-32 at
its end, so data corrupted behind an intact directory is an error, never an image.
"""
from __future__ import annotations

import lzma
import os
import zipfile
import zlib

from evalkit.errors import InputError

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
        return f"refused, member expands to {size_text(size)} (limit {size_text(limit)})"
    if size > RATIO_MIN_BYTES and size / packed > MAX_RATIO:
        return (f"refused, member expands to {size_text(size)} from {size_text(packed)} "
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
                                     f"{size_text(limit)} (its directory entry says "
                                     f"{size_text(info.file_size)})")
                parts.append(chunk)
        return b"".join(parts)
    except _READ_ERRORS as exc:  # bad CRC-32, truncated or undecodable compressed data
        raise InputError(f"{display}: cannot read from the zip ({type(exc).__name__}: {exc})") \
            from None


def size_text(n: int) -> str:
    """``n`` bytes in the largest binary unit that fits (``1.5 MiB``)."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"
