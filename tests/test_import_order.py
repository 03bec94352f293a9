"""The architecture as a test: one import order, no circles, no private reach-ins.

Stages, lowest first; a module may import its own stage and the ones below, never above:

    leaves < files < images < encoders, metrics < features < refs, scoring < results
           < api, evaluator < cli

Imports inside functions count (they are imports all the same); imports under
``if TYPE_CHECKING:`` do not (annotations only). ``ARCHITECTURE.md`` explains the stages.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package folder -> import name of the package (encoders/ and metrics/ install inside evalkit)
PACKAGES = {"evalkit": "evalkit", "encoders": "evalkit.encoders", "metrics": "evalkit.metrics"}
LEAVES = ("evalkit", "evalkit._source_tree", "evalkit.errors", "evalkit.registry", "evalkit.lazy",
          "evalkit.devices", "evalkit.formatting", "evalkit.provenance")
STAGES = [  # (rank, module prefixes)
    (0, LEAVES),
    (1, ("evalkit.files",)),
    (2, ("evalkit.images",)),
    (3, ("evalkit.encoders", "evalkit.metrics")),
    (4, ("evalkit.features",)),
    (5, ("evalkit.refs", "evalkit.scoring")),
    (6, ("evalkit.results",)),
    (7, ("evalkit.api", "evalkit.evaluator", "evalkit.integrations")),
    (8, ("evalkit.cli", "evalkit.__main__")),
]


def stage_of(module: str) -> int:
    best, rank = "", None
    for r, prefixes in STAGES:
        for p in prefixes:
            exact = p in LEAVES
            if (module == p or (not exact and module.startswith(p + "."))) and len(p) > len(best):
                best, rank = p, r
    assert rank is not None, f"{module}: no stage (add it to STAGES and ARCHITECTURE.md)"
    return rank


def _modules() -> dict[str, Path]:
    found = {}
    for folder, pkg in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([pkg, *parts])] = path
    return found


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _absolute(module: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path):
    """Yield (target module, imported names or None, line) for every evalkit import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("evalkit"):
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, path.name == "__init__.py")
            if not target.startswith("evalkit"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # `from evalkit.x import module`
                    yield sub, None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def _owner(target: str) -> str:
    """The module an import resolves to (a name inside a module -> that module)."""
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def test_every_import_goes_down_the_stages():
    bad = []
    for module, path in MODULES.items():
        for target, _, line in imports_of(module, path):
            if stage_of(_owner(target)) > stage_of(module):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {target}")
    assert bad == []


def test_no_import_circles():
    graph = {m: {_owner(t) for t, _, _ in imports_of(m, p)} - {m} for m, p in MODULES.items()}
    # a package's __init__ importing its own modules is how a package exports; a module
    # importing its package's __init__ back is the circle that counts
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_private_names_across_modules():
    bad = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for target, name, line in imports_of(module, path):
            if name and name.startswith("_") and not name.startswith("__") and \
                    _owner(target) != module:
                bad.append(f"{path.relative_to(ROOT)}:{line}: from {target} import {name}")
        for node in ast.walk(tree):  # `import evalkit.x as m` / `from evalkit import x` then m._y
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    full = alias.name if isinstance(node, ast.Import) else \
                        f"{_absolute(module, node, path.name == '__init__.py')}.{alias.name}"
                    if full in MODULES and full != module:
                        aliases[alias.asname or alias.name.split(".")[-1]] = full
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id in aliases and node.attr.startswith("_") and \
                    not node.attr.startswith("__"):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                           f"{aliases[node.value.id]}.{node.attr}")
    assert bad == []


def test_the_checker_catches_each_rule(tmp_path):
    """The rules above can fail: an upward import, a circle and a reach-in are each seen."""
    up = tmp_path / "up.py"
    up.write_text("from evalkit.results.record import SCHEMA\n")
    assert [t for t, _, _ in imports_of("evalkit.images.up", up)] == ["evalkit.results.record"]
    assert stage_of("evalkit.results.record") > stage_of("evalkit.images.up")
    guarded = tmp_path / "guarded.py"
    guarded.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                       "    from evalkit.cli import main\n")
    assert list(imports_of("evalkit.files.guarded", guarded)) == []
    inner = tmp_path / "inner.py"
    inner.write_text("def f():\n    from evalkit.refs.store import _root\n")
    assert list(imports_of("evalkit.refs.pull", inner)) == [("evalkit.refs.store", "_root", 2)]
