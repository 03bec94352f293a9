"""evalkit.encoders: feature encoders registered by name.

Built-in encoders register on import; third-party packages add theirs through the
``evalkit.encoders`` entry-point group (each entry point loads a module or callable that
registers an EncoderSpec with ``register_encoder``).
"""
from __future__ import annotations

from importlib import metadata

from evalkit.encoders.base import Encoder, EncoderSpec, Preprocess, WeightsSpec  # noqa: F401
from evalkit.registry import Registry

ENCODERS: Registry[EncoderSpec] = Registry("encoder", "evalkit encoders")
ENTRY_POINT_GROUP = "evalkit.encoders"
_plugins_loaded = False


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add ``spec`` to the registry (refuses duplicate names)."""
    return ENCODERS.add(spec.name, spec)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if isinstance(obj, EncoderSpec) and obj.name not in ENCODERS:
            register_encoder(obj)
        elif callable(obj) and not isinstance(obj, type):
            spec = obj()
            if isinstance(spec, EncoderSpec) and spec.name not in ENCODERS:
                register_encoder(spec)


def list_encoders() -> list[str]:
    _load_plugins()
    return ENCODERS.names()


def get_encoder_spec(name: str) -> EncoderSpec:
    _load_plugins()
    return ENCODERS.get(name)


def build_encoder(name: str, arch: str | None = None, weights: str | None = None,
                  **options) -> Encoder:
    """Build encoder ``name`` (variant ``arch``) with weights from ``weights`` or the caches.

    Options: ``resize="legacy"`` for Inception's pytorch-fid mode; ``random_init=True`` builds
    with random weights (tests, benchmarks).
    """
    spec = get_encoder_spec(name)
    return spec.factory(arch=arch or spec.default_arch, weights=weights, **options)


from evalkit.encoders import pixel, inception, dinov2, clip  # noqa: E402,F401  (register built-ins)
