"""Versions of the software that produced a number, recorded in feature files and results."""
from __future__ import annotations

import platform


def versions() -> dict[str, str]:
    """``{"evalkit", "torch", "numpy", "pillow", "python"}`` version strings."""
    import numpy
    import PIL
    import torch

    from evalkit import __version__

    return {"evalkit": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}
