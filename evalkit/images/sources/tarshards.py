"""Tar shards in the webdataset layout, read in place (never extracted).

An argument is one ``.tar``, a folder whose top level holds ``.tar`` files (and no images), or
a brace pattern such as ``shards-{000000..000099}.tar`` or ``{train,val}.tar`` (expanded as
the shell and webdataset do; every shard must exist). Shards are read in the order given
(a folder's in sorted name order) and members in stream order.

Members are grouped into samples as webdataset does: consecutive members sharing a key (the
name up to the first dot of its base name) form one sample, e.g. ``0001.jpg``,
``0001.cls``, ``0001.txt``. A sample's image is its first member whose extension (after the
key) is an image type (``jpg``, ``png``, ...), else its first member with an image suffix
(``0001.seg.png``); samples without one are ignored. Labels come from ``.cls`` (an integer
as text) or the ``label``/``cls`` field of ``.json`` (kept when every sample has one); prompts
from ``.txt`` or the ``caption``/``prompt``/``text`` field of ``.json``.

Bounds, as for zips (:mod:`evalkit.files.safetar`): a member above the size limit, a member
named with an absolute or ``..`` path, and a member whose data the shard does not hold in full
are bad images (an error naming shard and member, or skipped with ``skip_bad`` and counted);
member names are never used as paths to write. A shard cut at a member boundary (its
end-of-archive blocks missing) or with a corrupt header is an error even with ``skip_bad``:
how many samples it lost cannot be known. Locators are ``shard.tar::member``.

Fingerprint: the bytes of every shard and (shard name, member, offset, size) of each image.
Under torchrun the ranks split the images into the usual contiguous ranges
(:func:`evalkit.features.distributed.shard_ranges`) of this stream, so each rank reads a
contiguous run of members of one or a few shards, by offset.
(The module is not called ``tarfile`` so that it never shadows the standard library's.)
"""
from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from evalkit.errors import InputError
from evalkit.files.fileio import file_sha256
from evalkit.files.safetar import TarMember, member_problem, read_member, scan
from evalkit.images.decode import decode_image, to_rgb_uint8
from evalkit.images.locators import Locator, tar_member
from evalkit.images.sources.base import IMAGE_EXTENSIONS, Source, hash_lines, is_image_name

SUFFIXES = (".tar",)
META_LIMIT = 1 << 20  # .cls / .txt / .json members larger than this are not read
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_PLAIN_IMAGE = frozenset(e[1:] for e in IMAGE_EXTENSIONS)


def expand_braces(text: str) -> list[str]:
    """``text`` with every ``{a..b}`` (integers, zero-padded to ``a``'s width) and ``{x,y}``
    expanded, left to right, in order: ``s-{00..02}.tar`` -> ``s-00.tar s-01.tar s-02.tar``."""
    m = _BRACE.search(text)
    if m is None:
        return [text]
    body = m[1]
    rng = _RANGE.match(body)
    if rng:
        lo, hi = int(rng[1]), int(rng[2])
        width = len(rng[1]) if rng[1].startswith("0") else 0
        step = 1 if hi >= lo else -1
        parts = [str(v).zfill(width) for v in range(lo, hi + step, step)]
    elif "," in body:
        parts = body.split(",")
    else:
        parts = ["{" + body + "}"]  # not a pattern: keep it literally
        head, tail = text[:m.end()], text[m.end():]
        return [head + rest for rest in expand_braces(tail)]
    prefix, suffix = text[:m.start()], text[m.end():]
    return [prefix + part + rest for part in parts for rest in expand_braces(suffix)]


def _is_tar_name(name: str) -> bool:
    return name.lower().endswith(".tar")


@dataclass
class TarSource(Source):
    """Images of webdataset tar shards; fingerprint: every shard's bytes and (shard, member,
    offset, size) of each image.

    ``shards`` are the shard paths as written (locator containers); ``members`` each image's
    member in its shard ``shard_of[i]``.
    """

    kind: ClassVar[str] = "tar"
    locator_kind: ClassVar[str | None] = "tar"
    accepts: ClassVar[tuple[str, ...]] = (".tar shards",)

    shards: list[str] = field(default_factory=list, repr=False)
    members: list[TarMember] = field(default_factory=list, repr=False)
    shard_of: list[int] = field(default_factory=list, repr=False)
    _handles: dict[int, Any] = field(default_factory=dict, repr=False)
    _handle_pid: int | None = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        state["_handle_pid"] = None
        return state

    @classmethod
    def claims(cls, path: Path) -> bool:
        if path.is_file():
            return _is_tar_name(path.name)
        if not path.is_dir():
            return False
        try:
            names = [e.name for e in os.scandir(path) if not e.name.startswith(".") and e.is_file()]
        except OSError:
            return False
        return any(_is_tar_name(n) for n in names) and not any(is_image_name(n) for n in names)

    @classmethod
    def claims_pattern(cls, text: str) -> bool:
        shards = expand_braces(text)
        return len(shards) > 1 and all(_is_tar_name(s) for s in shards)

    @classmethod
    def resolve(cls, text: str, path: Path, fingerprint: bool = True) -> TarSource:
        shards = _shard_paths(text, path)
        locators, names, members, shard_of, bad = [], [], [], [], {}
        labels: list[int | None] = []
        prompts: list[str | None] = []
        lines = ["tar"]
        for s, shard in enumerate(shards):
            found, cut = scan(shard, shard)
            if cut:
                raise InputError(f"{shard}: {cut}; the shard is incomplete (rewrite or drop it)")
            total = Path(shard).stat().st_size
            lines.append(f"{Path(shard).name}\t"
                         + (file_sha256(shard, remember=False) if fingerprint else ""))
            with open(shard, "rb") as fh:
                for image, meta in _samples(found):
                    k = len(members)
                    locators.append(tar_member(shard, image.name))
                    names.append(image.name)
                    members.append(image)
                    shard_of.append(s)
                    lines.append(f"{image.name}\t{image.offset}\t{image.size}")
                    if _odd_member(image.name):
                        bad[k] = (f"unsafe member path {image.name!r} (absolute or '..'); "
                                  "refusing to read it")
                    elif why := member_problem(image, total):
                        bad[k] = why
                    label, prompt = _annotations(fh, meta, total)
                    labels.append(label)
                    prompts.append(prompt)
        if not members:
            raise InputError(f"no images found in {text} (webdataset samples such as "
                             "key.jpg + key.cls)")
        # a bad sample (skipped or an error) may have lost its .cls with its data
        have_labels = all(v is not None for k, v in enumerate(labels) if k not in bad)
        labels = [-1 if v is None else v for v in labels]
        return cls(text, path, locators=locators, names=names,
                   labels=np.array(labels, dtype=np.int64) if have_labels else None,
                   prompts=prompts if any(p is not None for p in prompts) else None,
                   fingerprint=hash_lines(lines), bad=bad, shards=shards, members=members,
                   shard_of=shard_of)

    @classmethod
    def open_locator(cls, loc: Locator, text: str, root: Path | None) -> Image.Image:
        shard = Path(loc.path)
        if root is not None and root.is_file() and _is_tar_name(root.name):
            shard = root
        elif root is not None and root.is_dir() and (root / shard.name).is_file():
            shard = root / shard.name
        name = loc.member or ""
        display = tar_member(str(shard), name)
        if _odd_member(name):
            raise InputError(f"{display}: unsafe member path (absolute or '..'); refusing to read it")
        found, _ = scan(shard, str(shard))
        member = next((m for m in found if m.name == name), None)
        if member is None:
            raise InputError(f"{display}: no such member in the shard")
        with open(shard, "rb") as fh:
            data = read_member(fh, member, display)
        return Image.fromarray(to_rgb_uint8(decode_image(data, text)))

    def read_bytes(self, i: int) -> bytes:
        return read_member(self._shard(self.shard_of[i], i), self.members[i], self.display(i))

    def _shard(self, s: int, i: int):
        if self._handle_pid != os.getpid():
            self._handles = {}
            self._handle_pid = os.getpid()
        if s not in self._handles:
            for old in list(self._handles):  # reading is in stream order: one shard open
                self._handles.pop(old).close()
            try:
                self._handles[s] = open(self.shards[s], "rb")  # noqa: SIM115 (kept open)
            except OSError as exc:
                raise InputError(f"{self.display(i)}: cannot open the shard "
                                 f"({exc.strerror or exc})") from None
        return self._handles[s]


def _shard_paths(text: str, path: Path) -> list[str]:
    if path.is_file():
        return [text]
    if path.is_dir():
        return [os.path.join(text, e.name) for e in sorted(os.scandir(path), key=lambda e: e.name)
                if not e.name.startswith(".") and e.is_file() and _is_tar_name(e.name)]
    shards = expand_braces(text)
    missing = [s for s in shards if not Path(s).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(f"{text}: shard {missing[0]} does not exist{more}")
    return shards


def _split(name: str) -> tuple[str, str]:
    """(key, extension) as webdataset splits a member name: at the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (folder + "/" if folder else "") + stem, ext.lower() if dot else ""


def _samples(found: list[TarMember]):
    """(image member, {extension: member}) per sample with an image, in stream order."""
    for _, group in itertools.groupby(found, key=lambda m: _split(m.name)[0]):
        parts = list(group)
        by_ext = {}
        for m in parts:
            by_ext.setdefault(_split(m.name)[1], m)
        image = next((m for m in parts if _split(m.name)[1] in _PLAIN_IMAGE), None)
        if image is None:
            image = next((m for m in parts if is_image_name(m.name)), None)
        if image is not None:
            yield image, by_ext


def _annotations(fh, meta: dict[str, TarMember], total: int) -> tuple[int | None, str | None]:
    """(label, prompt) of a sample from its ``.cls``, ``.txt`` and ``.json`` members."""
    def text(ext: str) -> str | None:
        m = meta.get(ext)
        if m is None or m.size > META_LIMIT or m.offset + m.size > total:
            return None
        fh.seek(m.offset)
        return fh.read(m.size).decode("utf-8", "replace").strip()

    label: int | None = None
    prompt = text("txt")
    cls_text = text("cls")
    if cls_text is not None:
        try:
            label = int(cls_text.split()[0])
        except (ValueError, IndexError):
            label = None
    js = text("json")
    if js is not None and (label is None or prompt is None):
        try:
            obj = json.loads(js)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            if label is None:
                label = next((v for k in ("label", "cls") if isinstance(v := obj.get(k), int)
                              and not isinstance(v, bool)), None)
            if prompt is None:
                prompt = next((v for k in ("caption", "prompt", "text")
                               if isinstance(v := obj.get(k), str)), None)
    return label, prompt


def _odd_member(name: str) -> bool:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in PurePosixPath(name.replace("\\", "/")).parts
