"""Files a test run leaves in the working tree (checked by tests/conftest.py at session end).

A test run may write only under temporary directories, the documented ``test-artifacts/`` and
the tools' own caches. Anything else (a server's SQLite webhook queue created with a relative
path, say) would end up in somebody's ``git add .``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Path components a run may create: outputs meant to be read, and caches of the tools.
ALLOWED = frozenset(
    {
        "test-artifacts",
        "__pycache__",
        ".pytest_cache",
        ".hypothesis",
        ".mypy_cache",
        ".ruff_cache",
        ".cache",
        ".venv",
        "node_modules",
    }
)


def untracked() -> set[str] | None:
    """Untracked and ignored paths under ROOT, or None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    paths = {line[3:].strip('"') for line in done.stdout.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not ALLOWED.intersection(Path(p).parts)}
