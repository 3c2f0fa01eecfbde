"""Live models on PostgreSQL (issue 15's benchmark; a benchmark, not a test).

    .venv/bin/python bench/live.py          # 1,000 saves/s for 20 s, 100 filters, 1,000 sockets
    .venv/bin/python bench/live.py --quick  # the same rate for 4 s, 25 filters, 250 sockets
    .venv/bin/python bench/live.py --quick --profile  # plus cProfile of the app's threads

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
import pstats
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Float, Integer, String, create_engine, event, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

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
    loop_cpu: float = 0.0  # the event loop thread's (Tidings: publishing, fan-out)
    seconds: float = 0.0
    profiles: list[cProfile.Profile] = field(default_factory=list)


def write(
    factory: sessionmaker[Session],
    engine: Any,
    args: argparse.Namespace,
    seed: int,
    profile: bool = False,
) -> Window:
    """``args.writers`` threads, each updating one random row of its own share per
    transaction, together ``args.rate`` saves/s for ``args.seconds``."""
    window = Window()
    statements = itertools.count()
    late = itertools.count()

    def count(*_: Any) -> None:
        next(statements)

    with factory() as session:
        ids = list(session.scalars(select(Item.id)))
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
    from sqlalchemy.orm import sessionmaker

    from postgres_server import PostgresServer

    with PostgresServer() as pg:
        log(f"PostgreSQL on port {pg.port} ({pg.bindir})")
        dbname = pg.create_database()
        engine = create_engine(pg.sqlalchemy_url(dbname))
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(Item),
                [
                    {"title": f"row {n}", "list_id": n % args.filters, "version": 1, "ts": 0.0}
                    for n in range(args.rows)
                ],
            )
        factory = sessionmaker(engine, expire_on_commit=False)

        log(f"baseline: {args.rate} saves/s for {args.seconds} s without Tidings")
        baseline = write(factory, engine, args, seed=1)

        snapshot_engine = create_engine(pg.sqlalchemy_url(dbname))
        live = asyncio.run(live_run(args, factory, engine, snapshot_engine))
        snapshot_engine.dispose()
        engine.dispose()
    return summarize(args, baseline, live)


async def live_run(
    args: argparse.Namespace, factory: sessionmaker[Session], engine: Any, snapshot_engine: Any
) -> dict[str, Any]:
    from tidings import Realtime
    from tidings.server.app import listen

    rt = Realtime(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, port=0, shutdown_ready_delay=0)
    rt.live_sqlalchemy(factory)

    @rt.live(Item, fields=["id", "title", "list_id", "version", "ts"], filters=["list_id"])
    class ItemLive:
        def authorize(self, user: object, list_id: str) -> bool:
            return True

        def snapshot(self, list_id: str) -> list[Any]:
            with Session(snapshot_engine) as session:
                return list(session.scalars(select(Item).where(Item.list_id == int(list_id))))

    await rt.start()
    clients: list[subprocess.Popen[str]] = []
    try:
        port = (await listen(rt)).port
        log(
            f"Tidings on port {port}; {args.subscribers} subscribers in "
            f"{args.client_processes} processes"
        )
        channels = [channel_of(n % args.filters) for n in range(args.subscribers)]
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
                raise RuntimeError("a client process exited before its subscribers were ready")
        log(f"all subscribed with their snapshots in {time.monotonic() - subscribed:.1f} s")

        log(f"live: {args.rate} saves/s for {args.seconds} s")
        loop_profiler = cProfile.Profile() if args.profile else None
        if loop_profiler is not None:
            loop_profiler.enable()
        loop_cpu = time.thread_time()
        window = await asyncio.to_thread(write, factory, engine, args, 2, args.profile)
        window.loop_cpu = time.thread_time() - loop_cpu
        if loop_profiler is not None:
            loop_profiler.disable()
            window.profiles.append(loop_profiler)
        per_channel = args.subscribers // args.filters
        expected = window.saves * per_channel
        await asyncio.sleep(1.0)  # the last saves' events are on their way
        reports = []
        for proc in clients:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("report\n")
            proc.stdin.flush()
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
            reports.append(json.loads(line))
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        await rt.stop()
    latencies = [x for r in reports for x in r["latencies"]]
    return {
        "window": window,
        "received": sum(r["received"] for r in reports),
        "expected": expected,
        "latencies": latencies,
        "client_cpu": sum(r["cpu"] for r in reports),
        "profile": profile_text(window.profiles) if window.profiles else None,
    }


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
            "event_loop_thread": round(1000 * window.loop_cpu / window.saves, 3),
        },
        "client_cpu_s": round(live["client_cpu"], 2),
        "profile": live["profile"],
    }
    return result


def report(result: dict[str, Any]) -> None:
    p = result["params"]
    lat = result["latency_ms"]
    stm = result["statements_per_save"]
    cpu = result["cpu_ms_per_change"]
    d = result["deliveries"]
    print()
    print(
        f"live models, PostgreSQL: {p['rate']} saves/s for {p['seconds']} s by {p['writers']} "
        f"writer threads, {p['filters']} filters, {p['subscribers']} subscribers"
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
    print(
        f"    by thread              writers {cpu['writer_threads']} ms "
        f"({cpu['writer_threads_baseline']} ms without), event loop {cpu['event_loop_thread']} ms"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        asyncio.run(client_main(int(args.client[0]), args.client[1].split(",")))
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
