"""End-to-end: the real pusher-js 8.6.0 client on its HTTP fallbacks against a Tidings server.

Every test runs once with ``enabledTransports: ['xhr_streaming']`` and once with
``['xhr_polling']`` (env ``TRANSPORT``), through ``node js/fallback_<name>.js``. The scripts
speak the protocol of test_pusher_js.py: ``{"step": ...}`` lines answered by ``go`` on stdin
(REST calls with the official ``pusher`` SDK happen in between), then ``{"result": {...}}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from scenario import SOCKET_ID, TIMEOUT, Scenario, ScenarioFactory, rest_client, unique

pytestmark = [
    pytest.mark.node,
    pytest.mark.parametrize("transport", ["xhr_streaming", "xhr_polling"]),
]

ServerFactory = Callable[..., Any]


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


def subscribed_to_channels(
    scenario: ScenarioFactory, server: Any, transport: str, events: int
) -> tuple[Any, Any, str, str]:
    """The "channels" scenario, subscribed to a new public and a new private channel and
    waiting for ``events`` public events: (run, REST client, public, private)."""
    public = unique("public-")
    private = unique("private-")
    run = scenario(
        "channels",
        server.port,
        TRANSPORT=transport,
        PUBLIC_CHANNEL=public,
        PRIVATE_CHANNEL=private,
        EVENTS=str(events),
    )
    run.wait_step("subscribed")
    return run, rest_client(server.port), public, private


def test_public_and_private_events_in_order(
    scenario: ScenarioFactory, server: Any, transport: str
) -> None:
    run, rest, public, private = subscribed_to_channels(scenario, server, transport, 20)
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


async def open_unconfirmed(http_url: str, count: int) -> None:
    """``count`` sessions opened (first poll: ``o``) and never received from."""
    in_flight = asyncio.Semaphore(32)

    async def open_one(n: int) -> None:
        url = f"{http_url}/pusher/app/app-key/{n % 1000}/flood{n:08d}/xhr?protocol=7"
        async with in_flight, http.post(url) as resp:
            assert resp.status == 200 and (await resp.read()).startswith(b"o\n")

    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(20 * TIMEOUT):
            await asyncio.gather(*(open_one(n) for n in range(count)))


def test_connects_after_a_flood_of_unconfirmed_sessions(
    scenario: ScenarioFactory, make_server: ServerFactory, transport: str
) -> None:
    """Sessions that were only opened take none of the app's quota of 2 connections."""
    app = {"id": "12345", "key": "app-key", "secret": "app-secret", "max_connections": 2}
    srv = make_server(apps=[app])
    asyncio.run(open_unconfirmed(srv.http_url, 1000))
    result = scenario("connect", srv.port, TRANSPORT=transport).result()

    assert result["states"] == [["connecting", "connected"]]
    assert result["transports"] == [transport]
    assert result["errors"] == []
    assert result["closes"] == []


def test_a_stream_past_256_kib_reopens_on_its_session(
    scenario: ScenarioFactory, server: Any, transport: str
) -> None:
    """pusher-js aborts a streaming response past 256 KiB and opens the next one on the
    same session (``buffer_too_long``): the server lets it take over (no 2010 refusal, no
    new socket id) and every event arrives once, in order."""
    run, rest, public, private = subscribed_to_channels(scenario, server, transport, 40)
    pad = "x" * 9000
    for i in range(40):  # 40 x 9 KB: one stream reopened at least once
        rest.trigger(public, "big", {"n": i, "pad": pad})
    rest.trigger(private, "end", "done")
    run.go()
    result = run.result()

    assert [e["data"]["n"] for e in result["events"] if e["event"] == "big"] == list(range(40))
    assert len(result["socket_ids"]) == 1
    assert result["closes"] == []
    assert result["state"] == "connected"


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
    # Both servers share the port (SO_REUSEPORT), as in a rolling restart: the second
    # listens before the first gets SIGTERM, stops accepting, closes every session with 4200
    # (pusher-js: reconnect at once) and exits. pusher-js must reconnect, to the second, by
    # itself and at once. (Were nothing listening, its retry would fail and pusher-js would
    # wait out its 15 s strategy slot, going "unavailable" after 10 s: docs/fallback.md.)
    first = make_server(reuse_port=True)
    channel = unique("public-")
    run = scenario("reconnect", first.port, TRANSPORT=transport, CHANNEL=channel)
    before = run.wait_step("subscribed")
    second = dataclasses.replace(first, proc=None, log_path=first.log_path.with_name("second.log"))
    try:
        second.start_beside()
        assert first.stop() == 0
        run.go()
        after = run.wait_step("resubscribed")
        rest_client(second.port).trigger(channel, "after", {"server": "second"})
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
    # The 4200 retry found the second server: no failed attempt, no "unavailable" on the way.
    assert result["states"] == [
        ["connecting", "connected"],
        ["connected", "connecting"],
        ["connecting", "connected"],
    ]
