"""Typed errors raised by library code. Only the CLI turns them into exit codes."""


class EvalkitError(Exception):
    """Base class of every error evalkit raises on purpose."""

    exit_code = 2


class InputError(EvalkitError):
    """Bad user input: a file that is missing, unreadable, malformed or inconsistent.

    The message names the file and what is wrong, and where possible says the fix.
    """


class MetricInputError(InputError, ValueError):
    """A metric cannot run on the inputs it was given (missing array, too few samples, bad shape).

    Raised by the pure metric functions in ``evalkit.metrics`` (which import nothing from the
    engine but this leaf module); also a ``ValueError``, so library callers that pass arrays
    and catch ValueError, as with numpy or scikit-learn, keep working.
    """


class OfflineError(EvalkitError):
    """Weights are needed, none are found locally and they cannot be downloaded."""


class UnknownNameError(InputError):
    """A registry lookup for a name that is not registered."""


class ProtocolMismatchError(InputError):
    """Two result records that are not comparable were asked to be compared."""


class WeightsHashError(InputError):
    """A weights file's sha256 differs from the one declared for it (corrupt or wrong file)."""
