"""Hold 50,000 concurrent connections on this machine (a benchmark, not a test).

    .venv/bin/python bench/hold.py [--connections 50000] [--workers 4] [--publishes 5]

Issue 6 asks for 50,000 concurrent connections held on a 2-core machine. One process cannot
hold them here: the sandbox caps every process at 20,000 open files and cannot raise the cap
(see docs/benchmarks.md). So this runs Tidings the way a deployment past that cap would:
`tidings serve --workers W --redis URL` (W processes sharing the port with SO_REUSEPORT, one
private redis-server on a free port), with the connections opened by W load-client processes
(bench/loadclient.c), each below the cap.

It prints and records (bench/results/hold-<stamp>.json):
- connections/s until every socket got pusher:connection_established, and subscriptions/s;
- RSS of the whole server (every worker and the supervisor) per held connection;
- fan-out: client 0 publishes through the REST API; every subscriber, whichever worker holds
  it, must receive every publication exactly once (`verify` in each load client);
- how the kernel spread the connections over the workers.
Exit status 0 only if every connection was held and every publication reached everyone.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import procs
from cluster_nodes import RedisServer
from loadclient import LoadClient, build_client, source_addresses, write_requests
from procs import PYTHON, RESULTS, log
from servers import server_env, tidings_config

PER_PROCESS_MAX = 18_000  # leave room under the 20,000 open files of this sandbox


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Hold many concurrent Tidings connections")
    p.add_argument("--connections", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=4, help="server processes (and load clients)")
    p.add_argument("--publishes", type=int, default=5)
    p.add_argument("--deadline", type=float, default=240.0, help="seconds per phase")
    return p.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    per_client = -(-args.connections // args.workers)
    if per_client > PER_PROCESS_MAX:
        raise SystemExit(f"{per_client} connections per process: use more --workers")
    procs.raise_fd_limit()
    redis = RedisServer(workdir)
    port = procs.free_port()
    config = tidings_config(workdir / "tidings.toml", "warning")
    cmd = [PYTHON, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--config", str(config), "--workers", str(args.workers), "--redis", redis.url]
    cmd += ["--max-connection-rate", "0"]
    server_log = workdir / "server.log"
    log(f"tidings --workers {args.workers} on port {port}, redis {redis.url}")
    server = procs.start(cmd, server_log, env=server_env())
    clients: list[LoadClient] = []
    try:
        procs.wait_ready(port, server, 30, server_log)
        binary = build_client()
        requests = write_requests(workdir / "requests.bin", port, max(args.publishes, 1))
        baseline = procs.rss_bytes(server.pid)
        for k in range(args.workers):
            client_log = workdir / f"client-{k}.log"
            clients.append(
                LoadClient(
                    binary,
                    port,
                    per_client,
                    requests,
                    client_log,
                    cores="0,1",
                    sources=source_addresses(args.connections),  # all clients share the ports
                )
            )
        held = per_client * len(clients)

        def all_clients(command: str, timeout: float) -> list[dict[str, Any]]:
            for client in clients:
                client.send(command)
            return [client.read(timeout) for client in clients]

        started = time.monotonic()
        connected = all_clients(f"connect 200 {args.deadline}", args.deadline + 30)
        connect_s = time.monotonic() - started
        n_connected = sum(int(r.get("established", 0)) for r in connected)
        log(f"connected {n_connected:,}/{held:,} in {connect_s:.1f} s")
        time.sleep(2)
        rss = procs.rss_bytes(server.pid)
        started = time.monotonic()
        subscribed = all_clients(f"subscribe 200 {args.deadline}", args.deadline + 30)
        subscribe_s = time.monotonic() - started
        n_subscribed = sum(int(r.get("subscribed", 0)) for r in subscribed)
        log(f"subscribed {n_subscribed:,}/{held:,} in {subscribe_s:.1f} s")
        warm = clients[0].command(f"warm {args.publishes} 60", 60 * args.publishes + 30)
        time.sleep(1)
        verified = all_clients(f"verify {args.publishes}", 60)
        complete = all(v.get("complete") == args.publishes and not v.get("extra") for v in verified)
        log(f"{args.publishes} publications reached every subscriber once: {complete}")
        per_worker = [
            p.num_fds() for p in procs.tree(server.pid)[1:] if p.is_running()
        ]  # supervisor first, then the workers
        return {
            "connections": held,
            "workers": args.workers,
            "connected": n_connected,
            "subscribed": n_subscribed,
            "connect_seconds": connect_s,
            "connections_per_s": n_connected / connect_s if connect_s else 0.0,
            "subscriptions_per_s": n_subscribed / subscribe_s if subscribe_s else 0.0,
            "rss_baseline_bytes": baseline,
            "rss_bytes": rss,
            "rss_kib_per_connection": (rss - baseline) / 1024 / max(n_connected, 1),
            "worker_open_files": per_worker,
            "warm": warm,
            "verify": verified,
            "every_publication_reached_everyone": complete,
            "held": n_connected == held and n_subscribed == held,
        }
    finally:
        for client in clients:
            client.close()
        procs.stop(server)
        redis.stop()


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
    print(f"| connections held | {result['connected']:,} of {result['connections']:,} |")
    print(f"| server processes | {result['workers']} workers + supervisor, Redis |")
    print(f"| connections/s | {result['connections_per_s']:,.0f} |")
    print(f"| subscriptions/s | {result['subscriptions_per_s']:,.0f} |")
    print(f"| RSS KiB per connection (all processes) | {result['rss_kib_per_connection']:.1f} |")
    print(f"| open files per worker | {', '.join(map(str, result['worker_open_files']))} |")
    everyone = result["every_publication_reached_everyone"]
    print(f"| every publication reached everyone once | {everyone} |")
    print(f"\nresults: {out}")
    return 0 if result["held"] and result["every_publication_reached_everyone"] else 1


if __name__ == "__main__":
    sys.exit(main())
