"""evalkit.metrics: metric functions on feature arrays, and their registry.

Every metric is a pure function of arrays with explicit keyword defaults, registered with the
inputs it needs; importing this package registers all built-in metrics.
"""
from evalkit.metrics._registry import (  # noqa: F401
    METRICS,
    MetricSpec,
    get_metric,
    list_metrics,
    register_metric,
    result_directions,
)
from evalkit.metrics.fls import fls, fls_pog  # noqa: F401
from evalkit.metrics.frechet import fd, fd_inf, sfid  # noqa: F401
from evalkit.metrics.inception_score import inception_score  # noqa: F401
from evalkit.metrics.kernel import cmmd, kd  # noqa: F401
from evalkit.metrics.memorization import authpct, ct  # noqa: F401
from evalkit.metrics.per_sample import per_sample  # noqa: F401
from evalkit.metrics.prdc import coverage, density, prdc, precision, realism, recall  # noqa: F401
from evalkit.metrics.sliced import sw_approx  # noqa: F401
from evalkit.metrics.vendi import vendi  # noqa: F401

# `is` is a keyword in Python; the function is `inception_score`, the registry key `is`.
globals()["is"] = inception_score
