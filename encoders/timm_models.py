"""``timm``: pooled pre-logits features of any timm model (Wightman, pytorch-image-models).

``--encoder timm --arch MODEL[.TAG]`` builds ``timm.create_model(MODEL, num_classes=0)``; its
output is the model's pooled, pre-logits embedding (``forward_head(..., pre_logits=True)``:
global pool, the head's norm where it has one, flatten), ``num_features`` wide. Preprocessing
comes from the model's own pretrained config (timm's ``PretrainedCfg``): input size,
interpolation, mean/std, and ``crop_pct``: the shorter side goes to ``floor(size / crop_pct)``
then the centre ``size``×``size`` is cut (timm's eval transform), with the clean float resize
by default and timm's own torchvision transform on the 8-bit PIL image under
``--resize legacy``.

Weights: ``--weights FILE``, the torch hub checkpoint folder (the file name of the config's
``url``), the Hugging Face cache (``timm/MODEL.TAG``), a download when online. A checkpoint is
passed through the model's own ``checkpoint_filter_fn`` (original-repository layouts such as
ConvNeXt's ``{"model": ...}`` files), the classifier is dropped, and every other weight loads
with ``strict=True``. Also the base of the ``convnext`` encoder.
"""
from __future__ import annotations

import difflib
import math
import re
import sys
from pathlib import Path

import torch

from evalkit.encoders.base import Encoder, Preprocess, WeightsSpec
from evalkit.encoders.spec import (
    BUILTINS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LazyArchTable,
    check_resize,
)
from evalkit.encoders.weights import build_module, load_checkpoint
from evalkit.errors import InputError, pip_hint

DECLARED = BUILTINS["timm"]
DEFAULT_ARCH = DECLARED.default_arch
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z.]+$")  # torch.hub's name-<sha256 prefix>.pth


def import_timm():
    """``timm``, or an InputError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise InputError(f"this encoder needs timm: {pip_hint('models')}") from None
    return timm


def canonical_arch(arch: str | None) -> str:
    """``arch`` with timm's deprecated names mapped (``convnext_large_in22k`` ->
    ``convnext_large.fb_in22k``) and checked; unknown names suggest close ones."""
    timm = import_timm()
    arch = arch or DEFAULT_ARCH
    try:
        from timm.models._registry import get_deprecated_models

        arch = get_deprecated_models().get(arch, arch)
    except ImportError:  # pragma: no cover - older timm
        pass
    model, _ = timm.models.split_model_name_tag(arch)
    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(f"timm: unknown model {arch!r}{hint}")
    return arch


def pretrained_cfg(arch: str) -> dict:
    """timm's pretrained config of ``arch`` (model defaults when the tag has none)."""
    timm = import_timm()
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        model, tag = timm.models.split_model_name_tag(arch)
        if tag:
            tags = [n for n in timm.list_pretrained(model + ".*")]
            raise InputError(f"timm: {model!r} has no pretrained tag {tag!r}"
                             + (f"; tags: {', '.join(tags[:8])}" if tags else ""))
        return {}
    return cfg.to_dict()


def preprocess_from_cfg(cfg: dict, resize: str, encoder: str = "timm") -> Preprocess:
    """timm's eval transform as a :class:`Preprocess` (``crop_pct`` -> ``crop_from``);
    ``resize``: ``clean`` (the clean float resize) or ``legacy`` (torchvision on the PIL image)."""
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("bicubic", "bilinear"):
        interpolation = "bicubic"
    crop_from = math.floor(size / crop_pct)
    check_resize(encoder, resize)
    return Preprocess(size=size, resize="pil" if resize == "legacy" else "clean", crop=True,
                      crop_from=0 if crop_from == size else crop_from,
                      mean=tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),
                      std=tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),
                      interpolation=interpolation)


def timm_preprocess(arch: str | None = DEFAULT_ARCH, resize: str = "clean") -> Preprocess:
    """The model's own eval preprocessing, from its pretrained config."""
    arch = canonical_arch(arch)
    return preprocess_from_cfg(pretrained_cfg(arch), resize)


def hash_prefix(filename: str) -> str | None:
    """The sha256 prefix torch.hub reads from ``name-<hex>.pth`` file names, else None."""
    m = _HASH_IN_NAME.search(filename)
    return m.group(1) if m else None


def weights_from_cfg(cfg: dict, arch: str) -> WeightsSpec | None:
    """Where the weights of a timm pretrained config live (torch hub file, HF repo)."""
    url, hf = cfg.get("url") or None, cfg.get("hf_hub_id") or None
    if not url and not hf:
        return None
    filename = url.rsplit("/", 1)[-1].split("?")[0] if url else f"timm_{arch}.safetensors"
    if hf and not url:
        url = f"https://huggingface.co/{hf}/resolve/main/model.safetensors"
    return WeightsSpec(filename=filename, url=url, sha256=hash_prefix(filename),
                       hf_repo=hf, hf_filename="model.safetensors" if hf else None)


def timm_weights(arch: str | None) -> WeightsSpec | None:
    """The declared weights of a timm ``arch`` (None: no pretrained weights known)."""
    arch = canonical_arch(arch)
    return weights_from_cfg(pretrained_cfg(arch), arch)


def _num_features(arch: str) -> int:
    timm = import_timm()
    model, _ = timm.models.split_model_name_tag(canonical_arch(arch))
    with torch.device("meta"):
        net = timm.create_model(model, pretrained=False, num_classes=0)
    return int(net.num_features)


# --------------------------------------------------------------------------- loading

def timm_state_dict(net: torch.nn.Module, sd: dict, path, encoder_name: str) -> dict:
    """A timm or original-repository checkpoint in the keys of ``net`` (built with
    num_classes=0): the model module's ``checkpoint_filter_fn`` maps original layouts and the
    classifier weights (``pretrained_cfg["classifier"]``) are dropped."""
    filter_fn = getattr(sys.modules.get(type(net).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            sd = filter_fn(sd, net)
        except Exception as exc:  # noqa: BLE001 - any failure means "not this model's file"
            raise InputError(f"{encoder_name} weights {path}: not a checkpoint of this model "
                             f"({type(exc).__name__}: {exc})") from None
    classifiers = getattr(net, "pretrained_cfg", {}).get("classifier", "head")
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    expected = set(net.state_dict())
    return {k: v for k, v in sd.items()
            if k in expected or not any(k.startswith(c + ".") for c in classifiers)}


class TimmEncoder(Encoder):
    """A timm model's pooled pre-logits embedding (``features``) from inputs in [0, 255]."""

    def __init__(self, net: torch.nn.Module, name: str, arch: str, preprocess: Preprocess,
                 weights_sha256: str | None = None):
        super().__init__()
        self.name, self.arch, self.preprocess = name, arch, preprocess
        self.weights_sha256 = weights_sha256
        self.net = net
        self.outputs = {"features": int(net.num_features)}
        self.set_normalisation(preprocess.mean, preprocess.std)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×H×W in [0, 255] -> {"features": B×num_features}."""
        x = self.normalise(images)
        feats = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return {"features": feats.flatten(1).float()}


def build_timm_model(arch: str, weights, encoder_name: str, spec: WeightsSpec | None, *,
                     random_init: bool, **create_kwargs) -> tuple[torch.nn.Module, str | None]:
    """(timm model with num_classes=0 and its weights, sha256 of the file or None)."""
    timm = import_timm()
    model, _ = timm.models.split_model_name_tag(arch)
    net = build_module(lambda: timm.create_model(model, pretrained=False, num_classes=0,
                                                 **create_kwargs), random_init=True)
    net.pretrained_cfg = {**getattr(net, "pretrained_cfg", {}), **pretrained_cfg(arch)}
    if random_init:
        return net, None
    if spec is None and weights is None:
        raise InputError(f"{encoder_name}: timm has no pretrained weights for {arch!r}; "
                         "pass --weights FILE")
    sha = load_checkpoint(net, encoder_name, spec or WeightsSpec(filename=Path(arch).name),
                          weights, lambda sd, path: timm_state_dict(net, sd, path, encoder_name))
    return net, sha


def build_timm(arch: str | None = None, weights: str | None = None, resize: str = "clean",
               random_init: bool = False) -> TimmEncoder:
    """Factory registered as ``timm``: any timm model, its pooled pre-logits features.

    ``encoder.arch`` is ``arch`` as given (what the encoder identity records); timm's
    deprecated names are mapped only to build the model."""
    arch = arch or DEFAULT_ARCH
    preprocess = timm_preprocess(arch, resize)
    model = canonical_arch(arch)
    net, sha = build_timm_model(model, weights, "timm", timm_weights(model),
                                random_init=random_init)
    return TimmEncoder(net, "timm", arch, preprocess, sha).eval().requires_grad_(False)


SPEC = DECLARED.spec(build_timm, preprocess=timm_preprocess, weights_for=timm_weights,
                     outputs=LazyArchTable(lambda a: {"features": _num_features(a)},
                                           DECLARED.archs),
                     weights=LazyArchTable(timm_weights, DECLARED.archs),
                     input_size=LazyArchTable(lambda a: timm_preprocess(a).size, DECLARED.archs))
