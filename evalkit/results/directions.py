"""Which way is better for each result key, as the metric registry declares it, and the
arrow every human-facing output prints for it."""
from __future__ import annotations

ARROWS = {"lower": "↓", "higher": "↑", "zero": "→0", "none": ""}


def metric_directions() -> dict[str, str]:
    """Direction of every result key, as the metric registry declares it."""
    # imported when asked: the registry imports every metric module, which `evalkit --help`
    # and `check` must not pay for (tests/test_cli_startup.py)
    from evalkit.metrics import result_directions

    return dict(result_directions())


def direction_of(key: str, directions: dict[str, str] | None = None) -> str:
    """``lower`` | ``higher`` | ``zero`` | ``none`` for ``key`` (``*_std``: none)."""
    directions = directions if directions is not None else metric_directions()
    return directions.get(key, "none")
