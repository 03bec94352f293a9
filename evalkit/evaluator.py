"""In-training evaluation without writing images: ``Evaluator.update(batch)`` / ``compute()``.

Images are handled exactly as `evalkit score` handles the same images saved as 8-bit files:
float batches in [0, 1] are quantised as an 8-bit PNG writer does (``round(x·255)``), then each
image goes through the encoder's preprocessing (clean-fid PIL bicubic resize, on the CPU, since
that is what defines the numbers), then one forward pass on the device gives every output.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from evalkit.api import SourceLike, load_source
from evalkit.errors import InputError
from evalkit.extract import precision_context
from evalkit.featureset import FeatureSet
from evalkit.imageio import prepare
from evalkit.options import ExtractOptions
from evalkit.scoring import ScoreConfig, parse_metric_list, score_set


def to_uint8_images(batch: torch.Tensor) -> np.ndarray:
    """B×3×H×W uint8 or float in [0, 1] -> B×H×W×3 uint8 (floats rounded like a PNG writer)."""
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
        shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
        raise InputError(f"Evaluator.update: expected a B×3×H×W image tensor, got {shape}")
    x = batch.detach()
    if x.dtype != torch.uint8:
        if not torch.isfinite(x).all():
            raise InputError("Evaluator.update: the batch has NaN or infinite values")
        x = (x.float() * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class Evaluator:
    """Accumulate encoder outputs batch by batch, then score against a reference.

    Example:
        ev = evalkit.Evaluator(encoder="dinov2", ref="imagenet")
        for images in sampler:            # B×3×H×W, uint8 or float in [0, 1]
            ev.update(images)
        record = ev.compute()             # the record `evalkit score` writes
    """

    def __init__(self, encoder: str = "dinov2", ref: SourceLike | None = None, *,
                 arch: str | None = None, weights: str | None = None,
                 test: SourceLike | None = None, metrics: str = "all", seed: int = 0,
                 device: str = "auto", precision: str = "fp32", name: str = "evaluator",
                 ref_dir: str | None = None, encoder_module: Any = None):
        from evalkit.devices import resolve_device
        from evalkit.encoders import build_encoder
        from evalkit.identity import EncoderIdentity

        self.options = ExtractOptions(encoder=encoder, arch=arch, weights=weights, device=device,
                                      precision=precision, quiet=True)
        self.device = resolve_device(device)
        self.encoder = (encoder_module or build_encoder(encoder, arch, weights)).to(self.device)
        self.encoder.eval()
        self.identity = EncoderIdentity.of_encoder(self.encoder, precision)
        self.config = ScoreConfig(metrics=parse_metric_list(metrics), seed=seed,
                                  device=str(self.device))
        self.real = load_source(ref, self.options, role="reference", ref_dir=ref_dir) \
            if ref is not None else None
        self.test = load_source(test, self.options, role="test") if test is not None else None
        self.name = name
        self.reset()

    def reset(self) -> None:
        self._outputs: dict[str, list[np.ndarray]] = {}

    @torch.inference_mode()
    def update(self, images: torch.Tensor) -> None:
        """Encode one batch of generated images (B×3×H×W, uint8 or float in [0, 1])."""
        arrays = to_uint8_images(images)
        x = torch.from_numpy(np.stack([prepare(a, self.encoder.preprocess) for a in arrays]))
        with precision_context(self.device, self.options.precision):
            out = self.encoder(x.to(self.device, non_blocking=True))
        for key, value in out.items():
            self._outputs.setdefault(key, []).append(value.float().cpu().numpy())

    def features(self) -> FeatureSet:
        """Everything accumulated so far as a FeatureSet."""
        if not self._outputs:
            raise InputError("Evaluator.compute: no images were given to update()")
        arrays = {k: np.concatenate(v) for k, v in self._outputs.items()}
        return FeatureSet(arrays, meta={"encoder": self.identity.as_dict()}, source=self.name)

    def compute(self) -> dict[str, Any]:
        """Score the accumulated samples against the reference; returns the result record."""
        if self.real is None:
            raise InputError("Evaluator.compute: no reference given (Evaluator(..., ref=...))")
        record, _ = score_set(self.features(), self.real, self.test, self.config, name=self.name,
                              ref_name=self.real.meta.get("reference_name"))
        return record
