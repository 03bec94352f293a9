"""Run from a checkout: map ``encoders/`` and ``metrics/`` into the ``evalkit`` package.

Installed, ``evalkit.encoders`` and ``evalkit.metrics`` live inside the package (setuptools
``package-dir``). In the repository root, ``python -m evalkit`` and ``torchrun ... -m evalkit``
import the top-level ``evalkit/`` folder instead (the current directory comes first on
``sys.path``), which has no such subfolders. This finder, last on ``sys.meta_path`` so that an
installed or editable mapping always wins, resolves the two names to the sibling folders.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

MAPPED = ("encoders", "metrics")


class SourceTreeFinder(importlib.abc.MetaPathFinder):
    """Finds ``evalkit.<sub>`` in ``<root>/<sub>`` for the mapped subpackages."""

    def __init__(self, folders: dict[str, str]):
        self.folders = folders

    def find_spec(self, fullname, path=None, target=None):
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])


def install(package_dir: str) -> None:
    """Add the finder when ``package_dir`` (the evalkit folder) sits in a source checkout."""
    if any(isinstance(f, SourceTreeFinder) for f in sys.meta_path):
        return
    root = os.path.dirname(os.path.abspath(package_dir))
    folders = {}
    for sub in MAPPED:
        inside = os.path.join(package_dir, sub)
        beside = os.path.join(root, sub)
        if not os.path.isdir(inside) and os.path.isfile(os.path.join(beside, "__init__.py")):
            folders[f"evalkit.{sub}"] = beside
    if folders:
        sys.meta_path.append(SourceTreeFinder(folders))
