"""Webhooks end to end: a real `tidings serve`, real WebSocket clients, a real HTTP receiver.

Each test writes its own TOML config (with ``[[apps.webhooks]]`` tables), starts the server on
it and drives it with raw Pusher WebSocket clients and signed REST calls; the receiver
(``webhook_helpers.Receiver``) records every request, and every body is checked with the
official ``pusher`` SDK's ``validate_webhook``. Negative checks ("no second X") rely on a
sentinel event produced afterwards: a (app, URL) queue is delivered in order, so once the
sentinel has arrived anything produced before it would have too.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pusher_helpers import (
    APP_ID,
    PusherSocket,
    SocketOpener,
    rest_request,
    unique,
)
from webhook_helpers import (
    EXTRA_HEADER,
    EXTRA_VALUE,
    TIMEOUT,
    Event,
    Receiver,
    TidingsProcess,
    app_config,
    assert_signed,
    has,
    receiver_fixture,  # noqa: F401  (fixture "receiver")
    webhook_config,
)

VACATED_DELAY = 0.5
StartServer = Callable[..., TidingsProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Factory: ``start_server(apps, **settings)`` → a ready TidingsProcess (stopped after)."""
    started: list[TidingsProcess] = []

    def start(apps: list[dict[str, Any]], **settings: Any) -> TidingsProcess:
        config = webhook_config(tmp_path, apps, **settings)
        server = TidingsProcess(config, tmp_path / "server.log")
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
        # Shown by pytest only when the test failed.
        print(f"--- server log (port {server.port}) ---\n{server.logs()[-6000:]}")


def on(channel: str, events: list[Event]) -> list[Event]:
    return [e for e in events if e.get("channel") == channel]


def names(events: list[Event]) -> list[str]:
    return [e["name"] for e in events]


async def sentinel(receiver: Receiver, sock: PusherSocket, path: str | None = None) -> list[Event]:
    """Occupy a fresh public channel and wait for its channel_occupied; the events then."""
    channel = unique("sentinel")
    await sock.subscribe(channel)
    return await receiver.await_until(
        f"sentinel {channel}", has({"name": "channel_occupied", "channel": channel}), path
    )


async def test_every_event_type_signed_and_filtered(
    start_server: StartServer, receiver: Receiver, open_socket: SocketOpener
) -> None:
    extra = {EXTRA_HEADER: EXTRA_VALUE}
    server = start_server(
        [
            app_config(
                {"url": receiver.url("/all"), "headers": extra},
                {
                    "url": receiver.url("/members"),
                    "event_types": ["member_added"],
                    "filter": {"channel_name_starts_with": "presence-"},
                    "headers": extra,
                },
                subscription_count=True,
            )
        ]
    )
    a = await open_socket(server.ws_url)
    b = await open_socket(server.ws_url)

    async def wait(what: str, event: Event) -> list[Event]:
        return await receiver.await_until(what, has(event), "/all")

    # Public channel: occupied, subscription counts (never 0), vacated after the delay.
    pub = unique("pub")
    await a.subscribe(pub)
    await wait("count 1", {"name": "subscription_count", "channel": pub, "subscription_count": 1})
    await b.subscribe(pub)
    await wait("count 2", {"name": "subscription_count", "channel": pub, "subscription_count": 2})
    await b.send_event("pusher:unsubscribe", {"channel": pub})
    await receiver.await_until(
        "count back to 1",
        lambda ev: names(on(pub, ev)).count("subscription_count") == 3,
        "/all",
    )
    await a.send_event("pusher:unsubscribe", {"channel": pub})
    await a.ping()
    left = time.monotonic()
    await wait("public vacated", {"name": "channel_vacated", "channel": pub})
    vacated_at = next(
        d.at
        for d in receiver.acknowledged("/all")
        if {"name": "channel_vacated", "channel": pub} in d.events()
    )
    assert vacated_at - left >= VACATED_DELAY - 0.05, "channel_vacated was not held back"

    # Presence channel: members, a client event with user_id, removals, vacated.
    room = unique("presence-room")
    await a.subscribe_presence(room, "u1", {"name": "One"})
    await b.subscribe_presence(room, "u2")
    await a.expect("pusher_internal:member_added", room)
    await wait("member_added u2", {"name": "member_added", "channel": room, "user_id": "u2"})
    await a.send_event("client-typing", {"t": 1}, room)
    await b.expect("client-typing", room)
    await wait("presence client_event", {"name": "client_event", "channel": room})
    await b.send_event("pusher:unsubscribe", {"channel": room})
    await a.expect("pusher_internal:member_removed", room)
    await wait("member_removed u2", {"name": "member_removed", "channel": room, "user_id": "u2"})
    await a.send_event("pusher:unsubscribe", {"channel": room})
    await wait("presence vacated", {"name": "channel_vacated", "channel": room})

    # Private channel: a client event without user_id.
    priv = unique("private-chat")
    await a.subscribe_private(priv)
    await wait(
        "private count 1", {"name": "subscription_count", "channel": priv, "subscription_count": 1}
    )
    await b.subscribe_private(priv)
    await wait(
        "private count 2", {"name": "subscription_count", "channel": priv, "subscription_count": 2}
    )
    await a.send_event("client-ping", "just a string", priv)
    await b.expect("client-ping", priv)
    await wait("private client_event", {"name": "client_event", "channel": priv})

    # Cache channel: two subscribers, one cache_miss.
    cache = unique("cache-prices")
    await a.subscribe(cache)
    await a.expect("pusher:cache_miss", cache)
    await wait(
        "cache count 1", {"name": "subscription_count", "channel": cache, "subscription_count": 1}
    )
    await b.subscribe(cache)
    await b.expect("pusher:cache_miss", cache)
    # A second cache_miss would be emitted on b's subscribe, before the count 2 is flushed.
    everything = await wait(
        "cache count 2", {"name": "subscription_count", "channel": cache, "subscription_count": 2}
    )

    assert on(pub, everything) == [
        {"name": "channel_occupied", "channel": pub},
        {"name": "subscription_count", "channel": pub, "subscription_count": 1},
        {"name": "subscription_count", "channel": pub, "subscription_count": 2},
        {"name": "subscription_count", "channel": pub, "subscription_count": 1},
        {"name": "channel_vacated", "channel": pub},
    ]
    assert on(room, everything) == [
        {"name": "channel_occupied", "channel": room},
        {"name": "member_added", "channel": room, "user_id": "u1"},
        {"name": "member_added", "channel": room, "user_id": "u2"},
        {
            "name": "client_event",
            "channel": room,
            "event": "client-typing",
            "data": json.dumps({"t": 1}, separators=(",", ":")),
            "socket_id": a.socket_id,
            "user_id": "u1",
        },
        {"name": "member_removed", "channel": room, "user_id": "u2"},
        {"name": "member_removed", "channel": room, "user_id": "u1"},
        {"name": "channel_vacated", "channel": room},
    ]
    assert on(priv, everything) == [
        {"name": "channel_occupied", "channel": priv},
        {"name": "subscription_count", "channel": priv, "subscription_count": 1},
        {"name": "subscription_count", "channel": priv, "subscription_count": 2},
        {
            "name": "client_event",
            "channel": priv,
            "event": "client-ping",
            "data": "just a string",
            "socket_id": a.socket_id,
        },
    ]
    assert on(cache, everything) == [
        {"name": "channel_occupied", "channel": cache},
        {"name": "cache_miss", "channel": cache},
        {"name": "subscription_count", "channel": cache, "subscription_count": 1},
        {"name": "subscription_count", "channel": cache, "subscription_count": 2},
    ]

    # The filtered URL got the member_added of presence- channels and nothing else.
    members = receiver.events("/members")
    assert members == [
        {"name": "member_added", "channel": room, "user_id": "u1"},
        {"name": "member_added", "channel": room, "user_id": "u2"},
    ]
    assert_signed(receiver.all(), extra=extra)
    assert all(d.status == 200 for d in receiver.all()), "the receiver only answers 200"


async def test_no_subscription_count_webhooks_unless_the_app_enables_them(
    start_server: StartServer, receiver: Receiver, open_socket: SocketOpener
) -> None:
    server = start_server([app_config({"url": receiver.url()}, subscription_count=False)])
    a = await open_socket(server.ws_url)
    b = await open_socket(server.ws_url)
    channel = unique("news")
    await a.subscribe(channel)
    await b.subscribe(channel)
    await b.send_event("pusher:unsubscribe", {"channel": channel})
    await b.ping()
    await asyncio.sleep(0.2)  # longer than the count coalescing and the batch delay
    events = await sentinel(receiver, a)
    assert [e for e in events if e["channel"] == channel] == [
        {"name": "channel_occupied", "channel": channel}
    ]
    assert "subscription_count" not in names(events)
    assert_signed(receiver.all())


async def test_quick_resubscribe_sends_neither_vacated_nor_a_second_occupied(
    start_server: StartServer, receiver: Receiver, open_socket: SocketOpener
) -> None:
    server = start_server([app_config({"url": receiver.url()})])
    a = await open_socket(server.ws_url)
    channel = unique("reload")
    room = unique("presence-reload")
    await a.subscribe(channel)
    await a.subscribe_presence(room, "u1")
    await receiver.await_until(
        "member_added", has({"name": "member_added", "channel": room, "user_id": "u1"})
    )
    # Leave and come back well within webhook_vacated_delay (0.5 s).
    await a.send_event("pusher:unsubscribe", {"channel": channel})
    await a.send_event("pusher:unsubscribe", {"channel": room})
    await a.subscribe(channel)
    await a.subscribe_presence(room, "u1")
    await asyncio.sleep(VACATED_DELAY + 0.3)  # past the delay: a held event would be released
    # A sentinel channel vacated after that: every earlier held event is released before it.
    other = unique("sentinel")
    await a.subscribe(other)
    await a.send_event("pusher:unsubscribe", {"channel": other})
    events = await receiver.await_until(
        "sentinel vacated", has({"name": "channel_vacated", "channel": other})
    )
    assert events == [
        {"name": "channel_occupied", "channel": channel},
        {"name": "channel_occupied", "channel": room},
        {"name": "member_added", "channel": room, "user_id": "u1"},
        {"name": "channel_occupied", "channel": other},
        {"name": "channel_vacated", "channel": other},
    ]
    assert_signed(receiver.all())


async def produce(a: PusherSocket, b: PusherSocket, rounds: int) -> list[Event]:
    """Several batches (each step > webhook_batch_delay apart): occupied and client events."""
    priv = unique("private-seq")
    await a.subscribe_private(priv)
    await b.subscribe_private(priv)
    expected: list[Event] = [{"name": "channel_occupied", "channel": priv}]
    for i in range(rounds):
        channel = unique(f"seq{i}")
        await a.subscribe(channel)
        expected.append({"name": "channel_occupied", "channel": channel})
        await a.send_event("client-n", {"n": i}, priv)
        await b.expect("client-n", priv)
        expected.append(
            {
                "name": "client_event",
                "channel": priv,
                "event": "client-n",
                "data": json.dumps({"n": i}, separators=(",", ":")),
                "socket_id": a.socket_id,
            }
        )
        await asyncio.sleep(0.12)
    return expected


async def test_receiver_failing_three_times_gets_every_event_once_in_order(
    start_server: StartServer, open_socket: SocketOpener
) -> None:
    receiver = Receiver(fail_first=3)
    receiver.start()
    try:
        server = start_server([app_config({"url": receiver.url()})])
        a = await open_socket(server.ws_url)
        b = await open_socket(server.ws_url)
        expected = await produce(a, b, 4)
        # Backoff about 1 s, 2 s, 4 s (each between half and all of it) before the 4th try.
        await receiver.await_until(
            "every event", lambda ev: len(ev) >= len(expected), timeout=4 * TIMEOUT
        )
        events = await sentinel(receiver, a)
        assert events[:-1] == expected
        assert len(events) == len(expected) + 1

        failed = [d for d in receiver.all() if d.status == 500]
        assert len(failed) == 3
        # The first batch was retried (the same events) until it was acknowledged.
        first_ok = receiver.acknowledged()[0]
        for d in failed:
            assert d.events() == first_ok.events()
        times = [json.loads(d.body)["time_ms"] for d in [*failed, first_ok]]
        assert times == sorted(times) and len(set(times)) == 4, "time_ms is set per attempt"
        assert_signed(receiver.all())
    finally:
        receiver.stop()


def queued_events(path: Path) -> list[Event]:
    """The events waiting in the SQLite queue (read-only)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT body FROM batches ORDER BY id").fetchall()
    finally:
        db.close()
    return [e for (raw,) in rows for e in json.loads(raw)["events"]]


async def test_queue_survives_kill_9(
    start_server: StartServer, tmp_path: Path, open_socket: SocketOpener
) -> None:
    receiver = Receiver()  # its port is in the config but nothing listens yet
    server = start_server([app_config({"url": receiver.url()})])
    a = await open_socket(server.ws_url)
    b = await open_socket(server.ws_url)
    expected = await produce(a, b, 3)

    queue = tmp_path / "webhooks.sqlite3"
    deadline = time.monotonic() + TIMEOUT
    while queued_events(queue) != expected:
        assert time.monotonic() < deadline, f"queue holds {queued_events(queue)}"
        await asyncio.sleep(0.05)

    server.kill()
    restarted = start_server([app_config({"url": receiver.url()})])
    receiver.start()
    try:
        await receiver.await_until(
            "queued events after the restart",
            lambda ev: len(ev) >= len(expected),
            timeout=3 * TIMEOUT,
        )
        c = await open_socket(restarted.ws_url)
        events = await sentinel(receiver, c)
        assert events[:-1] == expected
        assert len(events) == len(expected) + 1
        assert_signed(receiver.all())
        deadline = time.monotonic() + TIMEOUT
        while queued_events(queue):
            assert time.monotonic() < deadline, f"queue still holds {queued_events(queue)}"
            await asyncio.sleep(0.05)
    finally:
        receiver.stop()


def held_events(path: Path) -> list[Event]:
    """The held events (channel_vacated, member_removed) in the SQLite queue (read-only)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT event FROM held ORDER BY due").fetchall()
    finally:
        db.close()
    return [json.loads(raw) for (raw,) in rows]


async def test_events_in_the_batch_window_survive_kill_9(
    start_server: StartServer, receiver: Receiver, open_socket: SocketOpener, tmp_path: Path
) -> None:
    """SIGKILL well inside a 30 s batch window, while a channel_vacated is held: once the
    events are in the queue file (a commit after them, not after the window), the restarted
    server sends every one of them, once."""
    apps = [app_config({"url": receiver.url()})]
    server = start_server(apps, webhook_batch_delay=30.0)
    a = await open_socket(server.ws_url)
    stays, left, room = unique("stays"), unique("left"), unique("presence-crash")
    await a.subscribe(stays)
    await a.subscribe_presence(room, "u1")
    await a.subscribe(left)
    await a.send_event("pusher:unsubscribe", {"channel": left})  # vacated: held 0.5 s
    before_kill: list[Event] = [
        {"name": "channel_occupied", "channel": stays},
        {"name": "channel_occupied", "channel": room},
        {"name": "member_added", "channel": room, "user_id": "u1"},
        {"name": "channel_occupied", "channel": left},
        {"name": "channel_vacated", "channel": left},
    ]
    queue = tmp_path / "webhooks.sqlite3"
    deadline = time.monotonic() + TIMEOUT
    while queued_events(queue) + held_events(queue) != before_kill:
        assert time.monotonic() < deadline, (queued_events(queue), held_events(queue))
        await asyncio.sleep(0.02)
    server.kill()
    assert receiver.events() == [], "the kill was meant to land inside the batch window"

    restarted = start_server(apps, webhook_batch_delay=0.05)
    for pattern in before_kill:
        await receiver.await_until(
            f"{pattern} after the restart", has(pattern), timeout=4 * TIMEOUT
        )
    events = await sentinel(receiver, await open_socket(restarted.ws_url))
    assert events[:-1] == before_kill
    assert_signed(receiver.all())


async def test_slow_receiver_does_not_slow_fan_out(
    start_server: StartServer, open_socket: SocketOpener
) -> None:
    receiver = Receiver(delay=3.0)
    receiver.start()
    try:
        server = start_server([app_config({"url": receiver.url()})], webhook_timeout=1.0)
        a = await open_socket(server.ws_url)
        b = await open_socket(server.ws_url)
        channel = unique("private-fast")
        await a.subscribe_private(channel)
        await b.subscribe_private(channel)
        for i in range(6):
            await a.send_event("client-busy", {"i": i}, channel)  # more webhooks
            await b.expect("client-busy", channel)
            started = time.monotonic()
            resp = await asyncio.to_thread(
                rest_request,
                server.http_url,
                "POST",
                f"/apps/{APP_ID}/events",
                json_body={"name": "tick", "channel": channel, "data": json.dumps({"i": i})},
            )
            assert resp.status == 200, resp
            message = await a.expect("tick", channel)
            elapsed = time.monotonic() - started
            assert json.loads(message["data"]) == {"i": i}
            await b.expect("tick", channel)
            assert elapsed < TIMEOUT / 10, f"fan-out took {elapsed:.3f} s behind a slow receiver"
            await asyncio.sleep(0.2)
        assert receiver.requests >= 1, "the slow receiver was never called"
    finally:
        receiver.stop()
