"""A real uvicorn or hypercorn child process serving one of ``apps.py``'s ASGI apps on a free
port of 127.0.0.1 (tests/integration/test_asgi.py, tests/e2e/test_pusher_js_asgi.py).

Every wait is bounded by a multiple of ``TIMEOUT`` (scaled by TIDINGS_TEST_TIMEOUT_SCALE).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server_process import TIMEOUT, free_port

APPS = Path(__file__).resolve().parent / "apps.py"


@dataclass
class AsgiServer:
    """``app`` (a name in apps.py) under ``server`` ("uvicorn" or "hypercorn"), run in
    ``workdir`` (a tmp_path: the log and the lifecycle events are written there)."""

    app: str
    workdir: Path
    server: str = "uvicorn"
    args: tuple[str, ...] = ()  # more server arguments, e.g. ("--lifespan", "off")
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.server}-{self.port}.log"

    @property
    def events_path(self) -> Path:
        return self.workdir / f"events-{self.port}.txt"

    def command(self) -> list[str]:
        if self.server == "uvicorn":
            return [
                sys.executable,
                "-m",
                "uvicorn",
                "apps:application",
                "--app-dir",
                str(APPS.parent),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                # Deflate would make every recipient compress the same message again.
                "--ws-per-message-deflate",
                "false",
                *self.args,
            ]
        return [
            sys.executable,
            "-m",
            "hypercorn",
            f"{APPS}:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            *self.args,
        ]

    def spawn(self) -> None:
        """Start the process without waiting for it."""
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "TIDINGS_TEST_ASGI_APP": self.app,
            "TIDINGS_TEST_EVENTS": str(self.events_path),
            **self.env,
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )

    def start(self) -> None:
        """Spawn and wait until it answers HTTP."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + 4 * TIMEOUT
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server} exited early:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.server} did not start:\n{self.logs()}")
            time.sleep(0.05)

    def answers(self) -> bool:
        """Whether an HTTP request gets an answer (any status)."""
        try:
            self.request("GET", "/ready-probe")
        except OSError:
            return False
        return True

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One HTTP request; the status and the JSON body (None when it is not JSON)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2 * TIMEOUT)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, None

    def publish(self, channel: str, count: int, *, start: int = 0, size: int = 0) -> None:
        """``count`` events through the node of the served app (its ``/test/publish``)."""
        request = {"channel": channel, "count": count, "start": start, "size": size}
        status, body = self.request("POST", "/test/publish", request)
        assert status == 200, (status, body, self.logs()[-2000:])

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal and wait; SIGKILL if it does not exit. The exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=3 * TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=TIMEOUT)

    def events(self) -> list[str]:
        """The lifecycle recorded by apps.py ("tidings started", "app startup", ...)."""
        try:
            return self.events_path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
