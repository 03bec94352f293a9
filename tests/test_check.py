"""`evalkit check`: verdicts in each metric's direction, tolerances, exit codes, annotations."""
import json

import pytest
from click.testing import CliRunner

from evalkit.cli import main
from evalkit.errors import InputError, ProtocolMismatchError
from evalkit.results.check import check, verdict
from evalkit.results.record import SCHEMA


def rec(name="model", encoder="dinov2", n=1000, ref_fp="fpA", **metrics):
    return {"schema": SCHEMA, "name": name, "created": "2026-01-01T00:00:00+00:00",
            "samples": {"source": "s", "n": n, "fingerprint": "x"},
            "reference": {"source": "r", "name": None, "n": 5000, "fingerprint": ref_fp},
            "encoder": {"name": encoder, "arch": "vitl14", "weights_sha256": "w", "preprocess": "p"},
            "config": {"seed": 0, "nsample": None}, "metrics": metrics}


BASE = dict(fd=100.0, precision=0.70, ct=1.0, kd=0.010, kd_std=0.001)


@pytest.mark.parametrize("key, now, expected", [
    ("fd", 110.0, "regressed"),       # FD up is worse
    ("fd", 90.0, "improved"),
    ("fd", 100.5, "ok"),              # within rtol=1%: 1.0
    ("fd", 101.5, "regressed"),
    ("precision", 0.60, "regressed"),  # precision down is worse
    ("precision", 0.80, "improved"),
    ("precision", 0.6935, "ok"),
    ("ct", -1.5, "regressed"),        # C_T: distance from zero is what counts
    ("ct", -0.5, "improved"),
    ("kd_std", 0.5, "not checked"),   # no direction
])
def test_verdicts_follow_direction(key, now, expected):
    report = check(rec(**{**BASE, key: now}), rec(**BASE), rtol=0.01, atol=0.0)
    [c] = [c for c in report.checks if c.metric == key] or [None]
    if expected == "not checked":  # direction-less keys are left out by default
        assert c is None
        report = check(rec(**{**BASE, key: now}), rec(**BASE), metrics=[key])
        [c] = report.checks
    assert c.verdict == expected
    assert report.exit_code == (1 if expected == "regressed" else 0)


def test_atol_and_rtol_combine():
    assert verdict(100.0, 103.0, "lower", rtol=0.0, atol=2.0)[0] == "regressed"
    assert verdict(100.0, 103.0, "lower", rtol=0.02, atol=2.0) == ("ok", 4.0)
    assert verdict(0.5, 0.49, "higher", rtol=0.0, atol=0.0)[0] == "regressed"
    assert verdict(0.5, float("nan"), "higher", rtol=0.1, atol=0.0)[0] == "regressed"


def test_missing_metric_in_result_fails():
    report = check(rec(fd=100.0), rec(fd=100.0, precision=0.7))
    assert [c.verdict for c in report.checks] == ["ok", "missing"]
    assert report.exit_code == 1


def test_protocol_mismatch_raises():
    for other in (rec(encoder="inception", **BASE), rec(n=500, **BASE), rec(ref_fp="fpB", **BASE)):
        with pytest.raises(ProtocolMismatchError, match="not comparable"):
            check(other, rec(**BASE))


def test_several_records_pair_by_name():
    now = [rec("a", fd=10.0), rec("b", fd=30.0)]
    base = [rec("b", fd=20.0), rec("a", fd=10.0)]
    report = check(now, base)
    assert [(c.model, c.verdict) for c in report.checks] == [("a", "ok"), ("b", "regressed")]
    with pytest.raises(InputError, match="no baseline record named 'c'"):
        check([rec("c", fd=1.0), rec("a", fd=1.0)], base)


@pytest.fixture
def files(tmp_path):
    def write(name, record):
        p = tmp_path / name
        p.write_text(json.dumps(record))
        return str(p)
    return write


def run(*args, env=None):
    return CliRunner().invoke(main, ["check", *map(str, args)], env=env or {"GITHUB_ACTIONS": ""})


def test_cli_exit_codes(files):
    base = files("base.json", rec(**BASE))
    good = files("good.json", rec(**{**BASE, "fd": 99.0}))
    bad = files("bad.json", rec(**{**BASE, "fd": 120.0, "precision": 0.5}))
    other = files("other.json", rec(encoder="clip", **BASE))

    r = run(good, "--baseline", base)
    assert r.exit_code == 0, r.output
    assert "metric" in r.output and "baseline" in r.output and "verdict" in r.output
    assert "no regression" in r.output and "::error" not in r.output

    r = run(bad, "--baseline", base)
    assert r.exit_code == 1
    line = next(x for x in r.output.splitlines() if x.startswith("fd "))
    assert "100.0" in line and "120.0" in line and "+20.00 (+20.00%)" in line and "REGRESSED" in line
    assert "2 regression(s)" in r.output

    assert run(bad, "--baseline", base, "--rtol", "0.5").exit_code == 0     # tolerance absorbs it
    assert run(bad, "--baseline", base, "--metrics", "kd,ct").exit_code == 0

    r = run(other, "--baseline", base)
    assert r.exit_code == 2 and "not comparable" in r.output and "encoder" in r.output


@pytest.mark.parametrize("args, message", [
    (["{nope}", "--baseline", "{base}"], "no such file"),
    (["{junk}", "--baseline", "{base}"], "not a JSON result record"),
    (["{base}", "--baseline", "{base}", "--metrics", "fls"], "has no 'fls'"),
    (["{base}"], "Missing option '--baseline'"),
    (["{base}", "--baseline", "{base}", "--rtol", "-1"], "-1"),
])
def test_cli_bad_input_exits_2(tmp_path, files, args, message):
    paths = {"base": files("base.json", rec(**BASE)), "nope": str(tmp_path / "nope.json"),
             "junk": files("junk.json", "[{")}
    (tmp_path / "junk.json").write_text("{not json")
    r = run(*[a.format(**paths) for a in args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_github_annotations(files, tmp_path):
    base = files("base.json", rec(**BASE))
    bad = files("bad.json", rec(**{**BASE, "fd": 150.0, "precision": 0.35}))
    summary = tmp_path / "summary.md"
    r = run(bad, "--baseline", base, env={"GITHUB_ACTIONS": "true",
                                          "GITHUB_STEP_SUMMARY": str(summary)})
    assert r.exit_code == 1
    notes = [x for x in r.output.splitlines() if x.startswith("::error")]
    assert len(notes) == 2
    fd_note = next(n for n in notes if "fd regressed" in n)
    # property values escape ':' and ','; messages escape '%' (the +50% change)
    assert fd_note.startswith("::error title=evalkit check - fd regressed::")
    assert "model%3A" not in fd_note.split("::")[1]
    assert "100.0 -> 150.0 (+50.00 (+50.00%25), lower is better" in fd_note
    assert any("precision regressed" in n and "higher is better" in n for n in notes)
    assert "| fd | 100.0 | 150.0 |" in summary.read_text()
    r = run(bad, "--baseline", base, env={"GITHUB_ACTIONS": "false"})
    assert "::error" not in r.output


def test_test_set_metrics_against_another_test_set_are_not_compared():
    """The issue's case: a change of --test made check call ct "improved (+100.93 %)". ct and
    fls depend on the test set; fd does not."""
    base, now = rec(fd=100.0, ct=-1.0, fls=50.0), rec(fd=100.0, ct=0.01, fls=90.0)
    base["test"], now["test"] = {"n": 64, "fingerprint": "tA"}, {"n": 64, "fingerprint": "tB"}
    report = check(now, base)
    verdicts = {c.metric: c.verdict for c in report.checks}
    assert verdicts == {"fd": "ok", "ct": "other test set", "fls": "other test set"}
    assert report.exit_code == 0
    with pytest.raises(ProtocolMismatchError, match="depends on the test set"):
        check(now, base, metrics=["ct"])
    now["test"]["fingerprint"] = "tA"
    assert {c.metric: c.verdict for c in check(now, base).checks}["ct"] == "improved"
