"""One reader of statistics files: mu/sigma .npz, ADM batches, EDM2 pickles."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from evalkit.errors import InputError
from evalkit.images.sources import stats_npz_keys
from evalkit.refs.statsfiles import (
    check_image_batch,
    load_edm2_stats,
    load_stats,
    stats_payload,
)


def test_npz_statistics_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    mu, sigma, mu_s = rng.normal(size=4), np.eye(4) * 2.0, rng.normal(size=3)
    np.savez(tmp_path / "s.npz", mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=np.eye(3), n=np.int64(7))
    assert stats_npz_keys(tmp_path / "s.npz") is not None
    stats = load_stats(tmp_path / "s.npz")
    assert stats.n == 7 and not stats.has_samples
    payload = stats_payload(stats)
    assert sorted(payload) == ["mu", "mu_s", "sigma", "sigma_s"]
    assert np.array_equal(payload["mu"], mu) and np.array_equal(payload["sigma_s"], np.eye(3))


@pytest.mark.parametrize("arrays, match", [
    ({"mu": np.zeros(3), "sigma": np.eye(4)}, r"expected \(D,\) and \(D, D\)"),
    ({"mu": np.array([0.0, np.nan]), "sigma": np.eye(2)}, "NaN or infinite"),
    ({"mu": np.zeros(2), "sigma": np.eye(2), "mu_s": np.zeros(2), "sigma_s": np.eye(3)},
     r"'mu_s'/'sigma_s' have shapes"),
])
def test_npz_statistics_validated(tmp_path, arrays, match):
    np.savez(tmp_path / "s.npz", **arrays)
    with pytest.raises(InputError, match=match):
        load_stats(tmp_path / "s.npz")


def test_adm_batch_needs_images_and_statistics(tmp_path):
    np.savez(tmp_path / "b.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    check_image_batch(tmp_path / "b.npz")
    assert stats_npz_keys(tmp_path / "b.npz") is None  # images inside: a batch, not statistics
    with pytest.raises(InputError, match="no 'mu'/'sigma'"):
        load_stats(tmp_path / "b.npz")
    np.savez(tmp_path / "s.npz", mu=np.zeros(2), sigma=np.eye(2))
    with pytest.raises(InputError, match="no images under 'arr_0'"):
        check_image_batch(tmp_path / "s.npz")


def test_edm2_pickle(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    (tmp_path / "r.pkl").write_bytes(pickle.dumps(
        {"num_images": np.int64(50), "fid": {"mu": mu, "sigma": sigma},
         "bad": {"mu": mu, "sigma": np.full((3, 3), np.inf)}}))
    [payload], n = load_edm2_stats(tmp_path / "r.pkl", ["fid"])
    assert n == 50 and np.array_equal(payload["mu"], mu) and np.array_equal(payload["sigma"], sigma)
    with pytest.raises(InputError, match="NaN or infinite"):
        load_edm2_stats(tmp_path / "r.pkl", ["bad"])
    with pytest.raises(InputError, match="no 'fd_dinov2' statistics"):
        load_edm2_stats(tmp_path / "r.pkl", ["fd_dinov2"])
