"""Side-by-side fan-out benchmark: Tidings, Soketi, python-socketio and a raw aiohttp
ceiling, and Tidings and python-socketio as ASGI apps under uvicorn (a benchmark, not a test).

    .venv/bin/python bench/fanout.py                 # N = 1,000, 10,000, 50,000; 3 runs
    .venv/bin/python bench/fanout.py --quick         # N = 1,000; 1 run; short phases
    .venv/bin/python bench/fanout.py --docs          # also copy the plots to docs/img/
    .venv/bin/python bench/fanout.py --n 10000 --servers tidings,tidings-asgi,socketio-asgi

It installs the peers it needs (bench/servers.py: Soketi with npm ci, python-socketio in a
venv of its own, both under .cache/bench/), then for each run, each N and each server
(interleaved: the order rotates every run, so drift hits every server alike):

1. starts the server pinned to core 0 (`taskset -c 0`) and waits for GET /ready;
2. runs a 50-connection warm-up client through every phase, then reads the baseline RSS
   (sum over the server's process tree, from /proc);
3. starts the load client (bench/loadclient.c) pinned to core 1 and opens N connections with
   at most 200 handshakes in flight: connections/s = N / time until the last is established.
   A server that does not hold N within the phase's deadline is reported as such and left;
4. 1 s later: RSS per idle connection = (RSS - baseline) / N; then subscribes every socket
   to channel "bench" (Socket.IO: joins room "bench") and measures RSS again;
5. latency: open loop at a fixed rate (10 msg/s at N = 1,000, 1 msg/s above) through the
   publish endpoint; p50/p99/max over every delivery, counted from the scheduled send time,
   and the spread of each broadcast (first to last delivery of one message);
6. saturation: closed loop, at most 16 broadcasts (16·N deliveries) in flight; deliveries/s
   over a fixed window, with server, client and per-core CPU sampled around the window;
7. stops the client and the server (by PID; also on Ctrl-C or an error).

Every phase has a deadline. The output: progress lines, a table (median (min–max) per server,
Tidings / each peer per run), bench/results/fanout-<timestamp>.json, and PNG plots of
throughput and latency against N (bench/results/, and docs/img/ with --docs).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

import pyspy
import report
import servers
from loadclient import LoadClient, build_client, write_requests
from procs import (
    CLIENT_CORE,
    RESULTS,
    ROOT,
    SERVER_CORE,
    all_processes,
    core_times,
    cpu_seconds,
    fd_limit,
    free_port,
    log,
    machine,
    on_signal,
    others_cpu,
    raise_fd_limit,
    rss_bytes,
    start,
    stop,
    stop_all,
    tree,
    wait_ready,
)

HANDSHAKES_IN_FLIGHT = 200
BROADCASTS_IN_FLIGHT = 16
WARMUP_CONNECTIONS = 50
MAX_DELIVERIES_PER_S = 2_000_000  # sizes the pre-signed request supply; never the limit
MAX_WINDOW_S = 30.0  # the saturation window grows for slow servers up to this


@dataclass(frozen=True)
class Plan:
    latency_seconds: float
    sat_warm: float
    sat_window: float
    log_level: str
    profile: Path | None = None  # a folder: py-spy the server during the saturation window
    profile_lines: bool = False  # py-spy pausing the server per sample, by line (see pyspy.py)

    def latency_rate(self, n: int) -> float:
        """1,000 subscribers × 10 msg/s; 10,000 and 50,000 × 1 msg/s (issue 6)."""
        return 10.0 if n <= 1000 else 1.0

    def request_count(self, n: int) -> int:
        sat = (self.sat_warm + self.sat_window) * MAX_DELIVERIES_PER_S / n
        return int(sat + self.latency_rate(n) * self.latency_seconds + 50)

    def setup_deadline(self, n: int) -> float:
        """Bound on the connect and on the subscribe phase: 22 s at 1,000, 120 s at 50,000."""
        return 20.0 + n / 500

    def drain(self, n: int) -> float:
        """How long a phase waits for the last deliveries (also per warm-up broadcast)."""
        return 10.0 + n / 2500

    def estimate(self, server: str, n: int) -> float:
        """Rough seconds for one measurement (start, warm-up, phases, stop), from quick runs
        here: Soketi subscribes in time ~N² (12 s at 10,000), python-socketio connects
        ~800/s and falls behind in the latency and saturation phases (it waits for drains)."""
        fixed = 16 + self.latency_seconds + self.sat_warm + self.sat_window
        bound = self.setup_deadline(n)
        if server == "soketi":
            return fixed + n / 10_000 + min(bound, n * n / 8e6)
        if server in ("socketio", "socketio-asgi"):
            per_broadcast = n / 5000
            window = min(MAX_WINDOW_S, 4 * per_broadcast) + 2 * per_broadcast
            return fixed + min(bound, n / 800) + n / 3000 + 2 * self.drain(n) + window
        return fixed + n / 3000 + n / 20_000


def client_session(
    binary: Path, server: str, port: int, n: int, plan: Plan, workdir: Path, tag: str, pid: int
) -> dict[str, Any]:
    """The measured phases against a running server; returns the raw numbers."""
    requests = write_requests(workdir / f"requests-{tag}.bin", port, plan.request_count(n))
    protocol = servers.SERVERS[server].protocol
    client = LoadClient(binary, port, n, requests, workdir / f"client-{tag}.log", protocol=protocol)
    out: dict[str, Any] = {}
    bound = plan.setup_deadline(n)
    try:
        base_rss = rss_bytes(pid)
        out["rss_base_mib"] = base_rss / 2**20
        conn = client.command(f"connect {HANDSHAKES_IN_FLIGHT} {bound}", bound + 30)
        out["connect"] = conn
        log(
            f"    connect: {conn['established']:,}/{n:,} in {conn['seconds']:.2f} s "
            f"({conn['rate']:,.0f}/s), failed {conn['failed']}"
        )
        if conn["established"] < n:
            out["held"] = False
            log(f"    {server} did not hold {n:,} connections (deadline {bound:.0f} s); next")
            return out
        time.sleep(1.0)
        out["rss_conn_kib"] = (rss_bytes(pid) - base_rss) / n / 1024
        sub = client.command(f"subscribe {HANDSHAKES_IN_FLIGHT} {bound}", bound + 30)
        out["subscribe"] = sub
        if sub["subscribed"] < n:
            out["held"] = False
            log(f"    subscribed only {sub['subscribed']:,}/{n:,} (deadline {bound:.0f} s); next")
            return out
        time.sleep(1.0)
        out["rss_sub_kib"] = (rss_bytes(pid) - base_rss) / n / 1024
        log(
            f"    subscribe: {sub['subscribed']:,}/{n:,} in {sub['seconds']:.2f} s; RSS/conn "
            f"{out['rss_conn_kib']:.1f} KiB idle, {out['rss_sub_kib']:.1f} KiB subscribed"
        )
        drain = plan.drain(n)
        out["warm"] = client.command(f"warm 3 {drain}", 3 * drain + 30)
        rate = plan.latency_rate(n)
        s0 = cpu_seconds(pid)
        lat = client.command(
            f"latency {rate} {plan.latency_seconds} {drain}", plan.latency_seconds + drain + 30
        )
        # CPU per delivery at a moderate rate, where nothing coalesces (one send() each)
        lat["server_cpu_ms_per_1k"] = 1e6 * (cpu_seconds(pid) - s0) / max(1, lat["received"])
        out["latency"] = lat
        log(
            f"    latency @{rate:g} msg/s: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
            f"max {lat['max_ms']:.1f} ms, spread of one broadcast {lat['spread_p50_ms']:.1f} ms "
            f"({lat['received']:,}/{lat['expected']:,} deliveries)"
        )
        # A slow server must complete several broadcasts inside the window, or the window
        # measures its burstiness: scale warm-up and window by one warm-up broadcast's time.
        per_broadcast = out["warm"]["seconds"] / 3
        warm_s = max(plan.sat_warm, 2 * per_broadcast)
        window_s = max(plan.sat_window, min(MAX_WINDOW_S, 4 * per_broadcast))
        out["saturate"] = saturate(client, pid, plan, tag, drain, warm_s, window_s)
        sat = out["saturate"]
        out["held"] = sat["established"] == n and not sat["closed_by_peer"]
        log(
            f"    saturation: {sat['rate']:,.0f} deliveries/s, "
            f"{sat['server_cpu_ms_per_1k']:.2f} server CPU-ms per 1k; CPU server "
            f"{sat['server_cpu']:.0f}% client {sat['client_cpu']:.0f}%, core {SERVER_CORE} busy "
            f"{sat['server_core']:.0f}%, core {CLIENT_CORE} busy {sat['client_core']:.0f}% "
            f"({sat['deliveries_per_read']:.1f} deliveries per read); "
            f"other tenants' processes {sat['others_cpu']:.0f}%"
        )
    finally:
        client.close()
        requests.unlink(missing_ok=True)
    return out


def saturate(
    client: LoadClient,
    pid: int,
    plan: Plan,
    tag: str,
    drain: float,
    warm_s: float,
    window_s: float,
) -> dict[str, Any]:
    client.send(f"saturate {BROADCASTS_IN_FLIGHT} {warm_s:.2f} {window_s:.2f} {drain}")
    first = client.read(warm_s + 30)
    assert first["phase"] == "sat_start", first
    spy = None
    if plan.profile:
        spy = pyspy.start_profiler(pid, plan.profile, tag, window_s, plan.profile_lines)
    a0 = {"t": time.monotonic(), "all": all_processes()}
    t0, s0, c0, k0 = time.monotonic(), cpu_seconds(pid), cpu_seconds(client.pid), core_times()
    end = client.read(window_s + 30)
    t1, s1, c1, k1 = time.monotonic(), cpu_seconds(pid), cpu_seconds(client.pid), core_times()
    a1 = {"t": time.monotonic(), "all": all_processes()}
    assert end["phase"] == "sat_end", end
    result = client.read(drain + 30)
    if spy is not None and plan.profile is not None:
        result["profile"] = pyspy.finish(spy, plan.profile, tag)
    wall = t1 - t0

    def share(core: str, field: int) -> float:
        before, after = k0.get(core, [0, 0, 0, 0]), k1.get(core, [0, 0, 0, 0])
        total = after[3] - before[3]
        return 100.0 * (after[field] - before[field]) / total if total > 0 else float("nan")

    deliveries = result["deliveries"]
    ours = {os.getpid(), client.pid, *(p.pid for p in tree(pid))}
    if spy is not None:
        ours.add(spy.pid)
    result["others_cpu"] = others_cpu(a0, a1, ours)
    result["server_cpu"] = 100.0 * (s1 - s0) / wall
    result["client_cpu"] = 100.0 * (c1 - c0) / wall
    result["server_core"] = share(SERVER_CORE, 0)
    result["client_core"] = share(CLIENT_CORE, 0)
    result["server_core_softirq"] = share(SERVER_CORE, 1)
    result["server_core_steal"] = share(SERVER_CORE, 2)
    result["client_core_steal"] = share(CLIENT_CORE, 2)
    nan = float("nan")
    result["server_cpu_ms_per_1k"] = 1e6 * (s1 - s0) / deliveries if deliveries else nan
    result["client_cpu_ms_per_1k"] = 1e6 * (c1 - c0) / deliveries if deliveries else nan
    return result


def measure(
    server: str, n: int, run: int, binary: Path, plan: Plan, workdir: Path
) -> dict[str, Any]:
    port = free_port()
    tag = f"{server}-n{n}-r{run}"
    server_log = workdir / f"server-{tag}.log"
    cmd, env = servers.command(server, port, workdir, plan.log_level)
    log(f"run {run + 1}, N={n:,}, {server}: {' '.join(cmd[3:])}")
    proc = start(cmd, server_log, stdout=subprocess.DEVNULL, env=env)
    record: dict[str, Any] = {"server": server, "n": n, "run": run, "port": port}
    try:
        wait_ready(port, proc, 60, server_log)
        record["warmup_ok"] = warmup(binary, server, port, plan, workdir, tag)
        time.sleep(1.0)
        record.update(client_session(binary, server, port, n, plan, workdir, tag, proc.pid))
        record["ok"] = validate(record, n)
    except (OSError, RuntimeError, AssertionError, KeyError, psutil.Error) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["ok"] = False
        log(f"    FAILED: {record['error']}")
    finally:
        stop(proc, grace=15.0)
        record["server_exit"] = proc.returncode
    return record


def warmup(binary: Path, server: str, port: int, plan: Plan, workdir: Path, tag: str) -> bool:
    """A small client through every phase, so lazy imports, JIT warm-up and first-use
    allocations are not charged to the measured connections."""
    n = WARMUP_CONNECTIONS
    requests = write_requests(workdir / f"requests-warm-{tag}.bin", port, 2000)
    protocol = servers.SERVERS[server].protocol
    log_path = workdir / f"client-warm-{tag}.log"
    client = LoadClient(binary, port, n, requests, log_path, protocol=protocol)
    try:
        client.command("connect 50 20", 50)
        sub = client.command("subscribe 50 20", 50)
        client.command("warm 3", 60)
        client.command("latency 20 1", 60)
        client.command(f"saturate 4 {min(plan.sat_warm, 0.5)} 0.5 5", 60)
        client.read(30)
        client.read(30)
        return bool(sub["subscribed"] == n)
    finally:
        client.close()
        requests.unlink(missing_ok=True)


def phase_problems(record: dict[str, Any], n: int) -> list[str]:
    """What went wrong in the connect, subscribe, latency and saturation phases."""
    problems = []
    if record["connect"]["established"] != n:
        problems.append(f"connected {record['connect']['established']:,}/{n:,}")
    if "subscribe" not in record:
        return problems
    if record["subscribe"]["subscribed"] != n:
        problems.append(f"subscribed {record['subscribe']['subscribed']:,}/{n:,}")
    if "latency" not in record:
        return problems
    lat = record["latency"]
    if lat["received"] != lat["expected"]:
        problems.append(f"latency deliveries {lat['received']:,}/{lat['expected']:,}")
    sat = record["saturate"]
    if sat["exhausted"]:
        problems.append("saturation ran out of pre-signed requests")
    if not sat["drained"]:
        problems.append("saturation did not drain")
    return problems


def validate(record: dict[str, Any], n: int) -> list[str] | bool:
    """True, or the list of problems that make the record suspect (kept, flagged).

    A saturation phase that did not drain in time is only noted: the window was already
    measured, and the client and server are thrown away after it (a slow peer, such as
    python-socketio at 10,000, has 16·N deliveries queued when the window closes)."""
    problems = phase_problems(record, n)
    if "saturation did not drain" in problems:
        problems.remove("saturation did not drain")
        record["notes"] = ["saturation backlog not drained within the deadline"]
    sat = record.get("saturate")
    if sat and sat["pub_errors"]:
        problems.append(f"{sat['pub_errors']} publish errors")
    if sat and sat["closed_by_peer"]:
        problems.append(
            f"{sat['closed_by_peer']} sockets closed by the server {sat['close_codes']}"
        )
    if problems:
        log("    SUSPECT: " + "; ".join(problems))
        return problems
    return True


# ---------------------------------------------------------------- main

FD_MARGIN = 500  # file descriptors besides the N sockets (listeners, logs, publishers)


def fd_note(n: int) -> str:
    """Why N connections cannot be held here: each of the server and the client needs one
    file descriptor per connection, and RLIMIT_NOFILE is per process."""
    return (
        f"needs RLIMIT_NOFILE ≥ {n + FD_MARGIN:,} in the server and in the client; this "
        f"machine allows {fd_limit():,} and the hard limit cannot be raised here (needs root "
        "with CAP_SYS_RESOURCE, or a higher `ulimit -Hn` / LimitNOFILE where the bench starts)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Tidings fan-out benchmark, side by side")
    p.add_argument("--n", default=None, help="subscriber counts (1000,10000,50000)")
    p.add_argument("--runs", type=int, default=None, help="repetitions (3)")
    p.add_argument("--quick", action="store_true", help="1 run, N=1000, short phases")
    p.add_argument(
        "--servers",
        default=",".join(s for s in servers.SERVERS if s not in servers.ON_REQUEST),
        help=f"which of {','.join(servers.SERVERS)} to run (all but "
        f"{','.join(sorted(servers.ON_REQUEST))})",
    )
    p.add_argument("--window", type=float, default=None, help="saturation window seconds (4)")
    p.add_argument("--log-level", default="warning", help="Tidings log_level (warning)")
    p.add_argument("--docs", action="store_true", help="also copy the plots to docs/img/")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy each Python server during the saturation window (numbers not comparable)",
    )
    p.add_argument(
        "--profile-lines",
        action="store_true",
        help="--profile by source line, pausing the server for each sample (exact stacks)",
    )
    args = p.parse_args(argv)
    default_n = "1000" if args.quick else "1000,10000,50000"
    args.n = [int(x) for x in (args.n or default_n).split(",")]
    args.runs = args.runs or (1 if args.quick else 3)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in args.servers:
        if s not in servers.SERVERS:
            p.error(f"unknown server {s!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    raise_fd_limit()
    skipped = {n: fd_note(n) for n in args.n if fd_limit() < n + FD_MARGIN}
    for n, note in skipped.items():
        log(f"N={n:,} skipped: {note}")
    args.n = [n for n in args.n if n not in skipped]
    if not args.n:
        return 2
    servers.install(args.servers)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"fanout-{stamp}"
    workdir.mkdir()
    binary = build_client()
    profile = workdir if args.profile or args.profile_lines else None
    plan = (
        Plan(3.0, 0.5, args.window or 2.0, args.log_level, profile, args.profile_lines)
        if args.quick
        else Plan(5.0, 1.0, args.window or 4.0, args.log_level, profile, args.profile_lines)
    )
    expected = args.runs * sum(plan.estimate(s, n) for s in args.servers for n in args.n)
    log(
        f"{args.runs} run(s) × N {args.n} × {args.servers}: expected ≈ {expected / 60:.0f} min "
        "(longer if a server runs into a phase deadline)"
    )
    info = machine() | {"peers": servers.versions()}
    log(f"machine: {info}")
    log(f"logs in {workdir.relative_to(ROOT)}")
    records: list[dict[str, Any]] = []
    out_path = RESULTS / f"fanout-{stamp}.json"
    started = time.time()
    interrupted = False
    constants = {
        "handshakes_in_flight": HANDSHAKES_IN_FLIGHT,
        "broadcasts_in_flight": BROADCASTS_IN_FLIGHT,
        "server_core": SERVER_CORE,
        "client_core": CLIENT_CORE,
    }
    meta = {
        "machine": info,
        "options": vars(args),
        "plan": plan.__dict__,
        "constants": constants,
        "skipped": {str(n): note for n, note in skipped.items()},
    }
    try:
        for run in range(args.runs):
            for n in args.n:
                k = run % len(args.servers)
                for server in args.servers[k:] + args.servers[:k]:
                    records.append(measure(server, n, run, binary, plan, workdir))
                    report.write_json(out_path, meta, records, started)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping every process started")
    finally:
        stop_all()
    table, data = report.summarize(records, args.n, args.servers)
    info["loadavg_end"] = report.loadavg()
    report.write_json(out_path, meta, records, started, data)
    print()
    print(table)
    print()
    for line in report.targets(records, data):
        print(line)
    for n, note in skipped.items():
        print(f"N = {n:,} not measured: {note}")
    bad = [r for r in records if r.get("ok") is not True]
    if bad:
        print(f"\n{len(bad)} of {len(records)} measurements failed or are suspect:")
        for r in bad:
            print(f"  {r['server']} N={r['n']:,} run {r['run'] + 1}: {r.get('error') or r['ok']}")
    # A peer that cannot hold N or keep up is a result; Tidings failing, or any harness error
    # (an exception, a silent client), makes the exit status 1.
    ours = (
        "tidings",
        "tidings-asgi",
        "tidings-history",
        "tidings-aiohttp-ws",
        "tidings-py-reader",
        "tidings-no-lean",
    )
    failed = [r for r in bad if "error" in r or r["server"] in ours]
    pyspy.print_profiles(records)
    for png in report.plots(records, args.n, args.servers, RESULTS / f"fanout-{stamp}", args.docs):
        print(f"plot: {png.relative_to(ROOT)}")
    print(f"\nresults: {out_path.relative_to(ROOT)}")
    if interrupted:
        return 130
    return 0 if records and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
