"""The code blocks of README.md and docs/*.md run as written.

Every fenced block whose language is ``python``, ``js``, ``toml`` or ``json`` is checked, each
as far as this machine allows:

- ``python``: compiled; then run in a subprocess against a real ``tidings serve`` (the port
  ``6001`` in the text becomes the test server's port, nothing else changes);
- ``js``: ``node --check``; a pusher-js block (``new Pusher(``) also runs in Node with the real
  pusher-js against the test server, and must connect;
- ``toml``: ``tidings check-config`` accepts it;
- ``json``: parses.

A block that cannot run here (it needs Flask, Django, FastAPI or Laravel Echo, or it is a
fragment) is marked in the Markdown, on the line before its fence, with
``<!-- snippet: no-run (the reason) -->``; it is still compiled or syntax-checked where the
language allows. Shell blocks are commands for a person, not checked here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pusher_helpers import TIMEOUT

from server_process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
E2E = ROOT / "tests" / "e2e"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHECKED = ("python", "js", "toml", "json")
NO_RUN = re.compile(r"<!--\s*snippet:\s*no-run\b.*-->")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    runs: bool

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets() -> list[Snippet]:
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = re.match(r"^```(\w+)\s*$", lines[i])
            if fence is None:
                i += 1
                continue
            end = i + 1
            while end < len(lines) and lines[end] != "```":
                end += 1
            language = fence[1]
            if language in CHECKED:
                marked = i > 0 and NO_RUN.search(lines[i - 1]) is not None
                code = "\n".join(lines[i + 1 : end]) + "\n"
                found.append(Snippet(path, i + 1, language, code, not marked))
            i = end + 1
    return found


SNIPPETS = snippets()


def by_language(language: str) -> list[Snippet]:
    return [s for s in SNIPPETS if s.language == language]


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with every app the docs use (their ids, keys and secrets)."""
    d = tmp_path_factory.mktemp("docs")
    apps = {
        ("1", "my-key", "my-secret"),
        ("12345", "app-key", "app-secret"),
    }
    config = d / "tidings.toml"
    config.write_text(
        "".join(
            f'[[apps]]\nid = "{i}"\nkey = "{k}"\nsecret = "{s}"\nclient_events = true\n\n'
            for i, k, s in sorted(apps)
        )
    )
    srv = ServerProcess(free_port(), config, d / "server.log")
    srv.start()
    yield srv
    srv.stop()


def test_the_docs_have_snippets_of_each_kind() -> None:
    # Guards the extraction itself: a broken parser would make every test below vacuous.
    assert {s.language for s in SNIPPETS} == set(CHECKED), SNIPPETS
    assert any(s.runs for s in by_language("python"))


@pytest.mark.parametrize("snippet", by_language("python"), ids=str)
def test_python_snippet(snippet: Snippet, docs_server: ServerProcess, tmp_path: Path) -> None:
    compile(snippet.code, str(snippet), "exec")
    if not snippet.runs:
        return
    script = tmp_path / "snippet.py"
    script.write_text(snippet.code.replace("6001", str(docs_server.port)))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=6 * TIMEOUT,
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"{snippet}\n{done.stdout}{done.stderr}"


# Runs a pusher-js block in Node: `Pusher` is the real client; the block's own code is left
# as written; the harness waits for the connection and exits.
JS_HARNESS = """\
const Pusher = require('pusher-js');
const window = globalThis;
%s
;(function wait(started) {
  const p = typeof pusher !== 'undefined' ? pusher : null;
  if (p && p.connection.state === 'connected') { p.disconnect(); process.exit(0); }
  if (Date.now() - started > %d) {
    console.error('not connected: ' + (p ? p.connection.state : 'no pusher'));
    process.exit(1);
  }
  setTimeout(() => wait(started), 50);
})(Date.now());
"""


@pytest.mark.node
@pytest.mark.parametrize("snippet", by_language("js"), ids=str)
def test_js_snippet(snippet: Snippet, docs_server: ServerProcess, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is required (make install)"
    source = tmp_path / "snippet.js"
    source.write_text(snippet.code)
    check = subprocess.run([node, "--check", str(source)], capture_output=True, text=True)
    assert check.returncode == 0, f"{snippet}\n{check.stderr}"
    if not snippet.runs:
        return
    assert "new Pusher(" in snippet.code, f"{snippet}: mark it no-run or make it pusher-js"
    code = snippet.code.replace("6001", str(docs_server.port))
    runner = E2E / f"snippet-{free_port()}.js"  # next to node_modules, for require()
    runner.write_text(JS_HARNESS % (code, int(4 * TIMEOUT * 1000)))
    try:
        done = subprocess.run(
            [node, str(runner)], capture_output=True, text=True, timeout=6 * TIMEOUT, cwd=E2E
        )
    finally:
        runner.unlink()
    assert done.returncode == 0, f"{snippet}\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("snippet", by_language("toml"), ids=str)
def test_toml_snippet(snippet: Snippet, tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(snippet.code)
    if not snippet.runs:
        import tomllib

        tomllib.loads(snippet.code)
        return
    done = subprocess.run(
        [sys.executable, "-m", "tidings", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=3 * TIMEOUT,
    )
    assert done.returncode == 0, f"{snippet}\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("snippet", by_language("json"), ids=str)
def test_json_snippet(snippet: Snippet) -> None:
    if snippet.runs:
        json.loads(snippet.code)
