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


def test_installed_package_imports_from_outside_the_repo(tmp_path):
    code = ("import evalkit, evalkit.metrics, evalkit.encoders; "
            "print(evalkit.metrics.__name__, evalkit.encoders.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["evalkit.metrics", "evalkit.encoders"]
