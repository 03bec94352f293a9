"""The README's promises, end to end: determinism under --seed, rows and their labels move
together, atomic writes. Each test here was checked against a planted bug (see the notes)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import CacheWarning
from evalkit.features.cache import FeatureCache
from evalkit.features.featureset import FeatureSet, save_feature_file
from evalkit.files.fileio import atomic_write_text
from evalkit.results.record import load_records, stable_view, write_records

D = 8


@pytest.fixture
def sets(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 40)
    fake = rng.normal(size=(120, D)) + labels[:, None] * 0.5  # classes differ: per-class Vendi moves
    paths = {}
    for name, feats, lab in (("fake", fake, labels), ("real", rng.normal(size=(150, D)), None)):
        paths[name] = str(tmp_path / f"{name}.npz")
        save_feature_file(FeatureSet({"features": feats.astype(np.float32)}, lab), paths[name])
    paths["dir"] = tmp_path
    return paths


def _score(sets, seed, out, *extra):
    res = CliRunner().invoke(main, ["score", sets["fake"], "--ref", sets["real"], "--metrics",
                                    "fd,kd,vendi,precision", "--nsample", "60", "--bootstrap",
                                    "5", "--seed", str(seed), "--out", str(out), "--quiet",
                                    *extra], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def test_subset_keeps_rows_labels_and_locators_together():
    fs = FeatureSet({"features": np.arange(10.0)[:, None] * [1.0, 2.0]}, np.arange(10) % 3,
                    files=[f"img{i}.png" for i in range(10)])
    idx = np.array([7, 2, 2, 9])
    sub = fs.subset(idx)
    assert sub.arrays["features"][:, 0].tolist() == [7.0, 2.0, 2.0, 9.0]
    assert sub.labels.tolist() == [1, 2, 2, 0]
    assert sub.files == ["img7.png", "img2.png", "img2.png", "img9.png"]


def test_same_seed_gives_a_byte_identical_record(sets):
    """--nsample, --bootstrap and labels (per-class Vendi) included; only ``created`` and
    ``timing`` (wall-clock facts) are left out of the comparison."""
    a = _score(sets, 5, sets["dir"] / "a.json")
    b = _score(sets, 5, sets["dir"] / "b.json")
    assert "vendi_per_class" in a["metrics"] and "metrics_ci" in a
    assert json.dumps(stable_view(a)) == json.dumps(stable_view(b))
    c = _score(sets, 6, sets["dir"] / "c.json")
    assert c["metrics"]["fd"] != a["metrics"]["fd"]  # another subsample
    assert c["metrics_ci"] != a["metrics_ci"]


def test_nsample_subsample_follows_the_seed(sets):
    def rows(seed):
        res = evalkit.score(sets["fake"], sets["real"], metrics="fd", nsample=30, seed=seed)
        return res.scored.arrays["features"]

    assert np.array_equal(rows(0), rows(0))
    assert not np.array_equal(rows(0), rows(1))


def test_per_class_vendi_uses_the_labels_of_the_rows_scored(sets):
    """Under --nsample the labels must be those of the subsampled rows."""
    from vendi_score import vendi

    res = evalkit.score(sets["fake"], sets["real"], metrics="vendi", nsample=45, seed=2)
    x, lab = res.scored.arrays["features"].astype(np.float64), res.scored.labels
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    per_class = [vendi.score_dual(x[lab == c]) for c in np.unique(lab)]
    assert res["vendi_per_class"] == pytest.approx(np.mean(per_class), rel=1e-6)


def test_bootstrap_draws_do_not_depend_on_other_consumers(sets):
    """Asking for one more metric leaves the others' intervals as they were."""
    one = evalkit.score(sets["fake"], sets["real"], metrics="fd", bootstrap=5, seed=1)
    two = evalkit.score(sets["fake"], sets["real"], metrics="fd,kd", bootstrap=5, seed=1)
    assert one.record["metrics_ci"]["fd"] == two.record["metrics_ci"]["fd"]


# --------------------------------------------------------------------------- atomic writes

def _fail_replace(monkeypatch):
    def boom(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", boom)


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_failed_replace_keeps_the_previous_record(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    write_records([{"schema": "evalkit.result/1", "metrics": {"fd": 1.0}}], out)
    before = out.read_bytes()
    _fail_replace(monkeypatch)
    with pytest.raises(OSError):
        write_records([{"schema": "evalkit.result/1", "metrics": {"fd": 2.0}}], out)
    assert out.read_bytes() == before and _leftovers(tmp_path) == []
    monkeypatch.undo()
    assert load_records(out)[0]["metrics"]["fd"] == 1.0


def test_failed_replace_keeps_the_previous_cache_entry(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)
    old = FeatureSet({"features": np.ones((3, 2), np.float32)})
    cache.store("k", old)
    _fail_replace(monkeypatch)
    with pytest.warns(CacheWarning):
        cache.store("k", FeatureSet({"features": np.zeros((3, 2), np.float32)}))
    monkeypatch.undo()
    assert np.array_equal(cache.load("k").arrays["features"], old.arrays["features"])
    assert _leftovers(tmp_path / "features") == []


def test_failed_replace_keeps_the_previous_manifest(tmp_path, monkeypatch):
    from evalkit.features.options import ExtractOptions
    from evalkit.refs import store as refs

    feats = tmp_path / "f.npz"
    save_feature_file(FeatureSet({"features": np.random.default_rng(0).normal(
        size=(20, 48)).astype(np.float32)}, meta={"encoder": {"name": "pixel"}}), feats)
    store = tmp_path / "store"
    refs.add_reference("r", str(feats), ExtractOptions(encoder="pixel"), store)
    manifest = store / "r" / refs.MANIFEST
    before = manifest.read_bytes()
    _fail_replace(monkeypatch)
    with pytest.raises(OSError):
        refs.add_reference("r", str(feats), ExtractOptions(encoder="pixel"), store, force=True)
    assert manifest.read_bytes() == before and _leftovers(store / "r") == []


def test_atomic_write_never_truncates_in_place(tmp_path, monkeypatch):
    target = tmp_path / "x.txt"
    atomic_write_text(target, "old")
    _fail_replace(monkeypatch)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_a_metrics_draws_do_not_depend_on_the_other_metrics_or_sets(sets):
    """Each metric function has its own stream of the run seed: asking for more metrics, or
    scoring another set in the same run, leaves its numbers as they were."""
    alone = evalkit.score(sets["fake"], sets["real"], metrics="kd", seed=4)
    more = evalkit.score(sets["fake"], sets["real"], metrics="fd_inf,kd,precision", seed=4)
    assert alone["kd"] == more["kd"] and alone["kd_std"] == more["kd_std"]
    both = evalkit.score([sets["real"], sets["fake"]], sets["real"], metrics="kd", seed=4)
    assert both[1]["kd"] == alone["kd"]


def test_result_shows_metrics_and_skipped_not_the_whole_record():
    from evalkit.api import Result

    res = Result({"name": "fake", "metrics": {"fd": 40.74, "kd": 0.012},
                  "skipped": {"is": "needs 'logits' arrays"}, "details": {"big": list(range(999))}})
    assert res.skipped == {"is": "needs 'logits' arrays"} and res.intervals == {}
    assert repr(res) == "Result('fake': fd=40.74, kd=0.01200, skipped=['is'])"
