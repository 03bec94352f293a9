"""Files: atomic writes (temp file in the target's folder, fsync, os.replace), file hashing,
the evalkit cache folder.

Written files get the permissions ``open()`` would give a new file (0666 minus the umask; an
existing file keeps its mode), not ``mkstemp``'s private 0600. A failed write (unwritable
folder, full disk) raises :class:`~evalkit.errors.OutputError` naming the file and leaves the
old file as it was.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import threading
from pathlib import Path

from evalkit.errors import InputError, OutputError


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
    """Write ``text`` as UTF-8, atomically. Characters UTF-8 cannot hold (the surrogates that
    stand for undecodable bytes of a file name) are written escaped (``\\udcff``)."""
    atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


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


def default_cache_dir() -> Path:
    """``$EVALKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/evalkit``, else ``~/.cache/evalkit``."""
    env = os.environ.get("EVALKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "evalkit"
    return Path.home() / ".cache" / "evalkit"


SHA256_CACHE_FILE = "weights_sha256.json"
REMEMBER_MIN_BYTES = 1 << 20  # digests of files this large persist across processes
_sha_lock = threading.Lock()
_sha_memory: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike, *, remember: bool = True) -> str:
    """Hex sha256 of a file's bytes (the one file-hashing function of evalkit).

    Digests are remembered per (absolute path, size, mtime_ns): in memory for every file, and
    for files of at least 1 MiB (weights, image batches) also in
    ``<cache dir>/weights_sha256.json`` (written atomically; a read-only cache folder only
    costs re-hashing), so a 1 GB checkpoint is hashed once per machine. ``remember=False``
    always reads the bytes (bytes changed behind an unchanged size and mtime are seen).

    Raises:
        OSError: the file cannot be read.
    """
    if not remember:
        return _hash_bytes(Path(path))
    p = Path(path).expanduser().resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _sha_lock:
        if key in _sha_memory:
            return _sha_memory[key]
    remember = st.st_size >= REMEMBER_MIN_BYTES
    table_path = default_cache_dir() / SHA256_CACHE_FILE
    str_key = f"{key[0]}|{key[1]}|{key[2]}"
    digest = _load_json(table_path).get(str_key) if remember else None
    if not (isinstance(digest, str) and len(digest) == 64):
        digest = _hash_bytes(p)
        if remember:
            table = _load_json(table_path)  # re-read: another process may have added keys
            table[str_key] = digest
            try:
                atomic_write_text(table_path, json.dumps(table, indent=1, sort_keys=True))
            except OSError:  # a read-only cache folder: the digest is simply not remembered
                pass
    with _sha_lock:
        _sha_memory[key] = digest
    return digest


def _hash_bytes(path: Path, block_size: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_size), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike, *, missing: str, bad: str) -> object:
    """The JSON value stored in a user-supplied file (a record, a manifest, a catalog).

    Raises:
        InputError: ``"{path}: {missing}"`` when the file does not exist; ``"{path}: {bad}
            (why)"`` when it cannot be read, is not UTF-8, is not JSON, or nests deeper than the
            interpreter can parse (``[[[[...]]]]``: a RecursionError, never a crash).
    """
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: {missing}") from None
    except RecursionError:
        raise InputError(f"{p}: {bad} (nested too deeply)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: {bad} ({type(exc).__name__}: {exc})") from None


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
