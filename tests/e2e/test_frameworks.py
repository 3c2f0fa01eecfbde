"""Real frameworks under real servers, with pusher-js on the other end.

- Flask under gunicorn (two sync workers, ``--preload``) publishes from its views through
  ``Realtime.client("redis://…")`` into a ``tidings serve --redis`` that a pusher-js client
  (Node) listens to. Both workers publish, each from its own client made after the fork.
- FastAPI under uvicorn with Tidings embedded (``rt.asgi(api)``): pusher-js connects to the
  app's own port over WebSocket and is authorized by the app's ``/pusher/auth``; in Chromium
  with WebSocket removed, pusher-js falls back to HTTP and still gets the app's events.

The apps are in ``framework_examples/``; the pusher-js scripts in ``js/``. Django's
``on_commit`` is tested in tests/integration/test_django_on_commit.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from scenario import Scenario, unique

from redis_server import RedisServer
from server_process import TIMEOUT, ServerProcess, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))

from test_chromium_fallback import (  # noqa: E402
    PageFactory,
    browser,
    open_page,
    page_origin,
    wait_events,
)

pytestmark = [pytest.mark.node, pytest.mark.timeout(24 * TIMEOUT)]

__all__ = ["browser", "open_page", "page_origin"]  # fixtures this module uses by name

EXAMPLES = Path(__file__).resolve().parent / "framework_examples"
VENV_BIN = Path(sys.executable).parent


@dataclass
class WebServer:
    """A framework's server (gunicorn, uvicorn) on 127.0.0.1:port, in its own process group."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(self.url + path, data=b"", method="POST", headers=headers)
        with urllib.request.urlopen(request, timeout=4 * TIMEOUT) as response:
            assert response.status == 200, self.logs()
            answer: dict[str, Any] = json.load(response)
            return answer


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def web_server(argv: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[WebServer]:
    """Run ``argv`` until its port accepts connections; SIGTERM its group afterwards."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    server = WebServer(port, proc, log)
    try:
        deadline = time.monotonic() + 6 * TIMEOUT
        while not accepts(port):
            assert proc.poll() is None, f"{argv[0]} exited {proc.returncode}:\n{server.logs()}"
            assert time.monotonic() < deadline, f"{argv[0]} never listened:\n{server.logs()}"
            time.sleep(0.05)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=4 * TIMEOUT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # a worker may outlive its master
            proc.wait(timeout=TIMEOUT)


@contextlib.contextmanager
def scenario(name: str, port: int, env: dict[str, str]) -> Iterator[Scenario]:
    running = Scenario(name, port, env)
    try:
        yield running
    finally:
        running.close()


# -- Flask under gunicorn, publishing through Redis -------------------------------------------


@pytest.fixture
def tidings_redis(make_server: Any, redis_server: RedisServer, redis_prefix: str) -> ServerProcess:
    server: ServerProcess = make_server(redis=redis_server.url, redis_prefix=redis_prefix)
    return server


def test_flask_views_in_two_gunicorn_workers_publish_through_redis_to_pusher_js(
    tidings_redis: ServerProcess, redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    channel = unique("orders-")
    hold = f"{redis_prefix}:hold"
    port = free_port()
    argv = [
        str(VENV_BIN / "gunicorn"),
        "--preload",  # the app (and its client) is made in the master, before the fork
        "--workers",
        "2",
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--chdir",
        str(EXAMPLES),
        "flask_publisher:app",
    ]
    env = {"TIDINGS_URL": redis_server.url, "TIDINGS_TEST_REDIS_PREFIX": redis_prefix}
    with (
        contextlib.closing(redis.Redis.from_url(redis_server.url)) as store,
        web_server(argv, port, env, tmp_path / "gunicorn.log") as flask,
        scenario(
            "framework_listen", tidings_redis.port, {"CHANNEL": channel, "EXPECTED_EVENTS": "2"}
        ) as listener,
    ):
        listener.wait_step("subscribed")
        listener.go()

        # The first request holds its worker after publishing, so the second one must be
        # served by the other worker.
        first: dict[str, Any] = {}
        held = threading.Thread(
            target=lambda: first.update(flask.post(f"/publish/{channel}?hold={hold}"))
        )
        held.start()
        try:
            waited = store.blpop([f"{hold}:held"], timeout=4 * TIMEOUT)
            assert waited is not None, f"the first request never published\n{flask.logs()}"
            holder = int(waited[1])
            second = flask.post(f"/publish/{channel}")
        finally:
            store.lpush(hold, "release")
            held.join(4 * TIMEOUT)
        assert first == {"pid": holder}, flask.logs()
        assert second["pid"] != holder, flask.logs()
        result = listener.result()

    pids = [event["data"]["pid"] for event in result["events"]]
    assert [event["event"] for event in result["events"]] == ["ping", "ping"]
    assert pids == [holder, second["pid"]], f"{result}\n{tidings_redis.logs()}"


# -- FastAPI under uvicorn, Tidings embedded --------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """uvicorn serving framework_examples/fastapi_embedded.py (``rt.asgi(api)``)."""
    port = free_port()
    argv = [
        str(VENV_BIN / "uvicorn"),
        "--app-dir",
        str(EXAMPLES),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws-per-message-deflate",
        "false",
        "fastapi_embedded:app",
    ]
    log = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    with web_server(argv, port, {}, log) as running:
        yield running


def test_fastapi_app_authorizes_and_publishes_to_pusher_js_over_websocket(
    server: WebServer,
) -> None:
    env = {
        "TOKEN": "token-alice",
        "ALLOWED": "private-orders.42",
        "REFUSED": "private-orders.7",
    }
    with scenario("framework_private", server.port, env) as client:
        subscribed = client.wait_step("subscribed")
        assert subscribed["outcome"] == {
            "private-orders.42": "subscribed",
            "private-orders.7": "refused 403",
        }, server.logs()
        assert subscribed["transport"] == "ws"
        client.go()
        assert server.post("/orders/42/ship") == {"id": "42"}
        result = client.result()
    assert result["events"] == [
        {"channel": "private-orders.42", "event": "shipped", "data": {"id": "42"}}
    ], server.logs()
    assert "WebSocket /app/app-key" in server.logs()


def test_fastapi_app_reaches_chromium_without_websocket_over_http(
    open_page: PageFactory, server: WebServer
) -> None:
    page = open_page("no WebSocket, FastAPI", "public-orders", websocket=False)
    page.wait_subscribed(server)
    assert page.text("transport") == "xhr_streaming", page.describe()
    assert page.used("xhr_send") and not any(r.startswith("WS ") for r in page.requests)

    order = uuid.uuid4().hex[:8]
    server.post(f"/orders/{order}/ship")
    wait_events(page, [f'shipped {{"id":"{order}"}}'], server, "chromium-fastapi.png")
    assert page.text("state") == "connected", page.describe()
