"""Versions of the software that produced a number, recorded in feature files and results."""
from __future__ import annotations

import platform

from evalkit import __version__


def versions() -> dict[str, str]:
    """``{"evalkit", "torch", "numpy", "pillow", "python"}`` version strings."""
    import numpy
    import PIL
    import torch  # when asked: reading a record must not import torch

    return {"evalkit": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}
