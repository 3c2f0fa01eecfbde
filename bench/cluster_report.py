"""The table and JSON of bench/cluster.py."""

from __future__ import annotations

import argparse
import json
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
    ("Redis EVALSHA / publish (heartbeats)", per_publish("EVALSHA"), 2),
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
    return "\n".join(lines), data


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
