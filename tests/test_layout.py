"""Package layout rules: the metric layer imports nothing from the engine; the installed
package maps encoders/ and metrics/ as evalkit subpackages."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ("evalkit.sources", "evalkit.extract", "evalkit.cache", "evalkit.cli", "evalkit.commands",
          "evalkit.pipeline", "evalkit.api", "evalkit.scoring", "evalkit.refs", "evalkit.report")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_metrics_do_not_import_the_engine():
    bad = [(p.name, m) for p in (ROOT / "metrics").glob("*.py") for m in _imports(p)
           if m.startswith(ENGINE)]
    assert bad == []


def _packages() -> list[str]:
    """Every package of the source tree, as the installed distribution must name it."""
    names = []
    pairs = (("evalkit", "evalkit"), ("encoders", "evalkit.encoders"), ("metrics", "evalkit.metrics"))
    for folder, pkg in pairs:
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder).parts
            names.append(".".join([pkg, *rel]))
    return names


def test_installed_package_imports_from_outside_the_repo(tmp_path):
    """From outside the checkout (CI: the installed wheel), every package of the tree imports
    and the catalog ships as package data: a package missing from pyproject.toml fails here."""
    packages = _packages()
    code = ("import importlib, json; from importlib import resources; "
            f"mods = [importlib.import_module(n) for n in {packages!r}]; "
            "print(' '.join(m.__name__ for m in mods)); "
            "print(len(json.loads(resources.files('evalkit.refs').joinpath('catalog.json').read_text())['entries']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    names, entries = out.stdout.splitlines()
    assert names.split() == packages
    assert int(entries) > 0
