"""Server-side hooks: Pusher's webhook events as Python calls, and a filter on client events.

``@rt.on(name, channel=pattern)`` runs a handler for each webhook event called ``name``
(``member_added``, ``member_removed``, ``channel_occupied``, ``channel_vacated``,
``client_event``, ``cache_miss``, ``subscription_count``) on a channel matching ``pattern``
(see :mod:`tidings.authorization` for the pattern syntax). The handler gets the event exactly
as a webhook carries it (one dict of the body's ``events``), plus the pattern's placeholders
as keyword arguments::

    @rt.on("member_added", channel="presence-room.{room}")
    async def joined(event, room): await Room.touch(room, event["user_id"])

The same handlers run either way Tidings is deployed:

- embedded, :class:`EmbeddedHooks` gives the node a :class:`HookSink` as its
  ``WebhookEvents``: ``channel_vacated`` and ``member_removed`` are held ``vacated_delay``
  seconds and dropped if the client comes straight back, as for HTTP webhooks; with HTTP
  webhooks configured too, a :class:`WebhookTee` feeds both;
- standalone, a signed webhook endpoint (``tidings.integrations.*.webhook(rt)``) checks
  ``X-Pusher-Key`` / ``X-Pusher-Signature`` with :func:`verify_webhook` and runs them before
  answering. It answers 200 even when a handler failed (logged): a retried batch would run
  the handlers that succeeded a second time.

Each handler gets its own copy of the event dict, so one handler's changes never reach the
next.

Hooks never block fan-out: embedded, events wait in one bounded queue, run by a few worker
tasks (sync handlers in threads); when the queue is full an event is dropped and counted in
``Hooks.dropped``, with a warning. A handler that raises is logged with its traceback and
the other handlers still run.

``@rt.before("client-*", channel=pattern)`` (embedded only) sees each client event before it
is published: it returns the data to publish (a ``str`` is sent as is, anything else is
JSON-encoded) or None to drop the event. Hooks matching one event run in registration order,
each seeing the data the one before returned. The sender's later messages wait for it (their
order is kept), other sockets never do. A ``before`` hook that raises or takes longer than
``before_timeout`` drops the event: a filter that could not decide must not let through what
it exists to stop. (A sync hook runs in a thread, which keeps running until it returns.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson

from tidings.authorization import ChannelPattern
from tidings.core.apps import App
from tidings.core.webhooks import EVENT_TYPES, Delayer, Event, signature
from tidings.node import Node, WebhookEvents
from tidings.protocol import messages
from tidings.protocol.session import Broadcast
from tidings.tasks import spawn

log = logging.getLogger("tidings.hooks")

Handler = TypeVar("Handler", bound=Callable[..., Any])

DROP_WARNING_EVERY = 1000  # with a full queue, one warning per this many dropped events


class WebhookRefused(Exception):
    """A webhook request that is not from the app's Tidings (401) or not a webhook (400)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """A client event as a ``before`` hook sees it. ``data`` is the JSON text the sender's
    library sent (what the ``client_event`` webhook carries); ``payload`` decodes it."""

    channel: str
    event: str
    data: str
    socket_id: str
    user_id: str | None

    @property
    def payload(self) -> Any:
        """``data`` decoded, or the text itself when it is not JSON (pusher-js does the same)."""
        try:
            return orjson.loads(self.data)
        except orjson.JSONDecodeError:
            return self.data


@dataclass(frozen=True, slots=True)
class _On:
    name: str
    channel: ChannelPattern | None
    handler: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class _Before:
    event: re.Pattern[str]
    channel: ChannelPattern | None
    handler: Callable[..., Any]


def _placeholders(pattern: ChannelPattern | None, channel: object) -> dict[str, str] | None:
    """The keyword arguments for a handler, or None when its pattern does not match."""
    if pattern is None:
        return {}
    return pattern.match(channel) if isinstance(channel, str) else None


class Hooks:
    """The ``on`` and ``before`` handlers of one Realtime, and the workers that run them.

    ``queue_size`` bounds the events waiting for ``workers`` tasks; ``before_timeout`` is
    how long a ``before`` hook may take before its event is dropped.
    """

    def __init__(
        self, queue_size: int = 10_000, workers: int = 4, before_timeout: float = 1.0
    ) -> None:
        self.queue_size = queue_size
        self.workers = workers
        self.before_timeout = before_timeout
        self.dropped = 0  # events not run because the queue was full
        self._on: list[_On] = []
        self._before: list[_Before] = []
        self._queue: asyncio.Queue[Event] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- declaring ---------------------------------------------------------------------------

    def on(self, name: str, channel: str | None = None) -> Callable[[Handler], Handler]:
        """Register ``f(event, **placeholders)`` for webhook events called ``name``."""
        if name not in EVENT_TYPES:
            raise ValueError(f"@on({name!r}): not a webhook event; one of {sorted(EVENT_TYPES)}")
        pattern = ChannelPattern.compile(channel, reserved="event") if channel else None

        def register(handler: Handler) -> Handler:
            self._on.append(_On(name, pattern, handler))
            return handler

        return register

    def before(self, event: str, channel: str | None = None) -> Callable[[Handler], Handler]:
        """Register ``f(client_event, **placeholders) -> data | None`` for client events whose
        name matches ``event`` (``*`` matches any run of characters)."""
        if not event.startswith("client-"):
            raise ValueError(f"@before({event!r}): client events only (client-...)")
        regex = re.compile(".*".join(re.escape(piece) for piece in event.split("*")))
        pattern = ChannelPattern.compile(channel, reserved="event") if channel else None

        def register(handler: Handler) -> Handler:
            self._before.append(_Before(regex, pattern, handler))
            return handler

        return register

    def wants(self, name: str) -> bool:
        """Whether any ``on`` handler takes events called ``name``."""
        return any(hook.name == name for hook in self._on)

    @property
    def listening(self) -> bool:
        """Whether any ``on`` handler is registered (the node skips its events otherwise)."""
        return bool(self._on)

    # -- running ``on`` handlers -------------------------------------------------------------

    def submit(self, event: Event) -> None:
        """Queue ``event`` for the workers; never blocks (a full queue drops it)."""
        if not self.wants(event["name"]):
            return
        if self._queue is None:
            self._queue = asyncio.Queue(self.queue_size)
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % DROP_WARNING_EVERY == 1:
                log.warning(
                    "hook queue full (%d events): %d event(s) dropped so far",
                    self.queue_size,
                    self.dropped,
                )

    async def start(self) -> None:
        """Start the workers, on the loop that serves the sockets."""
        if self._queue is None:
            self._queue = asyncio.Queue(self.queue_size)
        self._tasks = [spawn(self._work(self._queue), "hooks") for _ in range(self.workers)]

    async def close(self, timeout: float = 5.0) -> None:
        """Run what is queued (for at most ``timeout`` seconds), then stop the workers."""
        if self._queue is not None and self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _work(self, queue: asyncio.Queue[Event]) -> None:
        while True:
            event = await queue.get()
            try:
                await self.run(event)
            finally:
                queue.task_done()

    def _matching(self, event: Event) -> list[tuple[_On, dict[str, str]]]:
        found = []
        for hook in self._on:
            if hook.name == event.get("name"):
                params = _placeholders(hook.channel, event.get("channel"))
                if params is not None:
                    found.append((hook, params))
        return found

    async def run(self, event: Event) -> None:
        """Run every handler of ``event`` now: async ones awaited, sync ones in a thread.
        A handler that raises is logged and the others still run."""
        for hook, params in self._matching(event):
            try:
                if inspect.iscoroutinefunction(hook.handler):
                    await hook.handler(dict(event), **params)
                else:
                    result = await asyncio.to_thread(hook.handler, dict(event), **params)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                log.exception("hook %s for %s failed", _name(hook.handler), event.get("name"))

    def run_sync(self, event: Event) -> None:
        """Run every handler of ``event`` in this thread (sync webhook views: Flask, Django);
        async handlers run to completion with :func:`asyncio.run`."""
        for hook, params in self._matching(event):
            try:
                result = hook.handler(dict(event), **params)
                if inspect.isawaitable(result):
                    asyncio.run(_await(result))
            except Exception:
                log.exception("hook %s for %s failed", _name(hook.handler), event.get("name"))

    # -- ``before`` hooks --------------------------------------------------------------------

    async def filter_client_event(self, app: App, event: Broadcast, socket_id: str) -> str | None:
        """The data to publish for ``event`` after the ``before`` hooks, or None to drop it.

        The node awaits this where a client event is about to be published."""
        if not self._before:
            return event.data
        current = ClientEvent(event.channel, event.event, event.data, socket_id, event.user_id)
        for hook in self._before:
            if not hook.event.fullmatch(event.event):
                continue
            params = _placeholders(hook.channel, event.channel)
            if params is None:
                continue
            data = await self._run_before(hook, current, params)
            if data is None:
                return None
            current = replace(current, data=data)
        if current.data is not event.data and (
            len(current.data.encode()) > app.max_event_payload_bytes
        ):
            log.warning(
                "before hook made %s on %s larger than %d bytes: dropped",
                event.event,
                event.channel,
                app.max_event_payload_bytes,
            )
            return None
        return current.data

    async def _run_before(
        self, hook: _Before, event: ClientEvent, params: dict[str, str]
    ) -> str | None:
        name = _name(hook.handler)
        try:
            if inspect.iscoroutinefunction(hook.handler):
                call = hook.handler(event, **params)
            else:
                call = asyncio.to_thread(hook.handler, event, **params)
            result = await asyncio.wait_for(_await(call), self.before_timeout)
        except TimeoutError:
            log.warning(
                "before hook %s took over %g s: %s on %s dropped",
                name,
                self.before_timeout,
                event.event,
                event.channel,
            )
            return None
        except Exception:
            log.exception(
                "before hook %s failed: %s on %s dropped", name, event.event, event.channel
            )
            return None
        if result is None or isinstance(result, str):
            return result
        try:
            return messages.dumps(result)
        except TypeError:
            log.exception("before hook %s returned data that is not JSON: dropped", name)
            return None


async def _await(awaitable: Any) -> Any:
    result = await awaitable
    while inspect.isawaitable(result):  # a sync handler that returned a coroutine
        result = await result
    return result


def _name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", repr(handler))


class HookSink:
    """The node's events for one app, fed to the ``on`` and ``before`` hooks in process.

    It is the node's ``WebhookEvents`` (alone, or in a :class:`WebhookTee` with the HTTP
    sender) and its ``client_event_filter``. It holds ``channel_vacated`` and
    ``member_removed`` for ``delay`` seconds as the HTTP sender does, so the same quick
    reconnect makes no flapping pair here either. Other apps of the node pass through."""

    def __init__(self, hooks: Hooks, app_id: str, delay: float = 3.0) -> None:
        self.hooks = hooks
        self.app_id = app_id
        self.delay = delay
        self._held = Delayer()
        self._timer: asyncio.TimerHandle | None = None

    def active(self, app: App) -> bool:
        return app.id == self.app_id and self.hooks.listening

    def wants(self, app: App, name: str) -> bool:
        return app.id == self.app_id and self.hooks.wants(name)

    def emit(self, app: App, event: Event) -> None:
        if app.id == self.app_id:
            self.hooks.submit(event)

    async def filter_client_event(self, app: App, event: Broadcast, socket_id: str) -> str | None:
        if app.id != self.app_id:
            return event.data
        return await self.hooks.filter_client_event(app, event, socket_id)

    def defer(self, app: App, key: Hashable, event: Event) -> None:
        loop = asyncio.get_running_loop()
        self._held.defer((app.id, key), event, loop.time() + self.delay)
        self._arm(loop)

    def cancel(self, app: App, key: Hashable) -> bool:
        return self._held.cancel((app.id, key))

    def occur(self, app: App, undoes: Hashable, event: Event) -> None:
        if not self.cancel(app, undoes):
            self.emit(app, event)

    def release(self) -> None:
        """Hand every held event to the handlers now (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for event in self._held.due(float("inf")):
            self.hooks.submit(event)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self._held.next_due()
        if due is None or (self._timer is not None and self._timer.when() <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(due, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        for event in self._held.due(loop.time()):
            self.hooks.submit(event)
        self._arm(loop)


class WebhookTee:
    """Several ``WebhookEvents`` sinks as one: HTTP webhooks and in-process hooks together.

    Each sink sees only the apps it is active for and holds its own delayed events, and
    decides on its own whether a transition undoes one it holds: when they disagree (a held
    event fell due in one sink but not yet in the other) the sink that sent the vacancy
    gets the ``channel_occupied`` and the other neither, so each sees a consistent story."""

    def __init__(self, *sinks: WebhookEvents) -> None:
        self.sinks = sinks

    def active(self, app: App) -> bool:
        return any(sink.active(app) for sink in self.sinks)

    def wants(self, app: App, name: str) -> bool:
        return any(sink.active(app) and sink.wants(app, name) for sink in self.sinks)

    def emit(self, app: App, event: Event) -> None:
        for sink in self.sinks:
            if sink.active(app):
                sink.emit(app, event)

    def defer(self, app: App, key: tuple[str, ...], event: Event) -> None:
        for sink in self.sinks:
            if sink.active(app):
                sink.defer(app, key, event)

    def occur(self, app: App, undoes: tuple[str, ...], event: Event) -> None:
        for sink in self.sinks:
            if sink.active(app):
                sink.occur(app, undoes, event)


def verify_webhook(app: App, key: str | None, signed: str | None, body: bytes) -> list[Event]:
    """The events of a webhook request signed by ``app``'s Tidings (or Pusher).

    ``X-Pusher-Key`` must be the app key and ``X-Pusher-Signature`` the hex HMAC-SHA256 of
    the raw body with the app secret, both compared in constant time; else 401."""
    key_ok = hmac.compare_digest((key or "").encode(), app.key.encode())
    expected = signature(app.secret, body)
    signature_ok = hmac.compare_digest((signed or "").encode(), expected.encode())
    if not (key_ok and signature_ok):
        raise WebhookRefused("invalid webhook signature", 401)
    try:
        events = orjson.loads(body)["events"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        raise WebhookRefused("a webhook body is a JSON object with events", 400) from None
    if not isinstance(events, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) for e in events
    ):
        raise WebhookRefused("webhook events must be objects with a name", 400)
    return events


class EmbeddedHooks:
    """The hooks of an embedded Realtime as one of its lifecycle's edges (``lifecycle.Edge``):
    wired into the node when it starts, tee'd with the HTTP webhook sender the node already
    has, and run dry when it stops (held events released, the queue run)."""

    def __init__(self, node: Node, hooks: Hooks, app_id: str, delay: float) -> None:
        self.node = node
        self.hooks = hooks
        self.sink = HookSink(hooks, app_id, delay)

    async def start(self) -> None:
        node = self.node
        node.webhooks = self.sink if node.webhooks is None else WebhookTee(node.webhooks, self.sink)
        node.client_event_filter = self.sink.filter_client_event
        await self.hooks.start()

    async def stop_accepting(self) -> None:
        """Nothing to refuse: events keep coming while the sockets close."""

    async def drain(self, grace: float) -> None:
        """Nothing to wait for: the closing sockets' last events are queued as they come."""

    async def close(self) -> None:
        self.sink.release()
        await self.hooks.close()
