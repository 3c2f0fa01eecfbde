"""Scale-out benchmark for Tidings over Redis (a benchmark, not a test).

    .venv/bin/python bench/cluster.py [--n 10000] [--runs 3] [--quick]

It starts a private ``redis-server`` on a free loopback port (no persistence) and, for each
run and each configuration (order alternating per run so drift hits all of them):

    memory    1 Tidings node, memory broker                      (the single-node baseline)
    redis1    1 node with --redis                                (the cost of the Redis hop)
    redis2    2 nodes with --redis on two ports, N/2 subscribers on each, every publish
              through node 1's REST API (node 2 gets it from Redis)
    workers2  1 ``serve --workers 2 --redis``: two worker processes on one port (SO_REUSEPORT;
              the kernel splits connections and publishes between them)
    redis1-history, redis2-history   redis1 and redis2 keeping history on channel "bench"
              (only when named in --configs: docs/history.md, issue 16)

it measures, with the C load client of bench/fanout.py (N subscribers of channel "bench"):
connections/s, subscriptions/s, latency p50/p99 at a moderate open-loop rate, saturation
deliveries/s (closed loop, 16 broadcasts in flight over 16 REST connections) with the CPU of
every process and core, then Redis commands per publish (CONFIG RESETSTAT, a fixed number of
publishes one at a time, INFO commandstats / cpu / stats), and finally checks that every
published seq reached every subscriber exactly once (no duplicate, no loss across nodes).

The load client is bench/loadclient.c (as in bench/fanout.py): its ``-2 PORT2`` option sends
every odd subscriber to a second node, and its ``verify`` command reports per-seq delivery
counts. The latency rate is bench/fanout.py's (10 msg/s at N = 1,000, 1 msg/s above).

Pinning (``taskset``/``sched_setaffinity``) on a 2-core machine: the server side gets core 0
and the load client core 1 in every configuration (as bench/fanout.py does), so each is
measured at saturation with the same budget: the one node of memory and redis1, both nodes
of redis2, both workers of workers2. ``--pair-cores spread`` puts the two nodes on a core
each instead, with the client floating over both cores and competing with them (the layout
before 2026-12-06). Redis always floats (it is on the publish path: a Redis that waits for a
busy core adds its wait to every publish). With 4+ cores every process gets a core of its
own. The saturation phase publishes through one keep-alive connection per broadcast in
flight (16), so every configuration can keep 16 in flight.
Every process started is stopped by PID at the end, on Ctrl-C and on errors. Results:
bench/results/cluster-<timestamp>.json, logs in bench/results/cluster-<timestamp>/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import redis

import fanout
import procs
import pyspy
from cluster_nodes import (
    PAIR_CORES,
    Cluster,
    Layout,
    RedisServer,
    established,
    layout,
    start_cluster,
)
from cluster_report import LABELS, summarize, target_lines, write_json
from fanout import Plan
from loadclient import LoadClient, build_client, write_requests
from procs import RESULTS, ROOT, log

CONFIGS = ("memory", "redis1", "redis2", "workers2")
# Also runnable (--configs): redis1 and redis2 with history on the bench channel.
EXTRA_CONFIGS = ("redis1-history", "redis2-history")
BROADCASTS_IN_FLIGHT = fanout.BROADCASTS_IN_FLIGHT
HANDSHAKES_IN_FLIGHT = fanout.HANDSHAKES_IN_FLIGHT
WARMUP_CONNECTIONS = fanout.WARMUP_CONNECTIONS
HEARTBEAT_S = 5.0  # node_ttl 15 s / 3: one EVALSHA per node every 5 s
SENDTO = "syscalls:sys_enter_sendto"  # --sends: the C fan-out writes with send()
TARGET = 0.8  # issue 17: redis2 ≥ 0.8 × memory in deliveries per node CPU-second
# One REST connection per broadcast in flight, so the closed loop really has 16 in flight. With
# fanout.py's 4 it had at most 4 unanswered publishes: a node that answers only after Redis
# has taken the PUBLISH (redis1, redis2) then got 4, or in a split rhythm 2, publications per
# fan-out round, where the memory node answers at once and got ~3 (docs/benchmarks.md).
PUBLISHERS = BROADCASTS_IN_FLIGHT


# ---------------------------------------------------------------- one measurement


def unreachable_logged(cluster: Cluster) -> int:
    """ "redis unreachable" warnings the nodes logged so far (each one a degraded episode)."""
    return sum(p.read_text(errors="replace").count("redis unreachable") for p in cluster.logs)


def settle(cluster: Cluster, server: RedisServer, topic: str, timeout: float) -> float:
    """Wait until every node is healthy and subscribed to the topic; returns the wait.

    Needed because a burst of subscriptions can put a node in degraded mode (see
    docs/benchmarks.md, "Scale-out over Redis"): publishing before it has resynced would
    measure the outage, not the fan-out."""
    t0 = time.monotonic()
    healthy = 0
    while time.monotonic() - t0 < timeout:
        ok = all(not wait_ready_body(port).get("degraded", True) for port in cluster.ports)
        numsub = dict(server.client.pubsub_numsub(topic)).get(topic, 0)
        healthy = healthy + 1 if ok and numsub == len(cluster.node_pids) else 0
        if healthy >= 5:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"nodes not healthy and subscribed to {topic} after {timeout} s")


def bench_topic(prefix: str) -> str:
    """The Redis pub/sub topic of channel "bench" (``RedisCluster.topic``: hash-tagged)."""
    return f"{prefix}#{{12345#bench}}"


def wait_ready_body(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
        body: dict[str, Any] = json.loads(r.read())
    return body


def sample(pids: dict[str, int]) -> dict[str, Any]:
    return {
        "t": time.monotonic(),
        "cpu": {name: procs.cpu_seconds(pid) for name, pid in pids.items()},
        "cores": procs.core_times(),
        "all": procs.all_processes(),
    }


def usage(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """CPU % of each process and busy/softirq % of each core between two samples."""
    wall = after["t"] - before["t"]
    out: dict[str, Any] = {
        f"{name}_cpu": 100.0 * (after["cpu"][name] - before["cpu"][name]) / wall
        for name in before["cpu"]
    }
    for core, b in before["cores"].items():
        a = after["cores"][core]
        total = a[3] - b[3]
        if total > 0:
            out[f"core{core}_busy"] = 100.0 * (a[0] - b[0]) / total
            out[f"core{core}_softirq"] = 100.0 * (a[1] - b[1]) / total
            out[f"core{core}_steal"] = 100.0 * (a[2] - b[2]) / total
    return out


def count_sends(pids: dict[str, int], folder: Path) -> dict[str, tuple[Any, Path]]:
    """--sends: ``perf stat`` counting each node's send() calls (sendto) until stopped."""
    out: dict[str, tuple[Any, Path]] = {}
    for name, pid in pids.items():
        if name.startswith("node"):
            path = folder / f"sends-{pid}.txt"
            cmd = ["perf", "stat", "-x", ",", "-e", SENDTO, "-p", str(pid), "-o", str(path)]
            out[name] = (
                procs.start(cmd, path.with_suffix(".log"), stdout=subprocess.DEVNULL),
                path,
            )
    return out


def sends_counted(counters: dict[str, tuple[Any, Path]]) -> dict[str, int]:
    """Stop the counters of :func:`count_sends`; send() calls per node."""
    counts: dict[str, int] = {}
    for name, (proc, path) in counters.items():
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            procs.stop(proc)
        for line in path.read_text().splitlines() if path.exists() else []:
            value, _, rest = line.partition(",")
            if SENDTO in rest and value.isdigit():
                counts[name] = int(value)
    return counts


def saturate(
    client: LoadClient, pids: dict[str, int], plan: Plan, tag: str, sends: Path | None
) -> dict[str, Any]:
    """The closed-loop saturation phase; ``sends``: a folder to count send() calls in."""
    client.send(f"saturate {BROADCASTS_IN_FLIGHT} {plan.sat_warm} {plan.sat_window}")
    first = client.read(plan.sat_warm + 30)
    assert first["phase"] == "sat_start", first
    spies = {}
    if plan.profile is not None:
        for name, pid in pids.items():
            if name.startswith("node"):
                spy_tag = f"{tag}-{name}"
                spy = pyspy.start_profiler(
                    pid, plan.profile, spy_tag, plan.sat_window, plan.profile_lines
                )
                spies[name] = (spy, spy_tag)
    counters = count_sends(pids, sends) if sends is not None else {}
    before = sample(pids)
    end = client.read(plan.sat_window + 30)
    after = sample(pids)
    node_sends = sends_counted(counters)
    assert end["phase"] == "sat_end", end
    result = client.read(60)
    if node_sends:
        result["sends"] = node_sends
        result["deliveries_per_send"] = result["deliveries"] / max(1, sum(node_sends.values()))
    if plan.profile is not None:
        result["profiles"] = {
            name: pyspy.finish(spy, plan.profile, spy_tag) for name, (spy, spy_tag) in spies.items()
        }
    result.update(usage(before, after))
    ours = {os.getpid()} | {p.pid for pid in pids.values() for p in procs.tree(pid)}
    result["others_cpu_pct"] = procs.others_cpu(before, after, ours)
    node_cpu_s = sum(
        after["cpu"][k] - before["cpu"][k] for k in before["cpu"] if k.startswith("node")
    )
    result["deliveries_per_node_cpu_s"] = (
        result["deliveries"] / node_cpu_s if node_cpu_s > 0 else float("nan")
    )
    # Redis mode costs redis-server's CPU too: reported beside, never in, the node figure.
    if "redis" in pids:
        redis_cpu_s = after["cpu"]["redis"] - before["cpu"]["redis"]
        result["redis_cpu_s"] = redis_cpu_s
        both = node_cpu_s + redis_cpu_s
        result["deliveries_per_node_and_redis_cpu_s"] = (
            result["deliveries"] / both if both > 0 else float("nan")
        )
    return result


def redis_cost(
    client: LoadClient, server: RedisServer, publishes: int, nodes: int
) -> dict[str, Any]:
    """Commands, CPU and bytes per publish over a fixed number of sequential publishes."""
    time.sleep(0.5)
    topics = server.client.pubsub_channels()
    numsub = dict(server.client.pubsub_numsub(*topics)) if topics else {}
    server.client.config_resetstat()
    before = server.snapshot()
    done = client.command(f"warm {publishes}", publishes * 10 + 30)
    # A node writes to its local subscribers before it PUBLISHes: the last PUBLISH may still
    # be on its way when the client has every delivery.
    time.sleep(0.5)
    after = server.snapshot()
    stats = server.commandstats()
    wall = after["t"] - before["t"]
    per_publish = {
        name.removeprefix("cmdstat_").upper(): float(v["calls"]) / publishes
        for name, v in sorted(stats.items())
    }
    heartbeats = nodes * wall / HEARTBEAT_S
    out = {
        "publishes": publishes,
        "complete": done["complete"],
        "seconds": wall,
        "calls": {k.removeprefix("cmdstat_").upper(): v["calls"] for k, v in stats.items()},
        "usec": {k.removeprefix("cmdstat_").upper(): v["usec"] for k, v in stats.items()},
        "per_publish": per_publish,
        "commands_per_publish": sum(per_publish.values()),
        "command_us_per_publish": sum(float(v["usec"]) for v in stats.values()) / publishes,
        "expected_heartbeat_evalsha": heartbeats,
        "redis_cpu_us_per_publish": 1e6 * (after["cpu_s"] - before["cpu_s"]) / publishes,
        "redis_cpu_pct": 100.0 * (after["cpu_s"] - before["cpu_s"]) / wall,
        "net_in_per_publish": (after["net_in"] - before["net_in"]) / publishes,
        "net_out_per_publish": (after["net_out"] - before["net_out"]) / publishes,
        "pubsub_numsub": numsub,
    }
    calls = ", ".join(f"{k} {v:.2f}" for k, v in per_publish.items())
    log(
        f"    redis per publish ({publishes} publishes, {wall:.1f} s): {calls}; "
        f"CPU {out['redis_cpu_us_per_publish']:.0f} µs, out {out['net_out_per_publish']:.0f} B; "
        f"subscribers per topic {numsub}; heartbeat EVALSHA expected ≈ {heartbeats:.1f} in total"
    )
    return out


def session(
    binary: Path,
    cluster: Cluster,
    lay: Layout,
    server: RedisServer,
    n: int,
    plan: Plan,
    publishes: int,
    workdir: Path,
    tag: str,
    sends: bool = False,
) -> dict[str, Any]:
    extra = publishes + 20
    requests = write_requests(
        workdir / f"requests-{tag}.bin", cluster.ports[0], plan.request_count(n) + extra
    )
    client = cluster_client(binary, cluster, lay, n, requests, workdir / f"client-{tag}.log")
    pids = {f"node{i + 1}": pid for i, pid in enumerate(cluster.node_pids)}
    pids["client"] = client.pid
    if cluster.config != "memory":
        pids["redis"] = server.pid
    out: dict[str, Any] = {}
    try:
        logged = unreachable_logged(cluster)
        bound = plan.setup_deadline(n)
        conn = client.command(f"connect {HANDSHAKES_IN_FLIGHT} {bound}", bound + 30)
        out["connect"] = conn
        sub = client.command(f"subscribe {HANDSHAKES_IN_FLIGHT} {bound}", bound + 30)
        out["subscribe"] = sub
        ports = cluster.ports * len(cluster.node_pids) if len(cluster.ports) == 1 else cluster.ports
        out["per_node"] = [
            established(p, port) for p, port in zip(cluster.node_pids, ports, strict=True)
        ]
        log(
            f"    connect {conn['established']}/{n} ({conn['rate']:,.0f}/s), subscribe "
            f"{sub['subscribed']}/{n} ({sub['rate']:,.0f}/s); sockets per node {out['per_node']}"
        )
        if cluster.config != "memory":
            out["unreachable_in_subscribe"] = unreachable_logged(cluster) - logged
            out["settle_s"] = settle(cluster, server, bench_topic(cluster.prefix), 30)
            log(
                f"    degraded episodes logged while connecting/subscribing: "
                f"{out['unreachable_in_subscribe']}; healthy and subscribed after "
                f"{out['settle_s']:.1f} s"
            )
        drain = plan.drain(n)
        out["warm"] = client.command(f"warm 3 {drain}", 3 * drain + 30)
        rate = plan.latency_rate(n)
        lat = client.command(
            f"latency {rate} {plan.latency_seconds} {drain}", plan.latency_seconds + drain + 30
        )
        out["latency"] = lat
        log(
            f"    latency @{rate:g} msg/s: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms "
            f"({lat['received']}/{lat['expected']})"
        )
        sat = saturate(client, pids, plan, tag, workdir if sends else None)
        out["saturate"] = sat
        cpus = ", ".join(f"{k[:-4]} {v:.0f}%" for k, v in sat.items() if k.endswith("_cpu"))
        cores = ", ".join(
            f"{k[:-5]} {v:.0f}%"
            for k, v in sat.items()
            if k.startswith("core") and k.endswith("_busy")
        )
        log(
            f"    saturation: {sat['rate']:,.0f} deliveries/s; CPU {cpus}; busy {cores}; "
            f"other processes {sat['others_cpu_pct']:.0f}%"
        )
        if cluster.config != "memory":
            out["redis"] = redis_cost(client, server, publishes, len(cluster.node_pids))
        ver = client.command("verify", 60)
        out["verify"] = ver
        out["unreachable_in_session"] = unreachable_logged(cluster) - logged
        log(
            f"    verify: {ver['complete']}/{ver['published']} seqs reached all "
            f"{ver['subscribed']} subscribers; missing {ver['missing']}, duplicate {ver['extra']}"
        )
    finally:
        client.close()
        requests.unlink(missing_ok=True)
    return out


def cluster_client(
    binary: Path, cluster: Cluster, lay: Layout, n: int, requests: Path, log_path: Path
) -> LoadClient:
    """The load client on the layout's cores; with two nodes every odd subscriber goes to
    the second one (-2)."""
    port2 = cluster.ports[1] if len(cluster.ports) > 1 else None
    ports = cluster.ports[0]
    return LoadClient(
        binary,
        ports,
        n,
        requests,
        log_path,
        cores=lay.client,
        port2=port2,
        publishers=PUBLISHERS,
    )


def warmup(binary: Path, cluster: Cluster, lay: Layout, workdir: Path, tag: str) -> bool:
    """50 connections through every phase, on every node (lazy imports, first allocations)."""
    n = WARMUP_CONNECTIONS
    requests = write_requests(workdir / f"requests-warm-{tag}.bin", cluster.ports[0], 200)
    log_path = workdir / f"client-warm-{tag}.log"
    client = cluster_client(binary, cluster, lay, n, requests, log_path)
    try:
        client.command("connect 50", 30)
        sub = client.command("subscribe 50", 30)
        client.command("warm 3", 30)
        client.command("latency 20 1", 30)
        client.command(f"saturate {BROADCASTS_IN_FLIGHT} 0.2 0.5", 30)
        client.read(30)
        client.read(30)
        return bool(sub["subscribed"] == n)
    finally:
        client.close()
        requests.unlink(missing_ok=True)


def print_profiles(records: list[dict[str, Any]], top: int = 15) -> None:
    """--profile: each node's hottest functions during the saturation window."""
    for r in records:
        for name, prof in r.get("saturate", {}).get("profiles", {}).items():
            if "self" not in prof:
                continue
            print(f"\nprofile {r['config']} {name} run {r['run'] + 1} ({prof['samples']} samples)")
            for title, rows in (("self", prof["self"]), ("incl", prof["inclusive"])):
                print(f"  {title} %   function")
                for function, share in rows[:top]:
                    print(f"  {share:6.1f}   {function}")


def validate(record: dict[str, Any], n: int) -> list[str] | bool:
    """True, or the problems that make the record suspect: the phases as in fanout.py, then
    the cluster's own checks (every event to every subscriber once, no degraded node)."""
    problems = fanout.phase_problems(record, n)
    ver = record["verify"]
    if ver["pub_errors"]:
        problems.append(f"{ver['pub_errors']} publish errors")
    if ver["closed_by_peer"]:
        problems.append(f"{ver['closed_by_peer']} sockets closed by a node {ver['close_codes']}")
    if ver["missing"] or ver["extra"]:
        problems.append(
            f"{ver['short']} seqs short by {ver['missing']} deliveries, "
            f"{ver['over']} seqs with {ver['extra']} duplicate deliveries"
        )
    later = record.get("unreachable_in_session", 0) - record.get("unreachable_in_subscribe", 0)
    if later:
        problems.append(f"{later} degraded episode(s) after the subscribe phase")
    if "redis" in record and record["redis"]["complete"] != record["redis"]["publishes"]:
        problems.append(f"redis phase: {record['redis']['complete']} complete publishes")
    if problems:
        log("    SUSPECT: " + "; ".join(problems))
        return problems
    return True


def measure(
    config: str,
    run: int,
    args: argparse.Namespace,
    binary: Path,
    server: RedisServer,
    plan: Plan,
    workdir: Path,
) -> dict[str, Any]:
    n = args.n
    lay = layout(config, sorted(os.sched_getaffinity(0)), args.pair_cores)
    tag = f"{config}-n{n}-r{run}"
    prefix = f"bench{run}{config}"
    log(
        f"run {run + 1}, N={n:,}, {LABELS[config]}: nodes on cores {lay.nodes}, "
        f"client on {lay.client}, redis on {lay.redis}"
    )
    server.client.flushall()
    server.pin({int(c) for c in lay.redis.split(",")})
    record: dict[str, Any] = {"config": config, "n": n, "run": run, "layout": lay.__dict__}
    cluster = Cluster(config, prefix, [])
    try:
        cluster = start_cluster(config, lay, server.url, prefix, workdir, tag, args.log_level)
        record["ports"] = cluster.ports
        record["warmup_ok"] = warmup(binary, cluster, lay, workdir, tag)
        time.sleep(1.0)
        record.update(
            session(binary, cluster, lay, server, n, plan, args.publishes, workdir, tag, args.sends)
        )
        record["ok"] = validate(record, n)
    except (OSError, RuntimeError, AssertionError, KeyError, psutil.Error, redis.RedisError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["ok"] = False
        log(f"    FAILED: {record['error']}")
    finally:
        cluster.stop()
        record["server_exit"] = [p.returncode for p in cluster.procs]
    return record


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Tidings scale-out (Redis) benchmark")
    p.add_argument("--n", type=int, default=None, help="subscribers (10000; 1000 with --quick)")
    p.add_argument("--runs", type=int, default=None, help="repetitions (3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="1 run, N=1000, short phases")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    p.add_argument("--publishes", type=int, default=100, help="publishes counted in Redis (100)")
    p.add_argument("--window", type=float, default=None, help="saturation window seconds (4)")
    p.add_argument("--log-level", default="warning", help="Tidings log_level (warning)")
    p.add_argument(
        "--pair-cores",
        choices=PAIR_CORES,
        default="shared",
        help="on 2-3 cores: both nodes of redis2/workers2 on core 0 beside the client's core 1"
        " (shared, the default: one server core in every configuration), or a core each with"
        " the client floating over both (spread)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy each node during the saturation window (numbers not comparable)",
    )
    p.add_argument(
        "--profile-lines",
        action="store_true",
        help="--profile by source line, pausing the nodes for each sample (exact stacks)",
    )
    p.add_argument(
        "--sends",
        action="store_true",
        help="count each node's send() calls with perf stat (deliveries per send: coalescing)",
    )
    args = p.parse_args(argv)
    if args.sends and shutil.which("perf") is None:
        p.error("--sends needs perf (linux-tools) on PATH")
    args.n = args.n or (1000 if args.quick else 10_000)
    args.runs = args.runs or (1 if args.quick else 3)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in args.configs:
        if c not in CONFIGS + EXTRA_CONFIGS:
            p.error(f"unknown configuration {c!r}")
    if args.n % 2:
        p.error("--n must be even (N/2 subscribers per node)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, procs.on_signal)
    signal.signal(signal.SIGINT, procs.on_signal)
    procs.raise_fd_limit()
    if procs.fd_limit() < args.n + 1000:
        log(f"RLIMIT_NOFILE is {procs.fd_limit()}, N={args.n} needs ~{args.n + 1000}")
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"cluster-{stamp}"
    workdir.mkdir()
    binary = build_client()
    profile = workdir if args.profile or args.profile_lines else None
    plan = (
        Plan(2.0, 0.5, args.window or 2.0, args.log_level, profile, args.profile_lines)
        if args.quick
        else Plan(5.0, 1.0, args.window or 4.0, args.log_level, profile, args.profile_lines)
    )
    info = procs.machine()
    log(f"machine: {info}")
    log(f"logs in {workdir.relative_to(ROOT)}")
    out_path = RESULTS / f"cluster-{stamp}.json"
    records: list[dict[str, Any]] = []
    started = time.time()
    interrupted = False
    server: RedisServer | None = None
    try:
        server = RedisServer(workdir)
        info["redis_version"] = server.version
        log(f"redis-server {server.version} on 127.0.0.1:{server.port} (pid {server.pid})")
        for run in range(args.runs):
            order = args.configs if run % 2 == 0 else list(reversed(args.configs))
            for config in order:
                records.append(measure(config, run, args, binary, server, plan, workdir))
                write_json(out_path, info, args, plan, records, started)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping every process started")
    finally:
        if server is not None:
            server.stop()
        procs.stop_all()
    table, data = summarize(records, args.configs)
    info["loadavg_end"] = os.getloadavg()
    write_json(out_path, info, args, plan, records, started, data)
    print()
    print(table)
    print()
    print("\n".join(target_lines(records, args.n, TARGET)))
    print_profiles(records)
    bad = [r for r in records if r.get("ok") is not True]
    if bad:
        print(f"\n{len(bad)} of {len(records)} measurements failed or are suspect:")
        for r in bad:
            print(f"  {r['config']} run {r['run'] + 1}: {r.get('error') or r['ok']}")
    print(f"\nresults: {out_path.relative_to(ROOT)}")
    if interrupted:
        return 130
    return 0 if records and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
