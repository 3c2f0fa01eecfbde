"""What one idle HTTP fallback session costs the server, against one WebSocket (a benchmark,
not a test).

    .venv/bin/python bench/fallback_memory.py [--sessions 3000] [--runs 1] [--quick]

pusher-js falls back to ``xhr_streaming`` (one long chunked response per session) or
``xhr_polling`` (long polls) where WebSocket is blocked (docs/fallback.md). For each kind in
turn, WebSocket, streaming and polling, and for every run (the order rotates per run), this:

1. starts `tidings serve` (one process, memory mode) and reads its RSS once it is ready;
2. opens N sessions of that kind from this process (aiohttp's client, at most 100 opening at
   once) and subscribes each to channel "bench", as pusher-js does: a WebSocket sends
   pusher:subscribe; a fallback session posts it with ``xhr_send`` on a connection of its own
   (closed after the answer: only the receive request stays, as in a browser that let its
   idle keep-alive connection go);
3. 2 s later reads RSS again: RSS per idle session = (RSS - baseline) / N. A streaming session
   is then one open response; a polling one a long poll parked for up to 25 s;
4. measures the server's CPU over 10 idle seconds (CPU-ms per 1,000 sessions per second);
5. publishes one event through the REST API and checks that every session got it once.

It prints a table (median over runs), the ratios to WebSocket, and records
bench/results/fallback-memory-<stamp>.json. Exit status 0 only if every session of every kind
opened, subscribed and received the publication exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

import procs
from loadclient import APP_KEY, signed_request
from procs import PYTHON, RESULTS, log
from servers import server_env, tidings_config

KINDS = ("websocket", "xhr_streaming", "xhr_polling")
QUERY = "protocol=7&client=js&version=8.4.0&flash=false"
SUBSCRIBE = json.dumps({"event": "pusher:subscribe", "data": {"channel": "bench"}})
OPENING = 100  # sessions opening at once
IDLE_SECONDS = 10.0
PHASE_DEADLINE = 240.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Memory per idle HTTP fallback session")
    p.add_argument("--sessions", type=int, default=3000)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--quick", action="store_true", help="500 sessions, 1 run")
    args = p.parse_args(argv)
    if args.quick:
        args.sessions, args.runs = 500, 1
    args.kinds = [k for k in args.kinds.split(",") if k]
    if unknown := set(args.kinds) - set(KINDS):
        p.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    return args


@dataclass
class Tally:
    """What the sessions of one measurement saw."""

    n: int
    opened: int = 0
    subscribed: int = 0
    failed: int = 0
    received: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    all_opened: asyncio.Event = field(default_factory=asyncio.Event)
    all_subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    all_received: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.received = [0] * self.n

    def fail(self, reason: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(reason)
        self._check()

    def open(self) -> None:
        self.opened += 1
        self._check()

    def subscribe(self) -> None:
        self.subscribed += 1
        self._check()

    def messages(self, i: int, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            if message.get("event") == "e" and message.get("channel") == "bench":
                self.received[i] += 1
                if self.received[i] == 1:
                    self._check()

    def _check(self) -> None:
        if self.opened + self.failed >= self.n:
            self.all_opened.set()
        if self.subscribed + self.failed >= self.n:
            self.all_subscribed.set()
        if sum(1 for r in self.received if r) + self.failed >= self.n:
            self.all_received.set()


def session_path() -> str:
    """``{server}/{session}`` as pusher-js picks them: 0-999 and 8 base-32 characters."""
    name = "".join(random.choices("0123456789abcdefghijklmnopqrstuv", k=8))
    return f"{random.randrange(1000)}/{name}"


def frames(body: bytes) -> list[tuple[str, Any]]:
    """SockJS frames, one per line: ``o``, ``h``, ``a[...]`` (messages as JSON strings), ``c``."""
    out: list[tuple[str, Any]] = []
    for line in body.split(b"\n"):
        if not line or line.startswith(b"hh"):  # blank or the streaming prelude
            continue
        kind = chr(line[0])
        value = json.loads(line[1:]) if kind in "ac" else None
        if kind == "a":
            value = [json.loads(m) for m in value]
        out.append((kind, value))
    return out


class Fallback:
    """One fallback session's URLs and its xhr_send."""

    def __init__(self, http: aiohttp.ClientSession, sends: aiohttp.ClientSession, port: int):
        self.http = http
        self.sends = sends
        self.base = f"http://127.0.0.1:{port}/pusher/app/{APP_KEY}/{session_path()}"

    def url(self, kind: str) -> str:
        return f"{self.base}/{kind}?{QUERY}&t={time.time_ns() // 1_000_000}&n=1"

    async def send(self, text: str) -> None:
        body = json.dumps([text]).encode()
        async with self.sends.post(self.url("xhr_send"), data=body) as resp:
            if resp.status != 204:
                raise RuntimeError(f"xhr_send answered {resp.status}")


async def run_websocket(
    i: int, port: int, http: aiohttp.ClientSession, tally: Tally, opened: Callable[[], None]
) -> None:
    url = f"http://127.0.0.1:{port}/app/{APP_KEY}?{QUERY}"
    async with http.ws_connect(url, autoping=True, max_msg_size=1 << 20) as ws:
        first = json.loads(await ws.receive_str())
        if first.get("event") != "pusher:connection_established":
            raise RuntimeError(f"first message {first}")
        tally.open()
        opened()
        await ws.send_str(SUBSCRIBE)
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            message = json.loads(msg.data)
            if message.get("event") == "pusher_internal:subscription_succeeded":
                tally.subscribe()
            tally.messages(i, [message])


async def take(
    i: int,
    chunk: bytes,
    session: Fallback,
    tally: Tally,
    opened: Callable[[], None],
    subscribed: bool,
) -> bool:
    """Count the frames of one streamed line or one poll's body, answering the greeting
    with the subscribe; whether the session is subscribed after them."""
    for kind, value in frames(chunk):
        if kind == "c":
            raise RuntimeError(f"closed: {value}")
        if kind != "a":
            continue
        for message in value:
            event = message.get("event")
            if event == "pusher:connection_established":
                tally.open()
                opened()
                await session.send(SUBSCRIBE)
            elif event == "pusher_internal:subscription_succeeded" and not subscribed:
                subscribed = True
                tally.subscribe()
        tally.messages(i, value)
    return subscribed


async def run_streaming(
    i: int,
    port: int,
    http: aiohttp.ClientSession,
    sends: aiohttp.ClientSession,
    tally: Tally,
    opened: Callable[[], None],
) -> None:
    session = Fallback(http, sends, port)
    async with http.post(session.url("xhr_streaming"), data=b"") as resp:
        if resp.status != 200:
            raise RuntimeError(f"xhr_streaming answered {resp.status}")
        subscribed = False
        while True:
            line = await resp.content.readline()
            if not line:
                raise RuntimeError("the stream ended")
            subscribed = await take(i, line, session, tally, opened, subscribed)


async def run_polling(
    i: int,
    port: int,
    http: aiohttp.ClientSession,
    sends: aiohttp.ClientSession,
    tally: Tally,
    opened: Callable[[], None],
) -> None:
    session = Fallback(http, sends, port)
    subscribed = False
    while True:
        async with http.post(session.url("xhr"), data=b"") as resp:
            if resp.status != 200:
                raise RuntimeError(f"xhr answered {resp.status}")
            body = await resp.read()
        subscribed = await take(i, body, session, tally, opened, subscribed)


async def publish(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(signed_request(port, 0, int(time.time())))
    await writer.drain()
    status = await reader.readline()
    writer.close()
    if b" 200 " not in status:
        raise RuntimeError(f"publish answered {status!r}")


async def measure_sessions(kind: str, n: int, port: int, server_pid: int) -> dict[str, Any]:
    tally = Tally(n)
    opening = asyncio.Semaphore(OPENING)
    # limit=0: one connection per receive request; sends get a connection each, closed after
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=OPENING, force_close=True), timeout=timeout
        ) as sends,
    ):

        async def one(i: int) -> None:
            await opening.acquire()  # released once this session is open (or failed)
            released = False

            def release() -> None:
                nonlocal released
                if not released:
                    released = True
                    opening.release()

            try:
                if kind == "websocket":
                    await run_websocket(i, port, http, tally, release)
                elif kind == "xhr_streaming":
                    await run_streaming(i, port, http, sends, tally, release)
                else:
                    await run_polling(i, port, http, sends, tally, release)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                tally.fail(f"{type(exc).__name__}: {exc}")
            finally:
                release()

        baseline = procs.rss_bytes(server_pid)
        started = time.monotonic()
        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        try:
            await asyncio.wait_for(tally.all_opened.wait(), PHASE_DEADLINE)
            open_s = time.monotonic() - started
            await asyncio.wait_for(tally.all_subscribed.wait(), PHASE_DEADLINE)
            await asyncio.sleep(2)
            rss = procs.rss_bytes(server_pid)
            cpu0, t0 = procs.cpu_seconds(server_pid), time.monotonic()
            await asyncio.sleep(IDLE_SECONDS)
            idle_cpu = (procs.cpu_seconds(server_pid) - cpu0) / (time.monotonic() - t0)
            await publish(port)
            try:
                await asyncio.wait_for(tally.all_received.wait(), 60)
            except TimeoutError:
                pass
            await asyncio.sleep(1)  # a duplicate would arrive by now
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    once = sum(1 for r in tally.received if r == 1)
    return {
        "kind": kind,
        "sessions": n,
        "opened": tally.opened,
        "subscribed": tally.subscribed,
        "failed": tally.failed,
        "errors": tally.errors,
        "open_seconds": open_s,
        "rss_baseline_bytes": baseline,
        "rss_bytes": rss,
        "kib_per_session": (rss - baseline) / 1024 / n,
        "idle_cpu_ms_per_1k_sessions_per_s": 1e6 * idle_cpu / n,
        "received_once": once,
        "ok": tally.failed == 0 and tally.subscribed == n and once == n,
    }


def measure(kind: str, n: int, workdir: Path, run: int) -> dict[str, Any]:
    port = procs.free_port()
    config = tidings_config(workdir / f"tidings-{kind}-{run}.toml", "warning")
    cmd = [PYTHON, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--config", str(config), "--max-connection-rate", "0"]
    server_log = workdir / f"server-{kind}-{run}.log"
    server = procs.start(cmd, server_log, env=server_env())
    try:
        procs.wait_ready(port, server, 60, server_log)
        time.sleep(1)
        result = asyncio.run(measure_sessions(kind, n, port, server.pid))
    finally:
        procs.stop(server)
    log(
        f"{kind}: {result['subscribed']:,}/{n:,} subscribed, {result['kib_per_session']:.2f} KiB "
        f"per session, idle CPU {result['idle_cpu_ms_per_1k_sessions_per_s']:.1f} ms/s per 1k, "
        f"received once {result['received_once']:,}"
        + (f", errors {result['errors']}" if result["errors"] else "")
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, procs.on_signal)
    procs.raise_fd_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"fallback-memory-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    try:
        for run in range(args.runs):
            kinds = args.kinds[run % len(args.kinds) :] + args.kinds[: run % len(args.kinds)]
            for kind in kinds:
                results.append(measure(kind, args.sessions, workdir, run))
    finally:
        procs.stop_all()
    out = RESULTS / f"fallback-memory-{stamp}.json"
    out.write_text(json.dumps({"results": results, "machine": procs.machine()}, indent=2))

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results if r["kind"] == kind)

    print(f"\nN = {args.sessions:,} idle sessions subscribed to one channel, {args.runs} run(s)\n")
    print("| kind | RSS KiB / idle session | × WebSocket | idle CPU-ms/s per 1k | all once |")
    print("|---|---:|---:|---:|---|")
    ws = median("websocket", "kib_per_session") if "websocket" in args.kinds else None
    for kind in args.kinds:
        kib = median(kind, "kib_per_session")
        ratio = f"{kib / ws:.1f}" if ws else "-"
        cpu = median(kind, "idle_cpu_ms_per_1k_sessions_per_s")
        ok = all(r["ok"] for r in results if r["kind"] == kind)
        print(f"| {kind} | {kib:.2f} | {ratio} | {cpu:.1f} | {ok} |")
    print(f"\nresults: {out}")
    failed = [r for r in results if not r["ok"]]
    for r in failed:
        print(
            f"FAILED: {r['kind']}: {r['subscribed']:,}/{r['sessions']:,} subscribed, "
            f"{r['received_once']:,} received once, errors {r['errors']}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
