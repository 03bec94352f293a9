"""evalkit.metrics: metric functions on feature arrays, and their registry.

Every metric is a pure function of arrays with explicit keyword defaults, declared once with
:func:`register_metric` in the file that defines it. Importing this package imports every
module in it (so a new metric is one new file) and exposes each registered function under its
registry names and its own name (``fd``, ``kd``, ``is``/``inception_score``, ``prdc``, ...).
"""
import importlib
import pkgutil

from evalkit.metrics._registry import (  # noqa: F401
    METRICS,
    MetricSpec,
    Output,
    get_metric,
    list_metrics,
    metric_specs,
    moments_metrics,
    register_metric,
    result_column_groups,
    result_descriptions,
    result_directions,
    result_keys,
    result_ranges,
)

# every module is a metric file; sub-packages (primitives/) and _private modules are not
for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.ispkg):
    if not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")

for _spec in metric_specs():  # `is` is a keyword: reachable as getattr(metrics, "is")
    globals()[_spec.name] = _spec.fn
    globals()[_spec.fn.__name__] = _spec.fn

from evalkit.metrics.per_sample import per_sample  # noqa: E402,F401  (not a metric: per-row outputs)

del _mod, _spec
