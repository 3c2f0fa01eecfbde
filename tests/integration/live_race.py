"""The snapshot race, from the clients' side: 50 clients subscribe to live channels while a
burst of changes commits, and each must end equal to the database.

test_live_race.py runs it against an SQLAlchemy live model served by an embedded Realtime
in the test process, and against a Django one served by a child process
(live_django_race_app.py: Django settings hold for a whole process). Either way the app's
``snapshot()`` is slow on purpose and a writer commits CHANGES changes over about
BURST_SECONDS: creates, title edits, deletes and filter moves (``list_id`` changes) spread
over LISTS lists, in table ``race_item`` (``id``, ``title``, ``list_id``, ``version``).

:func:`race` does the rest: it subscribes two clients per list before the burst (they see
every event live) and the others at random moments during it, applies what each receives
with the rule of the JS helper's ``liveCollection`` (:class:`LiveCollection`), and once the
burst has committed, waits for every client's rows to equal the database's rows of its list
(every declared field). A change committed after a snapshot's query would be lost without
the node's hold (with the held events dropped, the test fails). And the race must have
happened: some changes reached a client both in its snapshot and as a held event, which the
version rule dropped.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
from pusher_helpers import TIMEOUT, PusherSocket, SocketOpener, channel_auth

LISTS = 5
CLIENTS = 50
CHANGES = 500
BURST_SECONDS = 2.0
SLOW_SNAPSHOT = 0.1  # seconds, at most, before and after the snapshot's query
FIELDS = ("id", "title", "list_id", "version")


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


async def race(
    ws_url: str,
    database_url: str,
    open_socket: SocketOpener,
    burst: Callable[[], Coroutine[Any, Any, int]],
) -> None:
    """Subscribe the clients around ``burst()`` (it commits the changes and returns how many)
    and check that each ends equal to the database at ``database_url``."""
    rng = random.Random(15)
    sockets = [await open_socket(ws_url) for _ in range(CLIENTS)]
    readers: list[asyncio.Task[None]] = []
    subscribers = [Client(sock, n % LISTS) for n, sock in enumerate(sockets)]
    # Two clients per list subscribe before the burst (they see every event live); the
    # rest at random moments while it commits.
    delays = [rng.uniform(0.05, BURST_SECONDS) for _ in range(CLIENTS - 2 * LISTS)]

    async def subscribe_later(client: Client, delay: float) -> None:
        await asyncio.sleep(delay)
        await client.run()

    try:
        for client in subscribers[: 2 * LISTS]:
            readers.append(asyncio.create_task(client.run()))
        # The early ones hold their snapshot before the first change commits.
        deadline = time.monotonic() + 4 * TIMEOUT
        while any(c.collection.snapshots == 0 for c in subscribers[: 2 * LISTS]):
            assert time.monotonic() < deadline, "the first snapshots did not arrive"
            assert all(not c.errors for c in subscribers), [c.errors for c in subscribers]
            await asyncio.sleep(0.02)
        writer = asyncio.create_task(burst())
        for client, delay in zip(subscribers[2 * LISTS :], delays, strict=True):
            readers.append(asyncio.create_task(subscribe_later(client, delay)))
        async with asyncio.timeout(8 * TIMEOUT):
            committed = await writer
        assert committed == CHANGES

        expected = await asyncio.to_thread(database_rows, database_url)
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
    finally:
        # Pass or fail, no reader outlives the race (their sockets close after it).
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
