"""Multi-process extraction on torch.distributed (gloo, CPU) and the sharded feature cache.

* sharding: every image in exactly one shard, shards independent of the number of ranks,
  ranks balanced within one shard;
* one process: sharded extraction is bit-identical to a plain one; an interrupted run
  (the ``EVALKIT_TEST_FAIL_AFTER_SHARDS`` hook) resumes from its shard files;
* two processes under ``python -m torch.distributed.run``: `evalkit score` with a small
  random-weight conv encoder gives the single-process record, and `evalkit features` with the
  pixel encoder, killed after some shards and rerun, extracts only the missing shards and
  gives the single-process features exactly.

Run as a script (``torchrun ... tests/test_distributed.py score ...``) this file registers the
random-weight encoder and runs the evalkit CLI: subprocesses do not see pytest's encoders.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.encoders import ENCODERS, Encoder, EncoderSpec, Preprocess, register_encoder

RAND = "rand_conv_test"


def rand_preprocess(arch: str = "c16", resize: str = "clean") -> Preprocess:
    return Preprocess(size=24)


class RandConv(Encoder):
    """Two seeded random conv layers + mean pooling: 16-d features, 10 logits."""

    name = RAND
    arch = "c16"
    weights_sha256 = None

    def __init__(self):
        super().__init__()
        self.preprocess = rand_preprocess()
        self.outputs = {"features": 16, "logits": 10}
        gen = torch.Generator().manual_seed(1234)
        self.c1 = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.c2 = torch.nn.Conv2d(8, 16, 3, stride=2)
        self.fc = torch.nn.Linear(16, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        self.eval()

    def forward(self, images):
        x = images.float() / 127.5 - 1.0
        x = torch.relu(self.c1(x))
        feats = torch.relu(self.c2(x)).mean(dim=(2, 3))
        return {"features": feats, "logits": self.fc(feats)}


def _build(arch=None, weights=None, resize="clean", random_init=False, **_):
    return RandConv()


def register_rand() -> None:
    """Register RAND (only when a test needs it, so other files' encoder lists stay as is)."""
    if RAND not in ENCODERS:
        register_encoder(EncoderSpec(
            name=RAND, factory=_build, description="test-only: seeded random conv net",
            archs=("c16",), default_arch="c16",
            outputs={"c16": {"features": 16, "logits": 10}}, weights={"c16": None},
            input_size={"c16": 24}), preprocess=rand_preprocess)


if __name__ == "__main__":  # a torchrun worker: the evalkit CLI with RAND registered
    from evalkit.cli import main as _cli_main

    register_rand()
    _cli_main(args=sys.argv[1:], prog_name="evalkit")
    sys.exit(0)

from click.testing import CliRunner  # noqa: E402
from conftest import TINY, write_images  # noqa: E402

import evalkit.features.loader as pipeline  # noqa: E402
from evalkit.cli import main  # noqa: E402
from evalkit.errors import CacheWarning, InputError  # noqa: E402
from evalkit.features import distributed as dist  # noqa: E402
from evalkit.features.cache import FeatureCache  # noqa: E402
from evalkit.features.extract import assemble, extract  # noqa: E402
from evalkit.features.featureset import load_feature_file  # noqa: E402
from evalkit.features.options import ExtractOptions  # noqa: E402
from evalkit.images.sources import resolve_source  # noqa: E402

HERE = Path(__file__).resolve()


# -- sharding ------------------------------------------------------------------------------
@pytest.mark.parametrize("n,size", [(1, 4), (12, 5), (30, 4), (1000, 64), (4096, 64), (7, 64)])
def test_shards_cover_every_index_once_and_ranks_balance(n, size):
    shards = dist.shard_ranges(n, size)
    assert [s.index for s in shards] == list(range(len(shards)))
    assert all(s.count == len(shards) for s in shards)
    idx = np.concatenate([np.arange(s.start, s.stop) for s in shards])
    np.testing.assert_array_equal(idx, np.arange(n))  # each exactly once, in order
    sizes = [s.stop - s.start for s in shards]
    assert all(x == size for x in sizes[:-1]) and 0 < sizes[-1] <= size
    for world in (1, 2, 3, 8, 64):
        per_rank = [dist.rank_shards(shards, r, world) for r in range(world)]
        got = sorted(s.index for p in per_rank for s in p)
        assert got == list(range(len(shards)))  # a partition of the shards
        loads = [sum(s.stop - s.start for s in p) for p in per_rank]
        assert max(loads) - min(loads) <= size  # balanced within one shard
        assert all(dist.owner_of(s.index, world) == r for r, p in enumerate(per_rank) for s in p)


def test_shard_size_depends_on_n_only(monkeypatch):
    monkeypatch.delenv(dist.SHARD_SIZE_ENV, raising=False)
    assert dist.shard_size(12) == 64 and dist.shard_size(1000) == 64
    assert dist.shard_size(50_000) == 832 and dist.shard_size(1_281_167) == 2048
    assert all(dist.shard_size(n) % 64 == 0 for n in (1, 5000, 99_999))
    # rank count never enters: the same boundaries whatever WORLD_SIZE says
    a = dist.shard_ranges(50_000)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "3")
    assert dist.shard_ranges(50_000) == a and dist.rank() == 3 and not dist.is_main()
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "5")
    assert dist.shard_size(50_000) == 5
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "zero")
    with pytest.raises(InputError, match=dist.SHARD_SIZE_ENV):
        dist.shard_size(10)


def test_launch_env_and_rank_device(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert dist.launch_env() == dist.LaunchEnv(0, 1, 0) and dist.is_main()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="WORLD_SIZE"):
        dist.launch_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(InputError, match="RANK"):
        dist.launch_env()
    env = dist.LaunchEnv(1, 2, 1)
    assert dist.rank_device("cpu", env) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert dist.rank_device("auto", env) == torch.device("cpu")
        with pytest.raises(InputError, match="CUDA"):
            dist.rank_device("cuda", env)
    else:
        assert dist.rank_device("cuda", env).index == 1 % torch.cuda.device_count()


# -- one process: sharded == plain, resume -------------------------------------------------
@pytest.fixture
def twelve(tmp_path):
    write_images(tmp_path / "imgs", 12, seed=5)
    return tmp_path / "imgs"


def _opts(tmp_path, **kw):
    base = dict(encoder=TINY, batch_size=4, device="cpu", workers=0, quiet=True,
                cache_dir=str(tmp_path / "cache"))
    base.update(kw)
    return ExtractOptions(**base)


def test_sharded_cached_extraction_is_bit_identical_to_plain(twelve, tmp_path, monkeypatch):
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "5")  # batches of 4 straddle shards of 5
    plain = pipeline.load_features(str(twelve), _opts(tmp_path, use_cache=False))
    sharded = pipeline.load_features(str(twelve), _opts(tmp_path))
    assert sharded.meta["shards"] == {"count": 3, "size": 5, "extracted": 3, "reused": 0,
                                      "processes": 1}
    for key in plain.arrays:
        np.testing.assert_array_equal(sharded.arrays[key], plain.arrays[key])
    assert sharded.files == plain.files
    assert sharded.meta["source"]["fingerprint"] == plain.meta["source"]["fingerprint"]
    cache = FeatureCache(tmp_path / "cache")
    assert not list((tmp_path / "cache" / "features").glob("*.shard-*"))  # assembled, removed
    assert len(list((tmp_path / "cache" / "features").glob("*.npz"))) == 1
    hit = pipeline.load_features(str(twelve), _opts(tmp_path))
    assert hit.meta["cache_hit"] and cache.root == tmp_path / "cache"
    np.testing.assert_array_equal(hit.arrays["features"], plain.arrays["features"])


def test_shards_in_any_order_assemble_to_the_plain_result(twelve):
    from conftest import TinyEncoder

    src = resolve_source(twelve)
    plain = extract(src, TinyEncoder(), batch_size=3, device="cpu", quiet=True)
    shards = dist.shard_ranges(len(src), 5)
    parts = []
    for group in ([shards[2]], [shards[0], shards[1]]):  # two passes, out of order
        parts += extract(src, TinyEncoder(), batch_size=2, device="cpu", quiet=True,
                         shards=group)
    fs = assemble(src, parts)
    np.testing.assert_allclose(fs.arrays["features"], plain.arrays["features"], rtol=1e-6)
    assert fs.meta["content_fingerprint"] == plain.meta["content_fingerprint"]
    assert fs.files == plain.files and fs.meta["kept"] is None
    with pytest.raises(InputError, match="do not cover"):
        assemble(src, parts[1:])


def test_interrupted_run_resumes_from_its_shards(twelve, tmp_path, monkeypatch):
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "3")  # 4 shards
    monkeypatch.setenv(dist.FAIL_AFTER_ENV, "2")
    with pytest.raises(RuntimeError, match="test hook"):
        pipeline.load_features(str(twelve), _opts(tmp_path))
    folder = tmp_path / "cache" / "features"
    assert sorted(p.name.split(".", 1)[1] for p in folder.glob("*.shard-*")) == [
        "shard-00000-of-00004.npz", "shard-00001-of-00004.npz"]
    monkeypatch.delenv(dist.FAIL_AFTER_ENV)
    calls = []
    real = pipeline.extract

    def spy(src, enc, **kw):
        calls.append([(s.start, s.stop) for s in kw.get("shards") or []])
        return real(src, enc, **kw)

    monkeypatch.setattr(pipeline, "extract", spy)
    fs = pipeline.load_features(str(twelve), _opts(tmp_path))
    assert calls == [[(6, 9), (9, 12)]]  # only the missing shards
    assert fs.meta["shards"]["extracted"] == 2 and fs.meta["shards"]["reused"] == 2
    assert not list(folder.glob("*.shard-*"))
    whole = pipeline.load_features(str(twelve), _opts(tmp_path, use_cache=False))
    # the resumed pass batches other images together: equal up to float reduction order
    np.testing.assert_allclose(fs.arrays["features"], whole.arrays["features"], rtol=1e-6)
    np.testing.assert_allclose(fs.arrays["logits"], whole.arrays["logits"], rtol=1e-5)
    assert fs.meta["source"]["fingerprint"] == whole.meta["source"]["fingerprint"]


def test_corrupt_shard_is_discarded_and_extracted_again(twelve, tmp_path, monkeypatch):
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "6")
    monkeypatch.setenv(dist.FAIL_AFTER_ENV, "1")
    with pytest.raises(RuntimeError):
        pipeline.load_features(str(twelve), _opts(tmp_path))
    monkeypatch.delenv(dist.FAIL_AFTER_ENV)
    (shard,) = (tmp_path / "cache" / "features").glob("*.shard-*")
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.warns(CacheWarning, match="corrupt"):
        fs = pipeline.load_features(str(twelve), _opts(tmp_path))
    assert fs.meta["shards"]["extracted"] == 2 and fs.meta["shards"]["reused"] == 0
    whole = pipeline.load_features(str(twelve), _opts(tmp_path, use_cache=False))
    np.testing.assert_array_equal(fs.arrays["features"], whole.arrays["features"])


def test_skipped_images_survive_sharding(twelve, tmp_path, monkeypatch):
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "4")
    (twelve / "img006.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning):
        plain = pipeline.load_features(str(twelve), _opts(tmp_path, use_cache=False,
                                                          skip_bad=True))
        sharded = pipeline.load_features(str(twelve), _opts(tmp_path, skip_bad=True))
    assert sharded.n == plain.n == 11 and sharded.meta["n_skipped"] == 1
    assert sharded.meta["skipped"] == plain.meta["skipped"] == ["img006.png"]
    np.testing.assert_array_equal(sharded.arrays["features"], plain.arrays["features"])
    assert sharded.files == plain.files


# -- two processes under torch.distributed.run ------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, env_extra, cwd, entry=("-m", "evalkit")):
    env = dict(os.environ, EVALKIT_SHARD_SIZE="4", OMP_NUM_THREADS="1", **env_extra)
    if sys.platform.startswith("linux"):  # gloo on the loopback, whatever the hostname says
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", *entry, *[str(a) for a in args]]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture
def two_sets(tmp_path):
    write_images(tmp_path / "samples", 30, size=(28, 26), seed=11)
    write_images(tmp_path / "ref", 26, size=(28, 26), seed=12)
    return tmp_path


SCORE_ARGS = ("--encoder", RAND, "--device", "cpu", "--workers", "0", "--batch-size", "3",
              "--metrics", "fd,kd,is,precision,recall", "--seed", "3")


@pytest.mark.parametrize("extra", [(), ("--nsample", "17")], ids=["all", "nsample"])
def test_two_process_score_equals_one_process(two_sets, monkeypatch, extra):
    """--no-cache: the shards travel to rank 0 through torch.distributed (no shared folder).
    With --nsample every rank draws the same rows before reading any image."""
    register_rand()
    tmp = two_sets
    res = _torchrun(["score", tmp / "samples", "--ref", tmp / "ref", *SCORE_ARGS, *extra,
                     "--out", tmp / "r2.json", "--no-cache"], {}, tmp, entry=(str(HERE),))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("precision") == 1, res.stdout  # only rank 0 prints the table
    assert "Traceback" not in res.stderr and "error" not in res.stderr.lower(), res.stderr
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "4")
    one = CliRunner().invoke(main, [str(a) for a in (
        "score", tmp / "samples", "--ref", tmp / "ref", *SCORE_ARGS, *extra, "--out",
        tmp / "r1.json", "--no-cache", "--quiet")], catch_exceptions=False)
    assert one.exit_code == 0, one.output
    r1, r2 = (json.loads((tmp / f).read_text()) for f in ("r1.json", "r2.json"))
    assert set(r1["metrics"]) == set(r2["metrics"]) == {"fd", "kd", "kd_std", "is", "is_std",
                                                        "precision", "recall"}
    m1, m2 = r1["metrics"], r2["metrics"]
    for k, v in m1.items():  # kd's subsets and is's splits depend on row order
        assert m2[k] == pytest.approx(v, rel=1e-5, abs=_round_off_bound(k, m1)), k
    # same images in the same order (content fingerprints hash every image's bytes in order)
    for part in ("samples", "reference", "encoder", "config"):
        assert r2[part] == r1[part], part
    assert (r1["samples"]["n"], r1["reference"]["n"]) == ((17, 17) if extra else (30, 26))
    assert r1["samples"].get("sampled_from") == (30 if extra else None)


def _round_off_bound(key: str, metrics: dict) -> float:
    """How far two runs on the same images may differ by float32 round-off alone.

    The two runs extract with different thread counts, so features differ in the last bits.
    kd is a difference of kernel means of order one (kd itself can sit near zero: −2e-4 here);
    is a mean of exponentials. Each has its own spread over subsets/splits (``*_std``): a
    real bug (another subset draw, a row lost) moves the value by about one spread, round-off
    by many orders less, so 1e-4 of the spread separates the two whatever the value's size.
    precision and recall are shares of counts; fd is far from zero here (rel covers it).
    """
    std = metrics.get(f"{key}_std")
    return 1e-4 * std if std else 1e-12


def test_killed_two_process_run_resumes_missing_shards_only(two_sets, monkeypatch):
    tmp = two_sets
    args = ["features", tmp / "samples", "-o", tmp / "f2.npz", "--encoder", "pixel",
            "--device", "cpu", "--workers", "0", "--batch-size", "3",
            "--cache-dir", tmp / "c2"]
    dead = _torchrun(args, {dist.FAIL_AFTER_ENV: "2"}, tmp)
    assert dead.returncode != 0 and "test hook" in dead.stdout + dead.stderr
    written = list((tmp / "c2" / "features").glob("*.shard-*-of-00008.npz"))
    assert 2 <= len(written) <= 4 and not (tmp / "f2.npz").exists()
    res = _torchrun(args, {}, tmp)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr.count("f2.npz: 30 images") <= 1  # rank 1 prints nothing
    two = load_feature_file(tmp / "f2.npz")
    assert two.meta["shards"] == {"count": 8, "size": 4, "extracted": 8 - len(written),
                                  "reused": len(written), "processes": 2}
    assert not list((tmp / "c2" / "features").glob("*.shard-*"))
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "4")
    one = pipeline.load_features(str(tmp / "samples"), ExtractOptions(
        encoder="pixel", device="cpu", workers=0, quiet=True, use_cache=False))
    np.testing.assert_array_equal(two.arrays["features"], one.arrays["features"])
    assert two.meta["source"]["fingerprint"] == one.meta["source"]["fingerprint"]
    assert two.meta["files"] == one.files


def test_an_error_on_one_rank_stops_every_rank_with_one_message(two_sets):
    tmp = two_sets
    (tmp / "samples" / "img029.png").write_bytes(b"broken")  # in the last shard: rank 1's
    res = _torchrun(["features", tmp / "samples", "-o", tmp / "f.npz", "--encoder", "pixel",
                     "--device", "cpu", "--workers", "0", "--no-cache"], {}, tmp)
    assert res.returncode != 0
    errors = re.findall(r"evalkit: error.*", res.stderr)
    assert len(errors) == 1 and "img029.png" in errors[0], res.stderr
    assert not (tmp / "f.npz").exists()
