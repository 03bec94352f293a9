"""From a source argument to a FeatureSet: the one path `score`, `features` and references use.

    resolve source -> encoder identity (no model built) -> cache key
      -> cache hit: read the entry | miss: build encoder + extract + store
      -> FeatureSet with files (locators), labels and provenance meta

A feature file is read directly and no encoder runs.

With the cache on, a miss extracts in shards (:func:`evalkit.features.distributed.shard_ranges`): each
finished shard is written to the cache folder at once, shards already there from an
interrupted run are reused, and the entry is assembled from all of them (then the shard files
are deleted). One process extracting everything forms exactly the batches of a plain
extraction, so its features are bit-identical to it.

Under torchrun (``WORLD_SIZE > 1``) every rank runs this same path for the same sources:

1. rank 0 looks the entry up; on a hit nobody extracts;
2. each rank extracts the shards dealt to it round-robin (reusing its shard files);
3. rank 0 takes the other ranks' shards from the shared cache folder when it can read them
   there, else receives them through ``torch.distributed`` (in rounds of one shard per rank,
   so memory stays bounded): no shared filesystem is needed;
4. rank 0 assembles the FeatureSet in source order and stores the entry; the other ranks get a
   placeholder without rows (``meta["placeholder"]``) and write nothing.

Without the cache (``--no-cache``) the shards stay in memory and travel the same way.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from evalkit.encoders import build_encoder
from evalkit.errors import BadImageWarning, CacheWarning, InputError, JpegWarning
from evalkit.features import distributed as dist
from evalkit.features.cache import FeatureCache, cache_key
from evalkit.features.extract import Shard, assemble, extract
from evalkit.features.featureset import FeatureSet, load_feature_file, save_feature_file
from evalkit.features.identity import EncoderIdentity, identity_for
from evalkit.features.options import ExtractOptions
from evalkit.images.sources import (
    Columns,
    RowSample,
    SampledSource,
    Source,
    is_feature_file,
    is_image_source,
    resolve_source,
)
from evalkit.provenance import versions

log = logging.getLogger("evalkit")


def load_features(source: str, options: ExtractOptions | None = None, *,
                  sample: RowSample | None = None) -> FeatureSet:
    """Features of ``source`` (image folder, zip, npz/npy images, or feature file).

    Image sources go through the feature cache (unless ``options.use_cache`` is False): the
    encoder is built and run only on a miss, in shards that an interrupted run resumes from.
    The returned FeatureSet has ``files`` (one locator per row), ``labels`` (class folders /
    ``arr_1``) and ``meta`` = {``encoder``: {name, arch, weights_sha256, preprocess},
    ``source``: {source, n, fingerprint (content sha256, comparable across machines)},
    ``n_skipped``, ``skipped``, ``cache_hit``, ``extract_s`` (0 on a hit), ``timing``,
    ``jpeg``, ``precision``, ``versions``, and on a sharded miss ``shards``: {count, size,
    extracted, reused, processes}}.

    Under torchrun every rank must call this for the same sources in the same order; rank 0
    gets the features and the other ranks a placeholder with no rows (``meta["placeholder"]``).

    ``sample`` (``--nsample``): the rows are chosen before anything is read
    (:meth:`RowSample.rows` over the images the source lists, or over a feature file's rows),
    and only those images are read, decoded and encoded (:meth:`Source.subset`); the indices
    are those the same stream draws over the extracted rows, so the numbers are those of
    subsampling after extraction. A chosen image that cannot be read follows the skip rule
    (an error, or with ``skip_bad`` skipped and counted in ``n_skipped``: the set then has
    fewer rows; no replacement is drawn). The sample is cached as its own entry (its fast
    fingerprint hashes the chosen indices): never mistaken for the whole set's features nor
    taken from them. ``meta["source"]["sampled_from"]`` is the number of images listed.

    Raises:
        InputError: a missing or unreadable source, or an unreadable image (without
            ``options.skip_bad``), naming the file; on every rank when any rank fails.
    """
    options = options or ExtractOptions()
    source = str(source)
    device = dist.setup(options.device)
    if is_feature_file(source):
        if not dist.is_main():
            return _placeholder(source)
        fs = _from_feature_file(source)
        rows = sample.rows(fs.n) if sample is not None else None
        if rows is not None:
            total = fs.n
            fs = fs.subset(rows)
            fs.meta["source"] = dict(fs.meta["source"], n=fs.n, sampled_from=total)
        return fs
    src, key, identity = dist.synced(lambda: _prepare(source, options, sample))
    src, key = _agree(src, key)
    t0 = time.perf_counter()
    if options.use_cache or dist.active():
        fs = _sharded(src, key, options, identity, device or options.device)
        if fs is None:
            return _placeholder(source)
    else:
        fs = _extract(src, options, identity)
        fs.meta["cache_hit"] = False
    return _finish(src, fs, options, time.perf_counter() - t0)


def load_generated(src: Source, options: ExtractOptions | None = None, *,
                   encoder: Any = None, moments: Sequence[str] | None = None) -> FeatureSet:
    """Features of a generator's samples (:class:`evalkit.features.generate.GeneratedSource`).

    Always the sharded path (the batches, and so the samples, follow the shard plan): under
    torchrun each rank samples and encodes its shards and rank 0 gathers them; with the
    cache on, each finished shard is written to the cache folder and an interrupted run
    resumes from them; no finished entry is stored (the generator's weights are not in its
    name), and the shard files are removed once the features are assembled. Several encoders
    (a list in ``options.encoder``) are not handled here. ``encoder``: an encoder already
    built (and kept on its device between calls, as in a training loop) instead of building
    ``options.encoder``; its identity must be the one ``options`` describes.

    ``moments``: the encoder outputs (e.g. ``("features",)``) to reduce, shard by shard as
    they are extracted, to their float64 mean and covariance
    (:class:`evalkit.metrics.frechet.RunningMoments`) instead of keeping the rows: the result
    is a statistics-only FeatureSet (``moments``, ``meta["n"]``, the same provenance), for
    metrics that need only those (``fd``, ``sfid``). Memory is then one shard of rows plus
    D² per output, whatever ``num_samples``. Only outputs whose N×D float32 rows outweigh
    the D×D float64 sums (N > 2·D, :func:`stream_outputs`) are reduced; with none the rows
    are kept (and fewer samples than dimensions also take the metric's faster rows path).
    Under torchrun each rank reduces its own shards
    and rank 0 merges the sums (equal to the kept-rows statistics to float64 round-off).

    Raises:
        InputError: as :func:`load_features`, and from the generator (bad batch shape,
            dtype or range).
    """
    options = options or ExtractOptions()
    device = dist.setup(options.device)
    identity = (EncoderIdentity.of_encoder(encoder, options.precision) if encoder is not None
                else dist.synced(lambda: identity_for(options)))
    src, key = _agree(src, cache_key(src.fingerprint, identity))
    t0 = time.perf_counter()
    if moments:  # only where the rows would outweigh the float64 sums: N > 2·D
        encoder = encoder if encoder is not None else _build(options)
        moments = stream_outputs(moments, len(src), getattr(encoder, "outputs", None))
    fs = _sharded(src, key, options, identity, device or options.device, encoder,
                  moments=tuple(moments) if moments else None)
    if fs is None:
        return _placeholder(src.arg)
    return _finish(src, fs, options, time.perf_counter() - t0)


def stream_outputs(wanted: Sequence[str], n: int, dims: dict[str, int] | None
                   ) -> tuple[str, ...] | None:
    """Of the outputs ``wanted`` reduced to moments, those worth it for ``n`` samples: the
    N×D float32 rows are larger than the D×D float64 sums (N > 2·D; dimension unknown: yes)."""
    keep = tuple(k for k in wanted if not dims or dims.get(k) is None or n > 2 * int(dims[k]))
    return keep if len(keep) == len(tuple(wanted)) else None


def load_generated_many(src: Source, options: Sequence[ExtractOptions]) -> list[FeatureSet]:
    """Features of a generator's samples for several encoders (one ExtractOptions each):
    each batch is sampled once and run through every encoder (one resize per distinct
    preprocessing), in one process, held in memory (no shard files). Each FeatureSet equals
    :func:`load_generated` with that encoder alone.

    Raises:
        InputError: under torchrun, and as :func:`load_generated`.
    """
    options = list(options)
    if dist.launch_env().distributed:
        raise InputError("several encoders in one run are not supported under torchrun; "
                         "run one --encoder per launch")
    first = options[0]
    t0 = time.perf_counter()
    got = extract(src, [_build(o) for o in options], batch_size=first.batch_size,
                  device=first.device, precision=first.precision, quiet=first.quiet,
                  shards=dist.shard_ranges(len(src)))
    seconds = time.perf_counter() - t0
    out = []
    for shards, o in zip(got, options):
        fs = assemble(src, shards, total_s=seconds)
        _annotate(fs, src, o, identity_for(o), seconds)
        fs.meta["cache_hit"] = False
        out.append(_finish(src, fs, o, seconds))
    return out


def load_features_many(source: str, options: Sequence[ExtractOptions], *,
                       sample: RowSample | None = None) -> list[FeatureSet]:
    """Features of one image source for several encoders (one ExtractOptions each), with
    each image read and decoded once.

    Each encoder's entry is looked up in the feature cache under its own identity; the
    encoders that missed run together in ONE extraction pass (:func:`evalkit.features.extract.extract`
    with a list: one decode per image, one resize per distinct preprocessing), and each
    result is stored under its own key. The FeatureSets (in ``options`` order) are those
    :func:`load_features` returns for each encoder alone: a plain extraction forms the
    batches of the sharded one, so the features are the same. The shared pass is not
    resumable (no shard files); its wall time is every encoder's ``extract_s``.

    The decoding options (cache, batch size, device, workers, precision, skip_bad, quiet)
    are taken from ``options[0]``. ``sample``: only those images are read, as in
    :func:`load_features`.

    Raises:
        InputError: a feature file (it holds one encoder's features), a missing or
            unreadable source, or an unreadable image (without ``skip_bad``); under torchrun.
    """
    options = list(options)
    source = str(source)
    if dist.launch_env().distributed:
        raise InputError("several encoders in one run are not supported under torchrun; "
                         "run one --encoder per launch")
    if is_feature_file(source):
        raise InputError(f"{source}: a feature file holds one encoder's features; several "
                         "encoders need images")
    first = options[0]
    src = _sampled(resolve_source(source, columns=_columns(first)), sample)
    idents = [identity_for(o) for o in options]
    keys = [cache_key(src.fingerprint, i) for i in idents]
    t0 = time.perf_counter()
    cache = FeatureCache(first.cache_dir) if first.use_cache else None
    sets: list[FeatureSet | None] = [cache.load(k) if cache is not None else None for k in keys]
    for fs in sets:
        if fs is not None:
            fs.meta["cache_hit"] = True
    todo = [j for j, fs in enumerate(sets) if fs is None]
    if todo:
        log.info("%s: one pass for %s", src.arg, ", ".join(options[j].encoder for j in todo))
        t1 = time.perf_counter()
        got = extract(src, [_build(options[j]) for j in todo], batch_size=first.batch_size,
                      device=first.device, workers=first.workers, precision=first.precision,
                      skip_bad=first.skip_bad, quiet=first.quiet)
        seconds = time.perf_counter() - t1
        for j, fs in zip(todo, got):
            _annotate(fs, src, options[j], idents[j], seconds)
            if cache is not None:
                cache.store(keys[j], fs)
            fs.meta["cache_hit"] = False
            sets[j] = fs
    return [_finish(src, fs, o, time.perf_counter() - t0) for fs, o in zip(sets, options)]



def features_for_each(source: Any, options: Sequence[ExtractOptions], *,
                      sample: RowSample | None = None) -> list[Any]:
    """``source`` for each of several encoders: an image source (folder, zip, image array) is
    decoded once and encoded by each (:func:`load_features_many`, each encoder's features
    cached under its own identity; ``sample``: only those images); anything else (a feature
    or statistics file, a reference name, a FeatureSet, None) is passed on unchanged, once per
    encoder."""
    if isinstance(source, (str, os.PathLike)) and is_image_source(source):
        return load_features_many(os.fspath(source), list(options), sample=sample)
    return [source] * len(options)

def save_features(fs: FeatureSet, path: str) -> None:
    """Write ``fs`` as a feature file (atomic; :func:`~evalkit.features.featureset.save_feature_file`);
    locators go into ``meta["files"]``.

    Under torchrun only rank 0 writes (the other ranks hold placeholders).
    """
    check_feature_path(path)
    if fs.meta.get("placeholder") or not dist.is_main():
        return
    meta = dict(fs.meta)
    if fs.files is not None:
        meta["files"] = list(fs.files)
    save_feature_file(FeatureSet(fs.arrays, fs.labels, meta, fs.source, prompts=fs.prompts), path)


def check_feature_path(path: str) -> None:
    """Feature files end in ``.npz`` (that is how sources recognise them)."""
    if not str(path).lower().endswith(".npz"):
        raise InputError(f"{path}: a feature file must end in .npz")


def _build(options: ExtractOptions):
    return build_encoder(options.encoder, options.arch, options.weights, resize=options.resize)


def _columns(options: ExtractOptions) -> Columns:
    return Columns(options.image_column, options.label_column, options.prompt_column)


def _prepare(source: str, options: ExtractOptions, sample: RowSample | None = None
             ) -> tuple[Source, str, EncoderIdentity]:
    src = _sampled(resolve_source(source, columns=_columns(options)), sample)
    identity = identity_for(options)
    return src, cache_key(src.fingerprint, identity), identity


def _sampled(src: Source, sample: RowSample | None) -> Source:
    """``src``, or only the images ``sample`` draws from its listed images."""
    rows = sample.rows(len(src)) if sample is not None else None
    return src if rows is None else src.subset(rows)


def _agree(src: Source, key: str) -> tuple[Source, str]:
    """Every rank must see the same images; all use rank 0's cache key.

    (Nodes without a shared filesystem hold copies of the data whose modification times, and
    so fast fingerprints, differ; the image names and their count must not.)
    """
    if not dist.active():
        return src, key
    names = hashlib.sha256("\n".join(src.names).encode("utf-8", "surrogateescape")).hexdigest()
    seen = dist.all_gather((len(src), names))
    for r, (n, digest) in enumerate(seen):
        if (n, digest) != seen[0]:
            raise InputError(f"{src.arg}: rank {r} sees {n} images, rank 0 sees {seen[0][0]}"
                             f"{' with other names' if n == seen[0][0] else ''}; every node "
                             "needs the same files")
    return src, dist.broadcast(key)


def _placeholder(source: str) -> FeatureSet:
    """What ranks other than 0 get from a distributed load: no rows (rank 0 has them)."""
    meta = {"placeholder": True, "rank": dist.rank(), "n_skipped": 0, "cache_hit": False,
            "extract_s": 0.0, "source": {"source": source, "n": 0, "fingerprint": None}}
    return FeatureSet({"features": np.zeros((0, 0), np.float32)}, None, meta, source, [])


def _sharded(src: Source, key: str, options: ExtractOptions, identity: EncoderIdentity,
             device: Any, encoder: Any = None, moments: tuple[str, ...] | None = None
             ) -> FeatureSet | None:
    """The sharded path (cache on, or several processes); None on ranks other than 0."""
    t0 = time.perf_counter()
    cache = FeatureCache(options.cache_dir) if options.use_cache else None
    me, world = dist.rank(), dist.world_size()
    reusable = getattr(src, "reusable", True)  # a generator keeps shards only, no entry
    hit = cache.load(key) if (cache is not None and me == 0 and reusable) else None
    if dist.broadcast(hit is not None):
        if hit is None:
            return None
        hit.meta["cache_hit"] = True
        return hit
    plan = dist.shard_ranges(len(src))
    keep = me == 0 or cache is None  # shards held in memory until rank 0 has them
    from evalkit.metrics.frechet import RunningMoments

    sums = {k: RunningMoments(k) for k in moments} if moments else None
    have, counts = dist.synced(lambda: _own_shards(
        src, key, cache, dist.rank_shards(plan, me, world), options, device, keep, encoder,
        sums))
    # reduced shards carry no rows: their bookkeeping travels, never another rank's row files
    have = _collect(plan, key, None if sums is not None else cache, have)
    counts = dist.gather(counts)
    stats = None
    if sums is not None:
        every = dist.gather(sums)
        if me == 0:
            for other in every[1:]:  # rank order: the same sums for the same process count
                for k in sums:
                    sums[k].merge(other[k])
            stats = {k: acc.result() for k, acc in sums.items() if acc.n}

    def finish() -> tuple[FeatureSet, bool] | None:
        if me != 0:
            return None
        fs = assemble(src, [have.pop(r.index) for r in plan if r.index in have],
                      total_s=time.perf_counter() - t0, moments=stats)
        _annotate(fs, src, options, identity, time.perf_counter() - t0)
        fs.meta["shards"] = {"count": len(plan), "size": plan[0].stop - plan[0].start,
                             "extracted": sum(c["extracted"] for c in counts),
                             "reused": sum(c["reused"] for c in counts),
                             "processes": world}
        if world > 1 and fs.meta.get("n_skipped"):
            warnings.warn(f"{src.arg}: {fs.meta['n_skipped']} unreadable images skipped, e.g. "
                          f"{fs.meta['skipped_reasons'][0]}", BadImageWarning, stacklevel=4)
        if cache is None:
            return fs, False
        if not reusable:
            return fs, True
        cache.store(key, fs)
        return fs, cache.path(key).is_file()

    done = dist.synced(finish)
    if cache is not None and dist.broadcast(done[1] if done else False):
        cache.remove_shards(key)  # every rank: its own files when the folder is not shared
    if done is None:
        return None
    done[0].meta["cache_hit"] = False
    return done[0]


def _own_shards(src: Source, key: str, cache: FeatureCache | None, mine: list, options:
                ExtractOptions, device: Any, keep: bool, encoder: Any = None,
                sums: dict[str, Any] | None = None
                ) -> tuple[dict[int, Shard], dict[str, int]]:
    """Reuse this rank's shard files, extract the missing shards (writing each when done).

    ``sums``: output -> RunningMoments; each shard's rows are added to them and dropped (the
    shard's bookkeeping is kept, without rows)."""
    have: dict[int, Shard] = {}
    todo = []

    def reduce(shard: Shard) -> Shard:
        for k, acc in sums.items():
            if k not in shard.arrays:
                raise InputError(f"{src.arg}: the encoder has no '{k}' output to reduce")
            acc.add(shard.arrays[k])
        shard.arrays = {}
        return shard

    if sums is not None:
        keep = True  # only bookkeeping is kept
    for rng in mine:
        shard = cache.load_shard(key, rng, parse=Shard.from_payload) if cache is not None else None
        if shard is None:
            todo.append(rng)
        elif keep:
            have[rng.index] = shard if sums is None else reduce(shard)
    fail_after = dist.fail_after_shards() if cache is not None else None
    written = [0]
    unwritable: list[OSError] = []

    def on_shard(shard: Shard) -> None:
        stored = False
        if cache is not None and not unwritable:
            try:
                cache.store_shard(key, shard.range, *shard.to_payload())
                stored = True
            except OSError as exc:  # keep going without resumability, as the cache does
                unwritable.append(exc)
                warnings.warn(f"could not write feature shards under {cache.root} ({exc}); "
                              "continuing without them", CacheWarning, stacklevel=2)
        if sums is not None:
            have[shard.range.index] = reduce(shard)
        elif keep or not stored:
            have[shard.range.index] = shard
        if stored:
            written[0] += 1
            if fail_after is not None and written[0] >= fail_after:
                raise RuntimeError(f"${dist.FAIL_AFTER_ENV}={fail_after}: stopping after "
                                   f"{written[0]} shards (test hook)")

    log.info("%s: rank %d extracts %d of its %d shards (%d reused)", src.arg, dist.rank(),
             len(todo), len(mine), len(mine) - len(todo))
    if todo:
        extract(src, encoder if encoder is not None else _build(options),
                batch_size=options.batch_size, device=device,
                workers=options.workers, precision=options.precision,
                skip_bad=options.skip_bad, quiet=options.quiet or not dist.is_main(),
                shards=todo, on_shard=on_shard, one_buffer=keep and sums is None)
    return have, {"extracted": len(todo), "reused": len(mine) - len(todo)}


def _collect(plan: list, key: str, cache: FeatureCache | None,
             have: dict[int, Shard]) -> dict[int, Shard]:
    """Bring every shard to rank 0: from the (shared) cache folder, else over the network.

    Rank 0 first reads the other ranks' shard files it can see (a shared folder); the rest
    are sent with ``gather_object``, one shard per rank per round.
    """
    if not dist.active():
        return have
    me, world = dist.rank(), dist.world_size()
    missing: list[int] = []
    if me == 0:
        for rng in plan:
            if rng.index in have:
                continue
            shard = cache.load_shard(key, rng, parse=Shard.from_payload) if cache is not None else None
            if shard is not None:
                have[rng.index] = shard
            else:
                missing.append(rng.index)
    missing = dist.broadcast(missing)
    per_rank = [[i for i in missing if dist.owner_of(i, world) == r] for r in range(world)]
    for j in range(max(len(p) for p in per_rank)):
        payload = None
        if j < len(per_rank[me]):
            index = per_rank[me][j]
            payload = have.pop(index, None)
            if payload is None and cache is not None:
                payload = cache.load_shard(key, plan[index], parse=Shard.from_payload)
        received = dist.gather(payload)
        if me == 0:
            for shard in received:
                if shard is not None:
                    have[shard.range.index] = shard
    return have


def _extract(src: Source, options: ExtractOptions, identity: EncoderIdentity) -> FeatureSet:
    t0 = time.perf_counter()
    encoder = _build(options)
    fs = extract(src, encoder, batch_size=options.batch_size, device=options.device,
                 workers=options.workers, precision=options.precision,
                 skip_bad=options.skip_bad, quiet=options.quiet)
    _annotate(fs, src, options, identity, time.perf_counter() - t0)
    return fs


def _annotate(fs: FeatureSet, src: Source, options: ExtractOptions, identity: EncoderIdentity,
              seconds: float) -> None:
    fs.meta.update(encoder=identity.as_dict(), precision=options.precision,
                   extract_s=round(seconds, 4), versions=versions())
    if src.classes:
        fs.meta["classes"] = list(src.classes)


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
    if isinstance(src, SampledSource):
        meta["source"]["sampled_from"] = src.sampled_from
    fs.source = src.arg
    fs.files = [src.locators[i] for i in rows] if fs.has_samples else None
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
