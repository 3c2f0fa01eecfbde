"""The snapshot race (live_race.py says what it checks), on real PostgreSQL, for both ORMs.

SQLAlchemy: an embedded Realtime in this process serves the live model; a writer thread
commits the burst through ORM sessions. Django: a child process (live_django_race_app.py)
serves the live model and commits the burst through the ORM, bulk moves included
(``QuerySet.update()`` inside ``rt.live_changes``); this process only runs the clients.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from embedded_node import embedded_realtime, serving
from live_race import BURST_SECONDS, CHANGES, FIELDS, LISTS, SLOW_SNAPSHOT, race
from pusher_helpers import TIMEOUT, SocketOpener, open_sockets
from sqlalchemy import Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from postgres_server import PostgresServer

pytestmark = pytest.mark.timeout(16 * TIMEOUT)

DJANGO_APP = Path(__file__).with_name("live_django_race_app.py")
SEED = 7


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "race_item"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    list_id: Mapped[int] = mapped_column(Integer, index=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


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
async def clients() -> AsyncIterator[SocketOpener]:
    async with open_sockets() as opener:
        yield opener


async def test_every_sqlalchemy_client_ends_equal_to_the_database(
    database: sessionmaker[Session], postgres_url: str, clients: SocketOpener
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

    stop = threading.Event()
    async with serving(rt) as ws_url:
        try:
            await race(
                ws_url,
                postgres_url,
                clients,
                lambda: asyncio.to_thread(burst, database, SEED, stop),
            )
        finally:
            stop.set()


class DjangoSite:
    """live_django_race_app.py in a child process: its port, and its burst on demand."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self.child = child
        assert child.stdout is not None
        self.ws_url = f"ws://127.0.0.1:{self.answer('port')}"

    def answer(self, word: str) -> int:
        assert self.child.stdout is not None
        line = self.child.stdout.readline().split()
        assert line[:1] == [word], f"the Django process answered {line} (its stderr is above)"
        return int(line[1])

    def burst(self) -> int:
        assert self.child.stdin is not None
        command = {"seed": SEED, "changes": CHANGES, "seconds": BURST_SECONDS}
        self.child.stdin.write(json.dumps(command) + "\n")
        self.child.stdin.flush()
        return self.answer("done")


@pytest.fixture
def django_site(postgres: PostgresServer, postgres_url: str) -> Iterator[DjangoSite]:
    config = {
        "database": postgres.django_settings(postgres_url.rsplit("/", 1)[1]),
        "lists": LISTS,
        "slow_snapshot": SLOW_SNAPSHOT,
    }
    child = subprocess.Popen(
        [sys.executable, str(DJANGO_APP), json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield DjangoSite(child)
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(6 * TIMEOUT) == 0
    finally:
        if child.returncode is None:
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


async def test_every_django_client_ends_equal_to_the_database(
    django_site: DjangoSite, postgres_url: str, clients: SocketOpener
) -> None:
    await race(
        django_site.ws_url, postgres_url, clients, lambda: asyncio.to_thread(django_site.burst)
    )
