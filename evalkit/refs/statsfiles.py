"""Reading published statistics files: mu/sigma ``.npz``, ADM reference batches, EDM2 pickles.

* a statistics ``.npz`` holds ``mu``/``sigma`` (and ``mu_s``/``sigma_s``, ``n``) and no
  images, as pytorch-fid ``--save-stats`` and guided-diffusion's ``evaluator.py`` write them;
* an ADM reference batch (guided-diffusion's ``VIRTUAL_*.npz``) holds images under ``arr_0``
  beside such statistics;
* an EDM2 reference (``*.pkl``) is a pickle of ``{"num_images", "fid": {"mu", "sigma"}, ...}``,
  read with :class:`NumpyOnlyUnpickler` so that a tampered file cannot run code.

Every reader checks that a mean is a finite ``(D,)`` vector and its covariance a finite
``(D, D)`` matrix, and raises :class:`InputError` naming the file otherwise.
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

MOMENT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")


def check_moments(path: Path, what: str, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Raise InputError unless ``mu`` is a finite (D,) vector and ``sigma`` a finite (D, D)."""
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputError(f"{path}: {what} have shapes {mu.shape} and {sigma.shape}; "
                         "expected (D,) and (D, D)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise InputError(f"{path}: {what} hold NaN or infinite values")


def load_stats(path: str | Path) -> FeatureSet:
    """Read a statistics ``.npz`` (or the statistics of an ADM batch) as a statistics-only
    :class:`FeatureSet`: moments ``features`` (mu/sigma) and, when present, ``spatial``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k], dtype=np.float64) for k in z.files if k in MOMENT_KEYS}
            n = int(z["n"]) if "n" in z.files and np.asarray(z["n"]).ndim == 0 else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: cannot read statistics .npz ({exc})") from None
    if not {"mu", "sigma"} <= set(arrays):
        raise InputError(f"{path}: no 'mu'/'sigma' statistics")
    moments = {"features": (arrays["mu"], arrays["sigma"])}
    if {"mu_s", "sigma_s"} <= set(arrays):
        moments["spatial"] = (arrays["mu_s"], arrays["sigma_s"])
    for (m, s), (mu, sigma) in zip((("mu", "sigma"), ("mu_s", "sigma_s")), moments.values()):
        check_moments(path, f"'{m}'/'{s}'", mu, sigma)
    return FeatureSet.from_moments(moments, n=n, source=str(path))


def stats_payload(stats: FeatureSet) -> dict[str, np.ndarray]:
    """The ``{"mu", "sigma"[, "mu_s", "sigma_s"]}`` arrays of a statistics-only FeatureSet."""
    payload = dict(zip(("mu", "sigma"), stats.moments["features"]))
    if "spatial" in stats.moments:
        payload.update(zip(("mu_s", "sigma_s"), stats.moments["spatial"]))
    return payload


def check_image_batch(path: Path) -> None:
    """Raise InputError unless ``path`` is an .npz with images under ``arr_0`` (ADM batch)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not an .npz reference batch ({exc})") from None
    if "arr_0.npy" not in names:
        raise InputError(f"{path}: no images under 'arr_0' (not an ADM reference batch)")


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


def load_numpy_pickle(path: Path) -> Any:
    """Unpickle ``path`` allowing numpy arrays only (see :class:`NumpyOnlyUnpickler`)."""
    try:
        return NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as exc:
        raise InputError(f"{path}: not a statistics pickle of numpy arrays ({exc})") from None


def load_edm2_stats(path: Path, keys: list[str]) -> tuple[list[dict[str, np.ndarray]], int | None]:
    """``({"mu", "sigma"} per key, num_images)`` from an EDM2 reference pickle.

    Raises:
        InputError: not a dict of statistics, a key missing, or shapes that do not match.
    """
    data = load_numpy_pickle(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a dict of statistics, got {type(data).__name__}")
    out = []
    for key in keys:
        item = data.get(key)
        if not isinstance(item, dict) or "mu" not in item or "sigma" not in item:
            raise InputError(f"{path}: no {key!r} statistics (mu, sigma); has "
                             f"{', '.join(map(str, data))}")
        mu = np.asarray(item["mu"], dtype=np.float64)
        sigma = np.asarray(item["sigma"], dtype=np.float64)
        check_moments(path, f"{key!r} mu/sigma", mu, sigma)
        out.append({"mu": mu, "sigma": sigma})
    n = data.get("num_images")
    return out, int(n) if isinstance(n, (int, np.integer)) else None
