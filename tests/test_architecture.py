"""The architecture holds: layers without upward imports (import-linter's contract in
pyproject.toml), no import cycles, small modules and functions."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lepton_exp"
LINT = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    """The package and pyproject.toml in a directory of their own, to break on purpose."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(PACKAGE, root / "lepton_exp", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_layers_contract_holds():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.mark.parametrize("module, upward, in_function", [
    ("lepton_exp/measure/__init__.py", "lepton_exp.training.trainer", False),
    ("lepton_exp/data/base.py", "lepton_exp.app.runner", True),
])
def test_an_upward_import_breaks_the_contract(package_copy, module, upward, in_function):
    path = package_copy / module
    original = path.read_text()
    added = (f"\n\ndef _upward():\n    import {upward}  # noqa\n" if in_function
             else f"\nimport {upward}  # noqa\n")
    path.write_text(original + added)
    try:
        done = lint_imports(package_copy)
    finally:
        path.write_text(original)
    assert done.returncode != 0
    assert upward in done.stdout and "is not allowed to import" in done.stdout


def test_no_import_cycles_between_modules():
    """Imports inside functions count: a cycle hidden in a function is still a cycle."""
    import grimp

    graph = grimp.build_graph("lepton_exp", cache_dir=None)
    edges = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    cycles = []
    for start in sorted(edges):
        for imported in edges[start]:
            if imported != start and graph.chain_exists(imported=start, importer=imported):
                cycles.append((start, imported))
    assert not cycles, f"import cycles through: {cycles[:5]}"


def _python_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "conf" not in p.parts)


def test_modules_and_functions_stay_small():
    too_long = []
    for path in _python_files():
        source = path.read_text()
        if len(source.splitlines()) > 400:
            too_long.append(f"{path.relative_to(ROOT)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: "
                                    f"{length} lines")
    assert not too_long, too_long
