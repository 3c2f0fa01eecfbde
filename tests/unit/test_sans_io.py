"""STYLE habit 1: protocol/ and core/ import no I/O library (checked with ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tidings

PACKAGE = Path(tidings.__file__).parent
SANS_IO = ("protocol", "core")
FORBIDDEN = {"asyncio", "aiohttp", "redis", "socket", "uvloop", "selectors"}
MODULES = sorted(p for d in SANS_IO for p in (PACKAGE / d).rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_the_sans_io_packages_exist() -> None:
    assert {p.parent.name for p in MODULES} == set(SANS_IO)
    assert any(p.name == "session.py" for p in MODULES)
    # The node's decisions (issue 13): the node only awaits the broker and writes.
    core = {p.name for p in MODULES if p.parent.name == "core"}
    assert {"registry.py", "watchlist.py", "views.py", "transitions.py", "counters.py"} <= core


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_io_imports(path: Path) -> None:
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_sans_io_never_imports_the_edges() -> None:
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("tidings.server", "tidings.brokers")), path


def test_the_checker_catches_io_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nimport asyncio.tasks\nfrom aiohttp import web\n"
        "from . import sibling\nimportlib.import_module('redis')\n"
    )
    assert imported_roots(sample) == {"os", "asyncio", "aiohttp", "redis"}
