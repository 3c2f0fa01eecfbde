"""The snapshot race: 50 clients subscribe to live channels while a burst of changes commits.

An embedded Realtime serves an SQLAlchemy live model on a real PostgreSQL (the ``postgres``
fixture). A writer thread commits 500 changes over about two seconds: creates, title
updates, deletes and filter moves (``list_id`` changes) spread over five lists. Meanwhile 50
raw Pusher clients subscribe, at random moments during the burst, to the channel of one list
each. Every client applies what it receives with the rule of the JS helper's
``liveCollection`` (``LiveCollection`` below: the snapshot replaces the collection, then any
event whose version is not newer than the one known for that id is dropped, deletes leave a
tombstone, an ``updated`` for an unknown id is ignored).

The app's ``snapshot()`` is slow on purpose (up to 0.1 s before and after its query), so
changes commit while it runs. When the burst has committed, every client's rows must equal
the database's rows of its list (every declared field), whatever moment it subscribed at: a
change committed after the snapshot's query would be lost without the node's hold (with the
held events dropped, this test fails). And the race must have happened: some changes
reached a client both in its snapshot and as a held event, which the version rule dropped.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from embedded_node import embedded_realtime, serving
from pusher_helpers import TIMEOUT, PusherSocket, channel_auth, open_sockets
from sqlalchemy import Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from postgres_server import PostgresServer

pytestmark = pytest.mark.timeout(16 * TIMEOUT)

LISTS = 5
CLIENTS = 50
CHANGES = 500
BURST_SECONDS = 2.0
SLOW_SNAPSHOT = 0.1  # seconds, at most, before and after the snapshot's query
FIELDS = ("id", "title", "list_id", "version")


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "race_item"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    list_id: Mapped[int] = mapped_column(Integer, index=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


def channel_of(list_id: int) -> str:
    return f"private-live.item.list_id.{list_id}"


class LiveCollection:
    """What liveCollection in src/tidings/static/tidings.js does with a channel's events."""

    def __init__(self, key: str = "id", version: str = "version") -> None:
        self.key = key
        self.version = version
        self.rows: dict[Any, dict[str, Any]] = {}  # snapshot order, then insertion order
        self.dead: dict[Any, int] = {}  # tombstones: the version of each deleted row
        self.snapshots = 0
        self.dropped = 0  # events the version rule dropped
        self.stale: list[Any] = []

    def known(self, row_id: Any) -> int | None:
        row = self.rows.get(row_id)
        return int(row[self.version]) if row is not None else self.dead.get(row_id)

    def apply(self, event: str, data: dict[str, Any]) -> None:
        if event == "tidings:snapshot":
            self.snapshot(data["rows"])
            return
        if event not in ("created", "updated", "deleted"):
            return
        row_id = data[self.key]
        have = self.known(row_id)
        if have is not None and not int(data[self.version]) > have:
            self.dropped += 1  # in the snapshot already, a duplicate, or overtaken
            return
        if event == "deleted":
            self.rows.pop(row_id, None)
            self.dead[row_id] = int(data[self.version])
            return
        if event == "updated" and row_id not in self.rows:
            return  # nothing to patch
        if data.get("stale") is True:
            self.stale.append(row_id)
            return
        base = self.rows[row_id] if event == "updated" else {}
        self.dead.pop(row_id, None)
        self.rows[row_id] = {**base, **data}

    def snapshot(self, rows: list[dict[str, Any]]) -> None:
        """Replaces the rows; one held in a newer version (or deleted since) keeps that."""
        self.snapshots += 1
        fresh_rows: dict[Any, dict[str, Any]] = {}
        for fresh in rows:
            row_id = fresh[self.key]
            have = self.known(row_id)
            if have is not None and have > int(fresh[self.version]):
                if row_id in self.rows:
                    fresh_rows[row_id] = self.rows[row_id]
            else:
                self.dead.pop(row_id, None)
                fresh_rows[row_id] = dict(fresh)
        self.rows = fresh_rows


class Client:
    """One socket on one list's channel, reading and applying until closed."""

    def __init__(self, sock: PusherSocket, list_id: int) -> None:
        self.sock = sock
        self.list_id = list_id
        self.channel = channel_of(list_id)
        self.collection = LiveCollection()
        self.errors: list[dict[str, Any]] = []
        self.first_event: str | None = None

    async def run(self) -> None:
        await self.sock.send_subscribe(
            self.channel, channel_auth(self.sock.socket_id, self.channel)
        )
        while True:
            message = await self.sock.recv(timeout=24 * TIMEOUT)
            event = message.get("event")
            if event == "pusher:subscription_error":
                self.errors.append(message)
                return
            if message.get("channel") != self.channel or event == "pusher:ping":
                continue
            if event == "pusher_internal:subscription_succeeded":
                continue
            if self.first_event is None:
                self.first_event = event
            self.collection.apply(event, json.loads(message["data"]))


def database_rows(url: str) -> dict[int, dict[int, dict[str, Any]]]:
    """list_id -> id -> row, read straight from PostgreSQL."""
    out: dict[int, dict[int, dict[str, Any]]] = {n: {} for n in range(LISTS)}
    with psycopg.connect(url) as conn:
        for row_id, title, list_id, version in conn.execute(
            "SELECT id, title, list_id, version FROM race_item"
        ):
            out[list_id][row_id] = {
                "id": row_id,
                "title": title,
                "list_id": list_id,
                "version": version,
            }
    return out


def burst(factory: sessionmaker[Session], seed: int, stop: threading.Event) -> int:
    """CHANGES commits, paced over BURST_SECONDS; returns how many committed."""
    rng = random.Random(seed)
    ids: list[int] = []
    with factory() as session:
        ids.extend(session.scalars(select(Item.id)).all())
    started = time.monotonic()
    for n in range(CHANGES):
        if stop.is_set():
            return n
        with factory() as session, session.begin():
            roll = rng.random()
            if roll < 0.3 or len(ids) < 10:
                item = Item(title=f"new {n}", list_id=rng.randrange(LISTS))
                session.add(item)
                session.flush()
                ids.append(item.id)
            else:
                victim = rng.choice(ids)
                item_or_none = session.get(Item, victim)
                assert item_or_none is not None
                if roll < 0.45:
                    session.delete(item_or_none)
                    ids.remove(victim)
                elif roll < 0.7:
                    item_or_none.list_id = (item_or_none.list_id + rng.randrange(1, LISTS)) % LISTS
                else:
                    item_or_none.title = f"edit {n}"
        pause = started + BURST_SECONDS * (n + 1) / CHANGES - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return CHANGES


@pytest.fixture
def database(postgres: PostgresServer, postgres_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(
        postgres.sqlalchemy_url(postgres_url.rsplit("/", 1)[1]), pool_size=10, max_overflow=10
    )
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session, session.begin():
        session.add_all(Item(title=f"seed {n}", list_id=n % LISTS) for n in range(40))
    try:
        yield factory
    finally:
        engine.dispose()


@pytest.fixture
async def clients() -> AsyncIterator[Any]:
    async with open_sockets() as opener:
        yield opener


async def test_every_client_ends_equal_to_the_database(
    database: sessionmaker[Session], postgres_url: str, clients: Any
) -> None:
    rt = embedded_realtime()
    rt.live_sqlalchemy(database)

    @rt.live(Item, fields=list(FIELDS), filters=["list_id"])
    class ItemLive:
        def authorize(self, user: object, list_id: str) -> bool:
            return True

        def snapshot(self, list_id: str) -> list[Item]:
            # A slow snapshot, as a big one is: changes commit while it waits for its turn
            # (the client gets them in the snapshot and again as held events) and after its
            # query (only as held events: without the hold they would be lost).
            time.sleep(random.uniform(0, SLOW_SNAPSHOT))
            with database() as session:
                rows = list(session.scalars(select(Item).where(Item.list_id == int(list_id))))
            time.sleep(random.uniform(0, SLOW_SNAPSHOT))
            return rows

    rng = random.Random(15)
    stop = threading.Event()
    async with serving(rt) as ws_url:
        sockets = [await clients(ws_url) for _ in range(CLIENTS)]
        readers: list[asyncio.Task[None]] = []
        subscribers = [Client(sock, n % LISTS) for n, sock in enumerate(sockets)]
        # Two clients per list subscribe before the burst (they see every event live); the
        # rest at random moments while it commits.
        delays = [0.0] * (2 * LISTS) + [
            rng.uniform(0.05, BURST_SECONDS) for _ in range(CLIENTS - 2 * LISTS)
        ]

        async def subscribe_later(client: Client, delay: float) -> None:
            await asyncio.sleep(delay)
            await client.run()

        for client in subscribers[: 2 * LISTS]:
            readers.append(asyncio.create_task(client.run()))
        # The early ones hold their snapshot before the first change commits.
        deadline = time.monotonic() + 4 * TIMEOUT
        while any(c.collection.snapshots == 0 for c in subscribers[: 2 * LISTS]):
            assert time.monotonic() < deadline, "the first snapshots did not arrive"
            assert all(not c.errors for c in subscribers), [c.errors for c in subscribers]
            await asyncio.sleep(0.02)
        writer = asyncio.create_task(asyncio.to_thread(burst, database, 7, stop))
        for client, delay in zip(subscribers[2 * LISTS :], delays[2 * LISTS :], strict=True):
            readers.append(asyncio.create_task(subscribe_later(client, delay)))
        try:
            async with asyncio.timeout(8 * TIMEOUT):
                committed = await writer
        finally:
            stop.set()
        assert committed == CHANGES

        expected = await asyncio.to_thread(database_rows, postgres_url)
        deadline = time.monotonic() + 4 * TIMEOUT
        while True:
            failed = [r for r in readers if r.done() and r.exception() is not None]
            assert not failed, failed[0].exception()
            assert all(not c.errors for c in subscribers), [c.errors for c in subscribers]
            behind = [c for c in subscribers if c.collection.rows != expected[c.list_id]]
            if not behind:
                break
            if time.monotonic() > deadline:
                c = behind[0]
                got, want = c.collection.rows, expected[c.list_id]
                raise AssertionError(
                    f"{len(behind)} of {CLIENTS} clients differ from the database; on "
                    f"{c.channel}: missing {sorted(want.keys() - got.keys())}, extra "
                    f"{sorted(got.keys() - want.keys())}, different "
                    f"{[(got[i], want[i]) for i in got.keys() & want.keys() if got[i] != want[i]]}"
                )
            await asyncio.sleep(0.05)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    # Every client got its snapshot first, and the burst really reached every list.
    assert all(c.first_event == "tidings:snapshot" for c in subscribers)
    assert all(c.collection.snapshots == 1 for c in subscribers)
    assert all(not c.collection.stale for c in subscribers)
    assert sum(len(rows) for rows in expected.values()) > 0
    assert all(expected[n] for n in range(LISTS))
    # The race happened: some changes reached clients both in their snapshot and as events.
    assert sum(c.collection.dropped for c in subscribers) > 0
