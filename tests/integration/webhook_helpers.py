"""Helpers for the webhook tests: a real HTTP receiver and a server started from a TOML file.

- ``Receiver``: an aiohttp server on 127.0.0.1 run in its own thread (so both async tests and
  the synchronous pusher-js tests can use it). It records every request's raw body, headers and
  the status it answered, can answer 500 to the first N requests and can sleep before
  answering. ``events(path)`` are the events of the acknowledged (2xx) requests, in order.
- ``write_webhook_config``: a TOML config with ``[[apps.webhooks]]`` tables (tests/conftest.py
  writes only flat ``[[apps]]`` tables).
- ``TidingsProcess``: ``python -m tidings serve`` on a config file (tests/server_process.py),
  killable with SIGKILL and restartable with the same config.
- the ``receiver`` fixture (``from webhook_helpers import receiver_fixture`` in a test module)
  and ``webhook_config``, the
  config file of a test in its ``tmp_path``.

Every wait is bounded by a multiple of ``TIMEOUT`` (scaled by TIDINGS_TEST_TIMEOUT_SCALE).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pusher
import pytest
from aiohttp import web

from server_process import TIMEOUT, ServerProcess, free_port, toml_value

APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"
EXTRA_HEADER = "X-Extra"
EXTRA_VALUE = "tidings-test"

Event = dict[str, Any]


# --- the receiver ------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One request the receiver got."""

    path: str
    body: bytes
    headers: dict[str, str]
    status: int  # what the receiver answered (0: the sender gave up before the answer)
    at: float  # time.monotonic() when it arrived

    def events(self) -> list[Event]:
        events: list[Event] = json.loads(self.body)["events"]
        return events


@dataclass
class Receiver:
    """A webhook receiver on ``127.0.0.1:port`` (a free port unless given)."""

    port: int = field(default_factory=free_port)
    fail_first: int = 0  # answer 500 to this many requests, then 200
    delay: float = 0.0  # seconds to sleep before answering
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._requests = 0

    @property
    def requests(self) -> int:
        """How many requests have arrived so far (answered or not yet)."""
        with self._lock:
            return self._requests

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        arrived = time.monotonic()
        with self._lock:
            self._requests += 1
            status = 500 if self._requests <= self.fail_first else 200
        record = Delivery(request.path, raw, dict(request.headers), 0, arrived)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            with self._lock:
                answered = status if not self.delay or _still_open(request) else 0
                self.deliveries.append(
                    Delivery(record.path, record.body, record.headers, answered, record.at)
                )
        return web.Response(status=status, text="ok" if status == 200 else "try again")

    def start(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                app = web.Application()
                app.router.add_route("POST", "/{tail:.*}", self._handle)
                self._runner = web.AppRunner(app, shutdown_timeout=0.1, handle_signals=False)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, "127.0.0.1", self.port)
                loop.run_until_complete(site.start())
            except BaseException as exc:  # reported to start()
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"receiver-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(TIMEOUT):
            raise RuntimeError("the webhook receiver did not start")
        if errors:
            raise errors[0]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(2 * TIMEOUT)

    # -- what arrived --------------------------------------------------------------------

    def all(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if path is None or d.path == path]

    def acknowledged(self, path: str | None = None) -> list[Delivery]:
        return [d for d in self.all(path) if 200 <= d.status < 300]

    def events(self, path: str | None = None) -> list[Event]:
        """Events of the acknowledged requests, in the order they arrived."""
        return [e for d in self.acknowledged(path) for e in d.events()]

    def wait_until(
        self,
        what: str,
        check: Callable[[list[Event]], bool],
        path: str | None = None,
        timeout: float = TIMEOUT,
    ) -> list[Event]:
        """Poll (blocking) until ``check(events(path))``; the events then."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(path)
            if check(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}: {events}")
            time.sleep(0.02)

    async def await_until(
        self,
        what: str,
        check: Callable[[list[Event]], bool],
        path: str | None = None,
        timeout: float = TIMEOUT,
    ) -> list[Event]:
        """Like ``wait_until`` without blocking the test's event loop."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(path)
            if check(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}: {events}")
            await asyncio.sleep(0.02)


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    """A started ``Receiver`` (answering 200 at once), stopped after the test."""
    r = Receiver()
    r.start()
    yield r
    r.stop()


def _still_open(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


def has(event: Event) -> Callable[[list[Event]], bool]:
    """A ``wait_until`` check: ``event`` (all its fields equal) is among the events."""
    return lambda events: any(matches(e, event) for e in events)


def matches(event: Event, pattern: Event) -> bool:
    return all(event.get(k) == v for k, v in pattern.items())


def assert_signed(
    deliveries: list[Delivery],
    *,
    key: str = APP_KEY,
    secret: str = APP_SECRET,
    app_id: str = APP_ID,
    extra: dict[str, str] | None = None,
) -> None:
    """Every request verifies with the official SDK and carries the configured headers."""
    assert deliveries, "no webhook request arrived"
    client = pusher.Pusher(app_id=app_id, key=key, secret=secret)
    for d in deliveries:
        assert d.headers.get("Content-Type", "").startswith("application/json"), d.headers
        assert d.headers.get("X-Pusher-Key") == key, d.headers
        signature = d.headers.get("X-Pusher-Signature", "")
        parsed = client.validate_webhook(key=key, signature=signature, body=d.body)
        assert parsed is not None, f"validate_webhook refused {d.body!r} ({d.headers})"
        assert isinstance(parsed.get("time_ms"), int), parsed
        assert parsed["events"], parsed
        for name, value in (extra or {}).items():
            assert d.headers.get(name) == value, (name, d.headers)


# --- config and server process -----------------------------------------------------------


def write_webhook_config(path: Path, settings: dict[str, Any], apps: list[dict[str, Any]]) -> Path:
    """Top-level ``settings``, then each app; an app's ``webhooks`` list becomes
    ``[[apps.webhooks]]`` tables."""
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    for app in apps:
        lines += ["", "[[apps]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in app.items() if k != "webhooks"]
        for hook in app.get("webhooks", []):
            lines += ["", "[[apps.webhooks]]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in hook.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def app_config(*webhooks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The test app (12345/app-key/app-secret, client events on) with these webhooks."""
    return {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "client_events": True,
        **fields,
        "webhooks": list(webhooks),
    }


def webhook_config(directory: Path, apps: list[dict[str, Any]], **settings: Any) -> Path:
    """``directory/tidings.toml``: ``webhook_settings(directory, **settings)`` and ``apps``."""
    return write_webhook_config(
        directory / "tidings.toml", webhook_settings(directory, **settings), apps
    )


def webhook_settings(directory: Path, **extra: Any) -> dict[str, Any]:
    """Fast webhook settings for tests, the queue file in ``directory``."""
    return {
        "webhook_queue": str(directory / "webhooks.sqlite3"),
        "webhook_batch_delay": 0.05,
        "webhook_vacated_delay": 0.5,
        **extra,
    }


class TidingsProcess(ServerProcess):
    """tests/server_process.py's ``ServerProcess`` on ``config``, on a free port and in the
    config's directory; logs appended to ``log_path``."""

    def __init__(self, config: Path, log_path: Path) -> None:
        super().__init__(free_port(), config, log_path, cwd=config.parent)
