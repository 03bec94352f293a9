"""Helpers every metric file shares (no engine imports): devices, tensors, validation, row
chunks, float64 means, and the one seeded random generator.

Metric files import these public names from here and never reach into another metric file.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from evalkit.devices import resolve_device  # noqa: F401 (the one resolver, for metric files)
from evalkit.errors import MetricInputError
from evalkit.lazy import torch

_CHUNK_ELEMENTS = 1 << 23  # rows per chunk × D: 64 MiB of float64 per chunk

# What a seeded metric accepts as ``seed``: an int, or a child of the run's SeedSequence, or a
# Generator (used as it is, so its state advances).
Seed = int | np.random.SeedSequence | np.random.Generator


def as_tensor(x: Any, device: Any = None, dtype: Any = None) -> torch.Tensor:
    """A 2-D (or 1-D) array as a torch tensor of ``dtype`` (default float32) on ``device``."""
    dtype = torch.float32 if dtype is None else dtype
    dev = resolve_device(device)
    if isinstance(x, torch.Tensor):
        return x.to(device=dev, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=dev)


def seeded_generator(seed: Seed) -> np.random.Generator:
    """The one way metrics draw random numbers: ``numpy.random.default_rng(seed)``.

    ``seed`` is an int, a ``numpy.random.SeedSequence`` (e.g. one child of the run's
    ``SeedSequence(seed).spawn(k)``) or a ``Generator``. An int ``s`` and ``SeedSequence(s)``
    give the same stream; a Generator is returned as it is.
    """
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer, np.random.SeedSequence,
                                                                  np.random.Generator)):
        raise MetricInputError(f"seed must be an int, SeedSequence or Generator, got {type(seed).__name__}")
    return np.random.default_rng(seed)


def rows_per_chunk(dim: int) -> int:
    """Rows of a ``dim``-wide array per float64 chunk (64 MiB) in streaming sums."""
    return max(1, _CHUNK_ELEMENTS // max(dim, 1))


def require_samples(metric: str, n: int, minimum: int, which: str = "generated") -> None:
    """Raise MetricInputError when a set is too small for ``metric``."""
    if n < minimum:
        raise MetricInputError(
            f"{metric} needs at least {minimum} {which} samples, got {n}"
        )


def check_finite(metric: str, value: torch.Tensor, which: str) -> None:
    """Raise MetricInputError when ``value`` (a statistic of the ``which`` set) is not finite."""
    if not bool(torch.isfinite(value).all()):
        raise MetricInputError(f"{metric}: {which} features contain NaN or inf")


def check_pair(metric: str, real: Any, fake: Any, minimum: int) -> tuple[int, int, int]:
    """Validate two N×D arrays for ``metric``; returns (n_real, n_fake, dim).

    Raises:
        MetricInputError: an array is not 2-D, the dims differ or a set is too small.
    """
    for which, x in (("reference", real), ("generated", fake)):
        if len(tuple(x.shape)) != 2:
            raise MetricInputError(
                f"{metric}: {which} features must be a 2-D N×D array, got shape {tuple(x.shape)}"
            )
    (nr, dr), (ng, dg) = tuple(real.shape), tuple(fake.shape)
    if dr != dg:
        raise MetricInputError(
            f"{metric}: feature dims differ: generated {dg} vs reference {dr} (same --encoder for both?)"
        )
    require_samples(metric, ng, minimum, "generated")
    require_samples(metric, nr, minimum, "reference")
    return int(nr), int(ng), int(dr)


def check_points(metric: str, which: str, x: Any, minimum: int, dim: int | None = None) -> int:
    """Validate a feature array for ``metric``: 2-D, finite, at least ``minimum`` rows.

    Returns the number of rows. Raises MetricInputError naming the metric and the set.
    """
    shape = tuple(getattr(x, "shape", np.shape(x)))
    if len(shape) != 2:
        raise MetricInputError(f"{metric}: {which} features must be a 2-D array, got shape {shape}")
    if dim is not None and shape[1] != dim:
        raise MetricInputError(
            f"{metric}: feature dims differ: {which} {shape[1]} vs {dim} (same --encoder for both?)"
        )
    require_samples(metric, shape[0], minimum, which)
    finite = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else bool(np.isfinite(x).all())
    if not finite:
        raise MetricInputError(f"{metric}: {which} features contain NaN or infinite values")
    return shape[0]


def take_rows(x: Any, index: np.ndarray | None) -> Any:
    """Rows ``index`` of a numpy array or torch tensor (on the tensor's own device); all rows
    when ``index`` is None."""
    if index is None:
        return x
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(index, device=x.device)]
    return np.asarray(x)[index]


def mean_rows(x: Any, device: torch.device, metric: str, which: str) -> torch.Tensor:
    """float64 mean of the rows of ``x``, summed over row chunks; raises on NaN/inf."""
    n, d = int(x.shape[0]), int(x.shape[1])
    step = rows_per_chunk(d)
    total = torch.zeros(d, dtype=torch.float64, device=device)
    for i in range(0, n, step):
        total += as_tensor(x[i:i + step], device, torch.float64).sum(0)
    mu = total / n
    check_finite(metric, mu, which)
    return mu


def fp32_matmul_is_ieee(device: torch.device) -> bool:
    """True when float32 matrix products on ``device`` are plain IEEE float32 (no TF32/bf16)."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if device.type == "cuda":
                if torch.backends.cuda.matmul.allow_tf32:
                    return False
                prec = getattr(torch.backends.cuda.matmul, "fp32_precision", "none")
                return prec in ("none", "ieee")
            mkl = getattr(torch.backends, "mkldnn", None)
            prec = getattr(getattr(mkl, "matmul", None), "fp32_precision", "none")
            return prec in ("none", "ieee")
        except (AttributeError, RuntimeError):  # an API that changed: be safe
            return False
