"""The uint8 / device-resize data path of the extraction engine (issue 9), run on CPU tensors:
same features as the worker-side PIL resize, mixed sizes in source order, several encoders from
one decode, the out-of-memory fallback, and the fast PNG decoder's pixels."""
import io
import warnings

import numpy as np
import pytest
import torch
from conftest import TinyEncoder, write_images
from PIL import Image

from evalkit.encoders.base import Preprocess
from evalkit.features.extract import extract
from evalkit.images import decode as imageio
from evalkit.images.decode import decode_image, decode_rgb, to_rgb_uint8
from evalkit.images.sources import resolve_source


class _Crop(TinyEncoder):
    """The tiny encoder on a ConvNeXt-style crop (shorter side 20, centre 16×16)."""

    def __init__(self):
        super().__init__()
        self.preprocess = Preprocess(size=16, crop=True, crop_from=20)


class _Big(TinyEncoder):
    """The tiny encoder at 19×19 input (pooled to 16×16 bilinearly in-network)."""

    def __init__(self):
        super().__init__()
        self.preprocess = Preprocess(size=19)


def _mixed(tmp_path):
    root = tmp_path / "mixed"
    write_images(root, 5, size=(24, 20), seed=1)
    write_images(root / "z", 4, size=(31, 17), seed=2)  # another size, after the first five
    write_images(root / "y", 3, size=(1, 1), seed=3)
    return resolve_source(root)


def _run(src, enc, **kw):
    kw.setdefault("batch_size", 5)
    return extract(src, enc, device="cpu", quiet=True, **kw)


@pytest.mark.parametrize("make", [TinyEncoder, _Crop, _Big, lambda: TinyEncoder("legacy")])
def test_device_resize_path_equals_worker_path(tmp_path, make):
    src = _mixed(tmp_path)
    ref = _run(src, make(), resize_on="workers")
    for workers in (0, 2):
        got = _run(src, make(), resize_on="device", workers=workers)
        assert got.files == ref.files  # source order kept across size groups
        assert got.meta["content_fingerprint"] == ref.meta["content_fingerprint"]
        for key in ref.arrays:
            np.testing.assert_allclose(got.arrays[key], ref.arrays[key], rtol=0, atol=1e-5)


def test_device_path_equals_worker_path_for_random_inception(tmp_path):
    from evalkit.encoders import inception as I
    from evalkit.encoders import weights as W

    net = W.build_module(I.FIDInceptionV3, random_init=True, init=I._init_random, seed=1)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in net.state_dict().items()
                if not k.endswith("num_batches_tracked")}, path)
    from evalkit.encoders import build_encoder

    enc = build_encoder("inception", weights=str(path))
    root = tmp_path / "imgs"
    write_images(root, 4, size=(64, 48), seed=5)
    src = resolve_source(root)
    ref = _run(src, enc, resize_on="workers", batch_size=4)
    got = _run(src, enc, resize_on="device", batch_size=4)
    for key in ref.arrays:
        scale = np.abs(ref.arrays[key]).max()
        assert np.abs(got.arrays[key] - ref.arrays[key]).max() <= 1e-5 * max(scale, 1.0), key


@pytest.mark.parametrize("resize_on", ["device", "workers"])
def test_several_encoders_equal_separate_runs(tmp_path, resize_on):
    src = _mixed(tmp_path)
    encs = [TinyEncoder(), _Crop(), TinyEncoder("legacy"), _Big()]
    together = _run(src, encs, resize_on=resize_on, batch_size=4)
    assert isinstance(together, list) and len(together) == 4
    for enc, fs in zip(encs, together):
        alone = _run(src, enc, resize_on=resize_on, batch_size=4)
        assert fs.files == alone.files and fs.meta["content_fingerprint"] == \
            alone.meta["content_fingerprint"]
        for key in alone.arrays:
            if resize_on == "device":  # groups by native size either way: the same products
                np.testing.assert_array_equal(fs.arrays[key], alone.arrays[key])
            else:  # groups by every input's shape: batch composition may differ (float rounding)
                np.testing.assert_allclose(fs.arrays[key], alone.arrays[key], rtol=1e-6,
                                           atol=1e-6)
    # different preprocessing really gives different inputs
    assert not np.allclose(together[0].arrays["features"], together[1].arrays["features"])


def test_several_encoders_with_shards_deliver_one_list_per_range(tmp_path):
    from evalkit.features.distributed import ShardRange

    src = _mixed(tmp_path)
    ranges = [ShardRange(0, 2, 0, 7), ShardRange(1, 2, 7, 12)]
    got = []
    _run(src, [TinyEncoder(), _Crop()], shards=ranges, on_shard=got.append)
    assert [[s.range for s in per] for per in got] == [[ranges[0]] * 2, [ranges[1]] * 2]
    alone = _run(src, _Crop(), shards=ranges)
    np.testing.assert_array_equal(got[1][1].arrays["features"], alone[1].arrays["features"])


class _Runaway(Exception):
    """The engine called the encoder more often than halving can need: a retry loop."""


class _OOMAbove(TinyEncoder):
    """Raises CUDA's out-of-memory error on batches larger than ``limit``; records every
    batch size it is called with, and stops a runaway retry loop after ``max_calls`` calls
    (so that bug fails the test at once instead of hanging it)."""

    def __init__(self, limit, max_calls=50):
        super().__init__()
        self.limit = limit
        self.max_calls = max_calls
        self.sizes = []

    def forward(self, images):
        self.sizes.append(images.shape[0])
        if len(self.sizes) > self.max_calls:
            raise _Runaway(f"encoder called {len(self.sizes)} times: {self.sizes[:12]}...")
        if images.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return super().forward(images)


def test_out_of_memory_halves_the_batch_once_with_one_warning(image_dir):
    src = resolve_source(image_dir)  # 12 images
    ref = _run(src, TinyEncoder(), batch_size=12)
    enc = _OOMAbove(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _run(src, enc, batch_size=12)
    oom = [w for w in caught if "out of device memory" in str(w.message)]
    assert len(oom) == 2  # 12 -> 6, then 6 -> 3; later batches start at 3
    assert enc.sizes == [12, 6, 3, 3, 3, 3]  # each size once, then the 12 rows at 3
    np.testing.assert_allclose(got.arrays["features"], ref.arrays["features"], atol=1e-7)


def test_out_of_memory_at_one_image_stops_with_a_typed_error_naming_the_sizes(image_dir):
    from evalkit.errors import DeviceMemoryError

    src = resolve_source(image_dir)
    enc = _OOMAbove(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(DeviceMemoryError, match=r"1 image per batch \(tried 4, 2, 1\)"):
            _run(src, enc, batch_size=4)
    assert enc.sizes == [4, 2, 1]  # halved to 1, then stopped: no retry loop


# ---------------------------------------------------------------------------- PNG decoding

def _pngs():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (23, 29, 4), dtype=np.uint8)
    rgb = Image.fromarray(arr[:, :, :3])
    out = {}

    def save(name, img, **kw):
        buf = io.BytesIO()
        img.save(buf, "PNG", **kw)
        out[name] = buf.getvalue()

    save("RGB", rgb)
    save("RGBA", Image.fromarray(arr))
    save("L", rgb.convert("L"))
    save("LA", Image.merge("LA", (rgb.convert("L"), Image.fromarray(arr[:, :, 3]))))
    save("P", rgb.quantize(32))
    save("P+tRNS", rgb.quantize(32), transparency=2)
    save("RGB+tRNS", rgb, transparency=(1, 2, 3))
    save("L+tRNS", rgb.convert("L"), transparency=9)
    save("I;16", Image.fromarray(arr[:, :, 0].astype(np.uint16) * 257 + 100))
    save("1", rgb.convert("1"))
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_decode import _interlaced_rgb, _rgb16

    out["RGB interlaced"] = _interlaced_rgb(arr)
    out["RGB16"] = _rgb16(arr)
    return out


@pytest.mark.parametrize("fast", [True, False])
def test_decode_rgb_equals_pil_path_for_every_png_kind(monkeypatch, fast):
    if fast:
        pytest.importorskip("pyspng")
        monkeypatch.setattr(imageio, "_fast_png", None)
    else:
        monkeypatch.setattr(imageio, "_fast_png", False)
    for kind, blob in _pngs().items():
        ref = to_rgb_uint8(decode_image(blob, kind))
        got, jpeg = decode_rgb(blob, kind)
        assert not jpeg and got.dtype == np.uint8 and got.shape == ref.shape, kind
        np.testing.assert_array_equal(got, ref, err_msg=kind)


def test_fast_png_is_used_for_8bit_rgb_and_pil_decides_the_rest(monkeypatch):
    calls = []
    monkeypatch.setattr(imageio, "_fast_png", lambda b: calls.append(1) or np.zeros((2, 2, 3),
                                                                                    np.uint8))
    blobs = _pngs()
    imageio._fast_png_rgb(blobs["RGB"])
    imageio._fast_png_rgb(blobs["P"])
    imageio._fast_png_rgb(blobs["I;16"])
    assert len(calls) == 1
    # a wrong shape from the fast decoder, or its failure, goes to PIL
    assert imageio._fast_png_rgb(blobs["RGB"]) is None
    import cv2  # a decoder that knows no pixel limit: the limit is checked before it runs

    monkeypatch.setattr(imageio, "_fast_png", lambda b: cv2.imdecode(
        np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1])
    assert imageio._fast_png_rgb(blobs["RGB"]) is not None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a "bomb": PIL must refuse it
    with pytest.raises(Exception, match="decompression bomb"):
        decode_rgb(blobs["RGB"], "bomb.png")


# ---------------------------------------------------------------------- on a CUDA device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_resize_equals_cleanfid():
    from cleanfid.resize import make_resizer

    from evalkit.images.resize import resize_batch

    for h, w, size in ((256, 256, 299), (37, 53, 224), (1, 500, 299), (1, 1, 299)):
        img = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = make_resizer("PIL", False, "bicubic", (size, size))(img).transpose(2, 0, 1)
        with torch.autocast("cuda", dtype=torch.bfloat16):  # the resize must ignore autocast
            got = resize_batch(torch.from_numpy(img[None]).cuda(), Preprocess(size))
        assert got.dtype == torch.float32
        assert np.abs(got[0].cpu().numpy() - ref).max() <= 1e-4


@cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_cuda_uint8_path_equals_cpu_worker_path(tmp_path, precision):
    src = _mixed(tmp_path)
    ref = _run(src, [TinyEncoder(), _Crop()], resize_on="workers")
    got = extract(src, [TinyEncoder(), _Crop()], device="cuda", quiet=True, batch_size=5,
                  workers=2, precision=precision)
    for a, b in zip(got, ref):
        assert a.files == b.files
        for key in b.arrays:  # tiny encoder: linear in the pixels, the resize dominates
            np.testing.assert_allclose(a.arrays[key], b.arrays[key], rtol=0, atol=2e-5)
