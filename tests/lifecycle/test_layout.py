"""The lifecycle's sub-packages follow the flow of a model: each imports only those before it.

Read from the source (every ``import``, at module level or inside a function; annotations under
``if TYPE_CHECKING:`` aside), so a shortcut back up the flow fails here, not in a reader's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import velocast.lifecycle

ORDER = ["serving", "training", "decisions", "operations"]  # velocast.lifecycle's docstring
SHARED = {"inputs", "audit"}
ROOT = Path(velocast.lifecycle.__file__).parent


def _imported(path: Path) -> set[str]:
    """Every ``velocast.lifecycle...`` module a file imports (``from velocast.lifecycle.x import y`` gives both)."""
    out = set()
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in out if name.startswith("velocast.lifecycle.")}


def _nodes(tree: ast.AST):
    """Every node, except those under ``if TYPE_CHECKING:`` (imported for annotations only)."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
            continue
        yield child
        yield from _nodes(child)


def _part(module: str) -> str:
    return module.split(".")[2]


def test_each_sub_package_imports_only_the_ones_before_it():
    seen = 0
    wrong = []
    for package in ORDER:
        allowed = set(ORDER[:ORDER.index(package) + 1]) | SHARED
        for path in sorted((ROOT / package).glob("*.py")):
            seen += 1
            wrong += [f"{package}/{path.name} imports {name}" for name in sorted(_imported(path))
                      if _part(name) not in allowed]
    assert seen >= 20, "the sub-packages hold the lifecycle's modules"
    assert not wrong, "\n".join(wrong)


def test_the_shared_modules_import_no_sub_package():
    for name in sorted(SHARED):
        parts = {_part(module) for module in _imported(ROOT / f"{name}.py")}
        assert not parts & set(ORDER), f"{name}.py imports {sorted(parts & set(ORDER))}"


def test_the_lifecycle_is_only_sub_packages_and_the_shared_modules():
    modules = {path.stem for path in ROOT.glob("*.py")} - {"__init__"}
    packages = {path.name for path in ROOT.iterdir() if (path / "__init__.py").exists()}
    assert modules == SHARED
    assert packages == set(ORDER)


def test_the_check_sees_a_backward_import(tmp_path):
    """A decision module importing an operations module is what the first test refuses."""
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import velocast.lifecycle.serving.predict\n"
                   "def f():\n    from velocast.lifecycle.operations import cycle\n", encoding="utf-8")
    assert {_part(m) for m in _imported(bad)} == {"operations"}
