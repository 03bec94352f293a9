"""Output paths checked before any work starts, and paths read from records kept in place.

:func:`check_outputs` refuses, with one line naming the option and the file, an output that
is a folder, whose folder cannot be created or written (read-only place, a regular file in the
way), that two options share, or that is one of the command's inputs: a long extraction never
ends in a write that was bound to fail or that destroys an input.
:func:`inside` resolves a path stored in a record against the record's folder and refuses one
that leads outside it (``../../etc/passwd``).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from evalkit.errors import InputError, OutputError


def check_outputs(outputs: Mapping[str, str | os.PathLike | Iterable | None],
                  inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Check every output path of a command before it does any work.

    Args:
        outputs: option name (``"--out"``) -> path, list of paths, or None (option unused).
        inputs: the command's input paths (sources, records); names that are not existing
            paths (a registered reference name) are ignored.

    Raises:
        OutputError: an output is a folder, its folder cannot be created or written, two
            outputs are the same file, or an output is one of the inputs.
    """
    seen: dict[str, str] = {}
    for option, value in outputs.items():
        for path in _paths(value):
            _check_writable(option, path)
            key = _identity(path)
            if key in seen:
                raise OutputError(f"{option} {path}: the same file as {seen[key]}; "
                                  "give each output its own path")
            seen[key] = f"{option} {path}"
    for src in inputs:
        if src is None or not os.path.exists(src):
            continue
        key = _identity(src)
        if key in seen:
            raise OutputError(f"{seen[key]}: is an input of this command; writing it would "
                              "destroy it (choose another output path)")


def _paths(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return [os.fspath(v) for v in value if v is not None]


def _identity(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(os.fspath(path))))


def _check_writable(option: str, path: str) -> None:
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file path")
    folder = target.parent if str(target.parent) else Path(".")
    probe = folder
    while not probe.exists():  # the nearest existing ancestor is what must be writable
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{option} {path}: cannot write ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: cannot write (folder {probe} is not writable)")


def check_folder_writable(option: str, folder: str | os.PathLike) -> None:
    """Refuse a store folder (``--ref-dir``) that is a file or cannot be created or written."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {folder}: is not a folder")
    _check_writable(option, str(path / ".evalkit-probe"))


def inside(base: str | os.PathLike, stored: str | os.PathLike, what: str) -> Path:
    """``stored`` (a path read from a file in folder ``base``) resolved inside ``base``.

    Relative paths resolve against ``base``; the result, symlinks followed, must lie in
    ``base``. Absolute paths and ``..`` escapes are refused: a record must not make evalkit
    read files elsewhere on the machine.

    Raises:
        InputError: naming ``what`` (e.g. the record and its key) and the offending path.
    """
    root = Path(os.path.realpath(base))
    candidate = Path(os.path.realpath(root / stored))
    if Path(stored).is_absolute() or (candidate != root and root not in candidate.parents):
        raise InputError(f"{what}: path {os.fspath(stored)!r} points outside {root}; "
                         "refusing to read it (paths in a record are relative to its folder)")
    return candidate
