"""An embedded ``Realtime`` serving real WebSocket clients from this test's process.

The Realtime starts on the test's loop with the aiohttp listener on a free port, once with
the memory broker and once with Redis. Publishes come from a worker thread (``rt.trigger``)
and from the loop (``await rt.atrigger``); refusals and channel state are compared with what
the REST API of the same server answers for the same call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    TIMEOUT,
    HttpResponse,
    SocketOpener,
    eventually,
    rest_request,
    unique,
)

from redis_server import RedisServer
from tidings import PublishError, Realtime
from tidings.server.app import listen

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

MAX_PAYLOAD = 300


@dataclass
class Served:
    rt: Realtime
    ws_url: str
    http_url: str

    async def rest(self, method: str, path: str, **kwargs: Any) -> HttpResponse:
        """The same server's REST API, signed as the SDKs sign (off the loop: it blocks)."""
        return await asyncio.to_thread(
            rest_request, self.http_url, method, f"/apps/{APP_ID}{path}", **kwargs
        )


Starter = Callable[..., Any]


@pytest.fixture(params=["memory", "redis"])
async def serve(request: pytest.FixtureRequest) -> AsyncIterator[Starter]:
    """Factory: ``await serve(**settings)`` → a started Realtime listening on a free port."""
    started: list[Realtime] = []

    async def start(**settings: Any) -> Served:
        if request.param == "redis":
            settings["broker"] = request.getfixturevalue("redis_server").url
            settings["redis_prefix"] = request.getfixturevalue("redis_prefix")
        rt = Realtime(
            app_id=APP_ID,
            key=APP_KEY,
            secret=APP_SECRET,
            port=0,
            shutdown_ready_delay=0,
            max_event_payload_bytes=MAX_PAYLOAD,
            **settings,
        )
        await rt.start()
        started.append(rt)
        port = (await listen(rt)).port
        return Served(rt, f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}")

    yield start
    for rt in started:
        await rt.stop()


async def test_thread_and_loop_publishes_reach_subscribers(
    serve: Starter, open_socket: SocketOpener
) -> None:
    served = await serve()
    rt = served.rt
    channel, other = unique("orders"), unique("other")
    sender = await open_socket(served.ws_url)
    listener = await open_socket(served.ws_url)
    for client in (sender, listener):
        await client.subscribe(channel)
    await listener.subscribe(other)

    answer = await asyncio.to_thread(rt.trigger, channel, "created", {"id": 42})
    assert answer == {}
    for client in (sender, listener):
        message = await client.expect("created", channel)
        assert json.loads(message["data"]) == {"id": 42}

    await rt.atrigger([channel, other], "text", "plain string")
    assert (await sender.expect("text", channel))["data"] == "plain string"
    received = {(await listener.expect("text"))["channel"] for _ in range(2)}
    assert received == {channel, other}

    # socket_id leaves the sender out, as the REST API does.
    await asyncio.to_thread(rt.trigger, channel, "echo", "x", sender.socket_id)
    await listener.expect("echo", channel)
    await sender.assert_silent()


async def test_trigger_info_and_batch(serve: Starter, open_socket: SocketOpener) -> None:
    served = await serve()
    rt = served.rt
    a, b = unique("a"), unique("b")
    client = await open_socket(served.ws_url)
    await client.subscribe(a)
    answer = await rt.atrigger([a, b], "e", "x", info=["subscription_count"])
    assert answer == {"channels": {a: {"subscription_count": 1}, b: {"subscription_count": 0}}}
    await client.expect("e", a)

    batch = [
        {"channel": a, "name": "one", "data": {"n": 1}},
        {"channel": a, "name": "two", "data": "2", "info": ["subscription_count"]},
    ]
    assert await asyncio.to_thread(rt.trigger_batch, batch) == {
        "batch": [{}, {"subscription_count": 1}]
    }
    assert json.loads((await client.expect("one", a))["data"]) == {"n": 1}
    assert (await client.expect("two", a))["data"] == "2"


async def test_refusals_carry_the_rest_status(serve: Starter) -> None:
    served = await serve()
    rt = served.rt
    cases: list[tuple[dict[str, Any], int]] = [
        ({"channels": ["a"], "name": "e", "data": "x" * (MAX_PAYLOAD + 1)}, 413),
        ({"channels": ["bad name!"], "name": "e", "data": "x"}, 400),
        ({"channels": ["a"], "name": "", "data": "x"}, 400),
        ({"channels": ["a", "private-encrypted-b"], "name": "e", "data": "x"}, 400),
        ({"channels": ["a"], "name": "e", "data": "x", "info": "colour"}, 400),
    ]
    for body, status in cases:
        rest = await served.rest("POST", "/events", json_body=body)
        info = body.get("info", "")
        with pytest.raises(PublishError) as caught:
            await rt.atrigger(body["channels"], body["name"], body["data"], info=info)
        assert (caught.value.status, caught.value.message) == (status, rest.json()["error"])
        assert rest.status == status

    with pytest.raises(PublishError) as caught:
        await asyncio.to_thread(rt.trigger_batch, [{"channel": "a", "name": "e", "data": 1}] * 11)
    assert caught.value.status == 400 and "more than 10 events" in caught.value.message


async def test_backend_rate_limit_is_429(serve: Starter) -> None:
    rt = (await serve(max_backend_events_per_second=1)).rt
    with pytest.raises(PublishError) as caught:
        await rt.atrigger_batch([{"channel": "a", "name": "e", "data": 1}] * 2)
    assert caught.value.status == 429


async def test_cluster_unreachable_is_503(tmp_path: Path) -> None:
    """Redis gone: a publish would reach this node's subscribers only, so it is refused."""
    with RedisServer(tmp_path / "redis") as redis:
        rt = Realtime(
            app_id=APP_ID,
            key=APP_KEY,
            secret=APP_SECRET,
            broker=redis.url,
            port=0,
            shutdown_ready_delay=0,
        )
        await rt.start()
        try:
            assert await rt.atrigger("a", "e", "x") == {}
            redis.stop()

            async def refused() -> bool:
                try:
                    await rt.atrigger("a", "e", "x")
                except PublishError as exc:
                    assert exc.status == 503 and "retry later" in exc.message
                    return True
                return False

            await eventually(refused)
        finally:
            await rt.stop()


async def test_disabled_app_is_403(serve: Starter) -> None:
    rt = (await serve(enabled=False)).rt
    with pytest.raises(PublishError) as caught:
        await asyncio.to_thread(rt.trigger, "a", "e", "x")
    assert (caught.value.status, caught.value.message) == (403, "app disabled")
    with pytest.raises(PublishError) as caught:
        await rt.achannels()
    assert caught.value.status == 403


async def test_channel_state_answers_like_rest(serve: Starter, open_socket: SocketOpener) -> None:
    served = await serve()
    rt = served.rt
    room, public = unique("presence-room"), unique("public")
    alice = await open_socket(served.ws_url)
    bob = await open_socket(served.ws_url)
    await alice.subscribe_presence(room, "alice")
    await bob.subscribe_presence(room, "bob")
    await bob.subscribe(public)

    rest = await served.rest(
        "GET", "/channels", params={"filter_by_prefix": "presence-", "info": "user_count"}
    )
    mine = await asyncio.to_thread(rt.channels, prefix="presence-", info=["user_count"])
    assert mine == rest.json()["channels"]
    assert mine[room] == {"user_count": 2}
    everything = await rt.achannels(info=["subscription_count"])
    assert everything[public] == {"subscription_count": 1}

    for name, info in (
        (room, "user_count,subscription_count"),
        (public, "subscription_count"),
        (unique("empty"), ""),
    ):
        rest = await served.rest("GET", f"/channels/{name}", params={"info": info} if info else {})
        assert await rt.achannel(name, info=info.split(",") if info else ()) == rest.json()
    assert await rt.achannel(room, info=["user_count"]) == {"occupied": True, "user_count": 2}

    rest = await served.rest("GET", f"/channels/{room}/users")
    users = await asyncio.to_thread(rt.users, room)
    assert sorted(users) == ["alice", "bob"]
    assert sorted(users) == sorted(u["id"] for u in rest.json()["users"])

    for call, path in (
        (rt.achannel(public, info=["user_count"]), f"/channels/{public}?info=user_count"),
        (rt.ausers(public), f"/channels/{public}/users"),
        (rt.achannels(info=["user_count"]), "/channels?info=user_count"),
    ):
        target, _, query = path.partition("?")
        params = dict([query.split("=")]) if query else {}
        rest = await served.rest("GET", target, params=params)
        with pytest.raises(PublishError) as caught:
            await call
        assert (caught.value.status, caught.value.message) == (400, rest.json()["error"])


async def test_cache_channel_attribute(serve: Starter) -> None:
    served = await serve()
    channel = unique("cache-prices")
    await served.rt.atrigger(channel, "tick", {"p": 1})
    answer = await served.rt.achannel(channel, info=["cache"])
    assert answer["occupied"] is False
    assert answer["cache"]["event"] == "tick" and json.loads(answer["cache"]["data"]) == {"p": 1}
    rest = await served.rest("GET", f"/channels/{channel}", params={"info": "cache"})
    assert rest.json()["cache"]["data"] == answer["cache"]["data"]


async def test_send_to_user_and_terminate_user(serve: Starter, open_socket: SocketOpener) -> None:
    served = await serve()
    rt = served.rt
    user, bystander_id = unique("u"), unique("v")
    first = await open_socket(served.ws_url)
    second = await open_socket(served.ws_url)
    bystander = await open_socket(served.ws_url)
    for client, user_id in ((first, user), (second, user), (bystander, bystander_id)):
        await client.signin({"id": user_id})

    await asyncio.to_thread(rt.send_to_user, user, "notice", {"text": "hi"})
    for client in (first, second):
        message = await client.expect("notice", f"#server-to-user-{user}")
        assert json.loads(message["data"]) == {"text": "hi"}
    await rt.asend_to_user(user, "again", "plain")
    assert (await first.expect("again"))["data"] == "plain"
    await bystander.assert_silent()

    await asyncio.to_thread(rt.terminate_user, user)
    for client in (first, second):
        closed = await client.wait_closed()
        assert closed.code == 4009
    await rt.aterminate_user(unique("nobody"))  # no such user: nothing to close
    await bystander.ping()
    with pytest.raises(PublishError) as caught:
        await rt.aterminate_user("")
    assert caught.value.status == 400
