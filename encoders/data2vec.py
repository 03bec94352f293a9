"""``data2vec``: data2vec-vision ViT-L/16, pretrained only (Baevski et al. 2022), as dgm-eval
runs it: Hugging Face ``facebook/data2vec-vision-large`` through ``transformers``'
``Data2VecVisionModel(add_pooling_layer=True)``, output ``pooler_output`` (1024).

What ``pooler_output`` is follows the checkpoint's ``config.json``: with ``use_mean_pooling`` the
layer-normed mean of the patch tokens, without it the CLS token after the final LayerNorm. The
transformers conversion script writes ``use_mean_pooling=False`` (and the shared relative
position bias) for the pretrained-only checkpoints; that is the built-in config evalkit uses
when no ``config.json`` lies next to the weights.

Preprocessing: dgm-eval calls the checkpoint's image processor (BEiT's: the image resized to
224×224 with PIL bicubic, no crop, mean = std = 0.5). evalkit: the same square 224 resize with
the clean float bicubic filter by default; ``--resize legacy``: PIL bicubic on the 8-bit image
(the processor's resize exactly).

Weights: the Hugging Face cache (``models--facebook--data2vec-vision-large``: ``model.safetensors``
or ``pytorch_model.bin``, plus ``config.json``), ``--weights FILE`` (its folder's ``config.json``
is used when present), or a download when online. Needs ``transformers``:
``pip install "evalkit-gen[hf]"``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from evalkit.encoders.base import Encoder, Preprocess, WeightsSpec
from evalkit.encoders.spec import BUILTINS, check_arch, check_resize
from evalkit.encoders.weights import build_module, load_checkpoint, resolve_weights
from evalkit.errors import InputError, pip_hint

DECLARED = BUILTINS["data2vec"]
SIZE = 224
MEAN = STD = (0.5, 0.5, 0.5)
# arch -> (HF repo, hidden size, layers, heads), for each declared arch
ARCHS = dict(zip(DECLARED.archs, [("facebook/data2vec-vision-large", 1024, 24, 16),
                                  ("facebook/data2vec-vision-base", 768, 12, 12)], strict=True))
DEFAULT_ARCH = DECLARED.default_arch


def import_transformers():
    try:
        import transformers
    except ImportError:
        raise InputError(f"the data2vec encoder needs transformers: {pip_hint('hf')}") from None
    return transformers


def _weights(arch: str) -> WeightsSpec:
    repo = ARCHS[arch][0]
    return WeightsSpec(filename=f"{repo.split('/')[1]}.bin", hf_repo=repo,
                       hf_filename="pytorch_model.bin",
                       url=f"https://huggingface.co/{repo}/resolve/main/pytorch_model.bin")


def data2vec_preprocess(arch: str = DEFAULT_ARCH, resize: str = "clean") -> Preprocess:
    """224×224 square resize (clean, or PIL bicubic on uint8 under legacy); mean/std 0.5."""
    check_arch("data2vec", arch, DECLARED.archs)
    check_resize("data2vec", resize)
    return Preprocess(size=SIZE, resize="clean" if resize == "clean" else "pil", mean=MEAN, std=STD)


def default_config(arch: str) -> dict:
    """The pretrained-only checkpoints' config as transformers' conversion script writes it."""
    _, width, depth, heads = ARCHS[arch]
    return {"hidden_size": width, "num_hidden_layers": depth, "num_attention_heads": heads,
            "intermediate_size": 4 * width, "use_relative_position_bias": False,
            "use_shared_relative_position_bias": True, "use_mean_pooling": False,
            "image_size": SIZE, "patch_size": 16}


def load_config(arch: str, weights_path: Path | None):
    """``Data2VecVisionConfig`` from ``config.json`` next to the weights, else the default."""
    transformers = import_transformers()
    cfg_file = weights_path.parent / "config.json" if weights_path is not None else None
    if cfg_file is not None and cfg_file.is_file():
        try:
            data = json.loads(cfg_file.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"data2vec config {cfg_file}: cannot read ({exc})") from None
        if data.get("model_type", "data2vec-vision") != "data2vec-vision":
            raise InputError(f"data2vec config {cfg_file}: model_type {data.get('model_type')!r} "
                             "is not data2vec-vision")
        return transformers.Data2VecVisionConfig(**{k: v for k, v in data.items()
                                                    if k not in ("architectures",)})
    return transformers.Data2VecVisionConfig(**default_config(arch))


def convert_state_dict(sd: dict, expected, path=None) -> dict:
    """HF checkpoint -> ``Data2VecVisionModel`` keys: a ``data2vec_vision.`` prefix (classifier
    checkpoints) stripped, heads, ``mask_token`` and stored position indices dropped."""
    prefix = "data2vec_vision."
    if any(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    expected = set(expected)
    return {k: v for k, v in sd.items()
            if k in expected or not (k.endswith("relative_position_index")
                                     or k.startswith(("lm_head.", "classifier.", "pooler."))
                                     or k == "embeddings.mask_token")}


class Data2VecEncoder(Encoder):
    """``pooler_output`` of a ``Data2VecVisionModel`` from 224-px inputs in [0, 255]."""

    name = "data2vec"

    def __init__(self, model: torch.nn.Module, arch: str, resize: str = "clean",
                 weights_sha256: str | None = None):
        super().__init__()
        self.arch = arch
        self.preprocess = data2vec_preprocess(arch, resize)
        self.weights_sha256 = weights_sha256
        self.model = model
        self.outputs = {"features": int(model.config.hidden_size)}
        self.set_normalisation(MEAN, STD)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×224×224 in [0, 255] -> {"features"}."""
        size = self.model.config.image_size
        x = self.normalise(images, (size, size))
        return {"features": self.model(pixel_values=x).pooler_output.float()}


def build_data2vec(arch: str | None = None, weights: str | None = None, resize: str = "clean",
                   random_init: bool = False) -> Data2VecEncoder:
    """Factory registered as ``data2vec``.

    The weights file is found first: the architecture is read from the ``config.json`` beside
    it. The model is built on the CPU (its relative-position tables are computed buffers, not
    in the checkpoint), then loaded strictly.
    """
    arch = arch or DEFAULT_ARCH
    data2vec_preprocess(arch, resize)
    transformers = import_transformers()
    path = None if random_init else resolve_weights("data2vec", _weights(arch), weights)
    config = load_config(arch, path)
    model = build_module(lambda: transformers.Data2VecVisionModel(config, add_pooling_layer=True),
                         random_init=True)
    sha = None
    if path is not None:
        expected = model.state_dict().keys()
        sha = load_checkpoint(model, "data2vec", _weights(arch), weights, path=path,
                              convert=lambda sd, path: convert_state_dict(sd, expected))
    return Data2VecEncoder(model, arch, resize, sha).eval().requires_grad_(False)


SPEC = DECLARED.spec(build_data2vec, preprocess=data2vec_preprocess,
                     outputs={a: {"features": v[1]} for a, v in ARCHS.items()},
                     weights={a: _weights(a) for a in ARCHS}, input_size={a: SIZE for a in ARCHS})
