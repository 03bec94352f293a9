"""The extraction engine: one pass, all outputs, order, batch-size and worker independence,
equal features from a folder, a zip and arrays, native-size batching, bad images and skip_bad."""
import warnings
import zipfile

import numpy as np
import pytest
import torch
from conftest import TinyEncoder, write_images
from PIL import Image

from evalkit.errors import BadImageWarning, InputError
from evalkit.features.extract import extract, resolve_device
from evalkit.images.sources import resolve_source


def _expected(paths):
    """The tiny encoder's features computed independently: clean-fid's own ``clean`` resizer
    (PIL bicubic on float32 channels, no re-quantisation) to 16×16, 4×4 mean, / 255."""
    from cleanfid.resize import make_resizer

    resize = make_resizer("PIL", False, "bicubic", (16, 16))
    rows = []
    for p in paths:
        x = resize(np.asarray(Image.open(p).convert("RGB"))).transpose(2, 0, 1)
        x = x.astype(np.float64) / 255
        rows.append(x.reshape(3, 4, 4, 4, 4).mean(axis=(2, 4)).reshape(-1))
    return np.array(rows)


def _run(src, bs=5, workers=0, **kw):
    return extract(src, TinyEncoder(), batch_size=bs, device="cpu", workers=workers,
                   quiet=True, **kw)


def test_features_equal_hand_computed_and_every_output(class_dir):
    src = resolve_source(class_dir)
    fs = _run(src)
    assert set(fs.arrays) == {"features", "logits"}
    assert fs.arrays["features"].dtype == np.float32
    np.testing.assert_allclose(fs.arrays["features"], _expected(class_dir / f for f in src.locators),
                               rtol=1e-5, atol=1e-6)
    assert fs.files == src.locators and fs.labels.tolist() == src.labels.tolist()
    t = fs.meta["timing"]
    assert set(t) == {"data_wait_s", "forward_s", "total_s"} and t["total_s"] >= t["forward_s"]
    assert fs.meta["n_skipped"] == 0 and fs.meta["jpeg"] is False
    assert fs.meta["content_fingerprint"].startswith("sha256:")


def test_batch_size_and_workers_do_not_change_features(image_dir):
    src = resolve_source(image_dir)
    ref = _run(src, bs=1)
    for bs, workers in ((4, 0), (12, 0), (5, 2)):
        fs = _run(src, bs=bs, workers=workers)
        for key in ref.arrays:
            np.testing.assert_allclose(fs.arrays[key], ref.arrays[key], rtol=1e-6, atol=1e-7)
        assert fs.meta["content_fingerprint"] == ref.meta["content_fingerprint"]


def test_folder_zip_and_arrays_give_the_same_features(tmp_path):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, size=(7, 18, 22, 3), dtype=np.uint8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        for i, arr in enumerate(imgs):
            Image.fromarray(arr).save(folder / f"{i}.png")
            zf.write(folder / f"{i}.png", f"{i}.png")
    np.savez(tmp_path / "imgs.npz", arr_0=imgs)
    np.save(tmp_path / "imgs.npy", imgs)
    ref = _run(resolve_source(folder))
    for name in ("imgs.zip", "imgs.npz", "imgs.npy"):
        fs = _run(resolve_source(tmp_path / name), workers=2 if name == "imgs.npz" else 0)
        np.testing.assert_array_equal(fs.arrays["features"], ref.arrays["features"])
    zfs = _run(resolve_source(tmp_path / "imgs.zip"))
    assert zfs.meta["content_fingerprint"] == ref.meta["content_fingerprint"]  # same names+bytes


def test_content_fingerprint_tracks_bytes_not_mtimes(image_dir):
    import os
    a = _run(resolve_source(image_dir)).meta["content_fingerprint"]
    os.utime(image_dir / "img000.png", ns=(5, 5))
    assert _run(resolve_source(image_dir)).meta["content_fingerprint"] == a
    Image.fromarray(np.zeros((24, 20, 3), np.uint8)).save(image_dir / "img000.png")
    assert _run(resolve_source(image_dir)).meta["content_fingerprint"] != a


def test_native_size_batches_group_equal_sizes(tmp_path):
    folder = tmp_path / "mixed"
    write_images(folder, 3, size=(16, 16))
    for i, hw in enumerate([(20, 30), (16, 16), (31, 17)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (*hw, 3), np.uint8)).save(
            folder / f"z{i}.png")
    src = resolve_source(folder)
    enc = TinyEncoder(resize="legacy")
    assert enc.preprocess.resize == "none"
    fs = extract(src, enc, batch_size=4, device="cpu", workers=0, quiet=True)
    one = extract(src, TinyEncoder(resize="legacy"), batch_size=1, device="cpu", workers=0,
                  quiet=True)
    np.testing.assert_allclose(fs.arrays["features"], one.arrays["features"], rtol=1e-6)
    # the 16×16 images need no in-network resize: equal to the clean path on them
    clean = _run(src)
    for i, loc in enumerate(src.locators):
        if Image.open(folder / loc).size == (16, 16):
            np.testing.assert_allclose(fs.arrays["features"][i], clean.arrays["features"][i],
                                       rtol=1e-6)


@pytest.mark.parametrize("case", ["truncated", "zero", "text", "bomb", "zip_odd"])
def test_bad_image_raises_naming_it_or_is_skipped_and_counted(tmp_path, monkeypatch, case):
    folder = tmp_path / "set"
    write_images(folder, 6, size=(40, 40))
    bad = folder / "img003.png"
    if case == "truncated":
        bad.write_bytes(bad.read_bytes()[:100])
    elif case == "zero":
        bad.write_bytes(b"")
    elif case == "text":
        bad.write_text("this is not an image")
    elif case == "bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "img000.png")
        Image.fromarray(np.zeros((60, 60, 3), np.uint8)).save(bad)
        for i in (1, 2, 4, 5):
            Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / f"img{i:03d}.png")
    if case == "zip_odd":
        zpath = tmp_path / "set.zip"
        with zipfile.ZipFile(zpath, "w") as zf:
            for p in sorted(folder.iterdir()):
                zf.write(p, p.name if p != bad else "../img003.png")
        src, name = resolve_source(zpath), "set.zip::../img003.png"
    else:
        src, name = resolve_source(folder), "img003.png"
    with pytest.raises(InputError, match=name.replace(".", r"\.")) as exc:
        _run(src, bs=2)
    assert "\n" not in str(exc.value)
    with pytest.warns(BadImageWarning, match=name.replace(".", r"\.")):
        fs = _run(src, bs=2, skip_bad=True)
    assert fs.n == 5 and fs.meta["n_skipped"] == 1 and len(fs.files) == 5
    assert fs.meta["skipped"] == [loc for loc in src.locators if loc.endswith("img003.png")]
    assert not any(f.endswith("img003.png") for f in fs.files)
    if case == "zip_odd":  # the other rows are the folder's, in order
        full = _run(resolve_source(folder), bs=2)
        np.testing.assert_array_equal(fs.arrays["features"], full.arrays["features"][[0, 1, 2, 4, 5]])


def test_all_images_bad_is_an_error(tmp_path):
    (tmp_path / "d").mkdir()
    for i in range(3):
        (tmp_path / "d" / f"{i}.png").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        with pytest.raises(InputError, match="none of its 3 images"):
            _run(resolve_source(tmp_path / "d"), skip_bad=True)


def test_jpeg_flag_and_reduced_precision(tmp_path):
    write_images(tmp_path / "j", 4, ext="jpg")
    src = resolve_source(tmp_path / "j")
    fs32 = _run(src)
    assert fs32.meta["jpeg"] is True
    fs16 = _run(src, precision="bf16")
    assert fs16.arrays["features"].dtype == np.float32
    np.testing.assert_allclose(fs16.arrays["logits"], fs32.arrays["logits"], atol=0.1)
    with pytest.raises(InputError, match="precision"):
        _run(src, precision="fp8")


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InputError, match="--device"):
        resolve_device("tpu-9")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            resolve_device("cuda")
