"""Small torch helpers shared by the metric functions (no engine imports)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from evalkit.errors import MetricInputError
from evalkit.lazy import torch


def resolve_device(device: Any = None) -> torch.device:
    """``None``/"auto" -> cuda when available else cpu; strings and devices pass through."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_tensor(x: Any, device: Any = None, dtype: Any = None) -> torch.Tensor:
    """A 2-D (or 1-D) array as a torch tensor of ``dtype`` (default float32) on ``device``."""
    dtype = torch.float32 if dtype is None else dtype
    dev = resolve_device(device)
    if isinstance(x, torch.Tensor):
        return x.to(device=dev, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=dev)


def require_samples(metric: str, n: int, minimum: int, which: str = "generated") -> None:
    """Raise MetricInputError when a set is too small for ``metric``."""
    if n < minimum:
        raise MetricInputError(
            f"{metric} needs at least {minimum} {which} samples, got {n}"
        )


def seeded_generator(seed: int) -> np.random.Generator:
    """The one way metrics draw random numbers: a numpy Generator from the run's seed."""
    return np.random.default_rng(seed)


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
        except Exception:  # an API that changed: be safe
            return False
