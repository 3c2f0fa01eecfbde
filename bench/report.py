"""The output of bench/fanout.py: the side-by-side table, the issue-6 targets, the JSON file
and the plots."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procs import CLIENT_CORE, ROOT, SERVER_CORE, log
from servers import SERVERS

Getter = Callable[[dict[str, Any]], float | None]
DOCS_IMG = ROOT / "docs" / "img"


def sat(key: str) -> Getter:
    return lambda r: r["saturate"][key] if "saturate" in r else None


def lat(key: str) -> Getter:
    return lambda r: r["latency"][key] if "latency" in r else None


def held(r: dict[str, Any]) -> float | None:
    if "connect" not in r:
        return None
    last = r.get("saturate") or r.get("subscribe") or r["connect"]
    return float(last["established"])


METRICS: list[tuple[str, Getter, int]] = [
    ("deliveries/s (saturation)", sat("rate"), 0),
    ("server CPU ms / 1k deliveries", sat("server_cpu_ms_per_1k"), 2),
    ("server process CPU % (saturation)", sat("server_cpu"), 0),
    (f"core {SERVER_CORE} busy % (server core, incl. softirq)", sat("server_core"), 0),
    ("load client CPU % (saturation)", sat("client_cpu"), 0),
    (f"core {CLIENT_CORE} busy % (client core, incl. softirq)", sat("client_core"), 0),
    ("load client CPU ms / 1k deliveries", sat("client_cpu_ms_per_1k"), 2),
    ("load client deliveries per read()", sat("deliveries_per_read"), 1),
    ("other tenants' processes CPU % (≥)", sat("others_cpu"), 0),
    ("latency p50 ms", lat("p50_ms"), 1),
    ("latency p99 ms", lat("p99_ms"), 1),
    ("latency max ms", lat("max_ms"), 1),
    ("server CPU ms / 1k deliveries at that rate", lat("server_cpu_ms_per_1k"), 2),
    ("spread of one broadcast, median ms", lat("spread_p50_ms"), 1),
    ("spread of one broadcast, max ms", lat("spread_max_ms"), 1),
    ("RSS KiB / idle connection", lambda r: r.get("rss_conn_kib"), 1),
    ("RSS KiB / idle subscribed conn.", lambda r: r.get("rss_sub_kib"), 1),
    ("connections/s", lambda r: r["connect"]["rate"] if "connect" in r else None, 0),
    ("subscriptions/s", lambda r: r["subscribe"]["rate"] if "subscribe" in r else None, 0),
    ("connections held at the end", held, 0),
]


def spread(values: list[float], digits: int) -> str:
    """median (min–max), or the one value, or – for none."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    fmt = f"{{:,.{digits}f}}"
    med = fmt.format(statistics.median(values))
    if len(values) == 1 or min(values) == max(values):
        return med
    return f"{med} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def ratio_pairs(names: list[str]) -> list[tuple[str, str]]:
    """The ratio columns, (numerator, denominator): Tidings against every peer; Tidings-ASGI
    against the python-socketio-ASGI peer on the same uvicorn, and against Tidings itself
    (what the ASGI edge costs)."""
    pairs = []
    if "tidings" in names:
        pairs += [("tidings", p) for p in names if p not in ("tidings", "tidings-asgi")]
    if "tidings-asgi" in names:
        pairs += [("tidings-asgi", p) for p in ("socketio-asgi", "tidings") if p in names]
    return pairs


def pair_key(pair: tuple[str, str]) -> str:
    """How a ratio is named in the JSON summary: "tidings-asgi/socketio-asgi"."""
    return f"{pair[0]}/{pair[1]}"


def summarize(
    records: list[dict[str, Any]], ns: list[int], names: list[str]
) -> tuple[str, dict[str, Any]]:
    """A markdown table: median (min–max) per server, and the ratios of ``ratio_pairs``
    computed per run."""
    pairs = ratio_pairs(names)
    head = ["N", "metric", *(SERVERS[s].label for s in names)]
    head += [f"{SERVERS[a].label} / {SERVERS[b].label}" for a, b in pairs]
    lines = ["| " + " | ".join(head) + " |", "|---:|---|" + "---:|" * (len(head) - 2)]
    data: dict[str, Any] = {}
    for n in ns:
        for name, get, digits in METRICS:
            per: dict[str, list[float]] = {s: [] for s in names}
            by_run: dict[int, dict[str, float]] = {}
            for r in records:
                if r["n"] != n or r["server"] not in per:
                    continue
                value = get(r)
                if value is None:
                    continue
                per[r["server"]].append(float(value))
                by_run.setdefault(r["run"], {})[r["server"]] = float(value)
            ratios = {
                pair_key((a, b)): [v[a] / v[b] for v in by_run.values() if a in v and v.get(b)]
                for a, b in pairs
            }
            data[f"{n}:{name}"] = {**per, "ratios": ratios}
            cells = [f"{n:,}", name, *(spread(per[s], digits) for s in names)]
            cells += [spread(ratios[pair_key(pair)], 2) for pair in pairs]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), data


def targets(records: list[dict[str, Any]], data: dict[str, Any]) -> list[str]:
    """The issue-6 targets, each with its verdict (medians over the runs)."""
    out = []

    def ratio(
        n: int, peer: str, metric: str = "deliveries/s (saturation)", ours: str = "tidings"
    ) -> float | None:
        values = data.get(f"{n}:{metric}", {}).get("ratios", {}).get(pair_key((ours, peer)))
        return statistics.median(values) if values else None

    def value(n: int, metric: str) -> float | None:
        values = data.get(f"{n}:{metric}", {}).get("tidings")
        return statistics.median(values) if values else None

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    goals = [
        ("tidings", "soketi", 2.0),
        ("tidings", "socketio", 20.0),
        ("tidings", "raw", 0.8),
        ("tidings-asgi", "socketio-asgi", 2.0),
        ("tidings-asgi", "tidings", None),  # reported, no target
    ]
    for ours, peer, goal in goals:
        for n in (10_000, 1_000):
            got = ratio(n, peer, ours=ours)
            if got is not None:
                label = SERVERS[peer].label
                # deliveries per server CPU-second: the same comparison, robust to other
                # tenants taking part of the server's core
                cpu = ratio(n, peer, "server CPU ms / 1k deliveries", ours)
                per_cpu = f" (per server CPU-second: {1 / cpu:.2f}×)" if cpu else ""
                at = "" if n == 10_000 else " (target is at 10,000)"
                what = f"{SERVERS[ours].label} / {label} deliveries/s at N = {n:,}"
                if goal is None:
                    out.append(f"{what}: {got:.2f}×{per_cpu}")
                else:
                    what = f"{SERVERS[ours].label} ≥ {goal}× {label} deliveries/s at N = {n:,}"
                    out.append(f"{what}: {got:.2f}×{per_cpu} → {verdict(got >= goal)}{at}")
                break
    for n, limit in ((1_000, 10.0), (10_000, 80.0)):
        got = value(n, "latency p99 ms")
        if got is not None:
            out.append(f"p99 ≤ {limit:g} ms at N = {n:,}: {got:.1f} ms → {verdict(got <= limit)}")
    for key in sorted(k for k in data if k.endswith(":RSS KiB / idle connection")):
        n = int(key.split(":")[0])
        got = value(n, "RSS KiB / idle connection")
        if got is not None:
            ok = got * 1024 <= 10_000
            what = f"≤ 10 KB RSS per idle connection (N = {n:,})"
            out.append(f"{what}: {got:.1f} KiB → {verdict(ok)}")
    big = [r for r in records if r["server"] == "tidings" and r["n"] >= 50_000]
    if big:
        ok = all(r.get("held") for r in big)
        out.append(f"50,000 connections held by Tidings: {verdict(ok)}")
    for r in records:
        if r.get("held") is False:
            at = r.get("connect", {}).get("established", 0)
            out.append(
                f"note: {SERVERS[r['server']].label} did not hold N = {r['n']:,} in run "
                f"{r['run'] + 1} ({at:,} connected)"
            )
    return out


def plots(
    records: list[dict[str, Any]], ns: list[int], names: list[str], prefix: Path, docs: bool
) -> list[Path]:
    """Throughput and latency (p50, p99) against N, one line per server: median with the
    min–max range as error bars. Needs matplotlib (make bench installs it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots (.venv/bin/pip install matplotlib)")
        return []

    def series(server: str, get: Getter) -> tuple[list[int], list[float], list[list[float]]]:
        xs, ys, err = [], [], [[], []]
        for n in ns:
            vals = [
                float(v)
                for r in records
                if r["server"] == server and r["n"] == n and (v := get(r)) is not None
            ]
            if vals:
                med = statistics.median(vals)
                xs.append(n)
                ys.append(med)
                err[0].append(med - min(vals))
                err[1].append(max(vals) - med)
        return xs, ys, err

    out = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in names:
        xs, ys, err = series(s, sat("rate"))
        if xs:
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=SERVERS[s].label)
    ax.set_xscale("log")
    ax.set_xticks(ns, [f"{n:,}" for n in ns])
    ax.set_xlabel("subscribers of one channel (N)")
    ax.set_ylabel("deliveries/s at saturation")
    ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:,.0f}")
    ax.set_title("Fan-out throughput, server on one core")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.append(_save(fig, prefix, "throughput"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(names):
        color = colors[i % len(colors)]
        for key, style, mark in (("p50_ms", "-", "o"), ("p99_ms", "--", "s")):
            xs, ys, err = series(s, lat(key))
            if xs:
                label = f"{SERVERS[s].label} {key[:3]}"
                ax.errorbar(
                    xs, ys, yerr=err, marker=mark, capsize=3, ls=style, color=color, label=label
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns, [f"{n:,}" for n in ns])
    ax.set_xlabel("subscribers (N); 10 msg/s at 1,000, 1 msg/s above")
    ax.set_ylabel("delivery latency, ms")
    ax.set_title("Delivery latency at a fixed rate (p50 ●, p99 ■)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    out.append(_save(fig, prefix, "latency"))
    plt.close(fig)
    if docs:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for png in list(out):
            target = DOCS_IMG / f"fanout-{png.stem.rsplit('-', 1)[-1]}.png"
            shutil.copy2(png, target)
            out.append(target)
    return out


def _save(fig: Any, prefix: Path, what: str) -> Path:
    path = prefix.with_name(f"{prefix.name}-{what}.png")
    fig.savefig(path, dpi=110)
    return path


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def write_json(
    path: Path,
    meta: dict[str, Any],
    records: list[dict[str, Any]],
    started: float,
    summary: dict[str, Any] | None = None,
) -> None:
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "command": " ".join(["bench/fanout.py", *sys.argv[1:]]),
        **meta,
        "records": records,
        "summary": summary,
    }
    path.write_text(json.dumps(doc, indent=1, default=str))
