"""Sources: what a SAMPLES / REF / TEST argument points at, resolved into a list of images.

:func:`resolve_source` asks each registered kind in turn (one module each):

* :mod:`.folder` — a directory of images, searched recursively, class folders as labels;
* :mod:`.featurefile` — an ``.npz`` with a ``features`` array (kind ``"features"``: no images);
* :mod:`.ziparchive` — a ``.zip`` of images, read in place;
* :mod:`.tarshards` — webdataset ``.tar`` shards (a file, a folder, a brace pattern), in place;
* :mod:`.parquet` — Parquet / Arrow tables (``datasets.save_to_disk`` folders), in place;
* :mod:`.array` — an ``.npz`` with ``arr_0`` (the ADM reference-batch format) or an ``.npy``,
  N×H×W×C uint8.

A :class:`Source` is picklable and cheap to send to DataLoader workers; its :meth:`Source.load_rgb`
reads one image's bytes, hashes them and decodes them to H×W×3 uint8. :func:`open_image` reads
one image back from its locator (:mod:`evalkit.images.locators`), through the kind that owns the
locator's container.

A new kind is one module with a :class:`Source` subclass (``kind``, ``locator_kind``,
``accepts``, ``claims``, ``resolve``, ``open_locator``, ``read_bytes`` or ``read_rgb``) plus its
entry in the :func:`register_kinds` call below, whose order is the order the kinds are asked in.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from evalkit.images.locators import parse as parse_locator
from evalkit.images.sources.array import ArraySource
from evalkit.images.sources.base import (
    CONTENT_VERSION,
    FINGERPRINT_VERSION,
    IMAGE_EXTENSIONS,
    JPEG_EXTENSIONS,
    Columns,
    RowSample,
    SampledSource,
    Source,
    content_fingerprint,
    is_image_name,
    is_source_arg,
    kind_for_locator,
    register_kinds,
    resolve_source,
    source_kinds,
)
from evalkit.images.sources.featurefile import (
    FeatureFileSource,
    is_feature_file,
    is_image_source,
    stats_npz_keys,
)
from evalkit.images.sources.folder import FolderSource
from evalkit.images.sources.parquet import TableSource
from evalkit.images.sources.tarshards import TarSource
from evalkit.images.sources.ziparchive import ZipSource

register_kinds(TarSource, TableSource, FolderSource, FeatureFileSource, ZipSource, ArraySource)

__all__ = ["CONTENT_VERSION", "FINGERPRINT_VERSION", "IMAGE_EXTENSIONS", "JPEG_EXTENSIONS",
           "ArraySource", "Columns", "FeatureFileSource", "FolderSource", "RowSample",
           "SampledSource", "Source", "TableSource",
           "TarSource", "ZipSource",
           "content_fingerprint", "is_feature_file", "is_image_name", "is_image_source",
           "is_source_arg", "open_image", "stats_npz_keys",
           "resolve_source", "source_kinds"]


def open_image(locator: str | os.PathLike, root: str | os.PathLike | None = None) -> Image.Image:
    """A PIL RGB image for a path or a locator from ``FeatureSet.files``.

    Locators: ``"rel/path.png"`` (relative to the source folder ``root``), ``"x.zip::member"``,
    ``"x.tar::member"``, ``"x.npz[i]"`` / ``"x.npy[i]"``. When ``root`` is the archive or array
    file itself (or, for tar shards, their folder), it is used
    as the container (so locators stay valid after the source moved). The image is converted by
    :func:`~evalkit.images.decode.to_rgb_uint8`, exactly as the encoder saw it before resizing.
    """
    text = os.fspath(locator)
    loc = parse_locator(text)
    root_path = Path(root) if root is not None else None
    return kind_for_locator(loc).open_locator(loc, text, root_path)
