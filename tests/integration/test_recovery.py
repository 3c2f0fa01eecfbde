"""Recovery on a real `tidings serve` (docs/recovery.md), in memory mode and Redis mode.

Raw WebSocket clients (recovery_helpers.Follower) do what the JS plugin does, so each test
sees the exact frames: stock subscriptions are byte-identical to what they always were,
opted-in ones carry offsets, and a resubscribe after a lost connection gets exactly the
missed events, once, in order, or ``recovered: false`` and none of them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from pusher_helpers import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, SocketOpener, unique
from recovery_helpers import (
    SUCCEEDED,
    UNRECOVERED,
    Follower,
    Publisher,
    assert_exactly_once_in_order,
    trigger,
)

pytestmark = pytest.mark.timeout(20 * TIMEOUT)

SIZE = 200  # history kept by hist-* channels
SMALL = 5  # by small-* channels
APPS: list[dict[str, Any]] = [
    {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "client_events": True,
        "history": [
            {"pattern": "hist-*", "size": SIZE, "ttl": 300},
            {"pattern": "private-hist-*", "size": SIZE, "ttl": 300},
            {"pattern": "small-*", "size": SMALL, "ttl": 300},
        ],
    }
]


@pytest.fixture(params=["memory", "redis"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start(
    mode: str, make_server: Callable[..., Any], request: pytest.FixtureRequest
) -> Callable[[], Any]:
    """Start a server of this test's mode (a fresh Redis prefix per test)."""

    def factory() -> Any:
        if mode == "memory":
            return make_server(APPS)
        redis = request.getfixturevalue("redis_server")
        prefix = request.getfixturevalue("redis_prefix")
        return make_server(APPS, redis=redis.url, redis_prefix=prefix)

    return factory


# --- stock clients notice nothing ---------------------------------------------------------


async def test_stock_frames_are_byte_identical(
    start: Callable[[], Any], open_socket: SocketOpener
) -> None:
    """Golden frames: a subscription without the opt-in, on a channel with history or not,
    and an opted-in one on a channel without history, get exactly today's bytes."""
    server = start()
    for channel, tidings in [
        (unique("hist-golden"), None),
        (unique("plain-golden"), None),
        (unique("plain-golden"), {"v": 1}),
    ]:
        sock = await open_socket(server.ws_url)
        data: dict[str, Any] = {"channel": channel}
        if tidings is not None:
            data["tidings"] = tidings
        await sock.send_event("pusher:subscribe", data)
        succeeded = await sock.ws.recv()
        assert succeeded == (
            '{"event":"pusher_internal:subscription_succeeded","channel":"'
            + channel
            + '","data":"{}"}'
        )
        await asyncio.to_thread(trigger, server.http_url, channel, "news", '{"n":1}')
        frame = await _next_non_count(sock)
        assert frame == '{"event":"news","channel":"' + channel + '","data":"{\\"n\\":1}"}'


async def _next_non_count(sock: Any) -> str:
    while True:
        frame = await asyncio.wait_for(sock.ws.recv(), TIMEOUT)
        if "pusher_internal:subscription_count" not in frame:
            return str(frame)


async def test_opted_in_socket_gets_its_position_and_every_offset(
    start: Callable[[], Any], open_socket: SocketOpener
) -> None:
    server = start()
    channel = unique("hist-pos")
    await asyncio.to_thread(trigger, server.http_url, channel, "before", "0")
    follower = Follower(open_socket, server.ws_url, channel)
    data = await follower.subscribe()
    assert set(data) == {"tidings"} and data["tidings"]["offset"] == 1
    assert isinstance(data["tidings"]["epoch"], str) and data["tidings"]["epoch"]
    stock = await open_socket(server.ws_url)
    await stock.subscribe(channel)
    await asyncio.to_thread(trigger, server.http_url, channel, "news", '{"n":2}')
    frame = await follower.sock.ws.recv()  # type: ignore[union-attr]
    assert frame == (
        '{"event":"news","channel":"' + channel + '","data":"{\\"n\\":2}","tidings":{"offset":2}}'
    )
    # The stock subscriber of the same channel got the frame without the offset.
    assert await _next_non_count(stock) == (
        '{"event":"news","channel":"' + channel + '","data":"{\\"n\\":2}"}'
    )


async def test_malformed_opt_in_is_a_4303_and_no_subscription(
    start: Callable[[], Any], open_socket: SocketOpener
) -> None:
    server = start()
    sock = await open_socket(server.ws_url)
    channel = unique("hist-bad")
    bad = {"v": 1, "recover": {"epoch": "e", "offset": -3}}
    await sock.send_event("pusher:subscribe", {"channel": channel, "tidings": bad})
    error = await sock.expect("pusher:error")
    assert error["data"]["code"] == 4303 and "recover.offset" in error["data"]["message"]
    await sock.subscribe(channel)  # not subscribed before: this one succeeds


# --- recovery ------------------------------------------------------------------------------


async def test_tcp_kill_while_publishing_50_per_second_recovers_every_offset_once(
    start: Callable[[], Any], open_socket: SocketOpener
) -> None:
    server = start()
    channel = unique("hist-kill")
    follower = Follower(open_socket, server.ws_url, channel)
    await follower.subscribe()
    publisher = Publisher(server.http_url, channel, rate=50)
    publisher.start()
    try:
        await follower.read_until_offset(10)
        old_socket = follower.socket_id
        follower.kill_tcp()
        await asyncio.sleep(0.5)  # the time a client takes to notice and reconnect
        data = await follower.subscribe(recover=True)
        assert data["recovered"] is True
        assert follower.socket_id != old_socket
        await follower.read_until_offset(follower.offset + 20)  # type: ignore[operator]
    finally:
        sent = await publisher.stop()
    await follower.read_until_offset(sent)
    assert follower.unrecovered == []
    assert_exactly_once_in_order(follower.offsets, 1, sent)
    assert follower.datas == [str(n) for n in range(1, sent + 1)]


async def test_a_gap_over_the_history_size_is_unrecovered_with_zero_replays(
    start: Callable[[], Any], open_socket: SocketOpener
) -> None:
    server = start()
    channel = unique("small-gap")
    follower = Follower(open_socket, server.ws_url, channel)
    await follower.subscribe()
    await asyncio.to_thread(trigger, server.http_url, channel, "tick", "1")
    await follower.read_until_offset(1)
    await follower.sock.close()  # type: ignore[union-attr]
    for n in range(2, 2 + SMALL + 3):
        await asyncio.to_thread(trigger, server.http_url, channel, "tick", str(n))
    data = await follower.subscribe(recover=True)
    top = SMALL + 4
    assert data["recovered"] is False and data["tidings"]["offset"] == top
    notice = await follower.next()
    assert notice["event"] == UNRECOVERED and notice["channel"] == channel
    assert json.loads(notice["data"]) == {"epoch": follower.epoch, "offset": top}
    await asyncio.to_thread(trigger, server.http_url, channel, "tick", "live")
    live = await follower.next()
    assert live["tidings"] == {"offset": top + 1} and live["data"] == "live"
    assert follower.offsets == [1, top + 1]  # zero replays


async def test_nothing_missed_recovers_with_no_replay(
    start: Callable[[], Any], open_socket: SocketOpener
) -> None:
    server = start()
    channel = unique("hist-none")
    follower = Follower(open_socket, server.ws_url, channel)
    await follower.subscribe()
    await asyncio.to_thread(trigger, server.http_url, channel, "tick", "1")
    await follower.read_until_offset(1)
    await follower.sock.close()  # type: ignore[union-attr]
    data = await follower.subscribe(recover=True)
    assert data["recovered"] is True and data["tidings"]["offset"] == 1
    await follower.sock.assert_silent()  # type: ignore[union-attr]


async def test_events_the_old_socket_sent_are_not_replayed(
    start: Callable[[], Any], open_socket: SocketOpener
) -> None:
    server = start()
    channel = unique("private-hist-own")
    follower = Follower(open_socket, server.ws_url, channel)
    await follower.subscribe()
    old = follower.socket_id
    await follower.sock.close()  # type: ignore[union-attr]
    await asyncio.to_thread(trigger, server.http_url, channel, "tick", "mine", old)
    await asyncio.to_thread(trigger, server.http_url, channel, "tick", "theirs")
    data = await follower.subscribe(recover=True)
    assert data["recovered"] is True and data["tidings"]["offset"] == 2
    replayed = await follower.next()
    assert replayed["data"] == "theirs" and replayed["tidings"] == {"offset": 2}
    await follower.sock.assert_silent()  # type: ignore[union-attr]


async def test_a_restart_changes_the_epoch_so_nothing_is_recovered(
    mode: str, start: Callable[[], Any], open_socket: SocketOpener
) -> None:
    """Memory: a new process is a new epoch. Redis: FLUSHALL loses the streams."""
    server = start()
    channel = unique("hist-epoch")
    follower = Follower(open_socket, server.ws_url, channel)
    await follower.subscribe()
    await asyncio.to_thread(trigger, server.http_url, channel, "tick", "1")
    await follower.read_until_offset(1)
    old_epoch = follower.epoch
    await follower.sock.close()  # type: ignore[union-attr]
    if mode == "memory":
        server.stop()
        server.start()
    else:
        from redis import Redis

        with Redis.from_url(server_redis_url(server)) as redis:
            redis.flushall()
    follower.ws_url = server.ws_url
    await asyncio.to_thread(trigger, server.http_url, channel, "tick", "2")
    data = await follower.subscribe(recover=True)
    assert data["recovered"] is False and data["tidings"]["epoch"] != old_epoch
    assert (await follower.next())["event"] == UNRECOVERED


def server_redis_url(server: Any) -> str:
    for line in server.config.read_text().splitlines():
        if line.startswith("redis ="):
            return str(json.loads(line.split("=", 1)[1]))
    raise AssertionError("no redis in the config")


async def test_100_clients_reconnecting_during_1k_per_second_miss_nothing(
    start: Callable[[], Any], open_socket: SocketOpener
) -> None:
    server = start()
    channel = unique("hist-crowd")
    followers = [Follower(open_socket, server.ws_url, channel) for _ in range(100)]
    await asyncio.gather(*(f.subscribe() for f in followers))
    publisher = Publisher(server.http_url, channel, rate=1000, per_request=10, lanes=4)
    publisher.start()
    try:
        await asyncio.gather(*(f.read_for(0.3) for f in followers))
        for f in followers:
            f.kill_tcp()
        before = [f.offset or 0 for f in followers]
        await asyncio.gather(*(f.subscribe(recover=True) for f in followers))
        await asyncio.gather(*(f.read_for(0.5) for f in followers))
    finally:
        sent = await publisher.stop()
    # Publishing went on while they were away: the recoveries had something to replay.
    missed = [
        f.succeeded[1]["tidings"]["offset"] - b for f, b in zip(followers, before, strict=True)
    ]
    assert sum(missed) > 0, missed
    await asyncio.gather(*(f.read_until_offset(sent) for f in followers))
    for f in followers:
        assert all(s["recovered"] is True for s in f.succeeded[1:]), f.succeeded
        assert_exactly_once_in_order(f.offsets, f.offsets[0], sent)
        assert f.offsets[0] == f.succeeded[0]["tidings"]["offset"] + 1


async def test_resubscribing_with_recover_on_a_stock_channel_is_a_stock_subscription(
    start: Callable[[], Any], open_socket: SocketOpener
) -> None:
    server = start()
    sock = await open_socket(server.ws_url)
    channel = unique("plain-recover")
    tidings = {"v": 1, "recover": {"epoch": "e", "offset": 3}}
    await sock.send_event("pusher:subscribe", {"channel": channel, "tidings": tidings})
    message = await sock.expect(SUCCEEDED, channel)
    assert message["data"] == "{}"
