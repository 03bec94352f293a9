"""Image locators: the one grammar that names an image inside a source.

A locator is what ``FeatureSet.files``, per-sample CSVs and reports store for each image:

- ``rel/path.png`` — a file (relative to its source folder, or absolute);
- ``archive.zip::member/name.png`` — a member of a zip archive;
- ``shard-000001.tar::key.jpg`` — a member of a tar shard (webdataset layout);
- ``images.npz[12]`` / ``images.npy[12]`` — row 12 of a uint8 image array;
- ``part-0.parquet[12]`` / ``data-00000-of-00001.arrow[12]`` — row 12 of a Parquet or Arrow
  table (the row's index in that file).

Container suffixes match case-insensitively (``X.ZIP::a.png`` is a zip member). Sources build
locators with :func:`zip_member` / :func:`tar_member` / :func:`array_item` / :func:`table_row`,
readers :func:`parse` them, and reports
move them to another base with :func:`rebase`; nothing else spells the grammar.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_ZIP = re.compile(r"^(?P<container>.+?\.zip)::(?P<member>.+)$", re.IGNORECASE | re.DOTALL)
_TAR = re.compile(r"^(?P<container>.+?\.tar)::(?P<member>.+)$", re.IGNORECASE | re.DOTALL)
_TABLE = re.compile(r"^(?P<container>.+\.(?:parquet|arrow))\[(?P<index>\d+)\]$",
                    re.IGNORECASE | re.DOTALL)
_ARRAY = re.compile(r"^(?P<container>.+\.np[yz])\[(?P<index>\d+)\]$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Locator:
    """A parsed locator: ``kind`` is ``"file"``, ``"zip"``, ``"tar"``, ``"array"`` or ``"table"``.

    ``path`` is the file (kind ``file``) or the container (the others); ``member`` the zip or
    tar member name; ``index`` the array or table row.
    """

    kind: str
    path: str
    member: str | None = None
    index: int | None = None

    def format(self) -> str:
        """The locator's text form (``parse(x).format() == x`` for every valid ``x``)."""
        if self.kind in ("zip", "tar"):
            return zip_member(self.path, self.member or "")
        if self.kind in ("array", "table"):
            return array_item(self.path, int(self.index or 0))
        return self.path


def zip_member(container: str, member: str) -> str:
    """The locator of ``member`` inside the zip archive ``container``."""
    return f"{container}::{member}"


def tar_member(container: str, member: str) -> str:
    """The locator of ``member`` inside the tar shard ``container`` (same form as a zip's)."""
    return f"{container}::{member}"


def table_row(container: str, index: int) -> str:
    """The locator of row ``index`` of the Parquet / Arrow file ``container``."""
    return f"{container}[{index}]"


def array_item(container: str, index: int) -> str:
    """The locator of row ``index`` of the image array file ``container``."""
    return f"{container}[{index}]"


def parse(text: str) -> Locator:
    """Parse a locator (see the module docstring); anything else is a plain file path."""
    archives = [(m.end("container"), kind, m) for kind, m in
                (("zip", _ZIP.match(text)), ("tar", _TAR.match(text))) if m]
    if archives:  # the first "<container>::" ends the container, whichever archive kind
        _, kind, m = min(archives, key=lambda t: t[0])
        return Locator(kind, m["container"], member=m["member"])
    m = _TABLE.match(text)
    if m:
        return Locator("table", m["container"], index=int(m["index"]))
    m = _ARRAY.match(text)
    if m:
        return Locator("array", m["container"], index=int(m["index"]))
    return Locator("file", text)


def rebase(text: str, place: Callable[[str], str]) -> str:
    """``text`` with its file or container path replaced by ``place(path)``."""
    loc = parse(text)
    return Locator(loc.kind, place(loc.path), loc.member, loc.index).format()
