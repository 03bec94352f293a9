"""The reference store and its downloads under attack: catalog entries and names that point
outside the store, folders that are not references, servers that lie (endless or trickling
bodies, Range answers that do not fit, totals that disagree, changed content), files whose
headers lie about their size. Every server runs on 127.0.0.1, serves a bounded number of
bytes and stops on its own after a few seconds.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY
from range_server import RangeServer

from evalkit.cli import main
from evalkit.errors import CatalogWarning, DownloadError, InputError, VerificationError
from evalkit.files import safezip
from evalkit.files.download import fetch
from evalkit.refs import catalog as catalog_mod
from evalkit.refs.statsfiles import load_edm2_stats, load_stats

D = 48  # the tiny test encoder's feature dimension
FAR = "http://unreachable.invalid/pub/"


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _stats(seed: int):
    x = np.random.default_rng(seed).random((200, D))
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.fixture
def world(tmp_path, monkeypatch):
    server = RangeServer()
    mu, sigma = _stats(1)
    batch = _npz(arr_0=np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
                 mu=mu, sigma=sigma)
    stats = _npz(mu=mu, sigma=sigma)
    server.files.update({"VIRTUAL_t16.npz": batch, "s.npz": stats, "r.pkl": pickle.dumps(
        {"fid": {"mu": mu, "sigma": sigma}})})
    entries = [
        {"name": "tb", "kind": "images", "format": "adm-batch", "resolution": 16, "n": 16,
         "urls": [FAR + "VIRTUAL_t16.npz"], "stats": [{"encoder": TINY}]},
        {"name": "ts", "kind": "statistics", "format": "npz-stats", "urls": [FAR + "s.npz"],
         "size": len(stats), "sha256": hashlib.sha256(stats).hexdigest(),
         "stats": [{"encoder": TINY}]},
        {"name": "tp", "kind": "statistics", "format": "edm2-pkl", "urls": [FAR + "r.pkl"],
         "stats": [{"key": "fid", "encoder": TINY}]},
    ]
    _catalog(tmp_path, monkeypatch, entries)
    monkeypatch.setenv("EVALKIT_REF_DIR", str(tmp_path / "store" / "refs"))
    monkeypatch.setenv("EVALKIT_REF_MIRROR", server.url)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    yield {"server": server, "tmp": tmp_path, "refs": tmp_path / "store" / "refs",
           "batch": batch, "stats": stats, "entries": entries}
    server.close()


def _catalog(tmp_path, monkeypatch, entries):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"schema": "evalkit.catalog/1", "entries": entries}))
    monkeypatch.setenv("EVALKIT_CATALOG", str(path))
    return path


def _run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in res.output
    return res


def _leftovers(world) -> list[str]:
    drop = world["refs"] / "_downloads"
    return sorted(p.name for p in drop.glob("*") if p.name != ".lock") if drop.exists() else []


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["./../victim", "../../x", "a/b", "..", ".hidden"])
def test_catalog_entry_names_never_reach_outside_the_store(world, monkeypatch, name):
    victim = world["tmp"] / "store" / "victim"
    victim.mkdir(parents=True)
    (victim / "data.txt").write_text("keep")
    entry = dict(world["entries"][0], name=name)
    path = _catalog(world["tmp"], monkeypatch, [entry])
    before = _tree(world["tmp"] / "store")
    res = _run("ref", "pull", name, "--quiet")
    assert res.exit_code == 2 and "invalid" in res.output and str(path) in res.output
    assert _tree(world["tmp"] / "store") == before and world["server"].requests == []


def test_aliases_are_validated(world, monkeypatch):
    entry = dict(world["entries"][0], aliases=["../victim"])
    _catalog(world["tmp"], monkeypatch, [entry])
    res = _run("ref", "list", "--available")
    assert res.exit_code == 2 and "invalid alias" in res.output


def test_entry_point_plugin_names_and_failures(world, monkeypatch):
    class EP:
        def __init__(self, payload):
            self.name, self.value, self.payload = "lab", "lab:entries", payload

        def load(self):
            return self.payload

    def boom():
        raise RuntimeError("plugin broke")

    for payload, word in ([dict(world["entries"][0], name="./../victim")], "invalid"), (boom, "plugin broke"):
        monkeypatch.setattr(catalog_mod, "entry_points", lambda group, p=payload: [EP(p)])
        res = _run("ref", "pull", "./../victim", "--quiet")
        assert res.exit_code == 2 and word in res.output and "entry point lab" in res.output
    assert not (world["tmp"] / "store" / "victim").exists()


@pytest.mark.parametrize("name", ["../x", "a/b", ".."])
def test_ref_add_validates_the_name(world, name):
    src = world["tmp"] / "s.npz"
    src.write_bytes(world["stats"])
    res = _run("ref", "add", name, src, "--encoder", TINY)
    assert res.exit_code == 2 and "invalid reference name" in res.output
    assert not (world["tmp"] / "store" / "x").exists() and not (world["tmp"] / "x").exists()


@pytest.mark.parametrize("force", [False, True])
def test_pull_never_deletes_a_folder_that_is_not_a_reference(world, force):
    mine = world["refs"] / "tb"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    res = _run("ref", "pull", "tb", "--quiet", *(["--force"] if force else []))
    assert res.exit_code == 2 and "not an evalkit reference" in res.output
    assert (mine / "notes.txt").read_text() == "mine" and _tree(mine) == ["notes.txt"]


def test_ref_rm_of_a_folder_that_is_not_a_reference(world):
    (world["refs"] / "tb").mkdir(parents=True)
    (world["refs"] / "tb" / "notes.txt").write_text("mine")
    res = _run("ref", "rm", "tb")
    assert res.exit_code == 2 and (world["refs"] / "tb" / "notes.txt").exists()


# ----------------------------------------------------------------------------- rejected files


@pytest.mark.parametrize("served", ["garbage", "short"])
def test_a_rejected_download_leaves_nothing_and_the_next_pull_asks_again(world, served):
    srv = world["server"]
    srv.files["VIRTUAL_t16.npz"] = (b"<html>not found</html>" if served == "garbage"
                                    else world["batch"][:-100])  # consistent but short
    res = _run("ref", "pull", "tb", "--quiet")
    assert res.exit_code == 2 and srv.url + "VIRTUAL_t16.npz" in res.output
    assert _leftovers(world) == [] and not (world["refs"] / "tb").exists()
    srv.files["VIRTUAL_t16.npz"] = world["batch"]
    ok = _run("ref", "pull", "tb", "--quiet")
    assert ok.exit_code == 0, ok.output
    assert len(srv.requests) == 2 and _leftovers(world) == []


def test_a_bad_file_placed_by_hand_is_named_and_force_fetches_again(world):
    placed = world["refs"] / "_downloads" / "VIRTUAL_t16.npz"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"garbage")
    res = _run("ref", "pull", "tb", "--quiet")
    assert res.exit_code == 2 and str(placed) in res.output and "--force" in res.output
    assert world["server"].requests == []
    ok = _run("ref", "pull", "tb", "--quiet", "--force")
    assert ok.exit_code == 0, ok.output
    assert len(world["server"].requests) == 1
    manifest = json.loads((world["refs"] / "tb" / "manifest.json").read_text())
    assert manifest["catalog"]["sha256"] == hashlib.sha256(world["batch"]).hexdigest()


def test_batch_without_statistics_names_the_missing_keys(world):
    world["server"].files["VIRTUAL_t16.npz"] = _npz(arr_0=np.zeros((2, 16, 16, 3), np.uint8))
    res = _run("ref", "pull", "tb", "--quiet")
    assert res.exit_code == 2 and "'mu'/'sigma'" in res.output and "arr_0" in res.output
    assert _leftovers(world) == []


# ----------------------------------------------------------------------------- lying servers


def test_endless_body_stops_at_the_limit_and_leaves_nothing(world, tmp_path):
    world["server"].mode["VIRTUAL_t16.npz"] = "endless"
    dest = tmp_path / "dl" / "VIRTUAL_t16.npz"
    with pytest.raises(VerificationError, match="more than") as exc:
        fetch([FAR + "VIRTUAL_t16.npz"], dest, limit=100_000, quiet=True)
    assert world["server"].url in str(exc.value)
    assert list(dest.parent.iterdir()) == []


def test_endless_body_with_a_stated_size_stops_there(world, tmp_path):
    world["server"].mode["VIRTUAL_t16.npz"] = "endless"
    dest = tmp_path / "dl" / "VIRTUAL_t16.npz"
    with pytest.raises(VerificationError, match="more than"):
        fetch([FAR + "VIRTUAL_t16.npz"], dest, size=5000, quiet=True)
    assert list(dest.parent.iterdir()) == []


def test_size_limit_comes_from_the_entry():
    entry = catalog_mod._entry({"name": "x", "kind": "images", "format": "adm-batch",
                                "n": 10, "resolution": 8, "urls": ["https://h/x.npz"],
                                "stats": [{"encoder": "inception", "dim": 4}]}, "t")
    assert entry.size_limit() == 2 * (10 * 8 * 8 * 3 + (4 + 16) * 8) + (64 << 20)
    assert catalog_mod._entry(dict(entry.__dict__, urls=["https://h/x.npz"], size=123,
                                   stats=[], aliases=[], protocols=[]), "t").size_limit() == 123


def test_trickling_server_is_stopped(world, tmp_path):
    world["server"].mode["s.npz"] = "trickle"
    dest = tmp_path / "dl" / "s.npz"
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="slower than"):
        fetch([FAR + "s.npz"], dest, quiet=True, low_speed=(1000, 0.5))
    assert time.monotonic() - t0 < 3.0  # stopped by the limit, not by the server giving up


@pytest.mark.parametrize("mode", ["range-from-zero", "range-earlier", "range-whole-body",
                                  "ignore-range"])
def test_resume_only_continues_at_the_offset_asked(world, mode):
    srv = world["server"]
    srv.mode["VIRTUAL_t16.npz"] = mode
    srv.drop["VIRTUAL_t16.npz"] = 5000
    res = _run("ref", "pull", "tb", "--quiet")
    assert res.exit_code == 0, res.output
    assert srv.requests[1] == ("VIRTUAL_t16.npz", "bytes=5000-")
    stored = world["refs"] / "tb" / "VIRTUAL_t16.npz"
    assert stored.read_bytes() == world["batch"]  # never a concatenation
    manifest = json.loads((world["refs"] / "tb" / "manifest.json").read_text())
    assert manifest["catalog"]["sha256"] == hashlib.sha256(world["batch"]).hexdigest()


def test_declared_total_that_disagrees_is_never_registered(world):
    srv = world["server"]
    srv.mode["VIRTUAL_t16.npz"] = "range-total"
    srv.drop["VIRTUAL_t16.npz"] = 5000
    res = _run("ref", "pull", "tb", "--quiet")
    assert res.exit_code == 2 and srv.url in res.output
    assert not (world["refs"] / "tb").exists() and _leftovers(world) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://h/x.npz", "http://h/a/..",
                                 "http://h/", "//h/x.npz"])
def test_only_http_urls_of_a_file(world, monkeypatch, url):
    entry = dict(world["entries"][1], name="evil", urls=[url])
    _catalog(world["tmp"], monkeypatch, [entry])
    res = _run("ref", "pull", "evil", "--quiet")
    assert res.exit_code == 2 and "invalid" not in res.output and repr(url)[:20] in res.output
    assert _leftovers(world) == []


def test_mirror_must_be_http(world, monkeypatch):
    monkeypatch.setenv("EVALKIT_REF_MIRROR", "file:///etc/")
    res = _run("ref", "pull", "tb", "--quiet")
    assert res.exit_code == 2 and "EVALKIT_REF_MIRROR" in res.output and _leftovers(world) == []


# ----------------------------------------------------------------------------- trust


def test_changed_content_needs_an_explicit_retrust(world):
    assert _run("ref", "pull", "tb", "--quiet").exit_code == 0
    first = hashlib.sha256(world["batch"]).hexdigest()
    mu, sigma = _stats(7)
    other = _npz(arr_0=np.zeros((16, 16, 16, 3), np.uint8), mu=mu, sigma=sigma)
    world["server"].files["VIRTUAL_t16.npz"] = other
    res = _run("ref", "pull", "tb", "--quiet", "--force")
    assert res.exit_code == 2 and "changed" in res.output and "--trust-new" in res.output
    manifest = json.loads((world["refs"] / "tb" / "manifest.json").read_text())
    assert manifest["catalog"]["sha256"] == first and _leftovers(world) == []
    ok = _run("ref", "pull", "tb", "--quiet", "--force", "--trust-new")
    assert ok.exit_code == 0, ok.output
    manifest = json.loads((world["refs"] / "tb" / "manifest.json").read_text())
    assert manifest["catalog"]["sha256"] == hashlib.sha256(other).hexdigest()


def test_overriding_a_builtin_entry_warns_and_the_manifest_says_where_bytes_came_from(
        world, monkeypatch):
    builtin = catalog_mod._builtin()[0]
    entry = dict(world["entries"][0], name=builtin.name)
    path = _catalog(world["tmp"], monkeypatch, [entry])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        catalog_mod.load_catalog()
    assert any(issubclass(w.category, CatalogWarning) and builtin.name in str(w.message)
               for w in seen)
    res = _run("ref", "pull", builtin.name, "--quiet")
    assert res.exit_code == 0, res.output
    cat = json.loads((world["refs"] / builtin.name / "manifest.json").read_text())["catalog"]
    assert cat["fetched_from"] == world["server"].url + "VIRTUAL_t16.npz"
    assert cat["entry_origin"] == str(path)


# ----------------------------------------------------------------------------- lying inputs


@pytest.mark.parametrize("field, value", [("stats", [1]), ("size", "big"), ("n", -3),
                                          ("aliases", "tb2"), ("urls", "http://h/x.npz"),
                                          ("description", {"a": 1}), ("size", True)])
def test_catalog_fields_of_the_wrong_type(world, monkeypatch, field, value):
    path = _catalog(world["tmp"], monkeypatch, [dict(world["entries"][0], **{field: value})])
    res = _run("ref", "list", "--available")
    assert res.exit_code == 2 and str(path) in res.output and repr(field) in res.output


def test_catalog_nested_too_deep(world, monkeypatch):
    path = world["tmp"] / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    monkeypatch.setenv("EVALKIT_CATALOG", str(path))
    res = _run("ref", "list", "--available")
    assert res.exit_code == 2 and str(path) in res.output


@pytest.mark.parametrize("mu", ["abc", np.array([{"a": 1}, None], dtype=object),
                                np.array(["1", "2"]), [[1, 2]]])
def test_edm2_values_that_are_not_numeric_arrays(tmp_path, mu):
    path = tmp_path / "r.pkl"
    path.write_bytes(pickle.dumps({"fid": {"mu": mu, "sigma": np.eye(2)}}))
    with pytest.raises(InputError, match="not a numeric array") as exc:
        load_edm2_stats(path, ["fid"])
    assert str(path) in str(exc.value)


def _lying_npz(path: Path, claimed_shape) -> None:
    """An .npz whose member ``mu.npy`` has a header claiming ``claimed_shape`` float64 values
    but holds only 16 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": claimed_shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mu.npy", buf.getvalue() + b"\0" * 16)
        zf.writestr("sigma.npy", _npy(np.eye(2)))


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_npy_header_claiming_a_trillion_values(tmp_path, world):
    path = tmp_path / "s.npz"
    _lying_npz(path, (10 ** 12,))
    with pytest.raises(InputError, match="header claims"):
        load_stats(path)
    res = _run("ref", "add", "lie", path, "--encoder", TINY)
    assert res.exit_code == 2 and str(path) in res.output


def test_stats_member_bomb_refused_before_inflating(tmp_path, monkeypatch):
    path = tmp_path / "s.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mu.npy", _npy(np.zeros(3 << 20)))  # 24 MiB of zeros: ratio ~1000:1
        zf.writestr("sigma.npy", _npy(np.eye(2)))
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or 1 / 0)
    with pytest.raises(InputError, match="compression ratio"):
        load_stats(path)
    assert opened == []


def test_zip_declared_size_guard_alone(tmp_path, monkeypatch):
    """A stored (uncompressed, ratio 1) member over the limit: only the declared-size check
    stops it, before a byte is read."""
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.png", b"x" * 5000)
    with zipfile.ZipFile(path) as zf:
        monkeypatch.setattr(zf, "open", lambda *a, **k: pytest.fail("member was opened"))
        with pytest.raises(InputError, match=r"refused, member expands to 4\.9 KiB"):
            safezip.read_member(zf, "a.png", "z.zip::a.png", limit=1000)


def test_inside_guard_follows_symlinks(tmp_path):
    """A link inside the folder that points outside it is outside: the guard resolves links."""
    from evalkit.files.guards import inside

    base, outside = tmp_path / "rec", tmp_path / "secret"
    base.mkdir()
    outside.mkdir()
    (outside / "x.png").write_bytes(b"x")
    (base / "link").symlink_to(outside)
    (base / "ok.png").write_bytes(b"y")
    assert inside(base, "ok.png", "record") == (base / "ok.png").resolve()
    for stored in ("link/x.png", "link", str(outside / "x.png"), "../secret/x.png"):
        with pytest.raises(InputError, match="points outside"):
            inside(base, stored, "record")


def test_feature_file_header_claiming_a_trillion_values(tmp_path):
    from evalkit.features.featureset import load_feature_file

    path = tmp_path / "f.npz"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (10 ** 6, 10 ** 6)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("features.npy", buf.getvalue() + b"\0" * 64)
    with pytest.raises(InputError, match="header claims") as exc:
        load_feature_file(path)
    assert str(path) in str(exc.value)
    res = _run("score", path, "--ref", path, "--metrics", "fd")
    assert res.exit_code == 2 and "header claims" in res.output


def test_feature_file_bomb_refused_before_inflating(tmp_path, monkeypatch):
    from evalkit.features.featureset import load_feature_file

    path = tmp_path / "f.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("features.npy", _npy(np.zeros((4096, 1024), np.float32)))  # 16 MiB, ~1000:1
    loads = []
    monkeypatch.setattr(np, "load", lambda *a, **k: loads.append(a) or 1 / 0)
    with pytest.raises(InputError, match="compression ratio"):
        load_feature_file(path)
    assert loads == []


def test_json_nested_too_deeply_is_exit_2_and_skipped_in_a_folder(tmp_path):
    deep = tmp_path / "runs" / "deep.json"
    deep.parent.mkdir()
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for args in (["check", deep, "--baseline", deep], ["report", deep, "-o", tmp_path / "r.html"],
                 ["leaderboard", deep]):
        res = _run(*args)
        assert res.exit_code == 2 and str(deep) in res.output, (args, res.output)
    with pytest.warns(UserWarning, match="skipping .*nested too deeply"):
        res = _run("leaderboard", deep.parent)
    assert res.exit_code == 2 and "no result records" in res.output


def test_missing_weights_are_said_before_any_reference_download(world, monkeypatch):
    from conftest import write_images

    for var in ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(world["tmp"] / "empty-cache"))
    monkeypatch.setenv("EVALKIT_OFFLINE", "1")
    write_images(world["tmp"] / "samples", 4, size=(16, 16), seed=5)
    res = _run("score", world["tmp"] / "samples", "--ref", "tb", "--encoder", "inception",
               "--metrics", "fd", "--quiet")
    assert res.exit_code == 2 and "weights not found" in res.output
    assert world["server"].requests == [] and not (world["refs"] / "tb").exists()


def test_report_embeds_only_images_inside_the_record_sources(tmp_path):
    """A per-sample CSV naming an absolute path elsewhere, a ``..`` escape or a link inside
    the samples folder that points outside gets a placeholder, never the file's pixels."""
    import csv

    from conftest import write_images

    from evalkit.results.record import SCHEMA, load_records
    from evalkit.results.report import build_report

    write_images(tmp_path / "samples", 2, seed=1)
    write_images(tmp_path / "secret", 1, seed=3)
    secret = next((tmp_path / "secret").iterdir())
    (tmp_path / "samples" / "link").symlink_to(tmp_path / "secret")
    rec = {"schema": SCHEMA, "name": "m", "metrics": {"fd": 1.0},
           "samples": {"source": str(tmp_path / "samples")},
           "reference": {"source": str(tmp_path / "samples")}, "per_sample": "m.csv"}
    rows = [[0, str(secret), 0, 0.1, f"../secret/{secret.name}"],
            [1, f"link/{secret.name}", 0, 0.2, str(next((tmp_path / "samples").glob("*.png")))]]
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["index", "path", "nn_index", "nn_distance", "nn_path"], *rows])
    (tmp_path / "m.json").write_text(json.dumps(rec))
    page = build_report(load_records(tmp_path / "m.json"), gallery=2)
    assert page.count("image not available") == 3 and page.count("data:image/png") >= 1


def test_file_name_that_is_not_utf8_is_written_escaped(tmp_path):
    from conftest import write_images

    write_images(tmp_path / "s", 6, size=(16, 16), seed=1)
    write_images(tmp_path / "r", 6, size=(16, 16), seed=2)
    first = sorted((tmp_path / "s").iterdir())[0]
    os.rename(first, os.path.join(os.fsencode(tmp_path / "s"), b"bad\xff.png"))
    csv_path = tmp_path / "ps.csv"
    res = _run("score", tmp_path / "s", "--ref", tmp_path / "r", "--encoder", TINY,
               "--metrics", "precision", "--per-sample", csv_path, "--quiet")
    assert res.exit_code == 0, res.output
    assert "bad\\udcff.png" in csv_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_image_array_header_claiming_terabytes(tmp_path, suffix):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (10 ** 6, 1000, 1000, 3)})
    path = tmp_path / f"lie{suffix}"
    if suffix == ".npy":
        path.write_bytes(buf.getvalue() + b"\0" * 64)
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("arr_0.npy", buf.getvalue() + b"\0" * 64)
    res = _run("score", path, "--ref", path, "--encoder", "pixel", "--metrics", "fd", "--quiet")
    assert res.exit_code == 2 and "header claims" in res.output and str(path) in res.output


def test_full_disk_during_a_download_is_one_line_naming_the_file(world, monkeypatch):
    import errno

    from evalkit.files import download as dl

    class Full(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "open", lambda path, mode: Full(), raising=False)
    res = _run("ref", "pull", "tb", "--quiet")
    assert res.exit_code == 2 and "No space left" in res.output
    assert "VIRTUAL_t16.npz.part" in res.output and "connection" not in res.output
    assert len(world["server"].requests) == 1  # not retried as if the connection dropped


@pytest.mark.parametrize("reader", ["manifest", "catalog", "record"])
@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, "{not json", b"\xff\xfe{}"])
def test_every_json_file_a_user_supplies_fails_as_input_naming_it(tmp_path, monkeypatch, reader,
                                                                   content):
    """A reference manifest, a catalog file and a record: nested past the parser's limit, not
    JSON, or not UTF-8 -> InputError naming the file (exit 2), never a RecursionError (exit 3)."""
    from evalkit.refs.catalog import load_catalog
    from evalkit.refs.manifest import read_manifest
    from evalkit.results.record import load_records

    path = tmp_path / ("manifest.json" if reader == "manifest" else f"{reader}.json")
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    if reader == "catalog":
        monkeypatch.setenv("EVALKIT_CATALOG", str(path))
    read = {"manifest": lambda: read_manifest(tmp_path), "catalog": load_catalog,
            "record": lambda: load_records(path)}[reader]
    with pytest.raises(InputError, match=re.escape(str(path))):
        read()
