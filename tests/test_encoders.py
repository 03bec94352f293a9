"""Encoders against their reference implementations, on random weights saved in each official
checkpoint format (no downloads): Inception vs pytorch-fid, DINOv2 vs timm and the official
position-embedding formula, CLIP vs open_clip; weights resolution; contract tests for every
registered encoder."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from range_server import RangeServer
from stylegan3_reference import stylegan3_detector_resize

import evalkit.encoders as E
from evalkit.encoders import dinov2 as D
from evalkit.encoders import inception as I
from evalkit.encoders import weights as W
from evalkit.errors import InputError, OfflineError, WeightsHashError
from evalkit.features.identity import identity_for
from evalkit.features.options import ExtractOptions

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
SMALL_ARCH = {"dinov2": "vits14", "clip": "ViT-B-32", "data2vec": "vitb16",  # keep contract
              "timm": "test_vit.r160_in1k"}  # tests fast on CPU
# encoders with one large arch: the contract runs on a tiny model built by the same code path
SMALL_OPTIONS = {"mae": {"_vit_kwargs": {"embed_dim": 64, "depth": 2, "num_heads": 2}},
                 "convnext": {"_timm_model": "convnext_atto"}}

def identity_of(encoder, arch=None, weights=None, resize="clean"):
    """The encoder identity record field of extracting with these options (no model built)."""
    return identity_for(ExtractOptions(encoder=encoder, arch=arch, weights=weights,
                                       resize=resize)).as_dict()



@pytest.fixture(scope="module", autouse=True)
def isolated_env(tmp_path_factory):
    """No network, empty weight caches, the sha256 cache in a temp folder."""
    root = tmp_path_factory.mktemp("env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("HF_HOME", str(root / "hf"))
        mp.delenv("HF_HUB_CACHE", raising=False)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("EVALKIT_CACHE_DIR", str(root / "evalkit"))
        yield root


def images(n: int, size: int | tuple[int, int], seed: int) -> torch.Tensor:
    """Seeded integer-valued images in [0, 255], float32 B×3×H×W."""
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g).float()


def assert_close_scaled(actual, expected, rel=1e-4):
    """max |actual - expected| <= rel * max |expected| (the feature scale)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rel * max(scale, 1e-12), f"max abs diff {err:.3g} vs scale {scale:.3g}"


def _randomize_norms(module: torch.nn.Module, g: torch.Generator) -> None:
    """Non-trivial BatchNorm/LayerNorm/LayerScale values, so the test sees their use."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, D.LayerScale):
                m.gamma.copy_(0.5 + torch.rand(m.gamma.shape, generator=g))


# --------------------------------------------------------------------------- Inception

@pytest.fixture(scope="module")
def inception_files(tmp_path_factory):
    """Random FID-Inception weights saved with and without BN ``num_batches_tracked``."""
    net = W.build_module(I.FIDInceptionV3, random_init=True, init=I._init_random, seed=1)
    _randomize_norms(net, torch.Generator().manual_seed(2))
    with torch.no_grad():
        net.fc.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(3))
        net.fc.bias.normal_(0, 1.0, generator=torch.Generator().manual_seed(4))  # unused: IS logits
    full = {k: v.clone() for k, v in net.state_dict().items()}
    bare = {k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}
    assert len(full) > len(bare)
    d = tmp_path_factory.mktemp("inception")
    torch.save(full, d / "with_nbt.pth")
    torch.save(bare, d / "pt_inception-2015-12-05-6726825d.pth")
    return {"with": d / "with_nbt.pth", "without": d / "pt_inception-2015-12-05-6726825d.pth",
            "state_dict": bare}


@pytest.fixture(scope="module")
def pytorch_fid_models(inception_files):
    """pytorch-fid's InceptionV3 (pool3 block), built with its FID blocks and our random
    weights (its weight download replaced by our state dict), with and without its resize,
    plus a forward hook on Mixed_6d.branch1x1 for sFID."""
    import pytorch_fid.inception as pfi

    sd = inception_files["state_dict"]
    models = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pfi, "load_state_dict_from_url",
                   lambda *a, **k: {k2: v.clone() for k2, v in sd.items()})
        for resize_input in (False, True):
            model = pfi.InceptionV3([3], resize_input=resize_input, normalize_input=True).eval()
            taps = []
            mixed_6d = model.blocks[2][6]  # Mixed_5b, 5c, 5d, 6a, 6b, 6c, 6d, 6e
            mixed_6d.branch1x1.register_forward_hook(lambda m, i, o, t=taps: t.append(o))
            models[resize_input] = (model, taps)
    return models


def _pytorch_fid_outputs(model, taps, x01, fc_weight):
    taps.clear()
    with torch.no_grad():
        pool3 = model(x01)[0].squeeze(-1).squeeze(-1)
    spatial = taps[-1][:, :7].permute(0, 2, 3, 1).reshape(x01.shape[0], -1)  # ADM: NHWC[..., :7]
    return pool3, pool3 @ fc_weight.T, spatial


def test_inception_clean_matches_pytorch_fid(inception_files, pytorch_fid_models):
    enc = E.build_encoder("inception", weights=str(inception_files["without"]))
    assert enc.weights_sha256 == hashlib.sha256(inception_files["without"].read_bytes()).hexdigest()
    assert enc.preprocess == E.Preprocess(size=299)
    x = images(2, 299, seed=0)
    with torch.no_grad():
        out = enc(x)
    ref_model, taps = pytorch_fid_models[False]
    pool3, logits, spatial = _pytorch_fid_outputs(ref_model, taps, x / 255,
                                                  inception_files["state_dict"]["fc.weight"])
    assert {k: v.shape[1] for k, v in out.items()} == {"features": 2048, "logits": 1008,
                                                      "spatial": 2023}
    assert pool3.abs().max() > 1e-3  # random weights still give a non-degenerate signal
    assert_close_scaled(out["features"], pool3)
    assert_close_scaled(out["logits"], logits)
    assert_close_scaled(out["spatial"], spatial)


def test_inception_fast_path_equals_plain_and_follows_new_weights(inception_files):
    """The BN-folded channels_last (oneDNN-fused on CPU) copy gives the plain module's outputs,
    and is rebuilt when the canonical weights change."""
    enc = E.build_encoder("inception", weights=str(inception_files["without"]))
    x = images(3, 299, seed=4)

    def both():
        with torch.inference_mode():
            enc.fast = False
            plain = enc(x)
            enc.fast = True
            return plain, enc(x), enc(x[:2])

    plain, fast, fast2 = both()
    for key in plain:
        assert_close_scaled(fast[key], plain[key])
        assert_close_scaled(fast2[key], plain[key][:2])
    sd = {k: v.clone() for k, v in enc.net.state_dict().items()}
    sd["Mixed_7c.branch_pool.conv.weight"].mul_(-2.0)
    sd["Conv2d_1a_3x3.bn.running_mean"].add_(0.5)
    enc.net.load_state_dict(sd)
    plain_new, fast_new, _ = both()
    assert (plain_new["features"] - plain["features"]).abs().max() > 1e-3
    for key in plain:
        assert_close_scaled(fast_new[key], plain_new[key])


def test_inception_fast_path_split_across_threads_equals_plain(inception_files, monkeypatch):
    """On CPU with T intra-op threads a batch of >= 2T runs as T concurrent one-thread slices;
    outputs equal the plain module's and the caller's thread setting is kept."""
    from evalkit.encoders import runtime

    calls = []
    real_split = runtime._split_run
    monkeypatch.setattr(runtime, "_split_run", lambda run, chunks, concurrent: calls.append(
        (len(chunks), concurrent)) or real_split(run, chunks, concurrent))
    enc = E.build_encoder("inception", weights=str(inception_files["without"]))
    x = images(5, 299, seed=6)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            enc.fast = False
            plain = enc(x)
            enc.fast = True
            fast = [enc(x) for _ in range(3)]  # profiling, compiling and fused runs
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
    # two slices of 2 rows (+ 1 row after them); the first two calls of a slice shape one at a
    # time (profiling, compiling), then concurrently; no fallback to the eager copy
    assert calls == [(2, False), (2, False), (2, True)]
    assert isinstance(enc._inference._run, runtime._Traced)
    for out in fast:
        for key in plain:
            assert_close_scaled(out[key], plain[key])


@pytest.mark.parametrize("where", ["trace", "run"])
def test_inception_fast_path_falls_back_to_eager_with_a_warning(inception_files, monkeypatch,
                                                                where):
    """A TorchScript/oneDNN failure (at trace time or in the fused run) never fails extraction:
    one RuntimeWarning, then the eager folded copy, same outputs."""
    from evalkit.encoders import runtime

    def boom(*args, **kwargs):
        raise RuntimeError("no oneDNN Graph here")

    if where == "trace":
        monkeypatch.setattr(torch.jit, "trace", boom)
    else:
        monkeypatch.setattr(runtime._Traced, "forward", boom)
    enc = E.build_encoder("inception", weights=str(inception_files["without"]))
    x = images(2, 299, seed=5)
    with torch.inference_mode():
        enc.fast = False
        plain = enc(x)
        enc.fast = True
        with pytest.warns(RuntimeWarning, match="no oneDNN Graph here"):
            first = enc(x)
        second = enc(x)
    for key in plain:
        assert_close_scaled(first[key], plain[key])
        assert_close_scaled(second[key], plain[key])
    assert not isinstance(enc._inference._run, runtime._Traced)


def test_inception_loads_with_and_without_num_batches_tracked(inception_files):
    a = E.build_encoder("inception", weights=str(inception_files["with"]))
    b = E.build_encoder("inception", weights=str(inception_files["without"]))
    assert a.weights_sha256 != b.weights_sha256
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in inception_files["state_dict"].items():
        assert torch.equal(sa[key], value) and torch.equal(sb[key], value), key
    assert all(not t.is_meta for t in list(sa.values()) + list(sb.values()))


def test_inception_legacy_matches_pytorch_fid_resize(inception_files, pytorch_fid_models):
    enc = E.build_encoder("inception", weights=str(inception_files["without"]), resize="legacy")
    assert enc.preprocess.resize == "none" and enc.preprocess.in_network == "bilinear-299"
    ref_model, taps = pytorch_fid_models[True]
    fc = inception_files["state_dict"]["fc.weight"]
    x = images(2, 128, seed=1)
    y = images(1, (96, 150), seed=2)
    with torch.no_grad():  # a list of native sizes, as legacy batches may hold
        out = enc([x[0], y[0], x[1]])
    pool3, logits, spatial = _pytorch_fid_outputs(ref_model, taps, x / 255, fc)
    ref_y = _pytorch_fid_outputs(ref_model, taps, y / 255, fc)
    order = [0, 2, 1]
    assert_close_scaled(out["features"], torch.cat([pool3, ref_y[0]])[order])
    assert_close_scaled(out["logits"], torch.cat([logits, ref_y[1]])[order])
    assert_close_scaled(out["spatial"], torch.cat([spatial, ref_y[2]])[order])
    # clean mode refuses a non-299 batch instead of silently computing on it
    with pytest.raises(InputError, match="299"):
        E.build_encoder("inception", weights=str(inception_files["without"]))(x)


def test_inception_rejects_wrong_checkpoint(tmp_path, inception_files):
    sd = dict(inception_files["state_dict"])
    sd.pop("fc.bias")
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="missing"):
        E.build_encoder("inception", weights=str(tmp_path / "bad.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        E.build_encoder("inception", weights=str(tmp_path / "junk.pth"))


# --------------------------------------------------------------------------- DINOv2

@pytest.fixture(scope="module")
def dinov2_files(tmp_path_factory):
    """Random ViT-S/14 weights in the official format (with mask_token) and in timm's."""
    import timm
    from safetensors.torch import save_file
    from timm.models.vision_transformer import checkpoint_filter_fn

    net = W.build_module(lambda: D.DinoVisionTransformer("vits14"), random_init=True,
                         init=D._init_random, seed=4)
    g = torch.Generator().manual_seed(5)
    _randomize_norms(net, g)
    with torch.no_grad():
        net.cls_token.normal_(0, 0.5, generator=g)
        net.pos_embed.normal_(0, 0.5, generator=g)
    official = {k: v.clone() for k, v in net.state_dict().items()}
    official["mask_token"] = torch.zeros(1, 384)
    d = tmp_path_factory.mktemp("dinov2")
    torch.save(official, d / "dinov2_vits14_pretrain.pth")
    timm_model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518,
                                   num_classes=0).eval()
    timm_sd = checkpoint_filter_fn(dict(official), timm_model)  # timm's own converter
    timm_model.load_state_dict(timm_sd, strict=True)
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()},
              str(d / "model.safetensors"))
    return {"official": d / "dinov2_vits14_pretrain.pth", "timm": d / "model.safetensors",
            "timm_model": timm_model, "state_dict": official}


def _normalise(x):
    return (x / 255 - IMAGENET_MEAN) / IMAGENET_STD


def test_dinov2_native_518_matches_timm(dinov2_files):
    enc = E.build_encoder("dinov2", "vits14", weights=str(dinov2_files["official"]))
    x = images(1, 518, seed=3)
    with torch.no_grad():
        ours = enc(x)["features"]
        ref = dinov2_files["timm_model"].forward_features(_normalise(x))[:, 0]
    assert ours.shape == (1, 384)
    assert_close_scaled(ours, ref)


def test_dinov2_224_uses_official_pos_embed_formula(dinov2_files):
    pos = dinov2_files["state_dict"]["pos_embed"]
    grid = pos[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    official = F.interpolate(grid, scale_factor=((16 + 0.1) / 37, (16 + 0.1) / 37),
                             mode="bicubic", antialias=False)
    official = torch.cat([pos[:, :1], official.permute(0, 2, 3, 1).reshape(1, 256, 384)], 1)
    ours = D.interpolate_pos_encoding(pos, 224, 224)
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-6)
    from timm.layers import resample_abs_pos_embed

    timm_default = resample_abs_pos_embed(pos, new_size=(16, 16), num_prefix_tokens=1)
    timm_noaa = resample_abs_pos_embed(pos, new_size=(16, 16), num_prefix_tokens=1,
                                       antialias=False)
    scale = official.abs().max().item()
    assert (timm_default - official).abs().max().item() > 1e-2 * scale
    assert (timm_noaa - official).abs().max().item() > 1e-3 * scale
    # end to end: evalkit at 224 == a 224-px timm ViT carrying the official grid
    import timm

    enc = E.build_encoder("dinov2", "vits14", weights=str(dinov2_files["official"]))
    ref = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224,
                            num_classes=0).eval()
    sd = {k: v for k, v in dinov2_files["timm_model"].state_dict().items() if k != "pos_embed"}
    ref.load_state_dict({**sd, "pos_embed": official}, strict=True)
    x = images(2, 224, seed=4)
    with torch.no_grad():
        assert_close_scaled(enc(x)["features"], ref.forward_features(_normalise(x))[:, 0])


def test_dinov2_timm_weights_equal_official(dinov2_files):
    a = E.build_encoder("dinov2", "vits14", weights=str(dinov2_files["official"]))
    b = E.build_encoder("dinov2", "vits14", weights=str(dinov2_files["timm"]))
    assert a.weights_sha256 != b.weights_sha256
    x = images(2, 224, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(a(x)["features"], b(x)["features"], rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="fit|missing|unexpected"):
        E.build_encoder("dinov2", "vitb14", weights=str(dinov2_files["official"]))


@pytest.mark.parametrize("arch", list(D.ARCHS))
def test_dinov2_timm_key_shapes_all_archs(arch):
    """timm's checkpoint for every arch converts to exactly our parameter names and shapes."""
    import timm

    timm_name = f"vit_{D._TIMM_NAMES[arch]}_patch14_dinov2"
    with torch.device("meta"):
        ref = timm.create_model(timm_name, pretrained=False, img_size=518, num_classes=0)
        ours = D.DinoVisionTransformer(arch)
    converted = D.convert_state_dict(dict(ref.state_dict()), arch)
    assert {k: tuple(v.shape) for k, v in converted.items()} == \
        {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert E.get_encoder_spec("dinov2").outputs[arch]["features"] == ours.norm.weight.shape[0]


def test_dinov2_swiglu_matches_timm_packed():
    from timm.layers import SwiGLUPacked

    g = torch.Generator().manual_seed(6)
    ours = D.SwiGLUFFN(48)
    hidden = ours.w3.in_features
    assert D.SwiGLUFFN(1536).w3.in_features == 4096  # the ViT-g FFN width
    ref = SwiGLUPacked(48, hidden_features=2 * hidden)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    converted = D.convert_state_dict(
        {f"blocks.0.mlp.{k}": v for k, v in ref.state_dict().items()}, "vitg14")
    ours.load_state_dict({k[len("blocks.0.mlp."):]: v for k, v in converted.items()}, strict=True)
    x = torch.randn(3, 5, 48, generator=g)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- CLIP

@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
        _randomize_norms(model.visual, torch.Generator().manual_seed(8))
    d = tmp_path_factory.mktemp("clip")
    sd = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(sd, d / "open_clip_pytorch_model.bin")
    save_file(sd, str(d / "open_clip_model.safetensors"))
    return {"bin": d / "open_clip_pytorch_model.bin",
            "safetensors": d / "open_clip_model.safetensors", "model": model}


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_clip_matches_open_clip(clip_files, fmt):
    enc = E.build_encoder("clip", "ViT-B-32", weights=str(clip_files[fmt]))
    assert enc.preprocess.crop and enc.preprocess.size == 224
    model = clip_files["model"]
    taps = []
    handle = model.visual.ln_post.register_forward_hook(lambda m, i, o: taps.append(o))
    x = images(3, 224, seed=6)
    mean = torch.tensor(enc.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(enc.preprocess.std).view(1, 3, 1, 1)
    try:
        with torch.no_grad():
            emb = model.encode_image((x / 255 - mean) / std, normalize=True)
            out = enc(x)
    finally:
        handle.remove()
    feats = taps[-1][:, 0]  # ln_post output, class token, before the projection
    assert out["features"].shape == (3, 768) and out["embedding"].shape == (3, 512)
    torch.testing.assert_close(out["embedding"], emb, rtol=0, atol=1e-5)
    with torch.no_grad():  # before the normalisation: clean-fid's clip_vit_b_32 features
        raw = model.encode_image((x / 255 - mean) / std)
    assert_close_scaled(out["projected"], raw, rel=1e-5)
    assert (raw.norm(dim=1) - 1).abs().min() > 1e-2  # not already unit vectors
    assert_close_scaled(out["features"], feats, rel=1e-5)
    assert not torch.allclose(out["features"][:, :512], emb, atol=1e-2)


def test_clip_known_table_matches_open_clip_configs():
    import open_clip

    from evalkit.encoders import clip as C

    for model, (width, embed, size) in C.KNOWN.items():
        cfg = open_clip.get_model_config(model)
        assert (cfg["vision_cfg"]["width"], cfg["embed_dim"], cfg["vision_cfg"]["image_size"]) \
            == (width, embed, size), model
        assert open_clip.get_pretrained_cfg(model, C.DEFAULT_TAGS[model]), model
    spec = C.clip_weights("ViT-L-14")
    assert spec.hf_repo == "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K"
    assert spec.hf_filename == "open_clip_pytorch_model.bin"
    assert C.split_arch("ViT-B-32:openai") == ("ViT-B-32", "openai")
    with pytest.raises(InputError, match="unknown open_clip model"):
        E.encoder_preprocess("clip", "ViT-Q-99")


# --------------------------------------------------------------------------- weights

def test_explicit_missing_weights_is_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.pth"):
        W.resolve_weights("inception", I.WEIGHTS, str(tmp_path / "nope.pth"))
    with pytest.raises(InputError, match="nope.pth"):
        E.build_encoder("inception", weights=str(tmp_path / "nope.pth"))


def test_offline_error_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    called = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: called.append(a))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(OfflineError) as info:
        E.build_encoder("inception")
    msg = str(info.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and str(expected) in msg
    assert "\n" not in msg and not called
    with pytest.raises(OfflineError, match="dinov2_vits14_pretrain.pth"):
        identity_of("dinov2", "vits14")


def test_weights_found_in_torch_hub_and_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / I.WEIGHTS.filename).write_bytes(b"inception")  # not the file its name promises
    with pytest.raises(WeightsHashError, match=I.WEIGHTS.filename):
        W.resolve_weights("inception", I.WEIGHTS, None)
    # a file whose sha256 starts with the hex in its name (torch.hub's convention) is accepted
    digest = hashlib.sha256(b"inception").hexdigest()
    named = dataclasses.replace(I.WEIGHTS, filename=f"pt_inception-{digest[:8]}.pth", sha256=None)
    (hub / named.filename).write_bytes(b"inception")
    assert W.resolve_weights("inception", named, None) == hub / named.filename
    ident = identity_of("inception")  # the identity is the digest of the file found
    assert ident["weights_sha256"] == digest
    assert ident["arch"] == I.ARCH and ident["preprocess"] == E.Preprocess(size=299).describe()
    # DINOv2 from timm's HF cache layout, the refs/main snapshot first
    spec = D._weights("vits14")
    repo = tmp_path / "hf" / "hub" / "models--timm--vit_small_patch14_dinov2.lvd142m"
    for snap, data in (("old", b"old"), ("abc123", b"main")):
        (repo / "snapshots" / snap).mkdir(parents=True)
        (repo / "snapshots" / snap / "model.safetensors").write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert W.resolve_weights("dinov2", spec, None) == repo / "snapshots/abc123/model.safetensors"
    # open_clip's safetensors twin of open_clip_pytorch_model.bin is found as well
    clip_repo = tmp_path / "hf" / "hub" / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (clip_repo / "snapshots" / "s1").mkdir(parents=True)
    (clip_repo / "snapshots" / "s1" / "open_clip_model.safetensors").write_bytes(b"clip")
    ident = identity_of("clip", "ViT-B-32")
    assert ident["weights_sha256"] == hashlib.sha256(b"clip").hexdigest()
    assert json.loads(ident["preprocess"])["crop"] is True
    # HF_HUB_CACHE wins over HF_HOME
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError):
        W.resolve_weights("dinov2", spec, None)


@pytest.fixture
def weights_server(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_OFFLINE", "EVALKIT_OFFLINE", "EVALKIT_REF_MIRROR", "http_proxy",
                "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # reach 127.0.0.1 directly
    server = RangeServer()
    yield server
    server.close()


def test_download_verifies_sha256(weights_server, tmp_path):
    payload = b"weights!" * 1000
    weights_server.files.update({"w.pth": payload, "v.pth": payload})
    good = E.WeightsSpec("w.pth", url=weights_server.url + "w.pth",
                         sha256=hashlib.sha256(payload).hexdigest())
    path = W.resolve_weights("toy", good, None)
    assert path.read_bytes() == payload and path.parent.name == "checkpoints"
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / "w.pth"
    bad = E.WeightsSpec("v.pth", url=weights_server.url + "v.pth", sha256="0" * 64)
    with pytest.raises(WeightsHashError, match="v.pth"):
        W.resolve_weights("toy", bad, None)
    assert not list(path.parent.glob("v.pth*"))  # nothing half-done is left to be found
    # the torch.hub convention: a sha256 prefix in the file name is checked on download too
    named = E.WeightsSpec("x-00000000.pth", url=weights_server.url + "v.pth")
    with pytest.raises(WeightsHashError, match="x-00000000.pth"):
        W.resolve_weights("toy", named, None)
    missing = E.WeightsSpec("u.pth", url=weights_server.url + "u.pth")
    with pytest.raises(OfflineError, match="u.pth") as info:
        W.resolve_weights("toy", missing, None)
    assert str(path.parent / "u.pth") in str(info.value) and "404" in str(info.value)


def test_weights_download_resumes_a_partial_file(weights_server):
    payload = bytes(range(256)) * 64
    weights_server.files["w.pth"] = payload
    spec = E.WeightsSpec("w.pth", url=weights_server.url + "w.pth",
                         sha256=hashlib.sha256(payload).hexdigest())
    hub = W.torch_hub_checkpoints_dir()
    hub.mkdir(parents=True)
    (hub / "w.pth.part").write_bytes(payload[:5000])  # left by an interrupted run
    assert W.resolve_weights("toy", spec, None).read_bytes() == payload
    assert weights_server.requests == [("w.pth", "bytes=5000-")]
    assert not (hub / "w.pth.part").exists()


def test_weights_download_offline_names_file_and_folder(weights_server):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = E.WeightsSpec("u.pth", url=f"http://127.0.0.1:{port}/u.pth")
    with pytest.raises(OfflineError) as info:
        W.resolve_weights("toy", spec, None)
    msg = str(info.value)
    assert f"put u.pth at {W.torch_hub_checkpoints_dir() / 'u.pth'}" in msg
    assert f"download from http://127.0.0.1:{port}/u.pth failed" in msg and "\n" not in msg


def test_sha256_cache_json_and_invalidation(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    a, b = b"a" * (1 << 20), b"b" * ((1 << 20) + 1)  # files of 1 MiB and more are remembered
    f.write_bytes(a)
    assert W.file_sha256(f) == hashlib.sha256(a).hexdigest()
    table = json.loads((tmp_path / "cache" / W.SHA256_CACHE_FILE).read_text())
    assert list(table.values()) == [hashlib.sha256(a).hexdigest()]
    f.write_bytes(b)
    os.utime(f, ns=(1, 2))
    assert W.file_sha256(f) == hashlib.sha256(b).hexdigest()


def test_resize_legacy_only_for_inception():
    for name in ("pixel", "dinov2", "clip"):
        with pytest.raises(InputError, match="only valid for the inception, convnext"):
            E.encoder_preprocess(name, SMALL_ARCH.get(name), resize="legacy")
        with pytest.raises(InputError, match="only valid for the inception, convnext"):
            E.build_encoder(name, SMALL_ARCH.get(name), resize="legacy", random_init=True)
    with pytest.raises(InputError, match="vitl14"):
        E.build_encoder("dinov2", "vitl16", random_init=True)
    assert identity_of("pixel") == {
        "name": "pixel", "arch": "rgb32", "weights_sha256": None,
        "preprocess": E.Preprocess(size=32).describe(), "precision": "fp32"}


# --------------------------------------------------------------------------- contract

@pytest.mark.parametrize("name", E.list_encoders())
def test_encoder_contract(name):
    spec = E.get_encoder_spec(name)
    arch = SMALL_ARCH.get(name, spec.default_arch)
    assert spec.default_arch in spec.archs and spec.description
    enc = E.build_encoder(name, arch, random_init=True, **SMALL_OPTIONS.get(name, {}))
    assert not enc.training and enc.weights_sha256 is None
    assert enc.preprocess == E.encoder_preprocess(name, arch)
    if name in SMALL_OPTIONS:
        assert set(enc.outputs) == set(spec.outputs[arch])
    else:
        assert enc.outputs == dict(spec.outputs[arch])
    dims = enc.outputs
    size = enc.preprocess.size
    x = images(3, size, seed=9)
    with torch.no_grad():
        full = enc(x)
        parts = [enc(x[:1]), enc(x[1:])]
    assert set(full) == set(spec.outputs[arch]) and "features" in full
    for key, dim in dims.items():
        assert full[key].shape == (3, dim) and full[key].dtype == torch.float32
        assert torch.isfinite(full[key]).all()
        split = torch.cat([p[key] for p in parts])
        scale = max(full[key].abs().max().item(), 1.0)
        assert (split - full[key]).abs().max().item() <= 1e-5 * scale, key
    assert np.unique(full["features"].numpy().round(6), axis=0).shape[0] == 3


def test_weights_hash_sources(tmp_path):
    """Every built-in weights file has a way to be verified, or says why not."""
    assert W.expected_sha256(I.WEIGHTS) == "6726825d"  # pytorch-fid's file name convention
    url = "https://openaipublic.azureedge.net/clip/models/" + "ab" * 32 + "/ViT-L-14.pt"
    assert W.expected_sha256(E.WeightsSpec("x.pt", url=url)) == "ab" * 32  # open_clip's check
    blob = tmp_path / "blobs" / ("cd" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"w")
    link = tmp_path / "snapshots" / "s" / "model.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(blob)
    assert W.expected_sha256(D._weights("vitl14"), link) == "cd" * 32  # HF hub: blob = sha256
    assert W.expected_sha256(D._weights("vitl14")) is None  # Meta publishes none
    with pytest.raises(WeightsHashError, match="model.safetensors"):
        W.verify_sha256(link, D._weights("vitl14"), "dinov2")


def test_random_weights_under_the_official_name_are_refused(tmp_path, monkeypatch):
    """A random-weight file put where the official Inception file goes fails its hash check,
    and the error names the file; the same file passed with --weights is the user's choice."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    enc = E.build_encoder("inception", random_init=True)
    path = hub / I.WEIGHTS.filename
    torch.save(enc.net.state_dict(), path)
    with pytest.raises(WeightsHashError, match=str(path)):
        E.build_encoder("inception")
    assert E.build_encoder("inception", weights=str(path)).weights_sha256 == \
        hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def torch_fidelity_inception(inception_files):
    """torch-fidelity's TF-graph Inception (its TF1 resize and (x - 128) / 128) on our random
    weights in pytorch-fid's format, with a hook on Mixed_6d.branch1x1 for sFID."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                        feature_extractor_weights_path=str(inception_files["with"]))
    taps = []
    model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o, t=taps: t.append(o))
    return model, taps


def torch_fidelity_outputs(model, taps, x: torch.Tensor):
    """pool3, unbiased logits and ADM's spatial (NHWC[..., :7]) of uint8-valued images."""
    taps.clear()
    with torch.no_grad():
        pool3, logits = model(x.to(torch.uint8))
    spatial = taps[-1][:, :7].permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    return pool3, logits, spatial


@pytest.mark.parametrize("fast", [False, True])
def test_inception_tf1_matches_torch_fidelity(inception_files, torch_fidelity_inception, fast):
    """``--resize tf1`` is the TF graph's preprocessing: equal to torch-fidelity's extractor
    (which reproduces TF1's ResizeBilinear) on several native sizes, up- and downscaled."""
    enc = E.build_encoder("inception", weights=str(inception_files["without"]), resize="tf1")
    enc.fast = fast
    assert enc.preprocess.resize == "none" and enc.preprocess.in_network.startswith("tf1")
    model, taps = torch_fidelity_inception
    sizes = [(64, 64), (128, 128), (96, 150), (320, 300)]
    batch = [images(1, s, seed=10 + i)[0] for i, s in enumerate(sizes)]
    with torch.no_grad():
        out = enc(batch)
    refs = [torch_fidelity_outputs(model, taps, x[None]) for x in batch]
    # plain module: float32 round-off of two implementations of the same graph; the
    # BN-folded fast copy adds its own float32 reassociation (as for the other modes)
    rel = 1e-4 if fast else 2e-6
    for j, key in enumerate(("features", "logits", "spatial")):
        assert_close_scaled(out[key], torch.cat([r[j] for r in refs]), rel=rel)


def test_inception_tf1_resize_is_not_pytorch_fid(inception_files, torch_fidelity_inception):
    """The TF1 resize moves features far beyond round-off from pytorch-fid's (the test above
    can fail): planting ``F.interpolate`` + 2x - 1 is caught."""
    legacy = E.build_encoder("inception", weights=str(inception_files["without"]), resize="legacy")
    legacy.fast = False
    x = images(1, (96, 150), seed=11)
    with torch.no_grad():
        got = legacy([x[0]])["features"]
    want = torch_fidelity_outputs(*torch_fidelity_inception, x)[0]
    err = (got - want).abs().max() / want.abs().max()
    assert err > 1e-3
    # different features, different identities: caches and references never mix the two
    assert (E.encoder_preprocess("inception", None, "tf1").describe()
            != E.encoder_preprocess("inception", None, "legacy").describe())


@pytest.mark.parametrize("fast", [False, True])
def test_inception_stylegan3_is_the_detectors_preprocessing(inception_files, fast):
    """``--resize stylegan3`` (EDM2's FID): the detector's grid_sample resize of the native-size
    float32 image, then (x - 128) / 128, then the network; batches of mixed sizes as lists."""
    enc = E.build_encoder("inception", weights=str(inception_files["without"]), resize="stylegan3")
    enc.fast = fast
    assert enc.preprocess.resize == "none"
    assert len({E.encoder_preprocess("inception", None, m).describe()
                for m in ("stylegan3", "tf1", "legacy", "clean")}) == 4  # four cache identities
    sizes = [(32, 32), (64, 64), (96, 150), (256, 256)]
    batch = [images(1, s, seed=20 + i)[0] for i, s in enumerate(sizes)]
    want_in = [(stylegan3_detector_resize(x[None]) - 128) / 128 for x in batch]
    for x, w in zip(batch, want_in):
        assert torch.equal(enc._prepare([x]), w)  # the detector's input, bit for bit
    with torch.no_grad():
        out = enc(batch)
        refs = [enc.net(w) for w in want_in]  # the network as written, on the detector's input
    pool3 = torch.cat([r[0] for r in refs])
    want = {"features": pool3, "logits": pool3 @ enc.net.fc.weight.T,
            "spatial": torch.cat([r[1][:, :7].permute(0, 2, 3, 1).flatten(1) for r in refs])}
    for key, value in want.items():
        assert_close_scaled(out[key], value, rel=1e-4 if fast else 1e-6)


def test_dinov2_torch_resize_is_edm2s(dinov2_files):
    """``--resize torch`` (EDM2's FD_DINOv2): F.interpolate bicubic antialias of the float
    image to 224 inside the module, then /255 and ImageNet mean/std, CLS token; any native
    size, batches of mixed sizes as lists."""
    enc = E.build_encoder("dinov2", "vits14", weights=str(dinov2_files["official"]), resize="torch")
    clean = E.build_encoder("dinov2", "vits14", weights=str(dinov2_files["official"]))
    assert enc.preprocess.resize == "none" and enc.preprocess.describe() != clean.preprocess.describe()
    x, y = images(2, 512, seed=6), images(1, (300, 260), seed=7)

    def edm2(v):  # EDM2 calculate_metrics.py's DINOv2Detector, resize_mode="torch"
        v = F.interpolate(v.to(torch.float32), size=(224, 224), mode="bicubic", antialias=True)
        return clean.net(_normalise(v))

    with torch.no_grad():
        got = enc([x[0], y[0], x[1]])["features"]
        want = torch.cat([edm2(x[:1]), edm2(y), edm2(x[1:])])
        torch.testing.assert_close(enc(x)["features"], edm2(x), rtol=0, atol=1e-6 * want.abs().max().item())
        # planted: the same resize without antialias moves the features far beyond round-off
        aliased = clean(F.interpolate(x[:1], size=(224, 224), mode="bicubic"))["features"]
    assert_close_scaled(got, want, rel=1e-6)
    assert (aliased - want[:1]).abs().max() > 1e-3 * want.abs().max()
