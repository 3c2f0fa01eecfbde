"""The in-process publish rates of bench/publish.py (a benchmark helper, not a test).

    python bench/publish_inprocess.py embedded --seconds 3
    python bench/publish_inprocess.py client --redis redis://127.0.0.1:6379/0 --seconds 3

``embedded``: ``Realtime(app_id, key, secret)`` started on this process's uvloop and
listening on a free port, then ``await rt.atrigger(...)`` one after the other on its own
loop, each followed by ``await asyncio.sleep(0)``: one trigger per loop iteration, as an
async view of an embedding app publishes once per request (so every trigger's delivery is
written in its own iteration, as it would be, and the iteration's own cost is counted
too). First to a channel nobody subscribes to, then to one with one subscriber
(bench/subscribers.py, another process on the client core, which counts what it gets).
The plain ``rt.trigger`` is for other threads, which add a thread hop.

``client``: ``Realtime.client("redis://…")`` and, from the main thread, plain
``rt.trigger(...)`` calls one after the other (a WSGI view or a Celery task), then
``--in-flight`` coroutines (16, then 64) awaiting ``rt.atrigger`` in turn, together, from a
loop of the main thread (an async publisher: an ASGI app's concurrent requests, a
consumer's tasks). A client's work per trigger is the same whoever subscribes (one
PUBLISH), so its channel has no subscribers.

Every trigger carries bench/loadclient.py's payload; the backend rate limit is raised
out of the way. Prints one JSON line per measurement: triggers, seconds, triggers/s, CPU µs
per trigger (of this process: the client's loop thread included; not redis-server's).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvloop

from loadclient import APP_ID, APP_KEY, APP_SECRET
from procs import BENCH, CLIENT_CORE, free_port
from tidings import Realtime
from tidings.server.app import listen

CHANNEL = "empty"  # nobody subscribes
SUBSCRIBED = "bench-1"  # one subscriber (embedded)
DATA = orjson.dumps({"seq": 0, "pad": "x" * 40}).decode()
NO_LIMIT = 1_000_000_000


def report(kind: str, count: int, seconds: float, cpu: float, **extra: Any) -> None:
    result = {
        "kind": kind,
        "triggers": count,
        "seconds": round(seconds, 3),
        "rate": count / seconds,
        "cpu_us_per_trigger": 1e6 * cpu / max(1, count),
        **extra,
    }
    print(orjson.dumps(result).decode(), flush=True)


async def timed(publish: Callable[[], Awaitable[object]], seconds: float, lanes: int) -> int:
    """``lanes`` coroutines publishing one after the other until the deadline."""
    deadline = time.monotonic() + seconds
    counts = [0] * lanes

    async def lane(i: int) -> None:
        while time.monotonic() < deadline:
            await publish()
            counts[i] += 1

    await asyncio.gather(*(lane(i) for i in range(lanes)))
    return sum(counts)


async def one_per_iteration(publish: Callable[[], Awaitable[object]], seconds: float) -> int:
    """Publish one after the other until the deadline, the loop running once between two."""
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        await publish()
        await asyncio.sleep(0)
        count += 1
    return count


class Watcher:
    """bench/subscribers.py: one client of ``channel``, counting the events it receives."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, port: int, channel: str) -> Watcher:
        cmd = ["taskset", "-c", CLIENT_CORE, sys.executable, str(BENCH / "subscribers.py")]
        cmd += ["--port", str(port), "--key", APP_KEY, "--channel", channel, "--n", "1"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        watcher = cls(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            await watcher.stop()
            raise RuntimeError("bench/subscribers.py exited before subscribing")
        return watcher

    async def finish(self) -> dict[str, int]:
        """What it received (it exits then)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"done\n")
        await self.proc.stdin.drain()
        result: dict[str, int] = orjson.loads(
            await asyncio.wait_for(self.proc.stdout.readline(), 30)
        )
        await self.stop()
        return result

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        await asyncio.wait_for(self.proc.wait(), 10)


async def embedded(seconds: float, warm: float) -> None:
    port = free_port()
    rt = Realtime(
        APP_ID,
        APP_KEY,
        APP_SECRET,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        max_backend_events_per_second=NO_LIMIT,
    )
    async with rt:
        await listen(rt)
        for channel, subscribers in ((CHANNEL, 0), (SUBSCRIBED, 1)):
            watcher = await Watcher.start(port, channel) if subscribers else None

            def publish(channel: str = channel) -> Awaitable[object]:
                return rt.atrigger(channel, "e", DATA)

            try:
                sent = await one_per_iteration(publish, warm)
                t0, c0 = time.monotonic(), time.process_time()
                count = await one_per_iteration(publish, seconds)
                wall, cpu = time.monotonic() - t0, time.process_time() - c0
                extra: dict[str, Any] = {"subscribers": subscribers}
                if watcher is not None:
                    await asyncio.sleep(0.5)  # the last frames reach the subscriber
                    got = await watcher.finish()
                    watcher = None
                    extra |= {"published": sent + count, "delivered": got["deliveries"]}
                    extra["closed"] = got["closed"]
                report("embedded atrigger", count, wall, cpu, **extra)
            finally:
                if watcher is not None:
                    await watcher.stop()


def client(url: str, seconds: float, warm: float, in_flight: list[int]) -> None:
    rt = Realtime.client(url, app_id=APP_ID, max_backend_events_per_second=NO_LIMIT)
    try:
        deadline = time.monotonic() + warm
        while time.monotonic() < deadline:
            rt.trigger(CHANNEL, "e", DATA)
        t0, c0, count = time.monotonic(), time.process_time(), 0
        deadline = t0 + seconds
        while time.monotonic() < deadline:
            rt.trigger(CHANNEL, "e", DATA)
            count += 1
        report("client trigger", count, time.monotonic() - t0, time.process_time() - c0)

        def publish() -> Awaitable[object]:
            return rt.atrigger(CHANNEL, "e", DATA)

        async def concurrently() -> None:
            for lanes in in_flight:
                await timed(publish, warm, lanes)
                t0, c0 = time.monotonic(), time.process_time()
                count = await timed(publish, seconds, lanes)
                wall, cpu = time.monotonic() - t0, time.process_time() - c0
                report("client atrigger", count, wall, cpu, in_flight=lanes)

        uvloop.run(concurrently())
    finally:
        rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("embedded", "client"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warm", type=float, default=0.5)
    parser.add_argument("--redis", help="the Redis URL (client)")
    parser.add_argument(
        "--in-flight", default="16,64", help="atrigger coroutines awaiting at once, per run"
    )
    args = parser.parse_args()
    if args.kind == "embedded":
        uvloop.run(embedded(args.seconds, args.warm))
    else:
        client(args.redis, args.seconds, args.warm, [int(n) for n in args.in_flight.split(",")])


if __name__ == "__main__":
    main()
