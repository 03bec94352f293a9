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
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from evalkit.errors import InputError
from evalkit.files.fileio import current_umask

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None

LOCK_FILE = ".lock"
DROP = "_downloads"  # catalog downloads run here; a file fetched by hand may be placed here
MANIFEST = "manifest.json"  # a folder of the store is a reference when it holds this file
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_name(name: object, what: str = "reference name") -> str:
    """A name that can only ever be one folder directly inside the store.

    Letters, digits, ``.``, ``_``, ``-``; no path separators; at most 64 characters; not
    starting with ``.`` or ``-`` (so never ``..``, ``.lock`` or a temporary folder).

    Raises:
        InputError: any other name (``what`` says where it came from).
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InputError(
            f"invalid {what} {name!r:.80}: use letters, digits, '.', '_' and '-' "
            "(no path separators, at most 64 characters, not starting with '.' or '-')"
        )
    return name


def is_reference_folder(folder: Path) -> bool:
    """True when ``folder`` is a real folder (not a link) holding a reference manifest."""
    return folder.is_dir() and not folder.is_symlink() and (folder / MANIFEST).is_file()


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

    ``replace``: an existing reference ``root/name`` is swapped out and removed first. Anything
    else already at ``root/name`` (a reference without ``replace``, a folder or file that is
    not an evalkit reference) is refused before anything is written: the store never removes
    what it did not make. On any error the temporary folder is removed, after
    ``on_error(tmp)`` had a chance to take files back out of it.

    Raises:
        InputError: ``name`` is not a valid name, or ``root/name`` is taken (see above).
    """
    validate_name(name)
    _check_free(root / name, replace)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    tmp.chmod(0o777 & ~current_umask())  # a folder like mkdir's, not mkdtemp's private 0700
    try:
        yield tmp
        _check_free(root / name, replace)  # again: the folder may have appeared meanwhile
        if os.path.lexists(root / name):
            discard(root / name)
        os.replace(tmp, root / name)
    except BaseException:
        if on_error is not None:
            on_error(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_free(target: Path, replace: bool) -> None:
    if not os.path.lexists(target):
        return
    if not is_reference_folder(target):
        raise InputError(f"{target} exists and is not an evalkit reference (no {MANIFEST}); "
                         "move it away or pick another --ref-dir: the store removes only "
                         "references it made")
    if not replace:
        raise InputError(f"reference {target.name!r} is already registered ({target}); "
                         "pass --force to replace it")


def discard(folder: Path) -> None:
    """Remove reference ``folder``: renamed away at once (atomic), then deleted.

    Raises:
        InputError: ``folder`` is not an evalkit reference (nothing is touched).
    """
    if not is_reference_folder(folder):
        raise InputError(f"{folder} is not an evalkit reference (no {MANIFEST}); not removing it")
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".removing", dir=folder.parent))
    os.replace(folder, trash / "old")
    shutil.rmtree(trash, ignore_errors=True)
