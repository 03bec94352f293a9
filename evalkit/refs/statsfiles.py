"""Reading published statistics files: mu/sigma ``.npz``, ADM reference batches, EDM2 pickles.

* a statistics ``.npz`` holds ``mu``/``sigma`` (and ``mu_s``/``sigma_s``, ``n``) and no
  images, as pytorch-fid ``--save-stats`` and guided-diffusion's ``evaluator.py`` write them;
* an ADM reference batch (guided-diffusion's ``VIRTUAL_*.npz``) holds images under ``arr_0``
  beside such statistics;
* an EDM2 reference (``*.pkl``) is a pickle of ``{"num_images", "fid": {"mu", "sigma"}, ...}``,
  read with :class:`NumpyOnlyUnpickler` so that a tampered file cannot run code.

Every reader checks that a mean is a finite ``(D,)`` vector and its covariance a finite
``(D, D)`` matrix, and raises :class:`InputError` naming the file otherwise. An ``.npz`` member
is read with bounded memory (:func:`evalkit.files.safezip.read_member`: a declared size over
:data:`MAX_STATS_BYTES` or an absurd compression ratio is refused before anything is inflated,
see :func:`evalkit.files.safezip.read_npy_member`)
and its ``.npy`` header must describe exactly the bytes the member holds, so a header that
claims 10^12 elements is an error, never an allocation.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import InputError
from evalkit.features.featureset import FeatureSet
from evalkit.files.safezip import read_npy_member

MOMENT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
MAX_STATS_BYTES = 1 << 30
"""Largest statistics array read from an ``.npz`` (a float64 covariance of 11,585 dims)."""


def check_moments(path: Path | str, what: str, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Raise InputError unless ``mu`` is a finite (D,) vector and ``sigma`` a finite (D, D)."""
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputError(f"{path}: {what} have shapes {mu.shape} and {sigma.shape}; "
                         "expected (D,) and (D, D)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise InputError(f"{path}: {what} hold NaN or infinite values")


def load_stats(path: str | Path, what: str | None = None) -> FeatureSet:
    """Read a statistics ``.npz`` (or the statistics of an ADM batch) as a statistics-only
    :class:`FeatureSet`: moments ``features`` (mu/sigma) and, when present, ``spatial``.

    Raises:
        InputError: naming ``what`` (default: the path): unreadable, not an ``.npz``, no
            ``mu``/``sigma`` (the message lists the arrays it has), a member whose header
            lies about its size, arrays that are not finite moments of one dimension.
    """
    path = Path(path)
    what = what or str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
            missing = [k for k in ("mu", "sigma") if k not in members]
            if missing:
                raise InputError(f"{what}: no {'/'.join(map(repr, missing))} statistics (arrays: "
                                 f"{', '.join(sorted(members)) or 'none'})")
            arrays = {k: _as_float(read_npy_member(zf, members[k], what, MAX_STATS_BYTES), what, k)
                      for k in MOMENT_KEYS if k in members}
            n = read_npy_member(zf, members["n"], what, MAX_STATS_BYTES) if "n" in members else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{what}: cannot read statistics .npz ({exc})") from None
    n = int(n) if (n is not None and n.ndim == 0 and n.dtype.kind in "iuf"
                   and np.isfinite(n)) else None
    moments = {"features": (arrays["mu"], arrays["sigma"])}
    if {"mu_s", "sigma_s"} <= set(arrays):
        moments["spatial"] = (arrays["mu_s"], arrays["sigma_s"])
    for (m, s), (mu, sigma) in zip((("mu", "sigma"), ("mu_s", "sigma_s")), moments.values()):
        check_moments(what, f"'{m}'/'{s}'", mu, sigma)
    return FeatureSet.from_moments(moments, n=n, source=str(path))


def _as_float(a: np.ndarray, what: str, key: str) -> np.ndarray:
    if a.dtype.kind not in "fiub":
        raise InputError(f"{what}: {key!r} holds {a.dtype} values, not numbers")
    return np.asarray(a, dtype=np.float64)


def stats_payload(stats: FeatureSet) -> dict[str, np.ndarray]:
    """The ``{"mu", "sigma"[, "mu_s", "sigma_s"]}`` arrays of a statistics-only FeatureSet."""
    payload = dict(zip(("mu", "sigma"), stats.moments["features"]))
    if "spatial" in stats.moments:
        payload.update(zip(("mu_s", "sigma_s"), stats.moments["spatial"]))
    return payload


def check_image_batch(path: Path, what: str | None = None) -> None:
    """Raise InputError (naming ``what``, default the path) unless ``path`` is an .npz with
    images under ``arr_0`` (ADM batch)."""
    what = what or str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{what}: not an .npz reference batch ({exc})") from None
    if "arr_0.npy" not in names:
        raise InputError(f"{what}: no images under 'arr_0' (not an ADM reference batch)")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays, dtypes and scalars and refuses every other global.

    EDM2's reference files are pickles of ``{"num_images": int, "fid": {"mu", "sigma"}, ...}``
    with numpy arrays; loading them with plain ``pickle`` would run any callable a tampered
    file names. Dicts, lists, strings and numbers need no globals.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a statistics file")


def load_numpy_pickle(path: Path, what: str | None = None) -> Any:
    """Unpickle ``path`` allowing numpy arrays only (see :class:`NumpyOnlyUnpickler`)."""
    what = what or str(path)
    try:
        return NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, RecursionError) as exc:
        raise InputError(f"{what}: not a statistics pickle of numpy arrays "
                         f"({type(exc).__name__}: {exc})") from None


def load_edm2_stats(path: Path, keys: list[str],
                    what: str | None = None) -> tuple[list[dict[str, np.ndarray]], int | None]:
    """``({"mu", "sigma"} per key, num_images)`` from an EDM2 reference pickle.

    Raises:
        InputError: naming ``what`` (default: the path): not a dict of statistics, a key
            missing, values that are not numeric arrays, or shapes that do not match.
    """
    what = what or str(path)
    data = load_numpy_pickle(path, what)
    if not isinstance(data, dict):
        raise InputError(f"{what}: expected a dict of statistics, got {type(data).__name__}")
    out = []
    for key in keys:
        item = data.get(key)
        if not isinstance(item, dict) or "mu" not in item or "sigma" not in item:
            raise InputError(f"{what}: no {key!r} statistics (mu, sigma); has "
                             f"{', '.join(map(str, data))}")
        mu, sigma = (_numeric(item[k], what, f"{key!r} {k}") for k in ("mu", "sigma"))
        check_moments(what, f"{key!r} mu/sigma", mu, sigma)
        out.append({"mu": mu, "sigma": sigma})
    n = data.get("num_images")
    return out, int(n) if isinstance(n, (int, np.integer)) and not isinstance(n, bool) else None


def _numeric(value: Any, what: str, name: str) -> np.ndarray:
    """``value`` as a float64 array, when it is a numeric numpy array (not a string, not an
    object array, not a nested list of whatever)."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise InputError(f"{what}: {name} is {kind}, not a numeric array")
    return np.asarray(value, dtype=np.float64)
