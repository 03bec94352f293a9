"""The one device resolver: ``--device`` text (or a torch.device) -> a checked torch.device.

Used by extraction, the metrics and the in-training Evaluator alike; torchrun's per-rank
choice (:func:`evalkit.features.distributed.rank_device`) builds on it. No engine imports, so the
metric layer may use it.
"""
from __future__ import annotations

from typing import Any

from evalkit.errors import InputError
from evalkit.lazy import torch


def resolve_device(device: Any = "auto") -> torch.device:
    """``None``/``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as torch reads it.

    Raises:
        InputError: an unknown device string, or a CUDA device that is not available.
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"--device {device}: not a device (auto | cpu | cuda[:i])") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA devices")
    return dev
