"""``convnext``: ConvNeXt-Large ImageNet-22k (Liu et al. 2022) as dgm-eval runs it (Stein et al.
2023, "Exposing flaws of generative model evaluation metrics").

Model: timm ``convnext_large.fb_in22k`` (dgm-eval's ``convnext_large_in22k``: timm's old name;
``--encoder timm --arch convnext_large_in22k`` maps it too).
Output (1536): ``forward_features`` -> the head's global average pool -> the head's LayerNorm
-> flatten, i.e. dgm-eval's ``ConvNeXTEncoder.forward`` (timm's pre-logits embedding).
Preprocessing: shorter side to 256 (bicubic), centre crop 224, ImageNet mean/std (dgm-eval's
``Resize(256, BICUBIC) + CenterCrop(224)``, which is also timm's ``crop_pct=0.875``). Default
resize: clean (float PIL bicubic); ``--resize legacy``: dgm-eval's torchvision transform on the
8-bit PIL image (differs by the uint8 re-quantisation only).

Weights: the official ``convnext_large_22k_224.pth`` (``{"model": ...}``, original names mapped
by timm's filter) in the torch hub folder, or timm's ``timm/convnext_large.fb_in22k``
(``model.safetensors``) in the Hugging Face cache, or ``--weights FILE``.
"""
from __future__ import annotations

from evalkit.encoders.base import Preprocess, WeightsSpec
from evalkit.encoders.spec import BUILTINS, IMAGENET_MEAN, IMAGENET_STD, check_arch
from evalkit.encoders.timm_models import (
    TimmEncoder,
    build_timm_model,
    canonical_arch,
    preprocess_from_cfg,
)

DECLARED = BUILTINS["convnext"]
ARCH = DECLARED.default_arch
WEIGHTS = WeightsSpec(
    filename="convnext_large_22k_224.pth",
    url="https://dl.fbaipublicfiles.com/convnext/convnext_large_22k_224.pth",
    hf_repo="timm/convnext_large.fb_in22k",
    hf_filename="model.safetensors",
)


def convnext_preprocess(arch: str = ARCH, resize: str = "clean") -> Preprocess:
    """256 shorter side (bicubic) + centre crop 224; ImageNet mean/std in the module."""
    check_arch("convnext", arch, DECLARED.archs)
    cfg = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic",
           "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    return preprocess_from_cfg(cfg, resize, "convnext")


def build_convnext(arch: str | None = None, weights: str | None = None, resize: str = "clean",
                   random_init: bool = False, _timm_model: str | None = None) -> TimmEncoder:
    """Factory registered as ``convnext``. ``_timm_model`` (tests): another timm ConvNeXt
    (e.g. ``convnext_atto``) built and loaded the same way."""
    arch = arch or ARCH
    preprocess = convnext_preprocess(arch, resize)
    model = canonical_arch(_timm_model) if _timm_model else ARCH
    net, sha = build_timm_model(model, weights, "convnext", WEIGHTS, random_init=random_init)
    return TimmEncoder(net, "convnext", arch, preprocess, sha).eval().requires_grad_(False)


SPEC = DECLARED.spec(build_convnext, preprocess=convnext_preprocess, weights={ARCH: WEIGHTS},
                     input_size={ARCH: 224})
