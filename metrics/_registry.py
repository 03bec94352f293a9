"""The metric registry: each metric is a pure function on arrays plus declared metadata.

Metadata (inputs, output keys, direction, minimum sample count, defaults) is readable without
running anything, so `evalkit metrics`, input validation and leaderboard sorting stay instant.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from evalkit.registry import Registry

Direction = Literal["lower", "higher", "zero", "none"]
ARRAY_KINDS = ("features", "logits", "spatial", "embedding")
ARG_NAMES = ("real", "fake", "test", "labels")


@dataclass(frozen=True)
class MetricSpec:
    """What a metric needs and produces.

    Attributes:
        name: registry key (also the main result key).
        fn: the pure function. Its array arguments are named from ``ARG_NAMES``; it also accepts
            keyword ``seed`` and ``device`` when it uses them.
        keys: result keys it returns, main key first (e.g. ``("kd", "kd_std")``).
        array: which array of a feature set it reads (``features``, ``logits``, ``spatial`` or
            ``embedding``); ``embedding`` falls back to ``features`` when ``fallback`` says so.
        args: which of real/fake/test/labels it takes.
        directions: per key, whether lower or higher is better (``zero``: closer to 0 is better).
        min_samples: fewest generated (and reference) samples it accepts.
        description: one line for `evalkit metrics`.
    """

    name: str
    fn: Callable[..., dict[str, float]]
    keys: tuple[str, ...]
    array: str
    args: tuple[str, ...]
    directions: Mapping[str, Direction]
    min_samples: int
    description: str
    fallback: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needs_test(self) -> bool:
        return "test" in self.args

    @property
    def needs_labels(self) -> bool:
        return "labels" in self.args

    @property
    def needs_real(self) -> bool:
        return "real" in self.args

    def __call__(self, *, seed: int = 0, device: Any = None, **arrays: Any) -> dict[str, float]:
        params = inspect.signature(self.fn).parameters
        kwargs = {k: arrays[k] for k in self.args}
        if "seed" in params:
            kwargs["seed"] = seed
        if "device" in params:
            kwargs["device"] = device
        for key, value in arrays.items():  # optional inputs (e.g. labels for vendi) and overrides
            if key not in kwargs and key in params and value is not None:
                kwargs[key] = value
        return self.fn(**kwargs)


METRICS: Registry[MetricSpec] = Registry("metric", "evalkit metrics")


def register_metric(
    name: str,
    *,
    keys: tuple[str, ...] | None = None,
    array: str = "features",
    args: tuple[str, ...] = ("real", "fake"),
    higher_is_better: bool | None = False,
    directions: Mapping[str, Direction] | None = None,
    min_samples: int = 2,
    description: str,
    fallback: str | None = None,
):
    """Decorator registering a metric function under ``name`` with its metadata."""
    if array not in ARRAY_KINDS:
        raise ValueError(f"metric {name}: unknown array kind {array!r}")
    bad = set(args) - set(ARG_NAMES)
    if bad:
        raise ValueError(f"metric {name}: unknown args {sorted(bad)}")

    def wrap(fn):
        out_keys = keys or (name,)
        main: Direction = "none" if higher_is_better is None else ("higher" if higher_is_better else "lower")
        dirs = {k: "none" for k in out_keys}
        dirs[out_keys[0]] = main
        dirs.update(directions or {})
        defaults = {
            p.name: p.default
            for p in inspect.signature(fn).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and p.name not in ("device",)
        }
        METRICS.add(
            name,
            MetricSpec(name, fn, tuple(out_keys), array, tuple(args), dirs, min_samples,
                       description, fallback, defaults),
        )
        return fn

    return wrap


def list_metrics() -> list[str]:
    return METRICS.names()


def get_metric(name: str) -> MetricSpec:
    return METRICS.get(name)


def result_directions() -> dict[str, Direction]:
    """Direction of every result key any metric produces (for check and leaderboard)."""
    out: dict[str, Direction] = {}
    for _, spec in METRICS.items():
        out.update(spec.directions)
    return out
