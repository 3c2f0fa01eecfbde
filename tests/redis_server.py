"""A real ``redis-server`` child process on a free 127.0.0.1 port, for broker tests.

Not a conftest: ``tests/conftest.py`` puts this directory on ``sys.path`` and builds its
session-scoped ``redis_server`` fixture from :class:`RedisServer`. A test that kills or
restarts Redis (an outage test) should start its own ``RedisServer`` rather than take the
shared one down under other tests.

Nothing is persisted (``--save "" --appendonly no``): a restart starts empty, as a
replacement Redis would after a crash.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServerError(RuntimeError):
    """redis-server is missing, exited early or never answered PING."""


class RedisServer:
    """One ``redis-server`` process; ``restart()`` brings it back on the same port."""

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        self._own_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="tidings-redis-")) if directory is None else directory
        )
        self.port = port if port is not None else free_port()
        self.log_path = self.directory / "redis-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start redis-server and return once it answers PING."""
        if self.running:
            raise RedisServerError(f"redis-server already running on port {self.port}")
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisServerError(
                "redis-server is not on PATH: the broker tests need a real Redis 7. "
                "Install it with `apt-get install -y redis-server` (`make test` does this)."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    executable,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        self._wait_for_ping()

    def _wait_for_ping(self) -> None:
        deadline = time.monotonic() + 4 * TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with {self.proc.returncode} on port {self.port}:\n"
                    f"{self.logs()}"
                )
            client = redis.Redis(
                host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5
            )
            try:
                if client.ping():
                    return
            except redis.RedisError as exc:  # still loading or not listening yet
                last_error = exc
            finally:
                client.close()
            time.sleep(0.05)
        self.kill()
        raise RedisServerError(
            f"redis-server on port {self.port} did not answer PING within {4 * TIMEOUT} s "
            f"({last_error!r}):\n{self.logs()}"
        )

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not exit; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=2 * TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=TIMEOUT)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: Redis disappears without closing its connections cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)

    def restart(self) -> None:
        """Stop, then start again on the same port (with empty data)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and remove the directory if this object created it."""
        self.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
