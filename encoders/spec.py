"""Registry metadata of the encoders, importable without torch.

``Preprocess`` (how images are prepared), ``WeightsSpec`` (a declared weights file) and
``EncoderSpec`` (name, archs, outputs, input sizes, factory) are plain dataclasses so that
`evalkit encoders` and encoder identities can be read without importing torch;
:mod:`evalkit.encoders.base` re-exports them beside the ``Encoder`` module class.

:data:`BUILTINS` declares every built-in encoder once (one :class:`Builtin` entry: what
`evalkit encoders` lists, the ``--encoder`` help, which encoders accept ``--resize legacy``);
each encoder module completes its entry into an ``EncoderSpec`` with :meth:`Builtin.spec`.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from evalkit.errors import InputError

if TYPE_CHECKING:
    from evalkit.encoders.base import Encoder


# torchvision / timm ImageNet normalisation ([0, 1] scale), shared by the encoders that use it
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How data workers turn a decoded RGB uint8 image into the encoder's input.

    ``resize``: ``"clean"`` (PIL bicubic on float32 channels, antialiased, clean-fid's mode),
    or ``"none"`` (keep native size; the encoder resizes in-network, e.g. Inception legacy).
    or ``"pil"`` (dgm-eval's / timm's torchvision ``Resize`` on the 8-bit PIL image, re-quantised
    to uint8: ``--resize legacy`` of the dgm-eval encoders).
    ``crop``: resize the shorter side to ``crop_from`` (0: ``size``) then centre-crop
    ``size``×``size`` (CLIP: 224 → 224; timm/dgm-eval ConvNeXt: 256 → 224); ``keep_aspect``
    (no crop): resize the shorter side to ``size`` and keep the aspect ratio (dgm-eval's
    ``Resize(224)``: non-square outputs); else resize to ``size``×``size``. ``interpolation``:
    the resampling filter (``bicubic`` or ``bilinear``). ``mean``/``std`` are applied inside the
    encoder, recorded for the cache key.
    """

    size: int
    resize: str = "clean"
    crop: bool = False
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    in_network: str = ""  # e.g. "bilinear-299" for legacy Inception
    crop_from: int = 0  # with crop: shorter side resized to this first (0: size)
    interpolation: str = "bicubic"
    keep_aspect: bool = False  # without crop: shorter side to size, aspect kept

    def describe(self) -> str:
        """A stable string for result records and cache keys (fields added after the first
        release only when they differ from their defaults, so older keys stay valid)."""
        fields = asdict(self)
        for name, default in (("crop_from", 0), ("interpolation", "bicubic"),
                              ("keep_aspect", False)):
            if fields[name] == default:
                del fields[name]  # keeps the keys of every encoder that does not use it
        return json.dumps(fields, sort_keys=True)


@dataclass(frozen=True)
class WeightsSpec:
    """A declared weights file: official name, where it comes from, its sha256 when known."""

    filename: str
    url: str | None = None
    sha256: str | None = None
    hf_repo: str | None = None  # Hugging Face hub repo id (timm / open_clip caches)
    hf_filename: str | None = None


@dataclass(frozen=True)
class EncoderSpec:
    """Registry metadata of an encoder, readable without building a model."""

    name: str
    factory: Callable[..., Encoder]
    description: str
    archs: tuple[str, ...]
    default_arch: str
    outputs: Mapping[str, Mapping[str, int]]  # arch -> {output name: dim}
    weights: Mapping[str, WeightsSpec | None] = field(default_factory=dict)  # arch -> weights
    input_size: Mapping[str, int] = field(default_factory=dict)  # arch -> size
    # (arch, resize) -> Preprocess without building the model (None: learnt from a build)
    preprocess: Callable[[str, str], Preprocess] | None = None
    # arch -> WeightsSpec for open-ended arch names (raises InputError for an unknown one)
    weights_for: Callable[[str], WeightsSpec | None] | None = None
    resizes: tuple[str, ...] = ("clean",)  # the --resize modes the factory accepts
    # bumped whenever the set of outputs changes (see Builtin.outputs_version)
    outputs_version: int = 1


class LazyArchTable(Mapping):
    """arch -> value for the listed archs, computed on demand for any other name.

    For encoders that accept open-ended archs (``timm``, ``clip``): listing shows ``listed``;
    a lookup of another name calls ``fn`` once and caches it (an ``InputError`` from ``fn``
    becomes ``KeyError``, so an unknown arch reads as missing).
    """

    def __init__(self, fn: Callable[[str], object], listed: tuple[str, ...]):
        self._fn, self._listed = fn, tuple(listed)
        self._cache: dict[str, object] = {}

    def __getitem__(self, arch: str):
        if arch not in self._cache:
            try:
                self._cache[arch] = self._fn(arch)
            except InputError as exc:
                raise KeyError(arch) from exc
        return self._cache[arch]

    def __iter__(self):
        return iter(self._listed)

    def __len__(self) -> int:
        return len(self._listed)


@dataclass(frozen=True)
class Builtin:
    """The declaration of a built-in encoder, readable without importing its module (or torch).

    ``module``: ``evalkit.encoders.<module>`` (default: ``name``), which defines
    ``SPEC = BUILTINS[name].spec(...)``. ``default_outputs``: the outputs of ``default_arch``.
    ``resizes``: the ``--resize`` modes it accepts (``legacy``: the reference tool's own
    resize, e.g. pytorch-fid's in-network bilinear for Inception). ``packages``: the optional
    Python packages it imports, as (import name, evalkit extra that installs it): checked
    before any weights are looked for (:func:`evalkit.encoders.check_packages`).
    ``outputs_version``: the version of the set of outputs the encoder produces, 1 for the
    set it was released with; bump it whenever an output is added, removed or changes
    meaning. It goes into the feature-cache key (:func:`evalkit.features.cache.cache_key`,
    only when not 1, so the keys of encoders whose outputs never changed stay as they were):
    an entry cached with another output set is never served. clip: 2 (``projected`` added).
    """

    name: str
    description: str
    archs: tuple[str, ...]
    default_arch: str
    default_outputs: Mapping[str, int]
    resizes: tuple[str, ...] = ("clean",)
    module: str = ""
    packages: tuple[tuple[str, str], ...] = ()
    outputs_version: int = 1

    @property
    def module_name(self) -> str:
        return f"evalkit.encoders.{self.module or self.name}"

    def spec(self, factory: Callable[..., Encoder], *,
             preprocess: Callable[[str, str], Preprocess],
             outputs: Mapping[str, Mapping[str, int]] | None = None,
             weights: Mapping[str, WeightsSpec | None] | None = None,
             input_size: Mapping[str, int] | None = None,
             weights_for: Callable[[str], WeightsSpec | None] | None = None) -> EncoderSpec:
        """The module's :class:`EncoderSpec`: this declaration plus its code. ``outputs``,
        ``weights`` and ``input_size`` default to the single-arch tables
        ``{default_arch: default_outputs}``, ``{default_arch: None}`` (weight-free) and none."""
        arch = self.default_arch
        return EncoderSpec(
            name=self.name, factory=factory, description=self.description, archs=self.archs,
            default_arch=arch,
            outputs=outputs if outputs is not None else {arch: dict(self.default_outputs)},
            weights=weights if weights is not None else {arch: None},
            input_size=input_size or {}, preprocess=preprocess, weights_for=weights_for,
            resizes=self.resizes, outputs_version=self.outputs_version)


def check_arch(encoder: str, arch: str, archs) -> None:
    """InputError for an ``arch`` not in ``archs``, suggesting close names."""
    if arch not in archs:
        close = difflib.get_close_matches(arch, list(archs), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(f"{encoder} has no arch {arch!r}{hint}; choose one of "
                         f"{', '.join(archs)}")


def resize_encoders(mode: str) -> list[str]:
    """Names of the built-in encoders that accept ``--resize MODE``, in table order."""
    return [b.name for b in BUILTINS.values() if mode in b.resizes]


def legacy_resize_encoders() -> list[str]:
    """Names of the built-in encoders that accept ``--resize legacy``, in table order."""
    return resize_encoders("legacy")


def resize_modes() -> list[str]:
    """Every ``--resize`` mode some built-in encoder declares, ``clean`` first."""
    return list(dict.fromkeys(m for b in BUILTINS.values() for m in b.resizes))


def check_resize(encoder: str, resize: str) -> None:
    """InputError unless ``encoder`` declares ``resize`` (the message lists who takes it)."""
    decl = BUILTINS.get(encoder)
    if decl is not None and resize in decl.resizes:
        return
    modes = resize_modes()
    if resize not in modes:
        raise InputError(f"{encoder}: unknown --resize {resize!r} ({', '.join(modes)})")
    names = resize_encoders(resize)
    listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    which = "encoders" if len(names) > 1 else "encoder"
    raise InputError(f"--resize {resize} is only valid for the {listed} {which} "
                     f"({encoder} takes {', '.join(decl.resizes) if decl else 'clean'})")


# One entry per built-in encoder, listed in this order by `evalkit encoders`.
BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin("pixel", "raw pixels at 32x32, flattened (3072-d); weight-free, for smoke tests and CI",
            ("rgb32",), "rgb32", {"features": 3072}),
    Builtin("inception", "FID Inception-v3 (pytorch-fid weights): pool3 2048-d, fc logits 1008, "
            "sFID spatial 2023",
            ("fid_v3",), "fid_v3", {"features": 2048, "logits": 1008, "spatial": 2023},
            resizes=("clean", "legacy", "tf1", "stylegan3")),
    Builtin("dinov2", "DINOv2 ViT/14 (Oquab et al. 2023): CLS token after the final norm, 224 px "
            "(FD-DINOv2)",
            ("vits14", "vitb14", "vitl14", "vitg14"), "vitl14", {"features": 1024},
            resizes=("clean", "torch")),
    Builtin("clip", "open_clip image tower (dgm-eval's ViT-L-14 datacomp_xl_s13b_b90k): ln_post "
            "features before the projection + normalised embedding + the projection unnormalised",
            ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-bigG-14"),
            "ViT-L-14", {"features": 1024, "embedding": 768, "projected": 768},
            packages=(("open_clip", "models"),), outputs_version=2),  # 2: + projected
    Builtin("convnext", "ConvNeXt-Large IN-22k (dgm-eval): global pool + head norm (pre-logits), "
            "256->224 centre crop",
            ("convnext_large.fb_in22k",), "convnext_large.fb_in22k", {"features": 1536},
            resizes=("clean", "legacy"), packages=(("timm", "models"),)),
    Builtin("data2vec", "data2vec-vision ViT-L/16 pretrained (dgm-eval; transformers): "
            "pooler_output, 224×224, mean/std 0.5",
            ("vitl16", "vitb16"), "vitl16", {"features": 1024}, resizes=("clean", "legacy"),
            packages=(("transformers", "hf"),)),
    Builtin("mae", "MAE ViT-L/16 pretrain (dgm-eval): CLS token after the final norm, 224 px",
            ("vitl16",), "vitl16", {"features": 1024}, packages=(("timm", "models"),)),
    Builtin("swav", "SwAV ResNet-50 800ep (dgm-eval): global average pool after layer4, "
            "224 shorter side + centre crop",
            ("rn50_800ep",), "rn50_800ep", {"features": 2048}, resizes=("clean", "legacy")),
    Builtin("simclr", "SimCLRv2 ResNet-50 1x SK1 (dgm-eval): global average pool before the "
            "heads, 224 shorter side + centre crop",
            ("r50_1x_sk1", "r50_1x_sk0", "r50_2x_sk1", "r101_1x_sk1", "r101_2x_sk1",
             "r152_1x_sk1", "r152_2x_sk1", "r152_3x_sk1"), "r50_1x_sk1", {"features": 2048},
            resizes=("clean", "legacy")),
    Builtin("timm", "any timm model (--arch MODEL[.TAG]): pooled pre-logits features, the "
            "model's own input size, crop_pct, interpolation and mean/std",
            ("resnet50.a1_in1k",), "resnet50.a1_in1k", {"features": 2048},
            resizes=("clean", "legacy"), module="timm_models", packages=(("timm", "models"),)),
)}
