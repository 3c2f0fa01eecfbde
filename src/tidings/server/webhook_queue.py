"""Durable webhook queues: batches wait here until their receiver answers 2xx.

One FIFO per key (an app and one of its webhook URLs), so a dead receiver holds back
only its own batches. Embedded mode keeps them in a SQLite file (WAL, a fsync'd commit per
batch), Redis mode in one Redis list per key; both survive a kill -9 of the server.
Delivery is at least once: a batch is removed only after it was acknowledged.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Protocol

from tidings.brokers.redis.connect import AnyRedis, close


class WebhookQueue(Protocol):
    async def push(self, key: str, batch: bytes) -> None: ...

    async def peek(self, key: str) -> tuple[int, bytes] | None:
        """The oldest batch of ``key`` and its id, or None."""
        ...

    async def ack(self, key: str, batch_id: int) -> None:
        """Remove the batch ``peek`` returned (delivered, or given up)."""
        ...

    async def keys(self) -> list[str]:
        """Keys with at least one batch."""
        ...

    async def length(self, key: str) -> int: ...

    async def close(self) -> None: ...


class SqliteQueue:
    """Batches in a SQLite file; every call runs in a worker thread off the event loop."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = asyncio.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, body BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS batches_key ON batches (key, id)")

    async def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        async with self._lock:  # one connection: one statement at a time
            return await asyncio.to_thread(lambda: self._db.execute(sql, args).fetchall())

    async def push(self, key: str, batch: bytes) -> None:
        await self._run("INSERT INTO batches (key, body) VALUES (?, ?)", (key, batch))

    async def peek(self, key: str) -> tuple[int, bytes] | None:
        rows = await self._run(
            "SELECT id, body FROM batches WHERE key = ? ORDER BY id LIMIT 1", (key,)
        )
        if not rows:
            return None
        batch_id, batch = rows[0]
        assert isinstance(batch_id, int) and isinstance(batch, bytes)
        return batch_id, batch

    async def ack(self, key: str, batch_id: int) -> None:
        await self._run("DELETE FROM batches WHERE key = ? AND id = ?", (key, batch_id))

    async def keys(self) -> list[str]:
        return [str(row[0]) for row in await self._run("SELECT DISTINCT key FROM batches")]

    async def length(self, key: str) -> int:
        rows = await self._run("SELECT COUNT(*) FROM batches WHERE key = ?", (key,))
        count = rows[0][0]
        assert isinstance(count, int)
        return count

    async def close(self) -> None:
        async with self._lock:
            self._db.close()


# KEYS[1] the queue list; ARGV[1] "<batch id>\n". Pops the head only if it is that batch.
ACK_SCRIPT = """
local head = redis.call('LINDEX', KEYS[1], 0)
if head and string.sub(head, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('LPOP', KEYS[1])
  return 1
end
return 0
"""


class RedisQueue:
    """Batches in Redis lists ``{prefix}:{webhooks}:list:{key}``, shared by every node.

    Every key of the queues shares one hash tag, so a push (list and key set) stays one
    transaction on a Redis Cluster too: webhooks are few next to publications.

    Each batch is stored with a sequence number so ``ack`` removes exactly the batch that
    was delivered, even if two nodes raced for it (the sender lets one node at a time work
    on a key, with a lock, so that is rare).
    """

    def __init__(self, client: AnyRedis, prefix: str) -> None:
        self._redis = client
        self._prefix = f"{prefix}:{{webhooks}}"
        self._ack = client.register_script(ACK_SCRIPT)

    def _list(self, key: str) -> str:
        return f"{self._prefix}:list:{key}"

    async def push(self, key: str, batch: bytes) -> None:
        seq = await self._redis.incr(f"{self._prefix}:seq")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self._list(key), str(seq).encode() + b"\n" + batch)
            pipe.sadd(f"{self._prefix}:keys", key)
            await pipe.execute()

    async def peek(self, key: str) -> tuple[int, bytes] | None:
        head = await self._redis.lindex(self._list(key), 0)
        if head is None:
            return None
        seq, _, batch = _as_bytes(head).partition(b"\n")
        return int(seq), batch

    async def ack(self, key: str, batch_id: int) -> None:
        # Compare and pop in one step: two nodes acking the same batch remove it once.
        await self._ack(keys=[self._list(key)], args=[f"{batch_id}\n"])

    async def keys(self) -> list[str]:
        members = await self._redis.smembers(f"{self._prefix}:keys")
        keys = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        return [k for k in keys if await self._redis.llen(self._list(k))]

    async def length(self, key: str) -> int:
        return int(await self._redis.llen(self._list(key)))

    async def close(self) -> None:
        await close(self._redis)


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
