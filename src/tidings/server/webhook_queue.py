"""Durable webhook queues: events wait here until their receiver answers 2xx.

One FIFO per key (an app and one of its webhook URLs), so a dead receiver holds back
only its own events. Embedded mode keeps them in a SQLite file (WAL; each write is a commit,
in the operating system once committed, and on disk within ``SYNC_EVERY``), Redis mode in
one Redis list per key; both survive a kill -9 of the server.
Delivery is at least once: an entry is removed only after it was acknowledged.

The sender writes each event as it happens (``write``: a list of ``QueueOp`` applied in
one atomic step), and forms the requests when it reads (``peek_many``, then ``ack`` of the
first ``count`` entries). Held events (``channel_vacated``, ``member_removed``) are kept
here as well, so they survive their node: ``overdue`` finds those whose node did not
release them in time.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tidings.brokers.redis.connect import AnyRedis, close
from tidings.core.webhooks import Hold, Occur, Push, QueueOp, Release, Unhold

MAX_OVERDUE = 1000  # held events released per ``overdue`` call
# SQLite: seconds a commit may stay in the operating system's cache before it is fsync'd.
# A kill -9 loses no commit (the kernel has it); a power loss, at most this much.
SYNC_EVERY = 0.05


class WebhookQueue(Protocol):
    async def prepare(self) -> None:
        """Make the first ``write`` one round trip (load scripts); called at start."""
        ...

    async def write(self, ops: Sequence[QueueOp]) -> None:
        """Apply ``ops`` in order, all or none (one transaction / one Lua script)."""
        ...

    async def push(self, key: str, batch: bytes) -> None:
        """Append one entry to ``key`` (``write([Push((key,), batch)])``)."""
        ...

    async def peek(self, key: str) -> tuple[int, bytes] | None:
        """The oldest entry of ``key`` and its id, or None."""
        ...

    async def peek_many(self, key: str, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` oldest entries of ``key`` with their ids, oldest first."""
        ...

    async def ack(self, key: str, batch_id: int, count: int = 1) -> None:
        """Remove the ``count`` oldest entries if the oldest is still ``batch_id`` (they were
        delivered, or given up); nothing otherwise (another node acknowledged them)."""
        ...

    async def keys(self) -> list[str]:
        """Keys with at least one entry."""
        ...

    async def length(self, key: str) -> int: ...

    async def overdue(self, before_ms: int) -> list[tuple[str, str, bytes]]:
        """Held events due before ``before_ms``: (hold id, app id, event), oldest first, at
        most ``MAX_OVERDUE``. They stay held until a ``Release`` takes them."""
        ...

    async def close(self) -> None: ...


class SqliteQueue:
    """Entries in a SQLite file; every call runs in a worker thread off the event loop.

    Commits are not fsync'd one by one (``synchronous=NORMAL``: an fsync costs ~6x the CPU
    of a small commit, and a write comes every event-loop pass): the WAL file is fsync'd at
    most every ``sync_every`` seconds, and ``sync_every`` after a commit at the latest."""

    def __init__(self, path: Path | str, sync_every: float = SYNC_EVERY) -> None:
        self._path = str(path)
        self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        self._lock = asyncio.Lock()
        self._sync_every = sync_every
        self._synced_at = 0.0  # time.monotonic() of the last fsync
        self._sync_timer: asyncio.TimerHandle | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, body BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS batches_key ON batches (key, id)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS held ("
            " hold_id TEXT PRIMARY KEY, due INTEGER NOT NULL, app TEXT NOT NULL,"
            " event BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS held_due ON held (due)")

    async def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        async with self._lock:  # one connection: one statement at a time
            return await asyncio.to_thread(lambda: self._db.execute(sql, args).fetchall())

    async def prepare(self) -> None:
        return None

    async def write(self, ops: Sequence[QueueOp]) -> None:
        async with self._lock:
            synced = await asyncio.to_thread(self._write, ops)
        if not synced and self._sync_timer is None:
            delay = max(0.0, self._synced_at + self._sync_every - time.monotonic())
            self._sync_timer = asyncio.get_running_loop().call_later(delay, self._sync_soon)

    def _sync_soon(self) -> None:
        self._sync_timer = None
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.ensure_future(asyncio.to_thread(self._fsync))

    def _fsync(self) -> None:
        """Put every commit so far on disk (fsync of the WAL, where SQLite appends them)."""
        self._synced_at = time.monotonic()
        try:
            fd = os.open(self._path + "-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and removed: its commits are in the database file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write(self, ops: Sequence[QueueOp]) -> bool:
        """Apply ``ops`` in one commit; True when it was fsync'd too."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                match op:
                    case Push(keys, entry):
                        self._append(keys, entry)
                    case Hold(hold_id, due_ms, app_id, event):
                        db.execute(
                            "INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?)",
                            (hold_id, due_ms, app_id, event),
                        )
                    case Unhold(hold_id):
                        db.execute("DELETE FROM held WHERE hold_id = ?", (hold_id,))
                    case Occur(hold_id, keys, entry):
                        if not self._unhold(hold_id):
                            self._append(keys, entry)
                    case Release(hold_id, keys, entry):
                        if self._unhold(hold_id):
                            self._append(keys, entry)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if time.monotonic() - self._synced_at < self._sync_every:
            return False
        self._fsync()
        return True

    def _append(self, keys: tuple[str, ...], entry: bytes) -> None:
        for key in keys:
            self._db.execute("INSERT INTO batches (key, body) VALUES (?, ?)", (key, entry))

    def _unhold(self, hold_id: str) -> bool:
        return self._db.execute("DELETE FROM held WHERE hold_id = ?", (hold_id,)).rowcount > 0

    async def push(self, key: str, batch: bytes) -> None:
        await self.write([Push((key,), batch)])

    async def peek(self, key: str) -> tuple[int, bytes] | None:
        entries = await self.peek_many(key, 1)
        return entries[0] if entries else None

    async def peek_many(self, key: str, limit: int) -> list[tuple[int, bytes]]:
        rows = await self._run(
            "SELECT id, body FROM batches WHERE key = ? ORDER BY id LIMIT ?", (key, limit)
        )
        out: list[tuple[int, bytes]] = []
        for batch_id, batch in rows:
            assert isinstance(batch_id, int) and isinstance(batch, bytes)
            out.append((batch_id, batch))
        return out

    async def ack(self, key: str, batch_id: int, count: int = 1) -> None:
        await self._run(
            "DELETE FROM batches WHERE id IN (SELECT id FROM batches WHERE key = ?"
            " ORDER BY id LIMIT ?) AND (SELECT MIN(id) FROM batches WHERE key = ?) = ?",
            (key, count, key, batch_id),
        )

    async def keys(self) -> list[str]:
        return [str(row[0]) for row in await self._run("SELECT DISTINCT key FROM batches")]

    async def length(self, key: str) -> int:
        rows = await self._run("SELECT COUNT(*) FROM batches WHERE key = ?", (key,))
        count = rows[0][0]
        assert isinstance(count, int)
        return count

    async def overdue(self, before_ms: int) -> list[tuple[str, str, bytes]]:
        rows = await self._run(
            "SELECT hold_id, app, event FROM held WHERE due < ? ORDER BY due LIMIT ?",
            (before_ms, MAX_OVERDUE),
        )
        return [(str(h), str(a), e) for h, a, e in rows if isinstance(e, bytes)]

    async def close(self) -> None:
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self._sync_task is not None:
            await self._sync_task
        async with self._lock:
            await asyncio.to_thread(self._fsync)
            self._db.close()


# KEYS[1] the queue list; ARGV[1] "<batch id>\n"; ARGV[2] how many. Pops them only if the
# head is that batch.
ACK_SCRIPT = """
local head = redis.call('LINDEX', KEYS[1], 0)
if head and string.sub(head, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
  return 1
end
return 0
"""

# KEYS: 1 sequence, 2 set of queue keys, 3 held events (hash), 4 their due times (zset),
# 5.. the queue lists. ARGV[1]: how many lists (L); ARGV[2 .. L+1]: their queue keys, for
# the set. Then the ops, each a letter and its fields (lists as indexes into KEYS from 5):
#   P n i1..in entry             append entry to the lists
#   H id due value               hold (value: "<app id>\n<event>")
#   U id                         forget a held event
#   O id n i1..in entry          undo the held id if held, else append
#   R id n i1..in entry          append if id is held (and forget it), else nothing
WRITE_SCRIPT = """
local lists = tonumber(ARGV[1])
for j = 1, lists do
  redis.call('SADD', KEYS[2], ARGV[1 + j])
end
local function unhold(id)
  if redis.call('HDEL', KEYS[3], id) == 1 then
    redis.call('ZREM', KEYS[4], id)
    return true
  end
  return false
end
local i = lists + 2
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'H' then
    redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 3])
    redis.call('ZADD', KEYS[4], ARGV[i + 2], ARGV[i + 1])
    i = i + 4
  elseif op == 'U' then
    unhold(ARGV[i + 1])
    i = i + 2
  else
    local append = true
    if op ~= 'P' then
      if op == 'O' then
        append = not unhold(ARGV[i + 1])
      else
        append = unhold(ARGV[i + 1])
      end
      i = i + 1
    end
    local count = tonumber(ARGV[i + 1])
    local entry = ARGV[i + 2 + count]
    if append then
      for j = 1, count do
        local seq = redis.call('INCR', KEYS[1])
        redis.call('RPUSH', KEYS[4 + tonumber(ARGV[i + 1 + j])], seq .. '\\n' .. entry)
      end
    end
    i = i + 3 + count
  end
end
return 1
"""


class RedisQueue:
    """Entries in Redis lists ``{prefix}:{webhooks}:list:{key}``, shared by every node.

    Every key of the queues shares one hash tag, so a write (lists, key set, held events)
    stays one Lua script on a Redis Cluster too: webhooks are few next to publications.

    Each entry is stored with a sequence number so ``ack`` removes exactly what was
    delivered, even if two nodes raced for it (the sender lets one node at a time work on a
    key, with a lock, so that is rare).
    """

    def __init__(self, client: AnyRedis, prefix: str) -> None:
        self._redis = client
        self._prefix = f"{prefix}:{{webhooks}}"
        self._ack = client.register_script(ACK_SCRIPT)
        self._write = client.register_script(WRITE_SCRIPT)
        self._held = f"{self._prefix}:held"
        self._due = f"{self._prefix}:held-due"

    def _list(self, key: str) -> str:
        return f"{self._prefix}:list:{key}"

    async def prepare(self) -> None:
        for script in (ACK_SCRIPT, WRITE_SCRIPT):
            await self._redis.script_load(script)

    async def write(self, ops: Sequence[QueueOp]) -> None:
        lists: dict[str, int] = {}

        def indexes(keys: tuple[str, ...]) -> list[str | bytes]:
            return [str(lists.setdefault(key, len(lists) + 1)) for key in keys]

        args: list[str | bytes] = []
        for op in ops:
            match op:
                case Push(keys, entry):
                    args += ["P", str(len(keys)), *indexes(keys), entry]
                case Hold(hold_id, due_ms, app_id, event):
                    args += ["H", hold_id, str(due_ms), app_id.encode() + b"\n" + event]
                case Unhold(hold_id):
                    args += ["U", hold_id]
                case Occur(hold_id, keys, entry):
                    args += ["O", hold_id, str(len(keys)), *indexes(keys), entry]
                case Release(hold_id, keys, entry):
                    args += ["R", hold_id, str(len(keys)), *indexes(keys), entry]
        if not args:
            return
        names = list(lists)
        fixed = [f"{self._prefix}:seq", f"{self._prefix}:keys", self._held, self._due]
        await self._write(
            keys=[*fixed, *(self._list(k) for k in names)],
            args=[str(len(names)), *names, *args],
        )

    async def push(self, key: str, batch: bytes) -> None:
        await self.write([Push((key,), batch)])

    async def peek(self, key: str) -> tuple[int, bytes] | None:
        entries = await self.peek_many(key, 1)
        return entries[0] if entries else None

    async def peek_many(self, key: str, limit: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for raw in await self._redis.lrange(self._list(key), 0, limit - 1):
            seq, _, batch = _as_bytes(raw).partition(b"\n")
            out.append((int(seq), batch))
        return out

    async def ack(self, key: str, batch_id: int, count: int = 1) -> None:
        # Compare and pop in one step: two nodes acking the same batch remove it once.
        await self._ack(keys=[self._list(key)], args=[f"{batch_id}\n", count])

    async def keys(self) -> list[str]:
        members = await self._redis.smembers(f"{self._prefix}:keys")
        keys = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        return [k for k in keys if await self._redis.llen(self._list(k))]

    async def length(self, key: str) -> int:
        return int(await self._redis.llen(self._list(key)))

    async def overdue(self, before_ms: int) -> list[tuple[str, str, bytes]]:
        found = await self._redis.zrangebyscore(
            self._due, "-inf", f"({before_ms}", start=0, num=MAX_OVERDUE
        )
        ids = [_as_bytes(hold_id) for hold_id in found if isinstance(hold_id, bytes | str)]
        if not ids:
            return []
        values = await self._redis.hmget(self._held, ids)
        out: list[tuple[str, str, bytes]] = []
        for hold_id, value in zip(ids, values, strict=True):
            if value is None:
                continue  # released meanwhile
            app_id, _, event = _as_bytes(value).partition(b"\n")
            out.append((hold_id.decode(), app_id.decode(), event))
        return out

    async def close(self) -> None:
        await close(self._redis)


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
