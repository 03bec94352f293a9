"""Moment and kernel metrics (fd, sfid, fd_inf, kd, is, sw_approx, cmmd).

Reference cases compare with the anchor packages on the same seeded arrays (pytorch-fid,
torch-fidelity), analytic cases with hand-checked values, plus invariances and seeding.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from anchors import cmmd_brute as _cmmd_brute
from anchors import pytorch_fid as _pytorch_fid
from anchors import torch_fidelity_kid as _tf_kid

import evalkit.metrics as M
from evalkit.errors import MetricInputError
from evalkit.metrics import cmmd, fd, fd_inf, inception_score, kd, sfid, sw_approx
from evalkit.metrics import frechet as frechet_mod
from evalkit.metrics import kernel as kernel_mod
from evalkit.metrics.primitives import common as common_mod


def _rng(seed=0):
    return np.random.default_rng(seed)


def _gauss(rng, n, d, shift=0.0, mix=0.0):
    """Correlated Gaussian features: z (I + mix·A) + shift."""
    z = rng.standard_normal((n, d))
    if mix:
        z = z @ (np.eye(d) + mix * np.random.default_rng(99).standard_normal((d, d)))
    return z + shift


# ---------------------------------------------------------------- fd / sfid

@pytest.mark.parametrize("nr,ng,d", [
    (400, 350, 32),   # N > D
    (300, 280, 256),  # N > D, larger D
    (40, 50, 64),     # both covariances singular (N < D)
    (300, 20, 64),    # only the generated covariance singular
    (20, 300, 64),    # only the reference covariance singular (Cholesky fails -> eigh factor)
])
def test_fd_matches_pytorch_fid(nr, ng, d):
    rng = _rng(nr + ng + d)
    x = _gauss(rng, nr, d, mix=0.3).astype(np.float32)
    y = _gauss(rng, ng, d, shift=0.2, mix=0.5).astype(np.float32)
    ref = _pytorch_fid(x.astype(np.float64), y.astype(np.float64))
    assert fd(x, y)["fd"] == pytest.approx(ref, rel=1e-6)


def test_fd_identical_sets_is_zero():
    x = _gauss(_rng(1), 500, 48, mix=0.4)
    value = fd(x, x)["fd"]
    trace = np.trace(np.cov(x, rowvar=False))
    assert abs(value) < 1e-9 * trace


def test_fd_shift_is_squared_norm():
    rng = _rng(2)
    x = _gauss(rng, 600, 24, mix=0.2)
    shift = rng.standard_normal(24)
    assert fd(x, x + shift)["fd"] == pytest.approx(float(shift @ shift), rel=1e-9)


def test_fd_sample_order_invariant():
    rng = _rng(3)
    x, y = _gauss(rng, 300, 16), _gauss(rng, 250, 16, shift=0.3)
    a = fd(x, y)["fd"]
    b = fd(x[rng.permutation(300)], y[rng.permutation(250)])["fd"]
    assert b == pytest.approx(a, rel=1e-10)


def test_fd_chunked_statistics_and_tensor_inputs(monkeypatch):
    rng = _rng(4)
    x, y = _gauss(rng, 257, 12, mix=0.3), _gauss(rng, 301, 12, shift=0.1)
    whole = fd(x, y)["fd"]
    monkeypatch.setattr(common_mod, "_CHUNK_ELEMENTS", 12 * 50)  # 50 rows per chunk
    mu, cov = frechet_mod.moments(x, torch.device("cpu"))
    np.testing.assert_allclose(cov.numpy(), np.cov(x, rowvar=False), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-12, atol=1e-14)
    assert fd(x, y)["fd"] == pytest.approx(whole, rel=1e-11)
    assert fd(torch.from_numpy(x), torch.from_numpy(y), device="cpu")["fd"] == pytest.approx(whole, rel=1e-11)


def test_sfid_is_fd_on_spatial():
    rng = _rng(5)
    x, y = _gauss(rng, 100, 20), _gauss(rng, 90, 20, shift=0.5)
    assert sfid(x, y)["sfid"] == fd(x, y)["fd"]
    spec = M.get_metric("sfid")
    assert spec.array == "spatial" and spec.keys == ("sfid",) and spec.directions["sfid"] == "lower"


def test_fd_input_errors():
    rng = _rng(6)
    with pytest.raises(MetricInputError, match="dims differ"):
        fd(rng.standard_normal((10, 4)), rng.standard_normal((10, 5)))
    with pytest.raises(MetricInputError, match="at least 2"):
        fd(rng.standard_normal((10, 4)), rng.standard_normal((1, 4)))
    with pytest.raises(MetricInputError, match="2-D"):
        fd(rng.standard_normal(10), rng.standard_normal((10, 4)))
    bad = rng.standard_normal((10, 4))
    bad[3, 1] = np.nan
    with pytest.raises(MetricInputError, match="NaN"):
        fd(rng.standard_normal((10, 4)), bad)


# ---------------------------------------------------------------- fd_inf

def _fd_inf_reference(real, fake, seed, num_points=15):
    """dgm-eval's ``compute_FD_infinity`` (dgm_eval/metrics/fd.py) written out: its sizes, its
    draw (``rng.choice(reps2, n, replace=False)`` on the generated rows, independently per size,
    from one Generator; dgm-eval's is unseeded, this one is ``default_rng(seed)``), full
    reference statistics, pytorch-fid's FD per subset and a least-squares line in 1/n."""
    ng = len(fake)
    sizes = np.linspace(min(5000, max(ng // 10, 2)), ng, num_points).astype("int32")
    rng = np.random.default_rng(seed)
    fds = [_pytorch_fid(real, rng.choice(fake, n, replace=False)) for n in sizes]
    slope, intercept = np.polyfit(1.0 / sizes, fds, 1)
    return float(intercept), sizes, fds


def test_fd_inf_matches_reference_protocol():
    rng = _rng(7)
    real, fake = _gauss(rng, 700, 12, mix=0.3), _gauss(rng, 600, 12, shift=0.2, mix=0.2)
    out = fd_inf(real, fake, seed=3)
    ref, sizes, fds = _fd_inf_reference(real, fake, seed=3)
    assert out["_curve"]["n"] == sizes.tolist() == [60, 98, 137, 175, 214, 252, 291, 330, 368,
                                                     407, 445, 484, 522, 561, 600]
    np.testing.assert_allclose(out["_curve"]["fd"], fds, rtol=1e-7)
    assert out["fd_inf"] == pytest.approx(ref, rel=1e-6)
    # the last point is the full generated set
    assert out["_curve"]["fd"][-1] == pytest.approx(fd(real, fake)["fd"], rel=1e-10)


def test_fd_inf_fewer_samples_than_dims():
    # the first sizes are below D: their FD comes from the n×n Gram matrix of the rows
    rng = _rng(17)
    real, fake = _gauss(rng, 300, 64, mix=0.2), _gauss(rng, 200, 64, shift=0.1)
    out = fd_inf(real, fake, seed=0)
    ref, sizes, fds = _fd_inf_reference(real, fake, seed=0)
    assert sizes[0] < 64 < sizes[-1]
    np.testing.assert_allclose(out["_curve"]["fd"], fds, rtol=1e-7)
    assert out["fd_inf"] == pytest.approx(ref, rel=1e-6)


def test_fd_inf_seeding():
    rng = _rng(8)
    real, fake = _gauss(rng, 400, 8), _gauss(rng, 300, 8, shift=0.1)
    a, b = fd_inf(real, fake, seed=1), fd_inf(real, fake, seed=1)
    assert a["fd_inf"] == b["fd_inf"] and a["_curve"] == b["_curve"]
    assert fd_inf(real, fake, seed=2)["fd_inf"] != a["fd_inf"]


def test_fd_inf_large_set_close_to_fd_and_removes_bias():
    # N(0, I) vs N(mu, s² I): the population FD is |mu|² + D (1 - s)².
    rng = _rng(9)
    d, n = 32, 6000
    mu, s = np.full(d, 0.5), 1.2
    real = rng.standard_normal((n, d))
    fake = rng.standard_normal((n, d)) * s + mu
    truth = float(mu @ mu + d * (1 - s) ** 2)
    full = fd(real, fake)["fd"]
    inf = fd_inf(real, fake, seed=0)["fd_inf"]
    assert inf == pytest.approx(full, rel=0.05)
    assert abs(inf - truth) < abs(full - truth)


def test_fd_inf_too_small():
    with pytest.raises(MetricInputError, match="fd_inf"):
        fd_inf(np.ones((5, 3)) + np.arange(15).reshape(5, 3), np.arange(6.0).reshape(2, 3))


# ---------------------------------------------------------------- kd


def _kd_round_off(x, y):
    """Float64 round-off bound of a kd estimate: kd is a difference of means of m² kernel
    values of magnitude ``scale``; summing them loses at most ~m²·eps·scale in the worst case,
    ~m·eps·scale typically. kd itself can sit at 0 (same distribution), so a relative
    tolerance alone would ask for more digits than the terms carry."""
    d, m = x.shape[1], max(len(x), len(y))
    scale = float(np.mean((x @ y.T / d + 1) ** 3))
    return 64 * m * np.finfo(np.float64).eps * scale

@pytest.mark.parametrize("m,d,shift", [(120, 64, 0.05), (200, 256, 0.0), (150, 32, 0.5)])
def test_kd_matches_torch_fidelity(m, d, shift):
    # Sets of exactly the subset size: every subset is the whole set, the value deterministic.
    rng = _rng(m + d)
    x = np.maximum(rng.standard_normal((m, d)) * 0.6 + 0.3, 0)
    y = np.maximum(rng.standard_normal((m, d)) * 0.6 + 0.3 + shift, 0)
    ref_mean, _ = _tf_kid(x, y, 3, m)  # float64 features: torch-fidelity's numpy in float64
    out = kd(x, y, subsets=3, subset_size=1000)
    assert out["kd"] == pytest.approx(ref_mean, rel=1e-10, abs=_kd_round_off(x, y))
    assert out["kd_std"] <= _kd_round_off(x, y)  # every subset is the whole set
    # float32 features: float32 inner products, float64 kernel and sums (module docstring);
    # float32 inner products, float64 kernel and sums: ~1e-9 from the float64 value, about
    # 10-1000x closer than torch-fidelity's all-float32 computation
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    exact = kd(x32.astype(np.float64), y32.astype(np.float64), subsets=3, subset_size=1000)["kd"]
    ours = kd(x32, y32, subsets=3, subset_size=1000)["kd"]
    theirs, _ = _tf_kid(x32, y32, 3, m)
    assert abs(ours - exact) <= 1e-8 + 1e-8 * abs(exact)
    assert abs(ours - exact) <= abs(theirs - exact) / 4


def _kd_naive(x, y, subsets, size, seed):
    rng = np.random.default_rng(seed)
    m = min(size, len(x), len(y))
    vals = []
    for _ in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        d = x.shape[1]
        kxx, kyy, kxy = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.sum() / m ** 2)
    return float(np.mean(vals)), float(np.std(vals))


def test_kd_subsets_batched_equal_naive(monkeypatch):
    rng = _rng(10)
    x, y = rng.standard_normal((90, 16)), rng.standard_normal((70, 16)) + 0.2
    monkeypatch.setattr(kernel_mod, "_BATCH_ELEMENTS", 3 * (2 * 40 * 16 + 2 * 40 * 40))  # 3 per batch
    out = kd(x, y, subsets=10, subset_size=40, seed=5)
    ref = _kd_naive(x, y, 10, 40, 5)
    tol = _kd_round_off(x, y)
    assert out["kd"] == pytest.approx(ref[0], rel=1e-10, abs=tol)
    assert out["kd_std"] == pytest.approx(ref[1], rel=1e-8, abs=tol)
    # subset size is clipped to the smaller set
    assert kd(x, y, subsets=4, subset_size=1000, seed=1)["kd"] == pytest.approx(
        _kd_naive(x, y, 4, 1000, 1)[0], rel=1e-10, abs=tol)


def test_kd_on_whole_sets_is_one_evaluation():
    """With no more rows than the subset size every subset is the whole of both sets: kd is
    the unbiased MMD² of the sets (each subset's value, summed in its own order, as before) and
    the subsets' spread is 0."""
    rng = _rng(12)
    x, y = rng.standard_normal((50, 16)), rng.standard_normal((50, 16)) + 0.2
    out = kd(x, y, subsets=7, subset_size=1000, seed=3)
    ref = _kd_naive(x, y, 7, 1000, 3)
    assert out["kd"] == pytest.approx(ref[0], rel=1e-10, abs=_kd_round_off(x, y))
    assert out["kd_std"] == 0.0 and ref[1] <= _kd_round_off(x, y)


def test_kd_seeding():
    rng = _rng(11)
    x, y = rng.standard_normal((80, 8)), rng.standard_normal((80, 8)) + 0.1
    a = kd(x, y, subsets=5, subset_size=30, seed=0)
    assert a == kd(x, y, subsets=5, subset_size=30, seed=0)
    assert kd(x, y, subsets=5, subset_size=30, seed=1)["kd"] != a["kd"]


def test_kd_errors_and_spec():
    with pytest.raises(MetricInputError, match="kd"):
        kd(np.ones((1, 3)), np.ones((5, 3)))
    spec = M.get_metric("kd")
    assert spec.keys == ("kd", "kd_std") and spec.directions == {"kd": "lower", "kd_std": "none"}
    assert spec.defaults == {"subsets": 100, "subset_size": 1000, "seed": 0}


# ---------------------------------------------------------------- is

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_is_matches_torch_fidelity(dtype):
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = (_rng(12).standard_normal((503, 40)) * 3).astype(dtype)
    ref = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    out = inception_score(logits)
    assert out["is"] == pytest.approx(ref["inception_score_mean"], rel=1e-9)
    assert out["is_std"] == pytest.approx(ref["inception_score_std"], rel=1e-6)
    assert M.get_metric("is")(fake=logits, seed=123) == out  # the run's seed does not move IS


def test_is_analytic():
    # identical rows: p(y|x) = p(y), KL 0, IS 1
    assert inception_score(np.zeros((20, 7)))["is"] == pytest.approx(1.0, abs=1e-12)
    # confident, equally spread over C classes in every split: IS = C
    c = 5
    onehot = np.tile(np.eye(c) * 60.0, (20, 1))  # 100 samples, 20 per class, one split
    out = inception_score(onehot, splits=1)
    assert out["is"] == pytest.approx(c, rel=1e-9) and out["is_std"] == 0.0


def test_is_errors_and_spec():
    with pytest.raises(MetricInputError, match="at least 10"):
        inception_score(np.zeros((9, 4)))
    spec = M.get_metric("is")
    assert spec.array == "logits" and spec.args == ("fake",)
    assert spec.directions == {"is": "higher", "is_std": "none"} and spec.min_samples == 10
    assert getattr(M, "is") is inception_score


# ---------------------------------------------------------------- sw_approx

def test_sw_approx_hand_checked():
    x = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])  # mean 0, m2 = 1/2
    y = 2 * x + np.array([3.0, 4.0])                    # mean (3, 4), m2 = 2
    # |dm|²/D = 25/2, (sqrt(1/2) - sqrt(2))² = 1/2  ->  SW² ≈ 13
    assert sw_approx(x, y)["sw_approx"] == pytest.approx(np.sqrt(13.0), rel=1e-12)
    assert sw_approx(x, x)["sw_approx"] == 0.0


def test_sw_approx_isotropic_gaussians():
    # N(0, I) vs N(mu, s² I): SW₂² = |mu|²/D + (s - 1)² exactly for isotropic Gaussians.
    rng = _rng(13)
    d, n, s = 64, 20000, 1.5
    mu = np.full(d, 0.5)
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n, d)) * s + mu
    truth = np.sqrt(mu @ mu / d + (s - 1) ** 2)
    assert sw_approx(x, y)["sw_approx"] == pytest.approx(truth, rel=5e-3)


# ---------------------------------------------------------------- cmmd

def test_cmmd_brute_force(monkeypatch):
    rng = _rng(14)
    a, b = rng.standard_normal((30, 8)), rng.standard_normal((25, 8)) + 0.4
    ref = _cmmd_brute(a, b)
    assert cmmd(a, b)["cmmd"] == pytest.approx(ref, rel=1e-9)
    monkeypatch.setattr(kernel_mod, "_BLOCK_ELEMENTS", 60)  # a few rows per block
    assert cmmd(a, b)["cmmd"] == pytest.approx(ref, rel=1e-9)
    # rows are L2-normalised: scaling them changes nothing
    assert cmmd(a * 3.0, b * rng.uniform(0.5, 2, (25, 1)))["cmmd"] == pytest.approx(ref, rel=1e-9)
    assert abs(cmmd(a, a)["cmmd"]) < 1e-10


def test_cmmd_spec_and_errors():
    spec = M.get_metric("cmmd")
    assert spec.array == "embedding" and spec.fallback == "features"
    with pytest.raises(MetricInputError, match="zero"):
        cmmd(np.zeros((3, 4)), np.ones((3, 4)))


def test_frechet_from_stats_matches_fd_and_checks_shapes():
    rng = _rng(18)
    x, y = _gauss(rng, 200, 10, mix=0.3), _gauss(rng, 150, 10, shift=0.2)
    dev = torch.device("cpu")
    mu_r, cov_r = frechet_mod.moments(x, dev)
    mu_g, cov_g = frechet_mod.moments(y, dev)
    from_stats = frechet_mod.frechet_from_stats(mu_r, cov_r, mu_g, cov_g)
    assert from_stats == pytest.approx(fd(x, y)["fd"], rel=1e-12)
    with pytest.raises(MetricInputError, match="shapes differ"):
        frechet_mod.frechet_from_stats(mu_r, cov_r, mu_g[:5], cov_g[:5, :5])


def test_running_moments_in_batches_and_merged_equal_numpy():
    """Rows added in uneven batches to three accumulators (each shifted by its own first
    batch's mean), then merged as ranks are: numpy's float64 mean and N−1 covariance."""
    rng = _rng(5)
    x = (_gauss(rng, 700, 24, mix=0.3) * 3 + 500.0).astype(np.float32)  # a large mean: shifts matter
    parts = [frechet_mod.RunningMoments() for _ in range(3)]
    edges = [0, 7, 90, 91, 300, 301, 512, 700]
    for j, (lo, hi) in enumerate(zip(edges, edges[1:])):
        parts[j % 3].add(x[lo:hi])
    total = parts[0]
    total.merge(parts[1])
    total.merge(parts[2])
    mu, cov = total.result()
    x64 = x.astype(np.float64)
    want_cov = np.cov(x64, rowvar=False)
    assert total.n == 700
    np.testing.assert_allclose(mu, x64.mean(0), rtol=0, atol=1e-12 * 500)
    np.testing.assert_allclose(cov, want_cov, rtol=0, atol=1e-10 * np.abs(want_cov).max())
    with pytest.raises(MetricInputError):
        frechet_mod.RunningMoments().result()
