"""dgm-eval's encoders (convnext, data2vec, mae, swav, simclr) and the generic timm encoder
against their reference implementations, on random weights saved in each official checkpoint
layout (no downloads).

References: timm models with dgm-eval's ConvNeXt forward; transformers' ``Data2VecVisionModel``
``pooler_output`` with BEiT's image processor; timm's ``VisionTransformer`` with MAE's settings
(what the MAE repository and dgm-eval build); SwAV's padded ResNet-50 (torchvision's with the
extra pad layer and ``conv1`` padding 2, loaded from ``module.`` keys the way dgm-eval does);
a functional re-implementation of the SimCLRv2 SK-ResNet read straight off the converter's
state dict. Native size: max abs diff <= 1e-4 of the feature scale. After resizing: cosine >=
0.999 against the reference fed by dgm-eval's own torchvision transform.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import evalkit.encoders as E
from evalkit.encoders import convnext as CN
from evalkit.encoders import data2vec as D2V
from evalkit.encoders import mae as MAE
from evalkit.encoders import simclr as SC
from evalkit.encoders import swav as SW
from evalkit.encoders import weights as W
from evalkit.errors import InputError
from evalkit.features.identity import identity_for
from evalkit.features.options import ExtractOptions
from evalkit.images.resize import prepare

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def identity_of(encoder, arch=None, weights=None, resize="clean"):
    """The encoder identity record field of extracting with these options (no model built)."""
    return identity_for(ExtractOptions(encoder=encoder, arch=arch, weights=weights,
                                       resize=resize)).as_dict()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


def smooth_images(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    """Photo-like uint8 images (smooth blobs + mild noise): resize filters matter as on photos."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        low = rng.uniform(0, 255, (3, 6, 6)).astype(np.float32)
        img = F.interpolate(torch.from_numpy(low)[None], size=(h, w), mode="bicubic",
                            align_corners=False)[0].numpy()
        img = img + rng.normal(0, 6, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    return out


def batch(arrs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in arrs]).astype(np.float32))


def ours(enc, arrs: list[np.ndarray]) -> torch.Tensor:
    """evalkit's data path (workers' ``prepare``) then the encoder."""
    with torch.no_grad():
        return enc(torch.from_numpy(np.stack([prepare(a, enc.preprocess) for a in arrs])))["features"]


def assert_close_scaled(actual, expected, rel=1e-4):
    scale = expected.abs().max().item()
    err = (actual.double() - expected.double()).abs().max().item()
    assert actual.shape == expected.shape
    assert err <= rel * scale, f"max abs diff {err:.3g} vs scale {scale:.3g}"


def assert_cosine(actual, expected, least=0.999):
    cos = F.cosine_similarity(actual.double(), expected.double(), dim=1)
    assert cos.min().item() >= least, f"cosine {cos.tolist()}"


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial norm statistics/affines so a test sees their use."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return module.eval()


def tv_transform(arr: np.ndarray, *ops) -> torch.Tensor:
    """dgm-eval's transform: torchvision ops on the PIL image, ToTensor, ImageNet mean/std."""
    from torchvision import transforms as T

    t = T.Compose([*ops, T.ToTensor(), T.Normalize(MEAN.flatten().tolist(), STD.flatten().tolist())])
    return t(Image.fromarray(arr))


def cli(*args):
    from evalkit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


# --------------------------------------------------------------------------- convnext

def dgm_convnext_forward(model, x):
    """dgm-eval's ``ConvNeXTEncoder.forward``."""
    out = model.forward_features(x)
    return model.head.flatten(model.head.norm(model.head.global_pool(out)))


def test_convnext_matches_timm_dgm_forward(tmp_path):
    import timm
    from safetensors.torch import save_file
    from torchvision import transforms as T

    ref = randomize(timm.create_model("convnext_atto", num_classes=11), 1)
    sd = ref.state_dict()
    save_file(sd, str(tmp_path / "model.safetensors"))
    torch.save({"model": sd}, tmp_path / "wrapped.pth")
    x = batch(smooth_images(2, 224, 224, 0))
    want = dgm_convnext_forward(ref, (x / 255 - MEAN) / STD)
    for f in ("model.safetensors", "wrapped.pth"):
        enc = CN.build_convnext(weights=str(tmp_path / f), _timm_model="convnext_atto")
        assert_close_scaled(enc(x)["features"], want)
    assert enc.weights_sha256 == W.file_sha256(tmp_path / "wrapped.pth")
    # resized: clean default vs dgm-eval's Resize(256, bicubic) + CenterCrop(224)
    arrs = smooth_images(2, 300, 260, 1)
    dgm = torch.stack([tv_transform(a, T.Resize(256, T.InterpolationMode.BICUBIC),
                                    T.CenterCrop(224)) for a in arrs])
    want = dgm_convnext_forward(ref, dgm)
    assert_cosine(ours(enc, arrs), want)
    legacy = CN.build_convnext(weights=str(tmp_path / "wrapped.pth"), resize="legacy",
                               _timm_model="convnext_atto")
    assert_close_scaled(ours(legacy, arrs), want)
    # the registered encoder's dims are the real model's
    with torch.device("meta"):
        real = timm.create_model("convnext_large", num_classes=0)
    assert E.get_encoder_spec("convnext").outputs[CN.ARCH]["features"] == real.num_features


def test_legacy_pixels_equal_torchvision():
    from torchvision import transforms as T

    arr = smooth_images(1, 300, 260, 2)[0]
    cases = [(E.encoder_preprocess("convnext", resize="legacy"),
              [T.Resize(256, T.InterpolationMode.BICUBIC), T.CenterCrop(224)]),
             (E.encoder_preprocess("swav", resize="legacy"), [T.Resize(224)]),
             (E.encoder_preprocess("data2vec", resize="legacy"),
              [T.Resize((224, 224), T.InterpolationMode.BICUBIC)])]
    for pre, ops in cases:
        want = np.asarray(T.Compose(ops)(Image.fromarray(arr)), dtype=np.float32).transpose(2, 0, 1)
        got = prepare(arr, pre)
        assert got.shape == want.shape and np.array_equal(got, want), pre
    assert prepare(arr, E.encoder_preprocess("swav", resize="legacy")).shape == (3, 258, 224)


# --------------------------------------------------------------------------- timm (any model)

def test_timm_any_model_from_hf_cache_matches_timm(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    arch = "test_vit.r160_in1k"
    ref = randomize(timm.create_model("test_vit"), 3)
    snap = tmp_path / "hf" / "hub" / "models--timm--test_vit.r160_in1k" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    save_file(ref.state_dict(), str(snap / "model.safetensors"))
    enc = E.build_encoder("timm", arch)
    cfg = timm.data.resolve_data_config({}, model=ref)
    assert enc.preprocess.size == 160 and enc.preprocess.crop_from == int(160 / cfg["crop_pct"])
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    x = batch(smooth_images(2, 160, 160, 3))
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features((x / 255 - mean) / std), pre_logits=True)
    assert_close_scaled(enc(x)["features"], want)
    # resized: timm's own eval transform on the PIL image
    arrs = smooth_images(2, 230, 190, 4)
    tf = timm.data.create_transform(**cfg)
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features(
            torch.stack([tf(Image.fromarray(a)) for a in arrs])), pre_logits=True)
    assert_cosine(ours(enc, arrs), want)
    legacy = E.build_encoder("timm", arch, resize="legacy")
    assert_close_scaled(ours(legacy, arrs), want)
    ident = identity_of("timm", arch)
    assert ident["arch"] == arch and ident["weights_sha256"] == W.file_sha256(snap / "model.safetensors")
    assert ident["preprocess"] == enc.preprocess.describe()
    assert identity_of("timm", "resnet50.a1_in1k", weights=str(snap / "model.safetensors")
                       )["preprocess"] != ident["preprocess"]
    with pytest.raises(InputError, match="did you mean"):
        E.encoder_preprocess("timm", "convnext_larg")
    tv = E.encoder_preprocess("timm", "resnet18.tv_in1k")  # a bilinear pretrained config
    assert tv.interpolation == "bilinear" and '"interpolation": "bilinear"' in tv.describe()
    assert E.encoder_preprocess("timm", "convnext_large_in22k") == E.encoder_preprocess("convnext")


def test_pretrained_option_joins_arch_and_tag():
    from evalkit.cli.options import with_pretrained

    assert with_pretrained("clip", "ViT-B-32", "openai") == "ViT-B-32:openai"
    assert with_pretrained("clip", None, "openai") == "ViT-L-14:openai"
    assert with_pretrained("timm", "convnext_small", "fb_in1k") == "convnext_small.fb_in1k"
    assert with_pretrained("timm", "vit_base_patch16_224", None) == "vit_base_patch16_224"
    with pytest.raises(InputError, match="--pretrained"):
        with_pretrained("dinov2", "vitl14", "x")
    ident = identity_of("clip", with_pretrained("clip", "ViT-B-32", "openai"),
                        weights=__file__)
    assert ident["arch"] == "ViT-B-32:openai"


# --------------------------------------------------------------------------- mae

TINY_VIT = dict(embed_dim=64, depth=2, num_heads=2)


def test_mae_matches_official_vit(tmp_path):
    from functools import partial

    from timm.models.vision_transformer import VisionTransformer

    # MAE's vit_large_patch16 recipe (models_vit.py) at a tiny width; dgm-eval loads the
    # pretrain checkpoint's "model" dict non-strictly into it and takes the normed CLS token.
    ref = VisionTransformer(img_size=224, patch_size=16, mlp_ratio=4, qkv_bias=True,
                            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **TINY_VIT)
    randomize(ref, 5)
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("head.")}
    sd.update({"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 64)})
    torch.save({"model": sd}, tmp_path / "mae_pretrain_vit_large.pth")
    enc = MAE.build_mae(weights=str(tmp_path / "mae_pretrain_vit_large.pth"), _vit_kwargs=TINY_VIT)
    x = batch(smooth_images(2, 224, 224, 5))
    with torch.no_grad():
        want = ref.forward_features((x / 255 - MEAN) / STD)[:, 0]
    assert_close_scaled(enc(x)["features"], want)
    # resized: dgm-eval's working MAE transform is pil_resize(image, (224, 224)) (clean-fid)
    from cleanfid.resize import make_resizer

    arrs = smooth_images(2, 250, 180, 6)
    resize = make_resizer("PIL", False, "bicubic", (224, 224))
    dgm = torch.stack([torch.from_numpy(resize(a)).permute(2, 0, 1) for a in arrs]) / 255
    with torch.no_grad():
        want = ref.forward_features((dgm - MEAN) / STD)[:, 0]
    assert_cosine(ours(enc, arrs), want)
    assert_close_scaled(ours(enc, arrs), want)
    with pytest.raises(InputError, match="no --resize legacy"):
        E.encoder_preprocess("mae", resize="legacy")
    with torch.device("meta"):
        assert MAE.mae_vit().num_features == E.get_encoder_spec("mae").outputs["vitl16"]["features"]


def test_mae_pos_embed_resize_is_maes_formula():
    pos = torch.randn(1, 1 + 7 * 7, 8)
    out = MAE.resize_pos_embed(pos, 14 * 14)
    grid = pos[:, 1:].reshape(1, 7, 7, 8).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(14, 14), mode="bicubic", align_corners=False)
    assert torch.equal(out[:, :1], pos[:, :1])
    assert torch.allclose(out[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 196, 8))


# --------------------------------------------------------------------------- data2vec

def tiny_data2vec_config(**kw):
    from transformers import Data2VecVisionConfig

    cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               use_relative_position_bias=False, use_shared_relative_position_bias=True,
               use_mean_pooling=False, image_size=224, patch_size=16)
    cfg.update(kw)
    return Data2VecVisionConfig(**cfg)


@pytest.mark.parametrize("mean_pooling", [False, True])
def test_data2vec_matches_transformers(tmp_path, mean_pooling):
    import transformers
    from transformers import Data2VecVisionModel

    # dgm-eval's transformers resized with PIL; transformers 5 names that processor ...Pil
    processor = getattr(transformers, "BeitImageProcessorPil", transformers.BeitImageProcessor)

    torch.manual_seed(7)
    ref = Data2VecVisionModel(tiny_data2vec_config(use_mean_pooling=mean_pooling),
                              add_pooling_layer=True)
    randomize(ref, 7)
    folder = tmp_path / "d2v"
    ref.save_pretrained(folder)  # config.json + model.safetensors, the hub layout
    ref = Data2VecVisionModel.from_pretrained(folder, add_pooling_layer=True).eval()
    enc = D2V.build_data2vec(weights=str(folder / "model.safetensors"))
    x = batch(smooth_images(2, 224, 224, 8))
    with torch.no_grad():
        want = ref(pixel_values=(x / 255 - 0.5) / 0.5).pooler_output
    assert_close_scaled(enc(x)["features"], want)
    # resized: BEiT's image processor as converted for the pretrained checkpoints
    arrs = smooth_images(2, 260, 200, 9)
    proc = processor(size=224, do_center_crop=False)
    with torch.no_grad():
        want = ref(**proc([Image.fromarray(a) for a in arrs], return_tensors="pt")).pooler_output
    assert_cosine(ours(enc, arrs), want)
    legacy = D2V.build_data2vec(weights=str(folder / "model.safetensors"), resize="legacy")
    assert_close_scaled(ours(legacy, arrs), want, rel=1e-4)


def test_data2vec_checkpoint_layouts(tmp_path, monkeypatch):
    from transformers import Data2VecVisionForImageClassification

    torch.manual_seed(8)
    cls = Data2VecVisionForImageClassification(tiny_data2vec_config(num_labels=3)).eval()
    snap = (tmp_path / "hf" / "hub" / "models--facebook--data2vec-vision-large" / "snapshots"
            / "main1")
    cls.config.save_pretrained(snap)
    torch.save(cls.state_dict(), snap / "pytorch_model.bin")  # the .bin layout, data2vec_vision. keys
    enc = E.build_encoder("data2vec")  # found in the HF cache, config.json beside it
    x = batch(smooth_images(1, 224, 224, 10))
    with torch.no_grad():
        want = cls.data2vec_vision(pixel_values=(x / 255 - 0.5) / 0.5).pooler_output
    assert_close_scaled(enc(x)["features"], want)
    assert identity_of("data2vec")["weights_sha256"] == W.file_sha256(snap / "pytorch_model.bin")


# --------------------------------------------------------------------------- swav

def swav_reference(sd: dict):
    """SwAV's ResNet-50: a 1-px zero pad layer, then conv1 with padding 2; loaded like
    dgm-eval (``module.`` stripped, non-strict: projection head and prototypes unused)."""
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    net.conv1.padding = (2, 2)
    net.fc = torch.nn.Identity()
    missing, _ = net.load_state_dict({k.replace("module.", ""): v for k, v in sd.items()},
                                     strict=False)
    assert not missing
    return lambda x: net.eval()(F.pad(x, (1, 1, 1, 1)))


@pytest.fixture(scope="module")
def swav_file(tmp_path_factory):
    from torchvision.models import resnet50

    net = randomize(resnet50(weights=None), 11)
    sd = {f"module.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    g = torch.Generator().manual_seed(12)
    sd["module.projection_head.0.weight"] = torch.randn(16, 2048, generator=g)
    sd["module.prototypes.weight"] = torch.randn(30, 16, generator=g)
    path = tmp_path_factory.mktemp("swav") / "swav_800ep_pretrain.pth.tar"
    torch.save(sd, path)
    return path, sd


def test_swav_matches_padded_resnet(swav_file):
    from torchvision import transforms as T

    path, sd = swav_file
    ref = swav_reference(sd)
    enc = SW.build_swav(weights=str(path))
    x = batch(smooth_images(2, 224, 224, 13))
    with torch.no_grad():
        want = ref((x / 255 - MEAN) / STD)
    assert_close_scaled(enc(x)["features"], want)
    enc.fast = False
    assert_close_scaled(enc(x)["features"], want)
    arrs = smooth_images(2, 256, 256, 14)  # square: dgm-eval's Resize(224) is square here too
    with torch.no_grad():
        want = ref(torch.stack([tv_transform(a, T.Resize(224)) for a in arrs]))
    assert_cosine(ours(enc, arrs), want)
    # legacy on a non-square image: dgm-eval's features, aspect kept
    legacy = SW.build_swav(weights=str(path), resize="legacy")
    arr = smooth_images(1, 300, 240, 15)
    with torch.no_grad():
        want = ref(tv_transform(arr[0], T.Resize(224))[None])
    assert_close_scaled(ours(legacy, arr), want)


def test_swav_cli_records_identity(swav_file, tmp_path):
    import json

    path, _ = swav_file
    (tmp_path / "imgs").mkdir()
    for i, arr in enumerate(smooth_images(2, 40, 30, 19)):
        Image.fromarray(arr).save(tmp_path / "imgs" / f"{i}.png")
    out = tmp_path / "f.npz"
    res = cli("features", tmp_path / "imgs", "-o", out, "--encoder", "swav", "--weights", path,
              "--resize", "legacy", "--workers", "0", "--quiet")
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        meta = json.loads(str(z["meta"]))
        assert z["features"].shape == (2, 2048)
    text = json.dumps(meta)
    assert W.file_sha256(path) in text and '"keep_aspect": true' in text.replace('\\"', '"')


def test_wrong_weights_file_is_named(swav_file, tmp_path):
    path, _ = swav_file
    with pytest.raises(InputError, match="simclr weights .*swav_800ep_pretrain"):
        SC.build_simclr(weights=str(path))
    with pytest.raises(InputError, match="mae weights .*swav_800ep"):
        MAE.build_mae(weights=str(path), _vit_kwargs=TINY_VIT)
    with pytest.raises(InputError, match="convnext weights .*swav_800ep"):
        CN.build_convnext(weights=str(path), _timm_model="convnext_atto")
    with pytest.raises(InputError, match="data2vec weights .*swav_800ep"):
        D2V.build_data2vec(weights=str(path))
    junk = tmp_path / "r50_1x_sk1.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="swav weights .*r50_1x_sk1.pth: cannot read"):
        SW.build_swav(weights=str(junk))
    (tmp_path / "imgs").mkdir()
    Image.fromarray(smooth_images(1, 32, 32, 0)[0]).save(tmp_path / "imgs" / "a.png")
    res = cli("features", tmp_path / "imgs", "-o", tmp_path / "o.npz", "--encoder", "simclr",
              "--weights", path, "--no-cache", "--workers", "0", "--quiet")
    assert res.exit_code == 2, res.output
    assert "swav_800ep_pretrain.pth.tar" in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------- simclr

def simclr_reference(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """SimCLRv2 r50_1x_sk1 computed straight off the converter's state-dict keys."""
    def bn(h, p):
        return F.batch_norm(h, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], False, 0.0, 1e-5)

    def cv(h, p, stride=1):
        w = sd[p + ".weight"]
        return F.conv2d(h, w, stride=stride, padding=(w.shape[-1] - 1) // 2)

    h = F.relu(bn(cv(x, "net.0.0", 2), "net.0.1.0"))
    h = F.relu(bn(cv(h, "net.0.2"), "net.0.3.0"))
    h = F.relu(bn(cv(h, "net.0.4"), "net.0.5.0"))
    h = F.max_pool2d(h, 3, 2, 1)
    for s in range(1, 5):
        n = len({k.split(".")[3] for k in sd if k.startswith(f"net.{s}.blocks.")})
        for i in range(n):
            p, stride = f"net.{s}.blocks.{i}", (2 if s > 1 and i == 0 else 1)
            if i == 0:
                sc = F.avg_pool2d(F.pad(h, (0, 1, 0, 1)), 2, stride)
                sc = bn(cv(sc, p + ".projection.shortcut.2"), p + ".projection.bn.0")
            else:
                sc = h
            t = F.relu(bn(cv(h, p + ".net.0"), p + ".net.1.0"))
            m = F.relu(bn(cv(t, p + ".net.2.main_conv.0", stride), p + ".net.2.main_conv.1.0"))
            a, b = m.chunk(2, dim=1)
            g = (a + b).mean(dim=(2, 3), keepdim=True)
            g = F.relu(bn(cv(g, p + ".net.2.mixing_conv.0"), p + ".net.2.mixing_conv.1.0"))
            g = torch.softmax(torch.stack(cv(g, p + ".net.2.mixing_conv.2").chunk(2, dim=1)), 0)
            t = bn(cv(g[0] * a + g[1] * b, p + ".net.3"), p + ".net.4.0")
            h = F.relu(sc + t)
    return h.mean(dim=(2, 3))


def test_simclr_matches_reference(tmp_path):
    from torchvision import transforms as T

    net = randomize(SC.SimCLRv2ResNet("r50_1x_sk1"), 16)
    with torch.no_grad():  # the mixing gate's last conv: large enough that the softmax matters
        for k, v in net.state_dict().items():
            if k.endswith("mixing_conv.2.weight"):
                v.mul_(20)
    sd = net.state_dict()
    head = {"layers.0.weight": torch.zeros(4, 4)}
    torch.save({"resnet": sd, "head": head}, tmp_path / "r50_1x_sk1.pth")
    enc = SC.build_simclr(weights=str(tmp_path / "r50_1x_sk1.pth"))
    x = batch(smooth_images(2, 224, 224, 17))
    with torch.no_grad():
        want = simclr_reference(sd, (x / 255 - MEAN) / STD)
        assert_close_scaled(enc(x)["features"], want)
        arrs = smooth_images(1, 256, 256, 18)
        want = simclr_reference(sd, tv_transform(arrs[0], T.Resize(224))[None])
        assert_cosine(ours(enc, arrs), want)
    bare = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save(bare, tmp_path / "bare.pth")  # the plain state dict, no BN counters
    SC.build_simclr(weights=str(tmp_path / "bare.pth"))


# --------------------------------------------------------------------------- listing

def test_encoders_listed_with_offline_error_naming_file(tmp_path):
    res = cli("encoders")
    assert res.exit_code == 0
    for name in ("inception", "dinov2", "clip", "convnext", "data2vec", "mae", "swav", "simclr",
                 "pixel", "timm"):
        assert name in res.output
    from evalkit.errors import OfflineError

    with pytest.raises(OfflineError, match=r"simclr weights not found: put r50_1x_sk1.pth at "
                                           r".*torch.*checkpoints"):
        E.build_encoder("simclr")
