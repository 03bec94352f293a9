"""``clip``: open_clip image towers (Radford et al. 2021; Cherti et al. 2023), as dgm-eval and
CMMD use them.

* ``features``: dgm-eval's CLIP features, the pooled class token after ``ln_post`` and
  *before* the projection (width of the vision transformer, 1024 for ViT-L-14);
* ``embedding``: the projected, L2-normalised image embedding, i.e. open_clip's
  ``encode_image(x, normalize=True)`` (768 for ViT-L-14), used by ``cmmd`` and ``clip_score``;
* ``projected``: the same projection before the L2 normalisation, ``encode_image(x)``: the
  features of clean-fid's ``clip_vit_b_32`` mode (FD_CLIP, Kynkäänniemi et al. 2023), which
  ``--protocol coco30k`` scores.

Both come from one forward of ``model.visual`` (a per-call forward hook on ``ln_post``
captures the first). ``arch`` is an open_clip model name, optionally with a pretrained tag:
``"ViT-L-14"`` (default tag ``datacomp_xl_s13b_b90k``, dgm-eval's) or ``"ViT-B-32:openai"``.
Inputs: shorter side resized to the model's image size (224) with clean bicubic, centre crop,
then OpenAI mean/std inside the module. Weights: ``--weights`` (an open_clip state dict,
``open_clip_pytorch_model.bin`` or ``.safetensors``), else the torch hub checkpoint folder,
else the Hugging Face cache (``laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K``), else a download
when online. ``open_clip`` is imported only when a CLIP encoder is built.
"""
from __future__ import annotations

import contextlib
import difflib
import logging

import torch
import torch.nn.functional as F

from evalkit.encoders.base import Encoder, Preprocess, WeightsSpec
from evalkit.encoders.spec import BUILTINS, LazyArchTable, check_resize
from evalkit.encoders.weights import build_module, load_checkpoint
from evalkit.errors import InputError, pip_hint

DECLARED = BUILTINS["clip"]
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_ARCH = DECLARED.default_arch
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
# dgm-eval's default tags; ViT-L-14-336 (CMMD's model) exists only as OpenAI's.
DEFAULT_TAGS = {
    "ViT-B-32": "laion2b_s34b_b79k",
    "ViT-B-16": "laion2b_s34b_b88k",
    "ViT-L-14": "datacomp_xl_s13b_b90k",
    "ViT-L-14-336": "openai",
    "ViT-H-14": "laion2b_s32b_b79k",
    "ViT-bigG-14": "laion2b_s39b_b160k",
}
# model -> (vision width = features dim, embed dim, image size): readable without open_clip
KNOWN = {
    "ViT-B-32": (768, 512, 224),
    "ViT-B-16": (768, 512, 224),
    "ViT-L-14": (1024, 768, 224),
    "ViT-L-14-336": (1024, 768, 336),
    "ViT-H-14": (1280, 1024, 224),
    "ViT-bigG-14": (1664, 1280, 224),
}


def _import_open_clip():
    try:
        import open_clip
    except ImportError:
        raise InputError(f"the clip encoder needs open_clip: {pip_hint('models')}") from None
    return open_clip


def split_arch(arch: str | None) -> tuple[str, str | None]:
    """``"ViT-B-32:openai"`` -> ("ViT-B-32", "openai"); no tag -> the model's default tag."""
    arch = arch or DEFAULT_ARCH
    model, _, tag = arch.partition(":")
    if not tag:
        tag = DEFAULT_TAGS.get(model)
        if tag is None and model not in KNOWN:
            tags = _import_open_clip().list_pretrained_tags_by_model(model)
            tag = tags[0] if tags else None
    return model, tag


def _model_config(model: str) -> tuple[int, int, int]:
    """(features dim, embedding dim, image size) of open_clip model ``model``."""
    if model in KNOWN:
        return KNOWN[model]
    open_clip = _import_open_clip()
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        close = difflib.get_close_matches(model, open_clip.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(f"clip: unknown open_clip model {model!r}{hint}")
    vision = cfg.get("vision_cfg", {})
    if "timm_model_name" in vision or isinstance(vision.get("layers"), (list, tuple)):
        raise InputError(f"clip: {model!r} has no open_clip VisionTransformer (ln_post); "
                         "use a ViT-* model")
    size = vision.get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return int(vision["width"]), int(cfg["embed_dim"]), int(size)


def _pretrained_cfg(model: str, tag: str | None) -> dict:
    if tag is None:
        return {}
    return dict(_import_open_clip().get_pretrained_cfg(model, tag))


def clip_weights(arch: str | None) -> WeightsSpec | None:
    """The declared weights of ``arch`` (None when open_clip knows no pretrained tag)."""
    model, tag = split_arch(arch)
    if tag is None:
        return None
    cfg = _pretrained_cfg(model, tag)
    if not cfg:
        raise InputError(f"clip: open_clip has no pretrained tag {tag!r} for {model!r}")
    local_name = f"open_clip_{model}_{tag}.bin"
    hf_hub = cfg.get("hf_hub", "").strip("/")
    if hf_hub:
        parts = hf_hub.split("/")
        repo, fname = "/".join(parts[:2]), ("/".join(parts[2:]) or HF_WEIGHTS_NAME)
        return WeightsSpec(filename=local_name, hf_repo=repo, hf_filename=fname,
                           url=f"https://huggingface.co/{repo}/resolve/main/{fname}")
    return WeightsSpec(filename=local_name, url=cfg.get("url") or None)


def clip_preprocess(arch: str | None = DEFAULT_ARCH, resize: str = "clean") -> Preprocess:
    """Shorter side to the model's size (clean bicubic) + centre crop; mean/std in-module."""
    check_resize("clip", resize)
    model, tag = split_arch(arch)
    size = _model_config(model)[2]
    mean, std = OPENAI_MEAN, OPENAI_STD
    if tag is not None and tag != DEFAULT_TAGS.get(model):
        cfg = _pretrained_cfg(model, tag)
        mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
    return Preprocess(size=size, crop=True, mean=mean, std=std)


def _outputs(arch: str) -> dict[str, int]:
    feat, emb, _ = _model_config(split_arch(arch)[0])
    return {"features": feat, "embedding": emb, "projected": emb}


# --------------------------------------------------------------------------- encoder

class CLIPEncoder(Encoder):
    """open_clip image tower: ``features`` (ln_post, pre-projection), ``embedding`` (normalised),
    ``projected`` (the embedding before normalisation)."""

    name = "clip"

    def __init__(self, visual: torch.nn.Module, arch: str, preprocess: Preprocess,
                 weights_sha256: str | None = None):
        super().__init__()
        if not hasattr(visual, "ln_post") or getattr(visual, "attn_pool", None) is not None:
            raise InputError(f"clip: {arch!r} is not a plain open_clip VisionTransformer "
                             "(needs ln_post, no attentional pooling)")
        self.arch = arch
        self.visual = visual
        self.preprocess = preprocess
        self.weights_sha256 = weights_sha256
        width = int(visual.ln_post.normalized_shape[0])
        embed = int(visual.proj.shape[1]) if visual.proj is not None else width
        self.outputs = {"features": width, "embedding": embed, "projected": embed}
        self.set_normalisation(preprocess.mean, preprocess.std)

    def _pooled(self, ln_out: torch.Tensor) -> torch.Tensor:
        if ln_out.ndim == 2:  # final_ln_after_pool: ln_post ran on the pooled token
            return ln_out
        if getattr(self.visual, "pool_type", "tok") == "avg":
            return ln_out[:, 1:].mean(dim=1)
        return ln_out[:, 0]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×S×S in [0, 255] (S the model's image size) -> features, embedding, projected."""
        x = self.normalise(images, (self.preprocess.size, self.preprocess.size))
        captured: list[torch.Tensor] = []  # a per-call hook: thread- and replica-safe
        handle = self.visual.ln_post.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            projected = self.visual(x)
        finally:
            handle.remove()
        features = self._pooled(captured[-1])
        if isinstance(projected, tuple):  # output_tokens=True
            projected = projected[0]
        projected = projected.float()
        return {"features": features.float(), "embedding": F.normalize(projected, dim=-1),
                "projected": projected}


def _visual_state_dict(sd: dict, path=None) -> dict:
    """The image tower's weights of an open_clip state dict (``visual.`` prefix stripped; the
    text tower is not needed); a state dict of the image tower alone is taken as it is."""
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    return visual or sd


@contextlib.contextmanager
def _quiet_open_clip():
    """Hide open_clip's "initialized randomly" log line: evalkit loads the weights itself."""
    root = logging.getLogger()
    quiet = lambda record: "initialized randomly" not in record.getMessage()  # noqa: E731
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _model_and_weights(arch: str, weights: str | None, random_init: bool):
    """(model name, pretrained tag, open_clip, its pretrained config, declared weights) of
    ``arch``; InputError when open_clip declares no weights for it and none are given."""
    model_name, tag = split_arch(arch)
    open_clip = _import_open_clip()
    pcfg = _pretrained_cfg(model_name, tag)
    spec = None if random_init else clip_weights(arch)
    if not random_init and spec is None and weights is None:
        raise InputError(f"clip: open_clip has no pretrained weights for {model_name!r}; "
                         "pass --weights FILE")
    return model_name, tag, open_clip, pcfg, spec


def build_clip(arch: str | None = None, weights: str | None = None, resize: str = "clean",
               random_init: bool = False) -> CLIPEncoder:
    """Factory registered as ``clip``: open_clip model ``arch`` with its image-tower weights.

    The checkpoint is an open_clip state dict; every ``visual.*`` weight is loaded strictly
    (the text tower is not needed and is dropped). A state dict holding only the image tower
    (keys with or without the ``visual.`` prefix) is accepted too.
    """
    arch = arch or DEFAULT_ARCH
    preprocess = clip_preprocess(arch, resize)
    model_name, tag, open_clip, pcfg, spec = _model_and_weights(arch, weights, random_init)
    quick_gelu = bool(pcfg.get("quick_gelu", False))
    with _quiet_open_clip():  # to be loaded: built on the meta device, no random initialisation
        model = build_module(lambda: open_clip.create_model(
            model_name, pretrained=None, force_quick_gelu=quick_gelu,
            device="cpu" if random_init else "meta"), random_init=random_init)
    visual = model.visual
    del model
    sha = None
    if not random_init:
        sha = load_checkpoint(visual, "clip", spec or WeightsSpec(filename=model_name), weights,
                              _visual_state_dict)
    enc = CLIPEncoder(visual, arch, preprocess, weights_sha256=sha)
    return enc.eval().requires_grad_(False)


SPEC = DECLARED.spec(build_clip, preprocess=clip_preprocess, weights_for=clip_weights,
                     outputs=LazyArchTable(_outputs, DECLARED.archs),
                     weights=LazyArchTable(clip_weights, DECLARED.archs),
                     input_size=LazyArchTable(lambda a: _model_config(split_arch(a)[0])[2],
                                              DECLARED.archs))


# --------------------------------------------------------------------------- text tower

class CLIPTextEncoder(torch.nn.Module):
    """open_clip text tower: L2-normalised text embeddings, in the space of ``embedding``.

    Prompts longer than the context (77 tokens for OpenAI CLIP) are cut to the context with
    the end-of-text token kept in the last position (open_clip's tokenizer), which is where
    OpenAI CLIP pools the text (the argmax token): cutting the end token off, as a plain slice
    of the token ids does, pools an ordinary word instead. :meth:`tokenize` says which prompts
    were cut.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, arch: str,
                 weights_sha256: str | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.arch = arch
        self.weights_sha256 = weights_sha256
        self.context_length = int(getattr(tokenizer, "context_length", 77) or 77)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, list[bool]]:
        """Token ids (N x context) and, per prompt, whether it was truncated."""
        encode = getattr(self.tokenizer, "encode", None)
        truncated = [len(encode(p)) + 2 > self.context_length if encode else False for p in prompts]
        return self.tokenizer(list(prompts)), truncated

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def _text_state_dict(sd: dict, path=None) -> dict:
    """Every weight of an open_clip state dict but the image tower's (``visual.*``)."""
    return {k: v for k, v in sd.items() if not k.startswith("visual.")}


def build_clip_text(arch: str | None = None, weights: str | None = None,
                    random_init: bool = False) -> CLIPTextEncoder:
    """The text tower of open_clip model ``arch``, from the same checkpoint as :func:`build_clip`.

    With ``random_init`` the model is built under the same seed as :func:`build_clip`'s random
    image tower, so the two towers are one random CLIP model.
    """
    arch = arch or DEFAULT_ARCH
    model_name, tag, open_clip, pcfg, spec = _model_and_weights(arch, weights, random_init)
    with _quiet_open_clip():
        model = build_module(lambda: open_clip.create_model(
            model_name, pretrained=None, force_quick_gelu=bool(pcfg.get("quick_gelu", False)),
            device="cpu" if random_init else "meta"), random_init=random_init)
    model.visual = torch.nn.Identity()  # the image tower is the image encoder's
    for mod in model.modules():  # the causal mask is built, not stored: build it off the meta device
        mask = mod._buffers.get("attn_mask")
        if isinstance(mask, torch.Tensor) and mask.is_meta:  # open_clip's: -inf above the diagonal
            mod.register_buffer("attn_mask", torch.full(mask.shape, float("-inf")).triu_(1),
                                persistent=False)
    sha = None
    if not random_init:
        sha = load_checkpoint(model, "clip", spec or WeightsSpec(filename=model_name), weights,
                              _text_state_dict)
    tokenizer = open_clip.get_tokenizer(model_name)
    return CLIPTextEncoder(model, tokenizer, arch, sha).eval().requires_grad_(False)
