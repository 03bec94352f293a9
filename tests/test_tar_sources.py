"""Tar shards (evalkit.images.sources.tarshards): webdataset samples read in place.

The same images as a folder, a zip and tar shards give identical features and labels; a brace
pattern over three shards equals one shard holding everything; two processes agree with one;
truncated shards, oversized members and ``..`` member names are refused (or skipped, counted)
naming shard and member, and nothing is ever written from a member name."""
import csv
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from conftest import encoded_images

from evalkit.errors import InputError
from evalkit.features.loader import load_features
from evalkit.features.options import ExtractOptions
from evalkit.files import safetar
from evalkit.images.locators import Locator, parse, tar_member
from evalkit.images.sources import TarSource, open_image, resolve_source
from evalkit.images.sources.tarshards import expand_braces

CLASSES = ("ant", "bee", "cow")
N = 9


def _images(seed: int = 0):
    """(key, bytes, extension, class index) per sample: PNG and JPEG mixed."""
    return [(f"s{k:03d}", data, "jpg" if jpeg else "png", k % 3)
            for k, data, jpeg in encoded_images(N, seed=seed, height=20, width=24, jpeg_at=1)]


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1_600_000_000
    tf.addfile(info, io.BytesIO(data))


def write_shard(path, samples, *, extra=()):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for key, data, ext, cls in samples:
            _add(tf, f"{key}.{ext}", data)
            _add(tf, f"{key}.cls", str(cls).encode())
            _add(tf, f"{key}.txt", f"a photo of {CLASSES[cls]}".encode())
        for name, data in extra:
            _add(tf, name, data)
    return path


@pytest.fixture
def layouts(tmp_path):
    """The same nine images as a class folder, a zip with class folders, one tar, 3 shards."""
    samples = _images()
    # sort key of the folder (class/name) equals the stream order below
    ordered = sorted(samples, key=lambda s: (s[3], s[0]))
    for key, data, ext, cls in ordered:
        (tmp_path / "dir" / CLASSES[cls]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "dir" / CLASSES[cls] / f"{key}.{ext}").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as zf:
        for key, data, ext, cls in ordered:
            zf.writestr(f"{CLASSES[cls]}/{key}.{ext}", data)
    write_shard(tmp_path / "all.tar", ordered)
    (tmp_path / "shards").mkdir()
    for s in range(3):
        write_shard(tmp_path / "shards" / f"part-{s:06d}.tar", ordered[3 * s:3 * s + 3])
    return tmp_path


def _features(source, **kw):
    opts = ExtractOptions(encoder="pixel", device="cpu", workers=0, use_cache=False, quiet=True,
                          batch_size=4, **kw)
    return load_features(str(source), opts)


def test_folder_zip_and_tar_give_identical_features_and_labels(layouts):
    ref = _features(layouts / "dir")
    for src in (layouts / "set.zip", layouts / "all.tar", layouts / "shards",
                str(layouts / "shards" / "part-{000000..000002}.tar")):
        fs = _features(src)
        np.testing.assert_array_equal(fs.arrays["features"], ref.arrays["features"])
        np.testing.assert_array_equal(fs.labels, ref.labels)
    tar = _features(layouts / "all.tar")
    assert tar.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert tar.meta["jpeg"] is True
    assert tar.files[0] == f"{layouts / 'all.tar'}::s000.png"


def test_brace_pattern_over_three_shards_equals_one_shard(layouts):
    one = resolve_source(layouts / "all.tar")
    three = resolve_source(str(layouts / "shards" / "part-{000000..000002}.tar"))
    assert isinstance(three, TarSource) and len(three.shards) == 3
    assert three.names == one.names and three.labels.tolist() == one.labels.tolist()
    assert three.prompts == one.prompts
    assert one.prompts[0] == "a photo of ant"
    a, b = _features(layouts / "all.tar"), _features(three.arg)
    np.testing.assert_array_equal(a.arrays["features"], b.arrays["features"])
    # the shards' .txt prompts travel with the features (and through the feature cache)
    assert a.prompts == b.prompts == one.prompts and a.prompts[0] == "a photo of ant"
    assert _features(layouts / "all.tar").prompts == one.prompts
    # same images in the same order: the content fingerprint does not see the shard cut
    assert a.meta["source"]["fingerprint"] == b.meta["source"]["fingerprint"]
    assert b.files[3] == tar_member(str(layouts / "shards" / "part-000001.tar"), "s001.jpg")
    folder = resolve_source(layouts / "shards")
    assert folder.locators == [loc.replace(three.arg.rsplit("/", 1)[0], str(layouts / "shards"))
                               for loc in three.locators]


def test_locators_read_back_and_survive_a_move(layouts):
    src = resolve_source(layouts / "shards")
    for i in (0, 4, 8):
        want, _, _ = src.load_rgb(i)
        assert np.array_equal(np.asarray(open_image(src.locators[i])), want)
    loc = src.locators[4]
    (layouts / "shards").rename(layouts / "moved")
    with pytest.raises(InputError):
        open_image(loc)
    got = np.asarray(open_image(loc, root=layouts / "moved"))  # the folder of shards moved
    assert np.array_equal(got, resolve_source(layouts / "moved").load_rgb(4)[0])
    single = layouts / "all.tar"
    loc = resolve_source(single).locators[2]
    single.rename(layouts / "renamed.tar")
    assert np.array_equal(np.asarray(open_image(loc, root=layouts / "renamed.tar")),
                          resolve_source(layouts / "renamed.tar").load_rgb(2)[0])


def test_locator_grammar_for_tar_and_tables():
    assert parse("d/a.tar::k/0001.jpg") == Locator("tar", "d/a.tar", member="k/0001.jpg")
    assert parse("D/A.TAR::x.png") == Locator("tar", "D/A.TAR", member="x.png")
    assert parse("a.tar::b.zip::c.png") == Locator("tar", "a.tar", member="b.zip::c.png")
    assert parse("a.zip::b.tar::c.png") == Locator("zip", "a.zip", member="b.tar::c.png")
    assert parse("d/p.parquet[12]") == Locator("table", "d/p.parquet", index=12)
    assert parse("d/data-00000-of-00001.arrow[3]") == Locator(
        "table", "d/data-00000-of-00001.arrow", index=3)
    for text in ("a.tar::b[3].png", "x.parquet[0]", "x.Arrow[7]", "shards/{0..2}.tar::a.png"):
        assert parse(text).format() == text


def test_brace_expansion():
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}/x{1..2}.tar") == ["a/x1.tar", "a/x2.tar", "b/x1.tar", "b/x2.tar"]
    assert expand_braces("{8..10}.tar") == ["8.tar", "9.tar", "10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert expand_braces("odd{x}.tar") == ["odd{x}.tar"]


def test_missing_shard_in_pattern_is_named(layouts):
    with pytest.raises(InputError, match=r"part-000003\.tar does not exist"):
        resolve_source(str(layouts / "shards" / "part-{000000..000003}.tar"))


def test_fingerprint_hashes_the_bytes_read(layouts):
    path = layouts / "all.tar"
    before = resolve_source(path).fingerprint
    raw = bytearray(path.read_bytes())
    member = resolve_source(path).members[0]
    raw[member.offset + member.size // 2] ^= 0xFF  # same names, sizes and times
    path.write_bytes(bytes(raw))
    assert resolve_source(path).fingerprint != before


def test_truncated_shard_names_shard_and_member(layouts):
    samples = _images()
    path = write_shard(layouts / "cut.tar", samples)
    src = resolve_source(path)
    last = src.members[-1]
    path.write_bytes(path.read_bytes()[:last.offset + last.size // 2])  # inside the last image
    with pytest.raises(InputError, match=r"cut\.tar::s008\.png: truncated shard"):
        _features(path)
    fs = _features(path, skip_bad=True)
    assert fs.meta["n_skipped"] == 1 and fs.n == N - 1
    assert fs.labels.tolist() == [s[3] for s in samples[:-1]]  # the cut sample lost its .cls
    # cut exactly at a member boundary: the end-of-archive blocks are missing
    path.write_bytes(path.read_bytes()[:last.offset - 512])
    with pytest.raises(InputError, match=r"cut\.tar: truncated after member 's007\.txt'"):
        resolve_source(path)


def test_member_above_the_limit_is_refused(layouts, monkeypatch):
    monkeypatch.setattr(safetar, "MAX_MEMBER_BYTES", 1600)
    sizes = [len(s[1]) for s in _images()]
    assert min(sizes) < 1600 < max(sizes)
    with pytest.raises(InputError, match=r"all\.tar::s\d+\.\w+: refused, member is"):
        _features(layouts / "all.tar")
    fs = _features(layouts / "all.tar", skip_bad=True)
    assert fs.n == sum(s <= 1600 for s in sizes) and fs.meta["n_skipped"] == N - fs.n


def test_dotdot_member_is_never_read_or_written(tmp_path):
    samples = _images()[:2]
    evil = samples[0][1]
    (tmp_path / "w").mkdir()
    shard = write_shard(tmp_path / "w" / "evil.tar", samples,
                        extra=[("../../x.png", evil), ("/abs/y.png", evil)])
    before = sorted(p for p in tmp_path.parent.rglob("*") if p.name in ("x.png", "y.png"))
    src = resolve_source(shard)
    assert len(src) == 4 and set(src.bad) == {2, 3}
    with pytest.raises(InputError, match=r"evil\.tar::\.\./\.\./x\.png: unsafe member path"):
        _features(shard)
    fs = _features(shard, skip_bad=True)
    assert fs.n == 2 and fs.meta["n_skipped"] == 2
    with pytest.raises(InputError, match="unsafe member path"):
        open_image(src.locators[2])
    after = sorted(p for p in tmp_path.parent.rglob("*") if p.name in ("x.png", "y.png"))
    assert after == before


def test_compressed_and_corrupt_tars_are_refused(tmp_path, layouts):
    gz = tmp_path / "z.tar"
    with tarfile.open(gz, "w:gz") as tf:
        _add(tf, "a.png", _images()[0][1])
    with pytest.raises(InputError, match="gzip-compressed tar"):
        resolve_source(gz)
    bad = tmp_path / "bad.tar"
    raw = bytearray((layouts / "all.tar").read_bytes())
    second = resolve_source(layouts / "all.tar").members[1]
    header = second.offset - 512  # the plain ustar header of s001.jpg (PAX adds none)
    raw[header + 148:header + 156] = b"9999999\x00"  # its checksum no longer matches
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"bad\.tar: corrupt tar header after member 's000\.txt'"):
        resolve_source(bad)


def test_labels_from_json_and_samples_without_images(tmp_path):
    samples = _images()[:3]
    path = tmp_path / "j.tar"
    with tarfile.open(path, "w") as tf:
        for key, data, ext, cls in samples:
            _add(tf, f"{key}.{ext}", data)
            _add(tf, f"{key}.json", json.dumps({"label": cls, "caption": key}).encode())
            _add(tf, f"{key}.seg.png", data)  # same sample (key up to the first dot): not its image
        _add(tf, "orphan.cls", b"1")  # a sample without an image is ignored
        _add(tf, "z.seg.png", samples[0][1])  # an image with a compound extension still counts
    src = resolve_source(path)
    assert src.names == ["s000.png", "s001.jpg", "s002.png", "z.seg.png"]
    assert src.labels is None  # z has no label
    assert src.prompts == ["s000", "s001", "s002", None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_by_shard_and_agree_with_one(layouts):
    pattern = str(layouts / "shards" / "part-{000000..000002}.tar")
    env = dict(os.environ, EVALKIT_SHARD_SIZE="3", OMP_NUM_THREADS="1")
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    out = layouts / "two.npz"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "evalkit", "features", pattern, "-o", str(out),
           "--encoder", "pixel", "--device", "cpu", "--workers", "0", "--no-cache"]
    res = subprocess.run(cmd, cwd=layouts, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    with np.load(out, allow_pickle=False) as z:
        two = z["features"]
        labels = z["labels"] if "labels" in z.files else None
    one = _features(pattern)
    np.testing.assert_array_equal(two, one.arrays["features"])
    if labels is not None:
        np.testing.assert_array_equal(labels, one.labels)


def test_cli_exit_codes_and_per_sample_locators(layouts):
    from click.testing import CliRunner

    from evalkit.cli import main

    pattern = str(layouts / "shards" / "part-{000000..000002}.tar")
    cut = layouts / "cut.tar"
    data = (layouts / "all.tar").read_bytes()
    last = resolve_source(layouts / "all.tar").members[-1]
    cut.write_bytes(data[:last.offset + 10])
    common = ["--encoder", "pixel", "--device", "cpu", "--workers", "0", "--no-cache", "--quiet"]
    res = CliRunner().invoke(main, ["features", str(cut), "-o", str(layouts / "f.npz"), *common])
    assert res.exit_code == 2 and "cut.tar::s008.png: truncated shard" in res.output, res.output
    res = CliRunner().invoke(main, ["features", str(cut), "-o", str(layouts / "f.npz"), *common,
                                    "--skip-bad"])
    assert res.exit_code == 0, res.output
    out = layouts / "r.json"
    res = CliRunner().invoke(main, ["score", pattern, "--ref", str(layouts / "dir"), *common,
                                    "--metrics", "fd", "--out", str(out), "--per-sample",
                                    str(layouts / "per.csv")])
    assert res.exit_code == 0, res.output
    record = json.loads(out.read_text())
    assert record["metrics"]["fd"] == pytest.approx(0.0, abs=1e-3)  # the same images
    res = CliRunner().invoke(main, ["ref", "add", "shardref", pattern, "--ref-dir",
                                    str(layouts / "refs"), *common])
    assert res.exit_code == 0 and "9 x 3072 features" in res.output, res.output
    rows = list(csv.DictReader((layouts / "per.csv").open()))
    assert rows[0]["path"].endswith("part-000000.tar::s000.png")
    assert rows[0]["nn_path"].startswith("ant/")  # the reference folder's file
    assert np.array_equal(np.asarray(open_image(rows[0]["path"])),
                          resolve_source(pattern).load_rgb(0)[0])
