"""End to end on image folders: `evalkit score` with the weight-free `pixel` encoder and with a
random-weight FID Inception loaded through `--weights`, the feature cache serving the second
run, the in-training Evaluator giving the record `score` gives, and bad images."""
import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_images

import evalkit
import evalkit.features.loader
from evalkit.cli import main


@pytest.fixture
def folders(tmp_path):
    real = tmp_path / "real"
    fake = tmp_path / "fake"
    test = tmp_path / "test"
    write_images(real, 24, size=(40, 36), classes=["a", "b"], seed=1)
    write_images(fake, 20, size=(40, 36), seed=2)
    write_images(test, 16, size=(40, 36), seed=3)
    return {"real": real, "fake": fake, "test": test, "tmp": tmp_path}


def score(*args):
    res = CliRunner().invoke(main, ["score", *map(str, args), "--quiet", "--workers", "0"])
    assert res.exit_code == 0, res.output
    return res


def test_pixel_score_on_folders_equals_metrics_on_extracted_features(folders):
    out = folders["tmp"] / "r.json"
    score(folders["fake"], "--ref", folders["real"], "--test", folders["test"],
          "--encoder", "pixel", "--metrics", "fd", "--out", out)
    rec = json.loads(out.read_text())
    assert rec["encoder"]["name"] == "pixel" and rec["samples"]["n"] == 20
    assert rec["reference"]["n"] == 24 and rec["test"]["n"] == 16
    # the same numbers from features written by `evalkit features`
    feats = {}
    for role in ("real", "fake"):
        path = folders["tmp"] / f"{role}.npz"
        res = CliRunner().invoke(main, ["features", str(folders[role]), "-o", str(path),
                                        "--encoder", "pixel", "--quiet", "--workers", "0"])
        assert res.exit_code == 0, res.output
        feats[role] = np.load(path)["features"]
    assert feats["fake"].shape == (20, 3072)
    expected = evalkit.metrics.fd(feats["real"], feats["fake"])["fd"]
    assert rec["metrics"]["fd"] == pytest.approx(expected, rel=1e-12)
    assert rec["samples"]["fingerprint"] != rec["reference"]["fingerprint"]


def _random_inception(path):
    from evalkit.encoders import build_encoder

    enc = build_encoder("inception", random_init=True)
    torch.save(enc.net.state_dict(), path)  # the bare network: pytorch-fid's file format
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_random_inception_score_then_cache_hit(folders, monkeypatch):
    weights = folders["tmp"] / "pt_inception-2015-12-05-6726825d.pth"
    sha = _random_inception(weights)
    out = folders["tmp"] / "inc.json"
    args = [folders["fake"], "--ref", folders["real"], "--encoder", "inception", "--weights",
            weights, "--metrics", "fd,sfid,is,kd", "--batch-size", 8, "--out", out]
    score(*args)
    first = json.loads(out.read_text())
    assert first["encoder"]["weights_sha256"] == sha
    assert set(first["metrics"]) >= {"fd", "sfid", "is", "is_std", "kd"}
    assert first["timing"]["extract_s"] > 0

    def no_extraction(*a, **k):
        raise AssertionError("extraction ran although the cache holds these features")

    monkeypatch.setattr(evalkit.features.loader, "extract", no_extraction)
    score(*args)
    second = json.loads(out.read_text())
    assert second["metrics"] == first["metrics"]
    assert second["timing"]["extract_s"] == 0


def test_evaluator_gives_the_record_score_gives(folders):
    from evalkit.images.sources import resolve_source

    out = folders["tmp"] / "r.json"
    # both runs pinned to the CPU: on a CUDA machine the CLI would otherwise pick CUDA while
    # the Evaluator runs on the CPU (5.7e-8 apart in fd, 3.4e-6 in kd on an H200)
    score(folders["fake"], "--ref", folders["real"], "--encoder", "pixel", "--device", "cpu",
          "--metrics", "fd,kd,precision,recall,vendi", "--out", out)
    expected = json.loads(out.read_text())["metrics"]

    src = resolve_source(str(folders["fake"]))
    images = torch.from_numpy(np.stack([src.load_rgb(i)[0] for i in range(len(src))]))
    images = images.permute(0, 3, 1, 2)  # B×3×H×W uint8
    ev = evalkit.Evaluator(encoder="pixel", ref=str(folders["real"]), device="cpu",
                           metrics="fd,kd,precision,recall,vendi")
    for batch in images.split(7):
        ev.update(batch)
    assert ev.compute()["metrics"] == pytest.approx(expected, rel=1e-9)
    # float input in [0, 1] is quantised as an 8-bit writer would: same numbers
    ev.reset()
    ev.update(images.float() / 255.0)
    assert ev.compute()["metrics"] == pytest.approx(expected, rel=1e-9)


def test_bad_image_in_folder_exits_2_or_is_skipped_and_counted(folders):
    bad = folders["fake"] / "zzz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = ["score", str(folders["fake"]), "--ref", str(folders["real"]), "--encoder", "pixel",
            "--metrics", "fd", "--quiet", "--workers", "0", "--no-cache"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "zzz_broken.png" in lines[0]
    out = folders["tmp"] / "skip.json"
    res = CliRunner().invoke(main, args + ["--skip-bad", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    assert rec["samples"]["n"] == 20 and rec["samples"]["n_skipped"] == 1
