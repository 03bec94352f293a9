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
from evalkit.errors import InputError


class Encoder(torch.nn.Module):
    """Base class: subclasses set the attributes below in ``__init__`` and define ``forward``."""

    name: str = ""
    arch: str = ""
    preprocess: Preprocess
    outputs: dict[str, int]
    weights_sha256: str | None = None  # sha256 of the weights file loaded (None: random/none)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def set_normalisation(self, mean, std) -> None:
        """Keep ``mean``/``std`` (per channel, [0, 1] scale) as buffers for :meth:`normalise`."""
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """B×3×H×W in [0, 255] -> float32 ``(x / 255 - mean) / std`` on the encoder's device.

        Raises:
            InputError: when the batch is not B×3×H×W (B×3×``size`` when ``size`` is given).
        """
        want = (3, *size) if size is not None else None
        if images.ndim != 4 or images.shape[1] != 3 or (want and tuple(images.shape[1:]) != want):
            shape = "B×3×{}×{}".format(*size) if size is not None else "B×3×H×W"
            raise InputError(f"{self.name} encoder ({self.arch}) expects {shape} images, "
                             f"got {tuple(images.shape)}")
        x = images.to(device=self.mean.device, dtype=torch.float32) / 255.0
        return (x - self.mean) / self.std
