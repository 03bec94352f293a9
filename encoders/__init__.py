"""evalkit.encoders: feature encoders registered by name.

Built-in encoders register on import; third-party packages add theirs through the
``evalkit.encoders`` entry-point group (each entry point loads a module that registers an
EncoderSpec with ``register_encoder``, an EncoderSpec, or a callable returning one). A plugin
that fails to load is reported with a warning naming its entry point; it never breaks the
other encoders or commands.

``encoder_identity`` describes an encoder (name, arch, weights sha256, preprocessing) without
building it, for cache keys and result records.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib import metadata

from evalkit.encoders.base import Encoder, EncoderSpec, Preprocess, WeightsSpec  # noqa: F401
from evalkit.errors import InputError
from evalkit.registry import Registry

ENCODERS: Registry[EncoderSpec] = Registry("encoder", "evalkit encoders")
ENTRY_POINT_GROUP = "evalkit.encoders"
_plugins_loaded = False

PreprocessFn = Callable[[str, str], Preprocess]  # (arch, resize) -> Preprocess
WeightsFn = Callable[[str], "WeightsSpec | None"]  # arch -> declared weights
_PREPROCESS: dict[str, PreprocessFn] = {}
_WEIGHTS: dict[str, WeightsFn] = {}
_built_preprocess: dict[tuple[str, str, str], Preprocess] = {}


def register_encoder(spec: EncoderSpec, *, preprocess: PreprocessFn | None = None,
                     weights: WeightsFn | None = None) -> EncoderSpec:
    """Add ``spec`` to the registry (refuses duplicate names).

    Args:
        spec: the encoder's metadata and factory.
        preprocess: optional ``(arch, resize) -> Preprocess`` that answers without building
            the model (used by :func:`encoder_identity`); without it the identity of a plugin
            encoder is read from a randomly initialised build, once per (arch, resize).
        weights: optional ``arch -> WeightsSpec | None`` for archs not listed in
            ``spec.weights`` (open-ended arch names such as open_clip models).
    """
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


def list_encoders() -> list[str]:
    """Names of the registered encoders, built-ins first, then plugins."""
    _load_plugins()
    return ENCODERS.names()


def get_encoder_spec(name: str) -> EncoderSpec:
    """The registered :class:`EncoderSpec` of ``name`` (unknown names suggest close ones)."""
    _load_plugins()
    return ENCODERS.get(name)


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
    from evalkit.encoders.weights import file_sha256, local_weights, resolve_weights

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
        local = local_weights(wspec)
        if local is not None:
            sha = file_sha256(local)
        elif wspec.sha256 and len(wspec.sha256) == 64:
            sha = wspec.sha256.lower()
        else:
            sha = file_sha256(resolve_weights(name, wspec, None))
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


def _register_builtins() -> None:
    from evalkit.encoders import clip, dinov2, inception, pixel

    register_encoder(pixel.SPEC, preprocess=pixel.pixel_preprocess)
    register_encoder(inception.SPEC, preprocess=inception.inception_preprocess)
    register_encoder(dinov2.SPEC, preprocess=dinov2.dinov2_preprocess)
    register_encoder(clip.SPEC, preprocess=clip.clip_preprocess, weights=clip.clip_weights)


_register_builtins()
