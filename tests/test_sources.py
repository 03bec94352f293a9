"""Sources and image I/O: clean resize vs clean-fid, RGB conversion per mode, folders, zips,
arrays, fingerprints, and bad inputs (each an InputError naming the file)."""
import io
import os
import zipfile

import numpy as np
import pytest
from conftest import write_images
from PIL import Image

from evalkit.errors import InputError
from evalkit.images.decode import decode_image, to_rgb_uint8
from evalkit.images.resize import clean_resize
from evalkit.images.sources import open_image, resolve_source

cleanfid_resize = pytest.importorskip("cleanfid.resize")


# -- clean resize ---------------------------------------------------------------------------
@pytest.mark.parametrize("hw,size", [((30, 40), 17), ((13, 13), 32), ((64, 48), 16),
                                     ((7, 9), 29), ((33, 31), 33), ((50, 50), 50)])
def test_clean_resize_equals_cleanfid(hw, size):
    rng = np.random.default_rng(hw[0] * 100 + size)
    img = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    ref = cleanfid_resize.make_resizer("PIL", False, "bicubic", (size, size))(img)
    ours = clean_resize(img, size)
    assert ours.shape == (3, size, size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours.transpose(1, 2, 0), ref, rtol=0, atol=1e-4)
    assert ours.min() >= 0 and ours.max() <= 255
    if hw != (size, size):
        assert not np.allclose(ours, np.round(ours))  # no re-quantisation


@pytest.mark.parametrize("hw", [(20, 40), (41, 20), (16, 16)])
def test_clean_resize_crop_is_shorter_side_then_centre(hw):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    h, w = hw
    th, tw = (16, int(16 * w / h)) if h <= w else (int(16 * h / w), 16)
    full = cleanfid_resize.make_resizer("PIL", False, "bicubic", (tw, th))(img)
    top, left = int(round((th - 16) / 2)), int(round((tw - 16) / 2))
    expected = full[top:top + 16, left:left + 16]
    ours = clean_resize(img, 16, crop=True)
    assert ours.shape == (3, 16, 16)
    np.testing.assert_allclose(ours.transpose(1, 2, 0), expected, atol=1e-4)


# -- RGB conversion -------------------------------------------------------------------------
def _rgb(img):
    out = to_rgb_uint8(img)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    return out


def test_modes_convert_as_documented():
    grey = np.array([[0, 77, 255]], dtype=np.uint8)
    assert _rgb(Image.fromarray(grey, "L"))[0].tolist() == [[0] * 3, [77] * 3, [255] * 3]
    # 1-bit: 0 / 255
    assert _rgb(Image.fromarray(grey).convert("1"))[0, :, 0].tolist() == [0, 0, 255]
    # RGBA / LA: alpha dropped, not composited
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0], [40, 50, 60, 128]]], np.uint8), "RGBA")
    assert _rgb(rgba)[0].tolist() == [[10, 20, 30], [40, 50, 60]]
    la = Image.fromarray(np.array([[[90, 0], [200, 255]]], np.uint8), "LA")
    assert _rgb(la)[0].tolist() == [[90] * 3, [200] * 3]
    # P with a transparent palette entry: the palette colour
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.putdata([0, 1])
    p.info["transparency"] = 0
    assert _rgb(p)[0].tolist() == [[255, 0, 0], [0, 0, 255]]
    buf = io.BytesIO()
    p.save(buf, format="PNG", transparency=0)  # round trip through a real file
    assert _rgb(decode_image(buf.getvalue(), "p.png"))[0].tolist() == [[255, 0, 0], [0, 0, 255]]
    # 16-bit: scaled (v / 257, rounded), not clipped at 255
    v16 = np.array([[0, 257, 32896, 65535, 1000]], dtype=np.uint16)
    img16 = Image.fromarray(v16)
    assert img16.mode.startswith("I;16")
    assert _rgb(img16)[0, :, 0].tolist() == [0, 1, 128, 255, 4]
    buf = io.BytesIO()
    img16.save(buf, format="PNG")
    assert _rgb(decode_image(buf.getvalue(), "x.png"))[0, :, 0].tolist() == [0, 1, 128, 255, 4]
    # I (32-bit): 16-bit scale, clipped to 0..65535
    vi = np.array([[-5, 257, 65535, 100000]], dtype=np.int32)
    assert _rgb(Image.fromarray(vi, "I"))[0, :, 0].tolist() == [0, 1, 255, 255]
    # F: the 0..255 scale of L, rounded and clipped
    vf = np.array([[-3.0, 1.4, 1.6, 300.0]], dtype=np.float32)
    assert _rgb(Image.fromarray(vf, "F"))[0, :, 0].tolist() == [0, 1, 2, 255]
    # CMYK: PIL's conversion
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))
    assert _rgb(cmyk)[0, 0].tolist() == [255, 0, 0]


# -- folders --------------------------------------------------------------------------------
def test_directory_is_recursive_sorted_and_labelled(tmp_path):
    root = tmp_path / "set"
    write_images(root, 6, classes=("b_cls", "a_cls"))
    write_images(root / "a_cls" / "deep", 2, seed=3)
    for name in (".hidden.png", "notes.txt"):
        (root / "a_cls" / name).write_bytes(b"junk")
    (root / ".git").mkdir()
    (root / ".git" / "x.png").write_bytes(b"junk")
    (root / "b_cls" / "UPPER.JPG").write_bytes(b"")  # extension match is case-insensitive
    src = resolve_source(str(root))
    assert src.kind == "dir"
    assert src.locators == sorted(src.locators)
    assert src.locators[:2] == ["a_cls/deep/img000.png", "a_cls/deep/img001.png"]
    assert "b_cls/UPPER.JPG" in src.locators and len(src) == 9
    assert src.classes == ["a_cls", "b_cls"]
    assert src.labels.tolist() == [0 if loc.startswith("a_cls") else 1 for loc in src.locators]


def test_flat_folder_or_single_subfolder_has_no_labels(tmp_path):
    write_images(tmp_path / "flat", 3)
    assert resolve_source(tmp_path / "flat").labels is None
    write_images(tmp_path / "one" / "only", 3)
    assert resolve_source(tmp_path / "one").labels is None
    write_images(tmp_path / "mixed" / "c1", 2)
    write_images(tmp_path / "mixed" / "c2", 2)
    write_images(tmp_path / "mixed", 1, seed=9)  # an image outside the class folders
    assert resolve_source(tmp_path / "mixed").labels is None


def test_fast_and_content_fingerprints(image_dir, tmp_path):
    a = resolve_source(image_dir)
    assert resolve_source(image_dir).fingerprint == a.fingerprint
    first = image_dir / a.locators[0]
    os.utime(first, ns=(1, 1))
    assert resolve_source(image_dir).fingerprint != a.fingerprint  # mtime is part of the key


# -- zips -----------------------------------------------------------------------------------
def _zip_dir(folder, zpath, prefix="", extra=()):
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())
        for name, data in extra:
            zf.writestr(name, data)
    return zpath


def test_zip_is_read_in_place_with_labels(class_dir, tmp_path):
    z = _zip_dir(class_dir, tmp_path / "set.zip", prefix="wrapper/",
                 extra=[("__MACOSX/wrapper/._x.png", b"junk"), ("wrapper/cat/.DS_Store", b"x"),
                        ("readme.txt", b"hi")])
    before = set(os.listdir(tmp_path))
    src = resolve_source(str(z))
    assert src.kind == "zip" and len(src) == 12
    assert src.locators[0] == f"{z}::wrapper/cat/img001.png"
    assert src.classes == ["cat", "dog"]  # the wrapping folder is not a class
    assert src.labels.tolist() == resolve_source(class_dir).labels.tolist()
    rgb, digest, jpeg = src.load_rgb(0)
    assert np.array_equal(rgb, np.asarray(Image.open(class_dir / "cat" / "img001.png")))
    assert set(os.listdir(tmp_path)) == before  # nothing extracted
    assert np.array_equal(np.asarray(open_image(src.locators[0])), rgb)
    assert np.array_equal(np.asarray(open_image("cat/img001.png", root=class_dir)), rgb)


def test_zip_unsafe_member_is_a_bad_image(tmp_path, image_dir):
    z = _zip_dir(image_dir, tmp_path / "odd.zip")
    png = (image_dir / "img000.png").read_bytes()
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("../evil.png", png)
    src = resolve_source(z)
    assert len(src) == 13 and list(src.bad) == [0]
    with pytest.raises(InputError, match=r"odd\.zip::\.\./evil\.png"):
        src.load_rgb(0)


# -- arrays ---------------------------------------------------------------------------------
def test_npz_and_npy_images(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 12, 10, 3), dtype=np.uint8)
    np.savez(tmp_path / "batch.npz", arr_0=imgs, arr_1=np.arange(5) % 2)
    np.savez_compressed(tmp_path / "packed.npz", arr_0=imgs)
    np.save(tmp_path / "imgs.npy", imgs)
    np.save(tmp_path / "grey.npy", imgs[..., :1])
    np.save(tmp_path / "rgba.npy", np.concatenate([imgs, imgs[..., :1]], axis=3))
    for name in ("batch.npz", "packed.npz", "imgs.npy", "rgba.npy"):
        src = resolve_source(tmp_path / name)
        assert src.kind == "array" and len(src) == 5
        assert src.locators[3] == f"{tmp_path / name}[3]"
        for i in range(5):
            assert np.array_equal(src.load_rgb(i)[0], imgs[i])
    assert resolve_source(tmp_path / "batch.npz")._array_offset is not None  # memory-mapped
    assert resolve_source(tmp_path / "batch.npz").labels.tolist() == [0, 1, 0, 1, 0]
    grey = resolve_source(tmp_path / "grey.npy").load_rgb(2)[0]
    assert np.array_equal(grey, np.repeat(imgs[2, ..., :1], 3, axis=2))
    assert np.array_equal(np.asarray(open_image(f"{tmp_path / 'batch.npz'}[4]")), imgs[4])


@pytest.mark.parametrize("arr,match", [
    (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8, 3), np.uint8), "N×H×W×C"),
    (np.zeros((2, 8, 8, 2), np.uint8), "C in 1, 3, 4"),
])
def test_wrong_arrays_are_input_errors(tmp_path, arr, match):
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(InputError, match=match) as exc:
        resolve_source(tmp_path / "bad.npy")
    assert "bad.npy" in str(exc.value)


def test_npz_without_images_or_features(tmp_path):
    np.savez(tmp_path / "x.npz", foo=np.zeros(3))
    with pytest.raises(InputError, match=r"x\.npz.*arr_0.*foo"):
        resolve_source(tmp_path / "x.npz")


# -- bad inputs -----------------------------------------------------------------------------
def test_missing_empty_and_unsupported(tmp_path):
    with pytest.raises(InputError, match="nope: no such file"):
        resolve_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(InputError, match=r"no images found under .*empty"):
        resolve_source(tmp_path / "empty")
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(InputError, match=r"a\.csv: unsupported source"):
        resolve_source(tmp_path / "a.csv")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"bad\.zip: not a readable zip"):
        resolve_source(tmp_path / "bad.zip")


def _png_bytes(size=(20, 20)):
    buf = io.BytesIO()
    Image.fromarray(np.full((*size, 3), 100, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("case", ["truncated", "zero", "text", "bomb"])
def test_bad_image_bytes_name_the_file(case, monkeypatch):
    data = {"truncated": _png_bytes()[:60], "zero": b"", "text": b"hello, not a png",
            "bomb": _png_bytes((40, 40))}[case]
    if case == "bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match=r"^dir/x\.png: ") as exc:
        decode_image(data, "dir/x.png")
    assert "\n" not in str(exc.value)
