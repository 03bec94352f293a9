"""Every error and warning evalkit raises on purpose. Only the CLI turns errors into exit codes
(2 for an :class:`EvalkitError`) and warnings into one ``evalkit: warning:`` line each."""

# The name evalkit is published under on PyPI (``evalkit`` there is an unrelated project); the
# command and the import name stay ``evalkit``. Every install hint is built from it.
DIST_NAME = "evalkit-gen"


def pip_hint(extra: str) -> str:
    """The shell command that installs an optional extra, quoted so zsh does not glob the brackets."""
    return f'pip install "{DIST_NAME}[{extra}]"'


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


class OutputError(EvalkitError, OSError):
    """An output cannot be written: an unwritable or invalid path, a full disk.

    Also an ``OSError``, so code that tolerates failed writes (the feature cache) still can.
    """


class PeerError(InputError):
    """An error another rank reported (raised on every rank so that all of them stop)."""


class DownloadError(OfflineError):
    """A reference file could not be fetched (offline, unreachable, HTTP error)."""


class VerificationError(InputError):
    """A downloaded or placed file has the wrong size or sha256."""


class StatsOnlyReferenceError(InputError):
    """The reference holds only mean/covariance statistics, and features were asked for."""


class DeviceMemoryError(EvalkitError):
    """The device ran out of memory even at one image per forward pass (after halving the
    batch size down from ``--batch-size``); the message names the sizes tried."""


# ----------------------------------------------------------------------------- warnings


class BadImageWarning(UserWarning):
    """An unreadable image was skipped (``skip_bad``)."""


class JpegWarning(UserWarning):
    """Inputs are JPEG: lossy compression shifts FID (clean-fid's study)."""


class CacheWarning(UserWarning):
    """A cache entry was corrupt (and is rebuilt) or the cache could not be written."""


class ProtocolWarning(UserWarning):
    """A protocol's sample count was not met: the number is not comparable with the tables."""


class CatalogWarning(UserWarning):
    """A catalog entry from a plugin or ``$EVALKIT_CATALOG`` replaces a built-in one."""
