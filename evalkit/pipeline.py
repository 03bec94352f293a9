"""From a source argument to a FeatureSet: the one path `score`, `features` and references use.

    resolve source -> encoder identity (no model built) -> cache key
      -> cache hit: read the entry | miss: build encoder + extract + store
      -> FeatureSet with files (locators), labels and provenance meta

A feature file is read directly and no encoder runs.
"""
from __future__ import annotations

import hashlib
import platform
import time
import warnings
from typing import Any, Iterable

import numpy as np

from evalkit import __version__
from evalkit.cache import FeatureCache, cache_key
from evalkit.errors import InputError
from evalkit.extract import extract
from evalkit.featureset import FeatureSet, is_feature_file, load_feature_file, save_feature_file
from evalkit.options import ExtractOptions
from evalkit.sources import Source, resolve_source

IDENTITY_KEYS = ("name", "arch", "weights_sha256", "preprocess")


class JpegWarning(UserWarning):
    """Inputs are JPEG: lossy compression shifts FID (clean-fid's study)."""


def load_features(source: str, options: ExtractOptions | None = None) -> FeatureSet:
    """Features of ``source`` (image folder, zip, npz/npy images, or feature file).

    Image sources go through the feature cache (unless ``options.use_cache`` is False): the
    encoder is built and run only on a miss. The returned FeatureSet has ``files`` (one
    locator per row), ``labels`` (class folders / ``arr_1``) and ``meta`` = {``encoder``:
    {name, arch, weights_sha256, preprocess}, ``source``: {source, n, fingerprint (content
    sha256, comparable across machines)}, ``n_skipped``, ``skipped``, ``cache_hit``,
    ``extract_s`` (0 on a hit), ``timing``, ``jpeg``, ``precision``, ``versions``}.

    Raises:
        InputError: a missing or unreadable source, or an unreadable image (without
            ``options.skip_bad``), naming the file.
    """
    options = options or ExtractOptions()
    source = str(source)
    if is_feature_file(source):
        return _from_feature_file(source)
    src = resolve_source(source)
    identity, prebuilt = _identity(options)
    key = cache_key(src.fingerprint, identity, options.precision)
    t0 = time.perf_counter()

    def compute() -> FeatureSet:
        return _extract(src, options, identity, prebuilt)

    if options.use_cache:
        fs = FeatureCache(options.cache_dir).get_or_compute(key, compute)
    else:
        fs = compute()
        fs.meta["cache_hit"] = False
    return _finish(src, fs, options, time.perf_counter() - t0)


def load_features_many(sources: Iterable[str], options: ExtractOptions | None = None
                       ) -> list[FeatureSet]:
    """:func:`load_features` for each source, in order."""
    return [load_features(s, options) for s in sources]


def save_features(fs: FeatureSet, path: str) -> None:
    """Write ``fs`` as a SPEC feature file (atomic); locators go into ``meta["files"]``."""
    check_feature_path(path)
    meta = dict(fs.meta)
    if fs.files is not None:
        meta["files"] = list(fs.files)
    save_feature_file(FeatureSet(fs.arrays, fs.labels, meta, fs.source), path)


def check_feature_path(path: str) -> None:
    """Feature files end in ``.npz`` (that is how sources recognise them)."""
    if not str(path).lower().endswith(".npz"):
        raise InputError(f"{path}: a feature file must end in .npz")


def identity_of(encoder: Any) -> dict[str, Any]:
    """Identity dict of a built encoder (as ``evalkit.encoders.encoder_identity`` gives it)."""
    return {"name": encoder.name, "arch": encoder.arch,
            "weights_sha256": encoder.weights_sha256,
            "preprocess": _describe(encoder.preprocess)}


def _describe(preprocess: Any) -> Any:
    return preprocess.describe() if hasattr(preprocess, "describe") else preprocess


def _identity(options: ExtractOptions) -> tuple[dict[str, Any], Any]:
    """(encoder identity, an encoder built to learn it or None). Normally builds nothing."""
    from evalkit import encoders

    fn = getattr(encoders, "encoder_identity", None)
    if fn is not None:
        ident = fn(options.encoder, options.arch, options.weights, resize=options.resize)
        ident = {k: ident.get(k) for k in IDENTITY_KEYS}
        ident["preprocess"] = _describe(ident["preprocess"])
        return ident, None
    encoder = _build(options)  # encoders without encoder_identity(): learn it by building
    return identity_of(encoder), encoder


def _build(options: ExtractOptions):
    from evalkit.encoders import build_encoder

    return build_encoder(options.encoder, options.arch, options.weights, resize=options.resize)


def _extract(src: Source, options: ExtractOptions, identity: dict[str, Any],
             prebuilt: Any) -> FeatureSet:
    t0 = time.perf_counter()
    encoder = prebuilt if prebuilt is not None else _build(options)
    fs = extract(src, encoder, batch_size=options.batch_size, device=options.device,
                 workers=options.workers, precision=options.precision,
                 skip_bad=options.skip_bad, quiet=options.quiet)
    fs.meta.update(encoder=dict(identity), precision=options.precision,
                   extract_s=round(time.perf_counter() - t0, 4), versions=_versions())
    if src.classes:
        fs.meta["classes"] = list(src.classes)
    return fs


def _finish(src: Source, fs: FeatureSet, options: ExtractOptions, seconds: float) -> FeatureSet:
    meta = fs.meta
    kept = meta.pop("kept", None)
    rows = range(len(src)) if kept is None else kept
    if len(rows) != fs.n:
        raise InputError(f"{src.arg}: cached features hold {fs.n} rows for {len(rows)} images; "
                         "rerun with --no-cache")
    if meta.get("cache_hit"):
        if meta.get("n_skipped") and not options.skip_bad:
            reasons = meta.get("skipped_reasons") or meta.get("skipped") or ["?"]
            raise InputError(f"{reasons[0]} (pass --skip-bad to skip unreadable images)")
        meta["extract_s"] = 0.0
        meta["timing"] = {"data_wait_s": 0.0, "forward_s": 0.0, "total_s": 0.0,
                          "cache_load_s": round(seconds, 4)}
    meta["source"] = {"source": src.arg, "n": fs.n,
                      "fingerprint": meta.pop("content_fingerprint", None)}
    fs.source = src.arg
    fs.files = [src.locators[i] for i in rows]
    if meta.get("n_skipped") and meta.get("cache_hit"):
        warnings.warn(f"{src.arg}: {meta['n_skipped']} unreadable images skipped (cached result)",
                      UserWarning, stacklevel=3)
    if meta.get("jpeg"):
        warnings.warn(f"{src.arg}: inputs are JPEG; lossy compression shifts FID noticeably "
                      "(clean-fid's study): compare only with sets saved the same way",
                      JpegWarning, stacklevel=3)
    return fs


def _from_feature_file(path: str) -> FeatureSet:
    fs = load_feature_file(path)
    meta = fs.meta
    files = meta.pop("files", None)
    if isinstance(files, list) and len(files) == fs.n:
        fs.files = [str(f) for f in files]
    before = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    fingerprint = before.get("fingerprint") or "sha256:" + hashlib.sha256(
        np.ascontiguousarray(fs.arrays["features"]).tobytes()).hexdigest()
    meta["source"] = {"source": path, "n": fs.n, "fingerprint": fingerprint}
    if before.get("source"):
        meta["source"]["extracted_from"] = before["source"]
    meta.setdefault("n_skipped", 0)
    meta.update(cache_hit=False, extract_s=0.0)
    fs.source = path
    return fs


def _versions() -> dict[str, str]:
    import PIL
    import torch

    return {"evalkit": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}
