"""`evalkit report`: one self-contained HTML file, plots, gallery, notes, and a real browser."""
import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_images
from PIL import Image

from evalkit.cli import main
from evalkit.results.record import SCHEMA, load_records
from evalkit.results.report import build_report, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DATA_URI = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def make_record(tmp_path, *, per_sample=True, details=True, n=12):
    """A scored record with an FD∞ curve, PRDC + CIs, per-class Vendi and a per-sample CSV
    whose locators point at real PNGs in the samples and reference folders."""
    samples, reference = tmp_path / "samples", tmp_path / "reference"
    write_images(samples, n, seed=1)
    write_images(reference, n, seed=2)
    ns = [2, 3, 4, 6, 8, 10, 12]
    rec = {
        "schema": SCHEMA, "name": "modelA", "created": "2026-01-01T00:00:00+00:00",
        "samples": {"source": str(samples), "n": n, "fingerprint": "f1"},
        "reference": {"source": str(reference), "name": "toyref", "n": n, "fingerprint": "f2"},
        "test": None,
        "encoder": {"name": "dinov2", "arch": "vitl14", "weights_sha256": "ab" * 32,
                    "preprocess": json.dumps({"size": 224, "resize": "clean"})},
        "config": {"seed": 0, "metrics": "all", "nsample": None, "bootstrap": 20},
        "metrics": {"fd": 41.5, "fd_inf": 37.2, "kd": 0.0123, "kd_std": 0.0011, "precision": 0.71,
                    "recall": 0.52, "density": 0.93, "coverage": 0.66, "vendi": 7.7,
                    "vendi_per_class": 3.4, "ct": -1.2},
        "metrics_ci": {"fd": [39.0, 44.1], "precision": [0.66, 0.75], "recall": [0.47, 0.58]},
        "skipped": {"fls": "needs --test (held-out real data)"},
        "details": {"fd_inf": {"_curve": {"n": ns, "fd": [37.2 + 50.0 / k for k in ns]}},
                    "vendi": {"_per_class": {"0": 3.1, "1": 3.9, "2": 3.2}}} if details else {},
        "per_sample": "modelA.per_sample.csv" if per_sample else None,
        "timing": {}, "versions": {"evalkit": "0.1.0"},
    }
    if per_sample:
        with open(tmp_path / "modelA.per_sample.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "path", "realism", "nn_index", "nn_distance", "nn_path", "authentic"])
            for i in range(n):
                j = (i * 5) % n
                w.writerow([i, f"img{i:03d}.png", 0.9 + i / 100, j, 10.0 - i * 0.5,
                            f"img{j:03d}.png", int(i % 3 != 0)])
    path = tmp_path / "modelA.json"
    path.write_text(json.dumps(rec))
    return path


def _pngs(page):
    out = []
    for b64 in DATA_URI.findall(page):
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        img.load()
        out.append(img)
    return out


def test_report_is_self_contained_with_table_plots_and_gallery(tmp_path):
    path = make_record(tmp_path)
    out = tmp_path / "report.html"
    r = CliRunner().invoke(main, ["report", str(path), "-o", str(out), "--gallery", "4"])
    assert r.exit_code == 0, r.output
    page = out.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert 'src="file' not in page and "<script" not in page and "<link" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    # metric table: values with intervals and directions
    assert '<td class="key">fd</td><td>41.50</td><td>[39.00, 44.10]</td>' in page
    assert "↓ lower is better" in page and "↑ higher is better" in page
    assert "needs --test" in page  # skipped metrics listed with the reason
    imgs = _pngs(page)
    plots = [i for i in imgs if i.width > 200]
    thumbs = [i for i in imgs if i.width <= 128]
    assert len(plots) == 3                       # FD-vs-1/N, PRDC, per-class Vendi
    assert len(thumbs) == 8                      # 4 closest samples, each beside its neighbour
    assert "FD against 1/N" in page and "Per-class Vendi" in page
    # the gallery shows the smallest distances first: rows 11, 10, 9, 8 (distance 4.5 ...)
    order = re.findall(r"#(\d) · distance ([0-9.]+)", page)
    assert order == [("1", "4.500"), ("2", "5.000"), ("3", "5.500"), ("4", "6.000")]
    assert "sample 11 → reference 7" in page
    assert "not authentic" in page


def test_gallery_thumbnail_is_the_right_image(tmp_path):
    path = make_record(tmp_path)
    page = build_report(load_records(path), gallery=1)
    sample, neighbour = [i for i in _pngs(page) if i.width <= 128]
    expected = Image.open(tmp_path / "samples" / "img011.png").convert("RGB")
    expected.thumbnail((128, 128))
    assert np.array_equal(np.asarray(sample.convert("RGB")), np.asarray(expected))
    expected = Image.open(tmp_path / "reference" / "img007.png").convert("RGB")
    expected.thumbnail((128, 128))
    assert np.array_equal(np.asarray(neighbour.convert("RGB")), np.asarray(expected))


def test_missing_pieces_become_notes(tmp_path):
    path = make_record(tmp_path, per_sample=False, details=False)
    page = build_report(load_records(path))
    assert "No FD∞ curve in this record" in page
    assert "No per-sample file" in page
    assert "No per-class Vendi" in page
    assert len([i for i in _pngs(page) if i.width > 200]) == 1  # PRDC only


def test_missing_images_and_csv_are_placeholders(tmp_path):
    path = make_record(tmp_path)
    shutil.rmtree(tmp_path / "reference")
    page = build_report(load_records(path), gallery=3)
    assert page.count("image not available") == 3
    assert len([i for i in _pngs(page) if i.width <= 128]) == 3
    (tmp_path / "modelA.per_sample.csv").unlink()
    assert "not found; gallery omitted" in build_report(load_records(path))


def test_minimal_record_and_bad_input(tmp_path):
    rec = {"schema": SCHEMA, "name": "bare", "metrics": {"fd": 3.0}}
    (tmp_path / "bare.json").write_text(json.dumps(rec))
    write_report(tmp_path / "bare.json", tmp_path / "bare.html")
    assert "bare" in (tmp_path / "bare.html").read_text()
    r = CliRunner().invoke(main, ["report", str(tmp_path / "none.json"), "-o", str(tmp_path / "x.html")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = CliRunner().invoke(main, ["report", str(tmp_path / "bare.json"), "--name", "other"])
    assert r.exit_code == 2 and "no record named 'other'" in r.output


def _chromium(html_path, shot, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
           f"--user-data-dir={tmp_path / 'chrome-profile'}", f"--screenshot={shot}",
           "--window-size=1200,2000", f"file://{html_path}"]
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def _console_errors(log):
    return [line for line in log.splitlines()
            if "ERROR:CONSOLE" in line or "Uncaught" in line
            or ("CONSOLE" in line and "Failed to load" in line)]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_in_headless_chromium(tmp_path):
    path = make_record(tmp_path)
    out = tmp_path / "report.html"
    write_report(path, out)
    shot = tmp_path / "report.png"
    rc, log = _chromium(out, shot, tmp_path)
    assert rc == 0, log[-2000:]
    assert not _console_errors(log), _console_errors(log)
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (2000, 1200)
    assert img.std() > 20  # not a blank page: text, table rules and plots were painted
    keep = os.environ.get("EVALKIT_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)

    # The console check can fail: a page that throws is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    rc, log = _chromium(bad, tmp_path / "bad.png", tmp_path)
    assert _console_errors(log), log[-2000:]


def test_gallery_reads_zip_and_npz_locators(tmp_path):
    path = make_record(tmp_path, n=6)
    rec = json.loads(path.read_text())
    import zipfile
    with zipfile.ZipFile(tmp_path / "samples.zip", "w") as zf:
        for p in sorted((tmp_path / "samples").iterdir()):
            zf.write(p, p.name)
    batch = np.stack([np.asarray(Image.open(p).convert("RGB"))
                      for p in sorted((tmp_path / "reference").iterdir())])
    np.savez(tmp_path / "ref_batch.npz", arr_0=batch)
    shutil.rmtree(tmp_path / "samples")
    shutil.rmtree(tmp_path / "reference")
    rec["samples"]["source"] = str(tmp_path / "samples.zip")
    rec["reference"]["source"] = str(tmp_path / "ref_batch.npz")
    rows = list(csv.DictReader(open(tmp_path / "modelA.per_sample.csv")))
    for row in rows:
        row["path"] = f"samples.zip::{row['path']}"
        row["nn_path"] = f"ref_batch.npz[{row['nn_index']}]"
    with open(tmp_path / "modelA.per_sample.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    path.write_text(json.dumps(rec))
    page = build_report(load_records(path), gallery=2)
    assert "image not available" not in page
    thumbs = [i for i in _pngs(page) if i.width <= 128]
    assert len(thumbs) == 4
    nn = int(rows[-1]["nn_index"])  # the last row has the smallest distance
    assert np.array_equal(np.asarray(thumbs[1].convert("RGB")), batch[nn])


def test_provenance_names_weights_and_settings_in_words():
    """A weight-free encoder says so (it printed "weights ?"); preprocessing and config read as
    ``key value`` pairs, not raw JSON."""
    from evalkit.results.report import _provenance

    rec = {"encoder": {"name": "pixel", "arch": None, "weights_sha256": None,
                       "preprocess": json.dumps({"size": 32, "resize": "clean"})},
           "config": {"seed": 0, "metrics": "all", "bootstrap": 20}}
    text = _provenance(rec)
    assert "no weights (weight-free encoder)" in text and "weights ?" not in text
    assert "size 32 · resize clean" in text and "seed 0 · bootstrap 20" in text and "{" not in text
    rec["encoder"]["weights_sha256"] = "ab" * 32
    assert "weights sha256 abababababababab" in _provenance(rec)


def test_records_over_steps_add_the_track_plot(tmp_path):
    """The per-step records of a training run (one file per step, as the integrations write
    them): the report opens with each metric against the step (the PNG `evalkit track` draws
    for the same records) and the table with the best step starred; records without steps,
    or at one step only, get no such section."""
    runs = tmp_path / "steps"
    runs.mkdir()
    fd = {100: 30.0, 200: 12.5, 300: 9.25}
    for step, value in fd.items():
        rec = {"schema": SCHEMA, "name": "run", "step": step, "metrics": {"fd": value},
               "metrics_ci": {"fd": [value - 1, value + 1]}}
        (runs / f"step-{step:08d}.json").write_text(json.dumps(rec))
    out = tmp_path / "train.html"
    r = CliRunner().invoke(main, ["report", str(runs), "-o", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text(encoding="utf-8")
    assert "Training curves" in page and "<td>300</td><td>9.250 ★</td>" in page
    assert "<td>100</td><td>30.00</td>" in page
    assert r.exit_code == 0
    t = CliRunner().invoke(main, ["track", str(runs), "--plot", str(tmp_path / "track.png")])
    assert t.exit_code == 0, t.output
    first = base64.b64decode(DATA_URI.findall(page)[0])
    assert first == (tmp_path / "track.png").read_bytes()  # the track plot, inline
    # the same records given as files: the same page
    files = sorted(str(p) for p in runs.glob("*.json"))
    r2 = CliRunner().invoke(main, ["report", *files, "-o", str(tmp_path / "b.html")])
    assert r2.exit_code == 0 and (tmp_path / "b.html").read_text(encoding="utf-8") == page

    plain = build_report(load_records(make_record(tmp_path / "plain")))
    assert "Training curves" not in plain
    one = build_report(load_records(runs / "step-00000100.json"))
    assert "Training curves" not in one
