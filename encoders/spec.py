"""Registry metadata of the encoders, importable without torch.

``Preprocess`` (how images are prepared), ``WeightsSpec`` (a declared weights file) and
``EncoderSpec`` (name, archs, outputs, input sizes, factory) are plain dataclasses so that
`evalkit encoders` and encoder identities can be read without importing torch;
:mod:`evalkit.encoders.base` re-exports them beside the ``Encoder`` module class.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

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
        from evalkit.errors import InputError

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
