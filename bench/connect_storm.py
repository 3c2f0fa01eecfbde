"""A connect storm: server CPU per WebSocket connect (a benchmark, not a test).

    .venv/bin/python bench/connect_storm.py [--n 10000] [--runs 3] [--servers tidings,...]

Each run starts every named server (bench/servers.py: tidings, tidings-no-lean, soketi ...)
in turn on the server core, then the C load client of bench/fanout.py on the client core
opens N WebSockets to it, 100 handshakes in flight, each until Pusher's
``connection_established``. It prints the connect rate and the server's CPU per connect (the
server process tree's utime + stime around the connect phase, so the rate's dependence on
the machine's other load matters less). Servers alternate order every run. ``--profile``
py-spies the server during the storm (bench/pyspy.py; the numbers of that run are not
comparable). Every process is stopped by PID. Results: bench/results/connect-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import procs
import pyspy
import servers
from loadclient import LoadClient, build_client, write_requests
from procs import RESULTS, log

HANDSHAKES_IN_FLIGHT = 100


def one(name: str, n: int, binary: Path, workdir: Path, tag: str, profile: bool) -> dict[str, Any]:
    """One storm against server ``name``."""
    port = procs.free_port()
    cmd, env = servers.command(name, port, workdir, "warning")
    server_log = workdir / f"{name}-{tag}.log"
    server = procs.start(cmd, server_log, env=env)
    client: LoadClient | None = None
    try:
        procs.wait_ready(port, server, 60, server_log)
        requests = write_requests(workdir / f"requests-{tag}.bin", port, 10)
        client = LoadClient(binary, port, n, requests, workdir / f"client-{name}-{tag}.log")
        spy = pyspy.start_profiler(server.pid, workdir, f"{name}-{tag}", 30) if profile else None
        before = sum(procs.cpu_seconds(p.pid) for p in procs.tree(server.pid))
        result = client.command(f"connect {HANDSHAKES_IN_FLIGHT} 120", 200)
        after = sum(procs.cpu_seconds(p.pid) for p in procs.tree(server.pid))
        established = int(result.get("established", 0))
        out: dict[str, Any] = {
            "server": name,
            "rate": float(result.get("rate", 0.0)),
            "established": established,
            "failed": int(result.get("failed", 0)),
            "cpu_us_per_connect": (after - before) / max(established, 1) * 1e6,
        }
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            out["profile"] = pyspy.finish(spy, workdir, f"{name}-{tag}")
        return out
    finally:
        if client is not None:
            client.close()
        procs.stop(server)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="connections per storm (10000)")
    p.add_argument("--runs", type=int, default=3, help="storms per server (3)")
    p.add_argument("--servers", default="tidings,tidings-no-lean,soketi")
    p.add_argument("--profile", action="store_true", help="py-spy each server during its storm")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    signal.signal(signal.SIGTERM, procs.on_signal)
    signal.signal(signal.SIGINT, procs.on_signal)
    procs.raise_fd_limit()
    if procs.fd_limit() < args.n + 1000:
        log(f"RLIMIT_NOFILE is {procs.fd_limit()}, N={args.n} needs ~{args.n + 1000}")
        return 2
    servers.install(names)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"connect-{stamp}"
    workdir.mkdir(parents=True)
    binary = build_client()
    records: list[dict[str, Any]] = []
    try:
        for run in range(args.runs):
            for name in names if run % 2 == 0 else list(reversed(names)):
                r = one(name, args.n, binary, workdir, f"r{run}", args.profile)
                r["run"] = run
                records.append(r)
                log(
                    f"run {run + 1} {name}: {r['established']:,}/{args.n:,} in "
                    f"{r['rate']:,.0f}/s, server CPU {r['cpu_us_per_connect']:.0f} µs per connect"
                )
    finally:
        procs.stop_all()
    out = RESULTS / f"connect-{stamp}.json"
    out.write_text(json.dumps({"machine": procs.machine(), "n": args.n, "records": records}))
    print(f"\nN = {args.n:,}, median (min–max) of {args.runs} runs")
    print("| server | connects/s | server CPU µs per connect |")
    print("|---|---:|---:|")
    for name in names:
        mine = [r for r in records if r["server"] == name]
        rates = [r["rate"] for r in mine]
        cpus = [r["cpu_us_per_connect"] for r in mine]
        print(
            f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) "
            f"| {statistics.median(cpus):.0f} ({min(cpus):.0f}–{max(cpus):.0f}) |"
        )
    print(f"\nresults: {out.relative_to(procs.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
