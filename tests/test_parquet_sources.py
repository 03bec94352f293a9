"""Parquet / Arrow tables (evalkit.images.sources.parquet): images read where datasets keep them.

A Parquet file written with pyarrow (image bytes + label + prompt columns), a folder of them and
a ``datasets`` ``save_to_disk`` folder give the image folder's features and labels; columns are
found automatically or named; bad rows are errors naming the row (or skipped, counted); the
peak memory of reading a file larger than the batch budget stays near the budget."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import encoded_images

from evalkit.errors import InputError
from evalkit.features.loader import load_features
from evalkit.features.options import ExtractOptions
from evalkit.images.sources import Columns, TableSource, open_image, resolve_source
from evalkit.images.sources import parquet as parquet_kind

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CLASSES = ("ant", "bee", "cow")
N = 9


def _images(seed: int = 0):
    """(name, encoded bytes, class) per image, PNG and JPEG mixed, in the folder's order."""
    out = [(f"i{k:03d}.{'jpg' if jpeg else 'png'}", data, k % 3)
           for k, data, jpeg in encoded_images(N, seed=seed, height=18, width=22, jpeg_at=2)]
    return sorted(out, key=lambda t: (t[2], t[0]))


def _table(images, struct: bool = True):
    img = ([{"bytes": b, "path": n} for n, b, _ in images] if struct
           else [b for _, b, _ in images])
    return pa.table({"image": img, "label": [c for _, _, c in images],
                     "caption": [f"a photo of {CLASSES[c]}" for *_, c in images]})


@pytest.fixture
def layouts(tmp_path):
    images = _images()
    for name, data, cls in images:
        (tmp_path / "dir" / CLASSES[cls]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "dir" / CLASSES[cls] / name).write_bytes(data)
    pq.write_table(_table(images, struct=False), tmp_path / "raw.parquet", row_group_size=4)
    (tmp_path / "parts").mkdir()
    pq.write_table(_table(images[:5]), tmp_path / "parts" / "part-0.parquet", row_group_size=2)
    pq.write_table(_table(images[5:]), tmp_path / "parts" / "part-1.parquet")
    return tmp_path


def _features(source, **kw):
    opts = ExtractOptions(encoder="pixel", device="cpu", workers=kw.pop("workers", 0),
                          use_cache=False, quiet=True, batch_size=4, **kw)
    return load_features(str(source), opts)


def test_parquet_files_and_folders_give_the_folders_features_and_labels(layouts, monkeypatch):
    ref = _features(layouts / "dir")
    small = layouts / "small"  # batches of 2 rows inside row groups of 5 and 4
    small.mkdir()
    pq.write_table(_table(_images(), struct=False), small / "r.parquet", row_group_size=5)
    monkeypatch.setattr(parquet_kind, "BATCH_BYTES", 5000)
    for src, kw in ((layouts / "raw.parquet", {}), (layouts / "parts", {}),
                    (layouts / "parts", {"workers": 2}), (small, {})):
        fs = _features(src, **kw)
        np.testing.assert_array_equal(fs.arrays["features"], ref.arrays["features"])
        np.testing.assert_array_equal(fs.labels, ref.labels)
    raw = resolve_source(small / "r.parquet")  # any order of reads: backwards restarts a group
    order = [8, 3, 4, 0, 7, 1, 1, 6, 2, 5]
    assert [raw.read_bytes(i) for i in order] == [_images()[i][1] for i in order]
    src = resolve_source(layouts / "parts")
    assert isinstance(src, TableSource)
    assert src.columns == Columns("image", "label", "caption")
    assert src.prompts[0] == "a photo of ant"
    assert src.locators[5] == f"{layouts / 'parts' / 'part-1.parquet'}[0]"


def test_datasets_save_to_disk_folder(layouts, tmp_path):
    datasets = pytest.importorskip("datasets")
    images = _images()
    features = datasets.Features({"img": datasets.Image(), "cls": datasets.ClassLabel(
        names=list(CLASSES)), "note": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(
        {"img": [{"bytes": b, "path": None} for _, b, _ in images],
         "cls": [c for *_, c in images], "note": ["x"] * N}, features=features)
    ds.save_to_disk(str(tmp_path / "hf"), num_shards=3)
    assert len(list((tmp_path / "hf").glob("*.arrow"))) > 1  # several files, in state.json order
    src = resolve_source(tmp_path / "hf")
    assert src.columns == Columns("img", "cls", None) and src.classes == list(CLASSES)
    ref, fs = _features(layouts / "dir"), _features(tmp_path / "hf", workers=2)
    np.testing.assert_array_equal(fs.arrays["features"], ref.arrays["features"])
    np.testing.assert_array_equal(fs.labels, ref.labels)
    assert np.array_equal(np.asarray(open_image(src.locators[-1])), src.load_rgb(N - 1)[0])
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"DatasetDict \(splits: train, test\); give one split"):
        resolve_source(tmp_path / "dd")


def test_columns_named_or_found(layouts, tmp_path):
    images = _images()
    t = _table(images, struct=False).append_column("thumb", pa.array([b"x"] * N))
    pq.write_table(t, tmp_path / "two.parquet")
    with pytest.raises(InputError, match=r"several binary columns \(image, thumb\)"):
        resolve_source(tmp_path / "two.parquet")
    src = resolve_source(tmp_path / "two.parquet", columns=Columns(image="image", prompt="caption"))
    assert src.columns == Columns("image", "label", "caption")
    with pytest.raises(InputError, match="--label-column caption: column type string is not integer"):
        resolve_source(tmp_path / "two.parquet", columns=Columns("image", label="caption"))
    with pytest.raises(InputError, match="--image-column nope: no such column"):
        resolve_source(tmp_path / "two.parquet", columns=Columns("nope"))
    other = resolve_source(tmp_path / "two.parquet", columns=Columns(image="thumb"))
    assert other.fingerprint != src.fingerprint  # the columns read are part of the key
    # the CLI options reach the source (and a folder source ignores them)
    fs = _features(tmp_path / "two.parquet", image_column="image")
    assert fs.n == N
    assert _features(layouts / "dir", image_column="image").n == N


def test_bad_rows_name_the_row_and_can_be_skipped(tmp_path):
    images = _images()
    rows = [{"bytes": b, "path": None} for _, b, _ in images]
    rows[3] = {"bytes": None, "path": "/elsewhere/x.png"}
    rows[6] = {"bytes": b"not an image", "path": None}
    pq.write_table(pa.table({"image": rows}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad\.parquet\[3\]: the row holds only a path"):
        _features(tmp_path / "bad.parquet")
    fs = _features(tmp_path / "bad.parquet", skip_bad=True)
    assert fs.n == N - 2 and fs.meta["n_skipped"] == 2
    assert [s.rsplit("/", 1)[1] for s in fs.meta["skipped"]] == ["bad.parquet[3]", "bad.parquet[6]"]


def test_fingerprint_hashes_the_bytes(layouts):
    path = layouts / "raw.parquet"
    before = resolve_source(path).fingerprint
    raw = bytearray(path.read_bytes())
    at = raw.find(_images()[4][1][100:120])
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert resolve_source(path).fingerprint != before


def test_pyarrow_is_imported_only_by_table_sources(layouts):
    code = ("import sys; from evalkit.images.sources import resolve_source; "
            "resolve_source(sys.argv[1]); print('pyarrow' in sys.modules)")
    out = [subprocess.run([sys.executable, "-c", code, str(layouts / p)], capture_output=True,
                          text=True, check=True).stdout.strip() for p in ("dir", "raw.parquet")]
    assert out == ["False", "True"]


MEMORY_PROBE = """
import sys
from evalkit.images.sources import resolve_source

def peak():  # VmHWM: this process's peak RSS (ru_maxrss would carry pytest's over the exec)
    return int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1])

src = resolve_source(sys.argv[1])  # pyarrow imported, metadata read
before = peak()
total = sum(len(src.read_bytes(i)) for i in range(len(src)))
print(total, (peak() - before) * 1024)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM (Linux)")
@pytest.mark.parametrize("budget_mib, bounded", [(4, True), (1024, False)])
def test_memory_stays_bounded_on_a_file_larger_than_the_budget(tmp_path, budget_mib, bounded):
    """One row group of 96 MiB of (incompressible) image bytes in pages of 8 rows (1 MiB);
    reading every row keeps the peak RSS within a few batches of the budget. The unbounded
    budget shows that the probe sees a whole row group when one is read at once."""
    rng = np.random.default_rng(0)
    rows, size = 768, 128 << 10
    blob = rng.integers(0, 256, rows * size, dtype=np.uint8).tobytes()
    col = pa.array([blob[k * size:(k + 1) * size] for k in range(rows)], pa.binary())
    pq.write_table(pa.table({"image": col}), tmp_path / "big.parquet", row_group_size=rows,
                   compression="none", use_dictionary=False, write_batch_size=8)
    del blob, col
    env = dict(os.environ, EVALKIT_TABLE_BATCH_BYTES=str(budget_mib << 20))
    res = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "big.parquet")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    total, grown = (int(v) for v in res.stdout.split())
    assert total == rows * size
    if bounded:  # measured: 44 MiB (the batch, a page, allocator pools)
        assert grown < 64 << 20, grown / 2**20
    else:  # measured: 224 MiB (the row group's column, and its copy into Python)
        assert grown > 150 << 20, grown / 2**20
    print(json.dumps({"budget_mib": budget_mib, "peak_growth_mib": round(grown / 2**20, 1)}))
