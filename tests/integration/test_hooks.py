"""Hooks on a running embedded node with real WebSocket clients, and the same handlers
behind a signed webhook endpoint fed by a real ``tidings serve``."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from embedded_node import embedded_realtime, serving
from framework_apps import fastapi_app, flask_app, serve_asgi, serve_wsgi
from pusher_helpers import TIMEOUT, SocketOpener, unique
from webhook_helpers import Receiver, TidingsProcess, app_config, receiver_fixture, webhook_config

from tidings import Realtime
from tidings.core.apps import App
from tidings.core.webhooks import EVENT_TYPES, signature
from tidings.hooks import ClientEvent, Hooks, HookSink, WebhookRefused, WebhookTee, verify_webhook

__all__ = ["receiver_fixture"]  # the ``receiver`` fixture

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

Event = dict[str, Any]


class Recorder:
    """What handlers saw, awaitable from the test's loop (handlers run on it or in threads)."""

    def __init__(self) -> None:
        self.seen: list[tuple[Event, dict[str, str]]] = []
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def record(self, event: Event, **params: str) -> None:
        self._loop.call_soon_threadsafe(self._add, event, params)

    def _add(self, event: Event, params: dict[str, str]) -> None:
        self.seen.append((event, params))
        self._changed.set()

    @property
    def events(self) -> list[Event]:
        return [event for event, _ in self.seen]

    async def until(self, what: str, check: Callable[[list[Event]], bool]) -> list[Event]:
        async with asyncio.timeout(TIMEOUT):
            while not check(self.events):
                self._changed.clear()
                await self._changed.wait()
        return self.events


def has(name: str, channel: str) -> Callable[[list[Event]], bool]:
    return lambda events: any(e["name"] == name and e["channel"] == channel for e in events)


def canonical(events: list[Event]) -> list[str]:
    return sorted(json.dumps(e, sort_keys=True) for e in events)


def counted_app(**fields: Any) -> App:
    return App("12345", "app-key", "app-secret", subscription_count=True, **fields)


async def test_handlers_get_the_webhook_payloads_in_process(
    tmp_path: Path, receiver: Receiver, open_socket: SocketOpener
) -> None:
    """Every event type, through a tee that feeds both the hooks and an HTTP webhook: the
    handlers see exactly the events the webhook carries."""
    rt = embedded_realtime(
        webhooks=[{"url": receiver.url("/all")}],
        webhook_queue=str(tmp_path / "webhooks.sqlite3"),
        webhook_batch_delay=0.05,
    )
    everything = Recorder()
    rooms = Recorder()
    for name in EVENT_TYPES:
        rt.on(name)(everything.record)
    rt.on("member_added", channel="presence-room.{room}")(rooms.record)

    async with serving(rt) as ws_url:
        a = await open_socket(ws_url)
        b = await open_socket(ws_url)
        room = unique("r")
        presence, counted, cached = f"presence-room.{room}", unique("counted"), unique("cache-x")
        await a.subscribe_presence(presence, "alice", {"name": "Alice"})
        await b.subscribe_presence(presence, "bob")
        await a.expect("pusher_internal:member_added", presence)
        await a.send_event("client-typing", {"text": "hi"}, channel=presence)
        await b.expect("client-typing", presence)
        await a.subscribe(counted)
        await a.subscribe(cached)
        await a.expect("pusher:cache_miss", cached)
        await everything.until("a count", has("subscription_count", counted))
        await b.close()
        await a.close()
        for channel in (presence, counted, cached):
            await everything.until(f"{channel} vacated", has("channel_vacated", channel))
            await receiver.await_until(f"{channel} vacated", has("channel_vacated", channel))
        await receiver.await_until("as many", lambda e: len(e) == len(everything.events))

    assert canonical(everything.events) == canonical(receiver.events())
    assert {e["name"] for e in everything.events} == EVENT_TYPES
    client_event = next(e for e in everything.events if e["name"] == "client_event")
    assert client_event == {
        "name": "client_event",
        "channel": presence,
        "event": "client-typing",
        "data": '{"text":"hi"}',
        "socket_id": a.socket_id,
        "user_id": "alice",
    }
    added = sorted((e["user_id"], p) for e, p in rooms.seen)
    assert added == [("alice", {"room": room}), ("bob", {"room": room})]


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_slow_hook_never_delays_fan_out(open_socket: SocketOpener, kind: str) -> None:
    rt = embedded_realtime()
    rt.hooks.workers = 1
    started = threading.Event()
    release = threading.Event()  # for the sync hook, blocked in its thread
    release_async = asyncio.Event()  # for the async one, blocked on the loop's I/O
    ran = Recorder()

    if kind == "async":

        @rt.on("client_event")
        async def slow(event: Event) -> None:
            started.set()
            await release_async.wait()
            ran.record(event)

    else:

        @rt.on("client_event")
        def slow_sync(event: Event) -> None:
            started.set()
            release.wait(4 * TIMEOUT)
            ran.record(event)

    async with serving(rt) as ws_url:
        a = await open_socket(ws_url)
        b = await open_socket(ws_url)
        channel = unique("private-chat")
        await a.subscribe_private(channel)
        await b.subscribe_private(channel)
        for n in range(3):
            await a.send_event("client-n", {"n": n}, channel=channel)
        got = [json.loads(m["data"])["n"] for m in await b.recv_n(3)]
        assert got == [0, 1, 2]
        assert started.is_set() and not ran.events  # delivered while the hook is stuck
        release.set()
        release_async.set()
        await ran.until("the three hooks", lambda events: len(events) == 3)


async def test_a_raising_hook_is_logged_and_the_others_still_run(
    open_socket: SocketOpener, caplog: pytest.LogCaptureFixture
) -> None:
    rt = embedded_realtime()
    after = Recorder()

    @rt.on("channel_occupied")
    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    rt.on("channel_occupied")(after.record)
    async with serving(rt) as ws_url:
        a = await open_socket(ws_url)
        channel = unique("news")
        await a.subscribe(channel)
        await after.until("the second hook", has("channel_occupied", channel))
    failures = [r for r in caplog.records if r.name == "tidings.hooks" and r.exc_info]
    assert failures and "broken" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)


async def test_before_hooks_rewrite_drop_and_time_out(
    open_socket: SocketOpener, caplog: pytest.LogCaptureFixture
) -> None:
    rt = embedded_realtime()
    rt.hooks.before_timeout = 0.2
    published = Recorder()
    rt.on("client_event")(published.record)
    never = asyncio.Event()

    @rt.before("client-typing", channel="private-chat.{room}")
    def shout(event: ClientEvent, room: str) -> dict[str, Any]:
        return {"text": event.payload["text"].upper(), "room": room}

    @rt.before("client-secret*")
    async def censor(event: ClientEvent) -> None:
        return None

    @rt.before("client-raw")
    async def raw(event: ClientEvent) -> str:
        return '{"loud":true}'

    @rt.before("client-slow")
    async def slow(event: ClientEvent) -> str:
        await never.wait()
        return event.data

    @rt.before("client-boom")
    def boom(event: ClientEvent) -> str:
        raise ValueError("bad filter")

    async with serving(rt) as ws_url:
        a = await open_socket(ws_url)
        b = await open_socket(ws_url)
        channel = "private-chat." + unique("room")
        await a.subscribe_private(channel)
        await b.subscribe_private(channel)
        for event, data in [
            ("client-typing", {"text": "hi"}),
            ("client-secret-plan", {"x": 1}),
            ("client-slow", {}),
            ("client-boom", {}),
            ("client-raw", {"quiet": True}),
            ("client-end", {"untouched": 1}),
        ]:
            await a.send_event(event, data, channel=channel)
        received = []
        while not received or received[-1][0] != "client-end":
            message = await b.recv()
            received.append((message["event"], json.loads(message["data"])))
        await published.until("client-end's hook", lambda e: len(e) == 3)
    room = channel.removeprefix("private-chat.")
    assert received == [
        ("client-typing", {"text": "HI", "room": room}),
        ("client-raw", {"loud": True}),
        ("client-end", {"untouched": 1}),
    ]
    # The client_event hooks (and webhooks) carry what was published.
    assert [e["data"] for e in published.events][:2] == [
        json.dumps({"text": "HI", "room": room}, separators=(",", ":")),
        '{"loud":true}',
    ]
    warnings = " ".join(r.getMessage() for r in caplog.records if r.name == "tidings.hooks")
    assert "took over 0.2 s" in warnings and "bad filter" not in warnings
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in caplog.records)


async def test_a_full_queue_drops_and_counts() -> None:
    hooks = Hooks(queue_size=2, workers=1)
    hooks.on("channel_occupied")(lambda event: None)
    for n in range(5):  # no worker runs: nothing yields to the loop in between
        hooks.submit({"name": "channel_occupied", "channel": f"c{n}"})
    hooks.submit({"name": "cache_miss", "channel": "x"})  # no handler: not even queued
    assert hooks.dropped == 3


async def test_held_vacancies_are_dropped_when_the_client_comes_straight_back(
    open_socket: SocketOpener,
) -> None:
    rt = embedded_realtime(webhook_vacated_delay=0.5)
    rt.hooks.workers = 1  # events run in the order they were released
    seen = Recorder()
    for name in ("channel_occupied", "channel_vacated"):
        rt.on(name)(seen.record)
    async with serving(rt) as ws_url:
        a = await open_socket(ws_url)
        channel, sentinel = unique("flap"), unique("sentinel")
        await a.subscribe(channel)
        await a.send_event("pusher:unsubscribe", {"channel": channel})
        await a.subscribe(channel)
        await a.subscribe(sentinel)
        await a.send_event("pusher:unsubscribe", {"channel": sentinel})
        await seen.until("the sentinel's vacancy", has("channel_vacated", sentinel))
        # The sentinel's vacancy was held as long as the flap's would have been.
        assert [e["name"] for e in seen.events if e["channel"] == channel] == ["channel_occupied"]


# -- the same handlers as a webhook endpoint -------------------------------------------------


@pytest.fixture(params=["flask", "fastapi"])
def webhook_app(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, list[tuple[Event, dict[str, str]]]]]:
    """A framework app whose ``@on`` handlers append to a list; (its URL, the list)."""
    # Standalone: a publish-only Realtime (never used to publish here); its URL's key and
    # secret check the webhooks' signature.
    rt = Realtime.client("http://app-key:app-secret@127.0.0.1:9/apps/12345")
    seen: list[tuple[Event, dict[str, str]]] = []

    @rt.on("channel_occupied", channel="hooked-{name}")
    def occupied(event: Event, name: str) -> None:
        seen.append((event, {"name": name}))

    @rt.on("client_event")
    async def client_event(event: Event) -> None:
        seen.append((event, {}))

    serve = serve_wsgi(flask_app(rt)) if request.param == "flask" else serve_asgi(fastapi_app(rt))
    with serve as running:
        yield running.url, seen


async def test_a_real_tidings_serve_calls_the_handlers_through_the_webhook_endpoint(
    tmp_path: Path,
    webhook_app: tuple[str, list[tuple[Event, dict[str, str]]]],
    open_socket: SocketOpener,
) -> None:
    url, seen = webhook_app
    config = webhook_config(tmp_path, [app_config({"url": f"{url}/pusher/webhook"})])
    server = TidingsProcess(config, tmp_path / "server.log")
    server.start()
    try:
        a = await open_socket(server.ws_url)
        b = await open_socket(server.ws_url)
        await a.subscribe("hooked-one")
        chat = unique("private-chat")
        await a.subscribe_private(chat)
        await b.subscribe_private(chat)
        await a.send_event("client-hello", {"hi": 1}, channel=chat)
        async with asyncio.timeout(TIMEOUT):
            while not any(e["name"] == "client_event" for e, _ in seen):
                await asyncio.sleep(0.02)  # handlers run in another thread; poll, bounded
    finally:
        server.stop()
    occupied = [(e, p) for e, p in seen if e["name"] == "channel_occupied"]
    assert occupied == [({"name": "channel_occupied", "channel": "hooked-one"}, {"name": "one"})]
    client = next(e for e, _ in seen if e["name"] == "client_event")
    assert client == {
        "name": "client_event",
        "channel": chat,
        "event": "client-hello",
        "data": '{"hi":1}',
        "socket_id": a.socket_id,
    }


def test_a_badly_signed_webhook_is_refused_with_401(
    webhook_app: tuple[str, list[tuple[Event, dict[str, str]]]],
) -> None:
    url, seen = webhook_app
    body = json.dumps(
        {"time_ms": 1, "events": [{"name": "channel_occupied", "channel": "hooked-x"}]}
    )
    good = {"X-Pusher-Key": "app-key", "X-Pusher-Signature": signature("app-secret", body.encode())}
    for headers in (
        {**good, "X-Pusher-Signature": signature("wrong-secret", body.encode())},
        {**good, "X-Pusher-Key": "other-key"},
        {},
    ):
        response = httpx.post(f"{url}/pusher/webhook", content=body, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "invalid webhook signature"}
    assert seen == []
    response = httpx.post(f"{url}/pusher/webhook", content=body, headers=good)
    assert response.status_code == 200
    assert seen == [({"name": "channel_occupied", "channel": "hooked-x"}, {"name": "x"})]


class HeldEvents:
    """A second ``WebhookEvents`` sink for the tee: records, holds by key."""

    def __init__(self) -> None:
        self.emitted: list[Event] = []
        self.held: dict[tuple[str, ...], Event] = {}

    def active(self, app: App) -> bool:
        return True

    def wants(self, app: App, name: str) -> bool:
        return name == "channel_occupied"

    def emit(self, app: App, event: Event) -> None:
        self.emitted.append(event)

    def defer(self, app: App, key: tuple[str, ...], event: Event) -> None:
        self.held[key] = event

    def occur(self, app: App, undoes: tuple[str, ...], event: Event) -> None:
        if self.held.pop(undoes, None) is None:
            self.emit(app, event)


async def test_the_tee_undoes_a_transition_in_each_sink_that_still_held_it() -> None:
    app, other = counted_app(), App("2", "k2", "s2")
    hooks = Hooks()
    hooks.on("channel_vacated")(lambda event: None)
    sink = HookSink(hooks, app.id, delay=60.0)
    held = HeldEvents()
    tee = WebhookTee(held, sink)
    vacated = {"name": "channel_vacated", "channel": "c"}
    assert (
        tee.active(app) and tee.wants(app, "channel_vacated") and tee.wants(app, "channel_occupied")
    )
    assert not sink.active(other) and not sink.wants(other, "channel_vacated")
    occupied = {"name": "channel_occupied", "channel": "c"}
    seen: list[Event] = []
    hooks.on("channel_occupied")(seen.append)
    await hooks.start()
    try:
        tee.defer(app, ("vacated", "c"), vacated)
        tee.occur(app, ("vacated", "c"), occupied)  # both held it: the pair is undone
        assert held.emitted == [] and held.held == {}
        tee.defer(app, ("vacated", "c"), vacated)
        held.held.clear()  # one sink already sent its vacancy
        tee.occur(app, ("vacated", "c"), occupied)  # so it gets channel_occupied; not the other
        assert held.emitted == [occupied]
        sink.release()
    finally:
        await hooks.close()
    assert seen == []


def test_a_signed_body_that_is_no_webhook_is_400() -> None:
    app = counted_app()
    for body in (b"[]", b"{}", b'{"events": [1]}', b"not json"):
        with pytest.raises(WebhookRefused) as refused:
            verify_webhook(app, app.key, signature(app.secret, body), body)
        assert refused.value.status == 400
    body = b'{"events": [{"name": "channel_occupied", "channel": "c"}]}'
    events = verify_webhook(app, app.key, signature(app.secret, body), body)
    assert events == [{"name": "channel_occupied", "channel": "c"}]


def test_the_django_webhook_view_runs_the_handlers_of_a_signed_post_only() -> None:
    import django_site
    from django.test import Client

    rt = Realtime.client("http://app-key:app-secret@127.0.0.1:9/apps/12345")
    seen: list[tuple[Event, str]] = []

    @rt.on("member_added", channel="presence-room.{room}")
    def joined(event: Event, room: str) -> None:
        seen.append((event, room))

    django_site.configure(rt)
    client = Client(enforce_csrf_checks=True)  # signed, not CSRF-protected: no token needed
    event = {"name": "member_added", "channel": "presence-room.7", "user_id": "ann"}
    body = json.dumps({"time_ms": 1, "events": [event]}).encode()
    signed = {"X-Pusher-Key": "app-key", "X-Pusher-Signature": signature("app-secret", body)}
    forged = {**signed, "X-Pusher-Signature": signature("not-the-secret", body)}
    refused = client.post("/pusher/webhook", body, "application/json", headers=forged)
    assert (refused.status_code, refused.json()) == (401, {"error": "invalid webhook signature"})
    assert seen == []
    accepted = client.post("/pusher/webhook", body, "application/json", headers=signed)
    assert accepted.status_code == 200
    assert seen == [(event, "7")]
