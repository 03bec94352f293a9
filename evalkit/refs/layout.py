"""Where the reference store lives on disk and how its folders change.

``REF_DIR`` (default ``$EVALKIT_REF_DIR``, else ``$XDG_DATA_HOME/evalkit/refs``, else
``~/.local/share/evalkit/refs``) holds one folder per reference, ``.lock`` (the advisory lock
every change takes) and ``_downloads/`` (catalog downloads in progress). A reference folder
is built in a temporary folder beside it and renamed into place (:func:`building`), and
removed by renaming it away first (:func:`discard`): readers see no reference or a complete
one, the pattern torch-fidelity's feature cache uses for single files.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from evalkit.files.fileio import current_umask

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None

LOCK_FILE = ".lock"
DROP = "_downloads"  # catalog downloads run here; a file fetched by hand may be placed here


def default_ref_dir() -> Path:
    """``$EVALKIT_REF_DIR``, else ``$XDG_DATA_HOME/evalkit/refs``, else ``~/.local/share/...``."""
    env = os.environ.get("EVALKIT_REF_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "evalkit" / "refs"


def store_root(ref_dir: str | os.PathLike | None) -> Path:
    """The store folder: ``ref_dir`` when given, else :func:`default_ref_dir`."""
    return Path(ref_dir).expanduser() if ref_dir else default_ref_dir()


def drop_dir(ref_dir: str | os.PathLike | None = None) -> Path:
    """Where downloads run (``FILE.part``) and where a file fetched by hand may be placed."""
    return store_root(ref_dir) / DROP


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An advisory exclusive lock on ``folder/.lock`` (created if needed; no-op without fcntl)."""
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(folder / LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def now() -> str:
    """The current UTC time as the store records it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def building(root: Path, name: str, *, replace: bool = False,
             on_error: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder in ``root`` that becomes ``root/name`` on success.

    ``replace``: an existing ``root/name`` is swapped out and removed first (else the rename
    fails on a non-empty folder). On any error the temporary folder is removed, after
    ``on_error(tmp)`` had a chance to take files back out of it.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    tmp.chmod(0o777 & ~current_umask())  # a folder like mkdir's, not mkdtemp's private 0700
    try:
        yield tmp
        if replace and (root / name).exists():
            discard(root / name)
        os.replace(tmp, root / name)
    except BaseException:
        if on_error is not None:
            on_error(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def discard(folder: Path) -> None:
    """Remove ``folder``: renamed away at once (atomic), then deleted."""
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".removing", dir=folder.parent))
    os.replace(folder, trash / "old")
    shutil.rmtree(trash, ignore_errors=True)
