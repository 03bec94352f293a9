"""Named references: `evalkit ref add|list|rm`, resolution, stats-only imports, the store."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, tiny_preprocess, write_images

from evalkit.cli import main
from evalkit.errors import InputError, StatsOnlyReferenceError
from evalkit.features.featureset import FeatureSet, load_feature_file, save_feature_file
from evalkit.features.options import ExtractOptions
from evalkit.refs.layout import default_ref_dir
from evalkit.refs.store import (
    add_reference,
    find_entry,
    get_manifest,
    list_references,
    reference_stats,
    remove_reference,
    resolve_reference,
)

TINY_OPTS = ExtractOptions(encoder=TINY, workers=0, batch_size=8, quiet=True)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty reference store selected through EVALKIT_REF_DIR."""
    root = tmp_path / "refs"
    monkeypatch.setenv("EVALKIT_REF_DIR", str(root))
    return root


def _feature_file(path, n=40, d=48, seed=0, encoder=TINY, files=True):
    rng = np.random.default_rng(seed)
    meta = {"encoder": {"name": encoder, "arch": "pool4", "weights_sha256": None,
                        "preprocess": tiny_preprocess().describe()}} if encoder else {}
    if files:
        meta["files"] = [f"img{i:03d}.png" for i in range(n)]
    fs = FeatureSet({"features": rng.normal(size=(n, d)).astype(np.float32)},
                    rng.integers(0, 3, size=n), meta)
    save_feature_file(fs, path)
    return fs


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_default_dir_env_and_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_REF_DIR", str(tmp_path / "a"))
    assert default_ref_dir() == tmp_path / "a"
    monkeypatch.delenv("EVALKIT_REF_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_ref_dir() == tmp_path / "xdg" / "evalkit" / "refs"


def test_add_list_resolve_rm_feature_file(store, tmp_path):
    src = _feature_file(tmp_path / "cifar_feats.npz")
    r = run("ref", "add", "cifar10", tmp_path / "cifar_feats.npz", "--encoder", TINY)
    assert r.exit_code == 0, r.output
    assert "cifar10" in r.output and "40 x 48" in r.output

    r = run("ref", "list")
    assert r.exit_code == 0 and "cifar10" in r.output and TINY in r.output and "features" in r.output
    manifest = json.loads((store / "cifar10" / "manifest.json").read_text())
    entry = manifest["entries"][0]
    assert (entry["name"], entry["arch"], entry["n"], entry["dim"]) == (TINY, "pool4", 40, 48)
    assert manifest["source"].endswith("cifar_feats.npz") and manifest["source_fingerprint"]
    assert entry["created"] and not manifest["stats_only"]

    fs = resolve_reference("cifar10", TINY_OPTS)
    np.testing.assert_array_equal(fs.arrays["features"], src.arrays["features"])
    np.testing.assert_array_equal(fs.labels, src.labels)
    assert fs.files == src.meta["files"]  # image locators survive (report galleries need them)
    assert fs.meta["reference_name"] == "cifar10"
    assert fs.meta["source"]["fingerprint"] == manifest["source_fingerprint"]
    assert fs.source == manifest["source"]
    assert sorted(p.name for p in store.iterdir()) == [".lock", "cifar10"]  # no temp leftovers

    r = run("ref", "rm", "cifar10")
    assert r.exit_code == 0 and not (store / "cifar10").exists()
    assert list_references() == []
    assert "no references" in run("ref", "list").output


def test_unknown_name_lists_known_and_how_to_add(store, tmp_path):
    _feature_file(tmp_path / "f.npz")
    add_reference("ffhq", str(tmp_path / "f.npz"), TINY_OPTS)
    with pytest.raises(InputError) as err:
        resolve_reference("imagenet", TINY_OPTS)
    msg = str(err.value)
    assert "unknown reference 'imagenet'" in msg and "ffhq" in msg
    assert "evalkit ref add imagenet SOURCE" in msg
    r = run("ref", "rm", "imagenet")
    assert r.exit_code == 2 and "ffhq" in r.output


@pytest.mark.parametrize("bad", ["../evil", "a/b", ".hidden", "", "x" * 65, "a\\b"])
def test_invalid_names_refused(store, tmp_path, bad):
    _feature_file(tmp_path / "f.npz")
    with pytest.raises(InputError, match="invalid reference name"):
        add_reference(bad, str(tmp_path / "f.npz"), TINY_OPTS)
    assert not store.exists() or not any(p for p in store.iterdir() if p.name != ".lock")


def test_same_name_other_source_needs_force(store, tmp_path):
    _feature_file(tmp_path / "a.npz", seed=0)
    b = _feature_file(tmp_path / "b.npz", seed=1)
    add_reference("r", str(tmp_path / "a.npz"), TINY_OPTS)
    r = run("ref", "add", "r", tmp_path / "b.npz", "--encoder", TINY)
    assert r.exit_code == 2 and "already holds" in r.output
    with pytest.raises(InputError, match="already has"):
        add_reference("r", str(tmp_path / "a.npz"), TINY_OPTS)  # same identity twice
    add_reference("r", str(tmp_path / "b.npz"), TINY_OPTS, force=True)
    np.testing.assert_array_equal(resolve_reference("r", TINY_OPTS).arrays["features"],
                                  b.arrays["features"])
    assert len(get_manifest("r")["entries"]) == 1


def test_missing_encoder_with_feature_source_says_how_to_add(store, tmp_path):
    _feature_file(tmp_path / "f.npz")
    add_reference("r", str(tmp_path / "f.npz"), TINY_OPTS)
    with pytest.raises(InputError) as err:
        resolve_reference("r", ExtractOptions(encoder="pixel"))
    msg = str(err.value)
    assert "no pixel features" in msg and f"has: {TINY}/pool4" in msg
    assert "evalkit ref add r SOURCE --encoder pixel" in msg


def test_image_source_extracts_missing_encoder_from_recorded_source(store, tmp_path):
    images = tmp_path / "imgs"
    write_images(images, 10, seed=3)
    add_reference("toy", str(images), TINY_OPTS)
    clean = resolve_reference("toy", TINY_OPTS)
    assert clean.n == 10 and clean.files[0] == "img000.png"
    with pytest.raises(InputError, match="already has"):
        add_reference("toy", str(images), TINY_OPTS)
    legacy_opts = ExtractOptions(encoder=TINY, resize="legacy", workers=0, quiet=True)
    assert find_entry("toy", legacy_opts) is None  # another preprocessing: not stored yet
    legacy = resolve_reference("toy", legacy_opts)  # extracted from the recorded folder now
    assert legacy.n == 10
    assert not np.allclose(legacy.arrays["features"], clean.arrays["features"])
    manifest = get_manifest("toy")
    assert len(manifest["entries"]) == 2
    assert {json.loads(e["preprocess"])["resize"] for e in manifest["entries"]} == {"clean", "none"}
    # both entries share the source fingerprint: results against either compare the same reference
    assert legacy.meta["source"]["fingerprint"] == clean.meta["source"]["fingerprint"]

    remove_reference("toy")
    add_reference("toy", str(images), TINY_OPTS)
    for p in images.iterdir():
        p.unlink()
    images.rmdir()
    with pytest.raises(InputError, match="is gone"):
        resolve_reference("toy", legacy_opts)
    assert resolve_reference("toy", TINY_OPTS).n == 10  # stored features need no source


def test_adm_image_batch_is_an_image_source(store, tmp_path):
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(6, 20, 20, 3), dtype=np.uint8)
    np.savez(tmp_path / "VIRTUAL_tiny.npz", arr_0=batch, mu=np.zeros(4), sigma=np.eye(4))
    add_reference("adm", str(tmp_path / "VIRTUAL_tiny.npz"), TINY_OPTS)
    entry = get_manifest("adm")["entries"][0]
    assert not entry["stats_only"] and entry["n"] == 6 and entry["dim"] == 48


def test_stats_only_import(store, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 48))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    np.savez(tmp_path / "fid_stats.npz", mu=mu, sigma=sigma)  # pytorch-fid --save-stats format
    r = run("ref", "add", "stats", tmp_path / "fid_stats.npz", "--encoder", TINY)
    assert r.exit_code == 0 and "statistics only" in r.output, r.output
    manifest = get_manifest("stats")
    assert manifest["stats_only"] is True and manifest["entries"][0]["stats_only"] is True
    assert "stats" in run("ref", "list").output

    with pytest.raises(StatsOnlyReferenceError, match="only fd and sfid"):
        resolve_reference("stats", TINY_OPTS)
    ref = resolve_reference("stats", TINY_OPTS, allow_stats=True)
    assert not ref.has_samples and set(ref.moments) == {"features"}
    np.testing.assert_allclose(ref.moments["features"][0], mu)
    np.testing.assert_allclose(ref.moments["features"][1], sigma)
    got_mu, got_sigma = reference_stats("stats", TINY_OPTS)
    np.testing.assert_allclose(got_sigma, sigma)
    assert ref.meta["source"]["fingerprint"] == manifest["source_fingerprint"]


def test_stats_dimension_checked_against_encoder(store, tmp_path):
    np.savez(tmp_path / "s.npz", mu=np.zeros(10), sigma=np.eye(10))
    r = run("ref", "add", "s", tmp_path / "s.npz", "--encoder", TINY)
    assert r.exit_code == 2 and "dimension 10" in r.output and "48" in r.output
    np.savez(tmp_path / "bad.npz", mu=np.zeros(48), sigma=np.eye(47))
    r = run("ref", "add", "s", tmp_path / "bad.npz", "--encoder", TINY)
    assert r.exit_code == 2 and "expected (D,) and (D, D)" in r.output


def test_reference_stats_of_feature_reference(store, tmp_path):
    fs = _feature_file(tmp_path / "f.npz")
    add_reference("r", str(tmp_path / "f.npz"), TINY_OPTS)
    mu, sigma = reference_stats("r", TINY_OPTS)
    x = fs.arrays["features"].astype(np.float64)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, ddof=1))


def test_missing_source_file(store, tmp_path):
    r = run("ref", "add", "r", tmp_path / "nope.npz")
    assert r.exit_code == 2 and "nope.npz" in r.output


def test_ref_dir_option_overrides_env(store, tmp_path):
    _feature_file(tmp_path / "f.npz")
    other = tmp_path / "elsewhere"
    assert run("ref", "add", "r", tmp_path / "f.npz", "--encoder", TINY, "--ref-dir", other).exit_code == 0
    assert (other / "r" / "manifest.json").is_file() and not (store / "r").exists()
    assert "r" in run("ref", "list", "--ref-dir", other).output
    loaded = load_feature_file(other / "r" / get_manifest("r", other)["entries"][0]["file"])
    assert loaded.n == 40


def test_score_against_named_reference(store, tmp_path):
    """`score --ref NAME` gives the numbers of `score --ref PATH` and records the name."""
    _feature_file(tmp_path / "real.npz", n=60, seed=0)
    _feature_file(tmp_path / "fake.npz", n=50, seed=1, files=False)
    add_reference("real", str(tmp_path / "real.npz"), TINY_OPTS)
    outs = []
    for ref in ("real", tmp_path / "real.npz"):
        out = tmp_path / f"rec_{len(outs)}.json"
        r = run("score", tmp_path / "fake.npz", "--ref", ref, "--metrics", "fd",
                "--encoder", TINY, "--out", out)
        assert r.exit_code == 0, r.output
        outs.append(json.loads(out.read_text()))
    assert outs[0]["metrics"]["fd"] == pytest.approx(outs[1]["metrics"]["fd"], rel=1e-9)
    assert outs[0]["reference"]["name"] == "real"
    assert outs[0]["reference"]["fingerprint"] == outs[1]["reference"]["fingerprint"]
