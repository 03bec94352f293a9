"""The metric registry: the one place a metric's outputs, inputs and capabilities are declared.

A metric file declares everything about its metric once, in one decorator on its function::

    @register_metric(
        Output("kd", "lower", "Kernel distance (KID): ..."),
        Output("kd_std", "none", "standard deviation of kd over the subsets", select=False),
        array="features", min_samples=2, order_invariant=False,
    )
    def kd(real, fake, *, subsets=100, subset_size=1000, seed=0, device=None): ...

Every output key with ``select=True`` becomes a registry entry (a name ``--metrics`` accepts);
outputs with ``select=False`` are reported with the entry declared before them (``kd_std`` with
``kd``). Entries made by one decorator share the function, which runs once per scoring call.
Everything else derives from these declarations: the result keys of a record
(:func:`result_keys`), leaderboard/check directions (:func:`result_directions`), which metrics a
statistics-only reference supports (``moments``), `evalkit metrics`, and the contract tests. All
of it is readable without running anything.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from evalkit.registry import Registry

Direction = Literal["lower", "higher", "zero", "none"]
DIRECTIONS = ("lower", "higher", "zero", "none")
ARRAY_KINDS = ("features", "logits", "spatial", "embedding", "projected", "text")
# real/fake/test: the metric's array of each set; labels / real_labels: class labels of the
# generated / reference rows; text: the CLIP text embedding of each generated row's prompt;
# prompts: an int id per generated row, equal ids for equal prompts
ARG_NAMES = ("real", "fake", "test", "labels", "real_labels", "text", "prompts")


@dataclass(frozen=True)
class Output:
    """One result key a metric writes.

    Attributes:
        key: the key in the record's ``metrics``.
        better: ``lower`` | ``higher`` is better, ``zero``: closer to 0 is better, ``none``: no
            direction (spreads such as ``kd_std``).
        description: one line for `evalkit metrics`, reports and the README.
        select: a registry entry of its own (``--metrics KEY``); False: reported with the entry
            declared before it.
        range: the closed interval ``(low, high)`` every value lies in (``inf`` for no bound):
            shares in [0, 1], percentages in [0, 100], distances and spreads in [0, inf).
            Confidence intervals are built inside it.
        column: ``(group, label)`` for a per-condition value (``("per class", "fd")`` for
            ``fd_per_class``): leaderboards put the group's columns together under one header
            group, each headed by its label (csv: ``per_class.fd``). None: an overall column.
    """

    key: str
    better: Direction
    description: str
    select: bool = True
    range: tuple[float, float] = (-math.inf, math.inf)
    column: tuple[str, str] | None = None


@dataclass(frozen=True)
class MetricSpec:
    """A registry entry: what a metric needs and produces.

    Attributes:
        name: registry key (also its main result key).
        fn: the pure function. Its array arguments are named from ``ARG_NAMES``; it also accepts
            keyword ``seed`` (int, SeedSequence or Generator) and ``device`` when it uses them.
        outputs: the result keys this entry reports, its own first (e.g. ``kd``, ``kd_std``).
        array: which array of a feature set it reads (``features``, ``logits``, ``spatial`` or
            ``embedding``); ``fallback`` names the array read when that one is absent.
        args: which of ``ARG_NAMES`` it needs.
        optional: inputs it uses when present (``labels`` for per-class Vendi).
        min_samples: fewest generated (and reference/test) samples it accepts.
        device_rows: its ``real`` array may be a torch tensor already on the scoring device
            (any device), used there without a host copy, with the same values as for the
            numpy array (:class:`evalkit.scoring.run.ResidentRows`). False: it is given numpy.
        min_dim: fewest dimensions of its array it accepts (``--metrics all`` skips it on
            narrower features, naming the reason).
        moments: None, or ``f(mu_real, cov_real, fake, *, device)`` computing the same outputs
            from the reference's stored float64 mean and covariance alone (statistics-only
            references such as ADM's or pytorch-fid's ``.npz``); ``fake`` is the generated
            rows or, for a generated set streamed to its moments, its own (mean, covariance).
        order_invariant: the values do not depend on the order of the rows of any input (for
            metrics that subsample: whenever no subsampling happens).
        position: where it is listed (`evalkit metrics`, record keys, table columns); the
            built-in metrics use the documented listing order (README's metric table). Ties
            keep registration order.
        group: every entry name the same decorator made (they share ``fn``).
        defaults: the function's keyword defaults (read from its signature).
    """

    name: str
    fn: Callable[..., dict[str, float]]
    outputs: tuple[Output, ...]
    array: str
    args: tuple[str, ...]
    optional: tuple[str, ...]
    min_samples: int
    fallback: str | None = None
    moments: Callable[..., dict[str, float]] | None = None
    order_invariant: bool = True
    position: int = 1000
    group: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    min_dim: int = 1
    device_rows: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(o.key for o in self.outputs)

    @property
    def directions(self) -> dict[str, Direction]:
        return {o.key: o.better for o in self.outputs}

    @property
    def description(self) -> str:
        return self.outputs[0].description

    @property
    def higher_is_better(self) -> bool | None:
        better = self.outputs[0].better
        return True if better == "higher" else False if better == "lower" else None

    @property
    def seeded(self) -> bool:
        """Whether it draws random numbers (takes ``seed``)."""
        return "seed" in inspect.signature(self.fn).parameters

    @property
    def needs_test(self) -> bool:
        return "test" in self.args

    @property
    def needs_labels(self) -> bool:
        return "labels" in self.args

    @property
    def needs_real(self) -> bool:
        return "real" in self.args

    @property
    def needs_real_labels(self) -> bool:
        return "real_labels" in self.args

    @property
    def needs_text(self) -> bool:
        return "text" in self.args

    @property
    def needs_prompts(self) -> bool:
        return "prompts" in self.args

    def __call__(self, *, seed: Any = 0, device: Any = None, **arrays: Any) -> dict[str, float]:
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


def _check_declaration(outputs: tuple[Output, ...], array: str, fallback: str | None,
                       args: tuple[str, ...], optional: tuple[str, ...]) -> str:
    """The first key, after checking the declaration; ValueError names what is wrong."""
    if not outputs or not all(isinstance(o, Output) for o in outputs):
        raise ValueError("register_metric: declare at least one Output(key, better, description)")
    name = outputs[0].key
    if not outputs[0].select:
        raise ValueError(f"metric {name}: the first output must be selectable")
    keys = [o.key for o in outputs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"metric {name}: duplicate output keys {keys}")
    for o in outputs:
        if o.better not in DIRECTIONS:
            raise ValueError(f"metric {name}: output {o.key} direction {o.better!r} not in {DIRECTIONS}")
        if not o.description.strip():
            raise ValueError(f"metric {name}: output {o.key} needs a description")
        if o.column is not None and (len(o.column) != 2 or not all(
                isinstance(c, str) and c.strip() for c in o.column)):
            raise ValueError(f"metric {name}: output {o.key} column {o.column!r} is not "
                             "(group, label)")
        if len(o.range) != 2 or not o.range[0] < o.range[1]:
            raise ValueError(f"metric {name}: output {o.key} range {o.range!r} is not (low, high)")
    for kind in (array, fallback):
        if kind is not None and kind not in ARRAY_KINDS:
            raise ValueError(f"metric {name}: unknown array kind {kind!r}")
    bad = set(args) | set(optional)
    bad -= set(ARG_NAMES)
    if bad:
        raise ValueError(f"metric {name}: unknown args {sorted(bad)}")
    return name


def register_metric(
    *outputs: Output,
    array: str = "features",
    args: tuple[str, ...] = ("real", "fake"),
    optional: tuple[str, ...] = (),
    min_samples: int = 2,
    fallback: str | None = None,
    moments: Callable[..., dict[str, float]] | None = None,
    order_invariant: bool = True,
    position: int = 1000,
    min_dim: int = 1,
    device_rows: bool = False,
):
    """Decorator registering a metric function with its outputs and inputs (see the module doc)."""
    first = _check_declaration(outputs, array, fallback, args, optional)

    def wrap(fn):
        params = inspect.signature(fn).parameters
        missing = [a for a in (*args, *optional) if a not in params]
        if missing:
            raise ValueError(f"metric {first}: {fn.__name__} takes no argument {missing}")
        defaults = {
            p.name: p.default for p in params.values()
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and p.name != "device"
        }
        entries: list[list[Output]] = []
        for o in outputs:
            if o.select:
                entries.append([o])
            else:
                entries[-1].append(o)
        group = tuple(e[0].key for e in entries)
        taken = [k for k in group if k in METRICS]
        if taken:
            raise ValueError(f"metric {taken[0]!r} is already registered")
        clash = [o.key for o in outputs if o.key in _all_keys()]
        if clash:
            raise ValueError(f"metric {first}: result key {clash[0]!r} is already another metric's")
        for entry in entries:
            METRICS.add(entry[0].key, MetricSpec(
                entry[0].key, fn, tuple(entry), array, tuple(args), tuple(optional), min_samples,
                fallback, moments, order_invariant, position, group, defaults, min_dim,
                device_rows))
        return fn

    return wrap


def metric_specs() -> list[MetricSpec]:
    """Every registered entry, in listing order (``position``, then registration order)."""
    return sorted((spec for _, spec in METRICS.items()), key=lambda s: s.position)


def list_metrics() -> list[str]:
    """Registered metric names in listing order (what ``--metrics all`` runs)."""
    return [spec.name for spec in metric_specs()]


def get_metric(name: str) -> MetricSpec:
    return METRICS.get(name)


def _all_keys() -> set[str]:
    return {k for _, spec in METRICS.items() for k in spec.keys}


def result_keys() -> tuple[str, ...]:
    """Every result key a registered metric writes, in listing order."""
    return tuple(k for spec in metric_specs() for k in spec.keys)


def result_directions() -> dict[str, Direction]:
    """Direction of every result key any metric produces (for check and leaderboard)."""
    return {o.key: o.better for spec in metric_specs() for o in spec.outputs}


def result_ranges() -> dict[str, tuple[float, float]]:
    """The declared value range of every result key any metric produces."""
    return {o.key: o.range for spec in metric_specs() for o in spec.outputs}


def result_column_groups() -> dict[str, tuple[str, str]]:
    """``key -> (group, label)`` of every per-condition result key (:attr:`Output.column`)."""
    return {o.key: o.column for spec in metric_specs() for o in spec.outputs if o.column}


def result_descriptions() -> dict[str, str]:
    """One-line description of every result key any metric produces."""
    return {o.key: o.description for spec in metric_specs() for o in spec.outputs}


def moments_metrics() -> dict[str, str]:
    """Metrics a statistics-only reference supports, with the array their statistics are of."""
    return {spec.name: spec.array for spec in metric_specs() if spec.moments is not None}
