"""The examples use Tidings the way a reader's app would: through its public API only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# What an app may import from the package: the top level and the framework integrations.
PUBLIC = {"tidings", "tidings.integrations.flask", "tidings.integrations.django"}
PUBLIC |= {"tidings.integrations.fastapi"}


def _sources() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*.py") if "node_modules" not in p.parts)


def _tidings_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "tidings"]


def test_every_example_has_a_readme_and_a_run_script() -> None:
    folders = [p for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "node_modules"]
    assert {p.name for p in folders} >= {"chat", "counter", "pins", "editing"}
    for folder in folders:
        assert (folder / "README.md").is_file(), f"{folder.name} has no README.md"
        assert (folder / "run.py").is_file(), f"{folder.name} has no run.py"
        readme = (folder / "README.md").read_text()
        assert f"make example NAME={folder.name}" in readme, f"{folder.name}/README.md"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_examples_import_only_the_public_api(path: Path) -> None:
    private = [
        f"line {line}: {name}" for line, name in _tidings_imports(path) if name not in PUBLIC
    ]
    assert not private, f"{path.relative_to(EXAMPLES)} imports private modules: {private}"
