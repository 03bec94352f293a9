"""Features of extreme magnitude: the kNN metrics are scale-invariant, and nothing returns a silently
wrong number (issue 13: features of magnitude 1e30 gave an IndexError or precision 0.0).

References: the ``prdc`` package at scale 1, brute-force numpy definitions, and the exact scaling
laws (precision/recall/density/coverage/realism/authpct/C_T/FLS do not depend on units; FD
scales with c^2; distances with c).
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from knn_queries import count_within, kth_neighbour_distance, nearest

import evalkit.metrics  # noqa: F401  (registers every metric)
from evalkit.errors import MetricInputError
from evalkit.metrics import get_metric
from evalkit.metrics.frechet import fd
from evalkit.metrics.kernel import kd
from evalkit.metrics.memorization import authenticity
from evalkit.metrics.primitives import knn

CPU = "cpu"
SCALES = (1e30, 1e-30, 2.0**100, 2.0**-100)


@pytest.fixture(scope="module")
def sets():
    g = np.random.default_rng(13)
    real = g.standard_normal((300, 16)).astype(np.float32)
    fake = (1.1 * g.standard_normal((250, 16)) + 0.2).astype(np.float32)
    test = g.standard_normal((200, 16)).astype(np.float32)
    return real, fake, test


def _call(name, real, fake, test):
    spec = get_metric(name)
    arrays = {"real": real, "fake": fake}
    if spec.needs_test:
        arrays["test"] = test
    return spec(seed=0, device=CPU, **arrays)


def test_prdc_at_scale_one_equals_prdc_package(sets):
    prdc_pkg = pytest.importorskip("prdc")
    real, fake, _ = sets
    with contextlib.redirect_stdout(io.StringIO()):
        ref = prdc_pkg.compute_prdc(real, fake, 5)
    out = _call("precision", real, fake, None)
    assert out == {k: pytest.approx(float(v), abs=1e-12) for k, v in ref.items()}


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", ["precision", "realism", "authpct", "ct", "fls"])
def test_knn_metrics_do_not_depend_on_scale(sets, name, scale):
    real, fake, test = sets
    base = _call(name, real, fake, test)
    c = np.float32(scale)
    out = _call(name, real * c, fake * c, test * c)
    exact = scale in (2.0**100, 2.0**-100)  # a power of two scales every float exactly
    for key, value in base.items():
        if key.startswith("_"):
            continue
        if exact or name in ("precision", "authpct", "ct"):
            assert out[key] == value, (key, out[key], value)  # counts: identical decisions
        else:
            assert out[key] == pytest.approx(value, rel=1e-6), key


@pytest.mark.parametrize("scale", SCALES)
def test_knn_distances_come_back_in_input_units(sets, scale):
    real, fake, _ = sets
    r64, f64 = real.astype(np.float64) * scale, fake.astype(np.float64) * scale
    brute = np.sqrt(((f64[:, None, :] - r64[None, :, :]) ** 2).sum(-1))
    dist, idx = nearest(f64, r64, 2, device=CPU)
    np.testing.assert_array_equal(idx.numpy(), np.argsort(brute, axis=1, kind="stable")[:, :2])
    np.testing.assert_allclose(dist.numpy(), np.sort(brute, axis=1)[:, :2], rtol=1e-12)
    _, nn_dist, _ = authenticity(r64, f64, device=CPU)
    np.testing.assert_allclose(nn_dist.numpy(), brute.min(1), rtol=1e-12)
    self_sq = ((r64[:, None, :] - r64[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(self_sq, np.inf)
    kth = np.sqrt(np.sort(self_sq, axis=1)[:, 4])
    np.testing.assert_allclose(kth_neighbour_distance(r64, 5, device=CPU).numpy(), kth, rtol=1e-12)
    radii = kth * 1.5
    counts = count_within(f64, r64, radii, device=CPU).numpy()
    np.testing.assert_array_equal(counts, (brute < radii[None, :]).sum(1))


def test_fd_at_1e30_is_right_and_overflow_is_an_input_error(sets):
    real, fake, _ = sets
    base = fd(real, fake, device=CPU)["fd"]
    assert fd(real * np.float32(1e30), fake * np.float32(1e30), device=CPU)["fd"] == pytest.approx(
        base * 1e60, rel=1e-5)
    huge = 1e200  # squares overflow float64: an error naming the problem, never inf or NaN
    with pytest.raises(MetricInputError, match="overflow"):
        fd(real.astype(np.float64) * huge, fake.astype(np.float64) * huge, device=CPU)


def test_kd_overflow_is_an_input_error(sets):
    real, fake, _ = sets
    c = np.float32(1e30)
    with pytest.raises(MetricInputError, match=r"kd: .*overflows.*magnitude"):
        kd(real * c, fake * c, subsets=5, subset_size=100, device=CPU)


def test_non_finite_features_are_an_input_error(sets):
    real, fake, _ = sets
    bad = real.copy()
    bad[3, 2] = np.inf
    with pytest.raises(MetricInputError, match="NaN or inf"):
        nearest(fake, bad, 1, device=CPU)
    assert knn.safe_scale(1.0) == 1.0 and knn.safe_scale(0.0) == 1.0
    assert knn.safe_scale(1e30) * 1e30 < 1.0 <= 2 * knn.safe_scale(1e30) * 1e30


def test_score_cli_exit_codes_at_1e30(tmp_path, sets):
    from click.testing import CliRunner

    from evalkit.cli import main
    from evalkit.features.featureset import FeatureSet, save_feature_file

    real, fake, _ = sets
    paths = {}
    for name, arr in (("real", real), ("fake", fake)):
        paths[name] = str(tmp_path / f"{name}.npz")
        save_feature_file(FeatureSet({"features": arr * np.float32(1e30)}), paths[name])
    ok = CliRunner().invoke(main, ["score", paths["fake"], "--ref", paths["real"], "--metrics",
                                   "precision,fd", "--out", str(tmp_path / "r.json"), "--quiet"])
    assert ok.exit_code == 0, ok.output
    import json

    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["metrics"]["precision"] == _call("precision", real, fake, None)["precision"]
    bad = CliRunner().invoke(main, ["score", paths["fake"], "--ref", paths["real"], "--metrics", "kd"])
    assert bad.exit_code == 2 and "overflows" in bad.output
