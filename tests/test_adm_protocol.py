"""``--protocol adm`` end to end against the ADM evaluator's numbers, without TensorFlow.

The TF graph is stood in for by torch-fidelity's ``FeatureExtractorInceptionV3`` (its TF1
resize and (x - 128) / 128, tested against the TF originals by its authors) on the same random
weights in pytorch-fid's format; the evaluator's numpy side is tests/adm_reference.py. The
reference batch carries made-up mu/sigma/mu_s/sigma_s that disagree with its own images, so
FID/sFID prove they are scored against the stored statistics.
"""
from __future__ import annotations

import json

import adm_reference as ref
import numpy as np
import pytest
import torch

import evalkit
import evalkit.encoders as E
from evalkit.encoders import inception as I
from evalkit.encoders import weights as W
from evalkit.refs.pull import add_file

N_REF, N_SAM = 10, 12


def _smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """Real-looking uint8 N×H×W×3: coarse blobs upsampled, plus fine noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, size // 8, size // 8, 3)).astype(np.float64)
    up = np.kron(coarse, np.ones((1, 8, 8, 1)))
    return np.clip(up + rng.normal(0, 12, up.shape), 0, 255).astype(np.uint8)


def _made_up_stats(dim: int, seed: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((dim, 64)) * scale
    return np.abs(rng.standard_normal(dim)) * scale, g @ g.T / 64 + np.eye(dim) * scale**2 * 0.01


@pytest.fixture(scope="module")
def adm_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("adm")
    net = W.build_module(I.FIDInceptionV3, random_init=True, init=I._init_random, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        net.fc.weight.normal_(0, 0.05, generator=g)  # no float32 softmax underflow in ADM
        net.fc.bias.normal_(0, 2.0, generator=g)  # a large bias: IS must leave it out
    full = net.state_dict()
    wfile = root / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}, wfile)
    torch.save(full, root / "with_nbt.pth")

    ref_imgs, sam_imgs = _smooth_images(N_REF, 48, 0), _smooth_images(N_SAM, 64, 1)
    mu, sigma = _made_up_stats(2048, 3, 0.3)
    mu_s, sigma_s = _made_up_stats(2023, 4, 0.5)
    batch = root / "VIRTUAL_admtest64_labeled.npz"
    np.savez(batch, arr_0=ref_imgs, arr_1=np.arange(N_REF) % 4, mu=mu, sigma=sigma,
             mu_s=mu_s, sigma_s=sigma_s)
    samples = root / "samples.npz"
    np.savez(samples, arr_0=sam_imgs)
    catalog = {"schema": "evalkit.catalog/1", "entries": [
        {"name": "admtest", "kind": "images", "format": "adm-batch", "resolution": 48, "n": N_REF,
         "labels": True, "urls": ["http://unreachable.invalid/x/" + batch.name],
         "stats": [{"encoder": "inception", "mu": "mu", "sigma": "sigma", "mu_s": "mu_s",
                    "sigma_s": "sigma_s", "made_by": "test", "dim": 2048, "spatial_dim": 2023,
                    "resize": "tf1"}], "protocols": ["adm"]}]}
    (root / "catalog.json").write_text(json.dumps(catalog))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVALKIT_CATALOG", str(root / "catalog.json"))
        mp.setenv("EVALKIT_REF_DIR", str(root / "refs"))
        mp.setenv("EVALKIT_CACHE_DIR", str(root / "cache"))
        mp.setenv("EVALKIT_REF_MIRROR", "http://127.0.0.1:9/")  # nothing may be downloaded
        add_file("admtest", str(batch))
        yield {"root": root, "weights": wfile, "samples": samples, "ref_imgs": ref_imgs,
               "sam_imgs": sam_imgs, "stats": (mu, sigma, mu_s, sigma_s)}


@pytest.fixture(scope="module")
def adm_numbers(adm_world):
    """What the ADM evaluator would print, from torch-fidelity's TF-graph activations."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    wfile = str(adm_world["root"] / "with_nbt.pth")
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                        feature_extractor_weights_path=wfile)
    taps = []
    model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: taps.append(o))

    def acts(imgs):
        taps.clear()
        with torch.no_grad():
            pool, logits = model(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous())
        spatial = taps[-1][:, :7].permute(0, 2, 3, 1).reshape(len(imgs), -1)  # NHWC[..., :7]
        return pool.numpy(), logits.numpy(), spatial.numpy()

    ref_pool, _, _ = acts(adm_world["ref_imgs"])
    pool, logits, spatial = acts(adm_world["sam_imgs"])
    mu, sigma, mu_s, sigma_s = adm_world["stats"]
    p, r = ref.precision_recall(ref_pool, pool)
    return {"fd": ref.fid_against(pool, mu, sigma), "sfid": ref.fid_against(spatial, mu_s, sigma_s),
            "is": ref.inception_score(logits), "precision": p, "recall": r,
            "_acts": (ref_pool, pool, logits)}


def _score(adm_world, **kw):
    with pytest.warns(evalkit.errors.ProtocolWarning, match="EXPECTS 50000 SAMPLES"):
        return evalkit.score(str(adm_world["samples"]), protocol="adm", ref="admtest",
                             weights=str(adm_world["weights"]), device="cpu", workers=0,
                             batch_size=8, quiet=True, **kw).record


def test_adm_protocol_equals_the_evaluator(adm_world, adm_numbers):
    rec = _score(adm_world)
    got, want = rec["metrics"], adm_numbers
    for key in ("fd", "sfid", "is"):
        print(f"adm {key}: evalkit {got[key]!r} evaluator {want[key]!r} "
              f"rel {abs(got[key] / want[key] - 1):.2e}")
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    border = rec["details"]["precision"]["_float16_borderline"]
    assert abs(got["precision"] - want["precision"]) * N_SAM <= border["precision"]
    assert abs(got["recall"] - want["recall"]) * N_REF <= border["recall"]
    proto = rec["protocol"]
    assert proto["resize"] == "tf1" and proto["exact"] == ["fd", "sfid", "is", "precision", "recall"]
    assert proto["conventions"]["is"].startswith("ADM:")
    assert proto["published_stats"]["metrics"] == ["fd", "sfid"]


def test_adm_protocol_planted_conventions_are_caught(adm_world, adm_numbers):
    """Each convention, planted wrong, moves a number beyond the tolerance above."""
    ref_pool, pool, logits = adm_numbers["_acts"]
    mu, sigma, _, _ = adm_world["stats"]
    # the batch's own statistics instead of the stored ones
    own = ref.fid_against(pool, ref_pool.mean(0).astype(np.float64), np.cov(ref_pool, rowvar=False))
    assert own != pytest.approx(adm_numbers["fd"], rel=1e-3)
    # the bias in the IS logits
    bias = torch.load(adm_world["weights"])["fc.bias"].numpy()
    assert ref.inception_score(logits + bias) != pytest.approx(adm_numbers["is"], rel=1e-3)
    # pytorch-fid's resize (--resize legacy) instead of TF1's: evalkit's legacy logits
    enc = E.build_encoder("inception", weights=str(adm_world["weights"]),
                                         resize="legacy")
    x = torch.from_numpy(adm_world["sam_imgs"]).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        legacy = enc(x)["logits"].numpy()
    assert ref.inception_score(legacy) != pytest.approx(adm_numbers["is"], rel=1e-4)


def test_adm_protocol_records_conventions_of_the_metrics_run(adm_world):
    """The record says which convention produced each number (features from the cache)."""
    rec = _score(adm_world, metrics="fd,is")
    assert set(rec["protocol"]["conventions"]) == {"fd", "is"}
    assert set(rec["metrics"]) >= {"fd", "is"}


