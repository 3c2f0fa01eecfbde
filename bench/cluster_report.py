"""The table and JSON of bench/cluster.py."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import report
from fanout import BROADCASTS_IN_FLIGHT, HANDSHAKES_IN_FLIGHT, Plan
from loadclient import PUBLISHER_CONNECTIONS

LABELS = {
    "memory": "1 node, memory",
    "redis1": "1 node, Redis",
    "redis2": "2 nodes, Redis",
    "workers2": "--workers 2, Redis",
    "redis1-history": "1 node, Redis, history",
    "redis2-history": "2 nodes, Redis, history",
}


Getter = Callable[[dict[str, Any]], float | None]


def sat(key: str) -> Getter:
    return lambda r: r["saturate"].get(key)


def per_publish(command: str) -> Getter:
    return lambda r: r["redis"]["per_publish"].get(command, 0.0) if "redis" in r else None


def redis_metric(key: str) -> Getter:
    return lambda r: r["redis"][key] if "redis" in r else None


METRICS: list[tuple[str, Getter, int]] = [
    ("deliveries/s (saturation)", sat("rate"), 0),
    ("deliveries per node CPU-s", sat("deliveries_per_node_cpu_s"), 0),
    ("deliveries per (node + redis-server) CPU-s", sat("deliveries_per_node_and_redis_cpu_s"), 0),
    ("deliveries per send() (--sends)", sat("deliveries_per_send"), 2),
    ("load client deliveries per read()", sat("deliveries_per_read"), 2),
    ("node 1 CPU %", sat("node1_cpu"), 0),
    ("node 2 CPU %", sat("node2_cpu"), 0),
    ("load client CPU %", sat("client_cpu"), 0),
    ("redis-server CPU %", sat("redis_cpu"), 1),
    ("other tenants' processes CPU % (≥)", sat("others_cpu_pct"), 0),
    ("core 0 busy % (softirq incl.)", sat("core0_busy"), 0),
    ("core 1 busy % (softirq incl.)", sat("core1_busy"), 0),
    (
        "softirq %, both cores",
        lambda r: r["saturate"].get("core0_softirq", 0) + r["saturate"].get("core1_softirq", 0),
        0,
    ),
    ("latency p50 ms", lambda r: r["latency"]["p50_ms"], 1),
    ("latency p99 ms", lambda r: r["latency"]["p99_ms"], 1),
    ("connections/s", lambda r: r["connect"]["rate"], 0),
    ("subscriptions/s", lambda r: r["subscribe"]["rate"], 0),
    ("degraded episodes while subscribing", lambda r: r.get("unreachable_in_subscribe"), 0),
    ("wait until healthy + subscribed, s", lambda r: r.get("settle_s"), 1),
    ("Redis PUBLISH / publish", per_publish("PUBLISH"), 2),
    ("Redis INCRBY / publish", per_publish("INCRBY"), 2),
    ("Redis EXPIRE / publish", per_publish("EXPIRE"), 2),
    ("Redis EVALSHA / publish (publish script, heartbeats)", per_publish("EVALSHA"), 2),
    ("Redis commands / publish (all)", redis_metric("commands_per_publish"), 2),
    ("Redis command time µs / publish", redis_metric("command_us_per_publish"), 1),
    ("Redis CPU µs / publish (incl. idle cron)", redis_metric("redis_cpu_us_per_publish"), 0),
    ("Redis bytes out / publish", redis_metric("net_out_per_publish"), 0),
]


def spread(values: list[float], digits: int) -> str:
    return report.spread(values, digits)


def summarize(records: list[dict[str, Any]], configs: list[str]) -> tuple[str, dict[str, Any]]:
    good = [r for r in records if "verify" in r]
    head = " | ".join(LABELS[c] for c in configs)
    lines = [f"| metric | {head} |", "|---|" + "---:|" * len(configs)]
    data: dict[str, Any] = {}

    def row(name: str, get: Getter, digits: int) -> None:
        cells = []
        for c in configs:
            values = [v for r in good if r["config"] == c and (v := get(r)) is not None]
            data.setdefault(name, {})[c] = values
            cells.append(spread([float(v) for v in values], digits))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    for name, get, digits in METRICS:
        row(name, get, digits)
        if name == "deliveries/s (saturation)":
            base = {r["run"]: r["saturate"]["rate"] for r in good if r["config"] == "memory"}

            def ratio(r: dict[str, Any], base: dict[int, float] = base) -> float | None:
                b = base.get(r["run"])
                return r["saturate"]["rate"] / b if b else None

            row("÷ memory, same run", ratio, 2)
        if name == "deliveries per node CPU-s":
            row("÷ memory per node CPU-s, same run", per_cpu_ratio(good), 2)
    return "\n".join(lines), data


def memory_per_cpu(records: list[dict[str, Any]]) -> dict[int, float]:
    """The memory node's deliveries per node CPU-second, by run."""
    return {
        r["run"]: r["saturate"]["deliveries_per_node_cpu_s"]
        for r in records
        if r["config"] == "memory"
    }


def per_cpu_ratio(records: list[dict[str, Any]], key: str = "deliveries_per_node_cpu_s") -> Getter:
    """A record's ``key`` (deliveries per CPU-second) over the memory node's deliveries per
    node CPU-second in the same run."""
    base = memory_per_cpu(records)

    def ratio(r: dict[str, Any]) -> float | None:
        b, v = base.get(r["run"]), r["saturate"].get(key)
        return v / b if b and v is not None else None

    return ratio


def target_lines(records: list[dict[str, Any]], n: int, target: float) -> list[str]:
    """Issue 17's target, per run and in median: 2 nodes on one Redis deliver at least
    ``target`` × one memory node's deliveries per node CPU-second (redis-server's CPU is
    not a node's: it is shown beside, as deliveries per node + redis-server CPU-second)."""
    good = [r for r in records if "verify" in r]
    nodes = per_cpu_ratio(good)
    nodes_and_redis = per_cpu_ratio(good, "deliveries_per_node_and_redis_cpu_s")
    lines = []
    for config in ("redis2", "redis2-history"):
        mine = sorted((r for r in good if r["config"] == config), key=lambda r: r["run"])
        values = [v for r in mine if (v := nodes(r)) is not None]
        if not values:
            continue
        with_redis = [v for r in mine if (v := nodes_and_redis(r)) is not None]
        median = statistics.median(values)
        runs = ", ".join(f"{v:.2f}" for v in values)
        also = ""
        if with_redis:
            also = f"; with redis-server's CPU {statistics.median(with_redis):.2f}×"
        lines.append(
            f"{LABELS[config]} ÷ 1 node, memory, deliveries per node CPU-second at "
            f"N = {n:,}: {median:.2f}× (runs {runs}){also} → target ≥ {target}× "
            + ("met" if median >= target else "NOT met")
        )
    return lines


def write_json(
    path: Path,
    info: dict[str, Any],
    args: argparse.Namespace,
    plan: Plan,
    records: list[dict[str, Any]],
    started: float,
    summary: dict[str, Any] | None = None,
) -> None:
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "command": " ".join(["bench/cluster.py", *sys.argv[1:]]),
        "machine": info,
        "options": {k: v for k, v in vars(args).items()},
        "plan": plan.__dict__,
        "constants": {
            "handshakes_in_flight": HANDSHAKES_IN_FLIGHT,
            "broadcasts_in_flight": BROADCASTS_IN_FLIGHT,
            "publisher_connections": PUBLISHER_CONNECTIONS,
        },
        "records": records,
        "summary": summary,
    }
    path.write_text(json.dumps(doc, indent=1, default=str))
