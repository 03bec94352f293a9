"""Any torch.nn.Module as an encoder (evalkit.encoders.custom): identity and cache.

The identity holds a sha256 of the module's state dict and the declared preprocessing: the
same module with one weight changed gets another identity and is extracted again, an identical
module (another instance) shares the cached features, and the features are the module's
output on the normalised, resized images (computed here by hand)."""
import copy
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import evalkit
import evalkit.encoders as E
from evalkit.encoders.custom import CustomEncoder, state_sha256
from evalkit.errors import InputError
from evalkit.features.identity import identity_for
from evalkit.features.loader import load_features
from evalkit.features.options import ExtractOptions
from evalkit.images.resize import prepare
from evalkit.images.sources import resolve_source

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


class Tiny(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture
def registry(monkeypatch):
    """Custom registrations do not leak into other tests."""
    from evalkit.encoders import custom

    monkeypatch.setattr(E.ENCODERS, "_entries", dict(E.ENCODERS._entries))
    monkeypatch.setattr(custom, "_CUSTOM", {})


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (20 + k, 18, 3), dtype=np.uint8)).save(
            tmp_path / f"{k}.png")
    return tmp_path


def _load(images, cache, **kw):
    opts = ExtractOptions(encoder="tiny", device="cpu", workers=0, quiet=True, batch_size=4,
                          cache_dir=str(cache), **kw)
    return load_features(str(images), opts)


def test_features_are_the_modules_output_on_normalised_images(registry, images):
    module = Tiny()
    enc = evalkit.custom_encoder(module, name="tiny", input_size=12, mean=MEAN, std=STD)
    assert isinstance(enc, CustomEncoder)
    fs = _load(images, images / "cache", use_cache=False)
    src = resolve_source(images)
    x = torch.from_numpy(np.stack([prepare(src.load_rgb(i)[0], enc.preprocess)
                                   for i in range(len(src))]))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = module((x / 255.0 - mean) / std).numpy()
    np.testing.assert_allclose(fs.arrays["features"], want, rtol=0, atol=1e-6)
    assert fs.meta["encoder"]["name"] == "tiny"
    assert fs.meta["encoder"]["weights_sha256"] == state_sha256(module)


def test_a_changed_weight_reextracts_and_identical_modules_share_the_cache(registry, images):
    cache = images / "cache"
    module = Tiny()
    twin = copy.deepcopy(module)
    evalkit.custom_encoder(module, name="tiny", input_size=12, mean=MEAN, std=STD)
    first = _load(images, cache)
    again = _load(images, cache)
    assert (first.meta["cache_hit"], again.meta["cache_hit"]) == (False, True)
    key = identity_for(ExtractOptions(encoder="tiny")).key()
    with torch.no_grad():
        module.conv.weight[0, 0, 0, 0] += 0.5  # one weight, changed in place
    assert identity_for(ExtractOptions(encoder="tiny")).key() != key
    changed = _load(images, cache)
    assert changed.meta["cache_hit"] is False
    assert not np.array_equal(changed.arrays["features"], first.arrays["features"])
    evalkit.custom_encoder(twin, name="tiny", input_size=12, mean=MEAN, std=STD)
    same = _load(images, cache)
    assert same.meta["cache_hit"] is True
    np.testing.assert_array_equal(same.arrays["features"], first.arrays["features"])
    # the preprocessing is part of the identity too
    evalkit.custom_encoder(copy.deepcopy(twin), name="tiny", input_size=12, mean=MEAN,
                           std=(0.2, 0.25, 0.31))
    assert identity_for(ExtractOptions(encoder="tiny")).key() != key
    assert _load(images, cache).meta["cache_hit"] is False


def test_score_takes_the_encoder_object(registry, images, tmp_path):
    enc = evalkit.custom_encoder(Tiny(), name="tiny", input_size=12)
    res = evalkit.score(str(images), str(images), encoder=enc, metrics="fd", device="cpu",
                        workers=0, use_cache=False, quiet=True)
    assert res.metrics["fd"] == pytest.approx(0.0, abs=1e-6)  # the same images
    assert res.record["encoder"]["name"] == "tiny"
    with pytest.raises(InputError, match="encoder= takes an encoder name"):
        evalkit.score(str(images), str(images), encoder=Tiny(), metrics="fd")


def test_names_and_values_checked(registry):
    with pytest.raises(InputError, match="'dinov2' is already a registered encoder"):
        evalkit.custom_encoder(Tiny(), name="dinov2", input_size=8)
    with pytest.raises(InputError, match="resize 'bilinear'"):
        evalkit.custom_encoder(Tiny(), name="tiny", input_size=8, resize="bilinear")
    with pytest.raises(InputError, match="std > 0"):
        evalkit.custom_encoder(Tiny(), name="tiny", input_size=8, std=(1, 0, 1))
    a, b = Tiny(0), Tiny(0)
    assert state_sha256(a) == state_sha256(b) != state_sha256(Tiny(1))
    b.head = torch.nn.Sequential(torch.nn.ReLU(), b.head)  # another structure, other keys
    assert state_sha256(a) != state_sha256(b)


PLUGIN = textwrap.dedent('''
    import torch
    import evalkit


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 6, 3)

        def forward(self, x):
            return self.conv(x).amax(dim=(2, 3))


    def spec():
        return evalkit.custom_encoder(Net(), name="mynet", input_size=16,
                                      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)).spec
''')


def test_cli_through_the_entry_point_group(registry, images, tmp_path, monkeypatch):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "mynet_plugin.py").write_text(PLUGIN)
    info = tmp_path / "plug" / "mynet_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mynet-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[evalkit.encoders]\nmynet = mynet_plugin:spec\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plug"))
    monkeypatch.setattr(E, "_plugins_loaded", False)
    from evalkit.cli import main

    out = tmp_path / "f.npz"
    res = CliRunner().invoke(main, ["features", str(images), "-o", str(out), "--encoder", "mynet",
                                    "--device", "cpu", "--workers", "0", "--no-cache", "--quiet"])
    assert res.exit_code == 0, res.output
    with np.load(out, allow_pickle=False) as z:
        assert z["features"].shape == (6, 6)


def test_in_training_evaluator_takes_the_encoder_object(registry, images):
    enc = evalkit.custom_encoder(Tiny(), name="tiny", input_size=12, mean=MEAN, std=STD)
    ev = evalkit.Evaluator(encoder=enc, ref=str(images), metrics="fd", device="cpu")
    src = resolve_source(images)
    for i in range(len(src)):
        rgb = src.load_rgb(i)[0]
        ev.update(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    record = ev.compute()
    assert record["encoder"]["name"] == "tiny"
    assert record["metrics"]["fd"] == pytest.approx(0.0, abs=1e-4)
