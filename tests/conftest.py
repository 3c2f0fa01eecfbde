"""Shared fixtures: a real `tidings serve` process on a free port.

Every timeout in the suite is a multiple of ``TIMEOUT`` so a slow CI machine can scale
them all at once with ``TIDINGS_TEST_TIMEOUT_SCALE``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))

APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"


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
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, settings: dict[str, Any], apps: list[dict[str, Any]]) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    for app in apps:
        lines.append("")
        lines.append("[[apps]]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in app.items())
    path.write_text("\n".join(lines) + "\n")
    return path


DEFAULT_APPS: list[dict[str, Any]] = [
    {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "client_events": True,
        "subscription_count": True,
    },
    {"id": "23456", "key": "disabled-key", "secret": "disabled-secret", "enabled": False},
]


@dataclass
class ServerProcess:
    """A `tidings serve` child process listening on 127.0.0.1:port."""

    port: int
    config: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
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
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 4 * TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tidings exited early:\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"tidings did not become ready:\n{self.logs()}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
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


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start a server with the given settings and apps; stopped after the test."""
    started: list[ServerProcess] = []

    def factory(
        apps: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        **settings: Any,
    ) -> ServerProcess:
        d = tmp_path_factory.mktemp("tidings")
        config = write_config(
            d / "tidings.toml", settings, apps if apps is not None else DEFAULT_APPS
        )
        server = ServerProcess(free_port(), config, d / "server.log", env or {})
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with DEFAULT_APPS shared by a test module."""
    d = tmp_path_factory.mktemp("tidings-shared")
    config = write_config(d / "tidings.toml", {}, DEFAULT_APPS)
    srv = ServerProcess(free_port(), config, d / "server.log")
    srv.start()
    yield srv
    srv.stop()


# --- Redis: one real redis-server for the whole session; tests isolate themselves by prefix ---

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # --import-mode=importlib does not add tests/ itself
    sys.path.insert(0, _TESTS_DIR)

from uuid import uuid4  # noqa: E402

from redis_server import RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port, started on first use and stopped at session end.

    Shared by every test: never stop or restart it in a test (start your own RedisServer
    for outage tests); isolate keys and pub/sub channels with ``redis_prefix``.
    """
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key and pub/sub channel prefix no other test uses."""
    return f"t{uuid4().hex[:12]}"
