"""Protocol cores are sans-IO: nothing under edged/protocols/ may import I/O, threads or clocks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edged.protocols

FORBIDDEN = {"asyncio", "socket", "threading", "time", "selectors", "lmdb"}
ROOT = Path(edged.protocols.__file__).parent
MODULES = sorted(ROOT.rglob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute import in ``tree`` (including ones inside functions)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_there_are_modules_to_check() -> None:
    assert ROOT / "rtmp" / "session.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = imported_modules(tree) & FORBIDDEN
    assert not bad, f"{path.relative_to(ROOT.parent.parent)} imports {sorted(bad)}"


def test_the_checker_sees_every_import_form() -> None:
    source = "import time\nimport socket as s\nfrom asyncio import sleep\nfrom threading.x import y\nfrom . import z\n"
    source += "def f():\n    import selectors\n    from lmdb import open\n"
    assert imported_modules(ast.parse(source)) == FORBIDDEN
