"""A ``.zip`` of images, read in place (never extracted).

``__MACOSX/``, directories and hidden members are ignored; one folder wrapping everything is not
a class (folders below it are, as for a folder source); members with absolute or ``..`` paths
are bad images (an error, or skipped with ``skip_bad``). Locators are ``archive.zip::member``.
(The module is not called ``zipfile`` so that it never shadows the standard library's.)
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from PIL import Image

from evalkit.errors import InputError
from evalkit.files.fileio import file_sha256
from evalkit.files.safezip import member_problem, read_member
from evalkit.images.decode import decode_image, reason, to_rgb_uint8
from evalkit.images.locators import Locator, zip_member
from evalkit.images.sources.base import Source, class_labels, container, hash_lines, is_image_name

SUFFIXES = (".zip",)


@dataclass
class ZipSource(Source):
    """Image members of a zip; fingerprint: the file's bytes and (member, CRC32, size) each.

    ``members`` are the zip member names, in the order of the images.
    """

    kind: ClassVar[str] = "zip"
    locator_kind: ClassVar[str | None] = "zip"
    accepts: ClassVar[tuple[str, ...]] = SUFFIXES

    members: list[str] = field(default_factory=list, repr=False)
    _handle: Any = field(default=None, repr=False)
    _handle_pid: int | None = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"] = None
        state["_handle_pid"] = None
        return state

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix.lower() in SUFFIXES

    @classmethod
    def resolve(cls, text: str, path: Path, fingerprint: bool = True) -> ZipSource:
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"{text}: not a readable zip file ({exc})") from None
        keep = []
        for info in infos:
            name = info.filename
            parts = name.replace("\\", "/").split("/")
            if info.is_dir() or parts[0] == "__MACOSX" or parts[-1].startswith("."):
                continue
            if is_image_name(name):
                keep.append(info)
        if not keep:
            raise InputError(f"no images found in {text}")
        keep.sort(key=lambda i: i.filename)
        members = [i.filename for i in keep]
        bad = {k: f"unsafe member path {m!r} (absolute or '..'); refusing to read it"
               for k, m in enumerate(members) if _odd_member(m)}
        bad.update({k: why for k, i in enumerate(keep)
                    if k not in bad and (why := member_problem(i))})
        rels = [m.replace("\\", "/") for m in members]
        tops = {r.split("/", 1)[0] for r in rels}
        stripped = rels
        if len(tops) == 1 and all("/" in r for r in rels):  # a folder that wraps everything
            stripped = [r.split("/", 1)[1] for r in rels]
        labels, classes = class_labels(stripped)
        # The directory's CRCs do not cover the data: hash the file's bytes (as for arrays), so
        # members corrupted behind an intact directory never get cached features served.
        fp = hash_lines(["zip", file_sha256(path, remember=False) if fingerprint else ""]
                        + [f"{i.filename}\t{i.CRC:08x}\t{i.file_size}" for i in keep])
        return cls(text, path, locators=[zip_member(text, m) for m in members], names=members,
                   labels=labels, classes=classes, fingerprint=fp, bad=bad, members=members)

    @classmethod
    def open_locator(cls, loc: Locator, text: str, root: Path | None) -> Image.Image:
        where = container(loc.path, root, SUFFIXES)
        member = loc.member or ""
        try:
            with zipfile.ZipFile(where) as zf:
                data = read_member(zf, member, zip_member(str(where), member))
        except (OSError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:
            raise InputError(f"{zip_member(str(where), member)}: cannot read ({reason(exc)})") from None
        return Image.fromarray(to_rgb_uint8(decode_image(data, text)))

    def read_bytes(self, i: int) -> bytes:
        try:
            zf = self._zip()
        except (OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{self.display(i)}: cannot read from the zip ({exc})") from None
        return read_member(zf, self.members[i], self.display(i))

    def _zip(self) -> zipfile.ZipFile:
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = zipfile.ZipFile(self.path)
            self._handle_pid = os.getpid()
        return self._handle


def _odd_member(name: str) -> bool:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in PurePosixPath(name.replace("\\", "/")).parts
