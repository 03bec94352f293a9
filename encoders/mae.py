"""``mae``: MAE ViT-L/16 pretrained encoder (He et al. 2022) as dgm-eval runs it.

Model: the official MAE ``vit_large_patch16`` (timm's ``VisionTransformer`` with patch 16,
width 1024, depth 24, 16 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6), which is what
the MAE repository and dgm-eval build on. Output (1024): the CLS token after the final norm
(dgm-eval's ``forward_features`` with ``global_pool=False``). Checkpoint position embeddings of
another grid are resized as MAE's ``interpolate_pos_embed`` does (bicubic to the target size,
``align_corners=False``, no antialias).

Preprocessing: the image resized to 224×224 (clean float bicubic), ImageNet mean/std. This is
exactly dgm-eval's ``--clean_resize`` path (``pil_resize(image, (224, 224))``). dgm-eval's
other path cannot run: it calls ``torchvision.transforms.resize``/``to_tensor``, which do not
exist (AttributeError), and would feed non-square images to a fixed-size ViT; so ``mae`` has no
``--resize legacy``.

Weights: ``mae_pretrain_vit_large.pth`` (``{"model": ...}``; a ``decoder*``/``mask_token`` part is
ignored) in the torch hub folder, timm's ``timm/vit_large_patch16_224.mae`` in the Hugging Face
cache, or ``--weights FILE``.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from evalkit.encoders.base import Encoder, Preprocess, WeightsSpec
from evalkit.encoders.spec import BUILTINS, IMAGENET_MEAN, IMAGENET_STD, check_arch
from evalkit.encoders.timm_models import import_timm
from evalkit.encoders.weights import build_module, load_checkpoint
from evalkit.errors import InputError

DECLARED = BUILTINS["mae"]
ARCH = DECLARED.default_arch
SIZE = 224
VIT_L16 = dict(img_size=SIZE, patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4)
WEIGHTS = WeightsSpec(
    filename="mae_pretrain_vit_large.pth",
    url="https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth",
    hf_repo="timm/vit_large_patch16_224.mae",
    hf_filename="model.safetensors",
)


def mae_preprocess(arch: str = ARCH, resize: str = "clean") -> Preprocess:
    """224×224 clean resize (dgm-eval's --clean_resize); ImageNet mean/std in the module."""
    check_arch("mae", arch, DECLARED.archs)
    if resize != "clean":
        raise InputError("mae has no --resize legacy: dgm-eval's only working MAE transform is "
                         "its clean 224×224 resize, evalkit's default")
    return Preprocess(size=SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def mae_vit(**overrides) -> torch.nn.Module:
    """MAE's ``vit_large_patch16`` as a timm ``VisionTransformer`` without a head."""
    VisionTransformer = import_timm().models.vision_transformer.VisionTransformer
    kwargs = dict(VIT_L16, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                  num_classes=0, global_pool="token")
    kwargs.update(overrides)
    return VisionTransformer(**kwargs)


def resize_pos_embed(pos: torch.Tensor, num_patches: int) -> torch.Tensor:
    """MAE's ``interpolate_pos_embed``: the square grid of a 1×(1+M²)×D embedding resized
    bicubically to √num_patches (class token kept)."""
    extra = pos.shape[1] - int(math.isqrt(pos.shape[1] - 1)) ** 2
    old, new = int(math.isqrt(pos.shape[1] - extra)), int(math.isqrt(num_patches))
    if old == new:
        return pos
    grid = pos[:, extra:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :extra], grid.permute(0, 2, 3, 1).flatten(1, 2).to(pos.dtype)], 1)


def convert_state_dict(sd: dict, net: torch.nn.Module, path=None) -> dict:
    """MAE pretrain / timm checkpoint -> the encoder's keys (decoder and head dropped)."""
    drop = ("decoder", "mask_token", "head.")
    sd = {k: v for k, v in sd.items() if not k.startswith(drop)}
    if "pos_embed" in sd and sd["pos_embed"].shape != net.pos_embed.shape:
        sd["pos_embed"] = resize_pos_embed(sd["pos_embed"], net.patch_embed.num_patches)
    return sd


class MAEEncoder(Encoder):
    """MAE CLS features (``features``) from 224-px inputs in [0, 255]."""

    name = "mae"

    def __init__(self, net: torch.nn.Module, arch: str = ARCH, resize: str = "clean",
                 weights_sha256: str | None = None):
        super().__init__()
        self.arch = arch
        self.preprocess = mae_preprocess(arch, resize)
        self.weights_sha256 = weights_sha256
        self.net = net
        self.outputs = {"features": int(net.num_features)}
        self.set_normalisation(IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×S×S in [0, 255] (S the model's size, 224) -> {"features"}."""
        x = self.normalise(images, tuple(self.net.patch_embed.img_size))
        return {"features": self.net.forward_features(x)[:, 0].float()}


def build_mae(arch: str | None = None, weights: str | None = None, resize: str = "clean",
              random_init: bool = False, _vit_kwargs: dict | None = None) -> MAEEncoder:
    """Factory registered as ``mae``. ``_vit_kwargs`` (tests): a smaller ViT, same code path."""
    arch = arch or ARCH
    mae_preprocess(arch, resize)
    net = build_module(lambda: mae_vit(**(_vit_kwargs or {})), random_init=random_init)
    sha = None
    if not random_init:  # built on the meta device: the checkpoint's tensors are assigned
        sha = load_checkpoint(net, "mae", WEIGHTS, weights, lambda sd, path: convert_state_dict(sd, net))
    return MAEEncoder(net, arch, resize, sha).eval().requires_grad_(False)


SPEC = DECLARED.spec(build_mae, preprocess=mae_preprocess, weights={ARCH: WEIGHTS},
                     input_size={ARCH: SIZE})
