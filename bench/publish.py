"""Publish benchmark: REST triggers accepted per server core, Tidings next to Soketi and a
raw aiohttp handler, in the same run (issue 18; a benchmark, not a test).

    .venv/bin/python bench/publish.py            # 3 interleaved runs, 5 s per case (≈ 10 min)
    .venv/bin/python bench/publish.py --quick    # 1 run, 2 s per case (≈ 3 min)
    .venv/bin/python bench/publish.py --servers tidings,soketi --cases single-0 --runs 5

The servers (the order rotates every run, so drift hits each alike):

    tidings        `tidings serve`, memory broker
    tidings-redis  `tidings serve --redis`, one node, on a private redis-server
    tidings-aiohttp  `tidings serve --no-lean-rest`: every request through aiohttp (the
                   REST path before the lean one, server/lean_http.py)
    soketi         Soketi 1.6.1, local adapter (bench/servers.py installs it)
    soketi-redis   Soketi 1.6.1, Redis adapter and rate limiter, on the same redis-server
    raw            bench/raw_aiohttp.py: parses the JSON body and writes one frame to every
                   subscriber; it checks no signature (the ceiling of the aiohttp stack)

The cases (each server is started once per run and takes them in turn):

    single-0       POST /apps/12345/events to a channel nobody subscribes to
    single-1       the same to a channel with 1 subscriber
    single-100     the same to a channel with 100 subscribers
    batch-10       POST /apps/12345/batch_events with 10 events (channel without subscribers)

The subscribers are bench/subscribers.py (one process, uvloop), connected and subscribed
before the case starts and counting what they receive. The load is `wrk` (apt, `make wrk`)
with 32 keep-alive connections, one thread, pinned to core 1; the server (and its helper
threads) to core 0 with taskset; redis-server floats. bench/publish.lua replays a pool of
requests the harness signs just before each case, as Pusher's HTTP API wants (auth_key,
auth_timestamp, auth_version, body_md5, HMAC-SHA256), so Tidings and Soketi check every
signature, timestamp and body digest while wrk only writes bytes. Soketi answers
`Connection: close` to every REST call; wrk then reconnects, as any HTTP client would.

For each case: a warm-up wrk run, then the measured one; triggers/s (non-2xx answers are
counted and flagged, never counted as triggers), p50/p99 latency (wrk's, per request), and
the CPU of the server's process tree (and redis-server's) per trigger from /proc. Then the
in-process rates (bench/publish_inprocess.py, pinned to core 0): an embedded `rt.atrigger`
(one per loop iteration, to a channel with 0 and with 1 subscriber), and
`Realtime.client("redis://…")` from one publishing process.

Output: progress lines, a table per case (median (min–max) over the runs; Tidings / Soketi
per run), the issue-18 targets, and bench/results/publish-<stamp>.json (logs beside it).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import pyspy
import servers
from cluster_nodes import RedisServer
from loadclient import APP_ID, APP_KEY, APP_SECRET
from procs import (
    BENCH,
    CLIENT_CORE,
    PYTHON,
    RESULTS,
    ROOT,
    SERVER_CORE,
    all_processes,
    core_times,
    cpu_seconds,
    free_port,
    log,
    machine,
    on_signal,
    others_cpu,
    start,
    stop,
    stop_all,
    tree,
    wait_ready,
)

SERVERS = ("tidings", "tidings-redis", "tidings-aiohttp", "soketi", "soketi-redis", "raw")
CONNECTIONS = 32  # wrk's keep-alive connections (issue 18's measurement)
POOL = 1000  # distinct signed requests per case, replayed in turn
PAD = "x" * 40  # bench/loadclient.py's payload: {"seq":N,"pad":"x…40"}


@dataclass(frozen=True)
class Case:
    name: str
    endpoint: str  # events or batch_events
    channel: str
    subscribers: int
    events: int  # per request


CASES = {
    c.name: c
    for c in (
        Case("single-0", "events", "empty", 0, 1),
        Case("single-1", "events", "bench-1", 1, 1),
        Case("single-100", "events", "bench-100", 100, 1),
        Case("batch-10", "batch_events", "empty", 0, 10),
    )
}


# ---------------------------------------------------------------- requests


def signed_request(port: int, endpoint: str, body: bytes, timestamp: int) -> bytes:
    """One Pusher REST call, signed as the HTTP API wants (reference 3.2)."""
    path = f"/apps/{APP_ID}/{endpoint}"
    params = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(timestamp),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    signature = hmac.new(
        APP_SECRET.encode(), f"POST\n{path}\n{query}".encode(), hashlib.sha256
    ).hexdigest()
    head = (
        f"POST {path}?{query}&auth_signature={signature} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def body(case: Case, seq: int) -> bytes:
    def event(i: int) -> dict[str, str]:
        data = orjson.dumps({"seq": i, "pad": PAD}).decode()
        return {"name": "e", "channel": case.channel, "data": data}

    if case.endpoint == "batch_events":
        return orjson.dumps({"batch": [event(seq * case.events + i) for i in range(case.events)]})
    return orjson.dumps(event(seq))


def write_pool(path: Path, port: int, case: Case) -> Path:
    """POOL requests signed now: valid for the servers' 600 s window, far past one case."""
    timestamp = int(time.time())
    with path.open("wb") as f:
        f.write(f"{POOL}\n".encode())
        for seq in range(POOL):
            request = signed_request(port, case.endpoint, body(case, seq), timestamp)
            f.write(f"{len(request)}\n".encode() + request)
    return path


# ---------------------------------------------------------------- servers


def server_command(
    name: str, port: int, workdir: Path, redis_url: str, prefix: str
) -> tuple[list[str], dict[str, str]]:
    base = "tidings" if name == "tidings-aiohttp" else name.removesuffix("-redis")
    cmd, env = servers.command(base, port, workdir, "warning")
    if name == "tidings-aiohttp":
        config = Path(cmd[cmd.index("--config") + 1])
        config.write_text("lean_rest = false\n" + config.read_text())
    if name == "tidings-redis":
        config = Path(cmd[cmd.index("--config") + 1])
        top = f'redis = "{redis_url}"\nredis_prefix = "{prefix}"\n'
        config.write_text(top + config.read_text())
    if name == "soketi-redis":
        host, _, port_text = redis_url.removeprefix("redis://").split("/")[0].partition(":")
        env.update(
            {
                "SOKETI_ADAPTER_DRIVER": "redis",
                "SOKETI_ADAPTER_REDIS_PREFIX": prefix,
                "SOKETI_RATE_LIMITER_DRIVER": "redis",
                "SOKETI_DB_REDIS_HOST": host,
                "SOKETI_DB_REDIS_PORT": port_text,
                "SOKETI_DB_REDIS_KEY_PREFIX": prefix,
            }
        )
    return cmd, env


class Subscribers:
    """bench/subscribers.py on the client core: N clients of one channel."""

    def __init__(self, port: int, case: Case, log_path: Path) -> None:
        cmd = ["taskset", "-c", CLIENT_CORE, PYTHON, str(BENCH / "subscribers.py")]
        cmd += ["--port", str(port), "--key", APP_KEY, "--channel", case.channel]
        cmd += ["--n", str(case.subscribers)]
        self.proc = start(
            cmd, log_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=servers.server_env()
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"subscribers exited: {log_path.read_text()[-2000:]}")
        self.ready = json.loads(line)["ready"]

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(b"done\n")
            self.proc.stdin.flush()
            result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        finally:
            stop(self.proc, grace=5.0)
        return result


# ---------------------------------------------------------------- one case


def wrk(port: int, pool: Path, seconds: float, log_path: Path) -> dict[str, Any]:
    cmd = ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{round(seconds)}s"]
    cmd += ["--timeout", "5s", "-s", str(BENCH / "publish.lua"), f"http://127.0.0.1:{port}"]
    cmd += ["--", str(pool)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    with log_path.open("a") as f:
        f.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_case(
    server: str, pid: int, redis_pid: int | None, port: int, case: Case, plan: Plan, tag: str
) -> dict[str, Any]:
    workdir = plan.workdir
    pool = write_pool(workdir / f"pool-{tag}.bin", port, case)
    subscribers = None
    record: dict[str, Any] = {"case": case.name}
    try:
        if case.subscribers:
            subscribers = Subscribers(port, case, workdir / f"subscribers-{tag}.log")
            record["subscribed"] = subscribers.ready
        wrk(port, pool, plan.warm, workdir / f"wrk-{tag}.log")
        pids = [p.pid for p in tree(pid)]
        a0, k0 = {"t": time.monotonic(), "all": all_processes()}, core_times()
        s0 = cpu_seconds(pid)
        r0 = cpu_seconds(redis_pid) if redis_pid else 0.0
        spy = None
        if plan.profile and not server.startswith("soketi"):
            spy = pyspy.start_profiler(pid, workdir, tag, plan.seconds, plan.profile_lines)
        result = wrk(port, pool, plan.seconds, workdir / f"wrk-{tag}.log")
        s1 = cpu_seconds(pid)
        r1 = cpu_seconds(redis_pid) if redis_pid else 0.0
        a1, k1 = {"t": time.monotonic(), "all": all_processes()}, core_times()
        if spy is not None:
            record["saturate"] = {"profile": pyspy.finish(spy, workdir, tag)}
        if subscribers is not None:
            record["subscribers"] = subscribers.finish()
            subscribers = None
    finally:
        if subscribers is not None:
            stop(subscribers.proc)
        pool.unlink(missing_ok=True)
    ok = result["requests"] - result["status_errors"]
    seconds = result["duration_us"] / 1e6
    ours = {os.getpid(), *pids} | ({redis_pid} if redis_pid else set())
    record.update(
        wrk=result,
        triggers_per_s=ok / seconds,
        events_per_s=ok * case.events / seconds,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        server_cpu_pct=100 * (s1 - s0) / seconds,
        server_cpu_us_per_trigger=1e6 * (s1 - s0) / max(1, ok),
        redis_cpu_us_per_trigger=1e6 * (r1 - r0) / max(1, ok) if redis_pid else None,
        server_core_busy=busy(k0, k1, SERVER_CORE),
        client_core_busy=busy(k0, k1, CLIENT_CORE),
        others_cpu=others_cpu(a0, a1, ours),
    )
    record["problems"] = problems(record, case, result)
    return record


def busy(before: dict[str, list[int]], after: dict[str, list[int]], core: str) -> float:
    total = after[core][3] - before[core][3]
    return 100.0 * (after[core][0] - before[core][0]) / total if total > 0 else float("nan")


def problems(record: dict[str, Any], case: Case, wrk_result: dict[str, Any]) -> list[str]:
    """What makes a measurement suspect: errors, or subscribers that missed deliveries."""
    found = [
        f"{wrk_result[k]} {k.replace('_', ' ')}"
        for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
        if wrk_result[k]
    ]
    subs = record.get("subscribers")
    if subs is not None:
        if subs["closed"]:
            found.append(f"{subs['closed']} subscribers closed by the server")
        if subs["deliveries"] == 0:
            found.append("the subscribers received nothing")
    return found


# ---------------------------------------------------------------- one server


@dataclass(frozen=True)
class Plan:
    seconds: float
    warm: float
    workdir: Path
    cases: tuple[Case, ...]
    profile: bool = False  # py-spy the Python servers during each measured run
    profile_lines: bool = False  # by line, pausing the server per sample (bench/pyspy.py)


def measure(server: str, run: int, plan: Plan, redis: RedisServer) -> list[dict[str, Any]]:
    port = free_port()
    tag = f"{server}-r{run}"
    prefix = f"pub{run}{server.replace('-', '')}"
    uses_redis = server.endswith("-redis")
    cmd, env = server_command(server, port, plan.workdir, redis.url, prefix)
    log(f"run {run + 1}, {server}: {' '.join(cmd[3:])}")
    server_log = plan.workdir / f"server-{tag}.log"
    proc = start(cmd, server_log, stdout=subprocess.DEVNULL, env=env)
    records = []
    try:
        wait_ready(port, proc, 60, server_log)
        for case in plan.cases:
            base = {"server": server, "run": run, "case": case.name}
            try:
                rec = run_case(
                    server,
                    proc.pid,
                    redis.pid if uses_redis else None,
                    port,
                    case,
                    plan,
                    f"{tag}-{case.name}",
                )
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                rec = {"error": f"{type(exc).__name__}: {exc}", "problems": ["failed"]}
            rec = base | rec
            records.append(rec)
            log("    " + describe(rec))
    finally:
        stop(proc, grace=10.0)
    return records


def describe(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['case']}: FAILED {r['error']}"
    redis = r["redis_cpu_us_per_trigger"]
    extra = f", redis {redis:.0f} µs" if redis is not None else ""
    subs = r.get("subscribers")
    delivered = f", {subs['deliveries']:,} deliveries" if subs else ""
    flag = f"  SUSPECT: {'; '.join(r['problems'])}" if r["problems"] else ""
    return (
        f"{r['case']}: {r['triggers_per_s']:,.0f} triggers/s ({r['events_per_s']:,.0f} events/s),"
        f" p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, server CPU "
        f"{r['server_cpu_us_per_trigger']:.0f} µs/trigger{extra} ({r['server_cpu_pct']:.0f}%);"
        f" core {CLIENT_CORE} busy {r['client_core_busy']:.0f}%, others "
        f"{r['others_cpu']:.0f}%{delivered}{flag}"
    )


# ---------------------------------------------------------------- in-process rates


def in_process(kind: str, seconds: float, redis: RedisServer, workdir: Path) -> list[Any]:
    cmd = ["taskset", "-c", SERVER_CORE, PYTHON, str(BENCH / "publish_inprocess.py"), kind]
    cmd += ["--seconds", f"{seconds:g}"]
    if kind == "client":
        cmd += ["--redis", redis.url]
    log(f"in-process: {' '.join(cmd[3:])}")
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=servers.server_env(), timeout=6 * seconds + 60
    )
    (workdir / f"inprocess-{kind}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return [{"kind": kind, "error": done.stderr[-1000:]}]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for r in results:
        subscribers = f", {r['subscribers']} subscriber(s)" if "subscribers" in r else ""
        delivered = (
            f", {r['delivered']:,} of {r['published']:,} delivered" if "delivered" in r else ""
        )
        log(
            f"    {r['kind']}{subscribers}: {r['rate']:,.0f} triggers/s, "
            f"{r['cpu_us_per_trigger']:.1f} µs CPU per trigger{delivered}"
        )
    return results


# ---------------------------------------------------------------- summary


def median_range(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def good(records: list[dict[str, Any]], server: str, case: str) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r["server"] == server and r["case"] == case and "error" not in r and not r["problems"]
    ]


def ratios(records: list[dict[str, Any]], a: str, b: str, case: str, key: str) -> list[float]:
    """a / b for each run in which both were measured cleanly."""
    out = []
    for x in good(records, a, case):
        for y in good(records, b, case):
            if x["run"] == y["run"] and y[key]:
                out.append(x[key] / y[key])
    return out


PAIRS = (
    ("tidings", "soketi"),
    ("tidings-redis", "soketi-redis"),
    ("tidings-redis", "soketi"),
    ("tidings", "raw"),
    ("tidings-redis", "tidings"),
    ("tidings", "tidings-aiohttp"),
)


def per_cpu(record: dict[str, Any]) -> dict[str, Any]:
    """Events accepted per second of the server's CPU: triggers per core, whatever share of
    its core the server got. On a machine shared with other work this is the steadier
    figure: the events/s of a server whose core (or whose load generator's) was taken by
    someone else drop, its CPU per event does not."""
    if "error" in record or not record["server_cpu_us_per_trigger"]:
        return record
    events = CASES[record["case"]].events
    return record | {"events_per_cpu_s": 1e6 * events / record["server_cpu_us_per_trigger"]}


def summary(
    records: list[dict[str, Any]], names: list[str], cases: tuple[Case, ...]
) -> tuple[list[str], dict[str, Any]]:
    """A table per case, and the ratios of each pair per run: of events/s (throughput) and
    of events per server CPU-second (per core)."""
    records = [per_cpu(r) for r in records]
    lines: list[str] = []
    data: dict[str, Any] = {}
    columns = [
        ("triggers/s", "triggers_per_s", 0),
        ("events/s", "events_per_s", 0),
        ("events / CPU-s", "events_per_cpu_s", 0),
        ("p50 ms", "p50_ms", 2),
        ("p99 ms", "p99_ms", 2),
        ("CPU µs/trigger", "server_cpu_us_per_trigger", 0),
    ]
    for case in cases:
        lines.append(f"\n{case.name} (median (min–max) of runs)")
        lines.append(f"  {'server':<14}" + "".join(f"{c[0]:>27}" for c in columns))
        for server in names:
            rows = good(records, server, case.name)
            cells = [median_range([r[key] for r in rows], d) for _, key, d in columns]
            lines.append(f"  {server:<14}" + "".join(f"{c:>27}" for c in cells))
            data[f"{case.name}/{server}"] = {
                key: statistics.median([r[key] for r in rows]) if rows else None
                for _, key, _ in columns
            }
        for a, b in PAIRS:
            for key, what in (("events_per_s", "events/s"), ("events_per_cpu_s", "per CPU")):
                per_run = ratios(records, a, b, case.name, key)
                if per_run:
                    data[f"{case.name}/{a}÷{b}/{key}"] = per_run
                    text = ", ".join(f"{x:.2f}" for x in per_run)
                    median = statistics.median(per_run)
                    lines.append(f"  {a} / {b}, {what}: {median:.2f}× (per run: {text})")
    return lines, data


def targets(data: dict[str, Any], inprocess: list[dict[str, Any]]) -> list[str]:
    """Issue 18's targets, from the medians of the per-run ratios: of events/s, and of events
    per server CPU-second (what "per core" means when the core is shared)."""
    lines = ["\nissue-18 targets (same run, one server core; events/s | per CPU-second):"]

    def check(label: str, pair: str, want: float) -> None:
        found = [data.get(f"{pair}/{key}") for key in ("events_per_s", "events_per_cpu_s")]
        if not all(found):
            lines.append(f"  {label}: not measured")
            return
        got = [statistics.median(per_run) for per_run in found if per_run]
        verdict = "MET" if min(got) >= want else "NOT MET"
        lines.append(f"  {label}: {got[0]:.2f}× | {got[1]:.2f}× (want ≥ {want}×) {verdict}")

    check("single triggers, Tidings / Soketi", "single-0/tidings÷soketi", 1.5)
    check("batch events, Tidings / Soketi", "batch-10/tidings÷soketi", 1.5)
    check("single, Redis mode / Soketi Redis", "single-0/tidings-redis÷soketi-redis", 1.5)
    check("batch, Redis mode / Soketi Redis", "batch-10/tidings-redis÷soketi-redis", 1.5)
    check("Redis mode / memory mode (single)", "single-0/tidings-redis÷tidings", 0.8)
    p99 = [data.get(f"single-0/{s}", {}).get("p99_ms") for s in ("tidings", "soketi")]
    if None not in p99:
        verdict = "MET" if p99[0] <= p99[1] else "NOT MET"
        lines.append(f"  single p99 Tidings {p99[0]:.2f} ms vs Soketi {p99[1]:.2f} ms: {verdict}")
    for r in inprocess:
        # Each against Soketi's REST trigger to a channel with as many subscribers (a
        # client's PUBLISH costs it the same whoever subscribes: against single-0).
        case = "single-1" if r.get("subscribers") == 1 else "single-0"
        soketi = data.get(f"{case}/soketi", {})
        if "rate" in r and soketi.get("triggers_per_s"):
            want = 10 if r["kind"].startswith("embedded") else 3
            got = [
                r["rate"] / soketi["triggers_per_s"],
                soketi["server_cpu_us_per_trigger"] / r["cpu_us_per_trigger"],
            ]
            verdict = "MET" if min(got) >= want else "NOT MET"
            label = r["kind"] + (f" ({r['in_flight']} in flight)" if "in_flight" in r else "")
            lines.append(
                f"  {label}, {case} {r['rate']:,.0f}/s, {r['cpu_us_per_trigger']:.1f} µs CPU "
                f"each: {got[0]:.2f}× | {got[1]:.2f}× Soketi REST (want ≥ {want}×) {verdict}"
            )
    return lines


def print_profiles(records: list[dict[str, Any]], top: int = 20) -> None:
    for r in records:
        prof = r.get("saturate", {}).get("profile")
        if not prof or "self" not in prof:
            continue
        print(f"\nprofile {r['server']} {r['case']} run {r['run'] + 1} ({prof['samples']} samples)")
        for title in ("self", "inclusive"):
            print(f"  {title} %")
            for name, share in prof[title][:top]:
                print(f"  {share:6.1f}   {name}")


def report(path: Path) -> int:
    """--report: the tables and targets of a results file, again."""
    saved = json.loads(path.read_text())
    names = [s for s in SERVERS if any(r["server"] == s for r in saved["records"])]
    cases = tuple(c for c in CASES.values() if any(r["case"] == c.name for r in saved["records"]))
    lines, data = summary(saved["records"], names, cases)
    print("\n".join(lines + targets(data, saved["in_process"])))
    return 0


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Tidings publish benchmark, side by side")
    p.add_argument("--quick", action="store_true", help="1 run, 2 s per case")
    p.add_argument("--runs", type=int, default=None, help="interleaved runs (3; 1 with --quick)")
    p.add_argument("--seconds", type=float, default=None, help="per case (5; 2 with --quick)")
    p.add_argument("--servers", default=",".join(SERVERS), help=f"subset of {','.join(SERVERS)}")
    p.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    p.add_argument("--no-in-process", action="store_true", help="skip the in-process rates")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the Python servers during each case (py-spy shares wrk's core)",
    )
    p.add_argument("--profile-lines", action="store_true", help="--profile by source line")
    p.add_argument("--report", type=Path, help="print the tables of a results file and exit")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for s in args.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}")
    for c in args.cases:
        if c not in CASES:
            p.error(f"unknown case {c!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(args.report)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        log("wrk is not installed: `make wrk` (apt-get install wrk)")
        return 2
    servers.install([s.removesuffix("-redis") for s in args.servers])
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"publish-{stamp}"
    workdir.mkdir()
    cases = tuple(CASES[c] for c in args.cases)
    profile = args.profile or args.profile_lines
    plan = Plan(args.seconds, 1.0, workdir, cases, profile, args.profile_lines)  # whole seconds
    per_server = len(cases) * (plan.seconds + plan.warm + 1.5) + 4
    expected = args.runs * len(args.servers) * per_server + 4 * args.seconds + 10
    log(
        f"{args.runs} run(s) × {args.servers} × {args.cases}: expected ≈ "
        f"{expected / 60:.1f} min; logs in {workdir.relative_to(ROOT)}"
    )
    info = machine() | {"peers": servers.versions()}
    records: list[dict[str, Any]] = []
    inprocess: list[dict[str, Any]] = []
    out_path = RESULTS / f"publish-{stamp}.json"
    interrupted = False
    redis: RedisServer | None = None
    try:
        redis = RedisServer(workdir)
        info["redis_version"] = redis.version
        for run in range(args.runs):
            k = run % len(args.servers)
            for server in args.servers[k:] + args.servers[:k]:
                redis.client.flushall()
                records += measure(server, run, plan, redis)
        if not args.no_in_process:
            redis.client.flushall()
            inprocess += in_process("embedded", args.seconds, redis, workdir)
            inprocess += in_process("client", args.seconds, redis, workdir)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping every process started")
    finally:
        if redis is not None:
            redis.client.close()
        stop_all()
    lines, data = summary(records, args.servers, cases)
    lines += targets(data, inprocess)
    info["loadavg_end"] = os.getloadavg()
    meta = {"machine": info, "options": vars(args) | {"connections": CONNECTIONS}}
    out_path.write_text(
        json.dumps(meta | {"records": records, "in_process": inprocess, "summary": data}, indent=1)
    )
    print("\n".join(lines))
    bad = [r for r in records if r.get("problems")]
    if bad:
        print(f"\n{len(bad)} of {len(records)} measurements failed or are suspect:")
        for r in bad:
            what = r.get("error") or "; ".join(r["problems"])
            print(f"  {r['server']} {r['case']} run {r['run'] + 1}: {what}")
    print_profiles(records)
    print(f"\nresults: {out_path.relative_to(ROOT)}")
    if interrupted:
        return 130
    failed = [r for r in bad if r["server"].startswith("tidings")]
    return 0 if records and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
