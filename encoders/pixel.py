"""``pixel``: the weight-free encoder (raw 32×32 RGB pixels), for smoke tests and CI.

Like dgm-eval's ``pixel`` encoder, features are the resized image itself: each image is
resized to 32×32 by the data workers, scaled to [0, 1] and flattened (3×32×32 = 3072,
channel-major). No weights, no download, instant on any device.
"""
from __future__ import annotations

import torch

from evalkit.encoders.base import Encoder, Preprocess
from evalkit.encoders.spec import BUILTINS, check_arch, check_resize
from evalkit.errors import InputError

DECLARED = BUILTINS["pixel"]
SIZE = 32
ARCH = DECLARED.default_arch
DIM = DECLARED.default_outputs["features"]  # 3 × SIZE × SIZE


def pixel_preprocess(arch: str = ARCH, resize: str = "clean") -> Preprocess:
    """Preprocessing of the pixel encoder: clean resize to 32×32."""
    check_arch("pixel", arch, DECLARED.archs)
    check_resize("pixel", resize)
    return Preprocess(size=SIZE)


class PixelEncoder(Encoder):
    """Flattened pixels scaled to [0, 1]: ``features`` = image / 255, 3072 values."""

    name = "pixel"
    arch = ARCH
    weights_sha256 = None

    def __init__(self, resize: str = "clean"):
        super().__init__()
        self.preprocess = pixel_preprocess(ARCH, resize)
        self.outputs = {"features": DIM}
        # A buffer so that ``.to(device)`` / ``next(buffers())`` report the module's device.
        self.register_buffer("_scale", torch.tensor(1.0 / 255.0), persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×32×32 in [0, 255] -> {"features": B×3072 in [0, 1]}."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, SIZE, SIZE):
            raise InputError(f"pixel encoder expects B×3×{SIZE}×{SIZE} images, got "
                             f"{tuple(images.shape)}")
        x = images.to(device=self._scale.device, dtype=torch.float32)
        return {"features": (x / 255.0).flatten(1)}


def build_pixel(arch: str | None = None, weights: str | None = None, resize: str = "clean",
                random_init: bool = False) -> PixelEncoder:
    """Factory registered as ``pixel`` (``weights``/``random_init`` are accepted and ignored
    except that a weights file is refused: this encoder has none)."""
    pixel_preprocess(arch or ARCH, resize)
    if weights is not None:
        raise InputError(f"pixel encoder takes no weights file (got {weights})")
    return PixelEncoder(resize=resize).eval()


SPEC = DECLARED.spec(build_pixel, preprocess=pixel_preprocess, input_size={ARCH: SIZE})
