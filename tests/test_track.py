"""`evalkit track`: metrics against training step from the records of a run; best step by the
metric's declared direction (lower FD, higher precision), bands from ``metrics_ci``."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from evalkit.cli import main
from evalkit.errors import InputError
from evalkit.results.record import SCHEMA
from evalkit.results.track import curves

FD = {100: 30.0, 200: 12.5, 300: 9.25, 400: 11.0}
PRECISION = {100: 0.41, 200: 0.62, 300: 0.58, 400: 0.66}


def _write(folder, name="run", ci=False, steps=FD):
    folder.mkdir(exist_ok=True)
    for s in steps:
        rec = {"schema": SCHEMA, "name": name, "step": s,
               "metrics": {"fd": FD[s], "precision": PRECISION[s], "kd_std": 0.1}}
        if ci:
            rec["metrics_ci"] = {"fd": [FD[s] - 1, FD[s] + 1]}
        (folder / f"{name}-{s}.json").write_text(json.dumps(rec))
    return folder


def test_table_marks_the_best_step_per_metric(tmp_path):
    runs = _write(tmp_path / "recs")
    res = CliRunner().invoke(main, ["track", str(runs), "--plot", str(tmp_path / "t.png")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = {int(line.split("|")[1]): [c.strip() for c in line.split("|")[2:4]]
            for line in res.stdout.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip().isdigit()}
    assert sorted(rows) == [100, 200, 300, 400]  # in step order, kd_std (no direction) left out
    assert rows[300][0] == "9.250 *" and rows[400][0] == "11.00"  # lowest FD
    assert rows[400][1] == "0.6600 *" and rows[200][1] == "0.6200"  # highest precision
    assert "best: fd at step 300, precision at step 400" in res.stdout
    png = np.asarray(Image.open(tmp_path / "t.png"))
    assert png.shape[0] > 300 and png.shape[2] in (3, 4)


def test_bands_and_several_runs(tmp_path):
    _write(tmp_path / "recs", "a", ci=True)
    _write(tmp_path / "recs", "b", steps=[100, 200])
    from evalkit.results.leaderboard import collect_records

    cs = curves(collect_records([str(tmp_path / "recs")]), ["fd"])
    a, b = sorted(cs, key=lambda c: c.name)
    assert a.bounds[2] == (8.25, 10.25) and b.bounds == [None, None]
    assert (a.steps[a.best], b.steps[b.best]) == (300, 200)
    res = CliRunner().invoke(main, ["track", str(tmp_path / "recs"), "--metrics", "fd",
                                    "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0 and "run: a" in res.stdout and "run: b" in res.stdout


def test_records_without_steps_or_metrics_are_input_errors(tmp_path):
    rec = {"schema": SCHEMA, "name": "x", "metrics": {"fd": 1.0}}
    (tmp_path / "r.json").write_text(json.dumps(rec))
    res = CliRunner().invoke(main, ["track", str(tmp_path / "r.json")])
    assert res.exit_code == 2 and "step" in res.output
    _write(tmp_path / "recs")
    with pytest.raises(InputError, match="is"):
        from evalkit.results.leaderboard import collect_records

        curves(collect_records([str(tmp_path / "recs")]), ["is"])


def test_leaderboard_takes_each_runs_best_step(tmp_path):
    _write(tmp_path / "recs", "a")
    other = {"schema": SCHEMA, "name": "b", "metrics": {"fd": 10.0, "precision": 0.5}}
    (tmp_path / "recs" / "b.json").write_text(json.dumps(other))  # a plain record, no step
    res = CliRunner().invoke(main, ["leaderboard", str(tmp_path / "recs"), "--best-step",
                                    "--sort", "fd", "--format", "csv"])
    assert res.exit_code == 0, res.output
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [(r["model"], float(r["fd"]), r["fd_best"]) for r in rows] == \
        [("a", 9.25, "1"), ("b", 10.0, "0")], res.stdout  # a's best step (300)
