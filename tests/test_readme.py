"""The README's Python blocks marked ``<!-- runnable -->`` run as written from the repository
root (a fresh interpreter each, the checkout on the path), so the documented example cannot rot."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- runnable -->\n```python\n(.*?)```", re.S)


def _blocks():
    return BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_has_runnable_blocks():
    assert _blocks(), "no README block is marked <!-- runnable -->"


@pytest.mark.parametrize("code", _blocks(), ids=lambda c: c.strip().splitlines()[-1][:40])
def test_readme_block_runs(code, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               EVALKIT_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Result('fake'" in proc.stdout or "Result(" not in code
