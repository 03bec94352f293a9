"""Image locators (evalkit.images.locators): the one grammar naming an image inside a source.

Text forms ``rel/path.png``, ``archive.zip::member``, ``images.npz[i]``: parse and format are
inverse, container suffixes match in any case, member names may themselves contain ``::`` or
``[i]``, and ``rebase`` moves only the file or container part."""
import zipfile

import numpy as np
import pytest
from PIL import Image

from evalkit.images.locators import Locator, array_item, parse, rebase, zip_member
from evalkit.images.sources import open_image, resolve_source

ROUND_TRIP = [
    "a.png",
    "/abs/dir/b c.PNG",
    "folder/x.zip.png",
    "data/archive.zip::cats/001.png",
    "data/ARCHIVE.Zip::001.png",
    "a.zip::dir::b.png",
    "a.zip::x[3].png",
    "a.zip::b.npz[3]",
    "a.zip::in.ZIP::c.png",
    "/r/images.npz[0]",
    "/r/IMAGES.NPY[12]",
    "odd[1].npz[7]",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_parse_format_round_trip(text):
    loc = parse(text)
    assert loc.format() == text
    assert parse(loc.format()) == loc


def test_builders_and_parse_agree():
    assert parse(zip_member("d/a.zip", "m/x.png")) == Locator("zip", "d/a.zip", member="m/x.png")
    assert parse(array_item("d/a.npy", 5)) == Locator("array", "d/a.npy", index=5)
    assert parse("d/a.png") == Locator("file", "d/a.png")


@pytest.mark.parametrize("text, kind, path", [
    ("X.ZIP::a.png", "zip", "X.ZIP"),
    ("x.Zip::a.png", "zip", "x.Zip"),
    ("B.NPZ[3]", "array", "B.NPZ"),
    ("b.NpY[3]", "array", "b.NpY"),
])
def test_container_suffix_in_any_case(text, kind, path):
    loc = parse(text)
    assert (loc.kind, loc.path) == (kind, path)


def test_member_names_holding_grammar_characters():
    # the first ".zip::" ends the container; the member is everything after it
    assert parse("a.zip::dir::b.png") == Locator("zip", "a.zip", member="dir::b.png")
    assert parse("a.zip::x[3].png") == Locator("zip", "a.zip", member="x[3].png")
    assert parse("a.zip::b.npz[3]") == Locator("zip", "a.zip", member="b.npz[3]")
    assert parse("a.zip::in.zip::c.png") == Locator("zip", "a.zip", member="in.zip::c.png")
    # not a locator: a file whose name has "::" or "[3]" but no container suffix before it
    assert parse("dir/a::b.png") == Locator("file", "dir/a::b.png")
    assert parse("dir/img[3].png") == Locator("file", "dir/img[3].png")
    assert parse("a.npz[x]") == Locator("file", "a.npz[x]")


@pytest.mark.parametrize("text, moved", [
    ("cats/1.png", "/new/cats/1.png"),
    ("old/a.zip::dir::b[2].png", "/new/old/a.zip::dir::b[2].png"),
    ("old/B.NPZ[4]", "/new/old/B.NPZ[4]"),
])
def test_rebase_moves_only_the_container(text, moved):
    assert rebase(text, lambda p: "/new/" + p) == moved
    assert rebase(text, lambda p: p) == text


def test_odd_member_names_read_back_through_the_source(tmp_path):
    """A zip member named with '::' and '[3]' resolves to a locator that opens the same image."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    png = tmp_path / "one.png"
    Image.fromarray(img).save(png)
    archive = tmp_path / "SET.ZIP"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(png, "a::b[3].png")
    src = resolve_source(archive)
    assert src.locators == [f"{archive}::a::b[3].png"]
    assert np.array_equal(np.asarray(open_image(src.locators[0])), img)
    moved = tmp_path / "moved.zip"
    archive.rename(moved)  # the recorded locator still opens with the new container as root
    assert np.array_equal(np.asarray(open_image(src.locators[0], root=moved)), img)
