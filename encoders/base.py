"""What every encoder declares and implements.

An encoder is a small ``torch.nn.Module`` whose ``forward`` takes a float batch B×3×H×W with
values in [0, 255] (already resized by the engine as ``preprocess`` says, unless
``preprocess.resize == "none"``) and returns a dict of named 2-D outputs (``features`` always;
``logits``, ``spatial``, ``embedding`` when it has them), all from one forward pass.
Normalisation (scaling, mean/std) happens inside the module, on the device.
"""
from __future__ import annotations

import torch

from evalkit.encoders.spec import EncoderSpec, Preprocess, WeightsSpec  # noqa: F401 (re-exported)


class Encoder(torch.nn.Module):
    """Base class: subclasses set the attributes below in ``__init__`` and define ``forward``."""

    name: str = ""
    arch: str = ""
    preprocess: Preprocess
    outputs: dict[str, int]
    weights_sha256: str | None = None  # sha256 of the weights file loaded (None: random/none)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError
