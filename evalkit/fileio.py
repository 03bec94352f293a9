"""Atomic file writes: a temp file in the target's folder, fsync, then os.replace.

Files get the permissions ``open()`` would give a new file (0666 minus the umask; an existing
file keeps its mode), not ``mkstemp``'s private 0600. A failed write (unwritable folder, full
disk) raises :class:`~evalkit.errors.OutputError` naming the file, and leaves the old file as
it was.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from evalkit.errors import OutputError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    Raises:
        OutputError: the folder cannot be created or written, or the disk is full.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), new_file_mode(target))
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def new_file_mode(target: str | os.PathLike | None = None) -> int:
    """Permission bits for a file written at ``target``: its current ones, else 0666 & ~umask."""
    if target is not None:
        try:
            return stat.S_IMODE(os.stat(target).st_mode)
        except OSError:
            pass
    return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read, set back at once
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike, block_size: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_size), b""):
            h.update(block)
    return h.hexdigest()
