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
from evalkit.features.extract import precision_context
from evalkit.features.featureset import FeatureSet
from evalkit.features.options import ExtractOptions
from evalkit.images.decode import prepare
from evalkit.results.record import build_record
from evalkit.scoring.plan import parse_metric_list
from evalkit.scoring.score import ScoreConfig, score_set

_SLACK = 0.5 / 255  # float error within half a quantisation step rounds like a clamp


def to_uint8_images(batch: torch.Tensor) -> np.ndarray:
    """B×3×H×W uint8 or float in [0, 1] -> B×H×W×3 uint8 (floats rounded like a PNG writer)."""
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
        shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
        raise InputError(f"Evaluator.update: expected a B×3×H×W image tensor, got {shape}")
    x = batch.detach()
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise InputError(f"Evaluator.update: a {x.dtype} batch; pass uint8 (0-255) or "
                             "floats in [0, 1]")
        if not torch.isfinite(x).all():
            raise InputError("Evaluator.update: the batch has NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -_SLACK or hi > 1 + _SLACK:  # 0-255 or [-1, 1] floats would score silently wrong
            hint = ("a [-1, 1] batch: pass (x + 1) / 2" if lo < -_SLACK and hi <= 1 + _SLACK
                    else "a 0-255 batch: pass x / 255 or x.to(torch.uint8)")
            raise InputError(f"Evaluator.update: float images must lie in [0, 1], got values in "
                             f"[{lo:.4g}, {hi:.4g}] ({hint}); uint8 or [0, 1] floats only")
        x = (x.float() * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class Evaluator:
    """Accumulate encoder outputs batch by batch, then score against a reference.

    ``encoder`` may name several encoders (``"inception,dinov2"`` or a list): each batch is
    converted once and run through each, and ``compute()`` returns one record per encoder.

    Example:
        ev = evalkit.Evaluator(encoder="dinov2", ref="imagenet")
        for images in sampler:            # B×3×H×W, uint8 or float in [0, 1]
            ev.update(images)
        record = ev.compute()             # the record `evalkit score` writes
    """

    def __init__(self, encoder: str | list[str] = "dinov2", ref: SourceLike | None = None, *,
                 arch: str | None = None, weights: str | None = None,
                 test: SourceLike | None = None, metrics: str = "all", seed: int = 0,
                 device: str = "auto", precision: str = "fp32", name: str = "evaluator",
                 ref_dir: str | None = None, encoder_module: Any = None):
        from evalkit.api import encoder_list
        from evalkit.devices import resolve_device
        from evalkit.encoders import build_encoder
        from evalkit.features.identity import EncoderIdentity

        names = encoder_list(encoder)
        self._parts: list[Evaluator] = []
        if len(names) > 1:  # one Evaluator per encoder, images converted once
            self._init_parts(names, ref, arch=arch, weights=weights, test=test, metrics=metrics,
                             seed=seed, device=device, precision=precision, name=name,
                             ref_dir=ref_dir, encoder_module=encoder_module)
            return
        encoder = names[0]

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

    def _init_parts(self, names: list[str], ref: SourceLike | None, *, arch, weights, test,
                    encoder_module, **kw: Any) -> None:
        """Several encoders: an image-folder ``ref``/``test`` is decoded once for all of them
        (:func:`evalkit.features.loader.load_features_many`); each encoder gets its own Evaluator."""
        from pathlib import Path

        from evalkit.features.loader import load_features_many
        from evalkit.images.sources import is_feature_file
        from evalkit.refs.statsfiles import is_stats_file

        if arch or weights or encoder_module is not None:
            raise InputError("Evaluator: arch/weights/encoder_module name one encoder; with "
                             f"several ({','.join(names)}) each uses its default")
        per = [ExtractOptions(encoder=n, device=kw["device"], precision=kw["precision"],
                              quiet=True) for n in names]

        def each(src: SourceLike | None) -> list:
            if isinstance(src, (str, Path)) and Path(src).exists() and not is_feature_file(src) \
                    and not is_stats_file(src):
                return load_features_many(str(src), per)
            return [src] * len(names)

        refs, tests = each(ref), each(test)
        self._parts = [Evaluator(n, r, test=t, **kw) for n, r, t in zip(names, refs, tests)]

    def reset(self) -> None:
        self._outputs: dict[str, list[np.ndarray]] = {}
        for part in self._parts:
            part.reset()

    @torch.inference_mode()
    def update(self, images: torch.Tensor) -> None:
        """Encode one batch of generated images (B×3×H×W, uint8 or float in [0, 1])."""
        arrays = to_uint8_images(images)
        if self._parts:
            for part in self._parts:
                part._encode(arrays)
            return
        self._encode(arrays)

    def _encode(self, arrays: np.ndarray) -> None:
        x = torch.from_numpy(np.stack([prepare(a, self.encoder.preprocess) for a in arrays]))
        with precision_context(self.device, self.options.precision):
            out = self.encoder(x.to(self.device, non_blocking=True))
        for key, value in out.items():
            self._outputs.setdefault(key, []).append(value.float().cpu().numpy())

    def features(self) -> FeatureSet | list[FeatureSet]:
        """Everything accumulated so far as a FeatureSet (several encoders: one each)."""
        if self._parts:
            return [part.features() for part in self._parts]
        if not self._outputs:
            raise InputError("Evaluator.compute: no images were given to update()")
        arrays = {k: np.concatenate(v) for k, v in self._outputs.items()}
        return FeatureSet(arrays, meta={"encoder": self.identity.as_dict()}, source=self.name)

    def compute(self) -> dict[str, Any] | list[dict[str, Any]]:
        """Score the accumulated samples against the reference; returns the result record
        (several encoders: one record each, in the order given)."""
        if self._parts:
            return [part.compute() for part in self._parts]
        if self.real is None:
            raise InputError("Evaluator.compute: no reference given (Evaluator(..., ref=...))")
        return build_record(score_set(self.features(), self.real, self.test, self.config,
                                      name=self.name, ref_name=self.real.meta.get("reference_name")))
