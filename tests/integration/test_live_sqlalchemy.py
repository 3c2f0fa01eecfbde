"""Live SQLAlchemy models, end to end: ORM sessions on a real database (SQLite in a file,
and PostgreSQL) commit, and real WebSocket clients of an embedded Realtime receive the
events.

The sessions run in a worker thread (``asyncio.to_thread``): a sync ``after_commit``
publishes through the Realtime's blocking methods, which refuse to run on its own loop.
A quiet channel is shown by a marker row committed after the step that must send nothing:
the next event a client reads is the marker's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from embedded_node import embedded_realtime, serving
from pusher_helpers import TIMEOUT, PusherSocket, SocketOpener
from sqlalchemy import (
    Engine,
    String,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    scoped_session,
    sessionmaker,
)

from postgres_server import PostgresServer
from tidings import Realtime
from tidings.backends import Event
from tidings.live import LiveSpec, Publication, current_socket_id
from tidings.live import sqlalchemy as live_sqlalchemy

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

T = TypeVar("T")
PREFIX = "private-live."


class Base(DeclarativeBase):
    pass


class Todo(Base):
    __tablename__ = "todo"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(2000))
    done: Mapped[bool] = mapped_column(default=False)
    list_id: Mapped[int]
    notes: Mapped[str] = mapped_column(default="")  # not declared: never published
    version: Mapped[int] = mapped_column(default=0)


FIELDS = ["id", "title", "done", "list_id", "version"]
MAX_PAYLOAD = 200


def channel(list_id: int) -> str:
    return f"{PREFIX}todo.list_id.{list_id}"


@dataclass
class Live:
    """A Realtime with the Todo model live on a database, and what its publisher did."""

    rt: Realtime
    ws_url: str
    engine: Engine
    factory: sessionmaker[Session]
    occupied_calls: list[list[str]] = field(default_factory=list)
    sent: list[list[Event]] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)

    async def run(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` in a worker thread, with a session of the live factory."""

        def in_thread() -> T:
            with self.factory() as session:
                return work(session)

        return await asyncio.to_thread(in_thread)

    async def subscribe(self, open_socket: SocketOpener, *list_ids: int) -> PusherSocket:
        """A client subscribed to these lists, each snapshot read (and empty)."""
        sock = await open_socket(self.ws_url)
        for list_id in list_ids:
            await sock.subscribe_private(channel(list_id))
            assert await event_data(sock, "tidings:snapshot", list_id) == {
                "rows": [],
                "version": 0,
            }
        return sock

    async def marker(self, list_id: int) -> int:
        """Commit a row on ``list_id``'s channel; its id (the next event there is its)."""

        def add(session: Session) -> int:
            row = Todo(title="marker", list_id=list_id)
            session.add(row)
            session.commit()
            return row.id

        return await self.run(add)


async def event_data(sock: PusherSocket, name: str, list_id: int) -> dict[str, Any]:
    message = await sock.expect(name, channel(list_id))
    data: dict[str, Any] = json.loads(message["data"])
    return data


def declare(rt: Realtime, factory: Callable[[], Any], **options: Any) -> None:
    """Todo live on ``rt``: one channel per list; its snapshot read with ``factory``."""

    @rt.live(Todo, fields=FIELDS, filters=["list_id"], **options)
    class TodoLive:
        def authorize(self, user: object, list_id: str) -> bool:
            return True

        def snapshot(self, list_id: str) -> list[Todo]:
            with factory() as session:
                query = select(Todo).where(Todo.list_id == int(list_id)).order_by(Todo.id)
                return list(session.scalars(query))


def database_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'live.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create_database()
    try:
        yield server.sqlalchemy_url(name)
    finally:
        server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def live(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Live]:
    urls = database_url(request.param, tmp_path, request)
    engine = create_engine(next(urls))
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    rt = embedded_realtime()
    declare(rt, factory, max_payload=MAX_PAYLOAD)
    rt.live_sqlalchemy(factory)
    async with serving(rt) as ws_url:
        state = Live(rt, ws_url, engine, factory)
        # Watch what the live layer asks of the Realtime (the calls still go through).
        occupied, trigger_many = rt.aoccupied, rt._atrigger_many

        async def watch_occupied(channels: Sequence[str]) -> set[str]:
            state.occupied_calls.append(list(channels))
            return await occupied(channels)

        async def watch_trigger_many(events: Sequence[Event]) -> None:
            state.sent.append(list(events))
            await trigger_many(events)

        monkeypatch.setattr(rt, "aoccupied", watch_occupied)
        monkeypatch.setattr(rt, "_atrigger_many", watch_trigger_many)

        @event.listens_for(engine, "before_cursor_execute")
        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            state.statements.append(statement)

        try:
            yield state
        finally:
            engine.dispose()
            for _ in urls:  # drops the PostgreSQL database
                pass


async def test_create_update_delete_send_their_events(
    live: Live, open_socket: SocketOpener
) -> None:
    sock = await live.subscribe(open_socket, 1)

    def create(session: Session) -> int:
        row = Todo(title="milk", list_id=1, notes="2 l")
        session.add(row)
        session.commit()
        return row.id

    todo_id = await live.run(create)
    assert await event_data(sock, "created", 1) == {
        "id": todo_id,
        "title": "milk",
        "done": False,
        "list_id": 1,
        "version": 1,
    }

    def tick(session: Session) -> None:
        row = session.get(Todo, todo_id)
        assert row is not None
        row.done = True
        row.title = "milk"  # the same value: not a change
        session.commit()

    await live.run(tick)
    assert await event_data(sock, "updated", 1) == {"id": todo_id, "version": 2, "done": True}

    def remove(session: Session) -> None:
        session.delete(session.get(Todo, todo_id))
        session.commit()

    await live.run(remove)
    assert await event_data(sock, "deleted", 1) == {"id": todo_id, "version": 3}

    def read(session: Session) -> list[Any]:
        return list(session.scalars(select(Todo)))

    assert await live.run(read) == []


async def test_snapshot_rows_are_the_declared_fields(live: Live, open_socket: SocketOpener) -> None:
    first, second = await live.marker(7), await live.marker(7)
    sock = await open_socket(live.ws_url)
    await sock.subscribe_private(channel(7))
    snapshot = await event_data(sock, "tidings:snapshot", 7)
    row = {"title": "marker", "done": False, "list_id": 7, "version": 1}
    assert snapshot == {"rows": [{"id": first, **row}, {"id": second, **row}], "version": 1}


async def test_the_sender_is_excluded(live: Live, open_socket: SocketOpener) -> None:
    sender = await live.subscribe(open_socket, 1)
    other = await live.subscribe(open_socket, 1)

    def as_sender(session: Session) -> int:
        # What the framework integrations do with the request's X-Socket-ID header.
        token = current_socket_id.set(sender.socket_id)
        try:
            row = Todo(title="mine", list_id=1)
            session.add(row)
            session.commit()
            return row.id
        finally:
            current_socket_id.reset(token)

    todo_id = await live.run(as_sender)
    assert (await event_data(other, "created", 1))["id"] == todo_id
    marker = await live.marker(1)
    assert (await event_data(sender, "created", 1))["id"] == marker


async def test_undeclared_field_change_sends_nothing_and_app_version_wins(
    live: Live, open_socket: SocketOpener
) -> None:
    sock = await live.subscribe(open_socket, 1)
    todo_id = await live.marker(1)
    await event_data(sock, "created", 1)

    def notes_only(session: Session) -> None:
        row = session.get(Todo, todo_id)
        assert row is not None
        row.notes = "not published"
        session.commit()

    await live.run(notes_only)

    def with_version(session: Session) -> None:
        row = session.get(Todo, todo_id)
        assert row is not None
        assert row.version == 2  # bumped by the notes-only save, which sent nothing
        row.title = "renamed"
        row.version = 10
        session.commit()

    await live.run(with_version)
    assert await event_data(sock, "updated", 1) == {
        "id": todo_id,
        "version": 10,
        "title": "renamed",
    }


async def test_rollback_sends_nothing(live: Live, open_socket: SocketOpener) -> None:
    sock = await live.subscribe(open_socket, 1)

    def rolled_back(session: Session) -> None:
        session.add(Todo(title="never", list_id=1))
        session.flush()  # the INSERT ran, then the transaction goes away
        session.rollback()

    await live.run(rolled_back)
    marker = await live.marker(1)
    assert (await event_data(sock, "created", 1))["id"] == marker
    assert live.occupied_calls == [[channel(1)]]  # one commit, one question


async def test_savepoint_rollback_drops_only_its_own_changes(
    live: Live, open_socket: SocketOpener
) -> None:
    sock = await live.subscribe(open_socket, 1)

    def nested(session: Session) -> tuple[int, int]:
        kept = Todo(title="outer", list_id=1)
        session.add(kept)
        session.flush()
        savepoint = session.begin_nested()
        session.add(Todo(title="dropped", list_id=1))
        kept.title = "outer, renamed in the dropped savepoint"
        session.flush()
        savepoint.rollback()
        with session.begin_nested():
            released = Todo(title="released", list_id=1)
            session.add(released)
        session.commit()
        return kept.id, released.id

    kept_id, released_id = await live.run(nested)
    first = await event_data(sock, "created", 1)
    second = await event_data(sock, "created", 1)
    assert (first["id"], first["title"]) == (kept_id, "outer")
    assert (second["id"], second["title"]) == (released_id, "released")
    marker = await live.marker(1)
    assert (await event_data(sock, "created", 1))["id"] == marker


async def test_filter_move_uses_history_without_a_query(
    live: Live, open_socket: SocketOpener
) -> None:
    old_list = await live.subscribe(open_socket, 1)
    new_list = await live.subscribe(open_socket, 2)
    todo_id = await live.marker(1)
    await event_data(old_list, "created", 1)

    def move(session: Session) -> list[str]:
        row = session.get(Todo, todo_id)
        assert row is not None
        live.statements.clear()
        row.list_id = 2
        session.commit()
        return list(live.statements)

    statements = await live.run(move)
    assert [s.split()[0] for s in statements] == ["UPDATE"], statements
    assert await event_data(old_list, "deleted", 1) == {"id": todo_id, "version": 2}
    assert await event_data(new_list, "created", 2) == {
        "id": todo_id,
        "title": "marker",
        "done": False,
        "list_id": 2,
        "version": 2,
    }


async def test_filter_set_while_expired_still_reaches_the_old_channel(
    live: Live, open_socket: SocketOpener
) -> None:
    old_list = await live.subscribe(open_socket, 1)
    new_list = await live.subscribe(open_socket, 3)

    def create_then_move(session: Session) -> tuple[int, list[str]]:
        row = Todo(title="milk", list_id=1)
        session.add(row)
        session.commit()  # expires the row
        live.statements.clear()
        row.list_id = 3  # active history: the row is refreshed here, the old value kept
        session.commit()
        statements = list(live.statements)
        return row.id, statements

    todo_id, statements = await live.run(create_then_move)
    assert [s.split()[0] for s in statements] == ["SELECT", "UPDATE"], statements
    await event_data(old_list, "created", 1)
    assert await event_data(old_list, "deleted", 1) == {"id": todo_id, "version": 2}
    created = await event_data(new_list, "created", 3)
    assert (created["id"], created["list_id"], created["version"]) == (todo_id, 3, 2)


class Note(Base):
    """Published through listen() alone: no active history on its attributes."""

    __tablename__ = "note"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]
    folder: Mapped[int]
    version: Mapped[int] = mapped_column(default=0)


def test_unknown_old_filter_goes_to_the_new_channel_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'notes.db'}")
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    spec = LiveSpec.declare(
        Note, None, fields=["id", "text", "folder", "version"], filters=["folder"]
    )
    published: list[Publication] = []
    live_sqlalchemy.listen(factory, lambda model: [spec] if model is Note else [], published.extend)
    try:
        with factory() as session:
            note = Note(text="a", folder=1)
            session.add(note)
            session.commit()
            note.folder = 2  # set while expired, with no active history: old value unknown
            note.text = "b"
            with caplog.at_level(logging.WARNING, logger="tidings.live"):
                session.commit()
    finally:
        engine.dispose()
    moved = published[1:]
    assert [(p.action, p.channels, p.version) for p in moved] == [
        ("created", [f"{PREFIX}note.folder.2"], 2)
    ]
    assert any("set while expired" in r.getMessage() for r in caplog.records)


async def test_bulk_update_and_delete_are_seen_with_two_queries(
    live: Live, open_socket: SocketOpener
) -> None:
    old_list = await live.subscribe(open_socket, 1)
    new_list = await live.subscribe(open_socket, 2)

    def bulk_insert(session: Session) -> list[int]:
        # An ORM bulk INSERT goes around the unit of work: touch() publishes its rows.
        found = session.execute(
            insert(Todo).returning(Todo.id), [{"title": f"t{n}", "list_id": 1} for n in range(3)]
        )
        ids = sorted(found.scalars())
        live.rt.live_touch(Todo, ids)
        session.commit()
        return ids

    ids = await live.run(bulk_insert)
    for todo_id in ids:
        created = await event_data(old_list, "created", 1)
        assert (created["id"], created["version"]) == (todo_id, 0)

    def bulk_update(session: Session) -> list[str]:
        live.statements.clear()
        session.execute(update(Todo).where(Todo.id.in_(ids)).values(done=True))
        session.execute(update(Todo).where(Todo.id == ids[2]).values(list_id=2))
        session.commit()
        return list(live.statements)

    statements = await live.run(bulk_update)
    assert [s.split()[0] for s in statements] == ["SELECT", "UPDATE", "SELECT"] * 2
    for todo_id in ids[:2]:
        assert await event_data(old_list, "updated", 1) == {
            "id": todo_id,
            "version": 1,
            "done": True,
        }
    # Both statements changed the third row in one commit: one move, at its last version.
    assert await event_data(old_list, "deleted", 1) == {"id": ids[2], "version": 2}
    assert await event_data(new_list, "created", 2) == {
        "id": ids[2],
        "title": "t2",
        "done": True,
        "list_id": 2,
        "version": 2,
    }

    def bulk_delete(session: Session) -> None:
        session.execute(delete(Todo).where(Todo.list_id == 1))
        session.commit()

    await live.run(bulk_delete)
    assert await event_data(old_list, "deleted", 1) == {"id": ids[0], "version": 2}
    assert await event_data(old_list, "deleted", 1) == {"id": ids[1], "version": 2}

    def bulk_rolled_back(session: Session) -> None:
        session.execute(update(Todo).values(title="never"))
        session.rollback()

    await live.run(bulk_rolled_back)
    marker = await live.marker(2)
    assert (await event_data(new_list, "created", 2))["id"] == marker


DOC = Path(__file__).resolve().parents[2] / "docs" / "live-sqlalchemy.md"


def doc_block(starts: str) -> str:
    """The Python block of docs/live-sqlalchemy.md that begins with ``starts`` (one)."""
    blocks: list[str] = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.S | re.M)
    found = [code for code in blocks if code.startswith(starts)]
    assert len(found) == 1, f"{DOC.name} has {len(found)} blocks starting {starts!r}"
    return found[0]


async def test_the_doc_bulk_blocks_publish_as_the_docs_say(
    live: Live, open_socket: SocketOpener
) -> None:
    # docs/live-sqlalchemy.md's three "Bulk statements" blocks, as written, in one order
    # that leaves each something to do.
    list1 = await live.subscribe(open_socket, 1)
    list2 = await live.subscribe(open_socket, 2)

    def block(starts: str) -> Callable[[Session], None]:
        code = doc_block(starts)

        def run(session: Session) -> None:
            names = {"session": session, "rt": live.rt, "Todo": Todo}
            exec(code, {**names, "insert": insert, "update": update, "delete": delete})

        return run

    await live.run(block("found = session.execute(insert(Todo)"))  # row 1, on list 1
    assert await event_data(list1, "created", 1) == {
        "id": 1,
        "title": "a",
        "done": False,
        "list_id": 1,
        "version": 0,
    }
    assert await live.marker(1) == 2
    assert (await event_data(list1, "created", 1))["id"] == 2
    await live.run(block("with rt.live_changes(Todo, [1, 2], session=session):"))
    assert await event_data(list1, "deleted", 1) == {"id": 1, "version": 5}
    assert await event_data(list2, "created", 2) == {
        "id": 1,
        "title": "a",
        "done": False,
        "list_id": 2,
        "version": 5,
    }
    assert await event_data(list1, "updated", 1) == {"id": 2, "version": 8, "done": True}
    # Row 2 (list 1) is done already: the UPDATE changes no declared field but the version,
    # which no page needs; the DELETE removes it.
    await live.run(block("session.execute(update(Todo).where(Todo.list_id == 1)"))
    assert await event_data(list1, "deleted", 1) == {"id": 2, "version": 10}
    marker = await live.marker(2)
    assert (await event_data(list2, "created", 2))["id"] == marker


async def made(live: Live, sock: PusherSocket, count: int) -> list[int]:
    """``count`` rows committed on list 1, their ``created`` events read."""
    ids = [await live.marker(1) for _ in range(count)]
    for todo_id in ids:
        assert (await event_data(sock, "created", 1))["id"] == todo_id
    return ids


async def test_live_changes_sees_an_update_by_primary_key_and_raw_sql(
    live: Live, open_socket: SocketOpener
) -> None:
    old_list = await live.subscribe(open_socket, 1)
    new_list = await live.subscribe(open_socket, 2)
    ids = await made(live, old_list, 3)

    def by_primary_key(session: Session) -> list[str]:
        live.statements.clear()
        with live.rt.live_changes(Todo, ids, session=session):
            # An ORM UPDATE by primary key from a list: no session event sees it.
            session.execute(
                update(Todo),
                [
                    {"id": ids[0], "list_id": 2, "version": 2},
                    {"id": ids[1], "done": True, "version": 2},
                ],
            )
        session.commit()
        return [s.split()[0] for s in live.statements]

    statements = await live.run(by_primary_key)
    # One read before, one after; the UPDATEs (one per set of keys) in between.
    reads = [n for n, s in enumerate(statements) if s == "SELECT"]
    assert reads == [0, len(statements) - 1] and "UPDATE" in statements, statements
    assert await event_data(old_list, "deleted", 1) == {"id": ids[0], "version": 2}
    assert await event_data(old_list, "updated", 1) == {"id": ids[1], "version": 2, "done": True}
    assert await event_data(new_list, "created", 2) == {
        "id": ids[0],
        "title": "marker",
        "done": False,
        "list_id": 2,
        "version": 2,
    }

    def raw_sql(session: Session) -> None:
        with session.begin():
            # Without session=: the session whose transaction is open here.
            with live.rt.live_changes(Todo, [ids[2], ids[0]]):
                session.execute(
                    text("UPDATE todo SET list_id = 2, version = version + 1 WHERE id = :id"),
                    {"id": ids[2]},
                )
                session.execute(text("DELETE FROM todo WHERE id = :id"), {"id": ids[0]})

    await live.run(raw_sql)
    # The rows still there first (by key), then those the block deleted.
    assert await event_data(old_list, "deleted", 1) == {"id": ids[2], "version": 2}
    moved = await event_data(new_list, "created", 2)
    assert (moved["id"], moved["list_id"], moved["version"]) == (ids[2], 2, 2)
    assert await event_data(new_list, "deleted", 2) == {"id": ids[0], "version": 3}


async def test_live_changes_sends_nothing_of_what_rolls_back(
    live: Live, open_socket: SocketOpener
) -> None:
    old_list = await live.subscribe(open_socket, 1)
    new_list = await live.subscribe(open_socket, 2)
    ids = await made(live, old_list, 3)
    bump = "UPDATE todo SET {}, version = version + 1 WHERE id = :id"

    def move(session: Session, todo_id: int, setting: str) -> None:
        with live.rt.live_changes(Todo, [todo_id], session=session):
            session.execute(text(bump.format(setting)), {"id": todo_id})

    def rolled_back(session: Session) -> list[int]:
        class Boom(Exception):
            pass

        with pytest.raises(Boom), session.begin():  # an exception leaves the block
            with live.rt.live_changes(Todo, [ids[0]]):
                session.execute(text(bump.format("list_id = 2")), {"id": ids[0]})
                raise Boom
        move(session, ids[0], "list_id = 2")  # a rollback after the block
        session.rollback()
        with session.begin():
            move(session, ids[1], "title = 'kept'")
            savepoint = session.begin_nested()  # a savepoint rolled back drops its block
            move(session, ids[2], "list_id = 2")
            savepoint.rollback()
            move(session, ids[0], "done = true")
        return list(session.scalars(select(Todo.list_id).order_by(Todo.id)))

    assert await live.run(rolled_back) == [1, 1, 1]
    assert await event_data(old_list, "updated", 1) == {
        "id": ids[1],
        "version": 2,
        "title": "kept",
    }
    assert await event_data(old_list, "updated", 1) == {"id": ids[0], "version": 2, "done": True}
    marker = await live.marker(2)
    assert (await event_data(new_list, "created", 2))["id"] == marker


async def test_live_touch_with_the_old_rows_compares_them(
    live: Live, open_socket: SocketOpener
) -> None:
    old_list = await live.subscribe(open_socket, 1)
    new_list = await live.subscribe(open_socket, 2)
    ids = await made(live, old_list, 2)

    def with_old(session: Session) -> list[str]:
        old = list(session.scalars(select(Todo).where(Todo.id.in_(ids)).order_by(Todo.id)))
        before = [{name: getattr(row, name) for name in FIELDS} for row in old]
        live.statements.clear()
        session.execute(
            update(Todo),
            [
                {"id": ids[0], "list_id": 2, "version": 2},
                {"id": ids[1], "title": "renamed", "version": 2},
            ],
        )
        live.rt.live_touch(Todo, ids, old=before)
        session.commit()
        return [s.split()[0] for s in live.statements]

    statements = await live.run(with_old)
    assert statements.count("SELECT") == 1  # the rows after: the old ones are given
    assert await event_data(old_list, "deleted", 1) == {"id": ids[0], "version": 2}
    assert await event_data(old_list, "updated", 1) == {
        "id": ids[1],
        "version": 2,
        "title": "renamed",
    }
    created = await event_data(new_list, "created", 2)
    assert (created["id"], created["list_id"], created["version"]) == (ids[0], 2, 2)

    def both_given(session: Session) -> None:
        session.execute(update(Todo), [{"id": ids[0], "list_id": 1, "version": 3}])
        live.rt.live_touch(
            Todo,
            ids[:1],
            old=[{"id": ids[0], "list_id": 2, "version": 2}],
            rows=[{"id": ids[0], "title": "marker", "list_id": 1, "version": 3}],
        )
        with pytest.raises(ValueError, match="old= compares saved rows"):
            live.rt.live_touch(Todo, ids, deleted=True, old=[])
        session.commit()

    await live.run(both_given)
    assert await event_data(new_list, "deleted", 2) == {"id": ids[0], "version": 3}
    assert await event_data(old_list, "created", 1) == {
        "id": ids[0],
        "title": "marker",
        "list_id": 1,
        "version": 3,
    }


async def test_payload_over_the_limit_is_stale(live: Live, open_socket: SocketOpener) -> None:
    sock = await live.subscribe(open_socket, 1)

    def big(session: Session) -> int:
        row = Todo(title="x" * (MAX_PAYLOAD * 2), list_id=1)
        session.add(row)
        session.commit()
        return row.id

    todo_id = await live.run(big)
    assert await event_data(sock, "created", 1) == {"id": todo_id, "version": 1, "stale": True}


async def test_unoccupied_channels_cost_one_question_and_no_serialization(
    live: Live, open_socket: SocketOpener, monkeypatch: pytest.MonkeyPatch
) -> None:
    serialized: list[Any] = []
    data = Publication.data

    def watch_data(publication: Publication) -> bytes:
        serialized.append(publication.key)
        return data(publication)

    monkeypatch.setattr(Publication, "data", watch_data)

    def many(session: Session) -> None:
        session.add_all(Todo(title=f"t{n}", list_id=n % 4) for n in range(20))
        session.commit()

    await live.run(many)
    assert live.occupied_calls == [[channel(n) for n in range(4)]]
    assert (live.sent, serialized) == ([], [])

    sock = await live.subscribe(open_socket, 5)
    marker = await live.marker(5)
    assert (await event_data(sock, "created", 5))["id"] == marker
    assert (len(live.sent), serialized) == (1, [marker])


async def test_async_session_on_postgresql(
    postgres: PostgresServer, open_socket: SocketOpener
) -> None:
    """An AsyncSession on the Realtime's own loop: its events run on the loop's thread, so
    the commit is published from the shell's worker thread (a blocking publish there would
    wait for the loop it blocks)."""
    name = postgres.create_database()
    url = postgres.sqlalchemy_url(name).replace("+psycopg:", "+psycopg_async:")
    engine = create_async_engine(url)
    factory = async_sessionmaker(engine, expire_on_commit=False)
    rt = embedded_realtime()
    sync_engine = create_engine(postgres.sqlalchemy_url(name))
    declare(rt, sessionmaker(sync_engine))  # the snapshot runs in a thread: a sync session
    rt.live_sqlalchemy(factory)
    try:
        async with serving(rt) as ws_url:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            sock = await open_socket(ws_url)
            for list_id in (1, 2):
                await sock.subscribe_private(channel(list_id))
                await event_data(sock, "tidings:snapshot", list_id)
            async with factory() as session:
                row = Todo(title="async", list_id=1)
                session.add(row)
                await session.commit()
                created = await event_data(sock, "created", 1)
                assert (created["id"], created["version"]) == (row.id, 1)
                row.list_id = 2
                row.done = True
                await session.commit()
            assert await event_data(sock, "deleted", 1) == {"id": row.id, "version": 2}
            moved = await event_data(sock, "created", 2)
            assert (moved["list_id"], moved["done"], moved["version"]) == (2, True, 2)

            async with factory() as session:
                # A bulk UPDATE is seen as in a sync session; a bulk INSERT is touched from
                # run_sync, where the session may query (touch re-reads the rows).
                await session.execute(update(Todo).where(Todo.id == row.id).values(done=False))
                found = await session.execute(
                    insert(Todo).returning(Todo.id), [{"title": "bulk", "list_id": 2}]
                )
                ids = list(found.scalars())
                await session.run_sync(lambda _: rt.live_touch(Todo, ids))
                await session.commit()
            assert await event_data(sock, "updated", 2) == {
                "id": row.id,
                "version": 3,
                "done": False,
            }
            bulk = await event_data(sock, "created", 2)
            assert (bulk["id"], bulk["title"]) == (ids[0], "bulk")
    finally:
        await engine.dispose()
        sync_engine.dispose()
        postgres.drop_database(name)


def test_every_kind_of_session_target_connects_once(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'targets.db'}")
    Base.metadata.create_all(engine)
    spec = LiveSpec.declare(Note, None, fields=["id", "text", "folder", "version"])
    published: list[Publication] = []

    def connect(target: Any) -> None:
        for _ in range(2):  # a second connect must not send twice
            live_sqlalchemy.listen(target, lambda m: [spec] if m is Note else [], published.extend)

    factory = sessionmaker(engine)
    scoped = scoped_session(sessionmaker(engine))
    one = Session(engine)
    connect(factory)
    connect(scoped)
    connect(one)
    try:
        for session in (factory(), scoped(), one):
            with session:
                session.add(Note(text="a", folder=1))
                session.commit()
        with Session(engine) as unconnected:
            unconnected.add(Note(text="b", folder=1))
            unconnected.commit()
    finally:
        scoped.remove()
        engine.dispose()
    assert [(p.action, p.fields["text"]) for p in published] == [("created", "a")] * 3
    with pytest.raises(TypeError, match="takes a sessionmaker"):
        live_sqlalchemy.listen(engine, lambda m: [], published.extend)
