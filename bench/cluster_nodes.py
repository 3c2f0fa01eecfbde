"""The processes of bench/cluster.py: a private redis-server, and the Tidings nodes of one
configuration pinned to their cores."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

import procs
from procs import log
from servers import server_env, tidings_config

HARNESS_COMMANDS = ("cmdstat_config|resetstat", "cmdstat_info", "cmdstat_ping")


# ---------------------------------------------------------------- Redis


class RedisServer:
    """A private redis-server on a free loopback port, no persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = procs.free_port()
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--logfile", str(workdir / "redis.log")]
        self.proc = procs.start(cmd, workdir / "redis.err", stdout=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, decode_responses=True, socket_timeout=10)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start (see redis.log)") from None
                time.sleep(0.05)
        self.version = str(self.client.info("server")["redis_version"])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pin(self, cores: set[int]) -> None:
        os.sched_setaffinity(self.pid, cores)

    def snapshot(self) -> dict[str, Any]:
        cpu = self.client.info("cpu")
        stats = self.client.info("stats")
        return {
            "t": time.monotonic(),
            "cpu_s": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            "net_in": int(stats["total_net_input_bytes"]),
            "net_out": int(stats["total_net_output_bytes"]),
        }

    def commandstats(self) -> dict[str, dict[str, float]]:
        raw: dict[str, dict[str, float]] = self.client.info("commandstats")
        return {k: v for k, v in raw.items() if k not in HARNESS_COMMANDS}

    def stop(self) -> None:
        self.client.close()
        procs.stop(self.proc, grace=5.0)


# ---------------------------------------------------------------- layout and nodes


@dataclass(frozen=True)
class Layout:
    """Which cores each process may run on (taskset lists)."""

    nodes: list[str]
    client: str
    redis: str


# Configurations that are another one with history kept on the bench channel (issue 16).
WITH_HISTORY = {"redis1-history": "redis1", "redis2-history": "redis2"}


def shape(config: str) -> str:
    """The processes of ``config``: the configuration it is, with or without history."""
    return WITH_HISTORY.get(config, config)


PAIR_CORES = ("shared", "spread")


def layout(config: str, cpus: list[int], pair: str = "shared") -> Layout:
    """Cores for ``config``'s processes.

    With 4 cores or more every process has a core of its own. With 2 or 3, the load client
    needs a core as much as the server does (it reads every delivery), so ``pair="shared"``
    (the default) gives the server side one core in every configuration: the one node, or
    both nodes of a pair, on core 0, and the client on core 1. ``"spread"`` puts the two
    nodes on a core each and lets the client float over both, competing with them: the
    nodes then wait for a starved client and run below saturation (docs/benchmarks.md,
    "Redis pair per node CPU-second").
    """
    if pair not in PAIR_CORES:
        raise ValueError(f"pair must be one of {PAIR_CORES}, not {pair!r}")
    c = [str(x) for x in cpus]
    if len(c) >= 4:
        return Layout([c[0], c[1]], c[2], c[3])
    if len(c) < 2:
        raise SystemExit("needs at least 2 cores")
    both = f"{c[0]},{c[1]}"
    if shape(config) in ("memory", "redis1"):
        return Layout([c[0]], c[1], both)
    if pair == "shared":
        return Layout([c[0], c[0]], c[1], both)
    return Layout([c[0], c[1]], both, both)


@dataclass
class Cluster:
    """The Tidings processes of one configuration."""

    config: str
    prefix: str  # redis_prefix of this configuration's nodes
    ports: list[int]  # WebSocket ports given to the client (1 or 2)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    node_pids: list[int] = field(
        default_factory=list
    )  # serving processes (workers, not supervisor)
    logs: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            procs.stop(proc, grace=15.0)


def node_config(
    path: Path,
    log_level: str,
    redis_url: str | None,
    prefix: str,
    workers: int,
    history: bool = False,
) -> Path:
    tidings_config(path, log_level, history)
    top = ""
    if redis_url:
        top += f'redis = "{redis_url}"\nredis_prefix = "{prefix}"\n'
    if workers > 1:
        top += f"workers = {workers}\n"
    path.write_text(top + path.read_text())
    return path


def wait_healthy(port: int, timeout: float) -> dict[str, Any]:
    """/ready answers 200 while Redis is unreachable too: wait for "degraded": false."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
            body = json.loads(r.read())
        if not body.get("degraded"):
            return body
        time.sleep(0.1)
    raise RuntimeError(f"node on port {port} still degraded after {timeout} s: {body}")


def listening(pid: int, port: int) -> bool:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def established(pid: int, port: int) -> int:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)


def start_cluster(
    config: str, lay: Layout, redis_url: str, prefix: str, workdir: Path, tag: str, log_level: str
) -> Cluster:
    env = server_env()
    use_redis = shape(config) != "memory"
    workers = 2 if shape(config) == "workers2" else 1
    count = 2 if shape(config) == "redis2" else 1
    cluster = Cluster(config, prefix, [])
    for i in range(count):
        port = procs.free_port()
        conf = node_config(
            workdir / f"tidings-{tag}-{i + 1}.toml",
            log_level,
            redis_url if use_redis else None,
            prefix,
            workers,
            config in WITH_HISTORY,
        )
        cores = ",".join(lay.nodes) if workers > 1 else lay.nodes[i]
        cmd = ["taskset", "-c", cores, procs.PYTHON, "-m", "tidings", "serve"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--config", str(conf)]
        node_log = workdir / f"server-{tag}-{i + 1}.log"
        log(f"  node {i + 1}: {' '.join(cmd)}")
        proc = procs.start(cmd, node_log, stdout=subprocess.DEVNULL, env=env)
        cluster.procs.append(proc)
        cluster.ports.append(port)
        cluster.logs.append(node_log)
    for proc, port, node_log in zip(cluster.procs, cluster.ports, cluster.logs, strict=True):
        procs.wait_ready(port, proc, 30, node_log)
        if use_redis:
            wait_healthy(port, 15)
    if workers == 1:
        cluster.node_pids = [p.pid for p in cluster.procs]
        return cluster
    # --workers: both workers must listen before any connection (the kernel only spreads
    # connections over listening sockets); then pin worker i to core i.
    supervisor, port = cluster.procs[0], cluster.ports[0]
    deadline = time.monotonic() + 30
    while True:
        kids = psutil.Process(supervisor.pid).children()
        if len(kids) == workers and all(listening(k.pid, port) for k in kids):
            break
        if time.monotonic() > deadline or supervisor.poll() is not None:
            raise RuntimeError(f"{workers} workers not listening on {port} after 30 s")
        time.sleep(0.1)
    cluster.node_pids = sorted(k.pid for k in kids)
    for pid, core in zip(cluster.node_pids, lay.nodes, strict=True):
        os.sched_setaffinity(pid, {int(core)})
    return cluster
