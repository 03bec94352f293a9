"""A generator as a source: ``fn(batch_size, *, seed, labels=None)`` -> images, encoded as made.

No image is written or decoded: each batch the generator returns is quantised as an 8-bit PNG
writer would (``round(x·255)`` for floats in [0, 1]; uint8 as is) and handed to the
extraction engine (:func:`evalkit.features.extract.extract`) in the format its DataLoader
produces, so it takes the same path as the same images saved as PNG files: on the CPU the
clean PIL resize per image (:func:`evalkit.images.resize.prepare`), on CUDA the device resize
(:func:`evalkit.images.resize.resize_batch`) without leaving the GPU, then every encoder.

Determinism across process counts (EDM2's ``generate_images.py`` seeds each image; here each
batch): the samples are cut into the shards of :func:`evalkit.features.distributed.shard_ranges`
(boundaries depend on N only) and each shard into batches of ``batch_size`` from its start.
The batch starting at image ``i`` gets the seed ``SeedSequence(seed, spawn_key=("sample",
i))``, and the labels of all N samples are drawn once from the ``("labels",)`` child, so
the same ``seed`` gives the same images whichever rank samples which shard.

Labels (class-conditional models): ``random`` draws each label uniformly (ADM's and EDM2's
samplers); ``balanced`` gives every class exactly N / classes samples (MAR's evaluation and
other ImageNet papers), shuffled with the label stream.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from evalkit.errors import InputError
from evalkit.features.distributed import ShardRange, shard_ranges
from evalkit.images.resize import prepare_batch
from evalkit.images.sources.base import Source, hash_lines

LABEL_MODES = ("random", "balanced")
_SLACK = 0.5 / 255  # float error within half a quantisation step rounds like a clamp


def _word(part: str | int) -> int:
    if isinstance(part, int):
        return part & 0xFFFFFFFF
    return int.from_bytes(hashlib.sha256(part.encode("utf-8")).digest()[:4], "little")


def batch_seed(seed: int, start: int) -> int:
    """The seed of the batch whose first image is image ``start`` (a 63-bit int)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(_word("sample"), _word(int(start))))
    state = ss.generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def draw_labels(mode: str | None, n: int, num_classes: int | None, seed: int
                ) -> np.ndarray | None:
    """The class label of each of ``n`` samples (int64), or None without ``mode``.

    Raises:
        InputError: an unknown mode, no class count, or ``balanced`` with ``n`` not a
            multiple of the class count.
    """
    if mode is None:
        return None
    if mode not in LABEL_MODES:
        raise InputError(f"--labels {mode}: use random or balanced")
    if not num_classes or num_classes < 1:
        raise InputError(f"--labels {mode} needs the number of classes (--num-classes, or a "
                         "num_classes attribute on the generator)")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_word("labels"),)))
    if mode == "random":
        return rng.integers(0, num_classes, size=n, dtype=np.int64)
    if n % num_classes:
        raise InputError(f"--labels balanced: {n} samples do not split evenly over "
                         f"{num_classes} classes (use a multiple of {num_classes})")
    return rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), n // num_classes))


def load_generator(spec: str) -> Callable[..., Any]:
    """``pkg.module:function`` (or ``pkg.module:obj.attr``) -> the callable it names.

    Raises:
        InputError: a malformed spec, a module that does not import, a missing attribute.
    """
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise InputError(f"--generator {spec}: expected pkg.module:function")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"--generator {spec}: cannot import {module_name} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"--generator {spec}: {module_name} has no attribute {attr}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"--generator {spec}: {attr} is not callable")
    return obj


def generator_name(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a callable (its class's for a callable object)."""
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"


def to_uint8_nhwc(batch: Any, where: str = "generator") -> torch.Tensor:
    """B×3×H×W uint8, or float in [0, 1] -> B×H×W×3 uint8 on the batch's device (floats
    rounded as an 8-bit PNG writer rounds them).

    Raises:
        InputError: not a B×3×H×W tensor, another dtype, non-finite values, or floats outside
            [0, 1] (a 0-255 or [-1, 1] batch would otherwise score silently wrong).
    """
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
        shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
        raise InputError(f"{where}: expected a B×3×H×W image tensor, got {shape}")
    x = batch.detach()
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise InputError(f"{where}: a {x.dtype} batch; return uint8 (0-255) or floats in "
                             "[0, 1]")
        if not bool(torch.isfinite(x).all()):
            raise InputError(f"{where}: the batch has NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -_SLACK or hi > 1 + _SLACK:
            hint = ("a [-1, 1] batch: use (x + 1) / 2" if lo < -_SLACK and hi <= 1 + _SLACK
                    else "a 0-255 batch: use x / 255 or x.to(torch.uint8)")
            raise InputError(f"{where}: float images must lie in [0, 1], got values in "
                             f"[{lo:.4g}, {hi:.4g}] ({hint}); uint8 or [0, 1] floats only")
        x = (x.float() * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous()


@dataclass
class GeneratedSource(Source):
    """``n`` samples of a generator, as a source the extraction engine encodes batch by batch.

    Locators are ``NAME[i]`` and the names hashed into the content fingerprint are ``str(i)``
    with the sha256 of each image's H×W×3 uint8 bytes, as for an ``.npz`` image array, so the
    record's fingerprint equals that of the same images saved as an array. The fast
    fingerprint (the feature cache key, for resuming shards) hashes the generator's name, its
    keyword arguments, the seed, ``n``, the batch size, the shard size and the label mode; no
    finished cache entry is kept (``reusable`` False): the generator's weights are not part
    of its name.
    """

    kind: ClassVar[str] = "generator"
    reusable: ClassVar[bool] = False

    fn: Callable[..., Any] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 64
    label_mode: str | None = None
    num_classes: int | None = None
    plan: list[ShardRange] = field(default_factory=list)
    keep_first: int = 0
    first_images: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def claims(cls, path: Path) -> bool:
        return False  # made by :func:`generated_source`, never from a path

    @classmethod
    def make(cls, fn: Callable[..., Any], n: int, *, seed: int = 0, batch_size: int = 64,
             labels: str | None = None, num_classes: int | None = None,
             kwargs: dict[str, Any] | None = None, name: str | None = None,
             keep_first: int = 0) -> GeneratedSource:
        """The source of ``n`` samples of ``fn`` (see the module docstring)."""
        if not callable(fn):
            raise InputError(f"generator: {fn!r} is not callable")
        if int(n) < 1:
            raise InputError(f"--num-samples {n}: must be at least 1")
        if int(batch_size) < 1:
            raise InputError(f"--batch-size {batch_size}: must be at least 1")
        n, name = int(n), name or generator_name(fn)
        kwargs = dict(kwargs or {})
        if labels is not None and num_classes is None:
            num_classes = getattr(fn, "num_classes", None)
        label_array = draw_labels(labels, n, num_classes, seed)
        plan = shard_ranges(n)
        try:
            args_text = json.dumps(kwargs, sort_keys=True)
        except TypeError:
            args_text = repr(sorted(kwargs.items()))
        fp = hash_lines(["generator", name, args_text, str(int(seed)), str(n), str(batch_size),
                         str(plan[0].stop - plan[0].start), str(labels), str(num_classes)])
        return cls(name, Path(name), locators=[f"{name}[{i}]" for i in range(n)],
                   names=[str(i) for i in range(n)], labels=label_array, fingerprint=fp,
                   fn=fn, kwargs=kwargs, seed=int(seed), batch_size=int(batch_size),
                   label_mode=labels, num_classes=num_classes, plan=plan,
                   keep_first=int(keep_first))

    def describe(self) -> dict[str, Any]:
        """The record's ``generator`` entry."""
        counts = None
        if self.labels is not None:
            counts = np.bincount(self.labels, minlength=self.num_classes or 0)
        return {"name": self.arg, "args": self.kwargs, "num_samples": len(self),
                "batch_size": self.batch_size, "seed": self.seed, "labels": self.label_mode,
                "num_classes": self.num_classes,
                "per_class": None if counts is None else [int(counts.min()), int(counts.max())]}

    def batches(self, ranges: list[ShardRange]) -> Iterator[tuple[int, int]]:
        """(start, stop) of each batch inside ``ranges``: every shard of the plan cut into
        ``batch_size`` pieces from its own start (the same pieces whoever samples it)."""
        for r in ranges:
            for shard in self.plan:
                if shard.stop <= r.start or shard.start >= r.stop:
                    continue
                if shard.start < r.start or shard.stop > r.stop:
                    raise ValueError(f"range {r} cuts shard {shard} of the generator's plan")
                for lo in range(shard.start, shard.stop, self.batch_size):
                    yield lo, min(shard.stop, lo + self.batch_size)

    def sample(self, start: int, stop: int) -> torch.Tensor:
        """Images ``start`` to ``stop`` as B×H×W×3 uint8, on the generator's device."""
        labels = None
        if self.labels is not None:
            labels = torch.from_numpy(self.labels[start:stop].copy())
        out = self.fn(stop - start, seed=batch_seed(self.seed, start), labels=labels,
                      **self.kwargs)
        x = to_uint8_nhwc(out, f"generator {self.arg}")
        if x.shape[0] != stop - start:
            raise InputError(f"generator {self.arg}: asked for {stop - start} images, got "
                             f"{x.shape[0]}")
        return x

    def encoder_batches(self, ranges: list[ShardRange], device: torch.device,
                        preprocesses: tuple | None) -> Iterator[dict[str, Any]]:
        """The batches of ``ranges`` in the extraction loader's format: ``preprocesses`` None
        -> one N×H×W×3 uint8 group on ``device`` (resized there); else one tuple of
        N×3×S×S float32 arrays per Preprocess (PIL, as the loader's workers do)."""
        for start, stop in self.batches(ranges):
            x = self.sample(start, stop)
            host = x.cpu().numpy()
            for i in range(start, min(stop, self.keep_first)):
                self.first_images[i] = host[i - start].copy()
            digests = [hashlib.sha256(row.tobytes()).hexdigest() for row in host]
            if preprocesses is None:
                data: Any = x.to(device, non_blocking=True)
            else:
                data = tuple(torch.from_numpy(prepare_batch(host, pp)).to(device)
                             for pp in preprocesses)
            m = stop - start
            yield {"index": list(range(start, stop)), "digest": digests, "jpeg": [False] * m,
                   "error": [None] * m, "groups": [(torch.arange(start, stop), data)]}

    def first(self, k: int) -> np.ndarray:
        """The first ``k`` samples (k×H×W×3 uint8): those kept while encoding, the rest made
        again with their batch seeds (shards reused from an interrupted run)."""
        k = min(int(k), len(self))
        for start, stop in self.batches(self.plan):
            if start >= k:
                break
            if any(i not in self.first_images for i in range(start, min(stop, k))):
                host = self.sample(start, stop).cpu().numpy()
                for i in range(start, min(stop, k)):
                    self.first_images[i] = host[i - start].copy()
        return np.stack([self.first_images[i] for i in range(k)])

    def read_rgb(self, i: int) -> tuple[np.ndarray, str, bool]:
        for start, stop in self.batches(self.plan):
            if start <= i < stop:
                row = self.sample(start, stop)[i - start].cpu().numpy()
                return row, hashlib.sha256(row.tobytes()).hexdigest(), False
        raise InputError(f"{self.arg}: no sample {i}")


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """k×H×W×3 uint8 -> one H'×W'×3 uint8 grid (row-major, black padding)."""
    k, h, w, c = images.shape
    cols = columns or int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    grid = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for j, img in enumerate(images):
        r, q = divmod(j, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = img
    return grid
