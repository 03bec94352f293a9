"""Heavy modules imported on first use: listing, checking and `--help` never import torch.

``from evalkit.lazy import torch`` gives a stand-in that imports torch the first time one of
its attributes is used and then forwards every attribute to it, so module-level code must not
touch ``torch.<anything>`` (defaults, constants); function bodies use it as usual.
"""
from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """Stands for module ``name`` until an attribute is read; then imports it and forwards."""

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self.__name__), attr)

    def __dir__(self):
        return dir(importlib.import_module(self.__name__))


torch = LazyModule("torch")
pandas = LazyModule("pandas")
scipy = LazyModule("scipy")  # scipy loads its submodules (scipy.linalg) on attribute access
scipy_blas = LazyModule("scipy.linalg.blas")
