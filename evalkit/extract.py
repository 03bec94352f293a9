"""The extraction engine: images of a Source -> every output of an encoder, in one pass.

DataLoader workers read, hash, decode, convert and resize (as the encoder's ``Preprocess``
says); the main process moves each batch to the device (pinned memory, non-blocking copies on
CUDA) and runs the encoder under ``torch.inference_mode`` (and autocast for bf16/fp16). Outputs
are written in source order into preallocated float32 CPU arrays, so the result does not depend
on the batch size or the number of workers (torch-fidelity's batch-size-independence property).
"""
from __future__ import annotations

import logging
import sys
import time
import warnings
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evalkit.errors import InputError
from evalkit.featureset import FeatureSet
from evalkit.imageio import prepare
from evalkit.sources import Source, content_fingerprint

log = logging.getLogger("evalkit")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MAX_SKIP_WARNINGS = 20


class BadImageWarning(UserWarning):
    """An unreadable image was skipped (``skip_bad``)."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as torch reads it.

    Raises:
        InputError: an unknown device string, or a CUDA device that is not available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device}: not a device (auto | cpu | cuda[:i])") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA devices")
    return dev


class _Images(Dataset):
    """Index -> (index, 3×H×W float32 or None, sha256 hex, is_jpeg, error message or None)."""

    def __init__(self, source: Source, preprocess):
        self.source = source
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        try:
            rgb, digest, jpeg = self.source.load_rgb(i)
            return i, prepare(rgb, self.preprocess), digest, jpeg, None
        except InputError as exc:
            return i, None, None, False, str(exc)


def _collate(items) -> dict[str, Any]:
    """Group the good images of a batch by shape (one group unless sizes differ)."""
    groups: dict[tuple[int, ...], list] = {}
    for i, arr, _, _, err in items:
        if err is None:
            groups.setdefault(arr.shape, []).append((i, arr))
    return {
        "index": [it[0] for it in items],
        "digest": [it[2] for it in items],
        "jpeg": [it[3] for it in items],
        "error": [it[4] for it in items],
        "groups": [(torch.tensor([i for i, _ in g]), torch.from_numpy(np.stack([a for _, a in g])))
                   for g in groups.values()],
    }


def extract(source: Source, encoder: torch.nn.Module, *, batch_size: int = 64,
            device: str | torch.device = "auto", workers: int = 0, precision: str = "fp32",
            skip_bad: bool = False, quiet: bool = False) -> FeatureSet:
    """Run ``encoder`` over every image of ``source`` once and keep all of its outputs.

    Args:
        source: a resolved image source (:func:`evalkit.sources.resolve_source`).
        encoder: an :class:`evalkit.encoders.Encoder` (``preprocess``, dict-returning forward).
        batch_size: images per forward pass (results do not depend on it).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``.
        workers: DataLoader worker processes (0: decode in this process).
        precision: ``fp32``, or ``bf16``/``fp16`` autocast (outputs are stored as float32).
        skip_bad: warn about and skip unreadable images instead of raising.
        quiet: no progress bar.

    Returns:
        A FeatureSet with one float32 array per encoder output, ``labels`` and ``files``
        (locators) of the kept images, and ``meta`` with ``n_skipped``, ``skipped``
        (locators), ``skipped_reasons``, ``kept`` (source indices, None when all kept),
        ``content_fingerprint``, ``jpeg`` and ``timing`` = {data_wait_s, forward_s, total_s}.

    Raises:
        InputError: an unreadable image (without ``skip_bad``), or no readable image at all.
    """
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: use fp32, bf16 or fp16")
    if source.kind == "features":
        raise InputError(f"{source.arg}: a feature file has no images to encode")
    if not skip_bad and source.bad:
        first = min(source.bad)
        raise InputError(f"{source.display(first)}: {source.bad[first]}")
    dev = resolve_device(device)
    n = len(source)
    t_start = time.perf_counter()
    source.open()
    encoder = encoder.to(dev).eval()
    loader = _loader(source, encoder.preprocess, batch_size, workers, dev)
    state = _State(n)
    autocast = (torch.autocast(device_type=dev.type, dtype=PRECISIONS[precision])
                if PRECISIONS[precision] is not None else nullcontext())
    from tqdm.auto import tqdm

    bar = tqdm(total=n, unit="img", disable=quiet, file=sys.stderr, dynamic_ncols=True,
               desc=f"{getattr(encoder, 'name', '') or 'encode'} {source.arg}", leave=False)
    try:
        batches = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            state.data_wait += time.perf_counter() - t0
            state.record_items(batch, source, skip_bad)
            for index, images in batch["groups"]:
                t1 = time.perf_counter()
                with torch.inference_mode(), autocast:
                    out = encoder(images.to(dev, non_blocking=True))
                state.store(index.numpy(), out, encoder)
                state.forward += time.perf_counter() - t1
            bar.update(len(batch["index"]))
    finally:
        bar.close()
    return state.finish(source, time.perf_counter() - t_start)


def _loader(source: Source, preprocess, batch_size: int, workers: int,
            dev: torch.device) -> DataLoader:
    n_batches = -(-len(source) // batch_size)
    workers = max(0, min(int(workers), n_batches))
    return DataLoader(_Images(source, preprocess), batch_size=batch_size, shuffle=False,
                      num_workers=workers, collate_fn=_collate,
                      pin_memory=dev.type == "cuda", drop_last=False,
                      prefetch_factor=4 if workers else None)


class _State:
    """Preallocated outputs and bookkeeping of one extraction."""

    def __init__(self, n: int):
        self.n = n
        self.arrays: dict[str, np.ndarray] | None = None
        self.ok = np.zeros(n, dtype=bool)
        self.digests: list[str | None] = [None] * n
        self.jpeg = False
        self.skipped: list[tuple[int, str]] = []
        self.data_wait = 0.0
        self.forward = 0.0

    def record_items(self, batch: dict[str, Any], source: Source, skip_bad: bool) -> None:
        for i, digest, jpeg, err in zip(batch["index"], batch["digest"], batch["jpeg"],
                                        batch["error"]):
            if err is None:
                self.digests[i] = digest
                self.jpeg |= bool(jpeg)
                continue
            if not skip_bad:
                raise InputError(f"{err} (pass --skip-bad to skip unreadable images)")
            self.skipped.append((i, err))
            if len(self.skipped) <= MAX_SKIP_WARNINGS:
                warnings.warn(f"skipping unreadable image {err}", BadImageWarning, stacklevel=4)

    def store(self, index: np.ndarray, out: Any, encoder) -> None:
        name = getattr(encoder, "name", "") or type(encoder).__name__
        if not isinstance(out, dict) or "features" not in out:
            raise InputError(f"encoder {name}: forward must return a dict with 'features'")
        if self.arrays is None:
            self.arrays = {}
            for key, value in out.items():
                if value.ndim != 2:
                    raise InputError(f"encoder {name}: output '{key}' has shape "
                                     f"{tuple(value.shape)}, expected B×D")
                self.arrays[key] = np.zeros((self.n, value.shape[1]), dtype=np.float32)
        for key, value in out.items():
            target = self.arrays.get(key)
            if target is None or tuple(value.shape) != (len(index), target.shape[1]):
                raise InputError(f"encoder {name}: output '{key}' has shape "
                                 f"{tuple(value.shape)}, expected ({len(index)}, "
                                 f"{None if target is None else target.shape[1]})")
            target[index] = value.detach().float().cpu().numpy()
        self.ok[index] = True

    def finish(self, source: Source, total: float) -> FeatureSet:
        if len(self.skipped) > MAX_SKIP_WARNINGS:
            warnings.warn(f"skipped {len(self.skipped)} unreadable images in {source.arg} "
                          f"(only the first {MAX_SKIP_WARNINGS} were listed)", BadImageWarning,
                          stacklevel=3)
        if self.arrays is None or not self.ok.any():
            raise InputError(f"{source.arg}: none of its {self.n} images could be read")
        kept = np.flatnonzero(self.ok)
        everything = len(kept) == self.n
        arrays = self.arrays if everything else {k: v[kept] for k, v in self.arrays.items()}
        labels = None if source.labels is None else source.labels[kept]
        skipped = sorted(self.skipped)
        meta = {
            "n_skipped": len(skipped),
            "skipped": [source.locators[i] for i, _ in skipped],
            "skipped_reasons": [err for _, err in skipped],
            "kept": None if everything else kept.tolist(),
            "content_fingerprint": content_fingerprint(
                [source.names[i] for i in kept], [self.digests[i] for i in kept]),
            "jpeg": self.jpeg,
            "timing": {"data_wait_s": round(self.data_wait, 4),
                       "forward_s": round(self.forward, 4), "total_s": round(total, 4)},
        }
        return FeatureSet(arrays, labels, meta, source.arg, [source.locators[i] for i in kept])
