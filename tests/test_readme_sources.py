"""The README's "Data where it lives" section, run as written: every shell command through the
CLI and every Python block, on small tar shards, a Parquet file, a datasets folder and an image
folder holding the same images (so the FD of each comparison is zero to float round-off)."""
import io
import re
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Data where it lives"
N = 12


def section_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n### ", start + 1)
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], re.DOTALL)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(N):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(buf, "PNG")
        encoded.append(buf.getvalue())
    (tmp_path / "real").mkdir()
    (tmp_path / "shards").mkdir()
    for k, data in enumerate(encoded):
        (tmp_path / "real" / f"{k:06d}.png").write_bytes(data)
    for s in range(3):
        with tarfile.open(tmp_path / "shards" / f"train-{s:06d}.tar", "w") as tf:
            for k in range(4 * s, 4 * s + 4):
                for name, payload in ((f"{k:06d}.png", encoded[k]), (f"{k:06d}.cls", b"1")):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
    table = pa.table({"image": [{"bytes": d, "path": None} for d in encoded],
                      "label": [k % 2 for k in range(N)]})
    pq.write_table(table, tmp_path / "images.parquet")
    datasets.Dataset(table).save_to_disk(str(tmp_path / "hf_dataset"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_section_has_the_blocks_it_promises():
    kinds = [k for k, _ in section_blocks()]
    assert kinds == ["bash", "python", "python"]


def test_shell_commands_run_as_written(data_dir):
    from evalkit.cli import main

    (bash,) = [code for kind, code in section_blocks() if kind == "bash"]
    for line in bash.strip().splitlines():
        args = shlex.split(line, comments=True)
        assert args[0] == "evalkit"
        res = CliRunner().invoke(main, args[1:] + ["--quiet"], catch_exceptions=False)
        assert res.exit_code == 0, (line, res.output)
        if "score" in args:
            fd = float(re.search(r"\bfd\b\s*\S*\s+([-\d.e+]+)", res.output)[1])  # "fd ↓  0.0"
            assert abs(fd) < 1e-3, res.output  # the same images on both sides
    assert (data_dir / "shards_pixel.npz").is_file()


def test_python_blocks_run_as_written(data_dir, monkeypatch, capsys):
    import evalkit.encoders as E
    from evalkit.encoders import custom

    monkeypatch.setattr(E.ENCODERS, "_entries", dict(E.ENCODERS._entries))
    monkeypatch.setattr(custom, "_CUSTOM", {})
    api, plugin = [code for kind, code in section_blocks() if kind == "python"]
    scope: dict = {}
    exec(compile(api, "README-api", "exec"), scope)
    fd, sha = capsys.readouterr().out.split()
    assert abs(float(fd)) < 1e-3 and len(sha) == 64
    scope = {}
    exec(compile(plugin, "README-plugin", "exec"), scope)
    spec = scope["spec"]()
    assert spec.name == "mynet" and spec.input_size == {"custom": 64}
