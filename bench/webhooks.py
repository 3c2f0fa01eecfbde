"""What a durable webhook batch window costs (a benchmark, not a test; issue 17, item 6).

    .venv/bin/python bench/webhooks.py [--backend redis|sqlite] [--cycles 4000] [--runs 3]

Presence churn: ``--sockets`` WebSocket clients join and leave a new presence channel
each, ``--cycles`` times in all, so each cycle makes four webhook events (channel_occupied,
member_added, member_removed, channel_vacated; ``webhook_vacated_delay`` is 0 and no join
undoes an earlier leave, so nothing is held back or cancelled). A real HTTP receiver in
this process answers 200 and counts the events. Three servers, interleaved ``--runs``
times on one private redis-server (``--backend redis``) or each on its own SQLite file
(``--backend sqlite``):

- ``none``: this tree, no webhook configured (the churn's own cost);
- ``durable``: this tree: each event written to the queue as it happens;
- ``window``: ``--peer-rev`` (default 652e1a5, main before this change): events kept in
  memory for ``webhook_batch_delay`` (50 ms), then written as one batch.

Per server it reports server CPU-seconds (every process of its tree) and Redis commands per
cycle, and the webhook part: (CPU of ``durable`` or ``window`` minus CPU of ``none``) per
webhook event. The machine is shared, so compare ratios of one run; medians over the runs.
Results: bench/results/webhooks-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import websockets
from aiohttp import web

import procs
from cluster_nodes import RedisServer
from loadclient import APP_ID, APP_KEY, APP_SECRET
from procs import PYTHON, RESULTS, ROOT, log
from servers import server_env

MODES = ("none", "durable", "window")
EVENTS_PER_CYCLE = 4
QUIET = 1.0  # seconds without a webhook event: the queue is drained


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Cost of the durable webhook batch window")
    p.add_argument("--backend", choices=("redis", "sqlite"), default="redis")
    p.add_argument("--sockets", type=int, default=50)
    p.add_argument("--cycles", type=int, default=4000, help="join+leave cycles per server")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--peer-rev", default="652e1a5", help="git revision of the 'window' server")
    p.add_argument("--deadline", type=float, default=120.0, help="seconds per phase at most")
    return p.parse_args(argv)


class Receiver:
    """The webhook receiver: answers 200, counts events."""

    def __init__(self) -> None:
        self.events = 0
        self.requests = 0
        self.port = procs.free_port()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        self.events += len(json.loads(body)["events"])
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def peer_tree(rev: str, workdir: Path) -> Path:
    """The ``src`` of ``rev`` (git archive), with this tree's compiled fan-out module."""
    target = workdir / "peer"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    for built in (ROOT / "src" / "tidings").glob("_fanout*.so"):
        shutil.copy(built, target / "src" / "tidings" / built.name)
    return target / "src"


def config(path: Path, mode: str, receiver: Receiver, queue: Path) -> Path:
    text = (
        'log_level = "warning"\n'
        f'webhook_queue = "{queue}"\n'
        "webhook_batch_delay = 0.05\n"
        "webhook_vacated_delay = 0.0\n"
        "max_connections = 100000\n"
        f'\n[[apps]]\nid = "{APP_ID}"\nkey = "{APP_KEY}"\nsecret = "{APP_SECRET}"\n'
        "max_connections = 100000\n"
    )
    if mode != "none":
        text += f'\n[[apps.webhooks]]\nurl = "http://127.0.0.1:{receiver.port}/hook"\n'
    path.write_text(text)
    return path


def auth(socket_id: str, channel: str, data: str) -> str:
    digest = hmac.new(APP_SECRET.encode(), f"{socket_id}:{channel}:{data}".encode(), hashlib.sha256)
    return f"{APP_KEY}:{digest.hexdigest()}"


async def churn_one(url: str, index: int, cycles: int, deadline: float) -> int:
    """Join and leave a new presence channel ``cycles`` times; how many joins succeeded.

    A new channel each time: a join never undoes the previous leave, so every cycle makes
    its four webhook events whatever the timing (both designs would drop a pair alike)."""
    member = json.dumps({"user_id": f"u{index}"})
    done = 0
    async with websockets.connect(url, max_queue=None) as ws:
        socket_id = json.loads(json.loads(await ws.recv())["data"])["socket_id"]
        while done < cycles and time.monotonic() < deadline:
            channel = f"presence-churn-{index}-{done}"
            data = {"channel": channel, "auth": auth(socket_id, channel, member)}
            data["channel_data"] = member
            await ws.send(json.dumps({"event": "pusher:subscribe", "data": data}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message["event"] == "pusher_internal:subscription_succeeded":
                    break
            leave = {"event": "pusher:unsubscribe", "data": {"channel": channel}}
            await ws.send(json.dumps(leave))
            done += 1
        await ws.send(json.dumps({"event": "pusher:ping", "data": {}}))
        while json.loads(await asyncio.wait_for(ws.recv(), 30))["event"] != "pusher:pong":
            pass
    return done


async def measure(
    args: argparse.Namespace, mode: str, workdir: Path, redis: RedisServer | None, peer: Path
) -> dict[str, Any]:
    receiver = Receiver()
    await receiver.start()
    stamp = f"{mode}-{time.monotonic_ns()}"
    cfg = config(workdir / f"{stamp}.toml", mode, receiver, workdir / f"{stamp}.sqlite3")
    port = procs.free_port()
    cmd = [PYTHON, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--config", str(cfg)] + (["--redis", redis.url] if redis else [])
    env = server_env()
    if mode == "window":
        env["PYTHONPATH"] = str(peer)
    server_log = workdir / f"{stamp}.log"
    proc = procs.start(cmd, server_log, env=env, stdout=subprocess.DEVNULL)
    try:
        await asyncio.to_thread(procs.wait_ready, port, proc, 60.0, server_log)
        url = f"ws://127.0.0.1:{port}/app/{APP_KEY}?protocol=7&client=bench&version=1"
        per_socket = -(-args.cycles // args.sockets)
        await asyncio.gather(*(churn_one(url, i, 5, time.monotonic() + 30) for i in range(5)))
        await settle(receiver, 30)
        before_events = receiver.events
        commands = redis.client.info("stats")["total_commands_processed"] if redis else 0
        stats_before = redis.commandstats() if redis else {}
        cpu = procs.cpu_seconds(proc.pid)
        started = time.monotonic()
        deadline = started + args.deadline
        done = sum(
            await asyncio.gather(
                *(churn_one(url, i, per_socket, deadline) for i in range(args.sockets))
            )
        )
        churned = time.monotonic() - started
        await settle(receiver, args.deadline)
        delivered_in = time.monotonic() - started - QUIET
        cpu = procs.cpu_seconds(proc.pid) - cpu
        if redis:
            commands = redis.client.info("stats")["total_commands_processed"] - commands
        by_command = {
            name.removeprefix("cmdstat_"): round(
                (calls["calls"] - stats_before.get(name, {}).get("calls", 0)) / done, 2
            )
            for name, calls in (redis.commandstats() if redis else {}).items()
        }
        events = receiver.events - before_events
        return {
            "mode": mode,
            "cycles": done,
            "events": events,
            "requests": receiver.requests,
            "churn_s": churned,
            "delivered_s": delivered_in,
            "server_cpu_s": cpu,
            "cpu_us_per_cycle": cpu / done * 1e6,
            "redis_commands_per_cycle": commands / done if redis else None,
            "events_per_s": events / delivered_in if events else 0.0,
            "events_per_cycle": events / done,
            "redis_calls_per_cycle": {k: v for k, v in by_command.items() if v},
        }
    finally:
        procs.stop(proc)
        await receiver.stop()


async def settle(receiver: Receiver, timeout: float) -> None:
    """Wait until no webhook event arrived for ``QUIET`` seconds (the queue is drained)."""
    deadline = time.monotonic() + timeout
    seen, since = receiver.events, time.monotonic()
    while time.monotonic() - since < QUIET:
        if time.monotonic() > deadline:
            raise RuntimeError(f"webhook events still arriving after {timeout} s")
        await asyncio.sleep(0.05)
        if receiver.events != seen:
            seen, since = receiver.events, time.monotonic()


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        out[mode] = {
            "cpu_us_per_cycle": statistics.median(r["cpu_us_per_cycle"] for r in mine),
            "redis_commands_per_cycle": statistics.median(
                r["redis_commands_per_cycle"] or 0 for r in mine
            ),
            "events_per_s": statistics.median(r["events_per_s"] for r in mine),
            "events_per_cycle": statistics.median(r["events_per_cycle"] for r in mine),
        }
    base = out["none"]["cpu_us_per_cycle"]
    for mode in ("durable", "window"):
        extra = out[mode]["cpu_us_per_cycle"] - base
        out[mode]["webhook_cpu_us_per_event"] = extra / out[mode]["events_per_cycle"]
    out["durable_over_window_cpu"] = (
        out["durable"]["cpu_us_per_cycle"] / out["window"]["cpu_us_per_cycle"]
    )
    return out


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    peer = peer_tree(args.peer_rev, workdir)
    redis = RedisServer(workdir) if args.backend == "redis" else None
    rows: list[dict[str, Any]] = []
    try:
        for run in range(args.runs):
            for mode in MODES:
                row = await measure(args, mode, workdir, redis, peer)
                row["run"] = run
                rows.append(row)
                log(
                    f"run {run} {mode:8} {row['cycles']} cycles, {row['events']} events:"
                    f" {row['cpu_us_per_cycle']:.0f} µs server CPU/cycle,"
                    f" {row['redis_commands_per_cycle'] or 0:.1f} Redis commands/cycle,"
                    f" {row['events_per_s']:.0f} events/s delivered"
                )
    finally:
        if redis is not None:
            redis.stop()
    return {"backend": args.backend, "args": vars(args), "rows": rows, "summary": summary(rows)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = procs.CACHE / f"webhooks-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(main_async(args, workdir))
    finally:
        procs.stop_all()
    result["machine"] = procs.machine()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"webhooks-{args.backend}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    s = result["summary"]
    print(f"\nwebhooks, {args.backend}, medians of {args.runs} runs ({out.name}):")
    for mode in MODES:
        m = s[mode]
        extra = m.get("webhook_cpu_us_per_event")
        print(
            f"  {mode:8} {m['cpu_us_per_cycle']:7.0f} µs server CPU per join+leave,"
            f" {m['redis_commands_per_cycle']:5.1f} Redis commands per cycle"
            + (f", webhooks {extra:5.1f} µs CPU per event" if extra is not None else "")
            + (f", {m['events_per_s']:.0f} events/s" if mode != "none" else "")
        )
    print(f"  durable / window server CPU per cycle: {s['durable_over_window_cpu']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
