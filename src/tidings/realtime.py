"""``Realtime``: publish to Pusher clients from Python, from any thread or event loop.

Two kinds, one set of methods:

- embedded (``Realtime(app_id=..., key=..., secret=...)``, ``from_config``, ``from_env``):
  this process serves the sockets. Its operations run on the node's event loop, the one
  ``await rt.start()`` (or ``tidings serve``, or an ASGI server) ran it on.
- publish-only (``Realtime.client(url)``): a :class:`tidings.backends.Backend` reaching a
  cluster over Redis or HTTP, run on a private event loop in a daemon thread, started on
  first use and started afresh in a forked child (gunicorn ``--preload``).

Each operation is a coroutine of the backend, bound to its home loop. ``trigger`` and the
other plain methods block the calling thread until it is done (WSGI views, Celery tasks,
threads: no event loop needed); ``atrigger`` and the other ``a…`` methods await it from any
event loop, with no hop when already on the home loop. A plain method called on the home
loop's own thread would wait for itself forever, so it raises instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import orjson

from tidings.backends import Backend, Event
from tidings.loop_bridge import LoopBridge, Reply

if TYPE_CHECKING:  # the embedded parts are imported when used: a client needs none of them
    from tidings.api import EmbeddedBackend
    from tidings.asgi import TidingsASGI
    from tidings.authorization import Authorizer
    from tidings.config import Settings
    from tidings.core.apps import App
    from tidings.hooks import Hooks
    from tidings.lifecycle import Lifecycle
    from tidings.live.model import LiveSpec
    from tidings.live.orm import Shell
    from tidings.live.provider import LiveModels
    from tidings.node import Node
    from tidings.protocol.rest import Trigger

T = TypeVar("T")
C = TypeVar("C")
H = TypeVar("H", bound=Callable[..., Any])

NOT_STARTED = (
    "this Realtime serves sockets in this process and is not running: start it first with "
    "`await rt.start()` (or `async with rt:`), serve `rt.asgi()` under an ASGI server, or run "
    "`tidings serve`"
)
BATCH_KEYS = frozenset({"channel", "name", "data", "socket_id", "info"})


class _Queuing(Protocol):
    """A backend that checks a trigger anywhere and queues it on its loop with a plain
    call (``tidings.clients.redis.RedisClient``)."""

    def check(self, event: Event) -> Trigger: ...

    def queue_trigger(self, trigger: Trigger, answer: Reply) -> None: ...


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's when it is installed (it is, but on Windows): a call from another thread
    wakes it with one coalesced signal, where asyncio's writes to its self-pipe per call."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _LoopThread:
    """A private event loop running forever in a daemon thread (publish-only clients)."""

    def __init__(self) -> None:
        self.loop = _new_loop()
        self.thread = threading.Thread(target=self._run, name="tidings-client", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def _on(loop: asyncio.AbstractEventLoop, thread: int | None) -> bool:
    """Whether the caller runs on ``loop``, whose thread is ``thread``: on that thread while
    it runs, for a thread runs one loop at a time. Asked instead of comparing with
    ``asyncio.get_running_loop()``, which makes a ``getpid`` system call each time."""
    return threading.get_ident() == thread and loop.is_running()


class _NodeHome:
    """Embedded: the backend's coroutines run on the loop the lifecycle was started on."""

    def __init__(self, backend: EmbeddedBackend, lifecycle: Lifecycle) -> None:
        self._backend = backend
        self.lifecycle = lifecycle
        self.started_on: asyncio.AbstractEventLoop | None = None
        self.thread: int | None = None  # the started_on loop's thread

    def here(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the caller runs on ``loop`` (what :meth:`loop` returned)."""
        return _on(loop, self.thread)

    @property
    def running(self) -> bool:
        return self.started_on is not None and self.lifecycle.running

    def loop(self) -> asyncio.AbstractEventLoop:
        if self.started_on is None or not self.lifecycle.running:
            raise RuntimeError(NOT_STARTED)
        return self.started_on

    async def stop(self) -> None:
        await self.lifecycle.drain()
        await self.lifecycle.stop()

    async def backend(self) -> Backend:
        return self._backend

    def ready(self) -> Backend | None:
        """The backend: the node's needs no start of its own."""
        return self._backend


class _Forks:
    """How many forks this process is from the one that imported this module: a child
    sees a number its parent's objects did not record. Read per call instead of
    ``os.getpid()``, a system call."""

    count = 0

    @classmethod
    def happened(cls) -> None:
        cls.count += 1


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_Forks.happened)


class _ThreadHome:
    """Publish-only: the backend's coroutines run on a loop thread; both are made on first
    use in each process.

    After a fork the parent's thread does not exist in the child and the backend's sockets
    are the parent's: the child makes its own, and never closes the parent's."""

    def __init__(self, open_backend: Callable[[], Backend]) -> None:
        self._open = open_backend
        self._backend = open_backend()  # a bad URL fails here, not at the first publish
        self._forks = _Forks.count
        self._lock = threading.Lock()
        self._thread: _LoopThread | None = None
        self._starting: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._forks == _Forks.count

    def here(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the caller runs on ``loop`` (what :meth:`loop` returned)."""
        thread = self._thread
        return thread is not None and _on(loop, thread.thread.ident)

    def loop(self) -> asyncio.AbstractEventLoop:
        if self._forks != _Forks.count:
            # A lock held by a parent thread at the fork would stay held in the child.
            self._lock = threading.Lock()
            self._backend = self._open()
            self._thread = None
            self._starting = None
            self._forks = _Forks.count
        with self._lock:
            if self._thread is None:
                self._thread = _LoopThread()
            return self._thread.loop

    async def backend(self) -> Backend:
        """The backend, started once; a start that failed is tried again by the next call."""
        starting = self._starting
        if starting is None or (
            starting.done() and (starting.cancelled() or starting.exception() is not None)
        ):
            starting = self._starting = asyncio.ensure_future(self._backend.start())
        await asyncio.shield(starting)
        return self._backend

    def ready(self) -> Backend | None:
        """The backend once started (None before: :meth:`backend` starts it)."""
        starting = self._starting
        if (
            starting is not None
            and starting.done()
            and not starting.cancelled()
            and starting.exception() is None
        ):
            return self._backend
        return None

    async def stop(self) -> None:
        """Close the backend (on the home loop); :meth:`stop_thread` then ends the loop. A
        later call starts afresh, with a new backend."""
        if self._starting is not None:
            self._starting = None
            await self._backend.close()
            self._backend = self._open()

    def stop_thread(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and self._forks == _Forks.count:
            thread.stop()


class Realtime:
    """Publish events, read channel state and sign users out, as the Pusher HTTP API does.

    Refusals raise :class:`tidings.backends.PublishError` with the HTTP status the REST API
    answers for the same call. Plain methods wait at most :attr:`timeout` seconds."""

    timeout: float = 30.0
    _settings: Settings | None
    _lifecycle: Lifecycle | None
    _app: App | None
    _home: _NodeHome | _ThreadHome
    _signing: App | None = None  # a publish-only client's key and secret, for auth helpers
    _bridge: LoopBridge | None = None  # awaits from other loops (one per home loop)

    def __init__(
        self, app_id: str, key: str, secret: str, broker: str | None = None, **settings: Any
    ) -> None:
        """One app, served by this process. ``broker``: None for memory (one process), or
        ``redis://…`` to share channels with other processes and machines. Other keyword
        arguments are :class:`tidings.config.Settings` fields (``activity_timeout=60``), or
        limits of the app (``max_event_payload_bytes=20480``). ``max_connections``, a setting
        of both, limits the process and its one app alike."""
        from tidings.config import AppSettings, Settings, validate_settings

        if "apps" in settings:
            raise TypeError("Realtime() serves one app: give app_id, key and secret")
        app: dict[str, Any] = {"id": app_id, "key": key, "secret": secret}
        server: dict[str, Any] = {}
        for name, value in settings.items():
            if name in AppSettings.model_fields:
                app[name] = value
            if name in Settings.model_fields:
                server[name] = value
        if broker is not None:
            server["redis"] = broker
        self._embed(validate_settings({**server, "apps": [app]}), app_id)

    @classmethod
    def from_settings(cls, settings: Settings, app_id: str | None = None) -> Realtime:
        """Embedded, from validated settings; publishes to ``app_id`` (default: the first app)."""
        realtime = cls.__new__(cls)
        realtime._embed(settings, app_id)
        return realtime

    @classmethod
    def from_config(cls, path: str | Path, app_id: str | None = None) -> Realtime:
        """Embedded, with the settings ``tidings serve --config path`` would use (the file,
        then ``TIDINGS_*`` variables over it)."""
        from tidings.config import load_settings

        return cls.from_settings(load_settings(Path(path)), app_id)

    @classmethod
    def from_env(cls, app_id: str | None = None) -> Realtime:
        """Embedded, with the settings ``tidings serve`` would use from ``TIDINGS_*``."""
        from tidings.config import load_settings

        return cls.from_settings(load_settings(), app_id)

    @classmethod
    def client(
        cls,
        url: str,
        app_id: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        **options: Any,
    ) -> Realtime:
        """Publish-only: ``redis://…`` into a Tidings cluster, ``http(s)://key:secret@host/apps/ID``
        to any Pusher-protocol server. ``options`` go to the client (``tidings.clients``:
        for Redis, ``redis_prefix`` and ``redis_sharded`` must match the servers')."""
        # Imported when used: the clients pull in redis-py or an HTTP client.
        from tidings.clients import open_backend

        realtime = cls.from_backend(
            functools.partial(open_backend, url, app_id=app_id, key=key, secret=secret, **options)
        )
        realtime._signing = _credentials(url, app_id, key, secret)
        return realtime

    @classmethod
    def from_backend(cls, open_backend: Callable[[], Backend]) -> Realtime:
        """Publish-only, through the backends ``open_backend()`` makes (one per process)."""
        realtime = cls.__new__(cls)
        realtime._settings = None
        realtime._lifecycle = None
        realtime._app = None
        realtime._home = _ThreadHome(open_backend)
        return realtime

    def _embed(self, settings: Settings, app_id: str | None) -> None:
        from tidings.api import EmbeddedBackend
        from tidings.config import ConfigError
        from tidings.lifecycle import Lifecycle

        self._settings = settings
        self._lifecycle = Lifecycle(settings)
        apps = list(self._lifecycle.node.apps)
        if app_id is None:
            self._app = apps[0]
        else:
            found = self._lifecycle.node.apps.by_id(app_id)
            if found is None:
                known = ", ".join(app.id for app in apps)
                raise ConfigError(f"no app with id {app_id!r} in the configuration ({known})")
            self._app = found
        self._home = _NodeHome(EmbeddedBackend(self._lifecycle.node, self._app), self._lifecycle)

    # -- what others build on --------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        return self._lifecycle is not None

    @property
    def settings(self) -> Settings:
        return self._embedded_part(self._settings)

    @property
    def lifecycle(self) -> Lifecycle:
        return self._embedded_part(self._lifecycle)

    @property
    def node(self) -> Node:
        return self.lifecycle.node

    @property
    def app(self) -> App:
        return self._embedded_part(self._app)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the operations run on: the node's once started, the client's thread's
        once used; None before."""
        return self._home.loop() if self.running else None

    @property
    def running(self) -> bool:
        return self._home.running

    def _embedded_part(self, value: T | None) -> T:
        if value is None:
            raise AttributeError("a publish-only Realtime.client() has no node, app or settings")
        return value

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Embedded: start the node (broker, webhooks) on the running loop, with no listener:
        an ASGI server or ``tidings serve`` adds one. Publish-only: connect the backend."""
        if isinstance(self._home, _ThreadHome):
            await self._call(lambda backend: _done())
            return
        if self._home.started_on is not None:
            raise RuntimeError("this Realtime was already started (it starts once)")
        self._home.started_on = asyncio.get_running_loop()
        self._home.thread = threading.get_ident()
        await self._home.lifecycle.start()
        from tidings.hooks import EmbeddedHooks

        delay = self.settings.webhook_vacated_delay
        await self._home.lifecycle.add(EmbeddedHooks(self.node, self.hooks, self.app.id, delay))

    async def stop(self) -> None:
        """Embedded: drain (clients told to reconnect elsewhere) and stop. Publish-only: close
        the backend and its loop thread. Nothing to do when not running."""
        if self.running:
            home = self._home
            if "live_models" in self.__dict__:  # live changes committed before the stop go out
                await self._call(lambda backend: self.live_models.flush())
            await self._call(lambda backend: home.stop())
            if isinstance(home, _ThreadHome):
                home.stop_thread()

    def close(self) -> None:
        """:meth:`stop`, from code with no event loop (an ``atexit`` handler, a worker's exit)."""
        if self.running:
            home = self._home
            if "live_models" in self.__dict__:
                self._sync(lambda backend: self.live_models.flush())
            self._sync(lambda backend: home.stop())
            if isinstance(home, _ThreadHome):
                home.stop_thread()

    def asgi(self, other: Any = None, *, handle_signals: bool = True) -> TidingsASGI:
        """This Realtime as one ASGI app: the Pusher paths (``/app/{key}``, ``/apps/{id}/…``,
        the HTTP fallbacks) served here, everything else and lifespan forwarded to ``other``
        (an ASGI app: FastAPI, Starlette, Django's ``get_asgi_application()``).

        Lifespan starts this Realtime, then ``other``; shutdown stops ``other``, then drains
        this one. Without lifespan (Django), it starts on the first request. SIGTERM and
        SIGINT drain it (4200 to every client) before the server shuts down, unless
        ``handle_signals=False`` (see :mod:`tidings.asgi.app`). Run uvicorn with
        ``--ws-per-message-deflate false``; several workers need ``broker="redis://…"``."""
        from tidings.asgi import TidingsASGI

        self._embedded_part(self._lifecycle)
        return TidingsASGI(self, other, handle_signals=handle_signals)

    async def serve(self, *, supervised: bool = False) -> int:
        """What ``tidings serve`` runs: start, listen on ``settings.host:port`` until SIGTERM
        or SIGINT, drain, stop; returns the exit status."""
        from tidings.server.app import serve_realtime

        return await serve_realtime(self, supervised=supervised)

    async def __aenter__(self) -> Realtime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the operations ------------------------------------------------------------------

    def trigger(
        self,
        channels: str | Sequence[str],
        event: str,
        data: Any,
        socket_id: str | None = None,
        *,
        info: Sequence[str] = (),
        on_commit: bool = False,
    ) -> dict[str, Any] | None:
        """Publish ``event`` to ``channels``, except to the connection ``socket_id``; returns
        what ``POST /events`` answers. ``data``: a ``str`` is sent as is, anything else as
        JSON. ``on_commit=True`` (Django): publish when the current transaction commits,
        never if it rolls back; returns None."""
        message = _event(channels, event, data, socket_id, info)
        if on_commit:

            def publish_on_commit() -> None:
                # A function, not a partial: Django names it (__qualname__) when it fails.
                self._sync(_trigger(message))

            _on_django_commit(publish_on_commit)
            return None
        return self._sync(_trigger(message))

    async def atrigger(
        self,
        channels: str | Sequence[str],
        event: str,
        data: Any,
        socket_id: str | None = None,
        *,
        info: Sequence[str] = (),
    ) -> dict[str, Any]:
        message = _event(channels, event, data, socket_id, info)
        home = self._home
        loop = home.loop()  # first: in a forked child it gives the child its own backend
        backend = home.ready()
        if backend is None:
            return await self._call(_trigger(message))  # started on the way
        if home.here(loop):
            # On the home loop: a direct await, no closure or coroutine in between (an
            # async view of an embedding app publishing).
            return await backend.trigger(message)
        bridge = self._bridge_to(loop)
        queue_trigger = getattr(backend, "queue_trigger", None)
        if queue_trigger is not None:
            # A client that queues checked triggers (Redis): checked here, queued by one
            # function call on its loop, no task there; answered with the rest of its batch.
            trigger = cast(_Queuing, backend).check(message)
            if not trigger.info:
                await bridge.post(functools.partial(queue_trigger, trigger))
                return {}
        return await bridge.call(backend.trigger(message))

    def trigger_batch(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Several events at once, each ``{"channel", "name", "data"[, "socket_id", "info"]}``;
        returns what ``POST /batch_events`` answers."""
        events = _batch(batch)
        return self._sync(lambda backend: backend.trigger_batch(events))

    async def atrigger_batch(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        events = _batch(batch)
        return await self._call(lambda backend: backend.trigger_batch(events))

    async def _atrigger_many(self, events: Sequence[Event]) -> None:
        """Events Tidings built itself (the live models' commits), in order, in one call
        to the backend: no batch limit and no answer, so none of a batch's bookkeeping."""
        await self._call(lambda backend: backend.trigger_many(events))

    def send_to_user(self, user_id: str, event: str, data: Any) -> None:
        """An event for every connection signed in as ``user_id``."""
        user, encoded = _text("user_id", user_id), _encode(data)
        self._sync(lambda backend: backend.send_to_user(user, event, encoded))

    async def asend_to_user(self, user_id: str, event: str, data: Any) -> None:
        user, encoded = _text("user_id", user_id), _encode(data)
        await self._call(lambda backend: backend.send_to_user(user, event, encoded))

    def terminate_user(self, user_id: str) -> None:
        """Close every connection signed in as ``user_id``, on every node."""
        user = _text("user_id", user_id)
        self._sync(lambda backend: backend.terminate_user(user))

    async def aterminate_user(self, user_id: str) -> None:
        user = _text("user_id", user_id)
        await self._call(lambda backend: backend.terminate_user(user))

    def channels(self, prefix: str = "", info: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        """Occupied channels whose name starts with ``prefix``, with the attributes asked for
        (``subscription_count``; ``user_count`` with a ``presence-`` prefix)."""
        start, names = _text("prefix", prefix), _names(info)
        return self._sync(lambda backend: backend.channels(start, names))

    async def achannels(
        self, prefix: str = "", info: Sequence[str] = ()
    ) -> dict[str, dict[str, Any]]:
        start, names = _text("prefix", prefix), _names(info)
        return await self._call(lambda backend: backend.channels(start, names))

    def channel(self, name: str, info: Sequence[str] = ()) -> dict[str, Any]:
        """``{"occupied": bool}`` plus the attributes asked for (``user_count``,
        ``subscription_count``, ``cache``)."""
        channel, names = _text("name", name), _names(info)
        return self._sync(lambda backend: backend.channel(channel, names))

    async def achannel(self, name: str, info: Sequence[str] = ()) -> dict[str, Any]:
        channel, names = _text("name", name), _names(info)
        return await self._call(lambda backend: backend.channel(channel, names))

    def occupied(self, channels: Sequence[str]) -> set[str]:
        """Which of ``channels`` have at least one subscriber, in one round trip (a backend
        that cannot tell, such as a Pusher HTTP client, answers all of them)."""
        names = _names(channels)
        return self._sync(_occupied(names))

    async def aoccupied(self, channels: Sequence[str]) -> set[str]:
        names = _names(channels)
        return await self._call(_occupied(names))

    def users(self, channel: str) -> list[str]:
        """The user ids of a presence channel's members."""
        name = _text("channel", channel)
        return self._sync(lambda backend: backend.users(name))

    async def ausers(self, channel: str) -> list[str]:
        name = _text("channel", channel)
        return await self._call(lambda backend: backend.users(name))

    # -- auth rules and hooks (tidings.authorization, tidings.hooks) ------------------------

    @functools.cached_property
    def authorizer(self) -> Authorizer:
        """The ``@authorize``, ``@presence`` and ``@user`` rules, signed with the app's key
        and secret; ``tidings.integrations.*`` serve them."""
        from tidings.authorization import Authorizer

        app = self._app or self._signing
        if app is None:
            raise AttributeError(
                "auth helpers sign with the app's key and secret: give them to "
                "Realtime.client(url, key=..., secret=...)"
            )
        return Authorizer(app)

    @functools.cached_property
    def hooks(self) -> Hooks:
        """The ``@on`` and ``@before`` handlers."""
        from tidings.hooks import Hooks

        return Hooks()

    def authorize(self, pattern: str) -> Callable[[H], H]:
        """``@rt.authorize("private-orders.{order_id}")`` on ``f(user, order_id) -> bool``."""
        return self.authorizer.authorize(pattern)

    def presence(self, pattern: str) -> Callable[[H], H]:
        """``@rt.presence("presence-room.{room}")`` on ``f(user, room) -> member | None``."""
        return self.authorizer.presence(pattern)

    def user(self, handler: H) -> H:
        """``@rt.user`` on ``f(user) -> {"id": ..., "user_info": ...} | None`` (sign-in)."""
        return self.authorizer.user(handler)

    def authenticate_channel(self, user: object, socket_id: str, channel: str) -> dict[str, str]:
        """The auth response pusher-js expects for a subscription (sync views)."""
        return self.authorizer.authenticate_channel(user, socket_id, channel)

    async def aauthenticate_channel(
        self, user: object, socket_id: str, channel: str
    ) -> dict[str, str]:
        return await self.authorizer.aauthenticate_channel(user, socket_id, channel)

    def authenticate_user(self, user: object, socket_id: str) -> dict[str, str]:
        """The sign-in response pusher-js expects (sync views)."""
        return self.authorizer.authenticate_user(user, socket_id)

    async def aauthenticate_user(self, user: object, socket_id: str) -> dict[str, str]:
        return await self.authorizer.aauthenticate_user(user, socket_id)

    def sse_token(self, channels: Sequence[str], ttl: float = 3600.0) -> str:
        """The ``token`` of a Server-Sent Events stream of ``channels`` (its private ones
        signed with the app's secret; ``docs/sse.md``), valid ``ttl`` seconds."""
        from tidings.authorization import sse_token

        return sse_token(self.authorizer.app.secret, channels, ttl)

    def on(self, name: str, channel: str | None = None) -> Callable[[H], H]:
        """``@rt.on("member_added", channel="presence-room.{room}")``: webhook events, in
        process when embedded, else through ``tidings.integrations.*.webhook(rt)``."""
        return self.hooks.on(name, channel)

    def before(self, event: str, channel: str | None = None) -> Callable[[H], H]:
        """``@rt.before("client-*", channel=...)``: rewrite or drop client events (embedded)."""
        if not self.embedded:
            raise RuntimeError(
                "@before hooks see client events as this process receives them: only an "
                "embedded Realtime has them (use @on('client_event') with a webhook instead)"
            )
        return self.hooks.before(event, channel)

    # -- live models (tidings.live) --------------------------------------------------------

    @functools.cached_property
    def live_models(self) -> LiveModels:
        """The ``@rt.live`` declarations; an embedded node takes its snapshots from them."""
        from tidings.live.provider import LiveModels

        models = LiveModels(self)
        if self._lifecycle is not None:
            self._lifecycle.node.live_snapshots = models.snapshot
        return models

    def live(
        self,
        model: type,
        *,
        fields: Sequence[str],
        filters: Sequence[str] = (),
        key: str = "id",
        version: str | None = "version",
        name: str | None = None,
        max_payload: int = 8_192,
    ) -> Callable[[type[C]], type[C]]:
        """``@rt.live(Todo, fields=[...], filters=["list_id"])`` on a class with
        ``authorize(self, user, **filters) -> bool`` and ``snapshot(self, **filters) -> rows``
        (each sync or async): rows of ``model`` publish ``created``, ``updated`` and
        ``deleted`` to ``private-live.{name}.{filter}.{value}`` when their transaction
        commits (see docs/live.md). A Django model connects its signals here; an SQLAlchemy
        model needs ``rt.live_sqlalchemy(Session)`` once."""
        from tidings.live.model import LiveSpec

        def register(handler_class: type[C]) -> type[C]:
            spec = LiveSpec.declare(
                model,
                handler_class(),
                fields=fields,
                filters=filters,
                key=key,
                version=version,
                name=name,
                max_payload=max_payload,
            )
            shell = _orm(model)
            self.live_models.add(spec, shell.reader(spec))
            for pattern, filter_name in spec.patterns():
                self.authorize(pattern)(_live_rule(spec.handler, filter_name))
            shell.register(self, spec)
            return handler_class

        return register

    def live_touch(
        self,
        model: type,
        ids: Iterable[Any],
        deleted: bool = False,
        rows: Iterable[Any] | None = None,
        old: Iterable[Any] | None = None,
    ) -> None:
        """Publish rows changed where no signal or session event sees them (``bulk_create``,
        ``QuerySet.update()``, ``QuerySet.delete()``, raw SQL): re-read ``ids`` in one query
        (or take them from ``rows``) and publish them as ``created`` (clients replace a row
        they know when its version is newer), on commit of the current transaction. With
        ``old``, the rows as the app read them before the write, each is compared with its
        old self instead: ``updated`` with the changed fields, and a filter move ``deleted``
        on the old channel and ``created`` on the new. ``deleted=True`` publishes
        ``deleted``: call it before the delete in the same transaction (it reads the rows),
        or after with ``rows``, the rows as read before the delete (instances or mappings)."""
        specs = self._live_specs(model)
        if deleted and old is not None:
            raise ValueError("live_touch: old= compares saved rows; deleted=True takes rows=")
        _orm(model).touch(
            self,
            specs,
            list(ids),
            deleted,
            None if rows is None else list(rows),
            None if old is None else list(old),
        )

    def live_changes(
        self, model: type, ids: Iterable[Any], *, session: Any = None
    ) -> AbstractContextManager[None]:
        """``with rt.live_changes(Todo, ids): Todo.objects.filter(...).update(...)``: publish
        what the block's bulk write does to the rows ``ids``, filter moves included. The
        rows are read before the block (one ``SELECT ... FOR UPDATE``) and after it (one
        ``SELECT``); each is published as ``updated`` with the fields that changed, as
        ``deleted`` on its old channel and ``created`` on its new one when a filter changed,
        as ``deleted`` when it is gone, ``created`` when it is new; on commit of the current
        transaction. SQLAlchemy: in ``session``, by default the one whose transaction is
        open here (as for :meth:`live_touch`)."""
        return _orm(model).changes(self, self._live_specs(model), list(ids), session)

    def _live_specs(self, model: type) -> list[LiveSpec]:
        specs = self.live_models.specs_for(model)
        if not specs:
            raise ValueError(f"{model.__name__} is not a live model: declare it with @rt.live")
        return specs

    def live_sqlalchemy(self, session: Any) -> None:
        """Publish the live SQLAlchemy models' changes made through ``session`` (a
        ``sessionmaker``, a ``Session`` class or instance) when it commits."""
        # live-sqlalchemy's module; imported when used, like SQLAlchemy itself.
        importlib.import_module("tidings.live.sqlalchemy").connect(self, session)

    # -- the bridge to the home loop -------------------------------------------------------

    def _on_home(
        self, operation: Callable[[Backend], Awaitable[T]]
    ) -> Callable[[], Coroutine[Any, Any, T]]:
        """A coroutine function running ``operation`` once the backend is ready."""

        async def run() -> T:
            backend = self._home.ready() or await self._home.backend()
            return await operation(backend)

        return run

    async def _call(self, operation: Callable[[Backend], Awaitable[T]]) -> T:
        """Await ``operation`` on the home loop, from whatever loop is running."""
        loop = self._home.loop()
        if self._home.here(loop):
            backend = self._home.ready()
            if backend is not None:
                return await operation(backend)
            return await self._on_home(operation)()
        return await self._bridge_to(loop).call(self._on_home(operation)())

    def _bridge_to(self, loop: asyncio.AbstractEventLoop) -> LoopBridge:
        bridge = self._bridge
        if bridge is None or bridge.home is not loop:
            bridge = self._bridge = LoopBridge(loop)
        return bridge

    def _sync(self, operation: Callable[[Backend], Awaitable[T]]) -> T:
        """Run ``operation`` on the home loop and wait for it, from a thread that is not it."""
        loop = self._home.loop()
        if self._home.here(loop):
            raise RuntimeError(
                "a plain Realtime method was called on the event loop it runs on, where it "
                "would wait for itself: use the async form, e.g. `await rt.atrigger(...)`"
            )
        future = asyncio.run_coroutine_threadsafe(self._on_home(operation)(), loop)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {self.timeout:g} s") from None


def _credentials(url: str, app_id: str | None, key: str | None, secret: str | None) -> App | None:
    """What a publish-only client's auth helpers sign with: ``key`` and ``secret``, or those
    of an ``http(s)://key:secret@…`` URL (a Redis URL's user info is Redis's own)."""
    from urllib.parse import unquote, urlsplit

    from tidings.core.apps import App

    parts = urlsplit(url)
    if parts.scheme.lower() in ("http", "https"):
        key = key or (unquote(parts.username) if parts.username else None)
        secret = secret or (unquote(parts.password) if parts.password else None)
    if not key or not secret:
        return None
    return App(app_id or "", key, secret)


async def _done() -> None:
    """Nothing more than getting the backend ready (``start`` of a publish-only client)."""


def _occupied(channels: tuple[str, ...]) -> Callable[[Backend], Awaitable[set[str]]]:
    return lambda backend: backend.occupied(channels)


def _orm(model: type) -> Shell:
    """The ORM shell of a live model's class: Django's or SQLAlchemy's."""
    from tidings.live.orm import shell_for

    return shell_for(model)


def _live_rule(handler: Any, filter_name: str | None) -> Callable[..., Any]:
    """The ``@authorize`` rule of one live channel pattern: ``handler.authorize(user,
    **{filter: value})``, its result (a coroutine for an async one) passed through."""
    if filter_name is None:

        def rule(user: object) -> Any:
            return handler.authorize(user)

        return rule

    def filtered(user: object, value: str) -> Any:
        return handler.authorize(user, **{filter_name: value})

    return filtered


def _trigger(event: Event) -> Callable[[Backend], Awaitable[dict[str, Any]]]:
    return lambda backend: backend.trigger(event)


def _encode(data: Any) -> str:
    """A ``str`` as is; anything else JSON-encoded once, as the pusher SDKs do."""
    if isinstance(data, str):
        return data
    try:
        return orjson.dumps(data).decode()
    except TypeError as exc:
        raise TypeError(f"event data must be a str or JSON-serialisable: {exc}") from None


def _text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    """Channel names or info attributes: one ``str`` (comma-separated for info) or several."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    names = tuple(value)
    for name in names:
        _text("each name", name)
    return names


def _event(
    channels: str | Sequence[str],
    name: str,
    data: Any,
    socket_id: str | None,
    info: str | Sequence[str],
) -> Event:
    targets = (channels,) if isinstance(channels, str) else _names(channels)
    if socket_id is not None:
        _text("socket_id", socket_id)
    return Event(targets, _text("event", name), _encode(data), socket_id, _names(info))


def _batch(batch: Sequence[Mapping[str, Any]]) -> list[Event]:
    events = []
    for index, entry in enumerate(batch):
        if not isinstance(entry, Mapping):
            raise TypeError(f"batch entry {index} must be a dict, not {type(entry).__name__}")
        missing = {"channel", "name", "data"} - entry.keys()
        unknown = entry.keys() - BATCH_KEYS
        if missing or unknown:
            problem = f"lacks {sorted(missing)}" if missing else f"has unknown {sorted(unknown)}"
            raise ValueError(f"batch entry {index} {problem}")
        channel = _text("channel", entry["channel"])
        events.append(
            _event(
                channel, entry["name"], entry["data"], entry.get("socket_id"), entry.get("info", ())
            )
        )
    return events


def _on_django_commit(publish: Callable[[], object]) -> None:
    """Run ``publish`` when Django's current transaction commits (at once outside one).

    ``robust=True``: the commit has happened whatever the publish does, so a refused
    publish (a 429, the cluster down) is logged by Django and does not stop the other
    on-commit callbacks of the transaction, nor raise out of the code that committed."""
    try:
        django_settings = importlib.import_module("django.conf").settings
        transaction = importlib.import_module("django.db.transaction")
    except ImportError:
        raise RuntimeError("on_commit=True needs Django: pip install 'tidings[django]'") from None
    if not django_settings.configured:
        raise RuntimeError(
            "on_commit=True needs Django's settings: set DJANGO_SETTINGS_MODULE or call "
            "settings.configure() first"
        )
    transaction.on_commit(publish, robust=True)
