"""`evalkit score` on feature files: records, tables, determinism, bad input (exit 2)."""
import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from evalkit.cli import main
from evalkit.features.featureset import FeatureSet, save_feature_file
from evalkit.results.record import SCHEMA, load_records

D = 16


def _write(path, feats, **extra):
    arrays = {"features": feats.astype(np.float32)}
    arrays.update({k: v for k, v in extra.items() if k != "labels"})
    save_feature_file(FeatureSet(arrays, extra.get("labels")), path)
    return str(path)


@pytest.fixture
def sets(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, D))
    fake = rng.normal(size=(250, D)) + 0.3
    test = rng.normal(size=(200, D))
    logits = rng.normal(size=(250, 10))
    labels = rng.integers(0, 3, size=250)
    return {
        "real": _write(tmp_path / "real.npz", real),
        "fake": _write(tmp_path / "fake.npz", fake, logits=logits, labels=labels),
        "fake2": _write(tmp_path / "fake2.npz", real[:250] + 0.01),
        "test": _write(tmp_path / "test.npz", test),
        "dir": tmp_path,
    }


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_score_writes_spec_record_and_table(sets):
    out = sets["dir"] / "r.json"
    res = run("score", sets["fake"], "--ref", sets["real"], "--test", sets["test"],
              "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    assert rec["schema"] == SCHEMA and rec["name"] == "fake"
    assert rec["samples"]["n"] == 250 and rec["reference"]["n"] == 300 and rec["test"]["n"] == 200
    m = rec["metrics"]
    for key in ("fd", "fd_inf", "kd", "kd_std", "is", "is_std", "precision", "recall", "density",
                "coverage", "realism", "vendi", "vendi_per_class", "authpct", "ct", "fls",
                "fls_pog", "sw_approx", "cmmd"):
        assert key in m, key
    assert "sfid" in rec["skipped"]  # no spatial arrays
    assert "fd" in res.output and "precision" in res.output
    # the numbers are the library's numbers
    from evalkit import metrics
    expected = metrics.fd(np.load(sets["real"])["features"], np.load(sets["fake"])["features"])
    assert m["fd"] == pytest.approx(expected["fd"], rel=1e-12)


def test_same_seed_same_record_different_seed_differs(sets):
    def metrics_for(seed):
        out = sets["dir"] / f"r{seed}.json"
        run("score", sets["fake"], "--ref", sets["real"], "--metrics", "kd,is,precision,fd_inf",
            "--seed", seed, "--out", out, "--quiet")
        rec = json.loads(out.read_text())
        return rec["metrics"]

    a, b, c = metrics_for(0), metrics_for(0), metrics_for(1)
    assert a == b
    assert a["kd"] != c["kd"]  # subsets depend on the seed
    assert a["is"] == c["is"]  # IS uses torch-fidelity's fixed permutation by contract


def test_several_sample_sets_share_one_reference(sets):
    out = sets["dir"] / "many.json"
    res = run("score", sets["fake"], sets["fake2"], "--ref", sets["real"], "--metrics", "fd,kd",
              "--out", out)
    assert res.exit_code == 0, res.output
    recs = load_records(out)
    assert [r["name"] for r in recs] == ["fake", "fake2"]
    assert recs[1]["metrics"]["fd"] < recs[0]["metrics"]["fd"]
    assert set(recs[0]["metrics"]) == {"fd", "kd", "kd_std"}


def test_per_sample_csv(sets):
    csv_path = sets["dir"] / "ps.csv"
    out = sets["dir"] / "r.json"
    res = run("score", sets["fake"], "--ref", sets["real"], "--metrics", "realism,authpct",
              "--per-sample", csv_path, "--out", out)
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output and f"wrote {csv_path}" in res.output  # says what it wrote
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 250
    real = np.load(sets["real"])["features"].astype(np.float64)
    fake = np.load(sets["fake"])["features"].astype(np.float64)
    d = np.sqrt(((fake[:5, None, :] - real[None]) ** 2).sum(-1))
    for i in range(5):
        assert int(rows[i]["nn_index"]) == int(d[i].argmin())
        assert float(rows[i]["nn_distance"]) == pytest.approx(d[i].min(), rel=1e-4)
    rec = json.loads(out.read_text())
    assert rec["per_sample"] == "ps.csv"
    authentic = np.array([int(r["authentic"]) for r in rows])
    assert authentic.mean() * 100 == pytest.approx(rec["metrics"]["authpct"], abs=1e-6)
    # independently (Alaa et al. 2022 as dgm-eval): authentic when the nearest reference r*
    # is closer to its own nearest reference neighbour than to the sample
    d_gr = np.sqrt(((fake[:, None, :] - real[None]) ** 2).sum(-1))
    d_rr = np.sqrt(((real[:, None, :] - real[None]) ** 2).sum(-1))
    np.fill_diagonal(d_rr, np.inf)
    nn = d_gr.argmin(1)
    expected = (d_rr.min(1)[nn] < d_gr[np.arange(len(fake)), nn]).astype(int)
    assert np.array_equal(authentic, expected)


def test_bootstrap_interval_contains_estimate(sets):
    out = sets["dir"] / "b.json"
    res = run("score", sets["fake"], "--ref", sets["real"], "--metrics", "fd,precision",
              "--bootstrap", 10, "--out", out)
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    lo, hi = rec["metrics_ci"]["precision"]
    assert lo <= hi and 0 <= lo <= 1
    assert rec["metrics_ci"]["fd"][0] < rec["metrics_ci"]["fd"][1]


def test_nsample_subsamples_each_set(sets):
    out = sets["dir"] / "n.json"
    run("score", sets["fake"], "--ref", sets["real"], "--metrics", "fd", "--nsample", 100,
        "--out", out)
    rec = json.loads(out.read_text())
    assert rec["samples"]["n"] == 100 and rec["reference"]["n"] == 100


def _bad(tmp_path, name, **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return str(p)


@pytest.mark.parametrize("case", ["missing", "nofeatures", "dims", "nan", "unknown_metric",
                                  "needs_test", "too_few", "not_npz"])
def test_bad_input_exits_2_with_one_line(sets, tmp_path, case):
    real, fake = sets["real"], sets["fake"]
    args = ["score", fake, "--ref", real, "--quiet"]
    expect = None
    if case == "missing":
        args[1], expect = str(tmp_path / "nope.npz"), "nope.npz"
    elif case == "nofeatures":
        args[1] = expect = _bad(tmp_path, "x.npz", logits=np.zeros((5, 3)))
    elif case == "dims":
        args[1] = expect = _bad(tmp_path, "d.npz", features=np.zeros((50, D + 1)))
    elif case == "nan":
        f = np.zeros((50, D))
        f[3, 2] = np.nan
        args[1] = expect = _bad(tmp_path, "nan.npz", features=f)
    elif case == "unknown_metric":
        args += ["--metrics", "fid"]
        expect = "fid"
    elif case == "needs_test":
        args += ["--metrics", "ct"]
        expect = "--test"
    elif case == "too_few":
        args[1] = _bad(tmp_path, "few.npz", features=np.random.default_rng(0).normal(size=(3, D)))
        args += ["--metrics", "precision"]
        expect = "precision"
    elif case == "not_npz":
        p = tmp_path / "junk.npz"
        p.write_text("hello")
        args[1] = expect = str(p)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert expect.split("/")[-1] in lines[0]


def test_failed_run_leaves_existing_output_untouched(sets, tmp_path):
    out = tmp_path / "keep.json"
    out.write_text("precious")
    res = CliRunner().invoke(main, ["score", sets["fake"], "--ref", sets["real"], "--metrics",
                                    "ct", "--out", str(out)])
    assert res.exit_code == 2
    assert out.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".keep")] == []


def test_metrics_command_lists_every_spec_key():
    res = run("metrics")
    for key in ("fd", "fd_inf", "sfid", "kd", "is", "precision", "recall", "density", "coverage",
                "realism", "vendi", "authpct", "ct", "fls", "fls_pog", "sw_approx", "cmmd"):
        # a table, or one block per metric when the table is wider than the terminal
        assert any(line.split()[0] == key for line in res.output.splitlines() if line.strip()), key


def test_python_api_matches_cli(sets):
    import evalkit
    out = sets["dir"] / "api.json"
    run("score", sets["fake"], "--ref", sets["real"], "--metrics", "fd,kd,vendi", "--out", out)
    res = evalkit.score(sets["fake"], sets["real"], metrics="fd,kd,vendi")
    assert res.metrics == json.loads(out.read_text())["metrics"]
    arr = evalkit.score(np.load(sets["fake"])["features"], np.load(sets["real"])["features"],
                        metrics=["fd"])
    assert arr["fd"] == pytest.approx(res["fd"], rel=1e-6)


def test_statistics_only_reference_runs_fd_and_skips_the_rest(sets, tmp_path):
    real = np.load(sets["real"])["features"].astype(np.float64)
    stats = tmp_path / "ref_stats.npz"
    np.savez(stats, mu=real.mean(0), sigma=np.cov(real, rowvar=False))
    out = tmp_path / "s.json"
    res = run("score", sets["fake"], "--ref", stats, "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    full = run("score", sets["fake"], "--ref", sets["real"], "--metrics", "fd",
               "--out", tmp_path / "f.json")
    assert full.exit_code == 0
    expected = json.loads((tmp_path / "f.json").read_text())["metrics"]["fd"]
    assert rec["metrics"]["fd"] == pytest.approx(expected, rel=1e-9)
    assert "precision" in rec["skipped"] and "statistics" in rec["skipped"]["precision"]
    assert rec["reference"]["stats_only"] is True
    res = CliRunner().invoke(main, ["score", sets["fake"], "--ref", str(stats), "--metrics",
                                    "precision"])
    assert res.exit_code == 2 and "statistics" in res.output


def test_console_table_has_directions_and_names_the_spread():
    """Direction arrows beside each metric; kd's spread over its subsets is named as such (a bare
    ``± 4.2e-09`` read as an error bar)."""
    from evalkit.results.outputs import metrics_table

    rec = {"name": "fake", "metrics": {"fd": 40.7, "kd": 0.012, "kd_std": 4.2e-09, "ct": -1.0}}
    lines = metrics_table([rec]).splitlines()
    by = {ln.split()[0]: ln for ln in lines[2:]}
    assert by["fd"].split()[1] == "↓" and by["ct"].split()[1] == "→0"
    assert "(sd over subsets 4.2e-09)" in by["kd"] and "±" not in by["kd"]
    assert "kd_std" not in by


def test_default_encoder_against_another_encoders_reference_says_so(tmp_path, monkeypatch):
    """No --encoder, a registered reference holding pixel features: the error names what the
    reference holds and the --encoder to use, before any DINOv2 weights are looked for."""
    from pathlib import Path

    import evalkit.encoders.weights as weights_mod
    import evalkit.files.download as download_mod
    from evalkit.features import identity

    examples = Path(__file__).resolve().parents[1] / "examples"
    store = str(tmp_path / "refs")
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    res = runner.invoke(main, ["ref", "add", "toy", str(examples / "real"), "--encoder", "pixel",
                               "--ref-dir", store, "--quiet"])
    assert res.exit_code == 0, res.output
    looked = []

    def spy(*args, **kwargs):
        looked.append(args)
        raise AssertionError("weights looked up")

    for mod, name in ((identity, "resolve_weights"), (weights_mod, "resolve_weights"),
                      (download_mod, "download")):
        monkeypatch.setattr(mod, name, spy)
    res = runner.invoke(main, ["score", str(examples / "fake"), "--ref", "toy", "--ref-dir", store])
    assert res.exit_code == 2, res.output
    assert "holds pixel features" in res.output and "--encoder pixel" in res.output
    assert "dinov2 is the default encoder" in res.output
    assert not looked
    # chosen on purpose, the encoder is extracted from the recorded source as before
    res = runner.invoke(main, ["score", str(examples / "fake"), "--ref", "toy", "--ref-dir", store,
                               "--encoder", "pixel", "--metrics", "fd", "--quiet"])
    assert res.exit_code == 0, res.output
