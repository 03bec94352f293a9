"""Catalog references: download through a local HTTP server (Range, drops, corruption),
verification, trust on first use, offline instructions, `ref list --available`, protocols.

The server runs on 127.0.0.1 and is reached through EVALKIT_REF_MIRROR, exactly as a lab
mirror would be; the catalog entries point at an unreachable host so that only the mirror
can serve them.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, write_images
from range_server import RangeServer

from evalkit.cli import main
from evalkit.errors import DownloadError
from evalkit.files.download import download
from evalkit.results.record import protocol_of
from evalkit.scoring import protocols

D = 48  # the tiny test encoder's feature dimension


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _stats(seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).random((200, D))
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A server holding an ADM-style batch, a stats .npz (published size + sha256) and an
    EDM2-style pickle; a catalog naming them; an empty reference store."""
    server = RangeServer()
    rng = np.random.default_rng(0)
    mu, sigma = _stats(1)
    batch = _npz(arr_0=rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
                 arr_1=np.arange(16) % 2, mu=mu, sigma=sigma)
    smu, ssigma = _stats(2)
    stats = _npz(mu=smu, sigma=ssigma)
    pmu, psigma = _stats(3)
    pkl = pickle.dumps({"num_images": 200, "fid": {"mu": pmu, "sigma": psigma}})
    server.files.update({"VIRTUAL_test16_labeled.npz": batch, "test_stats.npz": stats,
                         "test_refs.pkl": pkl})
    far = "http://unreachable.invalid/some/prefix/"
    catalog = {"schema": "evalkit.catalog/1", "entries": [
        {"name": "testbatch", "aliases": ["tb"], "kind": "images", "format": "adm-batch",
         "resolution": 16, "n": 16, "labels": True, "urls": [far + "VIRTUAL_test16_labeled.npz"],
         "stats": [{"encoder": TINY, "made_by": "test"}], "protocols": ["test-adm"]},
        {"name": "teststats", "kind": "statistics", "format": "npz-stats",
         "urls": [far + "test_stats.npz"], "size": len(stats),
         "sha256": hashlib.sha256(stats).hexdigest(), "stats": [{"encoder": TINY}]},
        {"name": "testpkl", "kind": "statistics", "format": "edm2-pkl",
         "urls": [far + "test_refs.pkl"], "stats": [{"key": "fid", "encoder": TINY}]},
    ]}
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    monkeypatch.setenv("EVALKIT_CATALOG", str(tmp_path / "catalog.json"))
    monkeypatch.setenv("EVALKIT_REF_DIR", str(tmp_path / "refs"))
    monkeypatch.setenv("EVALKIT_REF_MIRROR", server.url)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # reach 127.0.0.1 directly, whatever CI sets
    write_images(tmp_path / "samples", 12, size=(16, 16), seed=5)
    yield {"server": server, "tmp": tmp_path, "refs": tmp_path / "refs", "published": (mu, sigma),
           "batch": batch, "stats": stats}
    server.close()


def _leftovers(world) -> list[Path]:
    """Files left in the drop folder (its lock file aside)."""
    return [p for p in (world["refs"] / "_downloads").glob("*") if p.name != ".lock"]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _dead_mirror(monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("EVALKIT_REF_MIRROR", f"http://127.0.0.1:{port}/")


def test_pull_downloads_verifies_and_registers(world):
    res = _run("ref", "pull", "tb", "--quiet")
    assert res.exit_code == 0, res.output
    manifest = json.loads((world["refs"] / "testbatch" / "manifest.json").read_text())
    cat = manifest["catalog"]
    assert cat["sha256"] == hashlib.sha256(world["batch"]).hexdigest()
    assert cat["sha256_origin"] == "first-use" and cat["size"] == len(world["batch"])
    assert Path(manifest["source"]).read_bytes() == world["batch"]  # moved into the store
    assert [e["role"] for e in manifest["entries"]] == ["published_stats"]
    assert not _leftovers(world)  # no leftovers
    assert world["server"].requests == [("VIRTUAL_test16_labeled.npz", None)]  # mirrored name
    listing = _run("ref", "list")
    assert "first use (TOFU)" in listing.output and "published stats" in listing.output


def test_score_pulls_once_then_works_offline(world, monkeypatch):
    samples = world["tmp"] / "samples"
    first = _run("score", samples, "--ref", "tb", "--encoder", TINY, "--metrics", "fd,precision",
                 "--quiet")
    assert first.exit_code == 0, first.output
    assert len(world["server"].requests) == 1
    _dead_mirror(monkeypatch)  # offline from here on
    again = _run("score", samples, "--ref", "testbatch", "--encoder", TINY, "--metrics", "fd",
                 "--quiet")
    assert again.exit_code == 0, again.output
    assert len(world["server"].requests) == 1


def test_published_sha256_mismatch_rejected_nothing_registered(world):
    bad = bytearray(world["stats"])
    bad[-10] ^= 0xFF
    world["server"].files["test_stats.npz"] = bytes(bad)
    res = _run("ref", "pull", "teststats", "--quiet")
    assert res.exit_code == 2
    assert "sha256" in res.output and "expected" in res.output
    assert not (world["refs"] / "teststats").exists()
    assert not _leftovers(world)


def test_truncated_download_rejected_nothing_registered(world):
    world["server"].files["test_stats.npz"] = world["stats"][:-100]  # consistent but short
    res = _run("ref", "pull", "teststats", "--quiet")
    assert res.exit_code == 2 and "expected" in res.output and "bytes" in res.output
    assert not (world["refs"] / "teststats").exists()
    assert not _leftovers(world)


def test_published_hash_accepted(world):
    res = _run("ref", "pull", "teststats", "--quiet")
    assert res.exit_code == 0, res.output
    assert "matches the published" in res.output
    assert "published" in _run("ref", "list").output


def test_dropped_connection_resumed_with_range(world):
    world["server"].drop["VIRTUAL_test16_labeled.npz"] = 5000
    res = _run("ref", "pull", "testbatch", "--quiet")
    assert res.exit_code == 0, res.output
    assert world["server"].requests == [("VIRTUAL_test16_labeled.npz", None),
                                        ("VIRTUAL_test16_labeled.npz", "bytes=5000-")]
    manifest = json.loads((world["refs"] / "testbatch" / "manifest.json").read_text())
    assert manifest["catalog"]["sha256"] == hashlib.sha256(world["batch"]).hexdigest()


def test_partial_file_resumed_by_a_later_call(world, tmp_path):
    url = "http://unreachable.invalid/x/VIRTUAL_test16_labeled.npz"
    world["server"].drop["VIRTUAL_test16_labeled.npz"] = 3000
    dest = tmp_path / "dl" / "VIRTUAL_test16_labeled.npz"
    with pytest.raises(DownloadError, match="resume"):
        download([url], dest, quiet=True, retries=0)
    assert (dest.parent / (dest.name + ".part")).stat().st_size == 3000
    digest = download([url], dest, quiet=True, retries=0)
    assert digest == hashlib.sha256(world["batch"]).hexdigest()
    assert dest.read_bytes() == world["batch"]
    assert world["server"].requests[-1] == ("VIRTUAL_test16_labeled.npz", "bytes=3000-")


def test_offline_exit_2_with_instructions_then_placed_file(world, monkeypatch):
    _dead_mirror(monkeypatch)
    res = _run("score", world["tmp"] / "samples", "--ref", "tb", "--encoder", TINY, "--quiet")
    assert res.exit_code == 2
    drop = world["refs"] / "_downloads" / "VIRTUAL_test16_labeled.npz"
    assert "unreachable.invalid/some/prefix/VIRTUAL_test16_labeled.npz" in res.output
    assert str(drop) in res.output
    assert "evalkit ref add testbatch" in res.output
    assert "Traceback" not in res.output
    drop.parent.mkdir(parents=True, exist_ok=True)
    drop.write_bytes(world["batch"])  # what the message says to do
    ok = _run("score", world["tmp"] / "samples", "--ref", "tb", "--encoder", TINY,
              "--metrics", "fd", "--quiet")
    assert ok.exit_code == 0, ok.output
    assert (world["refs"] / "testbatch" / "VIRTUAL_test16_labeled.npz").is_file()


def test_ref_add_registers_a_catalog_file_offline(world, monkeypatch):
    _dead_mirror(monkeypatch)
    mine = world["tmp"] / "VIRTUAL_test16_labeled.npz"
    mine.write_bytes(world["batch"])
    res = _run("ref", "add", "testbatch", mine)
    assert res.exit_code == 0, res.output
    assert mine.read_bytes() == world["batch"]  # the user's file stays
    manifest = json.loads((world["refs"] / "testbatch" / "manifest.json").read_text())
    assert manifest["catalog"]["sha256_origin"] == "first-use"


def test_tofu_detects_a_changed_file(world):
    assert _run("ref", "pull", "testbatch", "--quiet").exit_code == 0
    stored = world["refs"] / "testbatch" / "VIRTUAL_test16_labeled.npz"
    data = bytearray(stored.read_bytes())
    data[200] ^= 0xFF  # flip a pixel byte: same size, new mtime
    stored.write_bytes(bytes(data))
    res = _run("score", world["tmp"] / "samples", "--ref", "testbatch", "--encoder", TINY,
               "--metrics", "fd", "--quiet")
    assert res.exit_code == 2 and "recorded at first download" in res.output


def test_edm2_pickle_statistics(world):
    res = _run("score", world["tmp"] / "samples", "--ref", "testpkl", "--encoder", TINY,
               "--metrics", "fd", "--quiet", "--out", world["tmp"] / "r.json")
    assert res.exit_code == 0, res.output
    rec = json.loads((world["tmp"] / "r.json").read_text())
    assert rec["reference"]["stats_only"] is True
    mu, sigma = _stats(3)
    feats = np.load(_features(world))["features"].astype(np.float64)
    from pytorch_fid.fid_score import calculate_frechet_distance

    want = calculate_frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), mu, sigma)
    assert rec["metrics"]["fd"] == pytest.approx(want, rel=1e-6, abs=1e-8)


def test_pickle_with_foreign_globals_is_refused(world):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    world["server"].files["test_refs.pkl"] = pickle.dumps({"fid": Evil()})
    res = _run("ref", "pull", "testpkl", "--quiet")
    assert res.exit_code == 2 and "not allowed" in res.output
    assert not (world["refs"] / "testpkl").exists()


def test_list_available(world):
    res = _run("ref", "list", "--available")
    assert res.exit_code == 0
    assert "testbatch" in res.output and "imagenet256" in res.output
    rows = {r["name"]: r for r in json.loads(_run("ref", "list", "--available", "--json").output)}
    assert rows["teststats"]["sha256"] and rows["teststats"]["size"] == len(world["stats"])
    assert rows["imagenet256"]["url"].endswith("/VIRTUAL_imagenet256_labeled.npz")
    assert "imagenet" in rows["imagenet256"]["aliases"]
    assert rows["testbatch"]["registered"] is False


def _features(world) -> Path:
    out = world["tmp"] / "feats.npz"
    res = _run("features", world["tmp"] / "samples", "-o", out, "--encoder", TINY, "--quiet")
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def test_protocol():
    proto = protocols.Protocol(
        name="test-adm", description="ADM-shaped protocol on the tiny encoder",
        encoders={TINY: {"resize": "clean", "metrics": ("fd", "is", "precision", "recall")}},
        n_samples=50, reference="testbatch",
        overrides={"precision": {"nearest_k": 3}, "recall": {"nearest_k": 3}},
        published_stats=True)
    protocols.register_protocol(proto)
    yield proto
    protocols.PROTOCOLS.pop("test-adm")


def test_protocol_run_fills_record(world, test_protocol):
    out = world["tmp"] / "rec.json"
    res = CliRunner().invoke(main, ["score", str(world["tmp"] / "samples"), "--protocol",
                                    "test-adm", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "EXPECTS 50 SAMPLES, GOT 12" in res.output  # loud warning (stderr)
    rec = json.loads(out.read_text())
    assert rec["protocol"]["name"] == "test-adm" and rec["protocol"]["complete"] is False
    assert rec["protocol"]["published_stats"]["metrics"] == ["fd", "sfid"]
    assert set(rec["metrics"]) == {"fd", "is", "is_std", "precision", "recall"}
    fake = np.load(_features(world))["features"].astype(np.float64)
    from pytorch_fid.fid_score import calculate_frechet_distance

    mu, sigma = world["published"]  # fd is against the statistics inside the batch
    want = calculate_frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), mu, sigma)
    assert rec["metrics"]["fd"] == pytest.approx(want, rel=1e-6, abs=1e-8)
    from prdc import compute_prdc

    store = world["refs"] / "testbatch"
    entry = next(e for e in json.loads((store / "manifest.json").read_text())["entries"]
                 if not e.get("stats_only"))
    real = np.load(store / entry["file"])["features"]
    want_pr = compute_prdc(real, fake.astype(np.float32), nearest_k=3)
    assert rec["metrics"]["precision"] == pytest.approx(want_pr["precision"], abs=1e-12)
    assert rec["metrics"]["recall"] == pytest.approx(want_pr["recall"], abs=1e-12)
    plain = json.loads(out.read_text())
    plain.pop("protocol")
    assert protocol_of(rec) != protocol_of(plain)  # leaderboard/check keep them apart


@pytest.mark.parametrize("extra, word", [(["--resize", "legacy"], "--resize clean"),
                                         (["--encoder", "pixel"], f"--encoder {TINY}"),
                                         (["--metrics", "kd"], "not part of it")])
def test_protocol_refuses_mismatching_options(world, test_protocol, extra, word):
    res = _run("score", world["tmp"] / "samples", "--protocol", "test-adm", "--quiet", *extra)
    assert res.exit_code == 2 and word in res.output
    assert world["server"].requests == []  # refused before any work


def test_adm_protocol_refuses_other_encoder_or_resize(world):
    for extra in (["--encoder", "dinov2"], ["--resize", "clean"]):
        res = _run("score", world["tmp"] / "samples", "--protocol", "adm", *extra)
        assert res.exit_code == 2 and "--protocol adm uses" in res.output


def test_adm_protocol_resolution():
    from evalkit.features.options import ExtractOptions

    r = protocols.resolve_protocol("adm", ExtractOptions())
    assert (r.options.encoder, r.options.resize, r.nsample, r.ref) == (
        "inception", "tf1", 50000, "imagenet256")
    assert r.metrics == ("fd", "sfid", "is", "precision", "recall")
    assert r.overrides["precision"]["nearest_k"] == 3
    d = protocols.resolve_protocol("dgm-eval", ExtractOptions(), ref="real/")
    assert d.options.encoder == "dinov2" and "ct" in d.not_run and "fd_inf" in d.metrics
    e = protocols.resolve_protocol("edm2", ExtractOptions(encoder="dinov2"), explicit={"encoder"})
    assert (e.options.arch, e.ref, e.metrics) == ("vitl14", "edm2-img512", ("fd",))


def test_folder_named_like_a_catalog_entry_is_a_folder(world, test_protocol, monkeypatch):
    """`--ref testbatch` with a folder of that name in the working directory scores against
    the folder's own features: no download, no published statistics."""
    monkeypatch.chdir(world["tmp"])
    write_images(world["tmp"] / "testbatch", 8, size=(16, 16), seed=9)
    out = world["tmp"] / "r.json"
    res = _run("score", "samples", "--protocol", "test-adm", "--ref", "testbatch", "--quiet",
               "--out", out)
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    assert "published_stats" not in rec["protocol"] and world["server"].requests == []
    assert rec["reference"]["n"] == 8


def test_score_without_ref_or_protocol_is_an_input_error(world):
    res = _run("score", world["tmp"] / "samples", "--encoder", TINY)
    assert res.exit_code == 2 and "--ref is required" in res.output


def test_python_api_protocol(world, test_protocol):
    import evalkit
    from evalkit.errors import InputError, ProtocolWarning

    with pytest.warns(ProtocolWarning, match="EXPECTS 50 SAMPLES, GOT 12"):
        res = evalkit.score(str(world["tmp"] / "samples"), protocol="test-adm", quiet=True)
    assert res.record["protocol"]["name"] == "test-adm"
    with pytest.raises(InputError, match="--resize clean"):
        evalkit.score(str(world["tmp"] / "samples"), protocol="test-adm", resize="legacy")


def test_tf_graph_statistics_serve_the_graphs_own_resize(world, monkeypatch):
    """Statistics made by the TF Inception graph (ADM batches, TTUR's fid_stats_*.npz) serve
    ``--resize tf1`` (the graph's in-graph ResizeBilinear, which evalkit reproduces exactly);
    EDM2's pickles serve ``stylegan3`` (StyleGAN's TorchScript detector); clean-fid's serve its
    modes. A TTUR file added offline is registered under the tf1 identity."""
    from evalkit.encoders import encoder_preprocess

    rows = {r["name"]: r for r in json.loads(_run("ref", "list", "--available", "--json").output)}
    want = {"imagenet256": "inception (tf1)", "lsun-horse256": "inception (tf1)",
            "ttur-cifar10-train": "inception (tf1)", "ttur-imagenet-valid": "inception (tf1)",
            "edm2-img512": "inception (stylegan3)", "edm2-img64": "inception (stylegan3)",
            "cleanfid-cifar10-train": "inception (clean)",
            "cleanfid-cifar10-train-legacy": "inception (legacy)"}
    for name, label in want.items():
        assert label in rows[name]["serves"], (name, rows[name]["serves"])
    ttur = [n for n in rows if n.startswith("ttur-")]
    assert len(ttur) == 6 and all(rows[n]["serves"] == "stats only: inception (tf1)" for n in ttur)

    _dead_mirror(monkeypatch)
    rng = np.random.default_rng(0)
    g = rng.standard_normal((2048, 8)).astype(np.float32)
    path = world["tmp"] / "fid_stats_cifar10_train.npz"
    np.savez(path, mu=rng.standard_normal(2048).astype(np.float32), sigma=g @ g.T)
    res = _run("ref", "add", "ttur-cifar10-train", path)
    assert res.exit_code == 0, res.output
    manifest = json.loads((world["refs"] / "ttur-cifar10-train" / "manifest.json").read_text())
    [entry] = manifest["entries"]
    assert entry["preprocess"] == encoder_preprocess("inception", None, "tf1").describe()


def test_ref_list_available_fits_an_80_column_terminal(tmp_path):
    """`ref list --available` wraps to the terminal like `encoders`: with COLUMNS=80 no line is
    longer than 80, and each catalog entry still starts its own block."""
    from click.testing import CliRunner

    from evalkit.cli import main
    from evalkit.refs.pull import available

    res = CliRunner().invoke(main, ["ref", "list", "--available", "--ref-dir", str(tmp_path)],
                             env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert [r["name"] for r in available()] == [line for line in lines if line in
                                                 {r["name"] for r in available()}]
