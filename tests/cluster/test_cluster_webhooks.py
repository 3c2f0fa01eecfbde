"""Webhooks in a cluster: two nodes on one Redis with the same webhook configuration.

occupied/vacated and member_added/removed are cluster-wide transitions and must reach the
receiver once, not once per node. Events of a node killed with SIGKILL inside its batch
window, and the vacancy it still held, are delivered by the other node. "Exactly once" is
checked after a sentinel: the queue of an (app, URL) is one Redis list delivered in order,
so once a sentinel produced on each node afterwards has arrived, any duplicate produced
before it would have arrived too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from pusher_helpers import PusherSocket, SocketOpener, unique
from webhook_helpers import (
    APP_ID,
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

# A batch window far longer than the test takes from its events to the kill: with the
# window kept in memory, everything below would be lost.
WIDE_WINDOW = 5.0


@pytest.fixture(params=[0.05])
def batch_delay(request: pytest.FixtureRequest) -> float:
    delay: float = request.param
    return delay


@pytest.fixture
def nodes(
    tmp_path: Path, receiver: Receiver, redis_backend: str, redis_prefix: str, batch_delay: float
) -> Iterator[list[TidingsProcess]]:
    config = webhook_config(
        tmp_path,
        [app_config({"url": receiver.url()})],
        redis=redis_backend,
        redis_prefix=redis_prefix,
        node_ttl=3,
        webhook_batch_delay=batch_delay,
    )
    started = [TidingsProcess(config, tmp_path / f"node{i}.log") for i in (1, 2)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(node.start) for node in started]:
            future.result()
    yield started
    for node in started:
        node.stop()
    for i, node in enumerate(started, start=1):  # shown only on failure
        print(f"--- node {i} log ---\n{node.logs()[-4000:]}")


def count(events: list[Event], pattern: Event) -> int:
    return sum(all(e.get(k) == v for k, v in pattern.items()) for e in events)


async def sentinels(receiver: Receiver, sockets: list[PusherSocket], leave: bool) -> list[Event]:
    """A fresh channel on each node (occupied, and vacated if ``leave``); waits for them."""
    wanted: list[Event] = []
    for sock in sockets:
        channel = unique("sentinel")
        await sock.subscribe(channel)
        wanted.append({"name": "channel_occupied", "channel": channel})
        if leave:
            await sock.send_event("pusher:unsubscribe", {"channel": channel})
            wanted.append({"name": "channel_vacated", "channel": channel})
    events: list[Event] = []
    for pattern in wanted:
        events = await receiver.await_until(f"sentinel {pattern}", has(pattern))
    return events


async def test_transitions_are_sent_once_per_cluster(
    nodes: list[TidingsProcess], receiver: Receiver, open_socket: SocketOpener
) -> None:
    a = await open_socket(nodes[0].ws_url)
    b = await open_socket(nodes[1].ws_url)
    room = unique("presence-room")
    public = unique("news")

    await a.subscribe_presence(room, "u1")
    await a.subscribe(public)
    await receiver.await_until(
        "member_added u1", has({"name": "member_added", "channel": room, "user_id": "u1"})
    )
    await b.subscribe_presence(room, "u2")
    await b.subscribe(public)
    await a.expect("pusher_internal:member_added", room)
    await receiver.await_until(
        "member_added u2", has({"name": "member_added", "channel": room, "user_id": "u2"})
    )
    events = await sentinels(receiver, [a, b], leave=False)
    assert count(events, {"name": "channel_occupied", "channel": room}) == 1, events
    assert count(events, {"name": "channel_occupied", "channel": public}) == 1, events
    assert count(events, {"name": "member_added", "channel": room, "user_id": "u1"}) == 1
    assert count(events, {"name": "member_added", "channel": room, "user_id": "u2"}) == 1
    assert count(events, {"name": "channel_vacated"}) == 0, events

    for sock in (a, b):
        await sock.send_event("pusher:unsubscribe", {"channel": room})
        await sock.send_event("pusher:unsubscribe", {"channel": public})
        if sock is a:
            await a.ping()
            await b.expect("pusher_internal:member_removed", room)
        else:
            await b.ping()
    for channel in (room, public):
        await receiver.await_until(
            f"vacated {channel}", has({"name": "channel_vacated", "channel": channel})
        )
    events = await sentinels(receiver, [a, b], leave=True)
    assert count(events, {"name": "channel_vacated", "channel": room}) == 1, events
    assert count(events, {"name": "channel_vacated", "channel": public}) == 1, events
    assert count(events, {"name": "channel_occupied", "channel": room}) == 1, events
    assert count(events, {"name": "channel_occupied", "channel": public}) == 1, events
    assert count(events, {"name": "member_removed", "channel": room, "user_id": "u1"}) == 1
    assert count(events, {"name": "member_removed", "channel": room, "user_id": "u2"}) == 1
    assert count(events, {"name": "member_added"}) == 2, events
    assert_signed(receiver.all())


@pytest.mark.parametrize("batch_delay", [WIDE_WINDOW], indirect=True)
class QueueInRedis:
    """The webhook queue of one (app, URL) as stored in Redis (read-only): queued events,
    then held ones (server/webhook_queue.py's key layout)."""

    def __init__(self, url: str, prefix: str, key: str) -> None:
        cluster = url.startswith("redis+cluster://")
        plain = url.replace("redis+cluster://", "redis://", 1)
        self._client: Any = (
            redis.RedisCluster.from_url(plain) if cluster else redis.Redis.from_url(plain)
        )
        self._list = f"{prefix}:{{webhooks}}:list:{key}"
        self._held = f"{prefix}:{{webhooks}}:held"

    def events(self) -> list[Event]:
        queued = [
            json.loads(raw.partition(b"\n")[2]) for raw in self._client.lrange(self._list, 0, -1)
        ]
        held = [json.loads(raw.partition(b"\n")[2]) for raw in self._client.hvals(self._held)]
        return [e for entry in queued for e in entry["events"]] + held

    def close(self) -> None:
        self._client.close()


async def test_events_in_the_window_of_a_killed_node_are_delivered_by_another(
    nodes: list[TidingsProcess],
    receiver: Receiver,
    open_socket: SocketOpener,
    redis_backend: str,
    redis_prefix: str,
) -> None:
    """kill -9 of a node right after its events (well inside its batch window) and while
    it holds a channel_vacated: the survivor sends all of them, each once."""
    doomed, survivor = nodes
    a = await open_socket(doomed.ws_url)
    b = await open_socket(survivor.ws_url)
    stays = unique("stays")
    left = unique("left")
    room = unique("presence-crash")
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
    # Kill as soon as they are in Redis: a write after the events, not after the window.
    store = QueueInRedis(redis_backend, redis_prefix, f"{APP_ID}|{receiver.url()}")
    try:
        deadline = time.monotonic() + TIMEOUT
        while store.events() != before_kill:
            assert time.monotonic() < deadline, store.events()
            await asyncio.sleep(0.02)
    finally:
        store.close()
    doomed.kill()
    assert receiver.events() == [], "the kill was meant to land inside the batch window"

    for pattern in before_kill:
        await receiver.await_until(
            f"{pattern} from the killed node", has(pattern), timeout=6 * TIMEOUT
        )
    # The killed node's sockets are reaped by the survivor: their departures follow.
    await receiver.await_until(
        "the reaped member", has({"name": "member_removed", "channel": room}), timeout=6 * TIMEOUT
    )
    sentinel = {"name": "channel_occupied", "channel": unique("sentinel")}
    await b.subscribe(sentinel["channel"])
    events = await receiver.await_until("the sentinel", has(sentinel), timeout=4 * TIMEOUT)
    for pattern in before_kill:
        assert count(events, pattern) == 1, (pattern, events)
    assert events.index(before_kill[3]) < events.index(before_kill[4]), events
    assert_signed(receiver.all())
