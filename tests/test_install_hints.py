"""Every install hint names the distribution evalkit is published under on PyPI.

``evalkit`` on PyPI is an unrelated project, so a hint of ``pip install evalkit[models]`` sends
users to it. The hints are found by scanning the source tree and the README, so a new hint
written by hand is checked too.
"""
import re
from pathlib import Path

import pytest

from evalkit.errors import DIST_NAME, pip_hint

ROOT = Path(__file__).resolve().parents[1]
# `pip install` followed by anything that names evalkit as a distribution (with or without an
# extra, quoted or not); `pip install .` / `".[test]"` (a checkout) carry no name.
HINT = re.compile(r"pip install\s+(?:-\S+\s+)*(['\"]?)([A-Za-z0-9_.-]*evalkit[A-Za-z0-9_.-]*)"
                  r"(\[[^\]\s]*\])?(['\"]?)")


def _scanned():
    files = [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
    for folder in ("evalkit", "encoders", "metrics", "benchmarks"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return [f for f in files if f.exists()]


def _hints():
    found = []
    for path in _scanned():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in HINT.finditer(line):
                found.append((f"{path.relative_to(ROOT)}:{n}", m))
    return found


def test_pyproject_publishes_dist_name():
    text = (ROOT / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^name = "([^"]+)"', project, re.M).group(1) == DIST_NAME
    assert re.search(r'^\[project\.scripts\]\nevalkit = ', text, re.M)  # the command keeps its name


def test_pip_hint_is_quoted():
    assert pip_hint("models") == f'pip install "{DIST_NAME}[models]"'


def test_hints_found():
    """The scan sees the README's and the encoders' hints (else the next test proves nothing)."""
    where = {loc.split(":")[0] for loc, _ in _hints()}
    assert "README.md" in where


@pytest.mark.parametrize("loc,match", _hints(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_hint_names_the_distribution(loc, match):
    open_q, name, extra, close_q = match.groups()
    assert name == DIST_NAME, f"{loc}: {match.group(0)!r} installs {name!r}, not {DIST_NAME!r}"
    if extra:
        assert open_q and open_q == close_q, f"{loc}: {match.group(0)!r} needs quotes (zsh globs [])"


def test_hint_strings_in_code_use_pip_hint():
    """Error messages build their hint with pip_hint (a literal drifts)."""
    for path in _scanned():
        if path.suffix == ".py" and path.name != "errors.py":
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"InputError\([^)]*pip install", text), path


@pytest.mark.parametrize("encoder,module,extra", [("data2vec", "transformers", "hf"),
                                                  ("clip", "open_clip", "models"),
                                                  ("convnext", "timm", "models")])
def test_missing_package_is_reported_before_any_weights_lookup(monkeypatch, tmp_path, encoder,
                                                               module, extra):
    """An encoder whose package is not importable is refused with the install hint (exit 2)
    before its weights are looked for in the caches or downloaded: from the CLI and from the
    library's identity step (which resolves the weights)."""
    import sys

    from click.testing import CliRunner

    import evalkit.encoders.weights as weights_mod
    import evalkit.files.download as download_mod
    from evalkit.cli import main
    from evalkit.errors import InputError
    from evalkit.features import identity
    from evalkit.features.options import ExtractOptions

    looked = []

    def spy(*args, **kwargs):
        looked.append(args)
        raise AssertionError("weights looked up")

    for mod, name in ((identity, "resolve_weights"), (identity, "known_sha256"),
                      (weights_mod, "resolve_weights"), (download_mod, "download")):
        monkeypatch.setattr(mod, name, spy)
    monkeypatch.setitem(sys.modules, module, None)  # installed or not: unimportable now
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    hint = pip_hint(extra)
    res = CliRunner().invoke(main, ["score", str(ROOT / "examples" / "fake"), "--ref",
                                    str(ROOT / "examples" / "real"), "--encoder", encoder])
    assert res.exit_code == 2, res.output
    assert module in res.output and hint in res.output
    with pytest.raises(InputError, match=re.escape(hint)):
        identity.encoder_identity(ExtractOptions(encoder=encoder))
    assert not looked
