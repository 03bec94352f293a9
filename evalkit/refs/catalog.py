"""The catalog of published reference sets (data only): names, aliases, URLs, formats.

The catalog ships as ``evalkit/refs/catalog.json``. More entries come from

* installed packages, through the ``evalkit.catalog`` entry-point group: each entry point
  loads to a path of a JSON catalog file, a dict in the catalog format, or a list of entries;
* the files named in ``$EVALKIT_CATALOG`` (``os.pathsep``-separated JSON catalog files).

Later sources override earlier ones entry by entry (same ``name``), so a lab can point an
entry at its own copy. An entry says what the file is (``kind``: ``images`` for an image batch,
which serves every encoder, or ``statistics``, which serves only the encoders that made them),
where it is (``urls``), what the publisher states about it (``size``, ``sha256``; None when
unstated: evalkit then records the sha256 of the first download), how to read it (``format``:
``adm-batch``, ``npz-stats``, ``edm2-pkl``) and which statistics it holds (``stats``).
Nothing here touches the network; see :mod:`evalkit.refs.pull` for fetching.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import entry_points
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from evalkit.errors import CatalogWarning, InputError
from evalkit.files.download import url_file_name
from evalkit.files.fileio import read_json
from evalkit.refs.layout import validate_name

CATALOG_SCHEMA = "evalkit.catalog/1"
ENTRY_POINT_GROUP = "evalkit.catalog"
KINDS = ("images", "statistics")
FORMATS = ("adm-batch", "npz-stats", "edm2-pkl")
UNBOUNDED_LIMIT = 16 << 30
"""Largest download accepted for an entry that states no size and allows no estimate."""


@dataclass(frozen=True)
class CatalogEntry:
    """One published reference set (see the module docstring for the fields)."""

    name: str
    kind: str
    format: str
    urls: tuple[str, ...]
    description: str = ""
    aliases: tuple[str, ...] = ()
    resolution: int | None = None
    n: int | None = None
    labels: bool = False
    size: int | None = None
    sha256: str | None = None
    stats: tuple[dict[str, Any], ...] = ()
    protocols: tuple[str, ...] = ()
    license: str = ""
    citation: str = ""
    published_in: str = ""
    origin: str = field(default="evalkit", compare=False)

    @property
    def file_name(self) -> str:
        """The file name every URL of the entry ends with (kept when mirroring)."""
        return PurePosixPath(urlsplit(self.urls[0]).path).name

    def serves(self) -> str:
        """What the entry can be scored against, in words (for ``ref list --available``)."""
        encs = sorted({_stats_label(s) for s in self.stats})
        if self.kind == "images":
            return "any encoder (images)" + (f"; published stats: {', '.join(encs)}" if encs else "")
        return "stats only: " + ", ".join(encs)

    def estimated_size(self) -> int | None:
        """Size in bytes: the publisher's, else an estimate from what the entry declares.

        N*H*W*3 for an image batch's uint8 pixels plus (D + D*D)*8 per float64 statistics
        item; None when that is unknown.
        """
        if self.size:
            return self.size
        total = 0
        if self.kind == "images":
            if not (self.n and self.resolution):
                return None
            total += self.n * self.resolution * self.resolution * 3
        for stat in self.stats:
            for dim in (stat.get("dim"), stat.get("spatial_dim")):
                total += (dim + dim * dim) * 8 if dim else 0
        return total or None

    def size_limit(self) -> int:
        """The most bytes a download of this entry may bring: the stated size, else twice the
        estimate plus 64 MiB (npz headers, labels, a compression that did not pay off), else
        :data:`UNBOUNDED_LIMIT`. A server sending more is not sending this file."""
        if self.size:
            return self.size
        estimate = self.estimated_size()
        return 2 * estimate + (64 << 20) if estimate else UNBOUNDED_LIMIT


def _stats_label(stat: dict[str, Any]) -> str:
    label = stat["encoder"] + (f"/{stat['arch']}" if stat.get("arch") else "")
    return label + (f" ({stat['resize']})" if stat.get("resize") else "")


def _entry(raw: Any, origin: str) -> CatalogEntry:
    """One validated entry: every field has its type, every name is a store folder name and
    every URL an http(s) URL of a plain file name, so nothing downstream meets a surprise."""
    if not isinstance(raw, dict):
        raise InputError(f"{origin}: catalog entry is not an object: {raw!r:.80}")
    name = raw.get("name")
    where = f"{origin}: catalog entry {name!r:.80}"
    if not isinstance(name, str) or not name:
        raise InputError(f"{origin}: catalog entry without a name")
    validate_name(name, f"name of {where}")
    if raw.get("kind") not in KINDS:
        raise InputError(f"{where}: kind must be one of {', '.join(KINDS)}")
    if raw.get("format") not in FORMATS:
        raise InputError(f"{where}: format must be one of {', '.join(FORMATS)}")
    aliases = _list_of(raw, "aliases", str, where)
    for alias in aliases:
        validate_name(alias, f"alias of {where}")
    urls = _list_of(raw, "urls", str, where) or (
        [raw["url"]] if isinstance(raw.get("url"), str) and raw["url"] else [])
    if not urls:
        raise InputError(f"{where}: needs 'urls' (a list of http(s) URLs)")
    names = {url_file_name(u, where) for u in urls}
    if len(names) != 1:
        raise InputError(f"{where}: every URL must end with the same file name (got {sorted(names)})")
    sha = raw.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64
                            or any(c not in "0123456789abcdefABCDEF" for c in sha)):
        raise InputError(f"{where}: sha256 must be 64 hex digits or null")
    stats = tuple(dict(s) for s in _list_of(raw, "stats", dict, where))
    for stat in stats:
        if not isinstance(stat.get("encoder"), str) or not stat["encoder"]:
            raise InputError(f"{where}: every 'stats' item needs an 'encoder' (a name)")
        for key in ("arch", "resize", "key", "made_by"):
            if stat.get(key) is not None and not isinstance(stat[key], str):
                raise InputError(f"{where}: 'stats' item {key!r} must be a string")
        for key in ("dim", "spatial_dim"):
            _count(stat, key, f"{where} 'stats' item")
    return CatalogEntry(
        name=name, kind=raw["kind"], format=raw["format"], urls=tuple(urls),
        description=_text(raw, "description", where), aliases=tuple(aliases),
        resolution=_count(raw, "resolution", where), n=_count(raw, "n", where),
        labels=bool(raw.get("labels")), size=_count(raw, "size", where),
        sha256=sha.lower() if sha else None, stats=stats,
        protocols=tuple(_list_of(raw, "protocols", str, where)),
        license=_text(raw, "license", where), citation=_text(raw, "citation", where),
        published_in=_text(raw, "published_in", where), origin=origin)


def _list_of(raw: dict, key: str, kind: type, where: str) -> list:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise InputError(f"{where}: {key!r} must be a list of {kind.__name__} values, "
                         f"got {value!r:.80}")
    return value


def _count(raw: dict, key: str, where: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{where}: {key!r} must be a non-negative integer or null, "
                         f"got {value!r:.80}")
    return value


def _text(raw: dict, key: str, where: str) -> str:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where}: {key!r} must be a string, got {value!r:.80}")
    return value or ""


def _entries_of(data: Any, origin: str) -> list[CatalogEntry]:
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict) and "entries" in data:
        if data.get("schema", CATALOG_SCHEMA) != CATALOG_SCHEMA:
            raise InputError(f"{origin}: not an evalkit catalog (expected schema {CATALOG_SCHEMA!r})")
        items = data["entries"]
    elif isinstance(data, dict):
        items = [data]
    else:
        raise InputError(f"{origin}: not an evalkit catalog")
    return [_entry(item, origin) for item in items]


def _read_file(path: str | os.PathLike) -> list[CatalogEntry]:
    data = read_json(path, missing="catalog file not found (named in $EVALKIT_CATALOG?)",
                     bad="unreadable catalog file")
    return _entries_of(data, str(path))


def _builtin() -> list[CatalogEntry]:
    text = resources.files("evalkit.refs").joinpath("catalog.json").read_text(encoding="utf-8")
    return _entries_of(json.loads(text), "evalkit")


def _plugins() -> list[CatalogEntry]:
    out: list[CatalogEntry] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {ep.name} ({ep.value})"
        try:
            data = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
            raise InputError(f"{origin}: cannot load catalog plugin ({exc})") from None
        if callable(data):
            try:
                data = data()
            except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
                raise InputError(f"{origin}: catalog plugin failed ({type(exc).__name__}: "
                                 f"{exc})") from None
        out += _read_file(data) if isinstance(data, (str, os.PathLike)) else _entries_of(data, origin)
    return out


def load_catalog() -> dict[str, CatalogEntry]:
    """Every catalog entry by name: built-in, then plugins, then ``$EVALKIT_CATALOG`` files."""
    builtin = {e.name: e for e in _builtin()}
    merged = dict(builtin)
    sources = [_plugins()]
    for path in filter(None, os.environ.get("EVALKIT_CATALOG", "").split(os.pathsep)):
        sources.append(_read_file(path))
    for entries in sources:
        for e in entries:
            if e.name in builtin and e != builtin[e.name]:
                warnings.warn(f"catalog entry {e.name!r} of {e.origin} replaces evalkit's "
                              f"(now fetched from {e.urls[0]})", CatalogWarning, stacklevel=2)
            merged[e.name] = e
    return merged


def lookup(name: str, catalog: dict[str, CatalogEntry] | None = None) -> CatalogEntry | None:
    """The entry called ``name`` or having it as an alias (case-insensitive); None if absent."""
    catalog = load_catalog() if catalog is None else catalog
    key = name.lower()
    for entry in catalog.values():
        if entry.name.lower() == key:
            return entry
    for entry in catalog.values():
        if key in (a.lower() for a in entry.aliases):
            return entry
    return None
