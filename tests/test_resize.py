"""Clean resize as matrix products (evalkit.images.resize) against clean-fid's PIL resizer and PIL itself:
odd sizes, upscales, extreme aspect ratios, 1×1 images, centre crops (CLIP, ConvNeXt 256→224)."""
import numpy as np
import pytest
import torch
from PIL import Image
from stylegan3_reference import stylegan3_detector_resize

from evalkit.encoders.base import Preprocess
from evalkit.images.resize import (
    clean_resize,
    pil_bicubic_weights,
    prepare,
    resize_batch,
    resize_planes,
    target_size,
)

TOL = 1e-4  # max abs on the [0, 255] scale (issue 9)

SHAPES = [(256, 256, 299), (37, 53, 299), (512, 300, 224), (1, 500, 299), (500, 3, 299),
          (1, 1, 299), (1, 1, 1), (300, 300, 64), (7, 9, 5), (299, 299, 299), (2, 1000, 16)]


def _img(h, w, seed=0):
    return np.random.default_rng(seed + h * 7 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("h,w,size", SHAPES)
def test_equals_cleanfid_resizer(h, w, size):
    from cleanfid.resize import make_resizer

    img = _img(h, w)
    ref = make_resizer("PIL", False, "bicubic", (size, size))(img).transpose(2, 0, 1)
    batch = torch.from_numpy(np.stack([img, img[::-1, ::-1].copy()]))
    out = resize_batch(batch, Preprocess(size)).numpy()
    assert out.shape == (2, 3, size, size) and out.dtype == np.float32
    assert np.abs(out[0] - ref).max() <= TOL
    assert np.abs(out[0] - clean_resize(img, size)).max() <= TOL
    assert np.abs(out[1] - clean_resize(img[::-1, ::-1].copy(), size)).max() <= TOL


@pytest.mark.parametrize("h,w,size,crop_from", [(256, 256, 224, 0), (256, 256, 224, 256),
                                                (300, 451, 224, 256), (451, 300, 224, 0),
                                                (225, 224, 224, 0), (3, 700, 16, 20)])
def test_crop_and_crop_from_equal_pil_then_torchvision_offsets(h, w, size, crop_from):
    img = _img(h, w, 1)
    pp = Preprocess(size, crop=True, crop_from=crop_from)
    out = resize_batch(torch.from_numpy(img[None]), pp).numpy()[0]
    # hand-built reference: PIL float32 resize of each channel, then torchvision's centre offsets
    short = crop_from or size
    tw, th = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    planes = [np.asarray(Image.fromarray(img[:, :, c].astype(np.float32)).resize(
        (tw, th), Image.BICUBIC)) if (tw, th) != (w, h) else img[:, :, c].astype(np.float32)
        for c in range(3)]
    top, left = int(round((th - size) / 2)), int(round((tw - size) / 2))
    ref = np.clip(np.stack(planes), 0, 255)[:, top:top + size, left:left + size]
    assert out.shape == (3, size, size)
    assert np.abs(out - ref).max() <= TOL
    assert np.abs(out - prepare(img, pp)).max() <= TOL


def test_resize_none_keeps_native_pixels():
    img = _img(11, 13)
    out = resize_batch(torch.from_numpy(img[None]), Preprocess(299, resize="none")).numpy()[0]
    np.testing.assert_array_equal(out, img.transpose(2, 0, 1).astype(np.float32))


def test_weights_rows_sum_to_one_and_match_hand_computed_case():
    # 4 -> 2: scale 2, filterscale 2, support 4; output 0 centred at 1.0 reads pixels 0..3
    w = pil_bicubic_weights(4, 2)
    k = lambda x: (1.5 * x - 2.5) * x * x + 1 if x < 1 else ((x - 5) * x + 8) * x * -0.5 + 2.0  # noqa: E731
    raw = np.array([k(abs(i - 1.0 + 0.5) / 2) for i in range(4)])
    np.testing.assert_allclose(w[0], raw / raw.sum(), rtol=1e-12)
    for a, b in ((256, 299), (1, 5), (500, 3), (7, 7)):
        np.testing.assert_allclose(pil_bicubic_weights(a, b).sum(axis=1), 1.0, rtol=1e-12)


def test_float64_arithmetic_is_closer_to_pil():
    img = _img(64, 48)
    ref = clean_resize(img, 37)
    x = torch.from_numpy(img[None]).permute(0, 3, 1, 2)
    d32 = np.abs(resize_planes(x, 37).numpy()[0] - ref).max()
    d64 = np.abs(resize_planes(x, 37, dtype=torch.float64).numpy()[0] - ref).max()
    assert d64 <= d32 <= TOL


def test_target_size_follows_torchvision():
    assert target_size(300, 451, 224, crop=True) == (224, 336, 0, 56)
    assert target_size(451, 300, 224, crop=True, crop_from=256) == (384, 256, 80, 16)
    assert target_size(10, 20, 5) == (5, 5, 0, 0)


@pytest.mark.parametrize("h, w", [(64, 64), (96, 150), (320, 300), (512, 512), (299, 299)])
def test_tf1_bilinear_equals_torch_fidelity_bit_for_bit(h, w):
    """TF1 ResizeBilinear (no half-pixel centres) as torch-fidelity reproduces it, exactly."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    from evalkit.images.resize import tf1_bilinear

    x = torch.from_numpy(np.random.default_rng(h * w).integers(0, 256, (2, 3, h, w))).float()
    want = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert torch.equal(tf1_bilinear(x, 299), want)
    if (h, w) != (299, 299):  # and it is not F.interpolate's half-pixel resize
        other = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        assert (other - want).abs().max() > 1.0


@pytest.mark.parametrize("h, w", [(32, 32), (64, 64), (96, 150), (256, 256), (512, 512)])
def test_stylegan3_resize_is_the_detectors(h, w):
    """``--resize stylegan3`` runs the detector's resize exactly, and samples TF1's positions:
    it differs from TF1's ResizeBilinear only by float32 round-off of the positions (a position
    error of a few ulps of W, times a pixel step of at most 255), and is not F.interpolate's."""
    from evalkit.images.resize import stylegan3_bilinear, tf1_bilinear

    x = torch.from_numpy(np.random.default_rng(h + w).integers(0, 256, (2, 3, h, w))).float()
    want = stylegan3_detector_resize(x)
    assert torch.equal(stylegan3_bilinear(x, 299), want)
    bound = 255 * max(h, w) * 2.0**-21
    assert (tf1_bilinear(x, 299) - want).abs().max() <= bound
    other = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (other - want).abs().max() > 1.0
