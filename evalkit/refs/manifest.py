"""The manifest of a stored reference (``REF_DIR/NAME/manifest.json``) and its entries.

One manifest per reference: the source, its content fingerprint, and one entry per encoder
identity whose features (or statistics) are stored beside it. This module owns the
manifest's fields (:class:`Manifest`, :class:`Entry`), its one reader and writer, and the
mapping between an entry and the :class:`~evalkit.features.identity.EncoderIdentity` it was
made with (fields, file name, matching, description).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict

from evalkit.encoders import get_encoder_spec
from evalkit.errors import InputError
from evalkit.features.identity import EncoderIdentity
from evalkit.files.fileio import atomic_write_text, read_json
from evalkit.formatting import format_size
from evalkit.refs.layout import MANIFEST

FILE_NAME = MANIFEST
SCHEMA = "evalkit.ref/1"
# Role of a statistics entry that came inside a published image batch (ADM's mu/sigma): kept
# apart from the reference's own features, used only when a protocol asks for it.
PUBLISHED = "published_stats"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Entry(TypedDict, total=False):
    """One stored feature (or statistics) file: the identity fields of
    :meth:`EncoderIdentity.as_dict` plus these."""

    file: str                 # file name inside the reference folder
    weights_known: bool       # False: the weights digest was not known when stored
    identity_key: str
    stats_only: bool          # mu/sigma only (no samples)
    role: str                 # PUBLISHED for statistics published inside an image batch
    made_by: str | None       # who computed published statistics
    n: int | None
    dim: int
    arrays: list[str]
    labels: bool
    files: bool
    created: str
    source_fingerprint: str | None


class Manifest(TypedDict, total=False):
    """The top-level fields of ``manifest.json``."""

    schema: str
    name: str
    source: str               # absolute path (or the stored catalog file)
    source_fingerprint: str | None
    created: str
    stats_only: bool          # every entry is statistics only
    entries: list[Entry]
    catalog: dict[str, Any]   # a pulled catalog file: name, kind, url, size, sha256, ...


def new_manifest(name: str, source: str, fingerprint: str | None, created: str,
                 entries: list[Entry], **extra: Any) -> Manifest:
    """A manifest for a new reference (``extra``: e.g. ``catalog``)."""
    return Manifest(schema=SCHEMA, name=name, source=source, source_fingerprint=fingerprint,
                    created=created, entries=list(entries), **extra)


def read_manifest(folder: Path) -> Manifest:
    """The manifest in ``folder``.

    Raises:
        InputError: missing, unreadable or not an evalkit reference manifest.
    """
    path = folder / FILE_NAME
    data = read_json(path, missing="reference manifest missing (remove the folder and add it again)",
                     bad="unreadable reference manifest")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(f"{path}: not an evalkit reference manifest (expected schema {SCHEMA!r})")
    return data


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write ``manifest`` into ``folder`` atomically (``stats_only`` derived from the entries)."""
    manifest["stats_only"] = bool(manifest["entries"]) and all(
        e.get("stats_only") for e in manifest["entries"]
    )
    atomic_write_text(folder / FILE_NAME, json.dumps(manifest, indent=2) + "\n")


# ----------------------------------------------------------------------------- identities


def identity_fields(ident: EncoderIdentity, weights_known: bool) -> Entry:
    """The entry fields of ``ident`` (its fields, ``weights_known`` and its ``identity_key``)."""
    return dict(ident.as_dict(), weights_known=weights_known, identity_key=ident.key())


def entry_identity(entry: Entry) -> tuple[EncoderIdentity, bool]:
    """An entry's identity and whether its weights digest is known.

    Entries written before :class:`EncoderIdentity` call the name ``encoder`` and have no
    ``weights_known``: there a missing digest means unknown.
    """
    ident = EncoderIdentity.from_dict(entry)
    if ident is None:
        raise InputError(f"reference manifest entry {entry.get('file')!r} names no encoder")
    known = entry.get("weights_known", ident.weights_sha256 is not None)
    return ident, bool(known)


def entry_file_name(ident: EncoderIdentity, stats_only: bool) -> str:
    """``[stats-]<encoder>-<arch>-<key[:12]>.npz``: the file of ``ident``'s entry."""
    stem = _UNSAFE.sub("_", f"{ident.name}-{ident.arch or 'default'}")
    return f"{'stats-' if stats_only else ''}{stem}-{ident.key()[:12]}.npz"


def same_identity(a: tuple[EncoderIdentity, bool], b: tuple[EncoderIdentity, bool]) -> bool:
    """Identities match on every field; a weights digest is compared only when both know it."""
    (ia, ka), (ib, kb) = a, b
    if ka and kb:
        return ia == ib
    return replace(ia, weights_sha256=None) == replace(ib, weights_sha256=None)


def describe_entry(entry: Entry) -> str:
    """``encoder/arch`` plus what else tells identities apart (weights, preprocessing, precision)."""
    ident, known = entry_identity(entry)
    extra = []
    if ident.weights_sha256:
        extra.append(f"weights {ident.weights_sha256[:8]}")
    elif not known:
        extra.append("weights unknown")
    if ident.preprocess:
        digest = hashlib.sha256(ident.preprocess.encode("utf-8")).hexdigest()[:8]
        extra.append(f"preprocess {digest}")
    if ident.precision != "fp32":
        extra.append(ident.precision)
    if entry.get("stats_only"):
        extra.append("statistics only")
    return f"{ident.name}/{ident.arch}" + (f" ({', '.join(extra)})" if extra else "")


def declared_dim(encoder: str, arch: str | None) -> int | None:
    """The ``features`` dimension the registry declares for ``encoder``/``arch`` (None: unknown)."""
    spec = get_encoder_spec(encoder)
    try:
        return int(spec.outputs[arch or spec.default_arch]["features"])
    except KeyError:  # an arch or output the registry does not list: nothing to check
        return None


def stats_entry(ident: EncoderIdentity, weights_known: bool, payload: dict[str, Any],
                n: int | None, what: str, hint: str = "") -> Entry:
    """The entry of statistics ``payload`` (mu/sigma arrays) made with ``ident``.

    Raises:
        InputError: the statistics' dimension is not the one ``ident``'s encoder declares
            (``what`` names the file, ``hint`` says how to fix it).
    """
    dim = int(payload["mu"].shape[0])
    expected = declared_dim(ident.name, ident.arch)
    if expected is not None and expected != dim:
        raise InputError(f"{what}: {ident.name} statistics of dimension {dim}, but "
                         f"{ident.name}/{ident.arch} features have {expected}{hint}")
    return dict(identity_fields(ident, weights_known), stats_only=True, n=n, dim=dim,
                arrays=sorted(payload), labels=False, file=entry_file_name(ident, True))


# ----------------------------------------------------------------------------- summaries


LIST_COLUMNS = ["name", "encoder", "arch", "kind", "N", "dim", "created", "sha256", "source"]


def entry_encoder(entry: Entry) -> str:
    """An entry's encoder name (``name``; manifests before EncoderIdentity said ``encoder``)."""
    return str(entry.get("name") or entry.get("encoder"))


def entry_kind(entry: Entry) -> str:
    """``features``, ``stats`` (statistics only) or ``published stats`` (inside a batch)."""
    if entry.get("role") == PUBLISHED:
        return "published stats"
    return "stats" if entry.get("stats_only") else "features"


def trust_label(manifest: Manifest) -> str:
    """How a catalog file's sha256 is trusted (``-`` for a reference made from local data)."""
    cat = manifest.get("catalog")
    if not cat:
        return "-"
    how = "published" if cat.get("sha256_origin") == "publisher" else "first use (TOFU)"
    return f"{cat['sha256'][:12]} {how}"


def list_rows(manifests: list[Manifest]) -> list[list[Any]]:
    """One row per stored entry, in the order of :data:`LIST_COLUMNS`."""
    return [[m["name"], entry_encoder(e), e.get("arch") or "-", entry_kind(e), e.get("n") or "?",
             e.get("dim") or "?", e.get("created", "?")[:19], trust_label(m), m["source"]]
            for m in manifests for e in m["entries"]]


def describe_added(manifest: Manifest) -> str:
    """One line on the entry just added: ``NAME: encoder/arch N x D features from SOURCE``."""
    entry = manifest["entries"][-1]
    kind = ("statistics only (fd/sfid)" if entry.get("stats_only")
            else f"{entry['n']} x {entry['dim']} features")
    return f"{manifest['name']}: {entry_encoder(entry)}/{entry.get('arch')} {kind} from {manifest['source']}"


def describe_catalog(manifest: Manifest) -> str:
    """One line on a registered catalog file: its name, size, how it is trusted, where it is."""
    cat = manifest["catalog"]
    trust = ("sha256 matches the published one" if cat["sha256_origin"] == "publisher"
             else "no published sha256: recorded now, checked on later use")
    return f"{manifest['name']}: {cat['file']} ({format_size(cat['size'])}, {trust}) -> {manifest['source']}"
