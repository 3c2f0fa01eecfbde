"""A real ASGI server (uvicorn or hypercorn) serving ``tests/integration/asgi_http_app.py``:
Tidings' HTTP edge (``tidings.asgi.http.AsgiHttp``) inside an ASGI app, for
tests/integration/test_asgi_http.py and tests/browser/test_asgi_fallback.py. Waits are
multiples of ``TIMEOUT``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server_process import TIMEOUT, free_port, write_config

APP_DIR = Path(__file__).resolve().parent / "integration"


@dataclass
class AsgiServer:
    """An ASGI server (uvicorn, hypercorn) serving asgi_http_app.py on 127.0.0.1:port, its
    logs in log_path."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Until the server answers (only after lifespan startup, which starts the node)."""
        deadline = time.monotonic() + 4 * TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the ASGI server exited early:\n{self.logs()}")
            try:
                urllib.request.urlopen(f"{self.http_url}/", timeout=1)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ASGI server did not start:\n{self.logs()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=3 * TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=TIMEOUT)


def start_asgi(
    directory: Path,
    apps: list[dict[str, Any]],
    factory: str = "create_app",
    server: str = "uvicorn",
    **settings: Any,
) -> AsgiServer:
    """An ASGI server with these Tidings settings and apps, once it answers. ``factory``: a
    function of asgi_http_app.py; ``server``: "uvicorn" or "hypercorn"."""
    config = write_config(directory / "tidings.toml", settings, apps)
    port = free_port()
    log_path = directory / f"{server}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *_command(server, factory, port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(APP_DIR), os.getenv("PYTHONPATH")])
                ),
                "TIDINGS_CONFIG": str(config),
            },
            cwd=directory,
        )
    started = AsgiServer(port, proc, log_path)
    try:
        started.wait_ready()
    except BaseException:
        started.stop()
        raise
    return started


def _command(server: str, factory: str, port: int) -> list[str]:
    if server == "hypercorn":
        return [
            "hypercorn",
            f"asgi_http_app:{factory}()",
            "--bind",
            f"127.0.0.1:{port}",
        ]
    assert server == "uvicorn", server
    return [
        "uvicorn",
        "--factory",
        f"asgi_http_app:{factory}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws-per-message-deflate",
        "false",
        "--lifespan",
        "on",
    ]
