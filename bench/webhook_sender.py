"""The webhook sender alone, in one process: CPU per event of the durable window against
main's in-memory window (a benchmark, not a test; issue 17, item 6).

    .venv/bin/python bench/webhook_sender.py [--rate 4000] [--seconds 5] [--runs 3]

bench/webhooks.py measures a whole server under presence churn, where the churn's own cost
(and this shared machine's noise) hides the webhook part. This drives the sender as the node
does — per join, ``occur`` channel_occupied and member_added; per leave, ``defer``
member_removed and channel_vacated (``webhook_vacated_delay`` 0, so both go out) — at
``--rate`` events/s, ``--per-pass`` events per event-loop pass, and measures the CPU time
of that process (the sender, its Redis client and its HTTP posts) until the receiver (in
this parent process) has every event. Each design runs in its own process, this tree's
``src`` or ``--peer-rev``'s (default 652e1a5, main before this change), interleaved
``--runs`` times on one private redis-server; Redis commands per event come from
``INFO commandstats``: the commands each design sends itself (``ROUND_TRIPS``), apart from
those its Lua scripts run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import procs
from cluster_nodes import RedisServer
from procs import PYTHON, RESULTS, ROOT, log
from servers import server_env
from webhooks import Receiver, peer_tree

# Round trips: the commands each design sends itself, one per answer it waits for (the
# window's MULTI ... EXEC pipeline is one, counted by its EXEC); everything else counted is
# run inside their Lua scripts (EVALSHA).
ROUND_TRIPS = {
    "durable": ("evalsha", "eval", "lindex", "lrange", "llen", "smembers", "zrangebyscore"),
    "window": ("evalsha", "eval", "lindex", "llen", "smembers", "incr", "exec"),
}
ROUND_TRIPS["durable"] += ("hmget",)

DRIVER = r"""
import asyncio, json, sys, time
from tidings.brokers.redis.connect import connect
from tidings.core.apps import App, AppRegistry
from tidings.core.webhooks import WebhookTarget
from tidings.server.webhook_queue import RedisQueue, SqliteQueue
from tidings.server.webhooks import QueueLock, WebhookSender, WebhookSettings

async def main(redis_url, sqlite, hook, rate, seconds, per_pass, prefix):
    app = App(id="1", key="k", secret="s", webhooks=(WebhookTarget(url=hook),))
    client = connect(redis_url, max_connections=8) if redis_url else None
    queue = RedisQueue(client, prefix) if client else SqliteQueue(sqlite)
    sender = WebhookSender(
        AppRegistry.of([app]), queue, WebhookSettings(vacated_delay=0.0),
        QueueLock(client, prefix, "bench"),
    )
    await sender.start()
    occur = getattr(sender, "occur", None)

    def happen(key, event):
        if occur is not None:
            occur(app, key, event)
        elif not sender.cancel(app, key):
            sender.emit(app, event)

    events = int(rate * seconds)
    started = time.monotonic()
    cpu = time.process_time()
    for n in range(0, events, 4):
        c, u = f"presence-{n}", str(n)
        happen(("vacated", c), {"name": "channel_occupied", "channel": c})
        happen(("removed", c, u), {"name": "member_added", "channel": c, "user_id": u})
        sender.defer(app, ("removed", c, u), {"name": "member_removed", "channel": c, "user_id": u})
        sender.defer(app, ("vacated", c), {"name": "channel_vacated", "channel": c})
        if (n // 4 + 1) % max(1, per_pass // 4) == 0:
            ahead = started + (n + 4) / rate - time.monotonic()
            await asyncio.sleep(max(0.0, ahead))
    print("emitted", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent's receiver has every event
    cpu = time.process_time() - cpu
    await sender.close()
    print(json.dumps({"cpu_s": cpu, "events": events}), flush=True)

asyncio.run(main(*sys.argv[1:3], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]),
                 int(sys.argv[6]), sys.argv[7]))
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="CPU per webhook event of the sender alone")
    p.add_argument("--backend", choices=("redis", "sqlite"), default="redis")
    p.add_argument("--rate", type=float, default=4000.0, help="events per second")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--per-pass", type=int, default=4, help="events per event-loop pass")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--peer-rev", default="652e1a5")
    return p.parse_args(argv)


async def one(
    args: argparse.Namespace, design: str, src: Path, redis: RedisServer | None, workdir: Path
) -> dict[str, Any]:
    receiver = Receiver()
    await receiver.start()
    before = redis.commandstats() if redis else {}
    prefix = f"bench-{design}-{time.monotonic_ns()}"
    env = {**server_env(), "PYTHONPATH": str(src)}
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-c",
        DRIVER,
        redis.url if redis else "",
        str(workdir / f"{prefix}.sqlite3"),
        f"http://127.0.0.1:{receiver.port}/hook",
        str(args.rate),
        str(args.seconds),
        str(args.per_pass),
        prefix,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 10 * args.seconds + 60)
        assert line.strip() == b"emitted", line
        expected = int(args.rate * args.seconds)
        started = time.monotonic()
        while receiver.events < expected:
            if time.monotonic() - started > 120:
                raise RuntimeError(f"{receiver.events} of {expected} events arrived")
            await asyncio.sleep(0.01)
        proc.stdin.write(b"done\n")
        await proc.stdin.drain()
        result = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
    finally:
        if proc.returncode is None:
            await asyncio.wait_for(proc.wait(), 60)
        await receiver.stop()
    after = redis.commandstats() if redis else {}
    calls = {
        name.removeprefix("cmdstat_"): (v["calls"] - before.get(name, {}).get("calls", 0))
        for name, v in after.items()
    }
    events = result["events"]
    client = sum(n for k, n in calls.items() if k in ROUND_TRIPS[design])
    return {
        "design": design,
        "events": events,
        "received": receiver.events,
        "requests": receiver.requests,
        "cpu_us_per_event": result["cpu_s"] / events * 1e6,
        "round_trips_per_event": client / events,
        "calls_per_event": {k: round(n / events, 3) for k, n in calls.items() if n},
    }


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    trees = {"durable": ROOT / "src", "window": peer_tree(args.peer_rev, workdir)}
    redis = RedisServer(workdir) if args.backend == "redis" else None
    rows: list[dict[str, Any]] = []
    try:
        for run in range(args.runs):
            for design, src in trees.items():
                row = await one(args, design, src, redis, workdir)
                row["run"] = run
                rows.append(row)
                log(
                    f"run {run} {design:8} {row['events']} events in {row['requests']} requests:"
                    f" {row['cpu_us_per_event']:.1f} µs CPU/event,"
                    f" {row['round_trips_per_event']:.3f} Redis round trips/event"
                )
    finally:
        if redis is not None:
            redis.stop()
    summary = {
        design: {
            "cpu_us_per_event": statistics.median(
                r["cpu_us_per_event"] for r in rows if r["design"] == design
            ),
            "round_trips_per_event": statistics.median(
                r["round_trips_per_event"] for r in rows if r["design"] == design
            ),
            "requests": statistics.median(r["requests"] for r in rows if r["design"] == design),
        }
        for design in trees
    }
    ratios = [
        d["cpu_us_per_event"] / w["cpu_us_per_event"]
        for d, w in zip(rows[0::2], rows[1::2], strict=True)
    ]
    summary["durable_over_window"] = statistics.median(ratios)
    return {"args": vars(args), "rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = procs.CACHE / f"webhook-sender-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(main_async(args, workdir))
    finally:
        procs.stop_all()
    result["machine"] = procs.machine()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"webhook-sender-{args.backend}-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    s = result["summary"]
    print(
        f"\nwebhook sender, {args.backend}, {args.rate:.0f} events/s, {args.per_pass} per pass,"
        f" medians of {args.runs} runs ({out.name}):"
    )
    for design in ("durable", "window"):
        m = s[design]
        print(
            f"  {design:8} {m['cpu_us_per_event']:6.1f} µs CPU per event,"
            f" {m['round_trips_per_event']:.3f} Redis round trips per event,"
            f" {m['requests']:.0f} requests"
        )
    print(f"  durable / window CPU per event (paired by run): {s['durable_over_window']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
