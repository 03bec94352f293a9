"""Reading tar members in place, with bounded memory: nothing is ever extracted to disk.

:func:`scan` lists the regular-file members of an uncompressed tar (POSIX ustar, GNU or pax
headers, as ``tarfile`` reads them) with the offset and size of each one's data; links,
devices and folders are left out (never followed). :func:`read_member` then seeks to a
member's data and reads exactly its size: a member whose header declares more than
:data:`MAX_MEMBER_BYTES` is refused before anything is read, and a member whose data the file
does not hold in full (a truncated shard) is an error naming the shard and the member.

Compressed tars (``.tar.gz``) cannot be read by offset; they are refused with the fix.
"""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from evalkit.errors import InputError
from evalkit.formatting import format_size

MAX_MEMBER_BYTES = int(os.environ.get("EVALKIT_TAR_MEMBER_LIMIT", 256 << 20))
"""Largest member accepted inside a tar shard (256 MiB, as for zip members)."""
_END_OF_ARCHIVE = 1024  # two zero blocks close every tar
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZ": "bzip2", b"\xfd7": "xz", b"\x28\xb5": "zstd"}


@dataclass(frozen=True)
class TarMember:
    """A regular file inside a tar: its name, where its data starts, how many bytes it has."""

    name: str
    offset: int
    size: int


def scan(path: str | os.PathLike, display: str) -> tuple[list[TarMember], str | None]:
    """The regular-file members of the tar at ``path``, in stream order, and the reason the
    shard is incomplete (None when it ends with its end-of-archive blocks).

    A member whose data runs past the end of the file is listed (reading it fails, naming it).

    Raises:
        InputError: naming ``display``: not a tar (or a compressed one), a corrupt header
            (naming the last good member), or a file cut at a member boundary.
    """
    p = Path(path)
    try:
        total = p.stat().st_size
        with open(p, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise InputError(f"{display}: cannot read ({exc.strerror or exc})") from None
    if magic in _COMPRESSED:
        raise InputError(f"{display}: a {_COMPRESSED[magic]}-compressed tar cannot be read in "
                         "place; decompress it to a plain .tar first")
    members: list[TarMember] = []
    end = 0
    try:
        with tarfile.open(p, mode="r:") as tf:
            while True:
                try:
                    info = tf.next()
                except tarfile.ReadError as exc:
                    if members and members[-1].offset + members[-1].size > total:
                        break  # the last member's data is cut off: that member is bad
                    after = f" after member {members[-1].name!r}" if members else ""
                    raise InputError(f"{display}: corrupt tar header{after} ({exc})") from None
                if info is None:
                    end = tf.offset  # where tarfile stopped: the end-of-archive blocks
                    break
                if info.isreg():
                    members.append(TarMember(info.name, info.offset_data, info.size))
    except tarfile.ReadError as exc:
        raise InputError(f"{display}: not a readable tar file ({exc})") from None
    except OSError as exc:
        raise InputError(f"{display}: cannot read ({exc.strerror or exc})") from None
    if members and members[-1].offset + members[-1].size > total:
        return members, None
    # tarfile ends quietly at a header it cannot parse: the archive must really end there
    with open(p, "rb") as fh:
        fh.seek(end)
        tail = fh.read(_END_OF_ARCHIVE)
    last = f" after member {members[-1].name!r}" if members else ""
    if tail.count(0) != len(tail):
        raise InputError(f"{display}: corrupt tar header{last} (the archive goes on past it)")
    if len(tail) < _END_OF_ARCHIVE:
        return members, f"truncated{last} (its end-of-archive blocks are missing)"
    return members, None


def member_problem(member: TarMember, total: int, limit: int | None = None) -> str | None:
    """Why ``member`` must not be read (declared size, data past the end of a file of
    ``total`` bytes), or None when it may be."""
    limit = MAX_MEMBER_BYTES if limit is None else limit
    if member.size > limit:
        return f"refused, member is {format_size(member.size)} (limit {format_size(limit)})"
    if member.offset + member.size > total:
        return (f"truncated shard: it ends {format_size(max(0, total - member.offset))} into "
                f"this member's {format_size(member.size)}")
    return None


def read_member(fh: BinaryIO, member: TarMember, display: str, limit: int | None = None) -> bytes:
    """The bytes of ``member`` from the open tar ``fh``; never more than ``limit``.

    Raises:
        InputError: naming ``display``: refused (too large), or the file ends inside it.
    """
    limit = MAX_MEMBER_BYTES if limit is None else limit
    if member.size > limit:
        raise InputError(f"{display}: refused, member is {format_size(member.size)} "
                         f"(limit {format_size(limit)})")
    try:
        fh.seek(member.offset)
        data = fh.read(member.size)
    except OSError as exc:
        raise InputError(f"{display}: cannot read from the tar ({exc.strerror or exc})") from None
    if len(data) != member.size:
        raise InputError(f"{display}: truncated shard: it ends {format_size(len(data))} into this "
                         f"member's {format_size(member.size)}")
    return data
