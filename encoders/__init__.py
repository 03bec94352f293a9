"""evalkit.encoders: feature encoders registered by name.

Built-in encoders register on import; third-party packages add theirs through the
``evalkit.encoders`` entry-point group (each entry point loads a module that registers an
EncoderSpec with ``register_encoder``, an EncoderSpec, or a callable returning one). A plugin
that fails to load is reported with a warning naming its entry point; it never breaks the
other encoders or commands.

``encoder_identity`` describes an encoder (name, arch, weights sha256, preprocessing) without
building it, for cache keys and result records.

Importing this package imports no torch: each built-in encoder's module (which defines torch
classes) is imported the first time its spec is asked for; `evalkit encoders` lists the
built-ins from the static summaries in :data:`BUILTINS` (kept equal to the modules' ``SPEC``
by tests/test_cli_startup.py).
"""
from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from evalkit.encoders.spec import EncoderSpec, Preprocess, WeightsSpec  # noqa: F401
from evalkit.errors import InputError
from evalkit.registry import Registry

if TYPE_CHECKING:
    from evalkit.encoders.base import Encoder


@dataclass(frozen=True)
class Builtin:
    """A built-in encoder before its module is imported: where its spec lives and what
    `evalkit encoders` prints (equal to the module's ``SPEC``; a test checks it)."""

    module: str  # evalkit.encoders.<module> defines SPEC
    preprocess: str  # name of its (arch, resize) -> Preprocess function
    weights: str | None  # name of its arch -> WeightsSpec function (open-ended archs)
    description: str
    archs: tuple[str, ...]
    default_arch: str
    default_outputs: Mapping[str, int]  # outputs of default_arch


ENCODERS: Registry[EncoderSpec | Builtin] = Registry("encoder", "evalkit encoders")
ENTRY_POINT_GROUP = "evalkit.encoders"
_plugins_loaded = False

PreprocessFn = Callable[[str, str], Preprocess]  # (arch, resize) -> Preprocess
WeightsFn = Callable[[str], "WeightsSpec | None"]  # arch -> declared weights
_PREPROCESS: dict[str, PreprocessFn] = {}
_WEIGHTS: dict[str, WeightsFn] = {}
_built_preprocess: dict[tuple[str, str, str], Preprocess] = {}


def register_encoder(spec: EncoderSpec, *, preprocess: PreprocessFn | None = None,
                     weights: WeightsFn | None = None, replace: bool = False) -> EncoderSpec:
    """Add ``spec`` to the registry (refuses duplicate names).

    Args:
        spec: the encoder's metadata and factory.
        preprocess: optional ``(arch, resize) -> Preprocess`` that answers without building
            the model (used by :func:`encoder_identity`); without it the identity of a plugin
            encoder is read from a randomly initialised build, once per (arch, resize).
        weights: optional ``arch -> WeightsSpec | None`` for archs not listed in
            ``spec.weights`` (open-ended arch names such as open_clip models).
        replace: put ``spec`` in place of the one registered under its name (custom
            encoders re-registered by :func:`evalkit.encoders.custom.custom_encoder`).
    """
    if replace:
        ENCODERS.replace(spec.name, spec)
    else:
        ENCODERS.add(spec.name, spec)
    if preprocess is not None:
        _PREPROCESS[spec.name] = preprocess
    if weights is not None:
        _WEIGHTS[spec.name] = weights
    return spec


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    try:
        entry_points = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # noqa: BLE001 — a broken installed distribution: warned, skipped
        warnings.warn(f"evalkit: cannot read {ENTRY_POINT_GROUP!r} entry points: {exc}",
                      RuntimeWarning, stacklevel=3)
        return
    for ep in entry_points:
        try:
            obj = ep.load()
            spec = obj
            if not isinstance(obj, EncoderSpec) and callable(obj) and not isinstance(obj, type):
                spec = obj()
            if isinstance(spec, EncoderSpec) and spec.name not in ENCODERS:
                register_encoder(spec)
        except Exception as exc:  # noqa: BLE001 — a broken plugin is warned about and skipped
            warnings.warn(f"evalkit: encoder plugin entry point {ep.name!r} ({ep.value}) failed "
                          f"to load and is skipped: {type(exc).__name__}: {exc}",
                          RuntimeWarning, stacklevel=3)


def __getattr__(name: str):
    if name == "Encoder":  # the torch module class, imported on first use
        from evalkit.encoders.base import Encoder

        return Encoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _resolve(name: str, entry: EncoderSpec | Builtin) -> EncoderSpec:
    """The EncoderSpec of ``entry``, importing a built-in's module on first use."""
    if isinstance(entry, EncoderSpec):
        return entry
    module = importlib.import_module(f"evalkit.encoders.{entry.module}")
    spec = module.SPEC
    ENCODERS._entries[name] = spec  # same position: built-ins stay listed first
    _PREPROCESS[name] = getattr(module, entry.preprocess)
    if entry.weights is not None:
        _WEIGHTS[name] = getattr(module, entry.weights)
    return spec


def encoder_summary(name: str) -> tuple[tuple[str, ...], str, Mapping[str, int], str]:
    """(archs, default arch, outputs of the default arch, description) of ``name``, without
    importing a built-in encoder's module (and so without torch)."""
    _load_plugins()
    entry = ENCODERS.get(name)
    if isinstance(entry, Builtin):
        return entry.archs, entry.default_arch, entry.default_outputs, entry.description
    return (tuple(entry.archs), entry.default_arch, entry.outputs.get(entry.default_arch, {}),
            entry.description)


def list_encoders() -> list[str]:
    """Names of the registered encoders, built-ins first, then plugins."""
    _load_plugins()
    return ENCODERS.names()


def get_encoder_spec(name: str) -> EncoderSpec:
    """The registered :class:`EncoderSpec` of ``name`` (unknown names suggest close ones)."""
    _load_plugins()
    return _resolve(name, ENCODERS.get(name))


def build_encoder(name: str, arch: str | None = None, weights: str | None = None,
                  **options) -> Encoder:
    """Build encoder ``name`` (variant ``arch``) with weights from ``weights`` or the caches.

    Options: ``resize="legacy"`` for Inception's pytorch-fid mode; ``random_init=True`` builds
    with random weights (tests, benchmarks). The module is returned on the CPU in eval mode;
    move it with ``.to(device)``.
    """
    spec = get_encoder_spec(name)
    encoder = spec.factory(arch=arch or spec.default_arch, weights=weights, **options)
    return encoder.eval()


def encoder_preprocess(name: str, arch: str | None = None, resize: str = "clean") -> Preprocess:
    """How the data workers must prepare images for ``name``/``arch``, without the weights."""
    spec = get_encoder_spec(name)
    arch = arch or spec.default_arch
    if name in _PREPROCESS:
        return _PREPROCESS[name](arch, resize)
    key = (name, arch, resize)
    if key not in _built_preprocess:
        try:
            enc = spec.factory(arch=arch, weights=None, resize=resize, random_init=True)
        except TypeError:  # a plugin factory without random_init
            enc = spec.factory(arch=arch, weights=None, resize=resize)
        _built_preprocess[key] = enc.preprocess
    return _built_preprocess[key]


def encoder_weights_spec(name: str, arch: str | None = None) -> WeightsSpec | None:
    """The declared weights of ``name``/``arch`` (None for weight-free encoders)."""
    spec = get_encoder_spec(name)
    arch = arch or spec.default_arch
    if name in _WEIGHTS:
        return _WEIGHTS[name](arch)
    return spec.weights.get(arch)


def encoder_identity(name: str, arch: str | None = None, weights: str | None = None,
                     resize: str = "clean") -> dict:
    """What identifies an encoder's features, computed without building the model.

    Returns ``{"name", "arch", "weights_sha256", "preprocess"}``: ``weights_sha256`` is the
    sha256 of the file :func:`build_encoder` would load (``weights`` if given, else the torch
    hub / Hugging Face caches, downloading it when missing and online; None for weight-free
    encoders) and ``preprocess`` is ``Preprocess.describe()``. Digests are cached per
    (path, size, mtime), so repeated calls are instant.

    Raises:
        InputError: unknown arch, ``resize`` not valid for this encoder, missing ``weights``.
        OfflineError: the weights are nowhere on this machine and cannot be downloaded.
    """
    from evalkit.encoders.weights import file_sha256, known_sha256, resolve_weights

    spec = get_encoder_spec(name)
    arch = arch or spec.default_arch
    preprocess = encoder_preprocess(name, arch, resize)
    wspec = encoder_weights_spec(name, arch)
    if weights is not None:
        sha = file_sha256(resolve_weights(name, wspec or WeightsSpec(filename=str(weights)),
                                          weights))
    elif wspec is None:
        sha = None
    else:
        sha = known_sha256(wspec) or file_sha256(resolve_weights(name, wspec, None))
    return {"name": name, "arch": arch, "weights_sha256": sha,
            "preprocess": preprocess.describe()}


def _check_arch(encoder: str, arch: str, archs) -> None:
    """InputError for an arch not in ``archs``, suggesting close names."""
    if arch not in archs:
        import difflib

        close = difflib.get_close_matches(arch, list(archs), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(f"{encoder} has no arch {arch!r}{hint}; choose one of "
                         f"{', '.join(archs)}")


BUILTINS: dict[str, Builtin] = {
    "pixel": Builtin(
        "pixel", "pixel_preprocess", None,
        "raw pixels at 32x32, flattened (3072-d); weight-free, for smoke tests and CI",
        ("rgb32",), "rgb32", {"features": 3072}),
    "inception": Builtin(
        "inception", "inception_preprocess", None,
        "FID Inception-v3 (pytorch-fid weights): pool3 2048-d, fc logits 1008, sFID spatial 2023",
        ("fid_v3",), "fid_v3", {"features": 2048, "logits": 1008, "spatial": 2023}),
    "dinov2": Builtin(
        "dinov2", "dinov2_preprocess", None,
        "DINOv2 ViT/14 (Oquab et al. 2023): CLS token after the final norm, 224 px (FD-DINOv2)",
        ("vits14", "vitb14", "vitl14", "vitg14"), "vitl14", {"features": 1024}),
    "clip": Builtin(
        "clip", "clip_preprocess", "clip_weights",
        "open_clip image tower (dgm-eval's ViT-L-14 datacomp_xl_s13b_b90k): ln_post features "
        "before the projection + normalised embedding",
        ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-bigG-14"),
        "ViT-L-14", {"features": 1024, "embedding": 768}),
    "convnext": Builtin(
        "convnext", "convnext_preprocess", None,
        "ConvNeXt-Large IN-22k (dgm-eval): global pool + head norm (pre-logits), 256->224 "
        "centre crop",
        ("convnext_large.fb_in22k",), "convnext_large.fb_in22k", {"features": 1536}),
    "data2vec": Builtin(
        "data2vec", "data2vec_preprocess", None,
        "data2vec-vision ViT-L/16 pretrained (dgm-eval; transformers): pooler_output, 224×224, "
        "mean/std 0.5",
        ("vitl16", "vitb16"), "vitl16", {"features": 1024}),
    "mae": Builtin(
        "mae", "mae_preprocess", None,
        "MAE ViT-L/16 pretrain (dgm-eval): CLS token after the final norm, 224 px",
        ("vitl16",), "vitl16", {"features": 1024}),
    "swav": Builtin(
        "swav", "swav_preprocess", None,
        "SwAV ResNet-50 800ep (dgm-eval): global average pool after layer4, 224 shorter side + "
        "centre crop",
        ("rn50_800ep",), "rn50_800ep", {"features": 2048}),
    "simclr": Builtin(
        "simclr", "simclr_preprocess", None,
        "SimCLRv2 ResNet-50 1x SK1 (dgm-eval): global average pool before the heads, 224 "
        "shorter side + centre crop",
        ("r50_1x_sk1", "r50_1x_sk0", "r50_2x_sk1", "r101_1x_sk1", "r101_2x_sk1", "r152_1x_sk1",
         "r152_2x_sk1", "r152_3x_sk1"), "r50_1x_sk1", {"features": 2048}),
    "timm": Builtin(
        "timm_models", "timm_preprocess", "timm_weights",
        "any timm model (--arch MODEL[.TAG]): pooled pre-logits features, the model's own input "
        "size, crop_pct, interpolation and mean/std",
        ("resnet50.a1_in1k",), "resnet50.a1_in1k", {"features": 2048}),
}

for _name, _builtin in BUILTINS.items():
    ENCODERS.add(_name, _builtin)
