"""Sources: what a SAMPLES / REF / TEST argument points at, resolved into a list of images.

:func:`resolve_source` accepts (SPEC "Sources"):

* a directory of images, searched recursively (png jpg jpeg webp bmp tif tiff ppm pgm, any case;
  hidden files and folders are ignored, like clean-fid's ``glob``); files in sorted order of their
  relative path; when every image sits in an immediate subdirectory and there are at least two,
  the subdirectories are classes (label = index of the sorted class name);
* a ``.zip`` of images, read in place (never extracted); ``__MACOSX/``, directories and hidden
  members are ignored; one folder wrapping everything is not a class; members with absolute or
  ``..`` paths are bad images (an error, or skipped with ``skip_bad``);
* a ``.npz`` with ``arr_0`` (N×H×W×C uint8, the ADM reference-batch format; optional ``arr_1``
  labels) or a ``.npy`` N×H×W×C uint8, C in {1, 3, 4}; uncompressed arrays are memory-mapped;
* a SPEC feature file (kind ``"features"``: no images).

A :class:`Source` is picklable and cheap to send to DataLoader workers; its :meth:`Source.load_rgb`
reads one image's bytes, hashes them and decodes them to H×W×3 uint8.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from evalkit.errors import InputError
from evalkit.files.fileio import file_sha256
from evalkit.files.safezip import member_problem, read_member
from evalkit.images.decode import array_to_rgb_uint8, decode_image, decode_rgb, reason, to_rgb_uint8
from evalkit.images.locators import array_item, zip_member
from evalkit.images.locators import parse as parse_locator

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"})
JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg"})
FINGERPRINT_VERSION = "evalkit.source/1"
CONTENT_VERSION = "evalkit.content/1"


def is_feature_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is an .npz holding a ``features`` array (not an image batch)."""
    p = Path(path)
    if p.suffix.lower() != ".npz" or not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as zf:
            return "features.npy" in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False



def is_stats_npz(path: str | os.PathLike) -> bool:
    """True for an ``.npz`` holding ``mu``/``sigma`` statistics and no images or features
    (pytorch-fid's and clean-fid's statistics files)."""
    p = Path(path)
    if p.suffix.lower() != ".npz" or not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as zf:
            keys = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, OSError):
        return False
    return {"mu", "sigma"} <= keys and not keys & {"arr_0", "features"}


def is_image_source(path: str | os.PathLike) -> bool:
    """True when ``path`` exists and holds images to decode (a folder, a zip, an image array),
    not already-made features or statistics."""
    return Path(path).exists() and not is_feature_file(path) and not is_stats_npz(path)

def is_image_name(name: str) -> bool:
    """True when ``name`` has one of the image extensions (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass
class Source:
    """A resolved source: N images (or a feature file), their locators, labels, fingerprint.

    Attributes:
        arg: the argument as the user gave it.
        path: the file or folder.
        kind: ``"dir"``, ``"zip"``, ``"array"`` or ``"features"``.
        locators: per image, ``"rel/path.png"`` (dir), ``"arg.zip::member"``, ``"arg.npz[i]"``.
        names: per image, the name hashed into the content fingerprint (relative path, zip
            member, or array index).
        labels: int labels (class folders or ``arr_1``), or None.
        classes: sorted class-folder names when labels come from folders.
        fingerprint: fast fingerprint for the feature-cache key (sha256 hex): dirs hash
            (relative path, size, mtime_ns), zips the file bytes and (member, CRC32, size),
            arrays the file bytes.
        bad: index -> reason for images known bad before reading (odd zip member paths).
    """

    arg: str
    path: Path
    kind: str
    locators: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    fingerprint: str = ""
    bad: dict[int, str] = field(default_factory=dict)
    # kind-specific
    members: list[str] = field(default_factory=list, repr=False)
    array_key: str | None = None
    array_shape: tuple[int, ...] | None = None
    _array_offset: int | None = field(default=None, repr=False)
    _array_fortran: bool = field(default=False, repr=False)
    _array: Any = field(default=None, repr=False)
    _handle: Any = field(default=None, repr=False)
    _handle_pid: int | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.locators)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"] = None
        state["_handle_pid"] = None
        if self._array_offset is not None:  # memory-mapped: reopen in the worker, don't pickle
            state["_array"] = None
        return state

    def display(self, i: int) -> str:
        """How image ``i`` is named in messages: an openable path or locator."""
        if self.kind == "dir":
            return str(self.path / self.locators[i])
        return self.locators[i]

    def open(self) -> None:
        """Load what every worker shares (a compressed npz array) once, before forking."""
        if self.kind == "array" and self._array is None:
            self._get_array()

    # -- reading ---------------------------------------------------------------------------
    def load_rgb(self, i: int) -> tuple[np.ndarray, str, bool]:
        """Image ``i`` as (H×W×3 uint8, sha256 hex of its bytes, is_jpeg).

        Raises:
            InputError: naming the image, when it cannot be read or decoded.
        """
        if i in self.bad:
            raise InputError(f"{self.display(i)}: {self.bad[i]}")
        if self.kind == "array":
            row = np.ascontiguousarray(self._get_array()[i])
            digest = hashlib.sha256(row.tobytes()).hexdigest()
            return array_to_rgb_uint8(row), digest, False
        data = self._read_bytes(i)
        digest = hashlib.sha256(data).hexdigest()
        rgb, jpeg = decode_rgb(data, self.display(i))
        return rgb, digest, jpeg

    def _read_bytes(self, i: int) -> bytes:
        if self.kind == "dir":
            try:
                return (self.path / self.locators[i]).read_bytes()
            except OSError as exc:
                raise InputError(f"{self.display(i)}: cannot read ({exc.strerror or exc})") from None
        if self.kind == "zip":
            try:
                zf = self._zip()
            except (OSError, zipfile.BadZipFile) as exc:
                raise InputError(f"{self.display(i)}: cannot read from the zip ({exc})") from None
            return read_member(zf, self.members[i], self.display(i))
        raise InputError(f"{self.arg}: a {self.kind} source has no images")

    def _zip(self) -> zipfile.ZipFile:
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = zipfile.ZipFile(self.path)
            self._handle_pid = os.getpid()
        return self._handle

    def _get_array(self) -> np.ndarray:
        if self._array is None:
            if self._array_offset is not None:
                self._array = np.memmap(self.path, dtype=np.uint8, mode="r",
                                        offset=self._array_offset, shape=self.array_shape,
                                        order="F" if self._array_fortran else "C")
            else:
                with np.load(self.path, allow_pickle=False) as z:
                    self._array = np.asarray(z[self.array_key])
        return self._array


def resolve_source(arg: str | os.PathLike, *, fingerprint: bool = True) -> Source:
    """Resolve a SAMPLES/REF/TEST argument into a :class:`Source`.

    Args:
        arg: a folder, ``.zip``, ``.npz``/``.npy`` image array, or feature file.
        fingerprint: compute the fast cache fingerprint (hashes array files; off for lookups).

    Raises:
        InputError: one line naming the file: missing path, no images under a folder or in a
            zip, unsupported file type, array of the wrong dtype or shape.
    """
    text = os.fspath(arg)
    path = Path(text)
    if not path.exists():
        raise InputError(f"{text}: no such file or directory")
    if path.is_dir():
        return _resolve_dir(text, path)
    suffix = path.suffix.lower()
    if suffix == ".npz" and is_feature_file(path):
        return Source(text, path, "features", fingerprint=file_sha256(path) if fingerprint else "")
    if suffix == ".zip":
        return _resolve_zip(text, path, fingerprint)
    if suffix in (".npz", ".npy"):
        src = _resolve_array(text, path)
        if fingerprint:
            src.fingerprint = _hash_lines(["array", src.array_key or "", file_sha256(path)])
        return src
    raise InputError(f"{text}: unsupported source (expected an image folder, .zip, .npz or .npy)")


def content_fingerprint(names: list[str], digests: list[str]) -> str:
    """sha256 over (name, sha256 of the image's bytes) per image, in order.

    Comparable across machines: it depends on file names relative to the source and on the
    bytes, not on paths, sizes on disk or times. Array rows hash their raw pixel bytes.
    """
    h = hashlib.sha256(CONTENT_VERSION.encode() + b"\n")
    for name, digest in zip(names, digests):
        h.update(f"{name}\t{digest}\n".encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


# -- resolution per kind --------------------------------------------------------------------
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


def _class_labels(rels: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
    tops = [r.split("/", 1)[0] if "/" in r else None for r in rels]
    if any(t is None for t in tops):
        return None, None
    classes = sorted(set(tops))
    if len(classes) < 2:
        return None, None
    index = {c: k for k, c in enumerate(classes)}
    return np.array([index[t] for t in tops], dtype=np.int64), classes


def _resolve_dir(text: str, path: Path) -> Source:
    found, other = _walk(path)
    if not found:
        hint = f" ({other} files with other extensions)" if other else ""
        raise InputError(f"no images found under {text}{hint}; image types: "
                         + " ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS)))
    rels = [r for r, _, _ in found]
    labels, classes = _class_labels(rels)
    fp = _hash_lines(["dir"] + [f"{r}\t{s}\t{m}" for r, s, m in found])
    return Source(text, path, "dir", locators=rels, names=rels, labels=labels, classes=classes,
                  fingerprint=fp)


def _odd_member(name: str) -> bool:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in PurePosixPath(name.replace("\\", "/")).parts


def _resolve_zip(text: str, path: Path, fingerprint: bool = True) -> Source:
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
    bad.update({k: why for k, i in enumerate(keep) if k not in bad and (why := member_problem(i))})
    rels = [m.replace("\\", "/") for m in members]
    tops = {r.split("/", 1)[0] for r in rels}
    stripped = rels
    if len(tops) == 1 and all("/" in r for r in rels):  # a folder that wraps everything
        stripped = [r.split("/", 1)[1] for r in rels]
    labels, classes = _class_labels(stripped)
    # The directory's CRCs do not cover the data: hash the file's bytes (as for arrays), so
    # members corrupted behind an intact directory never get cached features served.
    fp = _hash_lines(["zip", file_sha256(path, remember=False) if fingerprint else ""]
                     + [f"{i.filename}\t{i.CRC:08x}\t{i.file_size}" for i in keep])
    return Source(text, path, "zip", locators=[zip_member(text, m) for m in members], names=members,
                  labels=labels, classes=classes, fingerprint=fp, bad=bad, members=members)


def _resolve_array(text: str, path: Path) -> Source:
    if path.suffix.lower() == ".npy":
        key, shape, dtype, offset, fortran = None, *_npy_header(text, path)
        labels = None
    else:
        key, (shape, dtype, offset, fortran), labels = "arr_0", *_npz_arrays(text, path)
    if dtype != np.uint8 or len(shape) != 4 or shape[3] not in (1, 3, 4):
        raise InputError(f"{text}: expected N×H×W×C uint8 images with C in 1, 3, 4 "
                         f"(got {dtype} array of shape {tuple(shape)})")
    if shape[0] == 0 or shape[1] == 0 or shape[2] == 0:
        raise InputError(f"{text}: the image array is empty (shape {tuple(shape)})")
    n = int(shape[0])
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != n
                               or not np.issubdtype(labels.dtype, np.integer)):
        raise InputError(f"{text}: 'arr_1' labels must be {n} integers "
                         f"(got {labels.dtype} shape {labels.shape})")
    locators = [array_item(text, i) for i in range(n)]
    return Source(text, path, "array", locators=locators, names=[str(i) for i in range(n)],
                  labels=None if labels is None else labels.astype(np.int64),
                  array_key=key, array_shape=tuple(int(s) for s in shape),
                  _array_offset=offset, _array_fortran=fortran)


def _read_header(fh, text: str):
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{text}: not a valid .npy array ({exc})") from None
    return shape, dtype, fortran


def _npy_header(text: str, path: Path):
    with open(path, "rb") as fh:
        shape, dtype, fortran = _read_header(fh, text)
        offset = fh.tell()
    return shape, dtype, offset, fortran


def _npz_arrays(text: str, path: Path):
    """Header of ``arr_0`` (with a file offset when stored uncompressed) and ``arr_1`` labels."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{text}: not a readable .npz ({exc})") from None
    with zf:
        names = zf.namelist()
        if "arr_0.npy" not in names:
            have = ", ".join(n[:-4] for n in names if n.endswith(".npy")) or "nothing"
            raise InputError(f"{text}: neither a feature file ('features') nor an image batch "
                             f"('arr_0'); it has: {have}")
        info = zf.getinfo("arr_0.npy")
        with zf.open(info) as fh:
            shape, dtype, fortran = _read_header(fh, text)
            header_len = fh.tell() if info.compress_type == zipfile.ZIP_STORED else None
        labels = None
        if "arr_1.npy" in names:
            with zf.open("arr_1.npy") as fh:
                try:
                    labels = np.lib.format.read_array(fh, allow_pickle=False)
                except ValueError as exc:
                    raise InputError(f"{text}: cannot read 'arr_1' labels ({exc})") from None
    offset = None
    if header_len is not None:
        with open(path, "rb") as raw:  # local file header: 30 bytes + name + extra field
            raw.seek(info.header_offset)
            local = raw.read(30)
            if local[:4] == b"PK\x03\x04":
                name_len = int.from_bytes(local[26:28], "little")
                extra_len = int.from_bytes(local[28:30], "little")
                offset = info.header_offset + 30 + name_len + extra_len + header_len
    return (shape, dtype, offset, fortran), labels




def _hash_lines(lines: list[str]) -> str:
    h = hashlib.sha256(FINGERPRINT_VERSION.encode() + b"\n")
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def open_image(locator: str | os.PathLike, root: str | os.PathLike | None = None) -> Image.Image:
    """A PIL RGB image for a path or a locator from ``FeatureSet.files``.

    Locators: ``"rel/path.png"`` (relative to the source folder ``root``), ``"x.zip::member"``,
    ``"x.npz[i]"`` / ``"x.npy[i]"``. When ``root`` is the zip or array file itself, it is used
    as the container (so locators stay valid after the source moved). The image is converted by
    :func:`to_rgb_uint8`, exactly as the encoder saw it before resizing.
    """
    text = os.fspath(locator)
    root_path = Path(root) if root is not None else None
    loc = parse_locator(text)
    if loc.kind == "zip":
        container = _container(loc.path, root_path, (".zip",))
        member = loc.member
        try:
            with zipfile.ZipFile(container) as zf:
                data = read_member(zf, member, zip_member(str(container), member))
        except (OSError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:
            where = zip_member(str(container), member)
            raise InputError(f"{where}: cannot read ({reason(exc)})") from None
        return Image.fromarray(to_rgb_uint8(decode_image(data, text)))
    if loc.kind == "array":
        container = _container(loc.path, root_path, (".npz", ".npy"))
        src = resolve_source(str(container), fingerprint=False)
        rgb, _, _ = src.load_rgb(loc.index)
        return Image.fromarray(rgb)
    path = Path(text)
    if root_path is not None and not path.is_absolute() and root_path.is_dir():
        path = root_path / path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({reason(exc)})") from None
    return Image.fromarray(to_rgb_uint8(decode_image(data, str(path))))


def _container(text: str, root: Path | None, suffixes: tuple[str, ...]) -> Path:
    if root is not None and root.is_file() and root.suffix.lower() in suffixes:
        return root
    return Path(text)
