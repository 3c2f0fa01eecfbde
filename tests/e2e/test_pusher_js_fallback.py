"""End-to-end: the real pusher-js 8.6.0 client on its HTTP fallbacks against a Tidings server.

Every test runs once with ``enabledTransports: ['xhr_streaming']`` and once with
``['xhr_polling']`` (env ``TRANSPORT``), through ``node js/fallback_<name>.js``. The scripts
speak the protocol of test_pusher_js.py: ``{"step": ...}`` lines answered by ``go`` on stdin
(REST calls with the official ``pusher`` SDK happen in between), then ``{"result": {...}}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import pusher
import pytest

pytestmark = [
    pytest.mark.node,
    pytest.mark.parametrize("transport", ["xhr_streaming", "xhr_polling"]),
]

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"

E2E_DIR = Path(__file__).resolve().parent
SOCKET_ID = re.compile(r"^\d+\.\d+$")
ServerFactory = Callable[..., Any]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def node_binary() -> str:
    """The `node` executable; its absence is a broken environment, so fail rather than skip."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the pusher-js end-to-end tests need Node.js 18+")
    if not (E2E_DIR / "node_modules" / "pusher-js" / "package.json").is_file():
        pytest.fail(f"pusher-js is not installed: run `npm ci` in {E2E_DIR}")
    return node


class Scenario:
    """One running `node js/<name>.js` and the step/result protocol spoken over its pipes."""

    def __init__(self, name: str, port: int, env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [node_binary(), f"js/{name}.js"],
            cwd=E2E_DIR,
            env={
                **os.environ,
                "TIDINGS_HOST": "127.0.0.1",
                "TIDINGS_PORT": str(port),
                "APP_KEY": APP_KEY,
                "APP_SECRET": APP_SECRET,
                "TIDINGS_WAIT_MS": str(int(TIMEOUT * 1000)),
                "TIDINGS_QUIET_MS": str(int(TIMEOUT * 100)),
                **env,
            },
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
        message = self._next()
        if message.get("step") != step:
            self._fail(f"expected step {step!r}, got {message!r}")
        return message

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
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


@pytest.fixture
def scenario() -> Iterator[ScenarioFactory]:
    """Factory: scenario(name, port, **env) starts `node js/fallback_<name>.js`."""
    started: list[Scenario] = []

    def start(name: str, port: int, **env: str) -> Scenario:
        run = Scenario(f"fallback_{name}", port, env)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


def sdk(port: int) -> pusher.Pusher:
    """The official Python server SDK."""
    return pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host="127.0.0.1",
        port=port,
        ssl=False,
        timeout=TIMEOUT,
    )


def test_connect(scenario: ScenarioFactory, server: Any, transport: str) -> None:
    result = scenario("connect", server.port, TRANSPORT=transport).result()

    assert result["initial_state"] == "connecting"
    assert result["states"] == [["connecting", "connected"]]
    assert result["state"] == "connected"
    assert SOCKET_ID.match(result["socket_id"]), result["socket_id"]
    assert result["socket_ids"] == [result["socket_id"]]
    assert result["transports"] == [transport]
    assert result["activity_timeout_ms"] == 120_000
    assert result["errors"] == []
    assert result["closes"] == []


def test_public_and_private_events_in_order(
    scenario: ScenarioFactory, server: Any, transport: str
) -> None:
    public = unique("public-")
    private = unique("private-")
    rest = sdk(server.port)
    run = scenario(
        "channels",
        server.port,
        TRANSPORT=transport,
        PUBLIC_CHANNEL=public,
        PRIVATE_CHANNEL=private,
        EVENTS="20",
    )
    run.wait_step("subscribed")
    for i in range(20):
        rest.trigger(public, f"event-{i}", {"n": i, "text": "héllo ✓", "list": [i, None]})
    rest.trigger(private, "secret", "a plain string")
    run.go()
    result = run.result()

    assert result["events"] == [
        {
            "channel": public,
            "event": f"event-{i}",
            "data": {"n": i, "text": "héllo ✓", "list": [i, None]},
        }
        for i in range(20)
    ] + [{"channel": private, "event": "secret", "data": "a plain string"}]
    assert result["transports"] == [transport]
    assert len(result["socket_ids"]) == 1
    assert result["closes"] == []


def test_presence_member_added_and_removed(
    scenario: ScenarioFactory, make_server: ServerFactory, transport: str
) -> None:
    # pusher-js sends nothing when an HTTP transport disconnects: the server learns it when
    # the session expires, so a short http_session_timeout keeps the test fast.
    srv = make_server(http_session_timeout=1)
    alice = unique("alice-")
    bob = unique("bob-")
    result = scenario(
        "presence", srv.port, TRANSPORT=transport, CHANNEL=unique("presence-"), ALICE=alice, BOB=bob
    ).result()
    a = {"id": alice, "info": {"name": "Alice"}}
    b = {"id": bob, "info": {"name": "Bob"}}

    assert result["transports"] == [[transport], [transport]]
    assert result["a_alone"] == {"count": 1, "me": a, "members": [a]}
    assert result["b_join"] == {"count": 2, "me": b, "members": sorted_members(a, b)}
    assert result["a_after_join"] == {"count": 2, "added": [b], "members": sorted_members(a, b)}
    assert result["a_after_unsubscribe"] == {"count": 1, "removed": [b], "members": [a]}
    assert result["a_after_disconnect"] == {"count": 1, "removed": [b, b], "members": [a]}
    assert result["member_added_frames"] == [{"user_id": bob, "user_info": {"name": "Bob"}}] * 2
    assert result["member_removed_frames"] == [{"user_id": bob}] * 2
    # Session expiry: at least http_session_timeout after the client left, and not much more.
    assert 1000 <= result["removed_after_disconnect_ms"] < 1000 + TIMEOUT * 1000


def sorted_members(*members: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(members, key=lambda m: str(m["id"]))


def test_client_events_between_http_and_websocket(
    scenario: ScenarioFactory, server: Any, transport: str
) -> None:
    result = scenario(
        "client_events", server.port, TRANSPORT=transport, PRIVATE_CHANNEL=unique("private-")
    ).result()

    assert result["transports"] == [[transport], ["ws"]]
    assert result["sent"] == [True, True]
    assert result["on_w"] == [
        {"event": "client-h", "data": {"from": "http", "text": "héllo ✓"}},
        {"event": "client-sentinel", "data": {"last": True}},
    ]
    # Pusher: client events are not echoed to the sender.
    assert result["on_h"] == [{"event": "client-w", "data": {"from": "ws", "n": [1, 2, 3]}}]
    assert [f["event"] for f in result["frames_h"]] == ["client-w"]
    assert [f["event"] for f in result["frames_w"]] == ["client-h", "client-sentinel"]
    assert result["errors"] == [[], []]


def test_reconnects_to_a_new_server_after_sigterm(
    scenario: ScenarioFactory, make_server: ServerFactory, transport: str
) -> None:
    # Both servers share the port (SO_REUSEPORT), as in a rolling restart: the second is up
    # before the first gets SIGTERM, closes every session with 4200 (pusher-js: reconnect
    # at once) and exits. pusher-js must reconnect, to the second, by itself.
    first = make_server(reuse_port=True)
    channel = unique("public-")
    run = scenario("reconnect", first.port, TRANSPORT=transport, CHANNEL=channel)
    before = run.wait_step("subscribed")
    second = dataclasses.replace(first, proc=None, log_path=first.log_path.with_name("second.log"))
    try:
        second.start()
        assert first.stop() == 0
        run.go()
        after = run.wait_step("resubscribed")
        sdk(second.port).trigger(channel, "after", {"server": "second"})
        run.go()
        result = run.result()
    finally:
        second.stop()

    assert after["socket_id"] != before["socket_id"]
    assert SOCKET_ID.match(after["socket_id"])
    assert result["socket_ids"][0] == before["socket_id"]
    assert result["socket_ids"][-1] == after["socket_id"]
    assert set(result["transports"]) == {transport}
    assert result["closes"][0]["code"] == 4200, result["closes"]
    assert result["events"] == [{"server": "second"}]
    assert result["state"] == "connected"
