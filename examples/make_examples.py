"""Write the small example image sets used by the README's offline demo.

    python examples/make_examples.py            # writes examples/real/, fake/ and test/

``real/`` (and the held-out ``test/``) hold 64 PNGs (32×32) in two class folders, ``circles/``
and ``squares/``, so the
demo shows labels; ``fake/`` holds 64 PNGs of the same kinds of shapes drawn a little
differently (shifted colours, softer edges, more noise), so metrics see a small, real gap.
Everything derives from fixed seeds: rerunning rewrites identical pixels.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 32
N_PER_SET = 64


def shape_image(rng: np.random.Generator, kind: str, fake: bool) -> Image.Image:
    """One SIZE×SIZE image: a coloured circle or square on a gradient background."""
    base = rng.uniform(40, 200, size=3)
    ramp = np.linspace(-30, 30, SIZE)[None, :, None]
    bg = np.clip(base[None, None, :] + ramp + np.zeros((SIZE, SIZE, 1)), 0, 255)
    img = Image.fromarray(bg.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    colour = rng.integers(0, 256, size=3)
    if fake:
        colour = np.clip(colour * 0.8 + 40, 0, 255).astype(int)
    r = int(rng.integers(6, 12))
    cx, cy = (int(v) for v in rng.integers(r + 1, SIZE - r - 1, size=2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circles":
        draw.ellipse(box, fill=tuple(int(c) for c in colour))
    else:
        draw.rectangle(box, fill=tuple(int(c) for c in colour))
    if fake:
        img = img.filter(ImageFilter.GaussianBlur(0.8))
    noise = rng.normal(0, 6 if fake else 3, size=(SIZE, SIZE, 3))
    arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def write_set(root: Path, fake: bool, seed: int) -> int:
    rng = np.random.default_rng(seed)
    for i in range(N_PER_SET):
        kind = ("circles", "squares")[i % 2]
        folder = root if fake else root / kind
        folder.mkdir(parents=True, exist_ok=True)
        shape_image(rng, kind, fake).save(folder / f"{i:03d}.png", optimize=True)
    return N_PER_SET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="folder that receives real/ and fake/ (default: examples/)")
    args = parser.parse_args()
    n_real = write_set(args.out / "real", fake=False, seed=0)
    n_fake = write_set(args.out / "fake", fake=True, seed=1)
    n_test = write_set(args.out / "test", fake=False, seed=2)
    print(f"wrote {n_real} images to {args.out / 'real'}, {n_fake} to {args.out / 'fake'} "
          f"and {n_test} held-out real images to {args.out / 'test'}")


if __name__ == "__main__":
    main()
