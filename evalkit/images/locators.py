"""Image locators: the one grammar that names an image inside a source.

A locator is what ``FeatureSet.files``, per-sample CSVs and reports store for each image:

- ``rel/path.png`` — a file (relative to its source folder, or absolute);
- ``archive.zip::member/name.png`` — a member of a zip archive;
- ``images.npz[12]`` / ``images.npy[12]`` — row 12 of a uint8 image array.

Container suffixes match case-insensitively (``X.ZIP::a.png`` is a zip member). Sources build
locators with :func:`zip_member` / :func:`array_item`, readers :func:`parse` them, and reports
move them to another base with :func:`rebase`; nothing else spells the grammar.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_ZIP = re.compile(r"^(?P<container>.+?\.zip)::(?P<member>.+)$", re.IGNORECASE | re.DOTALL)
_ARRAY = re.compile(r"^(?P<container>.+\.np[yz])\[(?P<index>\d+)\]$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Locator:
    """A parsed locator: ``kind`` is ``"file"``, ``"zip"`` or ``"array"``.

    ``path`` is the file (kind ``file``) or the container (``zip``, ``array``); ``member`` the
    zip member name; ``index`` the array row.
    """

    kind: str
    path: str
    member: str | None = None
    index: int | None = None

    def format(self) -> str:
        """The locator's text form (``parse(x).format() == x`` for every valid ``x``)."""
        if self.kind == "zip":
            return zip_member(self.path, self.member or "")
        if self.kind == "array":
            return array_item(self.path, int(self.index or 0))
        return self.path


def zip_member(container: str, member: str) -> str:
    """The locator of ``member`` inside the zip archive ``container``."""
    return f"{container}::{member}"


def array_item(container: str, index: int) -> str:
    """The locator of row ``index`` of the image array file ``container``."""
    return f"{container}[{index}]"


def parse(text: str) -> Locator:
    """Parse a locator (see the module docstring); anything else is a plain file path."""
    m = _ZIP.match(text)
    if m:
        return Locator("zip", m["container"], member=m["member"])
    m = _ARRAY.match(text)
    if m:
        return Locator("array", m["container"], index=int(m["index"]))
    return Locator("file", text)


def rebase(text: str, place: Callable[[str], str]) -> str:
    """``text`` with its file or container path replaced by ``place(path)``."""
    loc = parse(text)
    return Locator(loc.kind, place(loc.path), loc.member, loc.index).format()
