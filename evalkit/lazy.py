"""Heavy modules imported on first use: listing, checking and `--help` never import torch.

``from evalkit.lazy import torch`` gives a stand-in that imports torch the first time one of
its attributes is read. At that moment every module-level name bound to the stand-in (the
``torch`` of each module that imported it this way) is rebound to the real module, so from then
on attribute access costs exactly what it costs after a plain ``import torch``. Module-level
code must therefore not touch ``torch.<anything>`` (defaults, constants, base classes);
function bodies use it as usual.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType


class LazyModule:
    """Stands for module ``name`` until an attribute is read; then imports it and forwards."""

    __slots__ = ("_lazy_name", "_lazy_module")

    def __init__(self, name: str):
        object.__setattr__(self, "_lazy_name", name)
        object.__setattr__(self, "_lazy_module", None)

    def __getattribute__(self, attr: str):
        module = object.__getattribute__(self, "_lazy_module")
        if module is None:
            module = object.__getattribute__(self, "_load")()
        return getattr(module, attr)

    def __dir__(self):
        return dir(object.__getattribute__(self, "_load")())

    def __repr__(self) -> str:
        return f"<lazy module {object.__getattribute__(self, '_lazy_name')!r}>"

    def _load(self) -> ModuleType:
        module = object.__getattribute__(self, "_lazy_module")
        if module is None:
            module = importlib.import_module(object.__getattribute__(self, "_lazy_name"))
            object.__setattr__(self, "_lazy_module", module)
            _rebind(self, module)
        return module


def _rebind(proxy: LazyModule, module: ModuleType) -> None:
    """Replace ``proxy`` by ``module`` in every loaded module's globals (once, at load time)."""
    for mod in list(sys.modules.values()):
        namespace = getattr(mod, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key in [k for k, v in list(namespace.items()) if v is proxy]:
            namespace[key] = module


torch = LazyModule("torch")
pandas = LazyModule("pandas")
scipy = LazyModule("scipy")  # scipy loads its submodules (scipy.linalg) on attribute access
scipy_blas = LazyModule("scipy.linalg.blas")
