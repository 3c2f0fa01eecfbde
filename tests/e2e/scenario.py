"""The runner of the pusher-js scenarios, shared by tests/e2e and tests/cluster.

``Scenario(name, port, env)`` runs ``node js/<name>.js`` (cwd = tests/e2e, where ``npm ci``
installed pusher-js) and speaks its protocol: one JSON object per stdout line, ``{"step": ...}``
when the script waits for the test (answered by ``go`` on stdin, see ``go``), and finally
``{"result": {...}}`` with its observations. ``rest_client(port)`` is the official ``pusher``
Python SDK the tests make their REST calls with.

tests/e2e is on ``sys.path`` (tests/e2e/conftest.py, tests/cluster/conftest.py), so test modules
``import scenario`` whatever pytest import mode is in use.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NoReturn

import pusher
import pytest

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"

E2E_DIR = Path(__file__).resolve().parent
SOCKET_ID = re.compile(r"^\d+\.\d+$")


def node_binary() -> str:
    """The `node` executable; its absence is a broken environment, so fail rather than skip."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the pusher-js end-to-end tests need Node.js 18+")
    if not (E2E_DIR / "node_modules" / "pusher-js" / "package.json").is_file():
        pytest.fail(f"pusher-js is not installed: run `npm ci` in {E2E_DIR}")
    return node


def unique(prefix: str) -> str:
    """A name no other test uses, so tests sharing the module server cannot see each other."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Scenario:
    """One running `node js/<name>.js` and the step/result protocol spoken over its pipes."""

    def __init__(self, name: str, port: int, env: dict[str, str]) -> None:
        self.name = name
        full_env = {
            **os.environ,
            "TIDINGS_HOST": "127.0.0.1",
            "TIDINGS_PORT": str(port),
            "APP_KEY": APP_KEY,
            "APP_SECRET": APP_SECRET,
            "TIDINGS_WAIT_MS": str(int(TIMEOUT * 1000)),
            "TIDINGS_QUIET_MS": str(int(TIMEOUT * 100)),
            **env,
        }
        self.proc = subprocess.Popen(
            [node_binary(), f"js/{name}.js"],
            cwd=E2E_DIR,
            env=full_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream: IO[str], is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self.lines.put(line)
            else:
                self.stderr.append(line)
        if is_stdout:
            self.lines.put(None)

    def _fail(self, why: str) -> NoReturn:
        self.kill()
        for thread in self._threads:
            thread.join(timeout=TIMEOUT)
        stderr = "".join(self.stderr)
        pytest.fail(f"scenario {self.name}: {why}\n--- node stderr ---\n{stderr}")

    def _next(self) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=6 * TIMEOUT)
        except queue.Empty:
            self._fail(f"no output within {6 * TIMEOUT} s")
        if line is None:
            self.proc.wait(timeout=TIMEOUT)
            self._fail(f"exited with code {self.proc.returncode} before finishing")
        try:
            message = json.loads(line)
        except ValueError:
            self._fail(f"printed something that is not JSON: {line!r}")
        if not isinstance(message, dict):
            self._fail(f"printed JSON that is not an object: {line!r}")
        return message

    def wait_step(self, step: str) -> dict[str, Any]:
        """Wait until the script prints {"step": step, ...} and return that object."""
        message = self._next()
        if message.get("step") != step:
            self._fail(f"expected step {step!r}, got {message!r}")
        return message

    def go(self) -> None:
        """Let the script continue after a step."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        """Wait for the final observations and a clean exit."""
        message = self._next()
        if "result" not in message:
            self._fail(f"expected the result, got {message!r}")
        code = self.proc.wait(timeout=2 * TIMEOUT)
        if code != 0:
            self._fail(f"exited with code {code} after printing its result")
        result = message["result"]
        if not isinstance(result, dict):
            self._fail(f"result is not an object: {result!r}")
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)

    def close(self) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


ScenarioFactory = Callable[..., Scenario]


def rest_client(port: int) -> pusher.Pusher:
    """The official Python server SDK pointed at the server on ``port``."""
    return pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host="127.0.0.1",
        port=port,
        ssl=False,
        timeout=TIMEOUT,
    )
