"""Live models on PostgreSQL (issue 15's benchmark; a benchmark, not a test).

    .venv/bin/python bench/live.py          # 1,000 saves/s for 20 s, 100 filters, 1,000 sockets
    .venv/bin/python bench/live.py --quick  # the same rate for 4 s, 25 filters, 250 sockets
    .venv/bin/python bench/live.py --quick --profile  # plus cProfile of the app's threads
    .venv/bin/python bench/live.py --mode redis-client --processes 2  # app in 2 processes
    .venv/bin/python bench/live.py --quick --loop uvloop  # the embedding app on uvloop

What runs:

- PostgreSQL: a cluster of its own (tests/postgres_server.py: initdb + pg_ctl on a free port,
  fsync off), a table ``bench_item`` (id, title, list_id, version, ts) with ``--rows`` rows
  spread evenly over ``--filters`` values of ``list_id``.
- The app process (this one): an embedded ``Realtime`` listening on a free port, the
  SQLAlchemy live model ``@rt.live(Item, fields=[...], filters=["list_id"])``, and
  ``--writers`` threads (the app's workers) updating one random row per transaction, at
  ``--rate`` rows/s together (open loop: each save is scheduled; late saves are reported,
  not hidden). A writer holds its rows loaded, as an app updating rows it just read would:
  a save is one UPDATE and one COMMIT. With ``--session-per-save`` each save is a web
  request's: a session of its own that reads the row (a SELECT), changes it and commits.
- The subscribers: ``--subscribers`` WebSocket connections in ``--client-processes`` other
  processes (this file with ``--client``, asyncio + websockets), spread evenly over the
  filter channels ``private-live.item.list_id.N``; each waits for its ``tidings:snapshot``
  before the measured window opens.

What it reports:

- save-to-client latency p50/p99/max: every save writes ``time.time()`` into the row's ``ts``
  just before COMMIT; the ``updated`` event carries it; a client's latency is its receive
  time minus that (one machine, one clock). Deliveries received / expected (each save
  reaches the subscribers of its row's one channel).
- DB statements per save, counted by SQLAlchemy's ``before_cursor_execute`` on the writer's
  engine, with Tidings and in a baseline run of the same saves without it (target: 0 extra).
- CPU per change: this process's CPU time (writer + Tidings, getrusage) over the window
  divided by the saves, with Tidings and in the baseline; the difference is what Tidings
  costs per change (events built, occupied check, fan-out to the sockets). The subscribers'
  and PostgreSQL's CPU are not in it.

``--mode redis-client`` measures the multi-process setup instead: ``--processes`` writer
processes (the app's workers, one writer thread each, ``--rate`` saves/s together), each
publishing through ``Realtime.client("redis://…")`` to a ``tidings serve --redis`` node
that holds the subscribers' sockets; a redis-server of its own (tests/redis_server.py).
The node fetches each channel's snapshot from the signed endpoint
(``live_snapshot_url``) that this process serves. CPU per change is then the writer
processes' CPU (writer thread plus the client's loop thread) over their saves, against a
baseline of the same processes without Tidings; the node's and Redis's CPU per change are
reported beside it.

Results: a table on stdout and bench/results/live-<timestamp>.json. ``--profile``: cProfile
runs in the writer threads and on the event loop's thread during the live window (it slows
them: read its shares, not the rates), and the functions that took the most time are
written to bench/results/live-<timestamp>-profile.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import hmac
import io
import itertools
import json
import os
import pstats
import random
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Float, Integer, String, create_engine, event, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

T = TypeVar("T")
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT / "tests"))  # tests/postgres_server.py: the same cluster the tests use

APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"
SUBSCRIBE_IN_FLIGHT = 100


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_item"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    list_id: Mapped[int] = mapped_column(Integer, index=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    ts: Mapped[float] = mapped_column(Float, default=0.0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Live models on PostgreSQL: latency, queries, CPU")
    p.add_argument("--quick", action="store_true", help="4 s, 25 filters, 250 subscribers")
    p.add_argument("--rate", type=int, default=1000, help="row updates per second")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window")
    p.add_argument("--filters", type=int, default=100)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--writers", type=int, default=1, help="writer threads (app workers)")
    p.add_argument("--client-processes", type=int, default=2)
    p.add_argument(
        "--session-per-save",
        action="store_true",
        help="each save in a session of its own that reads the row first (a web request)",
    )
    p.add_argument(
        "--profile", action="store_true", help="cProfile the app's threads in the live window"
    )
    p.add_argument(
        "--mode",
        choices=["embedded", "redis-client"],
        default="embedded",
        help="embedded: one app process serves the sockets; redis-client: --processes app "
        "processes publish through Redis to a `tidings serve --redis` node",
    )
    p.add_argument("--processes", type=int, default=2, help="writer processes (redis-client)")
    p.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the embedding app's event loop (uvicorn picks uvloop when it is installed)",
    )
    p.add_argument("--writer-process", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--client", nargs=2, metavar=("PORT", "CHANNELS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.filters, args.subscribers, args.rows = 4.0, 25, 250, 2_500
    return args


# --- the subscribers (another process) ------------------------------------------------------


def channel_of(list_id: int) -> str:
    return f"private-live.item.list_id.{list_id}"


async def client_main(port: int, channels: list[str]) -> None:
    """One socket per channel name given; stdin: 'report' prints latencies, then exit."""
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    received = 0
    ready = 0
    subscribe_slots = asyncio.Semaphore(SUBSCRIBE_IN_FLIGHT)
    all_ready = asyncio.Event()

    async def subscriber(channel: str) -> None:
        nonlocal received, ready
        url = f"ws://127.0.0.1:{port}/app/{APP_KEY}?protocol=7&client=js&version=8.6.0"
        async with subscribe_slots:
            ws = await connect(url, compression=None, max_queue=None)
            hello = json.loads(await ws.recv())
            socket_id = json.loads(hello["data"])["socket_id"]
            sig = hmac.new(
                APP_SECRET.encode(), f"{socket_id}:{channel}".encode(), hashlib.sha256
            ).hexdigest()
            await ws.send(
                json.dumps(
                    {
                        "event": "pusher:subscribe",
                        "data": {"channel": channel, "auth": f"{APP_KEY}:{sig}"},
                    }
                )
            )
            while True:
                message = json.loads(await ws.recv())
                if message.get("event") == "tidings:snapshot":
                    break
                if message.get("event") == "pusher:subscription_error":
                    raise RuntimeError(f"{channel}: {message}")
        ready += 1
        if ready == len(channels):
            all_ready.set()
        async for frame in ws:
            now = time.time()
            message = json.loads(frame)
            if message.get("event") == "updated":
                data = json.loads(message["data"])
                received += 1
                if "ts" in data:
                    latencies.append(now - float(data["ts"]))
            elif message.get("event") == "pusher:ping":
                await ws.send('{"event":"pusher:pong","data":{}}')

    tasks = [asyncio.create_task(subscriber(c)) for c in channels]
    waiter = asyncio.create_task(all_ready.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not waiter:
            task.result()  # a subscriber that ended before everyone was ready failed
    print(json.dumps({"ready": ready}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() in ("report", ""):
            break
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "received": received,
                "latencies": [round(x, 6) for x in latencies],
                "cpu": cpu.ru_utime + cpu.ru_stime,
            }
        ),
        flush=True,
    )
    for task in tasks:
        task.cancel()


# --- the app process ----------------------------------------------------------------------


@dataclass
class Window:
    """One measured run of the writer."""

    saves: int = 0
    late: int = 0  # saves that started more than 10 ms after their scheduled time
    statements: int = 0
    cpu: float = 0.0
    writer_cpu: float = 0.0  # the writer threads' own CPU (SQLAlchemy, Tidings' session hooks)
    seconds: float = 0.0
    profiles: list[cProfile.Profile] = field(default_factory=list)


def write(
    factory: sessionmaker[Session],
    engine: Any,
    args: argparse.Namespace,
    seed: int,
    profile: bool = False,
    share: tuple[int, int] = (0, 1),
) -> Window:
    """``args.writers`` threads, each updating one random row of its own share per
    transaction, together ``args.rate`` saves/s for ``args.seconds``."""
    window = Window()
    statements = itertools.count()
    late = itertools.count()

    def count(*_: Any) -> None:
        next(statements)

    with factory() as session:
        ids = list(session.scalars(select(Item.id).order_by(Item.id)))[share[0] :: share[1]]
    writers = max(1, args.writers)
    rate = args.rate / writers
    total = int(rate * args.seconds)
    go = threading.Barrier(writers + 1)
    lock = threading.Lock()

    def writer(k: int) -> None:
        cpu = time.thread_time()
        if not profile:
            save(k)
        else:
            profiler = cProfile.Profile()
            window.profiles.append(profiler)
            profiler.runcall(save, k)
        with lock:
            window.writer_cpu += time.thread_time() - cpu

    def save(k: int) -> None:
        rng = random.Random(seed * 100 + k)
        mine = ids[k::writers]
        with factory() as session:
            rows = list(session.scalars(select(Item).where(Item.id.in_(mine))))
            session.commit()
            go.wait()
            start = time.monotonic()
            for n in range(total):
                wait = start + n / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -0.01:
                    next(late)
                if args.session_per_save:  # a request: its own session, the row read afresh
                    with factory() as request:
                        row = request.get_one(Item, rng.choice(mine))
                        row.title = f"title {k}.{n}"
                        row.ts = time.time()
                        request.commit()
                    continue
                row = rng.choice(rows)
                row.title = f"title {k}.{n}"
                row.ts = time.time()
                session.commit()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    event.listen(engine, "before_cursor_execute", count)
    try:
        go.wait()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        for thread in threads:
            thread.join()
        window.seconds = time.monotonic() - start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    window.saves = total * writers
    window.statements = next(statements)
    window.late = next(late)
    window.cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return window


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from postgres_server import PostgresServer

    with PostgresServer() as pg:
        log(f"PostgreSQL on port {pg.port} ({pg.bindir})")
        url = pg.sqlalchemy_url(pg.create_database())
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(Item),
                [
                    {"title": f"row {n}", "list_id": n % args.filters, "version": 1, "ts": 0.0}
                    for n in range(args.rows)
                ],
            )
        snapshot_engine = create_engine(url)
        try:
            if args.mode == "redis-client":
                return cluster_run(args, url, snapshot_engine)
            factory = sessionmaker(engine, expire_on_commit=False)
            log(f"baseline: {args.rate} saves/s for {args.seconds} s without Tidings")
            baseline = write(factory, engine, args, seed=1)
            live = run_loop(args, live_run(args, factory, engine, snapshot_engine))
            return summarize(args, baseline, live)
        finally:
            snapshot_engine.dispose()
            engine.dispose()


def run_loop(args: argparse.Namespace, main: Coroutine[Any, Any, T]) -> T:
    """``main`` on the event loop the embedding app would run (``--loop``)."""
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def declare(rt: Any, snapshot_engine: Any) -> None:
    """The benchmark's live model on ``rt`` (its snapshots read with ``snapshot_engine``)."""

    @rt.live(Item, fields=["id", "title", "list_id", "version", "ts"], filters=["list_id"])
    class ItemLive:
        def authorize(self, user: object, list_id: str) -> bool:
            return True

        def snapshot(self, list_id: str) -> list[Any]:
            if snapshot_engine is None:
                raise RuntimeError("a writer process serves no snapshots")
            with Session(snapshot_engine) as session:
                return list(session.scalars(select(Item).where(Item.list_id == int(list_id))))


async def live_run(
    args: argparse.Namespace, factory: sessionmaker[Session], engine: Any, snapshot_engine: Any
) -> dict[str, Any]:
    from tidings import Realtime
    from tidings.server.app import listen

    rt = Realtime(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, port=0, shutdown_ready_delay=0)
    rt.live_sqlalchemy(factory)
    declare(rt, snapshot_engine)
    await rt.start()
    clients: list[subprocess.Popen[str]] = []
    try:
        port = (await listen(rt)).port
        log(f"Tidings on port {port}")
        clients = await start_clients(args, port)
        log(f"live: {args.rate} saves/s for {args.seconds} s")
        loop_profiler = cProfile.Profile() if args.profile else None
        if loop_profiler is not None:
            loop_profiler.enable()
        window = await asyncio.to_thread(write, factory, engine, args, 2, args.profile)
        if loop_profiler is not None:
            loop_profiler.disable()
            window.profiles.append(loop_profiler)
        return await collect(args, clients, window)
    finally:
        stop_all(clients)
        await rt.stop()


async def start_clients(args: argparse.Namespace, port: int) -> list[subprocess.Popen[str]]:
    """The subscriber processes, once every socket has its snapshot."""
    log(f"{args.subscribers} subscribers in {args.client_processes} processes")
    channels = [channel_of(n % args.filters) for n in range(args.subscribers)]
    clients = []
    for k in range(args.client_processes):
        mine = channels[k :: args.client_processes]
        clients.append(
            subprocess.Popen(
                [sys.executable, __file__, "--client", str(port), ",".join(mine)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    subscribed = time.monotonic()
    for proc in clients:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)  # type: ignore[union-attr]
        if not line:
            stop_all(clients)
            raise RuntimeError("a client process exited before its subscribers were ready")
    log(f"all subscribed with their snapshots in {time.monotonic() - subscribed:.1f} s")
    return clients


async def collect(
    args: argparse.Namespace, clients: list[subprocess.Popen[str]], window: Window
) -> dict[str, Any]:
    """The subscribers' reports once the last saves' events had a second to arrive."""
    per_channel = args.subscribers // args.filters
    await asyncio.sleep(1.0)
    reports = []
    for proc in clients:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("report\n")
        proc.stdin.flush()
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        reports.append(json.loads(line))
    return {
        "window": window,
        "received": sum(r["received"] for r in reports),
        "expected": window.saves * per_channel,
        "latencies": [x for r in reports for x in r["latencies"]],
        "client_cpu": sum(r["cpu"] for r in reports),
        "profile": profile_text(window.profiles) if window.profiles else None,
    }


def stop_all(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- redis-client mode: writer processes, a `tidings serve --redis` node ------------------


def writer_process(args: argparse.Namespace) -> None:
    """One app worker: ``--writer-process INDEX COUNT DB_URL REDIS_URL`` (REDIS_URL ``-``:
    without Tidings). Prints "ready", saves its share once it reads "go", prints its
    :class:`Window` as JSON."""
    index, count, db_url, redis_url = args.writer_process
    engine = create_engine(db_url)
    factory = sessionmaker(engine, expire_on_commit=False)
    rt = None
    if redis_url != "-":
        from tidings import Realtime

        rt = Realtime.client(redis_url, app_id=APP_ID, key=APP_KEY, secret=APP_SECRET)
        rt.live_sqlalchemy(factory)
        declare(rt, None)
        rt.occupied([channel_of(0)])  # connected before the window opens
    print("ready", flush=True)
    sys.stdin.readline()
    mine = argparse.Namespace(**{**vars(args), "rate": args.rate / int(count), "writers": 1})
    window = write(factory, engine, mine, seed=10 + int(index), share=(int(index), int(count)))
    if rt is not None:
        rt.live_models.wait()
        rt.close()
    engine.dispose()
    fields = ("saves", "late", "statements", "cpu", "writer_cpu", "seconds")
    print(json.dumps({name: getattr(window, name) for name in fields}), flush=True)


def run_writers(args: argparse.Namespace, db_url: str, redis_url: str) -> Window:
    """``args.processes`` writer processes started together; their windows added up."""
    count = args.processes
    command = [sys.executable, __file__, *sys.argv[1:], "--writer-process"]
    procs = [
        subprocess.Popen(
            [*command, str(k), str(count), db_url, redis_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(count)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a writer process failed to start")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        total = Window()
        for proc in procs:
            assert proc.stdout is not None
            result = json.loads(proc.stdout.readline())
            total.saves += result["saves"]
            total.late += result["late"]
            total.statements += result["statements"]
            total.cpu += result["cpu"]
            total.writer_cpu += result["writer_cpu"]
            total.seconds = max(total.seconds, result["seconds"])
        return total
    finally:
        stop_all(procs)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_run(args: argparse.Namespace, db_url: str, snapshot_engine: Any) -> dict[str, Any]:
    from redis_server import RedisServer

    log(f"baseline: {args.processes} processes, {args.rate} saves/s for {args.seconds} s")
    baseline = run_writers(args, db_url, "-")
    with RedisServer() as redis_server:
        log(f"redis-server on port {redis_server.port}")
        live = asyncio.run(cluster_live(args, db_url, redis_server, snapshot_engine))
    return summarize(args, baseline, live)


async def cluster_live(
    args: argparse.Namespace, db_url: str, redis_server: Any, snapshot_engine: Any
) -> dict[str, Any]:
    import tempfile

    from aiohttp import web

    from tidings import Realtime
    from tidings.live.provider import aanswer_snapshot

    # The app's snapshot endpoint, which the node calls for every subscribing socket.
    rt = Realtime.client(redis_server.url, app_id=APP_ID, key=APP_KEY, secret=APP_SECRET)
    declare(rt, snapshot_engine)

    async def live_snapshot(request: web.Request) -> web.Response:
        status, body = await aanswer_snapshot(
            rt.live_models,
            rt.authorizer.app,
            request.headers.get("X-Pusher-Key"),
            request.headers.get("X-Pusher-Signature"),
            await request.read(),
        )
        return web.Response(body=body, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_post("/pusher/live-snapshot", live_snapshot)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    snapshot_port = runner.addresses[0][1]

    folder = Path(tempfile.mkdtemp(prefix="tidings-live-bench-"))
    config = folder / "tidings.toml"
    config.write_text(
        f'[[apps]]\nid = "{APP_ID}"\nkey = "{APP_KEY}"\nsecret = "{APP_SECRET}"\n'
        f'live_snapshot_url = "http://127.0.0.1:{snapshot_port}/pusher/live-snapshot"\n'
    )
    port = free_port()
    node = subprocess.Popen(
        [sys.executable, "-m", "tidings", "serve", "--config", str(config)]
        + ["--port", str(port), "--redis", redis_server.url, "--shutdown-ready-delay", "0"],
        stdout=(folder / "node.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    clients: list[subprocess.Popen[str]] = []
    try:
        await wait_ready(port, node)
        log(f"tidings serve --redis on port {port} (log: {folder / 'node.log'})")
        clients = await start_clients(args, port)
        log(f"live: {args.processes} processes, {args.rate} saves/s for {args.seconds} s")
        node_cpu, redis_cpu = process_cpu(node.pid), process_cpu(redis_server.proc.pid)
        window = await asyncio.to_thread(run_writers, args, db_url, redis_server.url)
        node_cpu = process_cpu(node.pid) - node_cpu
        redis_cpu = process_cpu(redis_server.proc.pid) - redis_cpu
        result = await collect(args, clients, window)
        result["node_cpu"], result["redis_cpu"] = node_cpu, redis_cpu
        return result
    finally:
        stop_all(clients)
        node.terminate()
        node.wait(timeout=30)
        await runner.cleanup()
        rt.close()


async def wait_ready(port: int, node: subprocess.Popen[bytes]) -> None:
    import aiohttp

    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if node.poll() is not None:
                raise RuntimeError(f"tidings serve exited with {node.returncode}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/ready") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("tidings serve did not become ready within 30 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def profile_text(profiles: list[cProfile.Profile], top: int = 45) -> str:
    """The functions that took the most time in all the profiled threads together."""
    out = io.StringIO()
    stats = pstats.Stats(profiles[0], stream=out)
    for profiler in profiles[1:]:
        stats.add(profiler)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("cumulative").print_stats("tidings|asyncio", top)
    return out.getvalue()


def summarize(args: argparse.Namespace, baseline: Window, live: dict[str, Any]) -> dict[str, Any]:
    window: Window = live["window"]
    lat = live["latencies"]
    result = {
        "params": {
            k: getattr(args, k)
            for k in (
                "rate",
                "seconds",
                "filters",
                "subscribers",
                "rows",
                "writers",
                "client_processes",
                "mode",
                "processes",
                "loop",
            )
        },
        "achieved_rate": {
            "baseline": round(baseline.saves / baseline.seconds, 1),
            "live": round(window.saves / window.seconds, 1),
        },
        "late_saves": {"baseline": baseline.late, "live": window.late},
        "deliveries": {"received": live["received"], "expected": live["expected"]},
        "latency_ms": {
            "p50": round(1000 * percentile(lat, 0.50), 2),
            "p99": round(1000 * percentile(lat, 0.99), 2),
            "max": round(1000 * max(lat), 2) if lat else None,
            "mean": round(1000 * statistics.fmean(lat), 2) if lat else None,
        },
        "statements_per_save": {
            "baseline": round(baseline.statements / baseline.saves, 3),
            "live": round(window.statements / window.saves, 3),
        },
        "cpu_ms_per_change": {
            "baseline": round(1000 * baseline.cpu / baseline.saves, 3),
            "live": round(1000 * window.cpu / window.saves, 3),
            "tidings": round(1000 * (window.cpu / window.saves - baseline.cpu / baseline.saves), 3),
            "writer_threads": round(1000 * window.writer_cpu / window.saves, 3),
            "writer_threads_baseline": round(1000 * baseline.writer_cpu / baseline.saves, 3),
            # Embedded: the event loop (publishing, fan-out); redis-client: the client's loop.
            "other_threads": round(1000 * (window.cpu - window.writer_cpu) / window.saves, 3),
        },
        "client_cpu_s": round(live["client_cpu"], 2),
        "profile": live["profile"],
    }
    if "node_cpu" in live:
        result["cpu_ms_per_change"]["node"] = round(1000 * live["node_cpu"] / window.saves, 3)
        result["cpu_ms_per_change"]["redis"] = round(1000 * live["redis_cpu"] / window.saves, 3)
    return result


def report(result: dict[str, Any]) -> None:
    p = result["params"]
    lat = result["latency_ms"]
    stm = result["statements_per_save"]
    cpu = result["cpu_ms_per_change"]
    d = result["deliveries"]
    print()
    writers = (
        f"{p['processes']} writer processes publishing through Redis to tidings serve"
        if p["mode"] == "redis-client"
        else f"{p['writers']} writer threads of the embedding process"
    )
    print(
        f"live models, PostgreSQL: {p['rate']} saves/s for {p['seconds']} s by {writers}, "
        f"{p['filters']} filters, {p['subscribers']} subscribers"
    )
    rate, late = result["achieved_rate"], result["late_saves"]
    print(
        f"  saves/s achieved         {rate['live']} with Tidings ({late['live']} over 10 ms late), "
        f"{rate['baseline']} without ({late['baseline']} late)"
    )
    print(
        f"  save-to-client latency   p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"
    )
    print(f"  deliveries               {d['received']} of {d['expected']}")
    print(f"  DB statements per save   {stm['live']} with Tidings, {stm['baseline']} without")
    print(
        f"  CPU per change           {cpu['live']} ms with Tidings, {cpu['baseline']} ms without "
        f"(Tidings: {cpu['tidings']} ms)"
    )
    loop = "client loop" if p["mode"] == "redis-client" else "event loop"
    print(
        f"    by thread              writers {cpu['writer_threads']} ms "
        f"({cpu['writer_threads_baseline']} ms without), {loop} {cpu['other_threads']} ms"
    )
    if "node" in cpu:
        print(f"    elsewhere              tidings serve {cpu['node']} ms, redis {cpu['redis']} ms")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        asyncio.run(client_main(int(args.client[0]), args.client[1].split(",")))
        return 0
    if args.writer_process:
        writer_process(args)
        return 0
    result = run(args)
    report(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    profile = result.pop("profile")
    if profile is not None:
        profile_path = RESULTS / f"live-{stamp}-profile.txt"
        profile_path.write_text(profile)
        log(f"profile: {profile_path.relative_to(ROOT)}")
    path = RESULTS / f"live-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"results: {path.relative_to(ROOT)}")
    d = result["deliveries"]
    return 0 if d["received"] == d["expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
