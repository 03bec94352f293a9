"""The extraction engine: images of a Source -> every output of an encoder, in one pass.

DataLoader workers read, hash, decode and convert each image to H×W×3 uint8. On CUDA (or with
``resize_on="device"``) the batches travel as uint8 (pinned memory; the next batch's copy runs
on its own stream while the current batch is encoded) and the clean resize of each
``Preprocess`` runs on the device (:mod:`evalkit.images.resize`); on CPU the workers also resize, with
PIL, in parallel with the network. The main process runs every encoder on its input under
``torch.inference_mode`` (and autocast for bf16/fp16); several encoders share one decode and
one resize per distinct ``Preprocess``. Outputs
are written in source order into preallocated float32 CPU arrays, so the result does not depend
on the batch size or the number of workers (torch-fidelity's batch-size-independence property).

A source with an ``encoder_batches(ranges, device, preprocesses)`` method (a generator,
:mod:`evalkit.features.generate`) makes its own batches, in the loader's format, instead of a
DataLoader reading files: they enter the same engine (device resize, every encoder, rows
stored by index).

Sharded extraction (:func:`extract` with ``shards=``): the images are cut into contiguous
:class:`~evalkit.features.distributed.ShardRange` ranges (the same for any number of processes); one
DataLoader runs over the requested shards back to back, and each shard is handed to
``on_shard`` as a :class:`Shard` as soon as its last image is encoded, so the caller can write
it to disk (an interrupted run then resumes from the shards written). :func:`assemble` joins
shards into the FeatureSet that a plain :func:`extract` returns. A single process extracting
every shard forms exactly the batches of a plain run, so its features are bit-identical.
"""
from __future__ import annotations

import logging
import sys
import time
import warnings
from bisect import bisect_right
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evalkit.devices import resolve_device
from evalkit.errors import BadImageWarning, DeviceMemoryError, InputError
from evalkit.features.distributed import ShardRange
from evalkit.features.featureset import FeatureSet
from evalkit.images.resize import prepare, resize_batch
from evalkit.images.sources import SampledSource, Source, content_fingerprint

log = logging.getLogger("evalkit")
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MAX_SKIP_WARNINGS = 20


@contextmanager
def precision_context(device: torch.device, precision: str):
    """The numeric mode of a forward pass: autocast for ``bf16``/``fp16``; for ``fp32``,
    true fp32 on CUDA (TF32 off for matmuls and cuDNN convolutions, whose torch default is on
    for convolutions), so outputs match a CPU run to float rounding; ``tf32``: TF32 on for
    both on CUDA (pytorch-fid's and torch-fidelity's numbers on a GPU with torch's defaults
    have TF32 convolutions), fp32 elsewhere. Global flags are restored on exit."""
    dtype = PRECISIONS[precision]
    if dtype is not None:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
        return
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class _Images(Dataset):
    """Index -> (index, payload or None, sha256 hex, is_jpeg, error message or None).

    ``preprocesses`` None: the payload is the decoded H×W×3 uint8 image (resized later, on the
    device, by :mod:`evalkit.images.resize`). Otherwise a tuple with one 3×H'×W' float32 array per
    Preprocess (:func:`evalkit.images.resize.prepare`, PIL's resize in this worker).
    """

    def __init__(self, source: Source, preprocesses: tuple | None):
        self.source = source
        self.preprocesses = preprocesses

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        try:
            rgb, digest, jpeg = self.source.load_rgb(i)
            if self.preprocesses is None:
                return i, rgb, digest, jpeg, None
            return i, tuple(prepare(rgb, pp) for pp in self.preprocesses), digest, jpeg, None
        except InputError as exc:
            return i, None, None, False, str(exc)


def _shape(payload) -> tuple:
    return payload.shape if isinstance(payload, np.ndarray) else tuple(a.shape for a in payload)


def _stack(arrays: list) -> torch.Tensor | tuple[torch.Tensor, ...]:
    if isinstance(arrays[0], np.ndarray):
        return torch.from_numpy(np.stack(arrays))
    return tuple(torch.from_numpy(np.stack(parts)) for parts in zip(*arrays))


def _collate(items) -> dict[str, Any]:
    """Group the good images of a batch by shape (one group unless sizes differ), each group
    in batch order: (source indices, N×H×W×3 uint8 or a tuple of N×3×S×S float32)."""
    groups: dict[tuple, list] = {}
    for i, payload, _, _, err in items:
        if err is None:
            groups.setdefault(_shape(payload), []).append((i, payload))
    return {
        "index": [it[0] for it in items],
        "digest": [it[2] for it in items],
        "jpeg": [it[3] for it in items],
        "error": [it[4] for it in items],
        "groups": [(torch.tensor([i for i, _ in g]), _stack([a for _, a in g]))
                   for g in groups.values()],
    }


@dataclass
class Shard:
    """The encoder outputs of one contiguous range ``[start, stop)`` of a source's images.

    Attributes:
        range: which shard (index, count, start, stop).
        arrays: output name -> float32 array of the kept rows, in source order (``{}`` when no
            image of the shard could be read before any output shape was known).
        kept: source indices of the kept rows, or None when every image was kept.
        digests: sha256 hex of each kept image's bytes (for the content fingerprint).
        skipped: (source index, reason) of each unreadable image skipped (``skip_bad``).
        jpeg: whether any kept image was a JPEG.
        timing: seconds spent on this shard: ``data_wait_s``, ``forward_s``, ``total_s``.
    """

    range: ShardRange
    arrays: dict[str, np.ndarray]
    kept: list[int] | None
    digests: list[str]
    skipped: list[tuple[int, str]]
    jpeg: bool
    timing: dict[str, float]

    @property
    def n_kept(self) -> int:
        return len(self.digests)

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, JSON-able meta): what a shard file stores."""
        r = self.range
        meta = {"shard": [r.index, r.count, r.start, r.stop], "kept": self.kept,
                "digests": list(self.digests), "skipped": [[i, e] for i, e in self.skipped],
                "jpeg": bool(self.jpeg), "timing": dict(self.timing)}
        return dict(self.arrays), meta

    @classmethod
    def from_payload(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Shard:
        """Inverse of :meth:`to_payload`; ValueError/KeyError/TypeError when malformed."""
        index, count, start, stop = (int(v) for v in meta["shard"])
        kept = meta["kept"]
        digests = [str(d) for d in meta["digests"]]
        n_rows = stop - start if kept is None else len(kept)
        if len(digests) != n_rows or any(a.ndim != 2 or a.shape[0] != n_rows
                                         for a in arrays.values()):
            raise ValueError("row counts disagree")
        return cls(ShardRange(index, count, start, stop), dict(arrays),
                   None if kept is None else [int(i) for i in kept], digests,
                   [(int(i), str(e)) for i, e in meta["skipped"]], bool(meta["jpeg"]),
                   {k: float(v) for k, v in meta["timing"].items()})


def extract(source: Source, encoder: torch.nn.Module | Sequence[torch.nn.Module], *,
            batch_size: int = 64, device: str | torch.device = "auto", workers: int = 0,
            precision: str = "fp32", skip_bad: bool = False, quiet: bool = False,
            shards: Sequence[ShardRange] | None = None,
            on_shard: Callable[[Any], None] | None = None, resize_on: str = "auto",
            compile: bool = False, one_buffer: bool = False) -> Any:
    """Run ``encoder`` over every image of ``source`` (or of ``shards``) once, keep all outputs.

    Args:
        source: a resolved image source (:func:`evalkit.images.sources.resolve_source`).
        encoder: an :class:`evalkit.encoders.Encoder` (``preprocess``, dict-returning forward),
            or a list of them: every image is then read and decoded once, resized once per
            distinct ``Preprocess``, and run through each encoder (outputs per encoder, each
            equal to a separate run's).
        batch_size: images per forward pass (results do not depend on it). On CUDA an
            out-of-memory error halves it (one warning) and the batch is run again; at 1
            image still out of memory: :class:`~evalkit.errors.DeviceMemoryError`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``.
        workers: DataLoader worker processes (0: decode in this process).
        precision: ``fp32`` (strict on CUDA), ``tf32`` (TF32 on CUDA), or ``bf16``/``fp16``
            autocast (outputs are stored as float32); see :func:`precision_context`. The clean
            resize always runs in float32 without TF32.
        skip_bad: warn about and skip unreadable images instead of raising.
        quiet: no progress bar.
        shards: extract only these ranges (sorted by ``start``, not overlapping), as
            :class:`Shard` objects instead of a FeatureSet.
        on_shard: with ``shards``, receives each :class:`Shard` (with a list of encoders: the
            list of each encoder's Shard of that range) as soon as its last image is encoded
            (the shards are then not kept here).
        resize_on: ``"device"``: workers only read and decode, batches travel as uint8 and the
            clean resize runs on the device (:mod:`evalkit.images.resize`, two matrix products per
            size group); ``"workers"``: workers resize with PIL (:func:`evalkit.images.resize.prepare`)
            and batches travel as float32; ``"auto"``: device on CUDA, workers on CPU (there
            the workers' PIL resize runs in parallel with the network, which is the bottleneck).
            Both give the same features to float rounding (≤ 1e-4 on the [0, 255] pixels).
        compile: run each encoder through ``torch.compile`` (experimental; off by default).
        one_buffer: with ``shards``, the shards' rows are consecutive views of one array per
            output, which :func:`assemble` then returns without copying (for a caller that
            keeps every shard; otherwise each shard's rows are freed with it).

    Returns:
        Without ``shards``: a FeatureSet with one float32 array per encoder output, ``labels``
        and ``files`` (locators) of the kept images, and ``meta`` with ``n_skipped``,
        ``skipped`` (locators), ``skipped_reasons``, ``kept`` (source indices, None when all
        kept), ``content_fingerprint``, ``jpeg`` and ``timing`` = {data_wait_s, forward_s,
        total_s}. With ``shards``: the extracted Shards in the order given, or None when
        ``on_shard`` received them. With a list of encoders: a list of those, one per encoder.

    Raises:
        InputError: an unreadable image (without ``skip_bad``), or no readable image at all.
    """
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: use fp32, tf32, bf16 or fp16")
    if resize_on not in ("auto", "device", "workers"):
        raise ValueError(f"resize_on={resize_on!r}: use auto, device or workers")
    if source.kind == "features":
        raise InputError(f"{source.arg}: a feature file has no images to encode")
    if not skip_bad and source.bad:
        first = min(source.bad)
        raise InputError(f"{source.display(first)}: {source.bad[first]}")
    several = isinstance(encoder, (list, tuple))
    encoders = list(encoder) if several else [encoder]
    if not encoders:
        raise ValueError("extract needs at least one encoder")
    t_start = time.perf_counter()
    whole = shards is None
    ranges = [ShardRange(0, 1, 0, len(source))] if whole else list(shards)
    done: list[list[Shard]] = [[] for _ in encoders]

    def deliver(per_encoder: list[Shard]) -> None:
        if on_shard is not None and not whole:
            on_shard(per_encoder if several else per_encoder[0])
        else:
            for kept, shard in zip(done, per_encoder):
                kept.append(shard)

    if ranges:
        _run(source, encoders, ranges, deliver, batch_size=batch_size, device=device,
             workers=workers, precision=precision, skip_bad=skip_bad, quiet=quiet,
             resize_on=resize_on, compile=compile, one_buffer=one_buffer)
    if not whole:
        if on_shard is not None:
            return None
        return done if several else done[0]
    total = time.perf_counter() - t_start
    sets = [assemble(source, shards_of, total_s=total) for shards_of in done]
    return sets if several else sets[0]


def _run(source: Source, encoders: list[torch.nn.Module], ranges: list[ShardRange],
         deliver: Callable[[list[Shard]], None], *, batch_size: int, device, workers: int,
         precision: str, skip_bad: bool, quiet: bool, resize_on: str, compile: bool,
         one_buffer: bool = False) -> None:
    """One DataLoader over ``ranges`` back to back; ``deliver`` as each range completes."""
    dev = resolve_device(device)
    starts = [r.start for r in ranges]
    if any(b.start < a.stop for a, b in zip(ranges, ranges[1:])):
        raise ValueError("shards must be sorted by start and must not overlap")
    indices = [i for r in ranges for i in range(r.start, r.stop)]
    source.open()
    encoders = [e.to(dev).eval() for e in encoders]
    keys = [_resize_key(e.preprocess) for e in encoders]
    distinct = list(dict.fromkeys(keys))  # distinct resizes, in encoder order
    which = [distinct.index(k) for k in keys]
    preprocesses = [encoders[keys.index(k)].preprocess for k in distinct]
    on_device = resize_on == "device" or (resize_on == "auto" and dev.type == "cuda")
    make_batches = getattr(source, "encoder_batches", None)  # a generator source
    if make_batches is None:
        loader = _loader(source, None if on_device else tuple(preprocesses), indices,
                         batch_size, workers, dev)
    runs = [_Run(e, ranges, one_buffer) for e in encoders]
    engine = _Engine(encoders, which, preprocesses, dev, precision, on_device, compile)
    from tqdm.auto import tqdm

    name = ",".join(getattr(e, "name", "") or "encode" for e in encoders)
    bar = tqdm(total=len(indices), unit="img", disable=quiet, file=sys.stderr,
               dynamic_ncols=True, leave=False, desc=f"{name} {source.arg}")
    try:
        batches = (make_batches(ranges, dev, None if on_device else tuple(preprocesses))
                   if make_batches is not None else _prefetch(iter(loader), dev))
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            wait = time.perf_counter() - t0
            for k, run in enumerate(runs):
                run.data_wait += wait
                run.record(batch, starts, skip_bad, warn=k == 0)
            for index, data in batch["groups"]:
                engine.run_group(index.numpy(), data, runs, starts)
            ready = [run.advance(len(batch["index"])) for run in runs]
            for per_encoder in zip(*ready):
                deliver(list(per_encoder))
            bar.update(len(batch["index"]))
    finally:
        bar.close()


def _resize_key(pp) -> tuple:
    """What the resize depends on (mean/std are applied inside each encoder)."""
    return pp.size, pp.resize, bool(pp.crop), getattr(pp, "crop_from", 0)


def _to_device(data, dev: torch.device):
    if isinstance(data, tuple):
        return tuple(t.to(dev, non_blocking=True) for t in data)
    return data.to(dev, non_blocking=True)


def _prefetch(batches, dev: torch.device):
    """Yield the loader's batches with their image groups on ``dev``. On CUDA the host→device
    copy of the next batch is issued on its own stream before the current batch is handed
    out, so it overlaps the current forward pass (the loader pins the host memory)."""
    if dev.type != "cuda":
        for batch in batches:
            batch["groups"] = [(i, _to_device(d, dev)) for i, d in batch["groups"]]
            yield batch
        return
    stream = torch.cuda.Stream(dev)

    def issue(batch):
        with torch.cuda.stream(stream):
            batch["groups"] = [(i, _to_device(d, dev)) for i, d in batch["groups"]]
        return batch

    pending = None
    for batch in batches:
        batch = issue(batch)
        if pending is not None:
            yield pending
        torch.cuda.current_stream(dev).wait_stream(stream)
        for _, data in batch["groups"]:
            for t in data if isinstance(data, tuple) else (data,):
                t.record_stream(torch.cuda.current_stream(dev))
        pending = batch
    if pending is not None:
        yield pending


class _Engine:
    """Per image group: resize once per distinct Preprocess, run every encoder, store rows.

    On CUDA: inputs in channels_last; an out-of-memory error halves the rows per forward pass
    (one warning) and the group is run again from its start (rows are stored by index, so a
    rerun overwrites them with the same values)."""

    def __init__(self, encoders, which: list[int], preprocesses: list, dev: torch.device,
                 precision: str, on_device: bool, compile: bool):
        self.fns = [torch.compile(e) if compile else e for e in encoders]
        self.which = which
        self.preprocesses = preprocesses
        self.dev = dev
        self.precision = precision
        self.on_device = on_device
        self.max_rows: int | None = None
        self.resize_s = 0.0

    def run_group(self, index: np.ndarray, data, runs: list[_Run], starts: list[int]) -> None:
        """Encode one image group; on out-of-memory halve the rows per pass and rerun it.

        Bounded: each retry at least halves the rows, so a group is tried at most
        ``floor(log2(len(index))) + 1`` times; when one image per pass still runs out of
        memory, :class:`~evalkit.errors.DeviceMemoryError` names the sizes tried."""
        tried: list[int] = []
        for _ in range(max(1, len(index)).bit_length() + 1):
            rows = min(self.max_rows or len(index), len(index))
            tried.append(rows)
            try:
                for lo in range(0, len(index), rows):
                    self._chunk(index[lo:lo + rows], _rows(data, lo, lo + rows), runs, starts)
                return
            except torch.cuda.OutOfMemoryError as exc:
                if self.dev.type == "cuda":
                    torch.cuda.empty_cache()
                if rows <= 1:
                    raise DeviceMemoryError(
                        f"out of device memory ({self.dev}) even at 1 image per batch (tried "
                        f"{', '.join(map(str, tried))}): free the device or use another "
                        "--device") from exc
                self.max_rows = rows // 2
                warnings.warn(f"out of device memory at {rows} images per batch; "
                              f"continuing with {self.max_rows}", ResourceWarning, stacklevel=2)
        raise AssertionError(f"batch halving did not end after sizes {tried}")  # unreachable

    def _chunk(self, index: np.ndarray, data, runs: list[_Run], starts: list[int]) -> None:
        inputs: dict[int, torch.Tensor] = {}
        for k, fn in enumerate(self.fns):
            t1 = time.perf_counter()
            j = self.which[k]
            if j not in inputs:
                with torch.inference_mode():
                    x = (resize_batch(data, self.preprocesses[j]) if self.on_device
                         else data[j].float())
                if self.dev.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                inputs[j] = x
            with torch.inference_mode(), precision_context(self.dev, self.precision):
                out = fn(inputs[j])
            runs[k].store(index, out, starts)
            runs[k].forward += time.perf_counter() - t1


def _rows(data, lo: int, hi: int):
    if isinstance(data, tuple):
        return tuple(t[lo:hi] for t in data)
    return data[lo:hi]


def _loader(source: Source, preprocesses: tuple | None, indices: list[int], batch_size: int,
            workers: int, dev: torch.device) -> DataLoader:
    n_batches = -(-len(indices) // batch_size)
    workers = max(0, min(int(workers), n_batches))
    return DataLoader(_Images(source, preprocesses), batch_size=batch_size, sampler=indices,
                      num_workers=workers, collate_fn=_collate,
                      pin_memory=dev.type == "cuda", drop_last=False,
                      prefetch_factor=(2 if dev.type == "cuda" else 4) if workers else None)


class _Run:
    """Output shapes, timing and the per-shard states of one extraction pass.

    ``one_buffer``: the rows of every range live in one preallocated array per output, each
    shard's arrays a consecutive view of it, so :func:`assemble` joins shards that are all
    kept without copying a row (for callers that keep every shard; a caller that writes
    shards out and drops them gets one array per shard, freed with it)."""

    def __init__(self, encoder, ranges: list[ShardRange], one_buffer: bool = False):
        self.name = getattr(encoder, "name", "") or type(encoder).__name__
        self.ranges = ranges
        self.one_buffer = one_buffer
        self.buffers: dict[str, np.ndarray] | None = None
        self.offsets = dict(zip((r.index for r in ranges),
                                np.cumsum([0] + [r.stop - r.start for r in ranges]).tolist()))
        self.states = [_ShardState(r) for r in ranges]
        self.dims: dict[str, int] | None = None
        self.data_wait = 0.0
        self.forward = 0.0
        self.ends = np.cumsum([r.stop - r.start for r in ranges]).tolist()
        self.rows_done = 0
        self.flushed = 0
        self.n_skipped = 0
        self.mark = (time.perf_counter(), 0.0, 0.0)

    def store(self, index: np.ndarray, out: Any, starts: list[int]) -> None:
        """Check the encoder's outputs and copy them (as float32) into the shards' rows."""
        if not isinstance(out, dict) or "features" not in out:
            raise InputError(f"encoder {self.name}: forward must return a dict with 'features'")
        if self.dims is None:
            for key, value in out.items():
                if value.ndim != 2:
                    raise InputError(f"encoder {self.name}: output '{key}' has shape "
                                     f"{tuple(value.shape)}, expected B×D")
            self.dims = {key: int(value.shape[1]) for key, value in out.items()}
        values = {}
        for key, value in out.items():
            dim = self.dims.get(key)
            if dim is None or tuple(value.shape) != (len(index), dim):
                raise InputError(f"encoder {self.name}: output '{key}' has shape "
                                 f"{tuple(value.shape)}, expected ({len(index)}, {dim})")
            values[key] = value.detach().float().cpu().numpy()
        if len(index) and index[-1] - index[0] == len(index) - 1 and \
                (len(index) < 2 or bool((np.diff(index) == 1).all())):
            # consecutive images (every generator batch, every file batch without a skipped
            # or odd-sized image): one slice per shard, no index arrays, no row gathers
            lo = int(index[0])
            sid = bisect_right(starts, lo) - 1
            pos = 0
            while pos < len(index):
                state = self.states[sid]
                take = min(len(index) - pos, state.range.stop - (lo + pos))
                state.store_slice(lo + pos, {k: v[pos:pos + take] for k, v in values.items()},
                                  self.dims, self)
                pos += take
                sid += 1
            return
        owner = np.searchsorted(np.asarray(starts), index, side="right") - 1
        for sid in np.unique(owner):
            rows = owner == sid
            self.states[sid].store(index[rows], {k: v[rows] for k, v in values.items()},
                                   self.dims, self)

    def rows_for(self, rng: ShardRange, dims: dict[str, int]) -> dict[str, np.ndarray]:
        """The (uninitialised) float32 output rows of shard ``rng``."""
        n = rng.stop - rng.start
        if not self.one_buffer:
            return {k: np.empty((n, d), dtype=np.float32) for k, d in dims.items()}
        if self.buffers is None:
            total = sum(r.stop - r.start for r in self.ranges)
            self.buffers = {k: np.empty((total, d), dtype=np.float32) for k, d in dims.items()}
        lo = self.offsets[rng.index]
        return {k: b[lo:lo + n] for k, b in self.buffers.items()}

    def record(self, batch: dict[str, Any], starts: list[int], skip_bad: bool,
               warn: bool = True) -> None:
        """Note each image's digest, or its error (raised, or skipped with a warning when
        ``warn``)."""
        for i, digest, jpeg, err in zip(batch["index"], batch["digest"], batch["jpeg"],
                                        batch["error"]):
            state = self.states[bisect_right(starts, i) - 1]
            if err is None:
                state.digests[i - state.range.start] = digest
                state.jpeg |= bool(jpeg)
                continue
            if not skip_bad:
                raise InputError(f"{err} (pass --skip-bad to skip unreadable images)")
            state.skipped.append((i, err))
            self.n_skipped += 1
            if warn and self.n_skipped <= MAX_SKIP_WARNINGS:
                warnings.warn(f"skipping unreadable image {err}", BadImageWarning, stacklevel=4)

    def advance(self, n_rows: int) -> list[Shard]:
        """``n_rows`` more images done; the shards that are now complete."""
        complete = []
        self.rows_done += n_rows
        while self.flushed < len(self.states) and self.ends[self.flushed] <= self.rows_done:
            now = time.perf_counter()
            t_mark, wait_mark, fwd_mark = self.mark
            timing = {"data_wait_s": self.data_wait - wait_mark,
                      "forward_s": self.forward - fwd_mark, "total_s": now - t_mark}
            self.mark = (now, self.data_wait, self.forward)
            shard = self.states[self.flushed].finish(timing, self.dims)
            self.states[self.flushed] = None  # free its buffers
            self.flushed += 1
            complete.append(shard)
        return complete


class _ShardState:
    """Preallocated outputs and bookkeeping of one shard during extraction."""

    def __init__(self, rng: ShardRange):
        self.range = rng
        n = rng.stop - rng.start
        self.arrays: dict[str, np.ndarray] | None = None
        self.ok = np.zeros(n, dtype=bool)
        self.digests: list[str | None] = [None] * n
        self.jpeg = False
        self.skipped: list[tuple[int, str]] = []

    def _allocate(self, dims: dict[str, int], run: _Run) -> dict[str, np.ndarray]:
        if self.arrays is None:
            self.arrays = run.rows_for(self.range, dims)
        return self.arrays

    def store(self, index: np.ndarray, values: dict[str, np.ndarray],
              dims: dict[str, int], run: _Run) -> None:
        arrays = self._allocate(dims, run)
        local = index - self.range.start
        for key, value in values.items():
            arrays[key][local] = value
        self.ok[local] = True

    def store_slice(self, start: int, values: dict[str, np.ndarray], dims: dict[str, int],
                    run: _Run) -> None:
        """Rows of the consecutive images ``start, start + 1, ...``: one slice copy each."""
        arrays = self._allocate(dims, run)
        lo = start - self.range.start
        hi = lo + len(next(iter(values.values())))
        for key, value in values.items():
            arrays[key][lo:hi] = value
        self.ok[lo:hi] = True

    def finish(self, timing: dict[str, float], dims: dict[str, int] | None) -> Shard:
        kept = np.flatnonzero(self.ok)
        everything = len(kept) == len(self.ok)
        if self.arrays is None:
            arrays = {k: np.zeros((0, d), np.float32) for k, d in (dims or {}).items()}
        else:
            arrays = self.arrays if everything else {k: v[kept] for k, v in self.arrays.items()}
        return Shard(self.range, arrays,
                     None if everything else (kept + self.range.start).tolist(),
                     [self.digests[i] for i in kept], sorted(self.skipped), self.jpeg, timing)


def assemble(source: Source, shards: Sequence[Shard], *, total_s: float | None = None,
             moments: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> FeatureSet:
    """Join the shards covering every image of ``source`` into one FeatureSet, in source order.

    The result is what :func:`extract` returns without ``shards`` (same arrays, labels,
    files and meta keys); ``timing`` sums the shards' data-wait and forward seconds, and
    ``total_s`` is ``total_s`` when given, else the sum of the shards' totals. The shards are
    consumed: each one's arrays are released once copied, so the peak memory is the result
    plus one shard (no copy at all when they are the views of one ``one_buffer`` extraction).

    ``moments``: the shards' rows were reduced to (mean, covariance) per array as they were
    extracted (their ``arrays`` may be empty): a statistics-only FeatureSet with these
    ``moments``, ``meta["n"]`` kept rows and the same provenance meta.

    Raises:
        InputError: the shards do not cover the source exactly, their outputs disagree, or
            none of the images could be read.
    """
    shards = sorted(shards, key=lambda s: s.range.start)
    n = len(source)
    edges = [0] + [s.range.stop for s in shards]
    if [s.range.start for s in shards] != edges[:-1] or edges[-1] != n:
        raise InputError(f"{source.arg}: the feature shards do not cover its {n} images "
                         "exactly (rerun with --no-cache)")
    skipped = sorted(sk for s in shards for sk in s.skipped)
    if len(skipped) > MAX_SKIP_WARNINGS:
        warnings.warn(f"skipped {len(skipped)} unreadable images in {source.arg} "
                      f"(only the first {MAX_SKIP_WARNINGS} were listed)", BadImageWarning,
                      stacklevel=3)
    full = [s for s in shards if s.n_kept]
    if not full:
        raise InputError(f"{source.arg}: none of its {n} images could be read")
    if moments is not None:  # the rows were reduced as they came: no arrays to join
        meta = _assembled_meta(source, shards, full, skipped, total_s)
        meta["n"] = sum(s.n_kept for s in full)
        meta["stats_only"] = True
        return FeatureSet({}, None, meta, source.arg, None, dict(moments))
    keys = list(full[0].arrays)
    for s in full:
        if list(s.arrays) != keys or any(s.arrays[k].shape[1] != full[0].arrays[k].shape[1]
                                         for k in keys):
            raise InputError(f"{source.arg}: feature shards hold different outputs "
                             "(rerun with --no-cache)")
    arrays = _join([s.arrays for s in full], keys)
    meta = _assembled_meta(source, shards, full, skipped, total_s)
    kept = _kept(full)
    labels = None if source.labels is None else source.labels[kept]
    prompts = getattr(source, "prompts", None)  # webdataset .txt/.json, a Parquet prompt column
    if prompts is not None:
        prompts = [prompts[i] for i in kept]
        prompts = prompts if all(isinstance(t, str) for t in prompts) else None  # all or none
    return FeatureSet(arrays, labels, meta, source.arg, [source.locators[i] for i in kept],
                      prompts=prompts)


def _kept(full: Sequence[Shard]) -> np.ndarray:
    parts = [np.arange(s.range.start, s.range.stop) if s.kept is None
             else np.asarray(s.kept, dtype=np.int64) for s in full]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _assembled_meta(source: Source, shards: Sequence[Shard], full: Sequence[Shard],
                    skipped: list, total_s: float | None) -> dict[str, Any]:
    kept = _kept(full)
    digests = [d for s in full for d in s.digests]
    timing = {k: sum(s.timing.get(k, 0.0) for s in shards)
              for k in ("data_wait_s", "forward_s", "total_s")}
    if total_s is not None:
        timing["total_s"] = total_s
    return {
        "n_skipped": len(skipped),
        "skipped": [source.locators[i] for i, _ in skipped],
        "skipped_reasons": [err for _, err in skipped],
        "kept": None if len(kept) == len(source) else kept.tolist(),
        # a sample (--nsample) records its whole source's, so records compare whatever the seed
        "content_fingerprint": (source.whole_fingerprint() if isinstance(source, SampledSource)
                                else content_fingerprint([source.names[i] for i in kept],
                                                         digests)),
        "jpeg": any(s.jpeg for s in shards),
        "timing": {k: round(v, 4) for k, v in timing.items()},
    }


def _join(parts: list[dict[str, np.ndarray]], keys: list[str]) -> dict[str, np.ndarray]:
    """Rows of ``parts`` stacked per key, releasing each part's arrays once it is copied."""
    if len(parts) == 1:
        return {k: parts[0][k] for k in keys}
    whole = {k: _one_buffer([p[k] for p in parts]) for k in keys}
    if all(v is not None for v in whole.values()):
        return whole
    total = sum(p[keys[0]].shape[0] for p in parts)
    out = {k: np.empty((total, parts[0][k].shape[1]), dtype=parts[0][k].dtype) for k in keys}
    row = 0
    for part in parts:
        m = part[keys[0]].shape[0]
        for k in keys:
            out[k][row:row + m] = part[k]
        part.clear()
        row += m
    return out


def _one_buffer(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The array that ``arrays`` are consecutive row views of, covering it whole (the
    shards of one extraction with ``one_buffer``), else None."""
    base = arrays[0].base
    if not isinstance(base, np.ndarray) or base.ndim != 2 or not base.flags.c_contiguous:
        return None
    row = base.strides[0]
    at = base.__array_interface__["data"][0]
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or \
                a.__array_interface__["data"][0] != at or a.shape[1] != base.shape[1]:
            return None
        at += a.shape[0] * row
    return base if at == base.__array_interface__["data"][0] + base.shape[0] * row else None

