"""The Node tests of tidings.js (js/test/*.test.js, node:test) as one pytest test, so that
``make test`` runs them: unit tests with a fake channel, the HTTP snapshot path against a local
server, the real pusher-js 8.6.0 against a real ``tidings serve`` that the Node tests start
themselves (with this venv's Python), with and without a snapshot provider
(``live_snapshot_url``), liveCollection's ``snapshotUrl`` against a real Soketi (the
benchmark peer, installed by bench/servers.py), and the recovery plugin with pusher-js and
Laravel Echo against a Pusher-protocol server in Node that speaks the recovery wire format.
Their full output is shown when one fails."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from server_process import TIMEOUT

pytestmark = [pytest.mark.node, pytest.mark.timeout(30 * TIMEOUT)]

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "js"


def soketi_server() -> Path:
    """Soketi's ``bin/server.js``, installed first if needed (npm ci, as test_client_http.py
    and the benchmarks do)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import servers  # bench/servers.py: installs and configures the benchmark peers
    finally:
        sys.path.remove(str(ROOT / "bench"))
    servers.install_soketi()
    script: Path = servers.SOKETI_DIR / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"
    assert script.is_file(), script
    return script


def test_tidings_js_node_tests() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the tidings.js tests need Node.js 20.19+")
    for package in ("pusher-js", "laravel-echo"):
        if not (JS_DIR / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"{package} is not installed: run `make install` (npm ci in {JS_DIR})")
    files = sorted(str(p.relative_to(JS_DIR)) for p in (JS_DIR / "test").glob("*.test.js"))
    assert files, f"no tests in {JS_DIR / 'test'}"
    # Its own process group: on a timeout the Node runner's children and the `tidings serve`
    # processes they started go down with it.
    proc = subprocess.Popen(
        [node, "--test", "--test-reporter=spec", *files],
        cwd=JS_DIR,
        env={
            **os.environ,
            "TIDINGS_PYTHON": sys.executable,
            "SOKETI_SERVER": str(soketi_server()),
            "NO_COLOR": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=25 * TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"node --test did not finish within {25 * TIMEOUT} s:\n{output}")
    assert proc.returncode == 0, f"node --test failed (exit {proc.returncode}):\n{output}"
    summary = output.replace("ℹ", "#")
    assert "# fail 0" in summary and "# skipped 0" in summary, output
