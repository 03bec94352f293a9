"""What every source kind shares: the :class:`Source` base class, the registry of kinds that
:func:`resolve_source` asks in order, and the helpers kinds use to fingerprint and label.

A kind is a :class:`Source` subclass that says which arguments it claims
(:meth:`Source.claims`), how it lists their images (:meth:`Source.resolve`), how it reads one
image (:meth:`Source.read_bytes` or :meth:`Source.read_rgb`) and how it opens one of its
locators (:meth:`Source.open_locator`, for reports).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from evalkit.errors import InputError
from evalkit.images.decode import decode_rgb
from evalkit.images.locators import Locator

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"})
JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg"})
FINGERPRINT_VERSION = "evalkit.source/1"
CONTENT_VERSION = "evalkit.content/1"


def is_image_name(name: str) -> bool:
    """True when ``name`` has one of the image extensions (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Columns:
    """Which table columns hold the images, labels and prompts (None: found automatically);
    kinds that read tables take them (``--image-column``, ...), the others ignore them."""

    image: str | None = None
    label: str | None = None
    prompt: str | None = None


@dataclass
class Source:
    """A resolved source: N images (or a feature file), their locators, labels, fingerprint.

    Subclasses (one per kind) set the class attributes and implement the classmethods.

    Class attributes:
        kind: ``"dir"``, ``"zip"``, ``"array"``, ``"features"``, ...
        locator_kind: the :class:`~evalkit.images.locators.Locator` kind this source's locators
            have (``"file"``, ``"zip"``, ``"array"``); None when it has no images.
        accepts: how the kind is named in "unsupported source" messages (e.g. ``(".zip",)``).
        takes_columns: whether :meth:`resolve` takes ``columns`` (:class:`Columns`).

    Attributes:
        arg: the argument as the user gave it.
        path: the file or folder.
        locators: per image, ``"rel/path.png"`` (dir), ``"arg.zip::member"``, ``"arg.npz[i]"``.
        names: per image, the name hashed into the content fingerprint (relative path, zip
            member, or array index).
        labels: int labels (class folders or ``arr_1``), or None.
        classes: sorted class-folder names when labels come from folders.
        fingerprint: fast fingerprint for the feature-cache key (sha256 hex): dirs hash
            (relative path, size, mtime_ns), zips the file bytes and (member, CRC32, size),
            arrays the file bytes.
        bad: index -> reason for images known bad before reading (odd zip member paths).
        prompts: per image, its text prompt (webdataset ``.txt``, a Parquet prompt column;
            None where a sample has none), or None when the kind has no prompts.
    """

    kind: ClassVar[str] = ""
    locator_kind: ClassVar[str | None] = None
    accepts: ClassVar[tuple[str, ...]] = ()
    takes_columns: ClassVar[bool] = False

    arg: str
    path: Path
    locators: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    fingerprint: str = ""
    bad: dict[int, str] = field(default_factory=dict)
    prompts: list[str | None] | None = None

    # -- the kind's contract -----------------------------------------------------------------
    @classmethod
    def claims(cls, path: Path) -> bool:
        """True when the existing ``path`` is a source of this kind."""
        raise NotImplementedError

    @classmethod
    def claims_pattern(cls, text: str) -> bool:
        """True when ``text``, not an existing path, names sources of this kind (a brace
        pattern of shards)."""
        return False

    @classmethod
    def resolve(cls, text: str, path: Path, fingerprint: bool) -> Source:
        """The source at ``path`` (``text`` as the user wrote it); see :func:`resolve_source`."""
        raise NotImplementedError

    @classmethod
    def open_locator(cls, loc: Locator, text: str, root: Path | None) -> Image.Image:
        """The PIL RGB image a locator of this kind names; see :func:`open_image`."""
        raise NotImplementedError

    def read_bytes(self, i: int) -> bytes:
        """The encoded bytes of image ``i``."""
        raise InputError(f"{self.arg}: a {self.kind} source has no images")

    def read_rgb(self, i: int) -> tuple[np.ndarray, str, bool]:
        """Image ``i`` as in :meth:`load_rgb`, without the known-bad check: its bytes, hashed
        and decoded. Kinds that do not store encoded files (arrays) override this."""
        data = self.read_bytes(i)
        digest = hashlib.sha256(data).hexdigest()
        rgb, jpeg = decode_rgb(data, self.display(i))
        return rgb, digest, jpeg

    # -- shared ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.locators)

    def display(self, i: int) -> str:
        """How image ``i`` is named in messages: an openable path or locator."""
        return self.locators[i]

    def open(self) -> None:
        """Load what every worker shares (a compressed npz array) once, before forking."""

    def load_rgb(self, i: int) -> tuple[np.ndarray, str, bool]:
        """Image ``i`` as (H×W×3 uint8, sha256 hex of its bytes, is_jpeg).

        Raises:
            InputError: naming the image, when it cannot be read or decoded.
        """
        if i in self.bad:
            raise InputError(f"{self.display(i)}: {self.bad[i]}")
        return self.read_rgb(i)

    def iter_digests(self):
        """(i, sha256 hex of image ``i``'s bytes, or None when they cannot be read) for every
        listed image, in order, reading bytes without decoding them; the digests are those
        :meth:`load_rgb` returns."""
        for i in range(len(self)):
            if i in self.bad:
                yield i, None
                continue
            try:
                yield i, hashlib.sha256(self.read_bytes(i)).hexdigest()
            except (InputError, OSError):
                yield i, None

    def open_rows(self, rows: np.ndarray) -> None:
        """Like :meth:`open`, when only images ``rows`` (sorted source indices) will be read;
        kinds that hold a shared buffer (a compressed npz array) load only those rows."""
        self.open()

    def subset(self, rows: np.ndarray) -> SampledSource:
        """The images ``rows`` (sorted source indices) of this source, as a source of their
        own (:class:`SampledSource`): ``--nsample`` taken before anything is read."""
        return SampledSource.of(self, rows)


@dataclass(frozen=True)
class RowSample:
    """``--nsample``: at most ``n`` of a set's rows, drawn without replacement on one random
    stream (the run's ``("subsample", role)`` child, :mod:`evalkit.scoring.rng`), sorted.

    The one rule for which rows a subsample keeps, whether it is taken from a source's listed
    images before anything is decoded (:meth:`Source.subset`) or from rows already extracted
    (:func:`evalkit.scoring.run.subsample`): for the same count the same indices."""

    n: int
    stream: np.random.SeedSequence

    def rows(self, total: int) -> np.ndarray | None:
        """Sorted row indices out of ``total`` (None: ``total <= n``, every row is kept)."""
        if total <= self.n:
            return None
        gen = np.random.default_rng(self.stream)
        return np.sort(gen.choice(total, size=self.n, replace=False))


@dataclass
class SampledSource(Source):
    """Images ``rows`` of ``parent`` (``--nsample`` taken at the source): only those are
    listed, read and decoded. Locators, names, labels and prompts are the parent's at those
    rows (so files and the content fingerprint name the original images); reading image ``i``
    reads the parent's image ``rows[i]``. The fast fingerprint hashes the parent's and the
    rows, so the feature cache keeps a sample's entry apart from the whole set's and from
    other samples'."""

    kind: ClassVar[str] = "sample"

    parent: Source | None = None
    rows: tuple[int, ...] = ()
    _whole: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, parent: Source, rows: np.ndarray) -> SampledSource:
        rows = tuple(int(r) for r in rows)
        if any(b <= a for a, b in zip(rows, rows[1:])) or any(
                not 0 <= r < len(parent) for r in rows[:1] + rows[-1:]):
            raise ValueError(f"{parent.arg}: sample rows must be sorted, distinct and within "
                             f"0..{len(parent) - 1}")
        fp = hash_lines(["sample", parent.fingerprint, str(len(parent)),
                         ",".join(map(str, rows))]) if parent.fingerprint else ""
        bad = {k: parent.bad[r] for k, r in enumerate(rows) if r in parent.bad}
        return cls(parent.arg, parent.path, locators=[parent.locators[r] for r in rows],
                   names=[parent.names[r] for r in rows],
                   labels=None if parent.labels is None else parent.labels[list(rows)],
                   classes=parent.classes, fingerprint=fp, bad=bad,
                   prompts=None if parent.prompts is None else [parent.prompts[r] for r in rows],
                   parent=parent, rows=rows)

    @property
    def sampled_from(self) -> int:
        """How many images the parent source lists."""
        return len(self.parent)

    def whole_fingerprint(self) -> str:
        """The content fingerprint (:func:`content_fingerprint`) of the whole parent source,
        over every listed image whose bytes can be read: what a set sampled from it records,
        so records of one source compare whatever the seed (one pass over the bytes, one
        image at a time, nothing decoded; computed once)."""
        if self._whole is None:
            names, digests = [], []
            for i, digest in self.parent.iter_digests():
                if digest is not None:
                    names.append(self.parent.names[i])
                    digests.append(digest)
            self._whole = content_fingerprint(names, digests)
        return self._whole

    def read_bytes(self, i: int) -> bytes:
        return self.parent.read_bytes(self.rows[i])

    def read_rgb(self, i: int) -> tuple[np.ndarray, str, bool]:
        return self.parent.read_rgb(self.rows[i])

    def open(self) -> None:
        self.parent.open_rows(np.asarray(self.rows, dtype=np.int64))


def content_fingerprint(names: list[str], digests: list[str]) -> str:
    """sha256 over (name, sha256 of the image's bytes) per image, in order.

    Comparable across machines: it depends on file names relative to the source and on the
    bytes, not on paths, sizes on disk or times. Array rows hash their raw pixel bytes.
    """
    h = hashlib.sha256(CONTENT_VERSION.encode() + b"\n")
    for name, digest in zip(names, digests):
        h.update(f"{name}\t{digest}\n".encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


KINDS: list[type[Source]] = []


def register_kinds(*kinds: type[Source]) -> None:
    """Add source kinds; :func:`resolve_source` asks them in registration order."""
    for kind in kinds:
        if not kind.kind or any(k.kind == kind.kind for k in KINDS):
            raise ValueError(f"source kind {kind.kind!r}: empty or registered twice")
        KINDS.append(kind)


def source_kinds() -> tuple[type[Source], ...]:
    """The registered kinds, in the order :func:`resolve_source` asks them."""
    return tuple(KINDS)


def resolve_source(arg: str | os.PathLike, *, fingerprint: bool = True,
                   columns: Columns | None = None) -> Source:
    """Resolve a SAMPLES/REF/TEST argument into a :class:`Source` of the first kind claiming it.

    Args:
        arg: a folder, ``.zip``, ``.tar`` shards (a file, a folder of them, a brace pattern),
            ``.npz``/``.npy`` image array, or feature file.
        fingerprint: compute the fast cache fingerprint (hashes array files; off for lookups).
        columns: the image / label / prompt columns of a table source (ignored by the others).

    Raises:
        InputError: one line naming the file: missing path, no images under a folder or in a
            zip, unsupported file type, array of the wrong dtype or shape.
    """
    text = os.fspath(arg)
    path = Path(text)
    exists = path.exists()
    for kind in KINDS:
        if kind.claims(path) if exists else kind.claims_pattern(text):
            if kind.takes_columns:
                return kind.resolve(text, path, fingerprint, columns=columns)
            return kind.resolve(text, path, fingerprint)
    if not exists:
        raise InputError(f"{text}: no such file or directory")
    names = [name for kind in KINDS for name in kind.accepts]
    expected = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)
    raise InputError(f"{text}: unsupported source (expected {expected})")


def is_source_arg(arg: str | os.PathLike) -> bool:
    """True when ``arg`` is an existing path or a pattern a kind claims (``{a..b}.tar``)."""
    text = os.fspath(arg)
    return Path(text).exists() or any(kind.claims_pattern(text) for kind in KINDS)


def kind_for_locator(loc: Locator) -> type[Source]:
    """The registered kind whose locators have ``loc.kind``."""
    for kind in KINDS:
        if kind.locator_kind == loc.kind:
            return kind
    raise InputError(f"{loc.format()}: no source kind reads {loc.kind} locators")


def container(text: str, root: Path | None, suffixes: tuple[str, ...]) -> Path:
    """The container file of a locator: ``root`` when it is such a file (the source moved),
    else the locator's own container path."""
    if root is not None and root.is_file() and root.suffix.lower() in suffixes:
        return root
    return Path(text)


def hash_lines(lines: list[str]) -> str:
    """sha256 hex of the fingerprint version and ``lines``, one per line (the fast fingerprint)."""
    h = hashlib.sha256(FINGERPRINT_VERSION.encode() + b"\n")
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def class_labels(rels: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
    """Labels from the top folder of each posix relative path, when every image sits in one of
    at least two folders (the index of the sorted folder name); else (None, None)."""
    tops = [r.split("/", 1)[0] if "/" in r else None for r in rels]
    if any(t is None for t in tops):
        return None, None
    classes = sorted(set(tops))
    if len(classes) < 2:
        return None, None
    index = {c: k for k, c in enumerate(classes)}
    return np.array([index[t] for t in tops], dtype=np.int64), classes
