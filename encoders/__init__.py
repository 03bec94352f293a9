"""evalkit.encoders: feature encoders registered by name.

Built-in encoders are declared in :data:`~evalkit.encoders.spec.BUILTINS` (one entry each) and
register on import; third-party packages add theirs through the ``evalkit.encoders``
entry-point group (each entry point loads a module that registers an EncoderSpec with
``register_encoder``, an EncoderSpec, or a callable returning one). A plugin that fails to
load is reported with a warning naming its entry point; it never breaks the other encoders or
commands.

Importing this package imports no torch: each built-in encoder's module (which defines torch
classes) is imported the first time its spec is asked for; `evalkit encoders` lists the
built-ins from their declarations. An encoder's identity (for cache keys and records) is
computed by :mod:`evalkit.features.identity` from :func:`encoder_preprocess` and
:func:`encoder_weights_spec`.
"""
from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING

from evalkit.encoders.spec import (  # noqa: F401 (re-exported)
    BUILTINS,
    Builtin,
    EncoderSpec,
    Preprocess,
    WeightsSpec,
    check_arch,
    check_resize,
    legacy_resize_encoders,
    resize_encoders,
    resize_modes,
)
from evalkit.errors import InputError, pip_hint
from evalkit.registry import Registry

if TYPE_CHECKING:
    from evalkit.encoders.base import Encoder


ENCODERS: Registry[EncoderSpec | Builtin] = Registry("encoder", "evalkit encoders")
ENTRY_POINT_GROUP = "evalkit.encoders"
_plugins_loaded = False

PreprocessFn = Callable[[str, str], Preprocess]  # (arch, resize) -> Preprocess
WeightsFn = Callable[[str], "WeightsSpec | None"]  # arch -> declared weights
_built_preprocess: dict[tuple[str, str, str], Preprocess] = {}


def register_encoder(spec: EncoderSpec, *, preprocess: PreprocessFn | None = None,
                     weights: WeightsFn | None = None, replace: bool = False) -> EncoderSpec:
    """Add ``spec`` to the registry (refuses duplicate names); returns the spec registered.

    Args:
        spec: the encoder's metadata and factory.
        preprocess: optional ``(arch, resize) -> Preprocess`` that answers without building
            the model (sets ``spec.preprocess``); without one the preprocessing of a plugin
            encoder is read from a randomly initialised build, once per (arch, resize).
        weights: optional ``arch -> WeightsSpec | None`` for archs not listed in
            ``spec.weights`` (sets ``spec.weights_for``; open-ended arch names).
        replace: put ``spec`` in place of the one registered under its name (custom
            encoders re-registered by :func:`evalkit.encoders.custom.custom_encoder`).
    """
    if preprocess is not None:
        spec = dataclasses.replace(spec, preprocess=preprocess)
    if weights is not None:
        spec = dataclasses.replace(spec, weights_for=weights)
    if replace:
        ENCODERS.replace(spec.name, spec)
    else:
        ENCODERS.add(spec.name, spec)
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
    spec = importlib.import_module(entry.module_name).SPEC
    ENCODERS._entries[name] = spec  # same position: built-ins stay listed first
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


def check_packages(name: str) -> None:
    """InputError with the install command when a Python package that built-in encoder ``name``
    imports (its ``Builtin.packages``) is not installed: asked of the import system
    (``importlib.util.find_spec``), without importing it, before any weights are looked for or
    downloaded. Plugins and unknown names pass (they are checked where they are built)."""
    import importlib.util

    decl = BUILTINS.get(name)
    for module, extra in decl.packages if decl is not None else ():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-removed installation
            found = False
        if not found:
            raise InputError(f"the {name} encoder needs the Python package {module}, which is "
                             f"not installed: {pip_hint(extra)}")


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

    Options: ``resize="legacy"`` for the reference tool's own resize (the encoders of
    :func:`legacy_resize_encoders`); ``random_init=True`` builds
    with random weights (tests, benchmarks). The module is returned on the CPU in eval mode;
    move it with ``.to(device)``.
    """
    check_packages(name)
    spec = get_encoder_spec(name)
    encoder = spec.factory(arch=arch or spec.default_arch, weights=weights, **options)
    return encoder.eval()


def encoder_preprocess(name: str, arch: str | None = None, resize: str = "clean") -> Preprocess:
    """How the data workers must prepare images for ``name``/``arch``, without the weights."""
    spec = get_encoder_spec(name)
    arch = arch or spec.default_arch
    if spec.preprocess is not None:
        return spec.preprocess(arch, resize)
    key = (name, arch, resize)
    if key not in _built_preprocess:
        try:
            enc = spec.factory(arch=arch, weights=None, resize=resize, random_init=True)
        except TypeError:  # a plugin factory without random_init
            enc = spec.factory(arch=arch, weights=None, resize=resize)
        _built_preprocess[key] = enc.preprocess
    return _built_preprocess[key]


def encoder_outputs_version(name: str) -> int:
    """The declared version of ``name``'s set of outputs (``Builtin.outputs_version``; 1 for
    an encoder not registered), read from the declaration without importing its module."""
    _load_plugins()
    entry = ENCODERS._entries.get(name) if name in ENCODERS else None
    return int(getattr(entry, "outputs_version", 1) or 1)


def encoder_weights_spec(name: str, arch: str | None = None) -> WeightsSpec | None:
    """The declared weights of ``name``/``arch`` (None for weight-free encoders)."""
    spec = get_encoder_spec(name)
    arch = arch or spec.default_arch
    if spec.weights_for is not None:
        return spec.weights_for(arch)
    return spec.weights.get(arch)


for _name, _builtin in BUILTINS.items():
    ENCODERS.add(_name, _builtin)
