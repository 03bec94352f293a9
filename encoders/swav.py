"""``swav``: SwAV ResNet-50, 800 epochs (Caron et al. 2020) as dgm-eval runs it.

Model: torchvision's ResNet-50. SwAV's own ResNet pads the input by one zero pixel and gives
``conv1`` padding 2: the same zero padding of 3 as torchvision's ``conv1``, so the official
weights load into torchvision's network unchanged. Output (2048): global average pool after
``layer4`` (SwAV's ``forward_backbone``; the projection head and prototypes are not used, as in
dgm-eval, where they are never built).

Preprocessing: dgm-eval's ``Resize(224)`` (shorter side, bilinear) + ImageNet mean/std keeps
non-square images non-square. evalkit's default: the shorter side to 224 (clean float
bicubic) then the centre 224×224 crop, so batches stack and every encoder sees the same
square field; on square images this is dgm-eval's geometry (see ``encoders/README`` in the
main README for the measured difference). ``--resize legacy``: dgm-eval's transform exactly
(torchvision bilinear ``Resize(224)`` on the 8-bit PIL image, non-square kept).

Batches run through a channels-last copy of the network with BatchNorm folded into the
convolutions (on CPU a frozen, oneDNN-fused trace; ``encoders/runtime.py``).

Weights: ``swav_800ep_pretrain.pth.tar`` (``module.``-prefixed keys; projection head and
prototypes ignored) in the torch hub folder, or ``--weights FILE``.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet50

from evalkit.encoders.base import Encoder, Preprocess, WeightsSpec
from evalkit.encoders.runtime import InferenceCopy
from evalkit.encoders.spec import BUILTINS, IMAGENET_MEAN, IMAGENET_STD, check_arch, check_resize
from evalkit.encoders.weights import build_module, load_checkpoint

DECLARED = BUILTINS["swav"]
ARCH = DECLARED.default_arch
SIZE = 224
WEIGHTS = WeightsSpec(
    filename="swav_800ep_pretrain.pth.tar",
    url="https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar",
)
HEAD_KEYS = ("projection_head.", "prototypes.", "fc.")


def imagenet_resnet_preprocess(encoder: str, resize: str) -> Preprocess:
    """dgm-eval's ``Resize(224)`` ResNet preprocessing: clean resize + centre crop by default,
    its own torchvision bilinear resize (aspect kept, no crop) under ``legacy``."""
    check_resize(encoder, resize)
    if resize == "legacy":
        return Preprocess(size=SIZE, resize="pil", keep_aspect=True, interpolation="bilinear",
                          mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return Preprocess(size=SIZE, crop=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def swav_preprocess(arch: str = ARCH, resize: str = "clean") -> Preprocess:
    check_arch("swav", arch, DECLARED.archs)
    return imagenet_resnet_preprocess("swav", resize)


class PooledResNet(nn.Module):
    """A torchvision ResNet without its fc: ``(global average pool after layer4,)``."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.resnet = resnet
        resnet.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.resnet(x),)


def resnet_fold_pairs(m: nn.Module) -> list[tuple[str, str]]:
    """(conv, BatchNorm) attribute pairs of torchvision's ResNet modules."""
    if isinstance(m, nn.Sequential) and len(m) == 2 and isinstance(m[0], nn.Conv2d) \
            and isinstance(m[1], nn.BatchNorm2d):
        return [("0", "1")]
    return [(c, b) for c, b in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
            if isinstance(getattr(m, c, None), nn.Conv2d)
            and isinstance(getattr(m, b, None), nn.BatchNorm2d)]


class ConvEncoder(Encoder):
    """A CNN returning ``(pooled features,)``, run through :class:`InferenceCopy`."""

    def __init__(self, name: str, net: nn.Module, arch: str, preprocess: Preprocess, dims: int,
                 fold_pairs, weights_sha256: str | None = None, fast: bool = True):
        super().__init__()
        self.name, self.arch, self.preprocess = name, arch, preprocess
        self.weights_sha256 = weights_sha256
        self.net = net
        self.outputs = {"features": dims}
        self.fast = fast
        self._inference = InferenceCopy(fold_pairs)
        self.set_normalisation(preprocess.mean, preprocess.std)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×H×W in [0, 255] (any size) -> {"features": B×dims}."""
        x = self.normalise(images)
        (feats,) = self._inference(self.net, x) if self.fast else self.net(x)
        return {"features": feats.float()}


def swav_state_dict(sd: dict, path=None) -> dict:
    """SwAV checkpoint (``module.`` stripped by the loader) -> torchvision ResNet-50 keys."""
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if not k.startswith(HEAD_KEYS)}


def build_swav(arch: str | None = None, weights: str | None = None, resize: str = "clean",
               random_init: bool = False) -> ConvEncoder:
    """Factory registered as ``swav``."""
    arch = arch or ARCH
    preprocess = swav_preprocess(arch, resize)
    net = build_module(lambda: PooledResNet(resnet50(weights=None)), random_init=random_init)
    sha = None
    if not random_init:  # built on the meta device: the checkpoint's tensors are assigned
        sha = load_checkpoint(net.resnet, "swav", WEIGHTS, weights, swav_state_dict)
    enc = ConvEncoder("swav", net, arch, preprocess, 2048, resnet_fold_pairs, sha)
    return enc.eval().requires_grad_(False)


SPEC = DECLARED.spec(build_swav, preprocess=swav_preprocess, weights={ARCH: WEIGHTS},
                     input_size={ARCH: SIZE})
