"""The publish-only Redis client against a real ``tidings serve --redis`` and a real Redis.

Subscribers are raw Pusher WebSockets on the node; the client never talks to the node, only
to Redis. What it does must be indistinguishable from a REST trigger on a node: the frames,
their order, the cache channel, the limits and the shared backend rate limit, and the
answers of channels/channel/users.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    SocketOpener,
    channel_auth,
    rest_request,
    unique,
)
from redis import asyncio as aioredis

from redis_server import TIMEOUT, RedisServer, free_port
from server_process import ServerProcess
from tidings import Realtime
from tidings.backends import Event, PublishError
from tidings.clients import RedisClient, open_backend

RATE_APP = {"id": "777", "key": "rate-key", "secret": "rate-secret"}
RATE_LIMIT = 4
HISTORY_RULE = {"pattern": "history-*", "size": 100, "ttl": 60}


@pytest.fixture(params=["publish", "spublish", "cluster"])
def bus_mode(request: pytest.FixtureRequest) -> str:
    """Plain and sharded pub/sub on one Redis, and a 3-master Redis Cluster."""
    return str(request.param)


@pytest.fixture
def sharded(bus_mode: str) -> bool:
    return bus_mode != "publish"  # always sharded on a cluster


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, bus_mode: str) -> str:
    if bus_mode == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture
def node(
    make_server: Callable[..., ServerProcess], redis_url: str, redis_prefix: str, sharded: bool
) -> ServerProcess:
    apps = [
        {
            "id": APP_ID,
            "key": APP_KEY,
            "secret": APP_SECRET,
            "subscription_count": True,
            "history": [HISTORY_RULE],
        },
        {**RATE_APP, "max_backend_events_per_second": RATE_LIMIT},
    ]
    return make_server(apps=apps, redis=redis_url, redis_prefix=redis_prefix, redis_sharded=sharded)


@pytest.fixture
async def client(redis_url: str, redis_prefix: str, sharded: bool) -> AsyncIterator[Any]:
    backend = open_backend(
        redis_url,
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        redis_prefix=redis_prefix,
        redis_sharded=sharded,
    )
    await backend.start()
    yield backend
    await backend.close()


def rest(node: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:
    """A signed REST call to the node; its JSON answer (asserting a 200)."""
    resp = rest_request(node.http_url, method, f"/apps/{APP_ID}{path}", **kwargs)
    assert resp.status == 200, resp
    return resp.json()


async def arest(node: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:
    return await asyncio.to_thread(rest, node, method, path, **kwargs)


def event(channel: str, name: str, data: str, **kwargs: Any) -> Event:
    return Event((channel,), name, data, **kwargs)


async def test_trigger_reaches_subscribers_in_order_with_rest_triggers(
    node: ServerProcess, client: RedisClient, open_socket: SocketOpener, bus_mode: str
) -> None:
    channel = unique("orders")
    other = unique("other")
    sock = await open_socket(node.ws_url)
    await sock.subscribe(channel)
    await sock.subscribe(other)
    for i in range(6):
        data = json.dumps({"n": i})
        if i % 2:
            assert await client.trigger(Event((channel, other), "tick", data)) == {}
        else:
            body = {"name": "tick", "channels": [channel, other], "data": data}
            assert await arest(node, "POST", "/events", json_body=body) == {}
    batch = [
        Event((other,), "last", '"b1"', info=("subscription_count",)),
        Event((channel,), "last", '"b2"'),
    ]
    assert await client.trigger_batch(batch) == {"batch": [{"subscription_count": 1}, {}]}
    got = await sock.recv_n(14)
    sent = [
        *(Event((ch,), "tick", json.dumps({"n": i})) for i in range(6) for ch in (channel, other)),
        Event((other,), "last", '"b1"'),
        Event((channel,), "last", '"b2"'),
    ]
    got_order = [(m["channel"], m["event"], m["data"]) for m in got]
    assert_order(bus_mode, got_order, sent, publisher=published_by_the_node)


def published_by_the_node(message: tuple[str, str, str]) -> bool:
    """The even ticks went through the node's REST API, the rest through the client."""
    _, name, data = message
    return name == "tick" and json.loads(data)["n"] % 2 == 0


async def test_history_channels_keep_the_clients_events_in_one_stream_with_the_nodes(
    node: ServerProcess,
    redis_url: str,
    redis_prefix: str,
    sharded: bool,
    open_socket: SocketOpener,
) -> None:
    backend = open_backend(
        redis_url,
        app_id=APP_ID,
        redis_prefix=redis_prefix,
        redis_sharded=sharded,
        history=[HISTORY_RULE],
    )
    await backend.start()
    try:
        channel = unique("history-orders")
        sock = await open_socket(node.ws_url)
        await sock.subscribe(channel)
        for i in range(4):
            if i % 2:
                await backend.trigger(Event((channel,), "tick", str(i), socket_id="9.9"))
            else:
                body = {"name": "tick", "channels": [channel], "data": str(i)}
                assert await arest(node, "POST", "/events", json_body=body) == {}
        assert [m["data"] for m in await sock.recv_n(4)] == ["0", "1", "2", "3"]
        page = await arest(node, "GET", f"/channels/{channel}/history")
        assert (page["offset"], page["complete"]) == (4, True)
        assert [(e["offset"], e["data"]) for e in page["events"]] == [
            (1, "0"),
            (2, "1"),
            (3, "2"),
            (4, "3"),
        ]
    finally:
        await backend.close()


def test_history_rules_of_a_client_are_checked() -> None:
    with pytest.raises(ValueError, match="size"):
        RedisClient("redis://127.0.0.1:1/0", APP_ID, history=[{"pattern": "c", "size": 0}])


async def test_trigger_many_publishes_more_than_a_batch_in_order(
    node: ServerProcess, client: RedisClient, open_socket: SocketOpener, bus_mode: str
) -> None:
    """What the live models send on a commit: no batch limit, order kept across channels
    (one script call without sharding, one command at a time with it); on a Redis Cluster,
    whose channels live on different masters, order is kept per channel."""
    channels = (unique("many"), unique("many"))
    sock = await open_socket(node.ws_url)
    for channel in channels:
        await sock.subscribe(channel)
    events = [event(channels[i % 2], "n", json.dumps(i)) for i in range(12)]
    await client.trigger_many(events)
    got = await sock.recv_n(12)
    assert_order(bus_mode, [(m["channel"], m["event"], m["data"]) for m in got], events)


async def test_concurrent_triggers_share_pipelines_and_keep_the_call_order(
    node: ServerProcess, client: RedisClient, open_socket: SocketOpener, bus_mode: str
) -> None:
    """Calls made together go out in pipelines of their scripts (or one command at a time
    for a cache channel), in the order of the calls (per channel on a Redis Cluster), each
    one answered."""
    channel, cached = unique("together"), unique("cache-together")
    sock = await open_socket(node.ws_url)
    await sock.subscribe(channel)
    await sock.subscribe(cached)
    await sock.expect("pusher:cache_miss", cached)
    events = [event(cached if i % 7 == 3 else channel, "n", json.dumps(i)) for i in range(40)]
    answers = await asyncio.gather(*(client.trigger(e) for e in events))
    assert answers == [{}] * len(events)
    got = await sock.recv_n(len(events))
    assert_order(bus_mode, [(m["channel"], m["event"], m["data"]) for m in got], events)


def assert_order(
    bus_mode: str,
    got: list[tuple[str, str, str]],
    events: list[Event],
    publisher: Callable[[tuple[str, str, str]], object] = lambda message: None,
) -> None:
    """``got`` in the order of ``events``: all of it on one Redis; on a Redis Cluster, each
    channel's and each publisher's. A node reads each master on its own connection, so two
    channels in different slots have no order between them; and a node writes what its own
    REST API publishes to its sockets at once, while a client's earlier publication of the
    same channel can still be on its way from that channel's master."""
    sent = [(e.channels[0], e.name, e.data) for e in events]
    if bus_mode != "cluster":
        assert got == sent
        return
    assert sorted(got) == sorted(sent)
    for key in {(m[0], publisher(m)) for m in sent}:
        mine = [m for m in got if (m[0], publisher(m)) == key]
        assert mine == [m for m in sent if (m[0], publisher(m)) == key]


async def test_socket_id_excludes_the_sender(
    node: ServerProcess, client: RedisClient, open_socket: SocketOpener
) -> None:
    channel = unique("chat")
    sender = await open_socket(node.ws_url)
    reader = await open_socket(node.ws_url)
    for sock in (sender, reader):
        await sock.subscribe(channel)
    await client.trigger(event(channel, "said", '"hi"', socket_id=sender.socket_id))
    await client.trigger(event(channel, "said", '"all"'))
    assert [m["data"] for m in await reader.recv_n(2)] == ['"hi"', '"all"']
    # The sender's first event is the second trigger: the first skipped it.
    assert (await sender.recv())["data"] == '"all"'


async def test_limits_are_the_rest_apis(client: RedisClient) -> None:
    with pytest.raises(PublishError) as too_large:
        await client.trigger(event("big", "e", "x" * 10241))
    assert too_large.value.status == 413
    for bad in (
        event("bad channel!", "e", "{}"),
        event("ok", "", "{}"),
        event("ok", "e", "{}", socket_id="nope"),
        Event(tuple(f"c{i}" for i in range(101)), "e", "{}"),
    ):
        with pytest.raises(PublishError) as invalid:
            await client.trigger(bad)
        assert invalid.value.status == 400, bad
    batch = [event(f"c{i}", "e", "{}") for i in range(11)]
    with pytest.raises(PublishError) as too_many:
        await client.trigger_batch(batch)
    assert too_many.value.status == 400


async def test_backend_rate_limit_is_shared_with_rest_triggers(
    node: ServerProcess, redis_url: str, redis_prefix: str, sharded: bool
) -> None:
    """4 events a second for the app, on the node and in the client: 3 through REST and,
    once the node has added them to Redis (within its reconcile interval), 1 through the
    client pass; the next client event is refused, and so are 2 more REST events (the
    node's own 3 + 2). Counts are per wall-clock second: a run that straddles two seconds
    is done again."""
    client = RedisClient(
        redis_url,
        RATE_APP["id"],
        redis_prefix=redis_prefix,
        redis_sharded=sharded,
        max_backend_events_per_second=RATE_LIMIT,
    )
    channel = unique("rate")
    one = {"name": "e", "channel": channel, "data": "{}"}

    def post(path: str, body: dict[str, Any]) -> int:
        resp = rest_request(
            node.http_url,
            "POST",
            f"/apps/{RATE_APP['id']}{path}",
            json_body=body,
            key=RATE_APP["key"],
            secret=RATE_APP["secret"],
        )
        return resp.status

    async def client_status() -> int:
        try:
            await client.trigger(event(channel, "e", "{}"))
        except PublishError as exc:
            return exc.status
        return 200

    if redis_url.startswith("redis+cluster://"):
        redis: Any = aioredis.RedisCluster.from_url(redis_url.replace("+cluster", "", 1))
    else:
        redis = aioredis.Redis.from_url(redis_url)

    async def reconciled(second: int) -> None:
        """The node's 3 events are in Redis (it adds them every 100 ms, not per request)."""
        key = f"{redis_prefix}:{{{RATE_APP['id']}}}:rate:{second}"
        deadline = time.monotonic() + TIMEOUT
        while int(await redis.get(key) or 0) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    try:
        for _ in range(5):
            # A fresh second: the last attempt's events must not count against this one.
            await asyncio.sleep(1 - time.time() % 1)
            second = int(time.time())
            statuses = [await asyncio.to_thread(post, "/batch_events", {"batch": [one] * 3})]
            await reconciled(second)
            statuses += [
                await client_status(),
                await client_status(),
                await asyncio.to_thread(post, "/batch_events", {"batch": [one] * 2}),
            ]
            if int(time.time()) == second:
                break
        else:
            pytest.fail("no run fitted in one wall-clock second")
    finally:
        await client.close()
        await redis.aclose()
    assert statuses == [200, 200, 429, 429]


async def test_cache_channel_is_written_as_a_node_writes_it(
    node: ServerProcess, client: RedisClient, open_socket: SocketOpener
) -> None:
    channel = unique("cache-scores")
    early = await open_socket(node.ws_url)
    await early.subscribe(channel)
    await early.expect("pusher:cache_miss", channel)
    await client.trigger(event(channel, "score", '"1-0"'))
    await client.trigger(event(channel, "score", '"2-0"'))
    assert [m["data"] for m in await early.recv_n(2)] == ['"1-0"', '"2-0"']

    late = await open_socket(node.ws_url)
    await late.subscribe(channel)
    assert await late.recv() == {"event": "score", "channel": channel, "data": '"2-0"'}

    rest_info = await arest(node, "GET", f"/channels/{channel}", params={"info": "cache"})
    mine = await client.channel(channel, ["cache"])
    assert rest_info["cache"]["data"] == mine["cache"]["data"] == '"2-0"'
    assert rest_info["cache"]["event"] == mine["cache"]["event"] == "score"
    assert mine["occupied"] is rest_info["occupied"] is True
    assert 0 < mine["cache"]["ttl"] <= 1800


async def test_channels_channel_and_users_answer_as_rest_does(
    node: ServerProcess, client: RedisClient, open_socket: SocketOpener
) -> None:
    public = unique("lobby")
    room = unique("presence-room")
    a = await open_socket(node.ws_url)
    b = await open_socket(node.ws_url)
    await a.subscribe(public)
    await b.subscribe(public)
    await a.subscribe_presence(room, "alice", {"name": "A"})
    await b.subscribe_presence(room, "bob")
    await client.send_to_user("nobody", "n", "{}")  # a user channel never shows in channels

    both = ["user_count", "subscription_count"]
    for prefix, info in (("", ["subscription_count"]), ("presence-", both)):
        params = {"info": ",".join(info)}
        if prefix:
            params["filter_by_prefix"] = prefix
        expected = (await arest(node, "GET", "/channels", params=params))["channels"]
        assert await client.channels(prefix, info) == expected
    assert (await client.channels("presence-", both))[room] == {
        "user_count": 2,
        "subscription_count": 2,
    }
    for name, info in ((public, ["subscription_count"]), (room, both), (unique("empty"), [])):
        query = {"params": {"info": ",".join(info)}} if info else {}
        assert await client.channel(name, info) == await arest(
            node, "GET", f"/channels/{name}", **query
        )
    rest_users = await arest(node, "GET", f"/channels/{room}/users")
    assert sorted(await client.users(room)) == sorted(u["id"] for u in rest_users["users"])
    assert sorted(await client.users(room)) == ["alice", "bob"]

    for call in (
        client.channels("", ["user_count"]),
        client.channel(public, ["user_count"]),
        client.channel(public, ["cache"]),
        client.channel(public, ["bogus"]),
        client.users(public),
    ):
        with pytest.raises(PublishError) as refused:
            await call
        assert refused.value.status == 400


async def test_a_burst_of_reads_waits_for_the_pool_instead_of_failing(
    node: ServerProcess, client: RedisClient, open_socket: SocketOpener
) -> None:
    # Four times the client's pool: past its size redis-py refuses ("Too many
    # connections"), which reached the caller as a 503.
    room = unique("presence-burst")
    member = await open_socket(node.ws_url)
    await member.subscribe_presence(room, "alice")
    reads = [client.channel(room, ["user_count", "subscription_count"]) for _ in range(16)]
    reads += [client.trigger(event(room, "e", "{}", info=("user_count",))) for _ in range(16)]
    answers = await asyncio.wait_for(asyncio.gather(*reads), TIMEOUT)
    assert answers[:16] == [{"occupied": True, "user_count": 1, "subscription_count": 1}] * 16
    assert answers[16:] == [{"channels": {room: {"user_count": 1}}}] * 16


async def test_terminate_user_and_send_to_user(
    node: ServerProcess, client: RedisClient, open_socket: SocketOpener
) -> None:
    user = unique("user")
    sock = await open_socket(node.ws_url)
    await sock.signin({"id": user})
    # The node answers signin_success before it has subscribed the user's channel (the
    # session's action order): a pong comes after that subscription. Without it a Redis
    # Cluster, whose first SSUBSCRIBE on a shard opens a connection, can miss the event.
    await sock.ping()
    bystander = await open_socket(node.ws_url)
    channel = unique("private-x")
    await bystander.subscribe(channel, channel_auth(bystander.socket_id, channel))

    await client.send_to_user(user, "notice", '{"n":1}')
    message = await sock.recv()
    assert message["event"] == "notice" and message["data"] == '{"n":1}', message

    await client.terminate_user(user)
    closed = await sock.wait_closed()
    assert closed.code == 4009, closed
    await bystander.ping()  # other users keep their connection


def test_unreachable_redis_is_503_without_the_password(
    redis_prefix: str,
) -> None:
    url = f"redis://:hunter22pw@127.0.0.1:{free_port()}/0"

    async def publish() -> PublishError:
        client = RedisClient(url, APP_ID, redis_prefix=redis_prefix)
        try:
            with pytest.raises(PublishError) as refused:
                await client.trigger(event("orders", "e", "{}"))
            return refused.value
        finally:
            await client.close()

    error = asyncio.run(publish())
    assert error.status == 503
    assert "hunter22pw" not in error.message
    assert "127.0.0.1" in error.message


def test_runs_on_a_loop_in_another_thread(
    node: ServerProcess, redis_url: str, redis_prefix: str, sharded: bool
) -> None:
    """As Realtime drives it: a private loop thread, calls submitted from this thread."""
    loop = asyncio.new_event_loop()
    worker = threading.Thread(target=loop.run_forever, daemon=True)
    worker.start()
    client = RedisClient(redis_url, APP_ID, redis_prefix=redis_prefix, redis_sharded=sharded)
    channel = unique("threads")

    def call(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=10)

    try:
        call(client.start())
        answer = call(client.trigger(Event((channel,), "e", "{}", info=("subscription_count",))))
        assert answer == {"channels": {channel: {"subscription_count": 0}}}
        expected = rest(node, "GET", f"/channels/{channel}", params={"info": "subscription_count"})
        assert call(client.channel(channel, ["subscription_count"])) == expected
        call(client.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        worker.join(timeout=10)
        loop.close()


async def test_one_round_counts_each_call_and_publishes_only_those_under_the_limit(
    tmp_path: Path, redis_prefix: str
) -> None:
    """Calls queued together go out as one script call that counts each in order: those
    under the limit are published, the rest answered 429 and never published. A Redis
    that lost its scripts (SCRIPT FLUSH, a restart) is given them again. Its own Redis:
    the flush must not reach other tests' scripts."""
    server = RedisServer(tmp_path)
    server.start()
    client = RedisClient(
        server.url, "1", redis_prefix=redis_prefix, max_backend_events_per_second=3
    )
    redis = aioredis.Redis.from_url(server.url)
    pubsub = redis.pubsub()
    channel = unique("round")
    await pubsub.subscribe(f"{redis_prefix}#{{1#{channel}}}")

    async def published() -> bytes:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=TIMEOUT)
            if message is not None:
                return bytes(message["data"])
        pytest.fail("nothing published")

    try:
        for _ in range(5):
            await asyncio.sleep(1 - time.time() % 1)  # a fresh second
            second = int(time.time())
            calls = [client.trigger(event(channel, "n", f'"{i}"')) for i in range(5)]
            answers = await asyncio.gather(*calls, return_exceptions=True)
            if int(time.time()) == second:
                break
            while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1):
                pass  # a run that straddled two seconds: forget what it published
        else:
            pytest.fail("no run fitted in one wall-clock second")
        statuses = [a.status if isinstance(a, PublishError) else a for a in answers]
        assert statuses == [{}, {}, {}, 429, 429]
        for i in range(3):
            assert b'"data":"\\"%d\\""' % i in await published()
        await redis.script_flush()
        await asyncio.sleep(1 - time.time() % 1)  # the next second: under the limit again
        assert await client.trigger(event(channel, "after", '"flush"')) == {}
        assert b'"event":"after"' in await published()  # "3" and "4" never went out
    finally:
        await client.close()
        await pubsub.aclose()
        await redis.aclose()
        server.stop()


async def test_realtime_client_keeps_one_callers_order_across_both_paths(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """``Realtime.client`` awaited from this loop: plain triggers are checked here and
    queued on the client's loop without a task, those asking for ``info`` run as a task
    there; together, from one caller, they reach Redis in the order of the calls."""
    rt = Realtime.client(redis_server.url, app_id="1", redis_prefix=redis_prefix)
    redis = aioredis.Redis.from_url(redis_server.url)
    pubsub = redis.pubsub()
    channel = unique("order")
    await pubsub.subscribe(f"{redis_prefix}#{{1#{channel}}}")

    async def published() -> str:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=TIMEOUT)
            if message is not None:  # the message format: origin NUL exclude NUL Pusher JSON
                return str(orjson.loads(bytes(message["data"]).split(b"\x00", 2)[2])["data"])
        pytest.fail("nothing published")

    try:
        await rt.atrigger(channel, "warm", "{}")  # started: the plain path from here on
        assert await published() == "{}"
        calls = [
            rt.atrigger(channel, "n", str(i), info=["subscription_count"] if i % 3 == 1 else ())
            for i in range(12)  # 4 ask for info: each one read, on a pool of 8 connections
        ]
        answers = await asyncio.wait_for(asyncio.gather(*calls), TIMEOUT)
        assert answers == [
            {"channels": {channel: {"subscription_count": 0}}} if i % 3 == 1 else {}
            for i in range(12)
        ]
        with pytest.raises(PublishError) as refused:
            await rt.atrigger(channel, "n", "x" * 10241)
        assert refused.value.status == 413
        assert [await published() for _ in range(12)] == [str(i) for i in range(12)]
    finally:
        await rt.stop()
        await pubsub.aclose()
        await redis.aclose()
