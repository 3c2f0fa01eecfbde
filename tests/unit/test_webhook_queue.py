"""server/webhook_queue.py: durable FIFOs of webhook batches, one per (app, URL) key.

Every behaviour runs once against ``SqliteQueue`` (a file in tmp_path) and once against
``RedisQueue`` on the real redis-server (tests/conftest.py), each under its own key prefix.
"Reopening" a queue means closing it and opening a new one on the same file / Redis prefix,
as a restarted server does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis import asyncio as aioredis

from redis_server import RedisServer
from tidings.core.webhooks import Hold, Occur, Push, Release, Unhold
from tidings.server.webhook_queue import MAX_OVERDUE, RedisQueue, SqliteQueue

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))

KEY_A = "12345 http://127.0.0.1:9000/a"
KEY_B = "12345 http://127.0.0.1:9000/b"
OTHER_APP_KEY = "23456 http://127.0.0.1:9000/a"

Queue = SqliteQueue | RedisQueue


class Opener:
    """Opens queues on one store (a SQLite file or a Redis prefix) and closes them all."""

    def __init__(self, kind: str, tmp_path: Path, redis_url: str, prefix: str) -> None:
        self.kind = kind
        self.path = tmp_path / "webhooks.sqlite3"
        self.redis_url = redis_url
        self.prefix = prefix
        self._queues: list[Queue] = []
        self._clients: list[aioredis.Redis] = []

    def open(self, prefix: str | None = None) -> Queue:
        queue: Queue
        if self.kind == "sqlite":
            queue = SqliteQueue(self.path if prefix is None else self.path.with_name(prefix))
        else:
            client = aioredis.Redis.from_url(self.redis_url)
            self._clients.append(client)
            queue = RedisQueue(client, self.prefix if prefix is None else prefix)
        self._queues.append(queue)
        return queue

    async def reopen(self, queue: Queue) -> Queue:
        await queue.close()
        self._queues.remove(queue)
        return self.open()

    async def close_all(self) -> None:
        for queue in self._queues:
            await queue.close()
        for client in self._clients:
            await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def opener(
    request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str
) -> AsyncIterator[Opener]:
    redis_url = ""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        redis_url = server.url
    op = Opener(request.param, tmp_path, redis_url, redis_prefix)
    yield op
    await op.close_all()


@pytest.fixture
async def queue(opener: Opener) -> Queue:
    return opener.open()


async def drain(queue: Queue, key: str) -> list[bytes]:
    """Peek and ack until empty; the batches in the order they came out."""
    out: list[bytes] = []
    while (head := await queue.peek(key)) is not None:
        batch_id, batch = head
        out.append(batch)
        await queue.ack(key, batch_id)
        assert len(out) <= 10_000, "the queue never empties"
    return out


async def test_an_empty_queue(queue: Queue) -> None:
    assert await queue.peek(KEY_A) is None
    assert await queue.keys() == []
    assert await queue.length(KEY_A) == 0
    await queue.ack(KEY_A, 1)  # acking nothing is harmless
    assert await queue.keys() == []


async def test_peek_returns_the_oldest_batch_without_removing_it(queue: Queue) -> None:
    await queue.push(KEY_A, b'{"n":1}')
    await queue.push(KEY_A, b'{"n":2}')
    first = await queue.peek(KEY_A)
    assert first is not None
    assert first[1] == b'{"n":1}'
    assert await queue.peek(KEY_A) == first
    assert await queue.length(KEY_A) == 2


async def test_ack_removes_the_head_and_the_next_comes_in_push_order(queue: Queue) -> None:
    batches = [f'{{"time_ms":1,"events":[{{"n":{i}}}]}}'.encode() for i in range(50)]
    for batch in batches:
        await queue.push(KEY_A, batch)
    assert await queue.length(KEY_A) == 50
    assert await drain(queue, KEY_A) == batches
    assert await queue.peek(KEY_A) is None
    assert await queue.length(KEY_A) == 0


async def test_batch_ids_differ_per_batch(queue: Queue) -> None:
    ids = []
    for i in range(5):
        await queue.push(KEY_A, str(i).encode())
    while (head := await queue.peek(KEY_A)) is not None:
        ids.append(head[0])
        await queue.ack(KEY_A, head[0])
    assert len(set(ids)) == 5
    assert all(isinstance(i, int) for i in ids)


async def test_pushing_after_draining_works(queue: Queue) -> None:
    await queue.push(KEY_A, b"one")
    assert await drain(queue, KEY_A) == [b"one"]
    await queue.push(KEY_A, b"two")
    assert await drain(queue, KEY_A) == [b"two"]


async def test_batches_are_kept_byte_for_byte(queue: Queue) -> None:
    odd = [
        b"",
        b"\n",
        b"line one\nline two\n",
        b"42\n{}",  # looks like an id and a separator
        "héllo 🚀".encode(),
        bytes(range(256)),
        b"x" * 300_000,
    ]
    for batch in odd:
        await queue.push(KEY_A, batch)
    assert await drain(queue, KEY_A) == odd


async def test_keys_are_independent(queue: Queue) -> None:
    await queue.push(KEY_A, b"a1")
    await queue.push(KEY_B, b"b1")
    await queue.push(KEY_A, b"a2")
    await queue.push(OTHER_APP_KEY, b"o1")
    await queue.push(KEY_B, b"b2")
    head_b = await queue.peek(KEY_B)
    assert head_b is not None and head_b[1] == b"b1"
    await queue.ack(KEY_B, head_b[0])
    head_a = await queue.peek(KEY_A)
    assert head_a is not None and head_a[1] == b"a1"  # untouched by the ack on KEY_B
    assert await drain(queue, KEY_A) == [b"a1", b"a2"]
    assert await drain(queue, KEY_B) == [b"b2"]
    assert await drain(queue, OTHER_APP_KEY) == [b"o1"]


async def test_an_ack_with_another_keys_id_removes_nothing(queue: Queue) -> None:
    await queue.push(KEY_A, b"a1")
    await queue.push(KEY_B, b"b1")
    head_a = await queue.peek(KEY_A)
    assert head_a is not None
    await queue.ack(KEY_B, head_a[0])
    assert await queue.length(KEY_A) == 1
    assert await queue.length(KEY_B) == 1
    assert await drain(queue, KEY_B) == [b"b1"]
    assert await drain(queue, KEY_A) == [b"a1"]


async def test_acking_the_same_batch_twice_removes_it_once(queue: Queue) -> None:
    for batch in (b"1", b"2", b"3"):
        await queue.push(KEY_A, batch)
    head = await queue.peek(KEY_A)
    assert head is not None
    await queue.ack(KEY_A, head[0])
    await queue.ack(KEY_A, head[0])  # a late duplicate ack, e.g. after a retry
    assert await drain(queue, KEY_A) == [b"2", b"3"]


async def test_two_nodes_acking_the_same_batch_at_once_remove_it_once(opener: Opener) -> None:
    node_1, node_2 = opener.open(), opener.open()
    for batch in (b"1", b"2", b"3"):
        await node_1.push(KEY_A, batch)
    head_1, head_2 = await node_1.peek(KEY_A), await node_2.peek(KEY_A)
    assert head_1 is not None and head_1 == head_2
    await asyncio.gather(node_1.ack(KEY_A, head_1[0]), node_2.ack(KEY_A, head_1[0]))
    assert await drain(node_1, KEY_A) == [b"2", b"3"]


async def test_keys_lists_only_keys_with_batches(queue: Queue) -> None:
    await queue.push(KEY_A, b"a1")
    await queue.push(KEY_B, b"b1")
    await queue.push(KEY_B, b"b2")
    assert sorted(await queue.keys()) == [KEY_A, KEY_B]
    assert await drain(queue, KEY_A) == [b"a1"]
    assert await queue.keys() == [KEY_B]
    head = await queue.peek(KEY_B)
    assert head is not None
    await queue.ack(KEY_B, head[0])
    assert await queue.keys() == [KEY_B]  # one batch left
    await drain(queue, KEY_B)
    assert await queue.keys() == []
    await queue.push(KEY_A, b"a2")
    assert await queue.keys() == [KEY_A]


async def test_length_counts_batches_per_key(queue: Queue) -> None:
    for i in range(3):
        await queue.push(KEY_A, str(i).encode())
    await queue.push(KEY_B, b"x")
    assert await queue.length(KEY_A) == 3
    assert await queue.length(KEY_B) == 1
    assert await queue.length(OTHER_APP_KEY) == 0


async def test_batches_survive_closing_and_reopening(opener: Opener, queue: Queue) -> None:
    for i in range(3):
        await queue.push(KEY_A, f"a{i}".encode())
    await queue.push(KEY_B, b"b0")
    head = await queue.peek(KEY_A)
    assert head is not None
    await queue.ack(KEY_A, head[0])  # a0 was delivered before the restart

    reopened = await opener.reopen(queue)
    assert sorted(await reopened.keys()) == [KEY_A, KEY_B]
    assert await reopened.length(KEY_A) == 2
    assert await drain(reopened, KEY_A) == [b"a1", b"a2"]
    assert await drain(reopened, KEY_B) == [b"b0"]


async def test_an_unacked_peek_is_delivered_again_after_reopening(
    opener: Opener, queue: Queue
) -> None:
    await queue.push(KEY_A, b"in flight")
    await queue.push(KEY_A, b"next")
    head = await queue.peek(KEY_A)
    assert head is not None and head[1] == b"in flight"
    # the server dies before the receiver answered: at least once means it comes back
    reopened = await opener.reopen(queue)
    assert await drain(reopened, KEY_A) == [b"in flight", b"next"]


async def test_pushes_after_reopening_go_behind_the_old_batches(
    opener: Opener, queue: Queue
) -> None:
    await queue.push(KEY_A, b"old 1")
    await queue.push(KEY_A, b"old 2")
    reopened = await opener.reopen(queue)
    await reopened.push(KEY_A, b"new 1")
    assert await drain(reopened, KEY_A) == [b"old 1", b"old 2", b"new 1"]


async def test_queues_in_different_stores_do_not_share_batches(opener: Opener) -> None:
    mine = opener.open()
    theirs = opener.open(prefix=f"{opener.prefix}-other")
    await mine.push(KEY_A, b"mine")
    assert await theirs.keys() == []
    assert await theirs.peek(KEY_A) is None
    assert await mine.keys() == [KEY_A]


# --- writes of several operations, the window's reads and acks ---------------------------------


async def contents(queue: Queue, key: str) -> list[bytes]:
    return [batch for _, batch in await queue.peek_many(key, 1000)]


async def test_one_write_appends_to_several_keys_in_order(queue: Queue) -> None:
    await queue.write(
        [Push((KEY_A, KEY_B), b"e1"), Push((KEY_A,), b"e2"), Push((KEY_B, OTHER_APP_KEY), b"e3")]
    )
    assert await contents(queue, KEY_A) == [b"e1", b"e2"]
    assert await contents(queue, KEY_B) == [b"e1", b"e3"]
    assert await contents(queue, OTHER_APP_KEY) == [b"e3"]
    assert sorted(await queue.keys()) == sorted([KEY_A, KEY_B, OTHER_APP_KEY])
    await queue.write([])  # nothing to write is harmless
    await queue.write([Push((), b"nowhere")])
    assert await queue.length(KEY_A) == 2


async def test_peek_many_is_bounded_and_ack_removes_that_many(queue: Queue) -> None:
    await queue.write([Push((KEY_A,), b"%d" % i) for i in range(10)])
    head = await queue.peek_many(KEY_A, 4)
    assert [batch for _, batch in head] == [b"0", b"1", b"2", b"3"]
    await queue.ack(KEY_A, head[0][0], 4)
    assert await contents(queue, KEY_A) == [b"%d" % i for i in range(4, 10)]


async def test_an_ack_of_several_after_another_node_acked_them_removes_nothing(
    opener: Opener,
) -> None:
    node_1, node_2 = opener.open(), opener.open()
    await node_1.write([Push((KEY_A,), b"%d" % i) for i in range(5)])
    seen_1, seen_2 = await node_1.peek_many(KEY_A, 3), await node_2.peek_many(KEY_A, 2)
    await node_2.ack(KEY_A, seen_2[0][0], 2)
    await node_1.ack(KEY_A, seen_1[0][0], 3)  # late: its head is gone
    assert await contents(node_1, KEY_A) == [b"2", b"3", b"4"]


async def test_a_held_event_is_overdue_after_its_time_until_released(queue: Queue) -> None:
    await queue.write([Hold("h1", 1_000, "12345", b'{"name":"channel_vacated"}')])
    assert await queue.overdue(1_000) == []  # due at 1000: not before it
    assert await queue.overdue(1_001) == [("h1", "12345", b'{"name":"channel_vacated"}')]
    assert await queue.keys() == []  # held, not queued
    await queue.write([Release("h1", (KEY_A,), b"vacated")])
    assert await queue.overdue(10_000) == []
    assert await contents(queue, KEY_A) == [b"vacated"]


async def test_a_release_appends_only_once(opener: Opener) -> None:
    owner, rescuer = opener.open(), opener.open()
    await owner.write([Hold("h1", 1_000, "12345", b"{}")])
    # The owner, late, and another node both release it: one copy is queued.
    await asyncio.gather(
        rescuer.write([Release("h1", (KEY_A,), b"by rescuer")]),
        owner.write([Release("h1", (KEY_A,), b"by owner")]),
    )
    assert len(await contents(owner, KEY_A)) == 1


async def test_an_occurrence_undoes_a_held_event_written_by_another_node(opener: Opener) -> None:
    holder, other = opener.open(), opener.open()
    await holder.write([Hold("vacated c", 5_000, "12345", b"{}")])
    await other.write([Occur("vacated c", (KEY_A,), b"occupied c")])
    assert await contents(other, KEY_A) == []  # neither event is sent
    await holder.write([Release("vacated c", (KEY_A,), b"vacated c")])  # it fell due there
    assert await contents(holder, KEY_A) == []
    assert await holder.overdue(10_000) == []
    # Nothing held: the occurrence is sent.
    await other.write([Occur("vacated c", (KEY_A,), b"occupied c")])
    assert await contents(other, KEY_A) == [b"occupied c"]


async def test_unhold_forgets_and_a_new_hold_replaces_the_old(queue: Queue) -> None:
    await queue.write([Hold("h", 1, "1", b"old"), Hold("h", 2, "1", b"new")])
    assert await queue.overdue(100) == [("h", "1", b"new")]
    await queue.write([Unhold("h"), Unhold("never held")])
    assert await queue.overdue(100) == []
    await queue.write([Release("h", (KEY_A,), b"x")])
    assert await queue.length(KEY_A) == 0


async def test_overdue_is_oldest_first_and_bounded(queue: Queue) -> None:
    count = MAX_OVERDUE + 5
    await queue.write([Hold(f"h{i}", count - i, "1", b"{}") for i in range(count)])
    overdue = await queue.overdue(10**9)
    assert len(overdue) == MAX_OVERDUE
    assert overdue[0][0] == f"h{count - 1}" and overdue[1][0] == f"h{count - 2}"


async def test_ops_apply_in_the_order_written(queue: Queue) -> None:
    await queue.write(
        [
            Hold("h", 1, "1", b"{}"),
            Occur("h", (KEY_A,), b"undone"),  # held: both dropped
            Occur("h", (KEY_A,), b"occupied"),  # no longer held: sent
            Hold("h", 1, "1", b"{}"),
            Release("h", (KEY_A,), b"vacated"),
        ]
    )
    assert await contents(queue, KEY_A) == [b"occupied", b"vacated"]


async def test_held_events_survive_reopening(opener: Opener, queue: Queue) -> None:
    await queue.write([Hold("h", 7, "12345", b'{"a":1}')])
    reopened = await opener.reopen(queue)
    assert await reopened.overdue(8) == [("h", "12345", b'{"a":1}')]


# --- SQLite only: a kill -9 between push and delivery ----------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from tidings.server.webhook_queue import SqliteQueue

    async def main() -> None:
        queue = SqliteQueue(sys.argv[1])
        for i in range(20):
            await queue.push("k", b"batch %d" % i)
        head = await queue.peek("k")
        await queue.ack("k", head[0])
        print("pushed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit

    asyncio.run(main())
    """
)


async def test_sqlite_batches_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.sqlite3"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        timeout=4 * TIMEOUT,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert child.stdout == b"pushed\n"
    queue = SqliteQueue(path)
    try:
        assert await queue.keys() == ["k"]
        assert await drain(queue, "k") == [b"batch %d" % i for i in range(1, 20)]
    finally:
        await queue.close()


async def test_sqlite_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    queue = SqliteQueue(str(path))
    try:
        await queue.push(KEY_A, b"x")
        assert path.exists()
    finally:
        await queue.close()
