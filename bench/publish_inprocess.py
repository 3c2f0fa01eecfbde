"""The in-process publish rates of bench/publish.py (a benchmark helper, not a test).

    python bench/publish_inprocess.py embedded --seconds 3
    python bench/publish_inprocess.py client --redis redis://127.0.0.1:6379/0 --seconds 3

``embedded``: ``Realtime(app_id, key, secret)`` started on this process's uvloop, then
``await rt.atrigger(...)`` one after the other on its own loop for the window (what an
async view of an embedding app does; the plain ``rt.trigger`` is for other threads, which
add a thread hop). ``client``: ``Realtime.client("redis://…")`` and, from the main thread,
plain ``rt.trigger(...)`` calls one after the other (a WSGI view or a Celery task), then
``--in-flight`` coroutines awaiting ``rt.atrigger`` together from a loop of the main
thread (an async publisher). Every trigger goes to a channel nobody subscribes to, with
bench/loadclient.py's payload; the backend rate limit is raised out of the way.

Prints one JSON line per measurement: triggers, seconds, triggers/s, CPU µs per trigger
(of this process: the client's loop thread included).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvloop

from loadclient import APP_ID, APP_KEY, APP_SECRET
from tidings import Realtime

CHANNEL = "empty"
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


async def embedded(seconds: float, warm: float) -> None:
    rt = Realtime(APP_ID, APP_KEY, APP_SECRET, max_backend_events_per_second=NO_LIMIT)
    async with rt:

        def publish() -> Awaitable[object]:
            return rt.atrigger(CHANNEL, "e", DATA)

        await timed(publish, warm, 1)
        t0, c0 = time.monotonic(), time.process_time()
        count = await timed(publish, seconds, 1)
        report("embedded atrigger", count, time.monotonic() - t0, time.process_time() - c0)


def client(url: str, seconds: float, warm: float, in_flight: int) -> None:
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
            t0, c0 = time.monotonic(), time.process_time()
            count = await timed(publish, seconds, in_flight)
            wall, cpu = time.monotonic() - t0, time.process_time() - c0
            report("client atrigger", count, wall, cpu, in_flight=in_flight)

        uvloop.run(concurrently())
    finally:
        rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("embedded", "client"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warm", type=float, default=0.5)
    parser.add_argument("--redis", help="the Redis URL (client)")
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()
    if args.kind == "embedded":
        uvloop.run(embedded(args.seconds, args.warm))
    else:
        client(args.redis, args.seconds, args.warm, args.in_flight)


if __name__ == "__main__":
    main()
