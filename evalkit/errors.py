"""Typed errors raised by library code. Only the CLI turns them into exit codes."""


class EvalkitError(Exception):
    """Base class of every error evalkit raises on purpose."""

    exit_code = 2


class InputError(EvalkitError):
    """Bad user input: a file that is missing, unreadable, malformed or inconsistent.

    The message names the file and what is wrong, and where possible says the fix.
    """


class MetricInputError(InputError):
    """A metric cannot run on the inputs it was given (missing array, too few samples)."""


class OfflineError(EvalkitError):
    """Weights are needed, none are found locally and they cannot be downloaded."""


class UnknownNameError(InputError):
    """A registry lookup for a name that is not registered."""


class ProtocolMismatchError(InputError):
    """Two result records that are not comparable were asked to be compared."""


class OutputError(EvalkitError, OSError):
    """An output cannot be written: an unwritable or invalid path, a full disk.

    Also an ``OSError``, so code that tolerates failed writes (the feature cache) still can.
    """
