"""Nearest-neighbour, diversity and memorization metrics: PRDC, realism, Vendi, authpct, C_T, FLS.

Reference cases compare with the anchor packages (``prdc``, ``vendi-score``, scikit-learn,
scipy) on the same seeded arrays, or with brute-force reimplementations of the dgm-eval
definitions written here from the papers' formulas; analytic cases check hand-computed values.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from anchors import authentic_brute, authpct_brute, brute_sq
from anchors import prdc_package as prdc_reference
from knn_queries import any_within, count_within, kth_neighbour_distance, nearest

import evalkit.metrics  # noqa: F401  (registers every metric)
from evalkit.errors import MetricInputError
from evalkit.metrics import get_metric
from evalkit.metrics.fls import fls
from evalkit.metrics.memorization import authpct, ct, kmeans, mann_whitney_u
from evalkit.metrics.per_sample import per_sample
from evalkit.metrics.prdc import prdc, realism
from evalkit.metrics.primitives import knn
from evalkit.metrics.vendi import vendi

CPU = "cpu"


def rng(seed):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------ kNN engine


def test_knn_hand_checked_line():
    x = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # k-th neighbour excluding self: k=1 -> 1,1,2,3,4 ; k=2 -> 3,2,3,4,7
    assert kth_neighbour_distance(x, 1, device=CPU).tolist() == [1.0, 1.0, 2.0, 3.0, 4.0]
    assert kth_neighbour_distance(x, 2, device=CPU).tolist() == [3.0, 2.0, 3.0, 4.0, 7.0]
    # counting the point itself (distance 0) as its first neighbour
    got = kth_neighbour_distance(x, 2, exclude_self=False, device=CPU).tolist()
    assert got == [1.0, 1.0, 2.0, 3.0, 4.0]
    d, i = nearest(np.array([[2.0], [7.0], [-5.0]]), x, k=2, device=CPU)
    assert i.tolist() == [[1, 2], [3, 4], [0, 1]]  # 2.0 is 1 from both 1.0 and 3.0: lower index first
    assert d.tolist() == [[1.0, 1.0], [1.0, 3.0], [5.0, 6.0]]
    # spheres of radius 1.5 around 0 and 10, radius 3 around 6
    centres, radii = np.array([[0.0], [10.0], [6.0]]), np.array([1.5, 1.5, 3.0])
    pts = np.array([[1.0], [1.5], [4.0], [9.5], [20.0]])
    assert count_within(pts, centres, radii, device=CPU).tolist() == [1, 0, 1, 1, 0]  # 1.5 is not < 1.5
    assert any_within(centres, radii, pts, device=CPU).tolist() == [True, True, True]


@pytest.mark.parametrize("chunk_bytes,extra,fast",
                         [(600, 0, False), (2000, 1, True), (40_000, 4, False), (40_000, 0, True)])
def test_chunked_knn_equals_brute_force(monkeypatch, chunk_bytes, extra, fast):
    """Chunks that do not divide N, windows that overflow the kept candidates, and the coarse
    bfloat16 screening (where the CPU has it) all give the exact neighbours."""
    monkeypatch.setattr(knn, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(knn, "MIN_CHUNK_ROWS", 1)
    monkeypatch.setattr(knn, "EXTRA", extra)
    monkeypatch.setattr(knn, "EXTRA_FAST", extra)
    g = rng(3)
    for trial in range(4):
        n, d, k = 97 + 13 * trial, [2, 5, 17, 33][trial], [1, 3, 5, 2][trial]
        x = g.standard_normal((n, d))
        if trial % 2 == 0:  # small integers: exact ties everywhere
            x = g.integers(-2, 3, size=(n, d)).astype(np.float64)
        q = (g.integers(-2, 3, size=(41, d)).astype(np.float64) if trial % 2 == 0
             else g.standard_normal((41, d)))
        sq = brute_sq(x, x)
        np.fill_diagonal(sq, np.inf)
        order = np.lexsort((np.broadcast_to(np.arange(n), sq.shape), sq), axis=1)[:, :k]
        space, (p,) = knn.prepare(x, device=CPU, fast=fast)
        v, i = knn.knn_self_sq(p, space, k)
        assert np.array_equal(i.numpy(), order)
        np.testing.assert_allclose(v.numpy(), np.take_along_axis(sq, order, 1), rtol=1e-12, atol=1e-12)
        kth, _ = knn.knn_self_sq(p, space, k, kth_only=True)
        np.testing.assert_allclose(kth.numpy(), np.take_along_axis(sq, order, 1)[:, -1],
                                   rtol=1e-12, atol=1e-12)
        sq_q = brute_sq(q, x)
        order_q = np.lexsort((np.broadcast_to(np.arange(n), sq_q.shape), sq_q), axis=1)[:, :k]
        space, (qq, pp) = knn.prepare(q, x, device=CPU, fast=fast)
        v_q, idx = knn.knn_sq(qq, pp, space, k)
        assert np.array_equal(idx.numpy(), order_q)
        np.testing.assert_allclose(v_q.numpy(), np.take_along_axis(sq_q, order_q, 1), rtol=1e-12, atol=1e-12)
        dist, idx = nearest(q, x, k=k, device=CPU)
        assert np.array_equal(idx.numpy(), order_q)


@pytest.mark.parametrize("max_uncertain", [0.0, 1e9])
def test_sphere_pass_bf16_screen_and_fallback_are_exact(monkeypatch, max_uncertain):
    """Sphere counts screened by bfloat16 products (kept throughout, or abandoned for float32
    after the first chunk) equal the float32-screened ones and brute force."""
    monkeypatch.setattr(knn, "CHUNK_BYTES", 4000)
    monkeypatch.setattr(knn, "MIN_CHUNK_ROWS", 1)
    g = rng(21)
    pts, cen = g.standard_normal((150, 24)), g.standard_normal((120, 24))
    p_rad, c_rad = np.full(150, 6.0), np.sqrt(np.sort(brute_sq(cen, cen), 1)[:, 3])
    space, (P, C) = knn.prepare(pts, cen, device=CPU)
    fast = knn.Space(space.device, torch.float32, knn._eta_bf16(24), 24, torch.bfloat16, knn.EXTRA_FAST)
    twins = (fast, [knn.Points(p.raw, p.scr.to(torch.bfloat16), p.sq, p.sq_s) for p in (P, C)])
    cr, pr = torch.as_tensor(c_rad), torch.as_tensor(p_rad)
    ref = knn.sphere_pass(P, C, space, cr, torch.float64, p_radius=pr)
    got = knn.sphere_pass(P, C, space, cr, torch.float64, p_radius=pr, fast=twins,
                          max_uncertain=max_uncertain)
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    d = np.sqrt(brute_sq(pts, cen))
    assert np.array_equal(ref[0].numpy(), (d < c_rad[None, :]).sum(1))
    assert np.array_equal(ref[1].numpy(), (d < c_rad[None, :]).any(0))
    assert np.array_equal(ref[2].numpy(), (d < p_rad[:, None]).any(0))


def test_kth_neighbour_distance_matches_prdc_radii():
    prdc_pkg = pytest.importorskip("prdc.prdc")
    x = rng(4).standard_normal((300, 24))
    ours = kth_neighbour_distance(x, 5, device=CPU).numpy()
    theirs = prdc_pkg.compute_nearest_neighbour_distances(x, 5)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


# ------------------------------------------------------------------------------------ PRDC


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_prdc_exactly_equals_prdc_package(seed):
    g = rng(100 + seed)
    n_real, n_fake, d = [(250, 250, 16), (500, 220, 64), (200, 480, 32), (333, 301, 48)][seed]
    for dtype in (np.float64, np.float32):
        real = g.standard_normal((n_real, d)).astype(dtype)
        fake = (1.1 * g.standard_normal((n_fake, d)) + 0.2).astype(dtype)
        ours = prdc(real, fake, device=CPU)
        assert ours == prdc_reference(real, fake)  # exact float equality, all four keys


def test_prdc_registered_as_four_metrics_sharing_one_function():
    specs = [get_metric(k) for k in ("precision", "recall", "density", "coverage")]
    assert all(s.fn is prdc for s in specs)
    assert [s.keys for s in specs] == [("precision",), ("recall",), ("density",), ("coverage",)]
    assert all(s.directions[s.name] == "higher" and s.min_samples == 6 for s in specs)
    g = rng(5)
    real, fake = g.standard_normal((60, 8)), g.standard_normal((50, 8))
    out = specs[0](real=real, fake=fake, seed=0, device=CPU)
    assert set(out) == {"precision", "recall", "density", "coverage"}
    assert all(isinstance(v, float) for v in out.values())


def test_prdc_identical_sets_and_mode_collapse():
    g = rng(6)
    real = g.standard_normal((400, 32))
    same = prdc(real, real.copy(), device=CPU)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    assert same["coverage"] == 1.0 and 0.7 < same["density"] <= 1.0
    modes = g.standard_normal((4, 32))
    collapsed = modes[g.integers(0, 4, 400)] + 0.05 * g.standard_normal((400, 32))
    bad = prdc(real, collapsed, device=CPU)
    good = prdc(real, g.standard_normal((400, 32)), device=CPU)
    assert bad["recall"] < 0.05 and bad["coverage"] < 0.15
    assert good["recall"] > 0.5 and good["coverage"] > 0.5


def test_prdc_subsampling_is_seeded():
    g = rng(7)
    real, fake = g.standard_normal((260, 8)), g.standard_normal((240, 8))
    a = prdc(real, fake, max_samples=100, seed=1, device=CPU)
    assert a == prdc(real, fake, max_samples=100, seed=1, device=CPU)  # bit-identical rerun
    assert a != prdc(real, fake, max_samples=100, seed=2, device=CPU)
    ir, jf = knn.seeded_subsets([260, 240], 100, 1)
    assert a == prdc_reference(real[ir], fake[jf])
    # torch input gives the same numbers
    assert a == prdc(torch.from_numpy(real), torch.from_numpy(fake), max_samples=100, seed=1, device=CPU)


def test_prdc_input_errors():
    g = rng(8)
    with pytest.raises(MetricInputError, match="prdc.*at least 6"):
        prdc(g.standard_normal((5, 4)), g.standard_normal((50, 4)), device=CPU)
    bad = g.standard_normal((50, 4))
    bad[3, 1] = np.nan
    with pytest.raises(MetricInputError, match="NaN"):
        prdc(g.standard_normal((50, 4)), bad, device=CPU)
    with pytest.raises(MetricInputError, match="dims differ"):
        prdc(g.standard_normal((50, 4)), g.standard_normal((50, 5)), device=CPU)


# ------------------------------------------------------------------------------------ realism


def realism_brute(real, fake, k=5, eps=1e-5):
    """dgm-eval's realism (its compute_prdc(realism=True)): radius_k / distance, maximised over the
    reference samples whose radius is below the median; a distance of exactly 0 (a copy) is
    replaced by ``eps`` x the median radius (eps = 0: dgm-eval's infinity)."""
    sq = brute_sq(real, real)
    np.fill_diagonal(sq, np.inf)
    radius = np.sqrt(np.sort(sq, axis=1)[:, k - 1])
    keep = radius < np.median(radius)
    d = np.sqrt(brute_sq(fake, real[keep]))
    with np.errstate(divide="ignore"):
        return (radius[keep][None, :] / np.where(d > 0, d, eps * np.median(radius))).max(1)


def test_realism_matches_definition():
    g = rng(9)
    real, fake = g.standard_normal((301, 12)), 1.2 * g.standard_normal((150, 12))
    expected = realism_brute(real, fake)
    assert realism(real, fake, device=CPU)["realism"] == pytest.approx(expected.mean(), rel=1e-12)
    # the default is dgm-eval's k = 5 and its exact formula wherever no distance is 0
    assert realism(real, fake, eps=0.0, device=CPU)["realism"] == pytest.approx(
        realism_brute(real, fake, k=5, eps=0.0).mean(), rel=1e-12
    )
    assert realism(real, fake, device=CPU)["realism"] == pytest.approx(
        realism_brute(real, fake, k=5, eps=0.0).mean(), rel=1e-12
    )
    # the NVlabs code's k = 3 is an option, and another number
    k3 = realism(real, fake, nearest_k=3, device=CPU)["realism"]
    assert k3 == pytest.approx(realism_brute(real, fake, k=3).mean(), rel=1e-12)
    assert abs(k3 - expected.mean()) > 1e-3
    # duplicated reference samples (zero radii) contribute nothing
    dup = np.concatenate([real, np.repeat(real[:4], 5, axis=0)])
    assert realism(dup, fake, device=CPU)["realism"] == pytest.approx(realism_brute(dup, fake).mean(),
                                                                     rel=1e-12)
    # a reference subset is seeded and reproducible
    a = realism(real, fake, max_samples=200, seed=3, device=CPU)
    assert a == realism(real, fake, max_samples=200, seed=3, device=CPU)
    (ir,) = knn.seeded_subsets([301], 200, 3)
    assert a["realism"] == pytest.approx(realism_brute(real[ir], fake).mean(), rel=1e-12)


def test_realism_near_copies_equal_dgm_eval_and_copies_stay_finite():
    """Samples within 1e-6 of reference rows: the plain ratio radius / d, as dgm-eval divides
    (an eps added to d would move these by ~eps * median / d); exact copies get the documented
    finite radius / (eps * median)."""
    g = rng(31)
    real = g.standard_normal((200, 16))
    near = real[:40] + 1e-6 * g.standard_normal((40, 16))
    got = knn_realism_scores(real, near)
    want = realism_brute(real, near, eps=0.0)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    copies = knn_realism_scores(real, real[:5])
    assert np.isfinite(copies).all()
    np.testing.assert_allclose(copies, realism_brute(real, real[:5]), rtol=1e-12)
    # float32 features: sklearn's float32 distances and numpy's float32 ratio, exactly
    r32, f32 = real.astype(np.float32), (near + 0.01 * g.standard_normal(near.shape)).astype(np.float32)
    from sklearn.metrics import pairwise_distances

    rad = np.sort(pairwise_distances(r32, r32), axis=1)[:, 5]
    keep = rad < np.median(rad)
    dgm = (rad[keep][:, None] / pairwise_distances(r32, f32)[keep]).max(axis=0)
    np.testing.assert_array_equal(knn_realism_scores(r32, f32).astype(np.float32), dgm)


def knn_realism_scores(real, fake):
    from evalkit.metrics.prdc import realism_scores

    return realism_scores(real, fake, device=CPU).cpu().numpy()


def test_realism_k_option_is_recorded_and_reaches_per_sample_csv(tmp_path):
    import csv
    import json

    from click.testing import CliRunner

    from evalkit.cli import main
    from evalkit.features.featureset import FeatureSet, save_feature_file

    g = rng(21)
    real, fake = g.standard_normal((200, 8)).astype(np.float32), g.standard_normal((90, 8)).astype(np.float32)
    paths = {}
    for name, arr in (("real", real), ("fake", fake)):
        paths[name] = str(tmp_path / f"{name}.npz")
        save_feature_file(FeatureSet({"features": arr}), paths[name])
    for k in (5, 3):
        out, ps = tmp_path / f"r{k}.json", tmp_path / f"ps{k}.csv"
        args = ["score", paths["fake"], "--ref", paths["real"], "--metrics", "realism", "--quiet",
                "--out", str(out), "--per-sample", str(ps)] + ([] if k == 5 else ["--realism-k", "3"])
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        rec = json.loads(out.read_text())
        assert rec["config"]["realism_k"] == k
        assert rec["metrics"]["realism"] == pytest.approx(realism_brute(real, fake, k=k).mean(), rel=1e-6)
        with open(ps) as fh:
            col = [float(r["realism"]) for r in csv.DictReader(fh)]
        assert np.mean(col) == pytest.approx(rec["metrics"]["realism"], rel=1e-12)


# ------------------------------------------------------------------------------------ Vendi


@pytest.mark.parametrize("n,d", [(400, 24), (40, 64), (64, 64)])
def test_vendi_matches_vendi_score(n, d):
    vs = pytest.importorskip("vendi_score.vendi")
    x = rng(10).standard_normal((n, d)) + 0.3
    ours = vendi(x, device=CPU)["vendi"]
    assert ours == pytest.approx(vs.score_dual(x), rel=1e-6)
    assert ours == pytest.approx(vs.score_K(x @ x.T, normalize=True), rel=1e-6)
    for q in (0.5, 2, "inf"):
        assert vendi(x, q=q, device=CPU)["vendi"] == pytest.approx(vs.score_dual(x, q=q), rel=1e-6)
    # float32 features: float64 accumulation keeps it within float32 noise of the package
    x32 = x.astype(np.float32)
    assert vendi(x32, device=CPU)["vendi"] == pytest.approx(vs.score_dual(x32.astype(np.float64)), rel=1e-5)


def test_vendi_per_class_and_registry_labels():
    vs = pytest.importorskip("vendi_score.vendi")
    g = rng(11)
    x = g.standard_normal((300, 16))
    labels = g.integers(0, 4, 300)
    out = vendi(x, labels=labels, device=CPU)
    per = {str(c): vs.score_dual(x[labels == c]) for c in range(4)}
    assert out["vendi_per_class"] == pytest.approx(np.mean(list(per.values())), rel=1e-6)
    assert out["_per_class"] == pytest.approx(per, rel=1e-6)
    spec = get_metric("vendi")
    assert spec.args == ("fake",) and spec.keys == ("vendi", "vendi_per_class")
    assert spec(fake=x, labels=labels, device=CPU)["vendi_per_class"] == out["vendi_per_class"]
    assert "vendi_per_class" not in spec(fake=x, labels=None, device=CPU)
    with pytest.raises(MetricInputError, match="labels"):
        vendi(x, labels=labels[:10], device=CPU)


def test_vendi_analytic_and_mode_collapse():
    # k orthogonal directions, equally often: K/N has k eigenvalues 1/k -> Vendi = k
    eye = np.eye(8)[np.arange(400) % 5]
    assert vendi(eye, device=CPU)["vendi"] == pytest.approx(5.0, rel=1e-12)
    g = rng(12)
    modes = g.standard_normal((3, 32))
    collapsed = modes[g.integers(0, 3, 500)] + 0.01 * g.standard_normal((500, 32))
    assert vendi(collapsed, device=CPU)["vendi"] < 3.2
    assert vendi(g.standard_normal((500, 32)), device=CPU)["vendi"] > 20


# ------------------------------------------------------------------------------------ authpct


def test_authpct_matches_definition(monkeypatch):
    g = rng(13)
    for trial in range(3):
        real, fake = g.standard_normal((350, 20)), g.standard_normal((200 + 50 * trial, 20))
        expected = authpct_brute(real, fake)
        assert authpct(real, fake, device=CPU)["authpct"] == pytest.approx(expected, abs=1e-9)
    # both branches of the reference self-distances (only the hubs / all points)
    memo = sys.modules["evalkit.metrics.memorization"]
    monkeypatch.setattr(memo, "_ALL_SELF_SHARE", 0.0)
    assert authpct(real, fake, device=CPU)["authpct"] == pytest.approx(authpct_brute(real, fake), abs=1e-9)


# ------------------------------------------------------------------------------------ C_T


def test_mann_whitney_u_matches_scipy():
    from scipy.stats import mannwhitneyu

    g = rng(14)
    x, y = g.standard_normal(57), g.standard_normal(81)
    x[:6] = y[:6]  # ties across the samples
    y[10:14] = y[20]  # ties within one
    assert mann_whitney_u(x, y) == pytest.approx(mannwhitneyu(x, y).statistic, abs=1e-9)
    assert mann_whitney_u([1, 2], [3, 4]) == 0.0 and mann_whitney_u([3, 4], [1, 2]) == 4.0


def blobs(g, n, d, centres, scale=0.3):
    lab = g.integers(0, len(centres), n)
    return centres[lab] + scale * g.standard_normal((n, d))


def test_kmeans_finds_sklearn_partition():
    cluster = pytest.importorskip("sklearn.cluster")
    g = rng(15)
    centres = 4.0 * g.standard_normal((3, 10))
    x = blobs(g, 500, 10, centres)
    ours = ((x[:, None, :] - kmeans(x, 3, seed=0)[None]) ** 2).sum(-1).argmin(1)
    theirs = cluster.KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(x)
    # same partition up to a relabelling
    pairs = set(zip(ours.tolist(), theirs.tolist()))
    assert len(pairs) == 3 and len(set(ours.tolist())) == 3
    assert np.array_equal(kmeans(x, 3, seed=5), kmeans(x, 3, seed=5))  # seeded, bit-identical


def ct_reference(train, test, gen):
    """dgm-eval's compute_CTscore with an exact PCA and a seeded KMeans (scikit-learn, scipy)."""
    from scipy.stats import mannwhitneyu
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    if train.shape[1] > 64:
        pca = PCA(n_components=64, svd_solver="full").fit(train)
        train, test, gen = pca.transform(train), pca.transform(test), pca.transform(gen)
    km = KMeans(n_clusters=3, n_init=10, random_state=0).fit(train)
    lt, lp, lq = km.predict(train), km.predict(test), km.predict(gen)
    m, n = len(gen), len(test)
    zs, w, keep = [], [], []
    for c in range(3):
        t, p, q = train[lt == c], test[lp == c], gen[lq == c]
        nn = NearestNeighbors(n_neighbors=1).fit(t)
        lq_d, lp_d = nn.kneighbors(q)[0][:, 0], nn.kneighbors(p)[0][:, 0]
        u = mannwhitneyu(lq_d, lp_d, alternative="less").statistic
        mc, nc = len(q), len(p)
        zs.append((u - (nc * mc / 2 - 0.5)) / math.sqrt(nc * mc * (nc + mc + 1) / 12))
        w.append(nc / n)
        keep.append(mc / m > 20 / m)
    zs, w, keep = np.array(zs), np.array(w), np.array(keep)
    return float(w[keep].dot(zs[keep]) / w[keep].sum())


def test_ct_matches_reference_pipeline():
    pytest.importorskip("sklearn")
    g = rng(16)
    d = 80  # > 64: exercises the PCA
    centres = 6.0 * g.standard_normal((3, d))
    train, test = blobs(g, 450, d, centres), blobs(g, 300, d, centres)
    gen = blobs(g, 300, d, centres, scale=0.27)
    ours = ct(train, gen, test, device=CPU)["ct"]
    assert ours == pytest.approx(ct_reference(train, test, gen), rel=1e-9)
    assert ours == ct(train, gen, test, device=CPU)["ct"]  # bit-identical rerun
    spec = get_metric("ct")
    assert spec.args == ("real", "fake", "test") and spec.directions["ct"] == "zero"


def test_ct_pca_of_fewer_rows_than_dims_matches_reference_pipeline(monkeypatch):
    """Fewer training rows than dimensions: the axes come from the n×n Gram matrix; C_T equals
    dgm-eval's pipeline with an exact PCA, and the D×D covariance route, to round-off."""
    pytest.importorskip("sklearn")
    from evalkit.metrics import memorization

    g = rng(18)
    d = 400  # > 150 training rows: the n×n route
    centres = 6.0 * g.standard_normal((3, d))
    train, test = blobs(g, 150, d, centres), blobs(g, 150, d, centres)
    gen = blobs(g, 120, d, centres, scale=0.27)
    ours = ct(train, gen, test, device=CPU)["ct"]
    assert ours == pytest.approx(ct_reference(train, test, gen), rel=1e-9)
    calls = []
    monkeypatch.setattr(memorization, "_pca_axes_from_gram",
                        lambda t, dims, dev: calls.append(1) or memorization._pca_axes_from_cov(
                            t, t.dtype == np.float32, dims, dev))
    assert ct(train, gen, test, device=CPU)["ct"] == pytest.approx(ours, rel=1e-9)
    assert calls  # the D×D route really ran


def test_ct_input_errors():
    g = rng(17)
    x = g.standard_normal((100, 8))
    with pytest.raises(MetricInputError, match="ct: no k-means cell holds more than 20"):
        ct(x, g.standard_normal((15, 8)), g.standard_normal((100, 8)), device=CPU)


# ------------------------------------------------------------------------------------ FLS


def fls_reference(real, fake, test, seed=0, steps=100):
    """dgm-eval's compute_fls / compute_fls_overfit written with autograd, on our subsets."""
    nr, ng, nt = len(real), len(fake), len(test)
    n = min(10000, nr // 2, nt, ng)
    g = np.random.default_rng(seed)
    ti, gi = g.choice(nt, n, replace=False), g.choice(ng, n, replace=False)
    ri = g.choice(nr, 2 * n, replace=False)
    t32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    tr, ba, te, ge = t32(real[ri[:n]]), t32(real[ri[n:]]), t32(test[ti]), t32(fake[gi])
    allf = torch.cat([tr, ba, te, ge])
    mu, sd = allf.mean(0), allf.std(0)
    tr, ba, te, ge = ((x - mu) / sd for x in (tr, ba, te, ge))
    dim = tr.shape[1]

    def expo(x, k, ls):
        return -0.5 * torch.cdist(x, k) ** 2 / torch.exp(ls) - dim / 2 * ls + math.log(1 / k.shape[0])

    def fit(x, k):
        ls = torch.zeros(k.shape[0], requires_grad=True)
        opt = torch.optim.Adam([ls], lr=0.5)
        sch = torch.optim.lr_scheduler.MultiStepLR(opt, [50], 0.1)
        for _ in range(steps):
            loss = torch.mean(-torch.logsumexp(expo(x, k, ls), 1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sch.step()
            with torch.no_grad():
                ls.clamp_(-100, 20)
        return ls.detach()

    s_gen, s_base = fit(tr, ge), fit(tr, ba)
    nll_gen = torch.mean(-torch.logsumexp(expo(te, ge, s_gen), 1)).item()
    nll_base = torch.mean(-torch.logsumexp(expo(te, ba, s_base), 1)).item()
    diff = expo(tr, ge, s_gen).logsumexp(0) - expo(te, ge, s_gen).logsumexp(0)
    return 100 * math.exp(-2 * (nll_gen - nll_base) / dim), 100 * (diff > 0).double().mean().item() - 50


def test_fls_matches_autograd_reference():
    g = rng(18)
    real, test = g.standard_normal((250, 16)), g.standard_normal((130, 16))
    fake = 1.3 * g.standard_normal((200, 16)) + 0.2
    # 60 steps (instead of 100) keep the test fast and still cross the learning-rate milestone
    out = fls(real, fake, test, seed=4, steps=60, device=CPU)
    ref_fls, ref_pog = fls_reference(real, fake, test, seed=4, steps=60)
    assert out["fls"] == pytest.approx(ref_fls, rel=1e-4)
    assert out["fls_pog"] == pytest.approx(ref_pog, abs=1e-9)
    short = fls(real, fake, test, seed=4, steps=5, device=CPU)
    assert short == fls(real, fake, test, seed=4, steps=5, device=CPU)  # bit-identical rerun
    specs = get_metric("fls"), get_metric("fls_pog")
    assert specs[0].fn is specs[1].fn is fls
    assert specs[0].directions["fls"] == "higher" and specs[1].directions["fls_pog"] == "zero"


def test_fls_adam_is_torch_adam_bit_for_bit():
    """The written-out Adam of the bandwidth fit gives the bits of torch.optim.Adam(lr=0.5) with
    MultiStepLR([50], 0.1) and the clamp, driven by the same analytic gradient."""
    from evalkit.metrics.fls import _fit_log_sigmas, _nll_grad, _sq_dists

    g = rng(23)
    x = torch.tensor(g.standard_normal((40, 12)), dtype=torch.float32)
    k = torch.tensor(1.5 * g.standard_normal((30, 12)), dtype=torch.float32)
    d = _sq_dists(x, k)
    ls = torch.zeros(30, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([ls], lr=0.5)
    sch = torch.optim.lr_scheduler.MultiStepLR(opt, [50], 0.1)
    for _ in range(80):
        with torch.no_grad():
            ls.grad = _nll_grad(d, ls.detach(), 12)[1]
        opt.step()
        sch.step()
        with torch.no_grad():
            ls.clamp_(-100.0, 20.0)
    assert torch.equal(_fit_log_sigmas(d, 12, 80), ls.detach())


def test_fls_batch_equals_one_at_a_time(monkeypatch):
    """fls_batch (the bootstrap's batched bandwidth fits) gives each row subset's fls and
    fls_pog as fls itself does, to float32 round-off; one set per batch gives the same bits."""
    fls_mod = sys.modules["evalkit.metrics.fls"]

    g = rng(24)
    real, test = g.standard_normal((60, 10)), g.standard_normal((40, 10))
    fake = 1.2 * g.standard_normal((50, 10)) + 0.1
    rows = [np.sort(g.choice(50, 25, replace=False)) for _ in range(4)]
    seeds = [3, 4, 5, 6]
    one = [fls(real, fake[r], test, seed=s, steps=60, device=CPU) for r, s in zip(rows, seeds)]
    batched = fls_mod.fls_batch(real, fake, test, rows, seeds, steps=60, device=CPU)
    for a, b in zip(batched, one):
        # float32 likelihoods summed in another order: fls moves by a few float32 ulps at most
        assert a["fls"] == pytest.approx(b["fls"], rel=1e-6)
        assert a["fls_pog"] == b["fls_pog"]
    monkeypatch.setattr(fls_mod, "BATCH_ELEMENTS", 1)
    assert fls_mod.fls_batch(real, fake, test, rows, seeds, steps=60, device=CPU) == one


def test_fls_rounds_inputs_to_float32_before_standardising():
    """dgm-eval's preprocess_fls casts to float32 first, then standardises. Float64 features with
    a large common offset lose digits in that cast; the score is the one of the float32 values."""
    g = rng(22)
    off = 3000.0  # float32 spacing at 3000 is 2.4e-4, 2% of the 0.012 spread below
    real = off + 0.01 * g.standard_normal((160, 6))
    test = off + 0.01 * g.standard_normal((80, 6))
    fake = off + 0.012 * g.standard_normal((80, 6))
    out = fls(real, fake, test, seed=1, steps=20, device=CPU)
    as32 = [x.astype(np.float32) for x in (real, fake, test)]
    assert out == fls(*as32, seed=1, steps=20, device=CPU)
    ref_fls, ref_pog = fls_reference(real, fake, test, seed=1, steps=20)
    assert out["fls"] == pytest.approx(ref_fls, rel=1e-4)
    assert out["fls_pog"] == pytest.approx(ref_pog, abs=1e-9)


# ------------------------------------------------------------------------------------ memorization scenarios


def test_memorised_copies_versus_fresh_samples():
    """fake = reference + 1e-3 noise is caught by authpct, C_T and fls_pog; fresh draws are not."""
    g = rng(19)
    d = 24
    real = g.standard_normal((600, d))
    test = g.standard_normal((400, d))
    copies = real[g.permutation(600)[:400]] + 1e-3 * g.standard_normal((400, d))
    fresh = g.standard_normal((400, d))
    assert authpct(real, copies, device=CPU)["authpct"] < 1.0
    assert authpct(real, fresh, device=CPU)["authpct"] > 60.0
    ct_copies, ct_fresh = ct(real, copies, test, device=CPU)["ct"], ct(real, fresh, test, device=CPU)["ct"]
    assert ct_copies < -10.0 and abs(ct_fresh) < 3.0
    # FLS on n = 170 (small: its 2 x 100 Adam steps then stay cheap)
    real, test = real[:340], test[:170]
    copies = real[g.permutation(340)[:170]] + 1e-3 * g.standard_normal((170, d))
    fresh = fresh[:170]
    f_copies = fls(real, copies, test, steps=60, device=CPU)
    f_fresh = fls(real, fresh, test, steps=60, device=CPU)
    assert f_copies["fls_pog"] > 15.0 and abs(f_fresh["fls_pog"]) < 12.0
    assert 80.0 < f_fresh["fls"] < 125.0
    # a poor model (wrong scale and offset) scores far below a good one
    assert fls(real, 2.0 * fresh + 1.0, test, steps=60, device=CPU)["fls"] < 0.5 * f_fresh["fls"]


def test_per_sample_columns_agree_with_metrics():
    g = rng(20)
    real, fake = g.standard_normal((230, 10)), g.standard_normal((120, 10))
    out = per_sample(real, fake, seed=2, max_samples=150, device=CPU)
    assert set(out) == {"realism", "nn_index", "nn_distance", "authentic"}
    assert out["realism"].dtype == np.float64 and out["realism"].shape == (120,)
    assert out["nn_index"].dtype == np.int64 and out["authentic"].dtype == bool
    sq = brute_sq(fake, real)
    assert np.array_equal(out["nn_index"], sq.argmin(1))  # indexes the full reference
    np.testing.assert_allclose(out["nn_distance"], np.sqrt(sq.min(1)), rtol=1e-12)
    assert out["realism"].mean() == pytest.approx(
        realism(real, fake, seed=2, max_samples=150, device=CPU)["realism"], rel=1e-12
    )
    # per-sample flags against the brute-force definition, not against authpct (same code path)
    flags, r_star = authentic_brute(real, fake)
    np.testing.assert_array_equal(out["authentic"], flags)
    np.testing.assert_array_equal(out["nn_index"], r_star)
