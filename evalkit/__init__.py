"""evalkit: fast, reproducible metrics for image generative models.

    import evalkit
    result = evalkit.score("samples/", "real/", encoder="dinov2")
    result.metrics["fd"]
"""
__version__ = "0.1.0"

from evalkit.api import Result, score  # noqa: E402,F401
from evalkit.errors import EvalkitError, InputError, OfflineError  # noqa: E402,F401


def __getattr__(name):  # lazy: the Evaluator pulls in the extraction engine
    if name == "Evaluator":
        from evalkit.evaluator import Evaluator

        return Evaluator
    raise AttributeError(name)
