"""evalkit: fast, reproducible metrics for image generative models.

    import evalkit
    result = evalkit.score("samples/", "real/", encoder="dinov2")
    result.metrics["fd"]
"""
__version__ = "0.1.0"

from evalkit import _source_tree  # noqa: E402
from evalkit.errors import EvalkitError, InputError, OfflineError  # noqa: E402,F401

_source_tree.install(__path__[0])  # `python -m evalkit` in a checkout: encoders/, metrics/

_LAZY = {"score": "evalkit.api", "Result": "evalkit.api", "Evaluator": "evalkit.evaluator",
         "EvaluatorGroup": "evalkit.evaluator", "load_features": "evalkit.features.loader",
         "is_main": "evalkit.features.distributed", "custom_encoder": "evalkit.encoders.custom"}


def __getattr__(name):  # lazy: `import evalkit` (and the CLI) must not import torch
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
