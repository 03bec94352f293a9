"""``dinov2``: DINOv2 ViT-S/B/L/g with 14-px patches (Oquab et al. 2023), CLS token after the
final norm, as FD-DINOv2 (Stein et al. 2023, dgm-eval; Karras et al. 2024, EDM2) uses it.

The backbone is written here (no timm needed) to match facebookresearch/dinov2's
``DinoVisionTransformer`` (``hubconf`` models: ``img_size=518``, ``init_values=1.0``,
``block_chunks=0``, no register tokens): pre-norm blocks with LayerScale, LayerNorm eps 1e-6,
exact GELU MLP (SwiGLU for ViT-g), and the official ``interpolate_pos_encoding``: the stored
37×37 position grid is resized *bicubically with a scale factor* ``(n + 0.1) / 37`` (the
``interpolate_offset`` of 0.1, no antialias), not to a target size -- timm's default
size-based resample gives features that differ far beyond float error.

Weights: the official checkpoints (``dinov2_vitl14_pretrain.pth``, ...) or timm's
(``timm/vit_large_patch14_dinov2.lvd142m``, ``model.safetensors`` / ``pytorch_model.bin``,
whose ``mlp.fc1/fc2`` are the official ViT-g ``mlp.w12/w3``). Input: 224×224 resized by the
data workers, scaled to [0, 1] and normalised with the ImageNet mean/std inside the module.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.encoders.base import Encoder, Preprocess, WeightsSpec
from evalkit.encoders.spec import BUILTINS, IMAGENET_MEAN, IMAGENET_STD, check_arch, check_resize
from evalkit.encoders.weights import build_module, load_checkpoint
from evalkit.errors import InputError

DECLARED = BUILTINS["dinov2"]

PATCH = 14
GRID = 37  # the checkpoints' position grid: 518 px / 14
SIZE = 224
INTERPOLATE_OFFSET = 0.1
# arch -> (embed dim, depth, heads, ffn), for each declared arch
ARCHS = dict(zip(DECLARED.archs, [(384, 12, 6, "mlp"), (768, 12, 12, "mlp"),
                                  (1024, 24, 16, "mlp"), (1536, 40, 24, "swiglu")], strict=True))
_TIMM_NAMES = dict(zip(DECLARED.archs, ("small", "base", "large", "giant"), strict=True))
DEFAULT_ARCH = DECLARED.default_arch


def _weights(arch: str) -> WeightsSpec:
    """The official file (Meta publishes no sha256 for it, and its name carries none: not
    verified) or timm's Hugging Face copy (verified against its hub sha256, the blob name)."""
    name = f"dinov2_{arch}"
    return WeightsSpec(
        filename=f"{name}_pretrain.pth",
        url=f"https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth",
        hf_repo=f"timm/vit_{_TIMM_NAMES[arch]}_patch14_dinov2.lvd142m",
        hf_filename="model.safetensors",
    )


def dinov2_preprocess(arch: str = DEFAULT_ARCH, resize: str = "clean") -> Preprocess:
    """224×224 clean resize; ImageNet mean/std applied in the module. ``resize="torch"``: EDM2's
    ``calculate_metrics.py`` instead: native-size images, resized in the module with
    ``F.interpolate(x.float(), (224, 224), mode="bicubic", antialias=True)``, no clamp."""
    check_arch("dinov2", arch, DECLARED.archs)
    check_resize("dinov2", resize)
    if resize == "torch":
        return Preprocess(size=SIZE, resize="none", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          in_network="torch-bicubic-antialias-224")
    return Preprocess(size=SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD)


# --------------------------------------------------------------------------- network

class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """DINOv2's ``SwiGLUFFNFused``: hidden = (int(4·dim·2/3) + 7) // 8 · 8."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = (int(4 * dim * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SwiGLUFFN(dim) if ffn == "swiglu" else Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def interpolate_pos_encoding(pos_embed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The official DINOv2 position-embedding resize for an input of ``height``×``width`` px.

    ``pos_embed`` is 1×(1+M²)×D (class token first). The M×M grid is resized bicubically
    (no antialias) with ``scale_factor = ((height//14 + 0.1)/M, (width//14 + 0.1)/M)``, exactly
    as ``DinoVisionTransformer.interpolate_pos_encoding`` (``interpolate_offset=0.1``).
    At the native size (square, M×14 px) the stored embedding is returned unchanged.
    """
    n = pos_embed.shape[1] - 1
    h0, w0 = height // PATCH, width // PATCH
    if h0 * w0 == n and h0 == w0:
        return pos_embed
    m = int(math.sqrt(n))
    dim = pos_embed.shape[-1]
    pe = pos_embed.float()
    grid = pe[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, mode="bicubic", antialias=False,
                         scale_factor=(float(h0 + INTERPOLATE_OFFSET) / m,
                                       float(w0 + INTERPOLATE_OFFSET) / m))
    if tuple(grid.shape[-2:]) != (h0, w0):  # pragma: no cover - float edge case
        raise InputError(f"dinov2: position grid resize gave {tuple(grid.shape[-2:])}, "
                         f"expected {(h0, w0)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([pe[:, :1], grid], dim=1).to(pos_embed.dtype)


class DinoVisionTransformer(nn.Module):
    """DINOv2 backbone; parameter names equal the official checkpoints' (minus ``mask_token``)."""

    def __init__(self, arch: str):
        super().__init__()
        dim, depth, heads, ffn = ARCHS[arch]
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + GRID * GRID, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, ffn) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images B×3×H×W (H, W multiples of 14) -> CLS token after ``norm``."""
        _, _, h, w = x.shape
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + interpolate_pos_encoding(self.pos_embed, h, w)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)[:, 0]


def _init_random(net: DinoVisionTransformer, generator: torch.Generator | None = None) -> None:
    """timm-style ViT init (truncated normal 0.02) for ``random_init`` builds."""
    nn.init.trunc_normal_(net.pos_embed, std=0.02, generator=generator)
    nn.init.normal_(net.cls_token, std=1e-6, generator=generator)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, generator=generator)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- checkpoints

def convert_state_dict(sd: dict, arch: str, encoder_name: str = "dinov2", path="") -> dict:
    """Official or timm DINOv2 state dict -> this module's names.

    Official: drops the unused ``mask_token``. timm: ``mlp.fc1/fc2`` -> ``mlp.w12/w3`` for the
    SwiGLU ViT-g; an empty ``head`` is dropped; FSDP-chunked block names
    (``blocks.<chunk>.<i>.``) are flattened. Register-token checkpoints are refused.
    """
    if "register_tokens" in sd or "reg_token" in sd:
        raise InputError(f"{encoder_name} weights {path}: register-token DINOv2 checkpoints "
                         "(*_reg4_*) are not supported")
    chunked = re.compile(r"^blocks\.\d+\.(\d+)\.")  # FSDP block chunks: blocks.<chunk>.<i>.
    sd = {chunked.sub(r"blocks.\1.", k): v for k, v in sd.items()}
    swiglu = ARCHS[arch][3] == "swiglu"
    out = {}
    for k, v in sd.items():
        if k == "mask_token" or k.startswith("head."):
            continue
        if swiglu and ".mlp.fc1." in k:
            k = k.replace(".mlp.fc1.", ".mlp.w12.")
        elif swiglu and ".mlp.fc2." in k:
            k = k.replace(".mlp.fc2.", ".mlp.w3.")
        out[k] = v
    return out


# --------------------------------------------------------------------------- encoder

class DINOv2Encoder(Encoder):
    """DINOv2 CLS features (``features``) from 224-px inputs in [0, 255]."""

    name = "dinov2"

    def __init__(self, net: DinoVisionTransformer, arch: str = DEFAULT_ARCH,
                 resize: str = "clean", weights_sha256: str | None = None):
        super().__init__()
        self.arch = arch
        self.preprocess = dinov2_preprocess(arch, resize)
        self.torch_resize = resize == "torch"
        self.outputs = {"features": ARCHS[arch][0]}
        self.weights_sha256 = weights_sha256
        self.net = net
        self.set_normalisation(IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×H×W in [0, 255], H and W multiples of 14 (224 by default) -> {"features"}.

        With ``resize="torch"``: any size (a batch, or a list of 3×H×W of different sizes),
        resized here as EDM2 does (see :func:`dinov2_preprocess`)."""
        if self.torch_resize:
            images = self._edm2_resize(images)
        x = self.normalise(images)
        if x.shape[2] % PATCH or x.shape[3] % PATCH:
            raise InputError(f"dinov2 encoder needs sides that are multiples of {PATCH}, got "
                             f"{tuple(x.shape[2:])}")
        return {"features": self.net(x).float()}


    def _edm2_resize(self, images) -> torch.Tensor:
        batch = [images] if isinstance(images, torch.Tensor) else [im[None] for im in images]
        out = []
        for x in batch:
            if x.ndim != 4 or x.shape[1] != 3:
                raise InputError(f"dinov2 encoder expects 3-channel images, got {tuple(x.shape)}")
            x = x.to(device=self.mean.device, dtype=torch.float32)
            out.append(F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", antialias=True))
        return torch.cat(out) if len(out) > 1 else out[0]


def build_dinov2(arch: str | None = None, weights: str | None = None, resize: str = "clean",
                 random_init: bool = False) -> DINOv2Encoder:
    """Factory registered as ``dinov2`` (archs vits14, vitb14, vitl14, vitg14)."""
    arch = arch or DEFAULT_ARCH
    dinov2_preprocess(arch, resize)  # validates arch and resize before any I/O
    net = build_module(lambda: DinoVisionTransformer(arch), random_init=random_init,
                       init=_init_random)
    sha = None
    if not random_init:  # built on the meta device: the checkpoint's tensors are assigned
        sha = load_checkpoint(net, "dinov2", _weights(arch), weights,
                              lambda sd, path: convert_state_dict(sd, arch, "dinov2", path))
    enc = DINOv2Encoder(net, arch, resize=resize, weights_sha256=sha)
    return enc.eval().requires_grad_(False)


SPEC = DECLARED.spec(build_dinov2, preprocess=dinov2_preprocess,
                     outputs={a: {"features": spec[0]} for a, spec in ARCHS.items()},
                     weights={a: _weights(a) for a in ARCHS}, input_size={a: SIZE for a in ARCHS})
