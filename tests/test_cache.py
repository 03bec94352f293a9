"""Feature cache and pipeline: hits skip the encoder, corrupt entries are rebuilt, identity
changes miss; `evalkit features` writes a valid feature file; bad input exits 2 in one line."""
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, TINY_BUILDS, write_images

import evalkit.features.loader as pipeline
from evalkit.cli import main
from evalkit.errors import CacheWarning, InputError
from evalkit.features.cache import default_cache_dir
from evalkit.features.featureset import load_feature_file
from evalkit.features.options import ExtractOptions


@pytest.fixture
def opts(tmp_path):
    return ExtractOptions(encoder=TINY, batch_size=4, device="cpu", workers=0, quiet=True,
                          cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def counted(monkeypatch):
    """Counts encoder builds and extract() calls made by the pipeline."""
    calls = {"extract": 0}
    real = pipeline.extract

    def spy(*a, **k):
        calls["extract"] += 1
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "extract", spy)
    TINY_BUILDS["n"] = 0
    return calls


def test_second_load_is_a_hit_without_building_the_encoder(class_dir, opts, counted):
    first = pipeline.load_features(str(class_dir), opts)
    assert counted["extract"] == 1 and TINY_BUILDS["n"] == 1
    assert first.meta["cache_hit"] is False and first.meta["extract_s"] > 0
    second = pipeline.load_features(str(class_dir), opts)
    assert counted["extract"] == 1 and TINY_BUILDS["n"] == 1  # nothing built or run
    assert second.meta["cache_hit"] is True and second.meta["extract_s"] == 0
    for key in first.arrays:
        np.testing.assert_array_equal(second.arrays[key], first.arrays[key])
    assert second.labels.tolist() == first.labels.tolist()
    assert second.files == first.files == sorted(first.files)
    for meta in (first.meta, second.meta):
        assert meta["encoder"]["name"] == TINY and meta["encoder"]["arch"] == "pool4"
        assert set(meta["encoder"]) == {"name", "arch", "weights_sha256", "preprocess", "precision"}
        assert meta["source"]["source"] == str(class_dir) and meta["source"]["n"] == 12
        assert meta["source"]["fingerprint"] == first.meta["source"]["fingerprint"]
        assert meta["classes"] == ["cat", "dog"] and meta["n_skipped"] == 0
        assert "kept" not in meta and "content_fingerprint" not in meta and "cache" not in meta


def test_no_cache_neither_reads_nor_writes(image_dir, opts, counted):
    from dataclasses import replace
    o = replace(opts, use_cache=False)
    pipeline.load_features(str(image_dir), o)
    pipeline.load_features(str(image_dir), o)
    assert counted["extract"] == 2
    assert not Path(opts.cache_dir).exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "wrong_key"])
def test_corrupt_entry_is_detected_and_rebuilt(image_dir, opts, counted, damage):
    first = pipeline.load_features(str(image_dir), opts)
    entries = list((Path(opts.cache_dir) / "features").glob("*.npz"))
    assert len(entries) == 1
    entry = entries[0]
    data = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # change one stored feature value, keep the file valid
        fs = load_feature_file(entry)
        fs.arrays["features"][0, 0] += 1.0
        from evalkit.features.featureset import save_feature_file
        save_feature_file(fs, entry)
    else:  # a valid entry of another source, found under this source's key
        other_dir = write_images(image_dir.parent / "other", 2, seed=7)[0].parent
        pipeline.load_features(str(other_dir), opts)
        other = next(p for p in entry.parent.glob("*.npz") if p != entry)
        entry.write_bytes(other.read_bytes())
        counted["extract"] -= 1
    with pytest.warns(CacheWarning, match="corrupt"):
        again = pipeline.load_features(str(image_dir), opts)
    assert again.meta["cache_hit"] is False and counted["extract"] == 2
    np.testing.assert_array_equal(again.arrays["features"], first.arrays["features"])
    third = pipeline.load_features(str(image_dir), opts)  # rebuilt entry is good again
    assert third.meta["cache_hit"] is True and counted["extract"] == 2


def test_identity_changes_miss(image_dir, opts, counted):
    from dataclasses import replace
    pipeline.load_features(str(image_dir), opts)
    pipeline.load_features(str(image_dir), replace(opts, resize="legacy"))  # preprocessing
    pipeline.load_features(str(image_dir), replace(opts, precision="bf16"))
    pipeline.load_features(str(image_dir), replace(opts, batch_size=7))  # not part of the key
    assert counted["extract"] == 3  # (every identity field changing the key: test_identity.py)


def test_changed_source_misses(image_dir, opts, counted):
    pipeline.load_features(str(image_dir), opts)
    write_images(image_dir, 1, seed=42, ext="bmp")
    fs = pipeline.load_features(str(image_dir), opts)
    assert counted["extract"] == 2 and fs.n == 13


def test_skipped_images_in_a_cached_entry_still_error_without_skip_bad(image_dir, opts):
    from dataclasses import replace
    (image_dir / "img005.png").write_bytes(b"")
    with pytest.warns(UserWarning):
        fs = pipeline.load_features(str(image_dir), replace(opts, skip_bad=True))
    assert fs.n == 11 and fs.meta["n_skipped"] == 1
    assert fs.meta["skipped"] == ["img005.png"] and "img005.png" not in fs.files
    with pytest.raises(InputError, match="img005.png"):
        pipeline.load_features(str(image_dir), opts)  # a hit, but --skip-bad was not given
    with pytest.warns(UserWarning, match="1 unreadable"):
        hit = pipeline.load_features(str(image_dir), replace(opts, skip_bad=True))
    assert hit.meta["cache_hit"] and hit.files == fs.files


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("EVALKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "evalkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "evalkit"


def test_jpeg_inputs_warn(tmp_path, opts):
    write_images(tmp_path / "j", 3, ext="jpeg")
    with pytest.warns(pipeline.JpegWarning, match="JPEG"):
        fs = pipeline.load_features(str(tmp_path / "j"), opts)
    assert fs.meta["jpeg"] is True


# -- the `features` command -----------------------------------------------------------------
def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_features_command_writes_a_feature_file(class_dir, tmp_path, opts):
    out = tmp_path / "feats.npz"
    res = _cli("features", class_dir, "-o", out, "--encoder", TINY, "--batch-size", 5,
               "--device", "cpu", "--workers", 0, "--quiet", "--cache-dir", opts.cache_dir)
    assert res.exit_code == 0, res.output
    fs = load_feature_file(out)
    assert fs.arrays["features"].shape == (12, 48) and fs.arrays["logits"].shape == (12, 5)
    assert fs.labels.tolist() == [0] * 6 + [1] * 6
    meta = fs.meta
    assert meta["encoder"]["name"] == TINY and meta["source"]["n"] == 12
    assert meta["source"]["fingerprint"].startswith("sha256:")
    assert meta["files"][0] == "cat/img001.png"
    direct = pipeline.load_features(str(class_dir), opts)
    np.testing.assert_array_equal(fs.arrays["features"], direct.arrays["features"])
    # a feature file is a source: read back with no encoder, same provenance
    back = pipeline.load_features(str(out), ExtractOptions(encoder="no_such_encoder"))
    assert back.files == direct.files and back.meta["encoder"] == direct.meta["encoder"]
    assert back.meta["source"]["fingerprint"] == direct.meta["source"]["fingerprint"]
    assert back.meta["source"]["extracted_from"] == str(class_dir)


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "bad_out", "npy_dtype"])
def test_features_command_bad_input_exits_2_in_one_line(tmp_path, case, opts):
    src, out, expect = tmp_path / "imgs", tmp_path / "o.npz", None
    if case == "missing":
        expect = "imgs"
    elif case == "empty":
        src.mkdir()
        expect = "no images found under"
    elif case == "corrupt":
        write_images(src, 3)
        (src / "img001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        expect = "img001.png"
    elif case == "bad_out":
        write_images(src, 3)
        out, expect = tmp_path / "o.txt", "o.txt"
    else:
        src = tmp_path / "x.npy"
        np.save(src, np.zeros((2, 8, 8, 3), np.float64))
        expect = "x.npy"
    res = _cli("features", src, "-o", out, "--encoder", TINY, "--device", "cpu", "--workers", 0,
               "--quiet", "--cache-dir", opts.cache_dir)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert expect in lines[0]
    assert not out.exists()
