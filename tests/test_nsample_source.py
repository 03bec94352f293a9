"""--nsample taken at the source (issue 21, the npz-bomb row's second half): the rows are drawn
before anything is decoded, from the same ("subsample", role) stream as the subsample of
extracted rows, so the numbers do not change; only the chosen images are decoded; an npz array
inflates only the chosen rows; a sample's cache entry is its own; unreadable chosen images
follow the skip rule."""
import hashlib
import io
import tracemalloc
import warnings
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from conftest import TINY, write_images

import evalkit
from evalkit.errors import InputError
from evalkit.features.featureset import FeatureSet
from evalkit.features.loader import load_features, save_features
from evalkit.features.options import ExtractOptions
from evalkit.images import decode
from evalkit.images.sources import base
from evalkit.scoring.rng import RunRNG
from evalkit.scoring.run import row_sample

N_FAKE, N_REAL, K = 23, 19, 9


def _word(name):  # the name hashing of numpy's SeedSequence spawn keys, written out again
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def expected_rows(total, n, seed, role):
    """The rows the pre-change code kept: ``n`` of ``total`` on the ("subsample", role) child of
    SeedSequence(seed), drawn with Generator.choice without replacement, sorted."""
    seq = np.random.SeedSequence(seed, spawn_key=(_word("subsample"), _word(role)))
    return np.sort(np.random.default_rng(seq).choice(total, size=n, replace=False))


def _opts(tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return ExtractOptions(encoder=TINY, device="cpu", workers=0, batch_size=4, quiet=True, **kw)


def _pixels(rng, n):  # 24x20 RGB rows
    return rng.integers(0, 256, size=(n, 24, 20, 3), dtype=np.uint8)


def _make(tmp_path, kind):
    """A samples source and a reference source of ``kind``; returns (fake, real) paths."""
    rng = np.random.default_rng(5)
    out = []
    for name, n in (("fake", N_FAKE), ("real", N_REAL)):
        if kind == "dir":
            out.append(str(tmp_path / name))
            write_images(tmp_path / name, n, seed=n)
        elif kind in ("npz", "npz_stored"):
            path = tmp_path / f"{name}.npz"
            (np.savez_compressed if kind == "npz" else np.savez)(path, _pixels(rng, n))
            out.append(str(path))
        elif kind == "zip":
            folder = tmp_path / f"{name}_files"
            files = write_images(folder, n, seed=n)
            path = tmp_path / f"{name}.zip"
            with zipfile.ZipFile(path, "w") as zf:
                for f in files:
                    zf.write(f, f.name)
            out.append(str(path))
        elif kind == "features":
            folder = tmp_path / f"{name}_imgs"
            write_images(folder, n, seed=n)
            path = str(tmp_path / f"{name}.npz")
            save_features(load_features(str(folder), _opts(tmp_path, use_cache=False)), path)
            out.append(path)
    return out


@pytest.mark.parametrize("kind", ["dir", "npz", "npz_stored", "zip", "features"])
def test_source_sample_equals_the_subsample_of_extracted_rows(tmp_path, kind):
    fake, real = _make(tmp_path, kind)
    opts = _opts(tmp_path)
    res = evalkit.score(fake, real, metrics="fd,kd,precision", nsample=K, seed=4, options=opts)
    # the old path: every row extracted, then subsampled by the scorer
    full_fake, full_real = (load_features(p, _opts(tmp_path, use_cache=False)) for p in (fake, real))
    old = evalkit.score(full_fake, full_real, metrics="fd,kd,precision", nsample=K, seed=4)
    rows = expected_rows(N_FAKE, K, 4, "samples")
    np.testing.assert_array_equal(res.scored.arrays["features"],
                                  full_fake.arrays["features"][rows])
    assert res.scored.files == [full_fake.files[i] for i in rows]
    assert res.record["reference"]["n"] == K
    for key, value in old.metrics.items():
        assert res.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert res.record["samples"]["sampled_from"] == N_FAKE
    # a sample records its whole source's fingerprint: the same for any seed and as a full run
    other = evalkit.score(fake, real, metrics="fd", nsample=K, seed=5, options=opts)
    assert other.record["samples"]["fingerprint"] == res.record["samples"]["fingerprint"]
    whole = evalkit.score(fake, real, metrics="fd", options=opts)
    assert whole.record["samples"]["fingerprint"] == res.record["samples"]["fingerprint"]
    assert "sampled_from" not in whole.record["samples"]


def test_only_the_chosen_images_are_decoded(tmp_path, monkeypatch):
    fake, real = _make(tmp_path, "dir")
    rows = set(expected_rows(N_FAKE, K, 0, "samples").tolist())
    files = sorted((tmp_path / "fake").iterdir())
    for i, f in enumerate(files):  # every other image is garbage: decoding one would raise
        if i not in rows:
            f.write_bytes(b"not an image " + bytes([i]))
    calls = []
    real_decode = decode.decode_rgb

    def counting(data, name):
        calls.append(name)
        return real_decode(data, name)

    monkeypatch.setattr(base, "decode_rgb", counting)
    res = evalkit.score(fake, real, metrics="fd", nsample=K, seed=0, options=_opts(tmp_path))
    assert res.record["samples"]["n"] == K and "n_skipped" not in res.record["samples"]
    assert len(calls) == 2 * K  # the chosen samples and reference images, each once


def test_compressed_npz_inflates_only_the_chosen_rows(tmp_path):
    """Memory: a 47 MiB image array (compressed about 4:1) read with --nsample 10 allocates a
    few MiB (read and hashing buffers of fixed size; measured after a warm-up run, so imports
    do not count), far less than the array, whose full inflation the old path needed."""
    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / "small.npz", _pixels(rng, 20))
    arr = rng.integers(0, 4, size=(4000, 64, 64, 3), dtype=np.uint8)
    path = tmp_path / "big.npz"
    np.savez_compressed(path, arr)
    sample = row_sample(10, RunRNG(0), "samples")
    load_features(str(tmp_path / "small.npz"), _opts(tmp_path, use_cache=False), sample=sample)
    tracemalloc.start()
    try:
        fs = load_features(str(path), _opts(tmp_path, use_cache=False), sample=sample)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < arr.nbytes / 3, f"peak {peak / 2**20:.1f} MiB, array {arr.nbytes / 2**20:.0f} MiB"
    rows = expected_rows(4000, 10, 0, "samples")
    assert fs.files == [f"{path}[{i}]" for i in rows]
    ref = load_features(str(path), _opts(tmp_path, use_cache=False))
    np.testing.assert_array_equal(fs.arrays["features"], ref.arrays["features"][rows])
    assert fs.meta["source"]["fingerprint"] == ref.meta["source"]["fingerprint"]


def test_a_sample_has_its_own_cache_entry(tmp_path):
    fake, _ = _make(tmp_path, "dir")
    opts = _opts(tmp_path)
    entries = tmp_path / "cache" / "features"

    def sample(seed):
        return row_sample(K, RunRNG(seed), "samples")

    a = load_features(fake, opts, sample=sample(1))
    assert a.n == K and len(list(entries.glob("*.npz"))) == 1
    full = load_features(fake, opts)  # not mistaken for the sample's entry
    assert full.n == N_FAKE and full.meta["cache_hit"] is False
    again = load_features(fake, opts, sample=sample(1))
    assert again.meta["cache_hit"] is True and again.files == a.files
    b = load_features(fake, opts, sample=sample(2))  # another sample, another entry
    assert b.meta["cache_hit"] is False and b.files != a.files
    assert len(list(entries.glob("*.npz"))) == 3
    for fs, seed in ((a, 1), (b, 2)):
        rows = expected_rows(N_FAKE, K, seed, "samples")
        np.testing.assert_array_equal(fs.arrays["features"], full.arrays["features"][rows])


def test_an_unreadable_chosen_image_follows_the_skip_rule(tmp_path):
    """The rows are chosen over the listed images; a chosen one that cannot be decoded is an
    error naming it, or with skip_bad skipped and counted (no replacement is drawn)."""
    fake, real = _make(tmp_path, "dir")
    rows = expected_rows(N_FAKE, K, 0, "samples")
    bad = sorted((tmp_path / "fake").iterdir())[rows[2]]
    bad.write_bytes(b"broken")
    with pytest.raises(InputError, match=bad.name):
        evalkit.score(fake, real, metrics="fd", nsample=K, options=_opts(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evalkit.score(fake, real, metrics="fd", nsample=K,
                            options=_opts(tmp_path, skip_bad=True))
    rec = res.record["samples"]
    assert (rec["n"], rec["n_skipped"], rec["sampled_from"]) == (K - 1, 1, N_FAKE)
    assert bad.name not in " ".join(res.scored.files)


def test_several_encoders_sample_each_role_at_the_source(tmp_path):
    fake, real = _make(tmp_path, "npz")
    opts = _opts(tmp_path)
    got = evalkit.score(fake, real, metrics="fd", nsample=K, seed=3,
                        options=replace(opts, encoder=f"{TINY},pixel"))
    alone = evalkit.score(fake, real, metrics="fd", nsample=K, seed=3, options=opts)
    assert got[0].metrics["fd"] == pytest.approx(alone.metrics["fd"], rel=1e-6)
    np.testing.assert_array_equal(got[0].scored.arrays["features"],
                                  alone.scored.arrays["features"])
    assert got[0].scored.files == alone.scored.files


def test_featureset_inputs_are_still_subsampled(tmp_path):
    rng = np.random.default_rng(1)
    fake = FeatureSet({"features": rng.normal(size=(40, 6)).astype(np.float32)})
    real = FeatureSet({"features": rng.normal(size=(30, 6)).astype(np.float32)})
    res = evalkit.score(fake, real, metrics="fd", nsample=K, seed=2)
    np.testing.assert_array_equal(res.scored.arrays["features"],
                                  fake.arrays["features"][expected_rows(40, K, 2, "samples")])


def test_image_batch_bomb_is_refused_with_nsample_too(tmp_path):
    """The issue's case: an arr_0 image batch inflating ~1000:1, scored with --nsample 10:
    exit 2 naming the file, refused before it is inflated."""
    from click.testing import CliRunner

    from evalkit.cli import main

    path = tmp_path / "bomb.npz"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((1024, 64, 64, 3), np.uint8))  # 12 MiB of zeros
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("arr_0.npy", buf.getvalue() * 2)  # 24 MiB member: over the 16 MiB floor
    res = CliRunner().invoke(main, ["score", str(path), "--ref", str(path), "--nsample", "10",
                                    "--encoder", TINY, "--device", "cpu", "--metrics", "fd"])
    assert res.exit_code == 2, res.output
    assert str(path) in res.output and "compression ratio" in res.output
