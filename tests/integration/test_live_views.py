"""The write views of docs/live.md ("Writes go through normal views"), Flask and FastAPI,
run as written against a live SQLAlchemy model on SQLite: each create, update and delete
reaches the other pages, and never the page that sent it (its ``X-Socket-ID``).

The snippets are fragments (they need the model, the session factory and ``current_user``),
so test_doc_snippets.py only compiles them; here they are executed with those given. The
views commit in worker threads (Flask's test client runs in one; FastAPI runs sync views in
its own) and publish through the embedded Realtime, which serves real WebSocket clients on
this loop.

Standalone, the same Flask app runs on a real WSGI server and publishes through
``Realtime.client`` to a real ``tidings serve``, whose ``live_snapshot_url`` is the
blueprint's signed ``POST /pusher/live-snapshot``: the snapshot comes from the app's
database, and what commits while it is being read arrives after it.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from embedded_node import embedded_realtime, serving
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    TIMEOUT,
    PusherSocket,
    SocketOpener,
    channel_auth,
    raw_connect,
    ws_app_url,
)
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from werkzeug.serving import make_server as make_wsgi_server

from server_process import ServerProcess
from tidings import Realtime

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

DOC = Path(__file__).resolve().parents[2] / "docs" / "live.md"
CHANNEL = "private-live.todo.list_id.1"
FENCES = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


class Base(DeclarativeBase):
    pass


class Todo(Base):
    __tablename__ = "view_todo"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    done: Mapped[bool] = mapped_column(default=False)
    list_id: Mapped[int]
    version: Mapped[int] = mapped_column(default=0)


def snippet(starts: str) -> str:
    """The docs' Python block that begins with ``starts`` (exactly one)."""
    blocks: list[str] = FENCES.findall(DOC.read_text())
    found = [code for code in blocks if code.startswith(starts)]
    assert len(found) == 1, f"docs/live.md has {len(found)} blocks starting {starts!r}"
    return found[0]


def current_user() -> str:
    return "ann"


@dataclass
class Views:
    """One framework's doc views, driven over HTTP; ``socket_id`` becomes X-Socket-ID."""

    create: Callable[[str, str | None], Awaitable[int]]
    update: Callable[[int, bool, str | None], Awaitable[int]]
    delete: Callable[[int, str | None], Awaitable[int]]


def headers(socket_id: str | None) -> dict[str, str]:
    return {} if socket_id is None else {"X-Socket-ID": socket_id}


async def flask_views(namespace: dict[str, Any]) -> Views:
    """Flask's test client, in a worker thread (the views commit there)."""
    exec(compile(snippet("from flask import"), str(DOC), "exec"), namespace)
    client = namespace["app"].test_client()

    def post(path: str, socket_id: str | None, **form: str) -> Any:
        return asyncio.to_thread(client.post, path, data=form, headers=headers(socket_id))

    async def create(title: str, socket_id: str | None) -> int:
        answer = await post("/lists/1/todos", socket_id, title=title)
        assert answer.status_code == 201, answer.get_data(as_text=True)
        created: int = answer.get_json()["id"]
        return created

    async def update(todo_id: int, done: bool, socket_id: str | None) -> int:
        answer = await post(f"/todos/{todo_id}", socket_id, done="true" if done else "false")
        status: int = answer.status_code
        return status

    async def delete(todo_id: int, socket_id: str | None) -> int:
        status: int = (await post(f"/todos/{todo_id}/delete", socket_id)).status_code
        return status

    # The view's own validation: a 400, and nothing written or published.
    assert (await post("/lists/1/todos", None, title=" ")).status_code == 400
    return Views(create, update, delete)


async def fastapi_views(namespace: dict[str, Any]) -> Views:
    """httpx over ASGI on this loop; FastAPI runs the sync views in its worker threads."""
    exec(compile(snippet("from fastapi import"), str(DOC), "exec"), namespace)
    transport = httpx.ASGITransport(app=namespace["app"])
    client = httpx.AsyncClient(transport=transport, base_url="http://app.test")
    namespace["client"] = client  # closed by the test

    async def create(title: str, socket_id: str | None) -> int:
        answer = await client.post(
            "/lists/1/todos", json={"title": title}, headers=headers(socket_id)
        )
        assert answer.status_code == 201, answer.text
        created: int = answer.json()["id"]
        return created

    async def update(todo_id: int, done: bool, socket_id: str | None) -> int:
        path = f"/todos/{todo_id}"
        return (
            await client.patch(path, json={"done": done}, headers=headers(socket_id))
        ).status_code

    async def delete(todo_id: int, socket_id: str | None) -> int:
        return (await client.delete(f"/todos/{todo_id}", headers=headers(socket_id))).status_code

    assert (await client.post("/lists/1/todos", json={})).status_code == 422
    return Views(create, update, delete)


FRAMEWORKS = {"flask": flask_views, "fastapi": fastapi_views}


@dataclass
class Site:
    rt: Realtime
    ws_url: str
    factory: sessionmaker[Session]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    engine = create_engine(f"sqlite:///{tmp_path / 'views.db'}")
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    rt = embedded_realtime()
    rt.live_sqlalchemy(factory)

    @rt.live(Todo, fields=["id", "title", "done", "list_id", "version"], filters=["list_id"])
    class TodoLive:
        def authorize(self, user: object, list_id: str) -> bool:
            return True

        def snapshot(self, list_id: str) -> list[Todo]:
            with factory() as session:
                query = select(Todo).where(Todo.list_id == int(list_id)).order_by(Todo.id)
                return list(session.scalars(query))

    async with serving(rt) as ws_url:
        try:
            yield Site(rt, ws_url, factory)
        finally:
            engine.dispose()


async def watcher(open_socket: SocketOpener, ws_url: str) -> PusherSocket:
    client = await open_socket(ws_url)
    await client.subscribe_private(CHANNEL)
    snapshot = await client.expect("tidings:snapshot", CHANNEL)
    assert json.loads(snapshot["data"]) == {"rows": [], "version": 0}
    return client


async def event(client: PusherSocket) -> tuple[str, dict[str, Any]]:
    message = await client.recv()
    assert message["channel"] == CHANNEL, message
    return message["event"], json.loads(message["data"])


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
async def test_the_doc_views_publish_to_everyone_but_the_sender(
    framework: str, site: Site, open_socket: SocketOpener
) -> None:
    sender = await watcher(open_socket, site.ws_url)
    other = await watcher(open_socket, site.ws_url)
    namespace: dict[str, Any] = {
        "__name__": f"docs_{framework}_views",
        "rt": site.rt,
        "Session": site.factory,
    }
    namespace |= {"Todo": Todo, "current_user": current_user}
    views = await FRAMEWORKS[framework](namespace)
    try:
        await exchange(views, sender, other, sender.socket_id)
    finally:
        if "client" in namespace:
            await namespace["client"].aclose()
    with site.factory() as session:
        assert session.scalars(select(Todo.title)).all() == ["marker"]


async def exchange(views: Views, sender: PusherSocket, other: PusherSocket, mine: str) -> None:

    todo_id = await views.create("Tea", mine)
    assert await event(other) == (
        "created",
        {"id": todo_id, "title": "Tea", "done": False, "list_id": 1, "version": 1},
    )
    assert await views.update(todo_id, True, mine) == 200
    assert await event(other) == ("updated", {"id": todo_id, "version": 2, "done": True})
    assert await views.delete(todo_id, mine) == 204
    assert await event(other) == ("deleted", {"id": todo_id, "version": 3})
    assert await views.delete(todo_id, mine) == 404

    # A write without the header reaches both: the sender's first event is this one, so
    # none of the three above reached it.
    marker = await views.create("marker", None)
    assert (await event(sender))[1]["id"] == marker
    assert (await event(other))[1]["id"] == marker


# -- standalone: `tidings serve` asks the Flask app's signed snapshot route ------------------


@dataclass
class Standalone:
    server: ServerProcess
    rt: Realtime
    views: Views
    gate: threading.Event  # the snapshot waits for it after reading its rows
    reading: threading.Event  # set when a snapshot has read its rows


@pytest.fixture
async def standalone(
    tmp_path: Path, make_server: Callable[..., ServerProcess]
) -> AsyncIterator[Standalone]:
    """The docs' Flask app (its blueprint serves ``POST /pusher/live-snapshot``) on a real
    WSGI server, publishing through ``Realtime.client`` to a real ``tidings serve`` whose
    app's ``live_snapshot_url`` is that route."""
    engine = create_engine(f"sqlite:///{tmp_path / 'standalone.db'}")
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    wsgi: dict[str, Any] = {}
    http = make_wsgi_server(
        "127.0.0.1", 0, lambda env, start: wsgi["app"](env, start), threaded=True
    )
    url = f"http://127.0.0.1:{http.server_port}/pusher/live-snapshot"
    app = {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET, "live_snapshot_url": url}
    server = await asyncio.to_thread(make_server, apps=[app])
    host = server.http_url.removeprefix("http://")
    rt = Realtime.client(f"http://{APP_KEY}:{APP_SECRET}@{host}/apps/{APP_ID}")
    rt.live_sqlalchemy(factory)
    gate, reading = threading.Event(), threading.Event()
    gate.set()

    @rt.live(Todo, fields=["id", "title", "done", "list_id", "version"], filters=["list_id"])
    class TodoLive:
        def authorize(self, user: object, list_id: str) -> bool:
            return True

        def snapshot(self, list_id: str) -> list[Todo]:
            with factory() as session:
                query = select(Todo).where(Todo.list_id == int(list_id)).order_by(Todo.id)
                rows = list(session.scalars(query))
            reading.set()
            assert gate.wait(4 * TIMEOUT)
            return rows

    namespace: dict[str, Any] = {"__name__": "docs_flask_standalone", "rt": rt}
    namespace |= {"Session": factory, "Todo": Todo, "current_user": current_user}
    views = await flask_views(namespace)
    wsgi["app"] = namespace["app"]
    serving_thread = threading.Thread(target=http.serve_forever, daemon=True)
    serving_thread.start()
    try:
        yield Standalone(server, rt, views, gate, reading)
    finally:
        gate.set()
        http.shutdown()
        serving_thread.join(TIMEOUT)
        rt.close()
        engine.dispose()


async def live_socket(server: ServerProcess, stack: AsyncExitStack) -> PusherSocket:
    ws = await stack.enter_async_context(await raw_connect(ws_app_url(server.ws_url)))
    client = PusherSocket(ws)
    await client.handshake()
    auth = channel_auth(client.socket_id, CHANNEL)
    await client.send_event("pusher:subscribe", {"channel": CHANNEL, "auth": auth})
    await client.expect("pusher_internal:subscription_succeeded", CHANNEL)
    return client


async def test_standalone_snapshot_from_the_flask_route_then_held_and_live_events(
    standalone: Standalone,
) -> None:
    views = standalone.views
    first_id = await views.create("first", None)  # nobody watches yet
    await asyncio.to_thread(standalone.rt.live_models.wait)  # published before anyone looks
    async with AsyncExitStack() as stack:
        sender = await live_socket(standalone.server, stack)
        snapshot = json.loads((await sender.expect("tidings:snapshot", CHANNEL))["data"])
        assert snapshot == {
            "rows": [{"id": first_id, "title": "first", "done": False, "list_id": 1, "version": 1}],
            "version": 1,
        }
        # A second page subscribes; its snapshot has read the table and is not sent yet when
        # the sender's write commits: the write reaches it after the snapshot, held till then.
        standalone.reading.clear()
        standalone.gate.clear()
        other = await live_socket(standalone.server, stack)
        assert await asyncio.to_thread(standalone.reading.wait, 4 * TIMEOUT)
        held_id = await views.create("held", sender.socket_id)
        assert await views.update(first_id, True, sender.socket_id) == 200
        await asyncio.to_thread(standalone.rt.live_models.wait)  # at tidings serve now
        standalone.gate.set()
        snapshot = json.loads((await other.expect("tidings:snapshot", CHANNEL))["data"])
        assert [row["title"] for row in snapshot["rows"]] == ["first"]
        assert await event(other) == (
            "created",
            {"id": held_id, "title": "held", "done": False, "list_id": 1, "version": 1},
        )
        assert await event(other) == ("updated", {"id": first_id, "version": 2, "done": True})
        # The sender got neither (X-Socket-ID went to tidings serve as the trigger's socket_id).
        marker = await views.create("marker", None)
        assert (await event(sender))[1]["id"] == marker
        assert (await event(other))[1]["id"] == marker
