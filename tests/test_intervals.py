"""`score --bootstrap B`: half-sampling intervals (evalkit/intervals.py).

Issue 13: with-replacement resampling duplicated rows, so intervals missed their own estimate
(fd 17.87 in [22.23, 24.28]), every round recomputed every metric, and nothing showed progress.
Truth for the coverage tests is computed independently: FD from the closed form for Gaussians
with diagonal covariances, precision from a brute-force Monte Carlo over fresh samples.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import evalkit.metrics  # noqa: F401  (registers every metric)
from evalkit.cli import main
from evalkit.features.featureset import FeatureSet, save_feature_file
from evalkit.metrics import get_metric
from evalkit.results.record import build_record
from evalkit.scoring.intervals import BOOTSTRAP_METHOD, bootstrap_intervals, interval
from evalkit.scoring.score import ScoreConfig, score_set

CPU = "cpu"


def _fs(x, **extra):
    return FeatureSet({"features": np.asarray(x, dtype=np.float32), **extra})


def test_interval_is_the_rescaled_median_centred_basic_interval():
    draws = np.array([1.0, 2.0, 3.0, 4.0, 10.0])  # median 3: deviations -2 -1 0 1 7
    lo_q, hi_q = np.quantile(draws - 3.0, [0.025, 0.975])
    # m = n/2: factor sqrt(m / (n - m)) = 1; the interval reflects the deviations around the estimate
    assert interval(5.0, draws, 10, 5, 0.95) == pytest.approx([5.0 - hi_q, 5.0 - lo_q])
    # m = n/4: factor sqrt(1/3)
    f = np.sqrt(1 / 3)
    assert interval(5.0, draws, 12, 3, 0.95) == pytest.approx([5.0 - f * hi_q, 5.0 - f * lo_q])


def test_every_interval_contains_its_estimate_at_small_n():
    """The issue's case: 64 generated samples; FD and recall intervals used to miss the estimate."""
    g = np.random.default_rng(0)
    real = _fs(g.standard_normal((64, 32)))
    fake = _fs(1.1 * g.standard_normal((64, 32)) + 0.1, logits=g.standard_normal((64, 10)).astype(np.float32))
    test = _fs(g.standard_normal((64, 32)))
    keys = ("fd", "precision", "recall", "density", "coverage", "realism", "authpct", "kd", "is", "vendi")
    cfg = ScoreConfig(metrics=keys, bootstrap=30, progress=False)
    rec = build_record(score_set(fake, real, test, cfg, name="m"))
    assert rec["config"]["bootstrap_method"] == BOOTSTRAP_METHOD
    ci = rec["metrics_ci"]
    for key in keys:
        lo, hi = ci[key]
        assert lo <= rec["metrics"][key] <= hi, (key, rec["metrics"][key], ci[key])
        assert lo < hi or key == "recall", key
    again = build_record(score_set(fake, real, test, cfg, name="m"))
    assert again["metrics_ci"] == ci  # same seed, same intervals


def test_rounds_reuse_per_sample_statistics(monkeypatch):
    """B rounds of precision/density/coverage/realism/authpct/fd run no kNN search or reference
    moments per round: the per-sample statistics are computed once."""
    from evalkit.metrics import frechet
    from evalkit.metrics.primitives import knn

    calls = {"knn": 0, "moments": 0}
    real_self, real_knn, real_moments = knn.knn_self_sq, knn.knn_sq, frechet.moments

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    for mod in ("evalkit.metrics.primitives.knn", "evalkit.metrics.prdc", "evalkit.metrics.memorization"):
        for attr, fn in (("knn_self_sq", real_self), ("knn_sq", real_knn)):
            if hasattr(sys.modules[mod], attr):
                monkeypatch.setattr(sys.modules[mod], attr, count("knn", fn))
    counted = count("moments", real_moments)
    monkeypatch.setattr(frechet, "moments", counted)  # reference_stats and SubsetFrechet call it
    g = np.random.default_rng(1)
    real, fake = _fs(g.standard_normal((200, 8))), _fs(g.standard_normal((150, 8)) + 0.2)
    specs = [get_metric(n) for n in ("precision", "density", "coverage", "realism", "authpct", "fd")]
    estimates = {"precision": 0.5, "density": 0.5, "coverage": 0.5, "realism": 1.0, "authpct": 50.0,
                 "fd": 1.0}
    out = bootstrap_intervals(specs, fake, real, None, estimates=estimates, rounds=50, rng=0,
                              device=CPU, progress=False)
    assert set(out) == set(estimates)
    assert calls["knn"] <= 5  # once per metric, not once per round
    assert calls["moments"] == 1 + 50  # the reference once; each round only the subset's moments


def _fd_closed_form(mu1, var1, mu2, var2):
    return float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum())


def test_fd_interval_coverage_on_gaussians():
    """Nominal 95% intervals cover the closed-form FD in most repeats (34/40 here; 286/300 = 95.3% in
    a longer run of the same set-up, see README)."""
    g = np.random.default_rng(2)
    d, n = 2, 200
    mu_r, var_r = np.zeros(d), np.ones(d)
    mu_g, var_g = np.array([0.4, 0.0]), np.array([1.5, 0.8])
    truth = _fd_closed_form(mu_r, var_r, mu_g, var_g)
    real = _fs(g.standard_normal((20000, d)) * np.sqrt(var_r) + mu_r)  # large: its noise is negligible
    spec = get_metric("fd")
    hits = 0
    repeats = 40
    for r in range(repeats):
        fake = _fs(g.standard_normal((n, d)) * np.sqrt(var_g) + mu_g)
        est = spec(real=real.arrays["features"], fake=fake.arrays["features"], device=CPU)["fd"]
        lo, hi = bootstrap_intervals([spec], fake, real, None, estimates={"fd": est}, rounds=200, rng=r,
                                     device=CPU, progress=False)["fd"]
        assert lo <= est <= hi
        hits += lo <= truth <= hi
    print(f"fd coverage {hits}/{repeats}")
    assert hits >= 0.85 * repeats, hits


def test_precision_interval_coverage():
    """Precision given a fixed reference: its truth is the probability that a fresh generated
    sample lies inside some real k-NN sphere, computed here by brute force over 100k samples
    (28/30 covered here)."""
    g = np.random.default_rng(3)
    d, k = 2, 5
    real_x = g.standard_normal((300, d))
    sq = ((real_x[:, None] - real_x[None]) ** 2).sum(-1)
    np.fill_diagonal(sq, np.inf)
    radius = np.sqrt(np.sort(sq, axis=1)[:, k - 1])

    def inside(x):
        dist = np.sqrt(((x[:, None] - real_x[None]) ** 2).sum(-1))
        return (dist < radius[None]).any(1)

    def draw(m):
        return 1.3 * g.standard_normal((m, d)) + 0.5

    truth = np.mean(np.concatenate([inside(draw(10000)) for _ in range(10)]))
    real, spec = _fs(real_x), get_metric("precision")
    hits, repeats = 0, 30
    for r in range(repeats):
        fake_x = draw(200)
        est = float(inside(fake_x).mean())
        fake = _fs(fake_x)
        out = bootstrap_intervals([spec], fake, real, None, estimates={"precision": est}, rounds=200,
                                  rng=r, device=CPU, progress=False)
        lo, hi = out["precision"]
        assert lo <= est <= hi
        hits += lo <= truth <= hi
    print(f"precision coverage {hits}/{repeats}")
    assert hits >= 0.8 * repeats, hits


@pytest.fixture
def files(tmp_path):
    g = np.random.default_rng(4)
    paths = {}
    for name, arr in (("real", g.standard_normal((120, 8))), ("fake", g.standard_normal((80, 8)))):
        paths[name] = str(tmp_path / f"{name}.npz")
        save_feature_file(_fs(arr), paths[name])
    return paths


def test_cli_progress_bar_method_and_quiet(files, tmp_path):
    out = tmp_path / "r.json"
    args = ["score", files["fake"], "--ref", files["real"], "--metrics", "fd,precision", "--bootstrap", "8",
            "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "bootstrap" in (res.stderr if hasattr(res, "stderr") else res.output)
    rec = json.loads(out.read_text())
    assert rec["config"]["bootstrap_method"] == BOOTSTRAP_METHOD and set(rec["metrics_ci"]) == {
        "fd", "precision"}
    quiet = CliRunner().invoke(main, args + ["--quiet"])
    assert quiet.exit_code == 0 and "round" not in quiet.output


def test_cli_refuses_huge_rounds_before_work(files):
    res = CliRunner().invoke(main, ["score", files["fake"], "--ref", files["real"], "--bootstrap", "1000000"])
    assert res.exit_code == 2 and "--bootstrap 1000000" in res.output


def test_protocol_overrides_reach_the_prdc_intervals():
    """k = 3 (a protocol's override) in the per-sample fast path, and ADM's precision/recall
    convention, which has no per-sample form, through recomputation: each interval holds its
    own estimate."""
    g = np.random.default_rng(3)
    real, fake = _fs(g.standard_normal((120, 6))), _fs(g.standard_normal((100, 6)) * 1.1)
    for over in ({"nearest_k": 3}, {"nearest_k": 3, "convention": "adm"}):
        cfg = ScoreConfig(metrics=("precision", "recall"), bootstrap=20, progress=False,
                          overrides={"precision": over, "recall": over})
        sc = score_set(fake, real, None, cfg, name="m")
        from evalkit.metrics.prdc import prdc

        want = prdc(real.get("features"), fake.get("features"), **over)
        assert sc.values["precision"] == want["precision"]
        for key in ("precision", "recall"):
            lo, hi = sc.intervals[key]
            assert lo <= sc.values[key] <= hi, (over, key)
    # the fast path's half-sample values are those of k = 3 on that half
    from evalkit.scoring.intervals import plan_resamplers
    from evalkit.scoring.rng import RunRNG

    over = {"precision": {"nearest_k": 3}, "recall": {"nearest_k": 3}}
    [res] = plan_resamplers([get_metric("precision"), get_metric("recall")], fake, real, None,
                            run_rng=RunRNG(0), device="cpu", overrides=over)
    got = res.fn(np.random.default_rng(5))
    idx = np.sort(np.random.default_rng(5).choice(100, 50, replace=False))
    want = prdc(real.get("features"), fake.get("features")[idx], nearest_k=3)
    assert got["precision"] == want["precision"] and got["recall"] == want["recall"]
@pytest.mark.parametrize("nr,ng,d", [(40, 30, 64), (200, 30, 64), (20, 150, 64), (200, 150, 16)])
def test_subset_fd_equals_the_d_by_d_route(nr, ng, d):
    """The n×n route of the resampler (small half-samples or a low-rank reference) gives the FD
    of the D×D route (subset moments, Cholesky/eigen factor, D×D eigenproblem) to round-off."""
    import torch

    from evalkit.metrics.frechet import (
        SubsetFrechet,
        cov_factor,
        frechet_from_stats,
        moments,
        reference_factor,
    )

    g = np.random.default_rng(nr + ng + d)
    real = g.standard_normal((nr, d)) * np.linspace(0.5, 2, d) + 0.3
    fake = (1.2 * g.standard_normal((ng, d)) + 0.1).astype(np.float32)
    dev = torch.device("cpu")
    mu_r, cov_r = moments(real, dev)
    sub = SubsetFrechet(mu_r, cov_r, reference_factor(real, mu_r, cov_r, dev), fake, ng // 2, dev)
    assert sub.small == (min(ng // 2, min(nr, d)) < d)
    for _ in range(3):
        idx = np.sort(g.choice(ng, ng // 2, replace=False))
        mu_g, cov_g = moments(fake[idx], dev)
        want = frechet_from_stats(mu_r, cov_r, mu_g, cov_g, factor_r=cov_factor(cov_r))
        # The D×D route sees the zero eigenvalues of a rank-deficient matrix as ±eps·scale and
        # sums their square roots: up to d·sqrt(eps·scale) of round-off (the n×n route has none)
        scale = float(torch.trace(cov_r) + torch.trace(cov_g))
        assert sub(idx) == pytest.approx(want, abs=2 * d * np.sqrt(np.finfo(np.float64).eps * scale))


def test_fd_inf_rounds_reuse_the_reference_and_equal_a_recomputation():
    """fd_inf's rounds reuse the reference's moments and factor and one projection of the
    generated set; each round's value equals fd_inf recomputed on the half-sample with the same
    per-round seed."""
    from evalkit.scoring import intervals
    from evalkit.scoring.rng import RunRNG

    g = np.random.default_rng(7)
    real, fake = _fs(g.standard_normal((50, 40))), _fs(g.standard_normal((60, 40)) + 0.3)
    spec = get_metric("fd_inf")
    run_rng = RunRNG(3)
    fast = intervals._fd_inf_resampler(spec, fake, real, run_rng=run_rng, device=CPU, overrides={})
    slow = intervals._generic_resampler([spec], fake, real, None, run_rng=run_rng, device=CPU,
                                        overrides={})
    g1, g2 = np.random.default_rng(11), np.random.default_rng(11)
    # the rounds' eigenproblems come from one projection of the whole set (SubsetFrechet): the
    # rank-deficient Gram matrices' zero eigenvalues carry round-off ~eps·scale, whose square
    # roots (~sqrt(eps·scale)) enter FD (as in test_subset_fd_equals_the_d_by_d_route)
    scale = float(np.var(real.get("features"), 0).sum() + np.var(fake.get("features"), 0).sum())
    for _ in range(3):
        a, b = fast.fn(g1)["fd_inf"], slow.fn(g2)["fd_inf"]
        assert a == pytest.approx(b, abs=8 * np.sqrt(np.finfo(np.float64).eps * scale))


@pytest.mark.parametrize("nr", [30, 45])
def test_kd_rounds_from_kernel_tables_equal_a_recomputation(nr):
    """kd's rounds read the kernel matrices of the whole sets; each round's kd and kd_std equal
    kd recomputed on the half-sample with the same per-round seed (nr = 30: every subset is the
    whole of both the reference and the half-sample; 45: reference subsets vary)."""
    from evalkit.scoring import intervals
    from evalkit.scoring.rng import RunRNG

    g = np.random.default_rng(8)
    real = _fs(np.abs(g.standard_normal((nr, 24))).astype(np.float32))
    fake = _fs((np.abs(g.standard_normal((60, 24))) + 0.2).astype(np.float32))
    spec = get_metric("kd")
    run_rng = RunRNG(5)
    over = {"kd": {"subsets": 20}}
    fast = intervals._kd_resampler(spec, fake, real, run_rng=run_rng, device=CPU, overrides=over)
    slow = intervals._generic_resampler([spec], fake, real, None, run_rng=run_rng, device=CPU,
                                        overrides=over)
    x, y = real.get("features").astype(np.float64), fake.get("features").astype(np.float64)
    scale = float(np.mean((x @ y.T / 24 + 1) ** 3))
    tol = 16 * float(np.finfo(np.float32).eps) * scale  # float32 inner products, a few ulps apart
    g1, g2 = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(3):
        a, b = fast.fn(g1), slow.fn(g2)
        assert set(a) == {"kd", "kd_std"}
        assert a["kd"] == pytest.approx(b["kd"], abs=tol)
        assert a["kd_std"] == pytest.approx(b["kd_std"], abs=tol)
        assert (a["kd_std"] == 0.0) == (nr == 30)


@pytest.mark.parametrize("name,over", [("rarity", {}), ("rke", {}), ("rke", {"rke": {"sigma": 4.0}}),
                                       ("cmmd", {})])
def test_table_rounds_equal_a_recomputation(name, over):
    """rarity (per-sample scores), rke and cmmd (kernel matrices of the whole sets) computed once:
    each round's values equal the metric recomputed on the half-sample, to float64 round-off."""
    from evalkit.scoring import intervals
    from evalkit.scoring.rng import RunRNG

    g = np.random.default_rng(9)
    real = _fs(g.standard_normal((50, 12)))
    fake = _fs(1.2 * g.standard_normal((46, 12)) + 0.3)
    spec = get_metric(name)
    run_rng = RunRNG(4)
    fast = intervals._TABLES[name](spec, fake, real, overrides=over, device=CPU)
    assert fast is not None
    slow = intervals._generic_resampler([spec], fake, real, None, run_rng=run_rng, device=CPU,
                                        overrides=over)
    g1, g2 = np.random.default_rng(12), np.random.default_rng(12)
    for _ in range(4):
        a, b = fast.fn(g1), slow.fn(g2)
        assert set(a) == set(spec.keys) and set(b) == set(spec.keys)
        for key in a:  # sums of m² float64 terms of size <= 1 (rke, cmmd ×1000), or means
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-9), key


def test_tables_step_aside_where_rounds_would_differ():
    """A reference larger than rarity's max_samples (subsampled per round) or rke's max_median
    (a per-round bandwidth) keeps the recomputation."""
    from evalkit.scoring import intervals

    g = np.random.default_rng(10)
    real, fake = _fs(g.standard_normal((40, 6))), _fs(g.standard_normal((30, 6)))
    assert intervals._TABLES["rarity"](get_metric("rarity"), fake, real,
                                       overrides={"rarity": {"max_samples": 20}}, device=CPU) is None
    assert intervals._TABLES["rke"](get_metric("rke"), fake, real,
                                    overrides={"rke": {"max_median": 20}}, device=CPU) is None


def test_fd_rounds_use_the_statistics_the_estimate_used():
    """A reference with samples and published statistics attached (``--protocol adm``): fd's
    estimate is against the statistics, and so are its rounds (as for a statistics-only
    reference holding them), not against the samples."""
    g = np.random.default_rng(13)
    samples = g.standard_normal((80, 6))
    other = 2.0 * g.standard_normal((300, 6)) + 1.0  # the published set differs from the samples
    stats = {"features": (other.mean(0), np.cov(other, rowvar=False))}
    real = _fs(samples)
    real.moments = dict(stats)
    fake = _fs(g.standard_normal((60, 6)) + 0.5)
    spec = get_metric("fd")
    kw = dict(estimates={"fd": 3.0}, rounds=30, rng=2, device=CPU, progress=False)
    attached = bootstrap_intervals([spec], fake, real, None, **kw)
    only = bootstrap_intervals([spec], fake, FeatureSet.from_moments(stats), None, **kw)
    samples_only = bootstrap_intervals([spec], fake, _fs(samples), None, **kw)
    assert attached["fd"] == pytest.approx(only["fd"], rel=1e-12)
    assert attached["fd"] != pytest.approx(samples_only["fd"], rel=1e-3)


def test_interval_stays_inside_the_declared_range():
    """Near a bound each side's width is squeezed into the room left (R·tanh(w/R)); far from it
    the interval is the plain basic one; on the bound that side has no width."""
    draws = np.array([0.80, 0.85, 0.90, 0.95, 1.00])  # deviations -0.1 .. +0.1 around 0.9
    far = interval(0.5, draws, 10, 5, 0.95, (0.0, 1.0))
    plain = interval(0.5, draws, 10, 5, 0.95)
    assert far == pytest.approx(plain, abs=2e-3)  # room 0.5 ≫ width 0.095: tanh ≈ identity
    lo, hi = interval(0.98, draws, 10, 5, 0.95, (0.0, 1.0))
    assert lo == pytest.approx(0.98 - plain[1] + 0.5, rel=1e-3) and 0.98 < hi < 1.0
    assert hi == pytest.approx(0.98 + 0.02 * np.tanh((plain[1] - 0.5) / 0.02))
    assert interval(1.0, draws, 10, 5, 0.95, (0.0, 1.0))[1] == 1.0  # a share of 1 has no room above


def test_every_interval_lies_in_its_metric_range_and_ct_says_why_it_has_none():
    """The issue's cases: coverage 1.000 got [0.96, 1.149], kd_std a negative lower end, and ct
    (no k-means cell of 32 half-sampled points holds 20) silently no interval."""
    from evalkit.metrics import result_ranges

    g = np.random.default_rng(5)
    real = _fs(g.standard_normal((64, 6)))
    fake = _fs(g.standard_normal((64, 6)) * 0.2)  # tight: coverage and precision near 1
    test = _fs(g.standard_normal((64, 6)))
    keys = ("fd", "kd", "precision", "recall", "density", "coverage", "realism", "authpct", "ct",
            "vendi", "sw_approx")
    cfg = ScoreConfig(metrics=keys, bootstrap=40, progress=False)
    rec = build_record(score_set(fake, real, test, cfg, name="m"))
    ranges = result_ranges()
    for key, (lo, hi) in rec["metrics_ci"].items():
        low, high = ranges[key]
        assert low <= lo <= rec["metrics"][key] <= hi <= high, (key, lo, hi, ranges[key])
    assert rec["metrics_ci"]["kd_std"][0] >= 0.0
    assert "ct" not in rec["metrics_ci"]
    assert "half-samples of 32 (ct: " in rec["metrics_ci_missing"]["ct"]
    from evalkit.results.outputs import metrics_table

    assert "no interval: ct (" in metrics_table([rec])


def test_every_output_declares_a_range_its_direction_fits():
    """Shares in [0, 1], percentages in [0, 100], distances from 0, scores from 1."""
    from evalkit.metrics import result_ranges

    ranges = result_ranges()
    assert ranges["coverage"] == ranges["precision"] == ranges["recall"] == (0.0, 1.0)
    assert ranges["authpct"] == (0.0, 100.0) and ranges["fls_pog"] == (-50.0, 50.0)
    assert ranges["kd_std"][0] == ranges["fd"][0] == 0.0 and ranges["vendi"][0] == ranges["is"][0] == 1.0


@pytest.mark.parametrize("tiny", [False, True])
@pytest.mark.parametrize("name", ["recall", "fd", "fd_inf", "sw_approx", "vendi"])
def test_batched_rounds_equal_one_round_at_a_time(monkeypatch, name, tiny):
    """Groups whose rounds run in batches (recall from exact distance tables, fd/fd_inf from
    one batched eigensolver, sw_approx and vendi from Gram tables) give each round the value the
    metric recomputed on that round's half-sample gives, with the same per-round seeds, across
    several batches (AHEAD = 3 rounds ahead, 7 rounds; ``tiny``: one per stack): recall bit
    for bit, the others to float64 round-off (fd, fd_inf: sqrt(eps·scale) from the
    rank-deficient Gram matrices' zero eigenvalues, as in
    test_fd_inf_rounds_reuse_the_reference_and_equal_a_recomputation)."""
    from evalkit.scoring import intervals
    from evalkit.scoring.rng import RunRNG

    monkeypatch.setattr(intervals, "AHEAD", 3)
    if tiny:  # one round (or subset) per stacked batch
        monkeypatch.setattr(intervals, "BATCH_ENTRIES", 1)
        monkeypatch.setattr(sys.modules["evalkit.metrics.frechet"], "SUBSET_BATCH_ELEMENTS", 1)
        monkeypatch.setattr(sys.modules["evalkit.metrics.prdc"], "RECALL_BATCH_ELEMENTS", 1)
    g = np.random.default_rng(13)
    real = _fs(g.standard_normal((50, 40)))
    fake = _fs(1.1 * g.standard_normal((60, 40)) + 0.2)
    names = ["precision", "recall", "density", "coverage"] if name == "recall" else [name]
    specs = [get_metric(n) for n in names]
    run_rng = RunRNG(6)
    rounds = 7
    fast = [r for r in intervals.plan_resamplers(specs, fake, real, None, run_rng=run_rng, device=CPU,
                                                 rounds=rounds)]
    assert len(fast) == 1 and fast[0].fn.__qualname__.startswith("_batched")
    spec = specs[1] if name == "recall" else specs[0]
    slow = intervals._generic_resampler([spec], fake, real, None, run_rng=run_rng, device=CPU,
                                        overrides={})
    scale = float(np.var(real.get("features"), 0).sum() + np.var(fake.get("features"), 0).sum())
    tol = {"recall": 0.0, "fd": 2 * 40 * np.sqrt(np.finfo(np.float64).eps * scale),
           "fd_inf": 8 * np.sqrt(np.finfo(np.float64).eps * scale)}.get(name)
    g1, g2 = np.random.default_rng(14), np.random.default_rng(14)
    for _ in range(rounds):
        a, b = fast[0].fn(g1)[name], slow.fn(g2)[name]
        if tol is None:
            assert a == pytest.approx(b, rel=1e-12), name
        else:
            assert a == pytest.approx(b, abs=tol, rel=0), name
