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

from evalkit.api import SourceLike, encoder_list, load_source
from evalkit.devices import resolve_device
from evalkit.encoders import build_encoder
from evalkit.encoders.custom import encoder_name
from evalkit.errors import InputError
from evalkit.features.conditions import attach_prompts
from evalkit.features.extract import precision_context
from evalkit.features.featureset import FeatureSet
from evalkit.features.generate import to_uint8_nhwc
from evalkit.features.identity import EncoderIdentity
from evalkit.features.loader import features_for_each
from evalkit.features.options import ExtractOptions
from evalkit.images.resize import prepare
from evalkit.results.record import build_record
from evalkit.scoring.plan import parse_metric_list
from evalkit.scoring.score import ScoreConfig, score_set


def to_uint8_images(batch: torch.Tensor) -> np.ndarray:
    """B×3×H×W uint8 or float in [0, 1] -> B×H×W×3 uint8 numpy (floats rounded like a PNG
    writer: :func:`evalkit.features.generate.to_uint8_nhwc`, the generator source's rule)."""
    return to_uint8_nhwc(batch, "Evaluator.update").cpu().numpy()

class Evaluator:
    """Accumulate encoder outputs batch by batch, then score against a reference.

    ``encoder`` is a name, a list of names, or the object :func:`evalkit.custom_encoder`
    returned.

    ``encoder`` naming several encoders (``"inception,dinov2"`` or a list) gives an
    :class:`EvaluatorGroup` instead: each batch converted once, one record per encoder.

    Example:
        ev = evalkit.Evaluator(encoder="dinov2", ref="imagenet")
        for images in sampler:            # B×3×H×W, uint8 or float in [0, 1]
            ev.update(images)
        record = ev.compute()             # the record `evalkit score` writes

    Conditions go with their batch: ``ev.update(images, labels=y)`` (a class per image:
    fd_per_class, precision_per_class, class_accuracy...) and ``ev.update(images,
    prompts=texts)`` (a prompt per image: prompt_vendi, prompt_similarity and, with
    ``encoder="clip"``, clip_score from the same open_clip model's text tower). Either is given
    with every batch or with none. The numbers equal `evalkit score` on the same images with
    the same labels / ``--prompts``.
    """

    def __new__(cls, encoder: str | list[str] = "dinov2", *args: Any, **kwargs: Any):
        names = encoder_list(_named(encoder))
        if cls is Evaluator and len(names) > 1:
            return EvaluatorGroup(names, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, encoder: str | list[str] = "dinov2", ref: SourceLike | None = None, *,
                 arch: str | None = None, weights: str | None = None,
                 test: SourceLike | None = None, metrics: str = "all", seed: int = 0,
                 device: str = "auto", precision: str = "fp32", name: str = "evaluator",
                 ref_dir: str | None = None, encoder_module: Any = None):
        (encoder,) = encoder_list(_named(encoder))
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
        """Forget the accumulated outputs (the reference stays loaded)."""
        self._outputs: dict[str, list[np.ndarray]] = {}
        self._labels: list[np.ndarray] = []
        self._prompts: list[str] = []
        self._batches = 0

    @torch.inference_mode()
    def update(self, images: torch.Tensor, *, labels: Any = None,
               prompts: list[str] | None = None) -> None:
        """Encode one batch of generated images (B×3×H×W, uint8 or float in [0, 1]), with the
        class ``labels`` (B ints) and/or ``prompts`` (B strings) they were generated for."""
        self.encode(to_uint8_images(images), labels=labels, prompts=prompts)

    @torch.inference_mode()
    def encode(self, arrays: np.ndarray, *, labels: Any = None,
               prompts: list[str] | None = None) -> None:
        """Encode B×H×W×3 uint8 images (what :func:`to_uint8_images` returns)."""
        labels, prompts = check_conditions(len(arrays), labels, prompts, self._batches,
                                           bool(self._labels), bool(self._prompts))
        x = torch.from_numpy(np.stack([prepare(a, self.encoder.preprocess) for a in arrays]))
        with precision_context(self.device, self.options.precision):
            out = self.encoder(x.to(self.device, non_blocking=True))
        for key, value in out.items():
            self._outputs.setdefault(key, []).append(value.float().cpu().numpy())
        if labels is not None:
            self._labels.append(labels)
        if prompts is not None:
            self._prompts.extend(prompts)
        self._batches += 1

    def features(self) -> FeatureSet:
        """Everything accumulated so far as a FeatureSet (with its labels and prompts; for a
        CLIP encoder the prompts' text embeddings too)."""
        if not self._outputs:
            raise InputError("Evaluator.compute: no images were given to update()")
        arrays = {k: np.concatenate(v) for k, v in self._outputs.items()}
        labels = np.concatenate(self._labels) if self._labels else None
        fs = FeatureSet(arrays, labels, meta={"encoder": self.identity.as_dict()}, source=self.name)
        return attach_prompts(fs, self._prompts, self.options) if self._prompts else fs

    def compute(self) -> dict[str, Any]:
        """Score the accumulated samples against the reference; returns the result record."""
        if self.real is None:
            raise InputError("Evaluator.compute: no reference given (Evaluator(..., ref=...))")
        return build_record(score_set(self.features(), self.real, self.test, self.config,
                                      name=self.name, ref_name=self.real.meta.get("reference_name")))


class EvaluatorGroup:
    """Several encoders at once: each batch converted once and given to one
    :class:`Evaluator` per encoder; an image-folder ``ref``/``test`` is decoded once for all
    (:func:`evalkit.features.loader.features_for_each`). ``compute()`` returns one record per
    encoder, in the order given."""

    def __init__(self, encoders: list[str], ref: SourceLike | None = None, *,
                 arch: str | None = None, weights: str | None = None,
                 test: SourceLike | None = None, encoder_module: Any = None, **kw: Any):
        if arch or weights or encoder_module is not None:
            raise InputError("Evaluator: arch/weights/encoder_module name one encoder; with "
                             f"several ({','.join(encoders)}) each uses its default")
        per = [ExtractOptions(encoder=n, device=kw.get("device", "auto"),
                              precision=kw.get("precision", "fp32"), quiet=True) for n in encoders]
        refs, tests = features_for_each(ref, per), features_for_each(test, per)
        self.parts = [Evaluator(n, r, test=t, **kw) for n, r, t in zip(encoders, refs, tests)]

    def reset(self) -> None:
        """Forget every encoder's accumulated outputs."""
        for part in self.parts:
            part.reset()

    @torch.inference_mode()
    def update(self, images: torch.Tensor, *, labels: Any = None,
               prompts: list[str] | None = None) -> None:
        """Convert one batch once, then encode it with every encoder (with its conditions)."""
        arrays = to_uint8_images(images)
        for part in self.parts:
            part.encode(arrays, labels=labels, prompts=prompts)

    def features(self) -> list[FeatureSet]:
        """One FeatureSet per encoder."""
        return [part.features() for part in self.parts]

    def compute(self) -> list[dict[str, Any]]:
        """One result record per encoder."""
        return [part.compute() for part in self.parts]


def check_conditions(n: int, labels: Any, prompts: Any, batches: int, had_labels: bool,
                     had_prompts: bool) -> tuple[np.ndarray | None, list[str] | None]:
    """One batch's labels (int array) and prompts (strings), checked: one per image, and given
    with every batch or with none (a set is conditioned throughout or not at all)."""
    if labels is not None:
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        labels = np.asarray(labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"Evaluator.update: labels must be {n} integers (one per image), "
                             f"got shape {labels.shape} dtype {labels.dtype}")
    if prompts is not None:
        if isinstance(prompts, str) or len(prompts) != n:
            raise InputError(f"Evaluator.update: prompts must be {n} strings (one per image)")
        prompts = [str(p) for p in prompts]
    for name, given, had in (("labels", labels is not None, had_labels),
                             ("prompts", prompts is not None, had_prompts)):
        if batches and given != had:
            raise InputError(f"Evaluator.update: {name} given with some batches and not others "
                             "(give them with every batch, or reset())")
    return labels, prompts


def _named(encoder: Any) -> Any:
    """Names and lists of names as given; a custom encoder object as its registered name."""
    return encoder if isinstance(encoder, (str, list, tuple)) else encoder_name(encoder)
