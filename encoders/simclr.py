"""``simclr``: SimCLRv2 ResNet (Chen et al. 2020, "Big Self-Supervised Models are Strong
Semi-Supervised Learners") as dgm-eval runs it: ``r50_1x_sk1`` converted from the official
TensorFlow checkpoint by the public SimCLRv2-Pytorch converter (``{"resnet": ..., "head": ...}``).

The network is written here because no library has it: a ResNet with a three-convolution stem
(with selective kernels, SK), bottleneck blocks whose 3×3 convolution is a selective kernel
(two branches of one 2C-channel convolution, mixed by a softmax over a squeeze-excite style
gate of width max(C·sk_ratio, 32)), and SK projection shortcuts (zero-pad right/bottom, 2×2
average pool, 1×1 convolution); BatchNorm eps 1e-5; symmetric ``(k-1)//2`` padding as the
converter uses. Parameter names equal the converter's, so its ``resnet`` state dict loads
strictly (``fc`` is not used). Output (2048·width): the global average of the last block,
before ``fc`` and the contrastive head (dgm-eval's ``ResNet.forward``).

Preprocessing as dgm-eval's: ``Resize(224)`` + ImageNet mean/std (the TensorFlow original
takes [0, 1] inputs without mean/std; dgm-eval normalises and evalkit follows dgm-eval so its
numbers match). evalkit's default: shorter side to 224 with the clean float bicubic resize,
then the centre 224×224 crop; ``--resize legacy``: dgm-eval's torchvision bilinear resize,
aspect kept. Weights: ``r50_1x_sk1.pth`` in the torch hub folder or ``--weights FILE`` (there is
no official PyTorch download: run the converter on the TF checkpoint).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.encoders.base import Preprocess, WeightsSpec
from evalkit.encoders.spec import BUILTINS, check_arch
from evalkit.encoders.swav import ConvEncoder, imagenet_resnet_preprocess
from evalkit.encoders.weights import build_module, load_checkpoint

DECLARED = BUILTINS["simclr"]
BN_EPS = 1e-5
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
ARCHS = DECLARED.archs  # r<depth>_<width>x_sk<0|1>
DEFAULT_ARCH = DECLARED.default_arch


def parse_arch(arch: str) -> tuple[tuple[int, ...], int, float]:
    """``r50_1x_sk1`` -> (blocks per stage, width multiplier, SK ratio 0.0625 or 0)."""
    depth, width, sk = arch.split("_")
    return DEPTHS[int(depth[1:])], int(width[:-1]), 0.0625 if sk == "sk1" else 0.0


def _weights(arch: str) -> WeightsSpec:
    return WeightsSpec(filename=f"{arch}.pth")


def simclr_preprocess(arch: str = DEFAULT_ARCH, resize: str = "clean") -> Preprocess:
    check_arch("simclr", arch, ARCHS)
    return imagenet_resnet_preprocess("simclr", resize)


# --------------------------------------------------------------------------- network

def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=False)


class BNAct(nn.Sequential):
    """BatchNorm (eps 1e-5) then ReLU (or nothing): the converter's ``BatchNormRelu``."""

    def __init__(self, channels: int, relu: bool = True):
        super().__init__(nn.BatchNorm2d(channels, eps=BN_EPS), nn.ReLU() if relu else nn.Identity())


class SelectiveKernel(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, sk_ratio: float, min_dim: int = 32):
        super().__init__()
        mid = max(int(cout * sk_ratio), min_dim)
        self.main_conv = nn.Sequential(conv(cin, 2 * cout, stride=stride), BNAct(2 * cout))
        self.mixing_conv = nn.Sequential(conv(cout, mid, 1), BNAct(mid), conv(mid, 2 * cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.main_conv(x).chunk(2, dim=1)
        gate = self.mixing_conv((a + b).mean(dim=(2, 3), keepdim=True))
        ga, gb = gate.chunk(2, dim=1)
        wa = torch.sigmoid(ga - gb)  # softmax over the two branches
        return b + (a - b) * wa


class Projection(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, sk_ratio: float):
        super().__init__()
        if sk_ratio > 0:
            self.shortcut = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)),
                                          nn.AvgPool2d(kernel_size=2, stride=stride),
                                          conv(cin, cout, 1))
        else:
            self.shortcut = conv(cin, cout, 1, stride)
        self.bn = BNAct(cout, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.shortcut(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int, sk_ratio: float, project: bool):
        super().__init__()
        self.projection = Projection(cin, 4 * width, stride, sk_ratio) if project else nn.Identity()
        mid = [SelectiveKernel(width, width, stride, sk_ratio)] if sk_ratio > 0 else \
            [conv(width, width, 3, stride), BNAct(width)]
        self.net = nn.Sequential(conv(cin, width, 1), BNAct(width), *mid,
                                 conv(width, 4 * width, 1), BNAct(4 * width, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.projection(x) + self.net(x))


class Stage(nn.Module):
    def __init__(self, n: int, cin: int, width: int, stride: int, sk_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList([Bottleneck(cin, width, stride, sk_ratio, True)] +
                                    [Bottleneck(4 * width, width, 1, sk_ratio, False)
                                     for _ in range(n - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def stem(width_mult: int, sk_ratio: float) -> nn.Sequential:
    c = 32 * width_mult
    if sk_ratio > 0:
        ops = [conv(3, c, 3, 2), BNAct(c), conv(c, c), BNAct(c), conv(c, 2 * c)]
    else:
        ops = [conv(3, 2 * c, 7, 2)]
    return nn.Sequential(*ops, BNAct(2 * c), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


class SimCLRv2ResNet(nn.Module):
    """SimCLRv2 ResNet; ``forward`` -> ``(global average of the last stage,)``."""

    def __init__(self, arch: str = DEFAULT_ARCH):
        super().__init__()
        depths, wm, sk = parse_arch(arch)
        stages, cin = [stem(wm, sk)], 64 * wm
        for i, n in enumerate(depths):
            width = 64 * wm * 2 ** i
            stages.append(Stage(n, cin, width, 1 if i == 0 else 2, sk))
            cin = 4 * width
        self.net = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, 1000)  # the supervised head of the checkpoint: not used
        self.dims = cin

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net(x).mean(dim=(2, 3)),)


def _init_random(net: nn.Module) -> None:
    """Random BatchNorm statistics so that random-weight tests exercise every tensor."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, std=0.1)
            m.running_mean.normal_(std=0.1)
            m.running_var.uniform_(0.5, 1.5)


def build_simclr(arch: str | None = None, weights: str | None = None, resize: str = "clean",
                 random_init: bool = False) -> ConvEncoder:
    """Factory registered as ``simclr``: loads the converter's ``resnet`` state dict."""
    arch = arch or DEFAULT_ARCH
    preprocess = simclr_preprocess(arch, resize)
    net = build_module(lambda: SimCLRv2ResNet(arch), random_init=random_init, init=_init_random)
    sha = None
    if not random_init:  # built on the meta device: the checkpoint's tensors are assigned
        sha = load_checkpoint(net, "simclr", _weights(arch), weights)
    enc = ConvEncoder("simclr", net, arch, preprocess, net.dims, lambda m: (), sha)
    return enc.eval().requires_grad_(False)


SPEC = DECLARED.spec(build_simclr, preprocess=simclr_preprocess,
                     outputs={a: {"features": 2048 * parse_arch(a)[1]} for a in ARCHS},
                     weights={a: _weights(a) for a in ARCHS}, input_size={a: 224 for a in ARCHS})
