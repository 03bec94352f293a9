"""First contact: `python -m evalkit` from the checkout and from elsewhere, no torch for the
light commands, a torch range (not a pin) in the package metadata."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.encoders import BUILTINS
from evalkit.errors import InputError
from evalkit.results.record import SCHEMA

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI in-process the way `python -m evalkit` does, then reports what got imported.
PROBE = """
import json, runpy, sys
if {drop_editable}:  # what a regular (non-editable) install sees from the checkout root
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "editable" not in getattr(f, "__module__", type(f).__module__)]
sys.argv = ["evalkit"] + {args!r}
code = 0
try:
    runpy.run_module("evalkit", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code or 0
import evalkit.metrics
print(json.dumps({{"code": code, "torch": "torch" in sys.modules,
                   "metrics": evalkit.metrics.__file__}}), file=sys.stderr)
"""


def probe(args, cwd, drop_editable=False):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=args, drop_editable=drop_editable)],
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert last.startswith("{"), proc.stderr
    return json.loads(last), proc


def _records(tmp_path):
    rec = {"schema": SCHEMA, "name": "m", "samples": {"n": 10}, "reference": {"fingerprint": "f"},
           "encoder": {"name": "e"}, "config": {}, "metrics": {"fd": 1.0, "precision": 0.5}}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(rec))
    b.write_text(json.dumps(rec))
    return str(a), str(b)


@pytest.mark.parametrize("where", ["root", "outside"])
def test_python_m_evalkit_from_the_checkout_and_elsewhere(tmp_path, where):
    cwd = ROOT if where == "root" else tmp_path
    out, proc = probe(["metrics"], cwd, drop_editable=where == "root")
    assert out["code"] == 0 and "fd_inf" in proc.stdout, proc.stderr
    if where == "root":  # the checkout's own folders, mapped as the installed package maps them
        assert Path(out["metrics"]).resolve() == ROOT / "metrics" / "__init__.py"


@pytest.mark.parametrize("args", [["--help"], ["check", "A", "--baseline", "B"], ["metrics"],
                                  ["leaderboard", "A", "B"], ["encoders"]])
def test_light_commands_do_not_import_torch(tmp_path, args):
    a, b = _records(tmp_path)
    args = [a if x == "A" else b if x == "B" else x for x in args]
    out, proc = probe(args, tmp_path)
    assert out["code"] == 0, proc.stderr
    assert out["torch"] is False


def test_encoders_lists_every_builtin_without_torch(tmp_path):
    out, proc = probe(["encoders"], tmp_path)
    assert out["code"] == 0 and out["torch"] is False, proc.stderr
    # one block per encoder (the table is wider than the default 100 columns): name, then
    # indented "archs/outputs/description" lines, none longer than the terminal
    listed = [line.split()[0] for line in proc.stdout.splitlines()
              if line and not line[0].isspace() and not line.startswith("name ")]
    assert listed[:len(BUILTINS)] == list(BUILTINS)
    columns = int(os.environ.get("COLUMNS") or 100)  # no terminal: $COLUMNS, else 100
    assert max(len(line) for line in proc.stdout.splitlines()) <= max(columns, 34)


@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_declarations_are_the_encoder_modules_specs(name):
    """What `evalkit encoders` prints without torch is the spec the module registers: the
    module builds its spec from its one declaration and restates none of it."""
    import importlib

    from evalkit.encoders import encoder_summary, get_encoder_spec

    entry = BUILTINS[name]
    spec = importlib.import_module(entry.module_name).SPEC
    assert get_encoder_spec(name) is spec
    assert (entry.name, entry.archs, entry.default_arch, entry.description, entry.resizes) == \
        (spec.name, tuple(spec.archs), spec.default_arch, spec.description, spec.resizes)
    assert dict(entry.default_outputs) == dict(spec.outputs[spec.default_arch])
    assert encoder_summary(name)[:3] == (entry.archs, entry.default_arch, entry.default_outputs)
    assert callable(spec.preprocess)
    for resize in ("clean", "legacy"):  # the declared resize modes are the ones accepted
        if resize in entry.resizes:
            spec.preprocess(entry.default_arch, resize)
        else:
            with pytest.raises(InputError, match="--resize"):
                spec.preprocess(entry.default_arch, resize)


def test_encoder_and_resize_help_derive_from_the_declarations(tmp_path):
    """`--encoder` lists every built-in; `--resize` names the encoders declaring legacy."""
    from evalkit.encoders import legacy_resize_encoders

    proc = subprocess.run([sys.executable, "-m", "evalkit", "score", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert " | ".join(BUILTINS) in text
    assert ", ".join(legacy_resize_encoders()) in text
    assert set(legacy_resize_encoders()) == {n for n, b in BUILTINS.items() if "legacy" in b.resizes}


def test_torchrun_m_evalkit_from_the_checkout_root():
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=1", "-m", "evalkit", "metrics"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "fd_inf" in proc.stdout


def test_package_declares_a_torch_range_not_a_pin():
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    torch_specs = re.findall(r'"(torch(?:vision)?\s*[^"]*)"', deps)
    assert torch_specs and all("==" not in s for s in torch_specs), torch_specs
    assert all(">=" in s for s in torch_specs), torch_specs


@pytest.mark.parametrize("args, said", [
    (["score", "no/such/folder", "--ref", "x", "--encoder", "pixel"], "no/such/folder: no such file"),
    (["score", "S", "--ref", "x", "--encoder", "pixle"], "did you mean pixel"),
    (["score", "S", "--ref", "x", "--test", "no/test", "--encoder", "pixel"], "no/test: no such file"),
])
def test_score_refuses_bad_arguments_before_importing_torch(tmp_path, args, said):
    """A missing folder or an unknown encoder is said in well under a second, not after torch
    has loaded (4.6-7.5 s before)."""
    (tmp_path / "S").mkdir()
    out, proc = probe(args, tmp_path)
    assert out["code"] == 2 and said in proc.stderr, proc.stderr
    assert out["torch"] is False
