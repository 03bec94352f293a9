"""Parquet and Arrow tables of encoded images (Hugging Face ``datasets`` storage), read in place.

An argument is a ``.parquet`` file, a folder whose top level holds ``.parquet`` files (read in
sorted name order), an ``.arrow`` file, or a folder written by ``datasets``'
``Dataset.save_to_disk`` (its ``state.json`` lists the ``.arrow`` files in order). One row is
one image. Needs pyarrow (``pip install 'evalkit-gen[parquet]'``), imported only here.

Columns: the image column is the one ``datasets`` declares as ``Image`` in the table's
metadata, else the first ``struct<bytes, path>`` column, else the only binary column; the
label column the ``ClassLabel`` one (whose names become ``classes``), else an integer column
named ``label``; the prompt column a string column named ``prompt``, ``caption`` or ``text``.
``--image-column`` / ``--label-column`` / ``--prompt-column`` name them instead (sources of
other kinds ignore them). A row whose image is null, or only a ``path`` to a file elsewhere,
is a bad image (an error naming the row, or skipped with ``skip_bad``).

Memory stays bounded: Parquet is read a batch of rows of the image column at a time
(:data:`BATCH_BYTES` of image data per batch, estimated from the row group's metadata, with
buffered page reads), each DataLoader worker keeping one batch; Arrow files are memory-mapped,
as ``datasets`` does. Fingerprint: every file's bytes and the columns read. Locators are
``part.parquet[row]`` / ``data-00000-of-00001.arrow[row]``, the row's index in that file.
"""
from __future__ import annotations

import json
import os
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from evalkit.errors import InputError, pip_hint
from evalkit.files.fileio import file_sha256
from evalkit.images.decode import decode_image, to_rgb_uint8
from evalkit.images.locators import Locator, table_row
from evalkit.images.sources.base import Columns, Source, hash_lines, is_image_name

SUFFIXES = (".parquet", ".arrow")
BATCH_BYTES = int(os.environ.get("EVALKIT_TABLE_BATCH_BYTES", 64 << 20))
"""Image bytes a reader holds at once (one batch of rows) per process."""
_READ_BUFFER = 1 << 20
_PROMPT_NAMES = ("prompt", "caption", "text")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise InputError(f"Parquet / Arrow sources need pyarrow: {pip_hint('parquet')}") from None
    return pyarrow


@dataclass
class TableSource(Source):
    """Rows of Parquet / Arrow files; fingerprint: every file's bytes and the columns read.

    ``files`` are the file paths as written (locator containers), ``starts`` the index of
    each file's first row (plus the total), ``columns`` the (image, label, prompt) columns.
    """

    kind: ClassVar[str] = "table"
    locator_kind: ClassVar[str | None] = "table"
    accepts: ClassVar[tuple[str, ...]] = (".parquet / .arrow",)
    takes_columns: ClassVar[bool] = True

    files: list[str] = field(default_factory=list, repr=False)
    starts: list[int] = field(default_factory=list, repr=False)
    columns: Columns = field(default_factory=Columns)
    _reader: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_reader"] = None
        return state

    @classmethod
    def claims(cls, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() in SUFFIXES
        if not path.is_dir():
            return False
        if ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()) \
                or (path / "dataset_dict.json").is_file():
            return True  # what datasets' save_to_disk writes (a Dataset, a DatasetDict)
        try:
            names = [e.name for e in os.scandir(path) if not e.name.startswith(".") and e.is_file()]
        except OSError:
            return False
        return (any(n.lower().endswith(".parquet") for n in names)
                and not any(is_image_name(n) for n in names))

    @classmethod
    def resolve(cls, text: str, path: Path, fingerprint: bool = True,
                columns: Columns | None = None) -> TableSource:
        pa = _pyarrow()
        files = _files(text, path)
        first = _schema(pa, files[0])
        cols, classes = _pick_columns(first, columns or Columns(), text)
        starts, locators, names, labels, prompts = [0], [], [], [], []
        lines = ["table", *(c or "" for c in (cols.image, cols.label, cols.prompt))]
        for f in files:
            schema = _schema(pa, f)
            if schema.names != first.names:
                raise InputError(f"{f}: its columns ({', '.join(schema.names)}) differ from "
                                 f"{files[0]}'s ({', '.join(first.names)})")
            n, label_col, prompt_col = _read_small_columns(pa, f, cols)
            base = Path(f).name
            locators += [table_row(f, r) for r in range(n)]
            names += [table_row(base, r) for r in range(n)]
            labels += label_col or []
            prompts += prompt_col or [None] * n
            starts.append(starts[-1] + n)
            lines.append(f"{base}\t{n}\t" + (file_sha256(f, remember=False) if fingerprint else ""))
        if not locators:
            raise InputError(f"no rows found in {text}")
        lab = None
        if cols.label is not None:
            if any(v is None for v in labels):
                raise InputError(f"{text}: label column {cols.label!r} has empty rows")
            lab = np.asarray(labels, dtype=np.int64)
        return cls(text, path, locators=locators, names=names, labels=lab, classes=classes,
                   prompts=prompts if cols.prompt is not None else None,
                   fingerprint=hash_lines(lines), files=files, starts=starts, columns=cols)

    @classmethod
    def open_locator(cls, loc: Locator, text: str, root: Path | None) -> Image.Image:
        where = Path(loc.path)
        if root is not None and root.is_file() and root.suffix.lower() in SUFFIXES:
            where = root
        elif root is not None and root.is_dir() and (root / where.name).is_file():
            where = root / where.name
        src = cls.resolve(str(where), where, fingerprint=False)
        i = int(loc.index or 0)
        if i >= len(src):
            raise InputError(f"{table_row(str(where), i)}: the file has {len(src)} rows")
        return Image.fromarray(to_rgb_uint8(decode_image(src.read_bytes(i), text)))

    def read_bytes(self, i: int) -> bytes:
        f = bisect_right(self.starts, i) - 1
        if self._reader is None or self._reader.pid != os.getpid():
            self._reader = _Reader(self.files, self.columns.image)
        value = self._reader.get(f, i - self.starts[f], self.display(i))
        return _image_bytes(value, self.display(i))


def _files(text: str, path: Path) -> list[str]:
    if path.is_file():
        return [text]
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        except (OSError, ValueError, AttributeError):
            splits = []
        one = os.path.join(text, splits[0]) if splits else os.path.join(text, "train")
        raise InputError(f"{text}: a datasets DatasetDict (splits: {', '.join(splits) or '?'}); "
                         f"give one split's folder, e.g. {one}")
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        try:
            state = json.loads((path / "state.json").read_text())
            names = [d["filename"] for d in state["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{text}/state.json: not a datasets save_to_disk state ({exc})") \
                from None
        for name in names:
            if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".arrow"):
                raise InputError(f"{text}/state.json: refusing data file {name!r} "
                                 "(not an .arrow file in the folder)")
        return [os.path.join(text, n) for n in names]
    return [os.path.join(text, e.name) for e in sorted(os.scandir(path), key=lambda e: e.name)
            if not e.name.startswith(".") and e.is_file() and e.name.lower().endswith(".parquet")]


def _is_parquet(f: str) -> bool:
    return f.lower().endswith(".parquet")


def _open_arrow(pa, f: str):
    """A memory-mapped Arrow table (IPC stream, as datasets writes, or IPC file format)."""
    try:
        source = pa.memory_map(f)
    except OSError as exc:
        raise InputError(f"{f}: cannot read ({exc.strerror or exc})") from None
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
    try:
        return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid as exc:
        raise InputError(f"{f}: not a readable Arrow file ({exc})") from None


def _parquet(pa, f: str):
    try:
        return pa.parquet.ParquetFile(f, buffer_size=_READ_BUFFER, pre_buffer=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{f}: not a readable Parquet file ({exc})") from None


def _schema(pa, f: str):
    if _is_parquet(f):
        return _parquet(pa, f).schema_arrow
    return _open_arrow(pa, f).schema


def _pick_columns(schema, asked: Columns, text: str) -> tuple[Columns, list[str] | None]:
    """The (image, label, prompt) columns of ``schema``, and ClassLabel names."""
    import pyarrow as pa

    features = {}
    meta = (schema.metadata or {}).get(b"huggingface")
    if meta:
        try:
            features = json.loads(meta).get("info", {}).get("features", {}) or {}
        except (ValueError, AttributeError):
            features = {}

    def kind(name: str) -> str:
        spec = features.get(name)
        return spec.get("_type", "") if isinstance(spec, dict) else ""

    def is_struct_image(t) -> bool:
        return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and \
            _is_binary(t.field(t.get_field_index("bytes")).type)

    def need(name: str | None, option: str, ok, what: str) -> str | None:
        if name is None:
            return None
        if name not in schema.names:
            raise InputError(f"{text}: {option} {name}: no such column (columns: "
                             f"{', '.join(schema.names)})")
        if not ok(schema.field(name).type):
            raise InputError(f"{text}: {option} {name}: column type {schema.field(name).type} "
                             f"is not {what}")
        return name

    image = need(asked.image, "--image-column",
                 lambda t: is_struct_image(t) or _is_binary(t), "image bytes or {bytes, path}")
    if image is None:
        found = [n for n in schema.names if kind(n) == "Image"] or \
            [n for n in schema.names if is_struct_image(schema.field(n).type)]
        raw = [n for n in schema.names if _is_binary(schema.field(n).type)]
        if not found and len(raw) > 1:
            raise InputError(f"{text}: several binary columns ({', '.join(raw)}); name the "
                             "images with --image-column")
        found = found or raw
        if not found:
            raise InputError(f"{text}: no image column (columns: {', '.join(schema.names)}); "
                             "name it with --image-column")
        image = found[0]
    label = need(asked.label, "--label-column", pa.types.is_integer, "integer")
    if label is None:
        label = next((n for n in schema.names if kind(n) == "ClassLabel"), None)
        if label is None and "label" in schema.names and \
                pa.types.is_integer(schema.field("label").type):
            label = "label"
    prompt = need(asked.prompt, "--prompt-column",
                  lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "text")
    if prompt is None:
        prompt = next((n for n in _PROMPT_NAMES if n in schema.names and
                       (pa.types.is_string(schema.field(n).type)
                        or pa.types.is_large_string(schema.field(n).type))), None)
    spec = features.get(label) if label else None
    classes = None
    if isinstance(spec, dict) and spec.get("_type") == "ClassLabel" and \
            isinstance(spec.get("names"), list):
        classes = [str(c) for c in spec["names"]]
    return Columns(image, label, prompt), classes


def _is_binary(t) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or \
        pa.types.is_fixed_size_binary(t)


def _read_small_columns(pa, f: str, cols: Columns) -> tuple[int, list | None, list | None]:
    """(rows, labels, prompts) of one file: only the label and prompt columns are read."""
    wanted = [c for c in (cols.label, cols.prompt) if c is not None]
    if _is_parquet(f):
        pf = _parquet(pa, f)
        n = pf.metadata.num_rows
        table = pf.read(columns=wanted) if wanted else None
    else:
        table = _open_arrow(pa, f)
        n = table.num_rows
    labels = table.column(cols.label).to_pylist() if cols.label is not None else None
    prompts = table.column(cols.prompt).to_pylist() if cols.prompt is not None else None
    return n, labels, prompts


def _image_bytes(value: Any, display: str) -> bytes:
    if isinstance(value, dict):
        data, where = value.get("bytes"), value.get("path")
        if data is None:
            how = f"only a path ({where!r}), not the image's bytes" if where else "no image"
            raise InputError(f"{display}: the row holds {how}")
        return data
    if value is None:
        raise InputError(f"{display}: the row holds no image")
    return value


class _Reader:
    """One process's view of the files: the current Parquet batch of the image column (rows
    read in increasing order stream through it), or memory-mapped Arrow tables."""

    def __init__(self, files: list[str], column: str):
        self.pa = _pyarrow()
        self.files, self.column = files, column
        self.pid = os.getpid()
        self.arrow: dict[int, Any] = {}
        self.state: tuple | None = None  # (file, group, iterator, first row, batch)
        self.groups: dict[int, tuple[Any, list[int], list[int]]] = {}

    def get(self, f: int, row: int, display: str) -> Any:
        try:
            if not _is_parquet(self.files[f]):
                if f not in self.arrow:
                    self.arrow = {f: _open_arrow(self.pa, self.files[f]).column(self.column)}
                return self.arrow[f][row].as_py()
            return self._parquet_row(f, row)
        except (OSError, self.pa.ArrowException) as exc:
            raise InputError(f"{display}: cannot read ({type(exc).__name__}: {exc})") from None

    def _parquet_row(self, f: int, row: int) -> Any:
        pf, starts, per_batch = self._file(f)
        g = bisect_right(starts, row) - 1
        local = row - starts[g]
        if self.state is None or self.state[:2] != (f, g) or local < self.state[3]:
            it = pf.iter_batches(batch_size=per_batch[g], row_groups=[g], columns=[self.column],
                                 use_threads=False)
            self.state = (f, g, it, 0, None)
        f_, g_, it, lo, batch = self.state
        while batch is None or local >= lo + batch.num_rows:
            lo = lo if batch is None else lo + batch.num_rows
            batch = None  # release the previous batch before reading the next
            self.state = (f_, g_, it, lo, None)
            batch = next(it)
            self.state = (f_, g_, it, lo, batch)
        return batch.column(0)[local - lo].as_py()

    def _file(self, f: int):
        if f not in self.groups:
            pf = _parquet(self.pa, self.files[f])
            md = pf.metadata
            index = [k for k in range(md.num_columns)
                     if md.schema.column(k).path.split(".")[0] == self.column]
            starts, per_batch = [0], []
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                size = sum(rg.column(k).total_uncompressed_size for k in index)
                per_row = max(1, size // max(1, rg.num_rows))
                per_batch.append(int(max(1, min(rg.num_rows, BATCH_BYTES // per_row))))
                starts.append(starts[-1] + rg.num_rows)
            self.groups = {f: (pf, starts, per_batch)}  # one file open at a time
        return self.groups[f]
