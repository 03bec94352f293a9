"""Shared fixtures: small deterministic image folders, a tiny test encoder, an isolated cache.

Generic on purpose; any test file may use them:

* ``write_images(root, n, size=(h, w), classes=None, seed=0, ext="png", mode="RGB")`` writes
  ``n`` random images (split over class subfolders when ``classes`` is given) and returns their
  paths in sorted order; fixtures ``image_dir`` (12 flat PNGs) and ``class_dir`` (2 classes × 6).
* the ``tiny_test`` encoder (registered once): weight-free, 16×16 clean resize, outputs
  ``features`` (48-d: 4×4 average pooling of the image / 255) and ``logits`` (5-d, a fixed
  seeded projection). ``TINY_BUILDS["n"]`` counts how many times it was built.
  With ``resize="legacy"`` it takes native-size images (``Preprocess.resize == "none"``) and
  resizes in-network (bilinear), like Inception's pytorch-fid mode.
* every test runs with ``EVALKIT_CACHE_DIR`` pointing at a per-session temporary folder, so
  nothing is written to the user's cache.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from evalkit.encoders import ENCODERS, Encoder, EncoderSpec, Preprocess, register_encoder

TINY = "tiny_test"
TINY_BUILDS = {"n": 0}


def tiny_preprocess(arch: str = "pool4", resize: str = "clean") -> Preprocess:
    """The tiny encoder's preprocessing, known without building it."""
    legacy = resize == "legacy"
    return Preprocess(size=16, resize="none" if legacy else "clean",
                      in_network="bilinear-16" if legacy else "")


class TinyEncoder(Encoder):
    """4×4 average pooling of a 16×16 image (features, 48-d) and a fixed projection (logits)."""

    name = TINY
    arch = "pool4"
    weights_sha256 = None

    def __init__(self, resize: str = "clean"):
        super().__init__()
        self.preprocess = tiny_preprocess("pool4", resize)
        self.outputs = {"features": 48, "logits": 5}
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(48, 5, generator=gen))
        self.eval()  # built encoders come back in eval mode (the encoder contract)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.float() / 255.0
        if x.shape[-2:] != (16, 16):
            x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
        feats = F.avg_pool2d(x, 4).flatten(1)
        return {"features": feats, "logits": feats @ self.proj}


def build_tiny(arch=None, weights=None, resize="clean", random_init=False, **_):
    TINY_BUILDS["n"] += 1
    return TinyEncoder(resize=resize)


if TINY not in ENCODERS:
    register_encoder(EncoderSpec(
        name=TINY, factory=build_tiny, description="test-only: 4x4 pooled pixels",
        archs=("pool4",), default_arch="pool4",
        outputs={"pool4": {"features": 48, "logits": 5}}, weights={"pool4": None},
        input_size={"pool4": 16}), preprocess=tiny_preprocess)


def write_images(root, n, size=(24, 20), classes=None, seed=0, ext="png", mode="RGB"):
    """Write ``n`` random images under ``root`` (round-robin over ``classes`` subfolders)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        folder = root / classes[i % len(classes)] if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        if mode != "RGB":
            img = img.convert(mode)
        path = folder / f"img{i:03d}.{ext}"
        img.save(path)
        paths.append(path)
    return sorted(paths, key=lambda p: p.relative_to(root).as_posix())


def encoded_images(n: int, *, seed: int, height: int, width: int, jpeg_at: int):
    """``(k, encoded bytes, is_jpeg)`` for k < n: random RGB of (height + k) × width, saved as
    JPEG (quality 90) where ``k % 3 == jpeg_at``, else PNG — mixed formats for container tests."""
    import io

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        rgb = rng.integers(0, 256, (height + k, width, 3), dtype=np.uint8)
        buf = io.BytesIO()
        jpeg = k % 3 == jpeg_at
        Image.fromarray(rgb).save(buf, format="JPEG" if jpeg else "PNG", quality=90)
        out.append((k, buf.getvalue(), jpeg))
    return out


@pytest.fixture
def image_dir(tmp_path):
    """12 random 24×20 RGB PNGs directly in one folder."""
    write_images(tmp_path / "images", 12)
    return tmp_path / "images"


@pytest.fixture
def class_dir(tmp_path):
    """12 random PNGs in two class subfolders (``cat``, ``dog``)."""
    write_images(tmp_path / "classes", 12, classes=("dog", "cat"), seed=1)
    return tmp_path / "classes"


@pytest.fixture
def tiny_encoder():
    return TinyEncoder()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "evalkit-cache"))
