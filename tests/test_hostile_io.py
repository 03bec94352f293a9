"""Hostile inputs and failing outputs (issue 13): each case exits 2 with one line naming the
file, exit 3 is kept for bugs, exit 1 for `check` regressions only, and nothing is lost."""
import errno
import json
import os
import stat
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, TINY_BUILDS, write_images

from evalkit.cli import main
from evalkit.errors import InputError
from evalkit.features.featureset import FeatureSet, save_feature_file
from evalkit.formatting import format_size
from evalkit.results.record import SCHEMA

D = 8


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def one_line(res, code, *needles):
    """The command exited ``code`` with exactly one non-empty line containing ``needles``."""
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == code, res.output
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in lines[0], res.output
    return lines[0]


@pytest.fixture
def feats(tmp_path):
    rng = np.random.default_rng(0)

    def write(name, n, shift=0.0):
        path = tmp_path / name
        save_feature_file(FeatureSet({"features": (rng.normal(size=(n, D)) + shift)
                                      .astype(np.float32)}), path)
        return str(path)

    return {"real": write("real.npz", 60), "fake": write("fake.npz", 50, 0.2), "dir": tmp_path}


# ----------------------------------------------------------------------------- zip bombs
class _RepeatZeros:
    """A stand-in deflate compressor for 1 MiB blocks of zeros: each block compressed once
    after a full flush is byte-identical, so a 2 GiB member is written in a fraction of a second."""

    def __init__(self, block: int):
        self._c = zlib.compressobj(9, zlib.DEFLATED, -15)
        self._packed = self._c.compress(bytes(block)) + self._c.flush(zlib.Z_FULL_FLUSH)
        self.block = block

    def compress(self, data):
        assert len(data) == self.block and not any(data[:64])
        return self._packed

    def flush(self):
        return self._c.flush(zlib.Z_FINISH)


def write_bomb(path: Path, gib: int = 2) -> Path:
    """A ~2 MB zip whose one member, ``bomb.png``, inflates to ``gib`` GiB of zeros."""
    block = 1 << 20
    zeros = bytes(block)
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("bomb.png")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            fh._compressor = _RepeatZeros(block)  # test-only: skip compressing 2 GiB for real
            for _ in range(gib * 1024):
                fh.write(zeros)
    return path


def test_bomb_is_a_real_deflate_stream(tmp_path):
    """The fast bomb writer makes a valid member (checked on a 1 GiB one's first 8 MiB)."""
    path = write_bomb(tmp_path / "b.zip", gib=1)
    assert path.stat().st_size < 2_000_000
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("bomb.png").file_size == 1 << 30
        with zf.open("bomb.png") as fh:
            assert fh.read(8 << 20) == bytes(8 << 20)


def test_zip_bomb_refused_with_bounded_memory(tmp_path):
    from evalkit.images.sources import resolve_source

    bomb = write_bomb(tmp_path / "bomb.zip")
    src = resolve_source(bomb, fingerprint=False)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"bomb.png: refused, member expands to 2\.0 GiB"):
            src.load_rgb(0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak Python allocation {peak / 2**20:.0f} MiB"


def test_zip_bomb_cli_exit_2(tmp_path):
    bomb = write_bomb(tmp_path / "bomb.zip")
    res = invoke("features", bomb, "-o", tmp_path / "f.npz", "--encoder", TINY, "--workers", 0,
                 "--no-cache", "--quiet")
    one_line(res, 2, "bomb.png", "refused, member expands to 2.0 GiB")


def test_member_lying_about_its_size_is_stopped(tmp_path, monkeypatch):
    """A member that inflates past the limit while reading is cut off there, whatever the
    directory says (limit lowered to 1 MiB for the test)."""
    from evalkit.files import safezip
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", bytes(3 << 20))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("a.png")
        info.file_size = 100  # what a lying directory would say
        monkeypatch.setattr(safezip, "MAX_MEMBER_BYTES", 1 << 20)
        with pytest.raises(InputError, match="a.png"):
            safezip.read_member(zf, info, "z.zip::a.png")


def test_absurd_ratio_refused_before_reading():
    from evalkit.files.safezip import member_problem

    info = zipfile.ZipInfo("x.bmp")
    info.file_size, info.compress_size = 100 << 20, 50 << 10
    assert "ratio" in member_problem(info)
    info.file_size, info.compress_size = 3 << 20, 3 << 10  # a flat small BMP: fine
    assert member_problem(info) is None


# --------------------------------------------------------------- corrupted zip member data
def _stored_zip(path: Path, images: list[Path]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for p in images:
            zf.write(p, p.name)
    return path


def test_corrupt_member_behind_intact_directory_is_not_served_from_cache(tmp_path):
    imgs = write_images(tmp_path / "imgs", 4, size=(32, 32))
    archive = _stored_zip(tmp_path / "s.zip", imgs)
    cache = tmp_path / "cache"
    args = ["features", archive, "-o", tmp_path / "f.npz", "--encoder", TINY, "--workers", 0,
            "--cache-dir", cache, "--quiet"]
    assert invoke(*args).exit_code == 0
    with zipfile.ZipFile(archive) as zf:
        info = zf.infolist()[1]
    before = archive.stat()
    with open(archive, "r+b") as fh:  # flip bytes inside member 1's data; directory untouched
        fh.seek(info.header_offset + 30 + len(info.filename) + info.file_size // 2)
        chunk = fh.read(64)
        fh.seek(-64, 1)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    os.utime(archive, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime
    res = invoke(*args)
    one_line(res, 2, info.filename)
    assert "CRC" in res.output or "corrupt" in res.output


# --------------------------------------------------------------------- output paths
def test_out_equal_per_sample_refused_before_work(feats):
    same = feats["dir"] / "same.json"
    res = invoke("score", feats["fake"], "--ref", feats["real"], "--metrics", "fd",
                 "--out", same, "--per-sample", same, "--quiet")
    one_line(res, 2, "same.json")
    assert not same.exists()


def test_out_equal_to_an_input_refused(feats):
    before = Path(feats["real"]).read_bytes()
    res = invoke("score", feats["fake"], "--ref", feats["real"], "--metrics", "fd",
                 "--out", feats["real"], "--quiet")
    one_line(res, 2, "real.npz", "input")
    assert Path(feats["real"]).read_bytes() == before


def test_features_out_equal_to_source_refused(feats):
    res = invoke("features", feats["real"], "-o", feats["real"], "--encoder", TINY)
    one_line(res, 2, "real.npz")


def test_outputs_under_a_regular_file_refused_before_any_extraction(tmp_path, feats):
    """A path whose folder is a file cannot be written (root or not): refused up front."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    imgs = tmp_path / "imgs"
    write_images(imgs, 3, size=(16, 16))
    builds = TINY_BUILDS["n"]
    for args in (["features", imgs, "-o", blocker / "f.npz", "--encoder", TINY, "--no-cache"],
                 ["score", imgs, "--ref", imgs, "--encoder", TINY, "--metrics", "fd",
                  "--no-cache", "--out", blocker / "r.json"],
                 ["score", imgs, "--ref", imgs, "--encoder", TINY, "--metrics", "fd",
                  "--no-cache", "--per-sample", blocker / "x" / "p.csv"],
                 ["ref", "add", "r", imgs, "--encoder", TINY, "--ref-dir", blocker / "refs"],
                 ["leaderboard", feats["dir"], "-o", blocker / "lb.md"]):
        res = invoke(*args, "--quiet" if args[0] != "leaderboard" else "--format=md")
        one_line(res, 2, "blocker")
    assert TINY_BUILDS["n"] == builds  # no encoder was built: nothing ran


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores chmod")
def test_read_only_folder_refused(tmp_path, feats):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = invoke("score", feats["fake"], "--ref", feats["real"], "--metrics", "fd",
                     "--out", ro / "r.json", "--quiet")
        one_line(res, 2, "ro")
    finally:
        ro.chmod(0o755)


def test_read_only_folder_refused_as_root_too(tmp_path, feats, monkeypatch):
    """What os.access reports for a read-only mount (root cannot write there either)."""
    from evalkit.files import guards as paths
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(paths.os, "access",
                        lambda p, mode, **kw: False if Path(p) == ro else real_access(p, mode))
    res = invoke("score", feats["fake"], "--ref", feats["real"], "--metrics", "fd",
                 "--out", ro / "r.json", "--quiet")
    one_line(res, 2, "ro", "not writable")


def test_full_disk_is_one_line_exit_2_and_keeps_the_old_file(feats, monkeypatch):
    from evalkit.files import fileio
    out = feats["dir"] / "r.json"
    out.write_text("previous result")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", no_space)
    res = invoke("score", feats["fake"], "--ref", feats["real"], "--metrics", "fd",
                 "--out", out, "--quiet")
    lines = [ln for ln in res.output.splitlines() if ln.startswith("evalkit: error")]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert len(lines) == 1 and "r.json" in lines[0] and "No space left" in lines[0]
    assert out.read_text() == "previous result"
    assert [p.name for p in feats["dir"].iterdir() if p.name.startswith(".r.json")] == []


def test_outputs_get_umask_permissions(feats, tmp_path):
    old = os.umask(0o027)
    try:
        out, ps = tmp_path / "r.json", tmp_path / "p.csv"
        res = invoke("score", feats["fake"], "--ref", feats["real"], "--metrics", "fd",
                     "--out", out, "--per-sample", ps, "--quiet")
        assert res.exit_code == 0, res.output
        lb = tmp_path / "lb.md"
        assert invoke("leaderboard", out, "-o", lb).exit_code == 0
        assert invoke("report", out, "-o", tmp_path / "r.html").exit_code == 0
        assert invoke("features", feats["real"], "-o", tmp_path / "f.npz").exit_code == 0
        for p in (out, ps, lb, tmp_path / "r.html", tmp_path / "f.npz"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o640, p
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- options
def test_negative_seed_is_a_usage_error(feats):
    res = invoke("score", feats["fake"], "--ref", feats["real"], "--metrics", "fd",
                 "--seed", "-5")
    assert res.exit_code == 2 and "--seed" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------ internal errors: exit 3
@pytest.fixture
def boom_command():
    @click.command("boom-test")
    def boom():
        raise RuntimeError("something broke\nsecond line")

    main.add_command(boom)
    yield
    main.commands.pop("boom-test", None)


def test_unexpected_exception_is_exit_3_one_line(boom_command):
    res = invoke("boom-test", env={"EVALKIT_DEBUG": ""})
    line = one_line(res, 3, "internal error", "RuntimeError: something broke", "--debug")
    assert "second line" not in line


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_prints_the_traceback(boom_command, how):
    args, env = (["--debug", "boom-test"], {}) if how == "flag" else (["boom-test"],
                                                                         {"EVALKIT_DEBUG": "1"})
    res = invoke(*args, env=env)
    assert res.exit_code == 3 and "Traceback" in res.output and "RuntimeError" in res.output


def test_warnings_print_one_line_each(tmp_path):
    """In a real run (subprocess: pytest records warnings itself), one line per warning."""
    import subprocess
    import sys

    (tmp_path / "notes.json").write_text('{"hello": 1}')
    _record(tmp_path, "r.json", fd=1.0)
    proc = subprocess.run([sys.executable, "-m", "evalkit", "leaderboard", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evalkit: warning: "), proc.stderr
    assert "notes.json" in lines[0] and ".py:" not in lines[0]


# -------------------------------------------------------------------------------- check
def _record(tmp_path, name, **metrics):
    rec = {"schema": SCHEMA, "name": "m", "created": "2026-01-01T00:00:00+00:00",
           "samples": {"source": "s", "n": 10, "fingerprint": "x"},
           "reference": {"source": "r", "name": None, "n": 10, "fingerprint": "f"},
           "encoder": {"name": "e", "arch": "a", "weights_sha256": "w", "preprocess": "p"},
           "config": {"seed": 0, "nsample": None}, "metrics": metrics}
    path = tmp_path / name
    path.write_text(json.dumps(rec))  # json writes NaN/Infinity tokens, as a hand edit might
    return path


@pytest.mark.parametrize("side", ["baseline", "result"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "12.3", None, True])
def test_check_refuses_non_finite_or_non_numeric(tmp_path, side, value):
    good = _record(tmp_path, "good.json", fd=12.3, precision=0.5)
    bad = _record(tmp_path, "bad.json", fd=value, precision=0.5)
    result, baseline = (good, bad) if side == "baseline" else (bad, good)
    res = invoke("check", result, "--baseline", baseline)
    one_line(res, 2, "bad.json", "fd")


def test_check_still_exits_1_on_a_regression(tmp_path):
    base = _record(tmp_path, "b.json", fd=10.0)
    now = _record(tmp_path, "n.json", fd=20.0)
    assert invoke("check", now, "--baseline", base).exit_code == 1


# ----------------------------------------------------------------------------- Evaluator
def test_evaluator_refuses_floats_outside_unit_range(feats):
    import torch

    from evalkit import Evaluator

    ev = Evaluator(encoder=TINY, ref=feats["real"], metrics="fd", device="cpu")
    x = torch.rand(4, 3, 16, 16)
    for bad, hint in ((x * 255, "x / 255"), (x * 2 - 1, "(x + 1) / 2")):
        with pytest.raises(InputError, match=r"\[0, 1\]") as info:
            ev.update(bad)
        assert hint in str(info.value)
    with pytest.raises(InputError, match="uint8"):
        ev.update((x * 255).to(torch.int64))
    ev.update(x)
    ev.update((x * 255).to(torch.uint8))
    assert ev.features().n == 8


# ------------------------------------------------------------------------------- report
def test_report_refuses_per_sample_outside_the_record_folder(tmp_path):
    rec = _record(tmp_path, "r.json", fd=1.0)
    data = json.loads(rec.read_text())
    data["per_sample"] = "../../../../etc/passwd"
    rec.write_text(json.dumps(data))
    res = invoke("report", rec, "-o", tmp_path / "r.html")
    one_line(res, 2, "per_sample", "../../../../etc/passwd", "outside")
    assert not (tmp_path / "r.html").exists()
    data["per_sample"] = "/etc/passwd"
    rec.write_text(json.dumps(data))
    one_line(invoke("report", rec, "-o", tmp_path / "r.html"), 2, "/etc/passwd")


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (5 << 20, "5.0 MiB"), (2 << 30, "2.0 GiB"), (3 << 40, "3.0 TiB"),
])
def test_format_size_binary_units(n, text):
    """One byte formatter (zip limits, catalog sizes): IEC binary prefixes, one decimal."""
    assert format_size(n) == text
