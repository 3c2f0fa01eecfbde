"""A real ``tidings serve`` child process, shared by tests/conftest.py (the ``make_server`` and
``server`` fixtures) and tests/integration/webhook_helpers.py (``TidingsProcess``).

Every wait is bounded by a multiple of ``TIMEOUT`` (scaled by TIDINGS_TEST_TIMEOUT_SCALE).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, settings: dict[str, Any], apps: list[dict[str, Any]]) -> Path:
    """A Tidings TOML file at ``path``: top-level ``settings``, then one [[apps]] per app."""
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    for app in apps:
        lines += ["", "[[apps]]", *(f"{k} = {toml_value(v)}" for k, v in app.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


PORT_ATTEMPTS = 3  # see ServerProcess.start


@dataclass
class ServerProcess:
    """A `tidings serve` child process listening on 127.0.0.1:port, logs appended to log_path.

    ``cwd``: the directory it runs in (default: the config file's, a temporary directory, so
    that nothing the server writes with a relative path lands in the working tree)."""

    port: int
    config: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    cwd: Path | None = None
    args: tuple[str, ...] = ()  # more `tidings serve` arguments, e.g. ("--conformance",)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tidings",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--config",
                    str(self.config),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd or self.config.parent,
            )

    def is_ready(self) -> bool:
        """Whether /ready answers 200; raises if the process has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"tidings exited early:\n{self.logs()}")
        try:
            with urllib.request.urlopen(f"{self.http_url}/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def start(self) -> None:
        """Spawn and wait until ready.

        free_port() only finds a port that was free a moment ago: on a busy machine another
        process can take it before the server binds it. Then (and only then) the server is
        started again on another free port; ``port`` and the URLs follow."""
        for attempt in range(PORT_ATTEMPTS):
            self.spawn()
            deadline = time.monotonic() + 4 * TIMEOUT
            try:
                while not self.is_ready():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"tidings did not become ready:\n{self.logs()}")
                    time.sleep(0.05)
                return
            except RuntimeError:
                if attempt + 1 == PORT_ATTEMPTS or not self._port_taken():
                    raise
                self.port = free_port()

    def start_beside(self) -> None:
        """Spawn on a port another server already listens on (both with ``reuse_port``, as in
        a rolling restart) and wait until this one listens too.

        ``/ready`` cannot tell: the other server answers it on the shared port. The server
        logs "listening on" once its socket is bound and listening."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + 4 * TIMEOUT
        while "listening on" not in self.logs():
            if self.proc.poll() is not None:
                raise RuntimeError(f"tidings exited early:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tidings did not start listening:\n{self.logs()}")
            time.sleep(0.05)

    def _port_taken(self) -> bool:
        assert self.proc is not None
        return self.proc.poll() is not None and f":{self.port}: address already in use" in (
            self.logs()
        )

    async def astart(self) -> None:
        """``start`` for async tests (keeps the event loop responsive)."""
        await asyncio.to_thread(self.start)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=TIMEOUT)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal (SIGTERM by default) and wait; SIGKILL if it does not exit. The exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=3 * TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=TIMEOUT)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
