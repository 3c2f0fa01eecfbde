"""Hold 100,000 concurrent connections on this machine (a benchmark, not a test).

    .venv/bin/python bench/hold.py [--connections 100000] [--workers W] [--clients C]
                                   [--sources S] [--publishes 5] [--quick]

Issue 17 asks for 100,000 concurrent connections held on a 2-core machine (issue 6 asked for
50,000). One process cannot hold them here: the sandbox caps every process at 20,000 open
files and cannot raise the cap (see docs/benchmarks.md). So this runs Tidings the way a
deployment past that cap would: `tidings serve --workers W --redis URL` (W processes sharing
the port with SO_REUSEPORT, one private redis-server on a free port), with the connections
opened by C load-client processes (bench/loadclient.c), each below the cap, from S loopback
source addresses (127.0.0.1, 127.0.0.2, ...: one address has one ephemeral port range towards
the server's one port). W, C and S default to what the limits read from this machine need.

It checks the kernel limits that bite at this size before starting (ephemeral ports per
source address, the per-process fd cap, conntrack's table when it tracks loopback, free
memory) and prints and records (bench/results/hold-<stamp>.json):
- connections/s until every socket got pusher:connection_established, and subscriptions/s
  (with the server's CPU-seconds per 1,000 of each: less sensitive to a busy machine);
- RSS of the whole server (every worker and the supervisor) in total and per held connection,
  and redis-server's apart;
- fan-out: client 0 publishes through the REST API; every subscriber, whichever worker holds
  it, must receive every publication exactly once (`verify` in each load client);
- how the kernel spread the connections over the workers (sockets per worker).
Exit status 0 only if every connection was held and every publication reached everyone
exactly once; otherwise it says which check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import procs
from cluster_nodes import RedisServer
from loadclient import (
    AUTH_WINDOW,
    PUBLISHER_CONNECTIONS,
    LoadClient,
    build_client,
    write_requests,
)
from procs import PYTHON, RESULTS, log
from servers import server_env, tidings_config

FD_MARGIN = 1_500  # open files a process needs besides its sockets (Redis, epoll, libraries)
SPREAD_MARGIN = 1.10  # SO_REUSEPORT hashes: a worker may get a few % more than its share
PORT_SHARE = 0.5  # use at most half of each source address's ephemeral ports
QUICK_CONNECTIONS = 10_000
# Handshakes and subscriptions in flight per load client. Each subscription is a Redis round
# trip, at most 32 at once per worker (brokers/redis/link.py); with 6 clients a higher figure
# only makes a longer queue in every worker.
CONNECTING = 200
SUBSCRIBING = 50


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Hold many concurrent Tidings connections")
    p.add_argument("--connections", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=0, help="server processes (0: as needed)")
    p.add_argument("--clients", type=int, default=0, help="load-client processes (0: as needed)")
    p.add_argument("--sources", type=int, default=0, help="loopback source addresses (0: auto)")
    p.add_argument("--publishes", type=int, default=5)
    p.add_argument("--deadline", type=float, default=600.0, help="seconds per phase")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_CONNECTIONS:,} connections")
    args = p.parse_args(argv)
    if args.quick:
        args.connections = QUICK_CONNECTIONS
    return args


def read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Workers, clients and source addresses for N from this machine's limits; refuses a plan
    that one of them would break, naming the limit."""
    n = args.connections
    fds = procs.fd_limit()
    budget = fds - FD_MARGIN
    if budget <= 0:
        raise SystemExit(f"the open-file limit ({fds}) leaves no room for connections")
    cores = os.cpu_count() or 1
    workers = args.workers or max(cores, math.ceil(n * SPREAD_MARGIN / budget))
    clients = args.clients or math.ceil((n + PUBLISHER_CONNECTIONS) / budget)
    ports = procs.ephemeral_ports()
    sources = args.sources or max(1, math.ceil(n / (PORT_SHARE * ports)))
    problems = []
    if n * SPREAD_MARGIN / workers > budget:
        problems.append(f"{n / workers:,.0f} connections per worker: over {budget:,} open files")
    if n / clients + PUBLISHER_CONNECTIONS > budget:
        problems.append(f"{n / clients:,.0f} connections per client: over {budget:,} open files")
    if n / sources > 0.9 * ports:
        problems.append(f"{n / sources:,.0f} per source address: ephemeral ports are {ports:,}")
    # conntrack tracks loopback only where a netfilter rule made it load; one entry per
    # connection, and a full table drops new SYNs.
    conntrack_max = read_int("/proc/sys/net/netfilter/nf_conntrack_max")
    conntrack_count = read_int("/proc/sys/net/netfilter/nf_conntrack_count")
    if conntrack_max and conntrack_count and conntrack_count + n > 0.9 * conntrack_max:
        problems.append(f"conntrack holds {conntrack_count:,} of {conntrack_max:,} entries")
    # Measured: ~1-2 KiB per server socket, ~1 KiB per client one, ~4 KiB of kernel socket
    # memory per connection pair, plus ~80 MB per server process: ask for twice that.
    need = 2 * (n * 8 * 1024 + (workers + 1) * 100 * 2**20)
    available = mem_available()
    if available and available < need:
        problems.append(f"{available / 2**20:,.0f} MiB available, want {need / 2**20:,.0f}")
    if problems:
        raise SystemExit("cannot hold {:,} connections here: {}".format(n, "; ".join(problems)))
    return {
        "workers": workers,
        "clients": clients,
        "sources": sources,
        "limits": {
            "open_files_per_process": fds,
            "ephemeral_ports_per_source": ports,
            "port_range": Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split(),
            "conntrack_max": conntrack_max,
            "conntrack_count": conntrack_count,
            "somaxconn": read_int("/proc/sys/net/core/somaxconn"),
            "mem_available_bytes": available,
            "cores": cores,
        },
    }


def sockets(pid: int) -> int:
    """Open sockets of one process (counting /proc/PID/fd links is cheap at 20,000)."""
    count = 0
    try:
        with os.scandir(f"/proc/{pid}/fd") as it:
            for entry in it:
                try:
                    count += os.readlink(entry.path).startswith("socket:")
                except OSError:
                    pass
    except OSError:
        return 0
    return count


READY_PROBES = 30


def degraded_answers(port: int) -> int:
    """How many of READY_PROBES GET /ready (each a new connection: SO_REUSEPORT spreads them
    over the workers) say the worker is degraded (cut off from Redis)."""
    count = 0
    for _ in range(READY_PROBES):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
                count += bool(json.loads(r.read()).get("degraded"))
        except (OSError, ValueError):
            count += 1
    return count


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    procs.raise_fd_limit()
    layout = plan(args)
    workers, n_clients, sources = layout["workers"], layout["clients"], layout["sources"]
    redis = RedisServer(workdir)
    port = procs.free_port()
    config = tidings_config(workdir / "tidings.toml", "warning")
    cmd = [PYTHON, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--config", str(config), "--workers", str(workers), "--redis", redis.url]
    cmd += ["--max-connection-rate", "0"]
    server_log = workdir / "server.log"
    log(
        f"tidings --workers {workers} on port {port}, redis {redis.url}; "
        f"{n_clients} load clients from {sources} source addresses"
    )
    server = procs.start(cmd, server_log, env=server_env())
    clients: list[LoadClient] = []
    try:
        procs.wait_ready(port, server, 60, server_log)
        binary = build_client()
        # The clients load them now and publish after connecting and subscribing, which can
        # take longer than the server's 600 s window for auth_timestamp on a busy machine.
        ahead = AUTH_WINDOW - 60
        requests = write_requests(workdir / "requests.bin", port, max(args.publishes, 1), ahead)
        time.sleep(1)  # every worker has bound the port and connected to Redis
        worker_pids = [p.pid for p in procs.tree(server.pid)[1:]]
        baseline = procs.rss_bytes(server.pid)
        baseline_sockets = [sockets(pid) for pid in worker_pids]
        redis_baseline = procs.rss_bytes(redis.pid)
        shares = [args.connections // n_clients] * n_clients
        for k in range(args.connections % n_clients):
            shares[k] += 1
        for k, share in enumerate(shares):
            client_log = workdir / f"client-{k}.log"
            clients.append(
                LoadClient(binary, port, share, requests, client_log, cores="0,1", sources=sources)
            )
        held = sum(shares)

        def all_clients(command: str, timeout: float) -> list[dict[str, Any]]:
            for client in clients:
                client.send(command)
            return [client.read(timeout) for client in clients]

        cpu0 = procs.cpu_seconds(server.pid)
        started = time.monotonic()
        connected = all_clients(f"connect {CONNECTING} {args.deadline}", args.deadline + 30)
        connect_s = time.monotonic() - started
        cpu_connect = procs.cpu_seconds(server.pid) - cpu0
        n_connected = sum(int(r.get("established", 0)) for r in connected)
        log(f"connected {n_connected:,}/{held:,} in {connect_s:.1f} s")
        time.sleep(2)
        rss_idle = procs.rss_bytes(server.pid)
        cpu0 = procs.cpu_seconds(server.pid)
        started = time.monotonic()
        subscribed = all_clients(f"subscribe {SUBSCRIBING} {args.deadline}", args.deadline + 30)
        subscribe_s = time.monotonic() - started
        cpu_subscribe = procs.cpu_seconds(server.pid) - cpu0
        n_subscribed = sum(int(r.get("subscribed", 0)) for r in subscribed)
        log(f"subscribed {n_subscribed:,}/{held:,} in {subscribe_s:.1f} s")
        time.sleep(2)
        rss = procs.rss_bytes(server.pid)
        redis_rss = procs.rss_bytes(redis.pid)
        redis_used = int(redis.client.info("memory")["used_memory"])
        redis_commands = redis.commandstats()
        per_worker = [
            sockets(pid) - base for pid, base in zip(worker_pids, baseline_sockets, strict=True)
        ]
        degraded = degraded_answers(port)
        if degraded:
            log(f"{degraded} of {READY_PROBES} GET /ready answers say degraded")
        warm = clients[0].command(f"warm {args.publishes} 60", 60 * args.publishes + 30)
        time.sleep(1)
        verified = all_clients(f"verify {args.publishes}", 60)
        once = all(
            v.get("complete") == args.publishes and not v.get("extra") and not v.get("missing")
            for v in verified
        )
        log(f"{args.publishes} publications reached every subscriber exactly once: {once}")
        still_open = sum(
            int(v.get("established", 0)) - int(v.get("closed_by_peer", 0)) for v in verified
        )
        return {
            "connections": held,
            "workers": workers,
            "clients": n_clients,
            "sources": sources,
            "limits": layout["limits"],
            "connected": n_connected,
            "subscribed": n_subscribed,
            "still_open_at_verify": still_open,
            "connect_seconds": connect_s,
            "connections_per_s": n_connected / connect_s if connect_s else 0.0,
            "server_cpu_ms_per_1k_connections": 1e6 * cpu_connect / max(n_connected, 1),
            "subscribe_seconds": subscribe_s,
            "subscriptions_per_s": n_subscribed / subscribe_s if subscribe_s else 0.0,
            "server_cpu_ms_per_1k_subscriptions": 1e6 * cpu_subscribe / max(n_subscribed, 1),
            "rss_baseline_bytes": baseline,
            "rss_idle_bytes": rss_idle,
            "rss_bytes": rss,
            "rss_kib_per_idle_connection": (rss_idle - baseline) / 1024 / max(n_connected, 1),
            "rss_kib_per_connection": (rss - baseline) / 1024 / max(n_subscribed, 1),
            "rss_kib_per_connection_with_baseline": rss / 1024 / max(n_subscribed, 1),
            "redis_rss_baseline_bytes": redis_baseline,
            "redis_rss_bytes": redis_rss,
            "redis_used_memory_bytes": redis_used,
            "worker_sockets": per_worker,
            "ready_probes_degraded": degraded,
            "redis_commandstats_after_subscribe": redis_commands,
            "redis_commandstats_at_end": redis.commandstats(),
            "warm": warm,
            "connect": connected,
            "subscribe": subscribed,
            "verify": verified,
            "every_publication_reached_everyone_once": once,
            "held": n_connected == held and n_subscribed == held and still_open == held,
        }
    finally:
        for client in clients:
            client.close()
        procs.stop(server)
        redis.stop()


def report(result: dict[str, Any]) -> None:
    mib = 2**20
    w = result["worker_sockets"]
    print(f"| connections held | {result['connected']:,} of {result['connections']:,} |")
    print(
        f"| server processes | {result['workers']} workers + supervisor, Redis; "
        f"{result['clients']} load clients, {result['sources']} source addresses |"
    )
    print(
        f"| connections/s | {result['connections_per_s']:,.0f} "
        f"({result['server_cpu_ms_per_1k_connections']:,.0f} server CPU-ms per 1k) |"
    )
    print(
        f"| subscriptions/s | {result['subscriptions_per_s']:,.0f} "
        f"({result['server_cpu_ms_per_1k_subscriptions']:,.0f} server CPU-ms per 1k) |"
    )
    print(
        f"| server RSS (workers + supervisor) | {result['rss_baseline_bytes'] / mib:,.0f} MiB "
        f"empty, {result['rss_idle_bytes'] / mib:,.0f} MiB connected, "
        f"{result['rss_bytes'] / mib:,.0f} MiB subscribed |"
    )
    print(
        f"| RSS KiB per connection (all server processes) | "
        f"{result['rss_kib_per_idle_connection']:.2f} idle, "
        f"{result['rss_kib_per_connection']:.2f} subscribed; "
        f"{result['rss_kib_per_connection_with_baseline']:.2f} with the baseline |"
    )
    print(
        f"| redis-server | RSS {result['redis_rss_baseline_bytes'] / mib:,.1f} -> "
        f"{result['redis_rss_bytes'] / mib:,.1f} MiB, used_memory "
        f"{result['redis_used_memory_bytes'] / mib:,.1f} MiB |"
    )
    spread = ", ".join(f"{x:,}" for x in w)
    print(f"| sockets per worker | {spread} (min {min(w):,}, max {max(w):,}) |")
    once = result["every_publication_reached_everyone_once"]
    print(f"| every publication reached everyone exactly once | {once} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, procs.on_signal)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"hold-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, workdir)
    finally:
        procs.stop_all()
    result["machine"] = procs.machine()
    out = RESULTS / f"hold-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    print()
    report(result)
    print(f"\nresults: {out}")
    failures = []
    if not result["held"]:
        failures.append(
            f"held {result['connected']:,} connected / {result['subscribed']:,} subscribed / "
            f"{result['still_open_at_verify']:,} still open of {result['connections']:,}"
        )
    if not result["every_publication_reached_everyone_once"]:
        failures.append("a publication was missed or delivered twice (see verify in the json)")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
