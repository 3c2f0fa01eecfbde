"""What the debug console costs fan-out (docs/console.md, "Cost"; a benchmark, not a test).

    .venv/bin/python bench/console.py                 # N = 1,000 and 10,000; 3 runs
    .venv/bin/python bench/console.py --quick         # N = 1,000; 1 run; short phases

Three variants of `tidings serve`, measured in the same run with bench/fanout.py's phases
(connect N sockets, subscribe them, latency, then closed-loop saturation on core 0 against
the C load client on core 1), interleaved and rotated each run so drift hits all alike:

- ``off``: no console;
- ``idle``: ``--console``, nobody watching (the promise: it costs nothing);
- ``watched``: ``--console`` with one browser's stream open on the app for the whole
  measurement (records built, rate-limited to 200/s, written as Server-Sent Events).

It prints the median saturation deliveries/s and p50 latency per variant and the ratios
idle/off and watched/off, and writes bench/results/console-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import fanout
import servers
from loadclient import APP_ID, APP_KEY, APP_SECRET, build_client
from procs import (
    PYTHON,
    RESULTS,
    SERVER_CORE,
    free_port,
    log,
    machine,
    on_signal,
    raise_fd_limit,
    start,
    stop,
    stop_all,
    wait_ready,
)

VARIANTS = ("off", "idle", "watched")


class Watcher:
    """One console stream on the bench app, read in a thread: what a browser would do."""

    def __init__(self, port: int) -> None:
        base = f"http://127.0.0.1:{port}"
        self.jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        body = json.dumps({"key": APP_KEY, "secret": APP_SECRET}).encode()
        login = urllib.request.Request(
            base + "/console/api/login", body, {"Content-Type": "application/json"}
        )
        with opener.open(login, timeout=10) as response:
            assert response.status == 200
        self.response = opener.open(f"{base}/console/api/apps/{APP_ID}/stream", timeout=None)
        self.records = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self.response:
                if line.startswith(b"data: "):
                    record = json.loads(line[6:])
                    self.records += 1
                    if record["type"] == "dropped":
                        self.dropped += record["count"]
        except (OSError, ValueError, AttributeError):
            pass  # closed from the main thread (http.client drops its file: AttributeError)

    def close(self) -> None:
        self.response.close()


def config(path: Path, console: bool, log_level: str) -> Path:
    servers.tidings_config(path, log_level)
    if console:
        # Top-level settings go before the [[apps]] table.
        path.write_text("console = true\n" + path.read_text())
    return path


def measure(
    variant: str, n: int, run: int, binary: Path, plan: fanout.Plan, workdir: Path
) -> dict[str, Any]:
    port = free_port()
    tag = f"console-{variant}-n{n}-r{run}"
    path = config(workdir / f"tidings-{tag}.toml", variant != "off", plan.log_level)
    cmd = ["taskset", "-c", SERVER_CORE, PYTHON, "-m", "tidings", "serve"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--config", str(path)]
    log(f"run {run + 1}, N={n:,}, {variant}")
    server_log = workdir / f"server-{tag}.log"
    proc = start(cmd, server_log, stdout=subprocess.DEVNULL, env=servers.server_env())
    record: dict[str, Any] = {"variant": variant, "n": n, "run": run}
    watcher: Watcher | None = None
    try:
        wait_ready(port, proc, 60, server_log)
        fanout.warmup(binary, "tidings", port, plan, workdir, tag)
        time.sleep(1.0)
        if variant == "watched":
            watcher = Watcher(port)
        record.update(
            fanout.client_session(binary, "tidings", port, n, plan, workdir, tag, proc.pid)
        )
        if watcher is not None:
            record["console_records"] = watcher.records
            record["console_dropped"] = watcher.dropped
            log(f"    console: {watcher.records:,} records shown, {watcher.dropped:,} dropped")
        record["ok"] = bool(record.get("held"))
    except (OSError, RuntimeError, AssertionError, KeyError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["ok"] = False
        log(f"    FAILED: {record['error']}")
    finally:
        if watcher is not None:
            watcher.close()
        stop(proc, grace=15.0)
    return record


def summary(records: list[dict[str, Any]], ns: list[int]) -> list[str]:
    lines = ["N        variant   deliveries/s (median)   p50 latency ms   vs off"]
    for n in ns:
        medians: dict[str, float] = {}
        for variant in VARIANTS:
            good = [r for r in records if r["variant"] == variant and r["n"] == n and r["ok"]]
            if not good:
                continue
            rate = statistics.median(r["saturate"]["rate"] for r in good)
            p50 = statistics.median(r["latency"]["p50_ms"] for r in good)
            medians[variant] = rate
            ratio = f"{rate / medians['off']:.3f}" if "off" in medians else "-"
            lines.append(f"{n:<8,} {variant:<9} {rate:>21,.0f}   {p50:>14.1f}   {ratio}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000, 1 run, short phases")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10_000])
    args = parser.parse_args()
    if args.quick:
        args.runs, args.n = 1, [1000]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    raise_fd_limit()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"console-{stamp}"
    workdir.mkdir()
    binary = build_client()
    plan = (
        fanout.Plan(3.0, 0.5, 2.0, "warning")
        if args.quick
        else fanout.Plan(5.0, 1.0, 4.0, "warning")
    )
    records: list[dict[str, Any]] = []
    try:
        for run in range(args.runs):
            for n in args.n:
                k = run % len(VARIANTS)
                for variant in VARIANTS[k:] + VARIANTS[:k]:
                    records.append(measure(variant, n, run, binary, plan, workdir))
    finally:
        stop_all()
    out = RESULTS / f"console-{stamp}.json"
    out.write_text(json.dumps({"machine": machine(), "records": records}, indent=1))
    print()
    for line in summary(records, args.n):
        print(line)
    print(f"\nresults: {out}")
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
