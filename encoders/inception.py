"""``inception``: the FID Inception-v3 (TF 2015-12-05 graph ported to PyTorch by pytorch-fid).

The network follows torchvision's ``Inception3`` layout with pytorch-fid's FID modifications
(``FIDInceptionA/C/E_1/E_2``: average pools that exclude padding, a max pool in the last
block), so the state-dict keys are those of pytorch-fid's weights file
``pt_inception-2015-12-05-6726825d.pth``. One forward gives

* ``features``: pool3, 2048-d (FID, Heusel et al. 2017; equals pytorch-fid's ``InceptionV3``);
* ``logits``: the 1008-way fc layer *without* its bias, ``pool3 @ fc.weight.T`` (the TF graph's
  unbiased logits that the Inception Score uses, as torch-fidelity's ``logits_unbiased``);
* ``spatial``: the ADM evaluator's ``mixed_6/conv`` tensor (Nash et al. 2021, sFID): the
  output of ``Mixed_6d.branch1x1`` after BN+ReLU, first 7 channels, flattened in the TF
  (H, W, C) order that ADM's ``spatial[..., :7].reshape(N, -1)`` uses: 17·17·7 = 2023.

Input is B×3×H×W in [0, 255]. ``resize="clean"``: the data workers resized to 299 (PIL
bicubic, clean-fid), the network only maps x/255 to [-1, 1]. ``resize="legacy"``: pytorch-fid's
in-network ``F.interpolate(size=(299, 299), mode="bilinear", align_corners=False)`` on x/255,
then 2x-1; batches may then hold different native sizes, passed as a list of 3×H×W tensors.
``resize="tf1"``: the TF graph's own preprocessing, as the ADM evaluator, TTUR and StyleGAN's
port feed it: native-size float32 pixels, TF1 ``ResizeBilinear`` to 299 (no half-pixel centres,
:func:`evalkit.images.resize.tf1_bilinear`), then (x − 128) / 128; equals torch-fidelity's
``FeatureExtractorInceptionV3`` to float32 round-off. ``resize="stylegan3"``: the preprocessing
of StyleGAN's TorchScript translation of the same graph (``inception-2015-12-05.pkl``, used by
StyleGAN2-ADA/StyleGAN3 metrics and EDM2's ``calculate_metrics.py``): TF1's sampling positions
through ``affine_grid``/``grid_sample`` (:func:`evalkit.images.resize.stylegan3_bilinear`), then
(x − 128) / 128.

Batches run through a BatchNorm-folded ``channels_last`` copy of the network (on CPU in fp32,
frozen, fused by oneDNN Graph and run as concurrent one-thread slices; see
``encoders/runtime.py``): about 2x faster on CPU, outputs within 1e-6 of the plain module's.
``InceptionEncoder(fast=False)`` runs ``net`` as written.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.encoders.base import Encoder, Preprocess, WeightsSpec
from evalkit.encoders.runtime import InferenceCopy
from evalkit.encoders.spec import BUILTINS, check_arch, check_resize
from evalkit.encoders.weights import build_module, load_checkpoint
from evalkit.errors import InputError
from evalkit.images.resize import stylegan3_bilinear, tf1_bilinear

DECLARED = BUILTINS["inception"]
ARCH = DECLARED.default_arch
SIZE = 299
NUM_CLASSES = 1008
SPATIAL_CHANNELS = 7
OUTPUTS = dict(DECLARED.default_outputs)  # 2048, NUM_CLASSES, SPATIAL_CHANNELS·17·17
WEIGHTS = WeightsSpec(
    filename="pt_inception-2015-12-05-6726825d.pth",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
    sha256="6726825d",  # torch.hub convention: the leading hex of the file's sha256 is in its name
)


def inception_preprocess(arch: str = ARCH, resize: str = "clean") -> Preprocess:
    """``clean``: workers resize to 299; ``legacy``: native size, pytorch-fid's bilinear resize
    in-network; ``tf1``: native size, the TF graph's ResizeBilinear and (x − 128) / 128;
    ``stylegan3``: native size, StyleGAN's detector's grid_sample resize and (x − 128) / 128."""
    check_arch("inception", arch, DECLARED.archs)
    check_resize("inception", resize)
    if resize == "legacy":
        return Preprocess(size=SIZE, resize="none", in_network="bilinear-299")
    if resize == "tf1":
        return Preprocess(size=SIZE, resize="none", in_network="tf1-bilinear-299-x128")
    if resize == "stylegan3":
        return Preprocess(size=SIZE, resize="none", in_network="sg3-gridsample-299-x128")
    return Preprocess(size=SIZE)


# --------------------------------------------------------------------------- network

class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU, torchvision's ``BasicConv2d``."""

    def __init__(self, cin: int, cout: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    """TF's 3×3 average pool, which ignores the zero padding (pytorch-fid's FID patch)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """Mixed_5b/c/d."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Mixed_6a (grid reduction 35 -> 17)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    """Mixed_6b/c/d/e. ``tap`` (when a list) receives the ``branch1x1`` output (sFID)."""

    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor, tap: list | None = None) -> torch.Tensor:
        b1 = self.branch1x1(x)
        if tap is not None:
            tap.append(b1)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Mixed_7a (grid reduction 17 -> 8)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3,
                      self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (average pool without padding) and Mixed_7c (max pool: the FID graph's quirk)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_tf(x)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 body; parameter names equal pytorch-fid's weights file."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [-1, 1], B×3×299×299 -> (pool3 B×2048, Mixed_6d.branch1x1 B×192×17×17)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))
        tap: list[torch.Tensor] = []
        x = self.Mixed_6e(self.Mixed_6d(x, tap=tap))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        pool3 = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return pool3, tap[0]


def _init_random(net: nn.Module) -> None:
    """Variance-preserving random weights for ``random_init`` builds (He-normal convs, small fc),
    so that activations keep a sensible scale through the 94 conv layers."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    return [("conv", "bn")] if isinstance(module, BasicConv2d) else []


# --------------------------------------------------------------------------- encoder

class InceptionEncoder(Encoder):
    """The FID Inception-v3 as an evalkit encoder (see the module docstring)."""

    name = "inception"
    arch = ARCH

    def __init__(self, net: FIDInceptionV3, resize: str = "clean",
                 weights_sha256: str | None = None, fast: bool = True):
        super().__init__()
        self.fast = fast  # run a BN-folded, channels_last (CPU: oneDNN-fused) copy of ``net``
        self._inference = InferenceCopy(_conv_bn_pairs)
        self.preprocess = inception_preprocess(ARCH, resize)
        self.legacy = resize == "legacy"
        self.tf1 = resize == "tf1"
        self.sg3 = resize == "stylegan3"
        self.outputs = dict(OUTPUTS)
        self.weights_sha256 = weights_sha256
        self.net = net

    def _prepare(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Images in [0, 255] -> the network's input in [-1, 1] (see the module docstring)."""
        device = self.net.fc.weight.device
        if isinstance(images, torch.Tensor):
            batch = [images.unsqueeze(0) if images.ndim == 3 else images]
        elif isinstance(images, (list, tuple)) and images:
            batch = [im.unsqueeze(0) if im.ndim == 3 else im for im in images]
        else:
            raise InputError(f"inception encoder expects B×3×H×W images, got {type(images)}")
        out = []
        for x in batch:
            if x.ndim != 4 or x.shape[1] != 3:
                raise InputError(f"inception encoder expects 3-channel images, got "
                                 f"{tuple(x.shape)}")
            x = x.to(device=device, dtype=torch.float32)
            if self.tf1:
                out.append((tf1_bilinear(x, SIZE) - 128) / 128)
                continue
            if self.sg3:
                out.append((stylegan3_bilinear(x, SIZE) - 128) / 128)
                continue
            x = x / 255.0
            if self.legacy:
                x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            elif tuple(x.shape[2:]) != (SIZE, SIZE):
                raise InputError(f"inception encoder (clean resize) expects {SIZE}×{SIZE} "
                                 f"inputs, got {tuple(x.shape[2:])}")
            out.append(2 * x - 1)
        return torch.cat(out, 0) if len(out) > 1 else out[0]

    def forward(self, images) -> dict[str, torch.Tensor]:
        """Images in [0, 255] (a batch, or in legacy mode a list of 3×H×W) -> outputs."""
        x = self._prepare(images)
        pool3, mixed_6 = self._inference(self.net, x) if self.fast else self.net(x)
        pool3 = pool3.float()
        logits = pool3 @ self.net.fc.weight.float().T
        spatial = mixed_6[:, :SPATIAL_CHANNELS].float().permute(0, 2, 3, 1).flatten(1)
        return {"features": pool3, "logits": logits, "spatial": spatial}


def _filter_state_dict(sd: dict, path=None) -> dict:
    """Drop BatchNorm ``num_batches_tracked`` (present in some copies of the file, not others;
    the loader sets them all to 0: they are unused at inference)."""
    return {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def build_inception(arch: str | None = None, weights: str | None = None, resize: str = "clean",
                    random_init: bool = False) -> InceptionEncoder:
    """Factory registered as ``inception``: loads pytorch-fid's weights file strictly."""
    inception_preprocess(arch or ARCH, resize)  # validates arch and resize before any I/O
    net = build_module(FIDInceptionV3, random_init=random_init, init=_init_random)
    sha = None
    if not random_init:  # built on the meta device: the checkpoint's tensors are assigned
        sha = load_checkpoint(net, "inception", WEIGHTS, weights, _filter_state_dict)
    enc = InceptionEncoder(net, resize=resize, weights_sha256=sha)
    return enc.eval().requires_grad_(False)


SPEC = DECLARED.spec(build_inception, preprocess=inception_preprocess, weights={ARCH: WEIGHTS},
                     input_size={ARCH: SIZE})
