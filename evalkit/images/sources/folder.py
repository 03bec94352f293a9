"""A folder of images, searched recursively.

Image files (png jpg jpeg webp bmp tif tiff ppm pgm, any case) anywhere below the folder;
hidden files and folders are ignored, like clean-fid's ``glob``; files in sorted order of their
relative path. When every image sits in an immediate subdirectory and there are at least two,
the subdirectories are classes (label = index of the sorted class name). Locators are the
relative paths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from PIL import Image

from evalkit.errors import InputError
from evalkit.images.decode import decode_image, reason, to_rgb_uint8
from evalkit.images.locators import Locator
from evalkit.images.sources.base import IMAGE_EXTENSIONS, Source, class_labels, hash_lines, is_image_name


@dataclass
class FolderSource(Source):
    """Images in a folder tree; fingerprint: (relative path, size, mtime_ns) of each image."""

    kind: ClassVar[str] = "dir"
    locator_kind: ClassVar[str | None] = "file"
    accepts: ClassVar[tuple[str, ...]] = ("an image folder",)

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.is_dir()

    @classmethod
    def resolve(cls, text: str, path: Path, fingerprint: bool = True) -> FolderSource:
        found, other = _walk(path)
        if not found:
            hint = f" ({other} files with other extensions)" if other else ""
            raise InputError(f"no images found under {text}{hint}; image types: "
                             + " ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS)))
        rels = [r for r, _, _ in found]
        labels, classes = class_labels(rels)
        fp = hash_lines(["dir"] + [f"{r}\t{s}\t{m}" for r, s, m in found])
        return cls(text, path, locators=rels, names=rels, labels=labels, classes=classes,
                   fingerprint=fp)

    @classmethod
    def open_locator(cls, loc: Locator, text: str, root: Path | None) -> Image.Image:
        path = Path(text)
        if root is not None and not path.is_absolute() and root.is_dir():
            path = root / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({reason(exc)})") from None
        return Image.fromarray(to_rgb_uint8(decode_image(data, str(path))))

    def display(self, i: int) -> str:
        return str(self.path / self.locators[i])

    def read_bytes(self, i: int) -> bytes:
        try:
            return (self.path / self.locators[i]).read_bytes()
        except OSError as exc:
            raise InputError(f"{self.display(i)}: cannot read ({exc.strerror or exc})") from None


def _walk(root: Path) -> tuple[list[tuple[str, int, int]], int]:
    """(posix relative path, size, mtime_ns) of every image under root; count of other files."""
    found: list[tuple[str, int, int]] = []
    other = 0
    stack = [("", root)]
    seen: set[tuple[int, int]] = set()
    while stack:
        prefix, folder = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise InputError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            try:
                if entry.is_dir():
                    stack.append((rel + "/", Path(entry.path)))
                elif is_image_name(entry.name):
                    st = entry.stat()
                    found.append((rel, st.st_size, st.st_mtime_ns))
                else:
                    other += 1
            except OSError:  # a dangling link: report it as a bad image when it has the suffix
                if is_image_name(entry.name):
                    found.append((rel, -1, -1))
    found.sort(key=lambda t: t[0])
    return found, other
