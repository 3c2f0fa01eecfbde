"""Soak benchmark for Tidings (a benchmark, not a test): does memory or the fd count creep?

    .venv/bin/python bench/soak.py [--minutes 10] [--connections 10000] [--redis] [--quick]

1. starts ``tidings serve`` on a free loopback port (pinned to core 0), with the memory
   broker, or with ``--redis`` against a private redis-server it starts on another free port;
2. starts the load (bench/soak_client.py, pinned to core 1): N connections subscribing to
   public, private and presence channels, then, for ``--minutes``, steady churn: 1 % of the
   connections reconnect every second, 1 % move to another channel of the same kind, 20
   client events/s on private channels and 20 REST publishes/s (events and batches);
3. every 10 s samples the server's RSS and open fds (/proc) and its connections, channels
   and subscriptions (GET /metrics);
4. after the run closes every connection and samples once more (connections and channels
   must be back to zero, fds back to the idle count);
5. writes bench/results/soak-<timestamp>.json and a PNG plot (matplotlib, when installed:
   ``make soak`` installs it) and prints the verdict: the slope of RSS over the second half
   of the run in MiB per minute, and the fd count at the end of the run against its start.

Stops every process it started, by PID (also on Ctrl-C or an error).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from cluster_nodes import RedisServer
from procs import (
    CLIENT_CORE,
    PYTHON,
    RESULTS,
    ROOT,
    SERVER_CORE,
    fd_limit,
    free_port,
    log,
    on_signal,
    raise_fd_limit,
    start,
    stop,
    stop_all,
    wait_ready,
)
from servers import server_env

APP_ID = "soak"
APP_KEY = "soak-key"
APP_SECRET = "soak-secret"
SAMPLE_EVERY = 10.0
# Verdict thresholds: RSS growing faster than this over the second half, or more fds at the
# end of the run than at its start plus the reconnects that may be in flight, is a leak.
MAX_SLOPE_MIB_PER_MIN = 1.0
FD_SLACK_FRACTION = 0.02


@dataclass(frozen=True)
class Plan:
    minutes: float
    connections: int
    redis: bool


# ---------------------------------------------------------------- server and samples


def write_config(path: Path, connections: int) -> Path:
    path.write_text(
        'log_level = "warning"\n'
        f"max_connections = {connections * 2 + 1000}\n"
        "max_connection_rate = 0\n"
        "\n[[apps]]\n"
        f'id = "{APP_ID}"\nkey = "{APP_KEY}"\nsecret = "{APP_SECRET}"\n'
        f"max_connections = {connections * 2 + 1000}\n"
        "max_backend_events_per_second = 100000\n"
    )
    return path


def metric_totals(port: int) -> dict[str, float]:
    """Each ``tidings_*`` gauge of GET /metrics summed over its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("tidings_"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


def proc_sample(pid: int) -> dict[str, float]:
    """RSS (MiB) and open fds of the server's process tree, from /proc."""
    rss = 0
    fds = 0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        status = Path(f"/proc/{process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
        fds += len(os.listdir(f"/proc/{process.pid}/fd"))
    return {"rss_mib": rss / 2**20, "fds": float(fds)}


def socket_counts(pid: int, port: int, redis_port: int | None) -> dict[str, float]:
    """The server's TCP sockets: clients on its port, and its connections to Redis (a pool
    that grows under bursts up to its bound, so not counted as a leak)."""
    clients = to_redis = 0
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.raddr:
            clients += 1
        elif conn.raddr and conn.raddr.port == redis_port:
            to_redis += 1
    return {"client_sockets": float(clients), "redis_sockets": float(to_redis)}


def sample(
    pid: int, port: int, redis_port: int | None, started: float, phase: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"t": round(time.monotonic() - started, 1), "phase": phase}
    out.update(proc_sample(pid))
    out.update(socket_counts(pid, port, redis_port))
    try:
        metrics = metric_totals(port)
    except OSError as exc:
        out["metrics_error"] = str(exc)
    else:
        for name in ("connections", "channels", "subscriptions"):
            out[name] = metrics.get(f"tidings_{name}")
    return out


# ---------------------------------------------------------------- the load process


class LoadProcess:
    """bench/soak_client.py; its JSON report lines are read without blocking the sampler."""

    def __init__(self, port: int, plan: Plan, seconds: float, log_path: Path) -> None:
        cmd = ["taskset", "-c", CLIENT_CORE, PYTHON, str(ROOT / "bench" / "soak_client.py")]
        cmd += ["--port", str(port), "--app-id", APP_ID, "--key", APP_KEY]
        cmd += ["--secret", APP_SECRET, "--connections", str(plan.connections)]
        cmd += ["--seconds", str(seconds), "--report", str(SAMPLE_EVERY)]
        self.proc = start(cmd, log_path, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self._stdout: IO[bytes] = self.proc.stdout
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._stdout, selectors.EVENT_READ)
        self._buf = b""
        self.eof = False
        self.reports: list[dict[str, Any]] = []

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Report lines that arrive within ``timeout`` seconds (fewer if it ends sooner)."""
        deadline = time.monotonic() + timeout
        new: list[dict[str, Any]] = []
        while not self.eof:
            if not self._sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(self._stdout.fileno(), 65536)
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                report: dict[str, Any] = json.loads(line)
                new.append(report)
            if new:
                break
        self.reports.extend(new)
        return new

    def close(self) -> None:
        stop(self.proc, grace=30.0)
        self._sel.close()


# ---------------------------------------------------------------- verdict and plot


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60.0


def verdict(samples: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    run = [s for s in samples if s["phase"] == "run"]
    if len(run) < 2:
        return {"flat": False, "problems": ["fewer than 2 samples during the run"]}
    t0, t1 = run[0]["t"], run[-1]["t"]
    second_half = [s for s in run if s["t"] >= (t0 + t1) / 2]
    slope = slope_per_minute([(s["t"], s["rss_mib"]) for s in second_half])
    fds_start, fds_end = int(run[0]["fds"]), int(run[-1]["fds"])
    idle = [s for s in samples if s["phase"] == "idle"]
    after = [s for s in samples if s["phase"] == "after"]
    out: dict[str, Any] = {
        "rss_slope_mib_per_min_second_half": round(slope, 3),
        "rss_start_mib": round(run[0]["rss_mib"], 1),
        "rss_end_mib": round(run[-1]["rss_mib"], 1),
        "rss_max_mib": round(max(s["rss_mib"] for s in run), 1),
        "fds_start": fds_start,
        "fds_end": fds_end,
        "fds_idle_before": int(idle[0]["fds"]) if idle else None,
        "fds_after_close": int(after[-1]["fds"]) if after else None,
        "connections_after_close": after[-1].get("connections") if after else None,
        "channels_after_close": after[-1].get("channels") if after else None,
    }
    problems = []
    if slope > MAX_SLOPE_MIB_PER_MIN:
        problems.append(f"RSS grows {slope:.2f} MiB/min over the second half")
    if fds_end - fds_start > FD_SLACK_FRACTION * plan.connections + 20:
        problems.append(f"fds grew from {fds_start} to {fds_end}")
    if after and idle:
        # Connections to Redis are a bounded pool that grew under load: not a leak.
        left = int(after[-1]["fds"] - after[-1]["redis_sockets"])
        before = int(idle[0]["fds"] - idle[0]["redis_sockets"])
        out["fds_after_close_without_redis_pool"] = left
        out["fds_idle_without_redis_pool"] = before
        out["redis_sockets_after_close"] = int(after[-1]["redis_sockets"])
        if left > before + 10 or after[-1]["client_sockets"]:
            problems.append(f"{left} fds after every client left vs {before} before")
    if after and (after[-1].get("connections") or after[-1].get("channels")):
        problems.append("connections or channels left after every client left")
    out["problems"] = problems
    out["flat"] = not problems
    return out


def plot(samples: list[dict[str, Any]], result: dict[str, Any], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (make soak installs it): no plot")
        return False
    minutes = [s["t"] / 60 for s in samples]
    fig, (ax_rss, ax_fds) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    ax_rss.plot(minutes, [s["rss_mib"] for s in samples], color="tab:blue", marker=".")
    ax_rss.set_ylabel("server RSS (MiB)")
    ax_rss.set_ylim(bottom=0)
    ax_rss.grid(alpha=0.3)
    ax_fds.plot(minutes, [s["fds"] for s in samples], color="tab:red", marker=".", label="open fds")
    conns = [s.get("connections") for s in samples]
    ax_fds.plot(
        minutes,
        [c if c is not None else float("nan") for c in conns],
        color="tab:gray",
        linestyle="--",
        label="connections (/metrics)",
    )
    ax_fds.set_ylabel("count")
    ax_fds.set_xlabel("minutes")
    ax_fds.set_ylim(bottom=0)
    ax_fds.grid(alpha=0.3)
    ax_fds.legend(loc="lower center")
    run = [s["t"] / 60 for s in samples if s["phase"] == "run"]
    if run:
        for ax in (ax_rss, ax_fds):
            ax.axvspan((run[0] + run[-1]) / 2, run[-1], color="tab:green", alpha=0.08)
    r = result["verdict"]
    fig.suptitle(
        f"{title}\nRSS slope over the second half (shaded) "
        f"{r.get('rss_slope_mib_per_min_second_half', float('nan')):+.2f} MiB/min; "
        f"fds {r.get('fds_start')} -> {r.get('fds_end')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- the run


def run(plan: Plan, workdir: Path, started: float) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    redis_server: RedisServer | None = None
    load: LoadProcess | None = None
    server: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        redis_port: int | None = None
        cmd = ["taskset", "-c", SERVER_CORE, PYTHON, "-m", "tidings", "serve"]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--config", str(write_config(workdir / "tidings.toml", plan.connections))]
        if plan.redis:
            redis_server = RedisServer(workdir)
            redis_server.pin({int(CLIENT_CORE)})
            redis_port = redis_server.port
            cmd += ["--redis", redis_server.url]
        server_log = workdir / "server.log"
        server = start(cmd, server_log, env=server_env())
        wait_ready(port, server, 30, server_log)
        log(f"server pid {server.pid} on port {port} ({'redis' if plan.redis else 'memory'})")
        samples.append(sample(server.pid, port, redis_port, started, "idle"))
        run_seconds = plan.minutes * 60
        load = LoadProcess(port, plan, run_seconds, workdir / "client.log")
        phase = "ramp"
        next_sample = time.monotonic() + SAMPLE_EVERY
        while not load.eof:
            sampling = phase in ("ramp", "run")
            wait = max(0.0, next_sample - time.monotonic()) if sampling else 1.0
            for report in load.poll(wait):
                if report["phase"] == "ramped":
                    phase = "run"
                    log(
                        f"ramped: {report['open']}/{plan.connections} open, "
                        f"{report['subscribed']} subscriptions in {report['t']:.0f} s"
                    )
                    samples.append(sample(server.pid, port, redis_port, started, "run"))
                    next_sample = time.monotonic() + SAMPLE_EVERY
                elif report["phase"] in ("stopping", "done"):
                    phase = "closing"
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode} (see {server_log})")
            if time.monotonic() >= next_sample and phase in ("ramp", "run"):
                s = sample(server.pid, port, redis_port, started, phase)
                if load.reports:
                    s["client"] = load.reports[-1]
                samples.append(s)
                next_sample += SAMPLE_EVERY
                log(
                    f"{phase:5} t={s['t']:6.0f}s RSS {s['rss_mib']:7.1f} MiB  fds {s['fds']:6.0f}  "
                    f"connections {s.get('connections')}  channels {s.get('channels')}"
                )
        reports = load.reports
        load.close()
        load = None
        time.sleep(5.0)  # let the server finish closing the sockets the load left
        samples.append(sample(server.pid, port, redis_port, started, "after"))
        log(f"after close: {samples[-1]}")
    finally:
        if load is not None:
            load.close()
        if server is not None:
            stop(server)
        if redis_server is not None:
            redis_server.stop()
    return {"samples": samples, "client_reports": reports}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--redis", action="store_true", help="Redis broker (own redis-server)")
    p.add_argument("--quick", action="store_true", help="1 minute, 1,000 connections")
    p.add_argument("--plot", type=Path, help="also write the PNG here (e.g. docs/img/soak.png)")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes, args.connections = 1.0, 1000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(minutes=args.minutes, connections=args.connections, redis=args.redis)
    raise_fd_limit()
    limit = fd_limit()
    if limit < plan.connections + 1000:
        log(f"RLIMIT_NOFILE is {limit}: too low for {plan.connections} connections")
        return 2
    signal.signal(signal.SIGTERM, on_signal)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"soak-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    broker = "redis" if plan.redis else "memory"
    log(f"soak: {plan.connections} connections, {plan.minutes:g} min, {broker} broker")
    started = time.monotonic()
    try:
        result = run(plan, workdir, started)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()
    result["plan"] = vars(plan)
    result["verdict"] = verdict(result["samples"], plan)
    result["client_final"] = result["client_reports"][-1] if result["client_reports"] else None
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    json_path = RESULTS / f"soak-{stamp}.json"
    png_path = RESULTS / f"soak-{stamp}.png"
    title = f"Tidings soak: {plan.connections:,} connections, {plan.minutes:g} min, {broker}"
    if plot(result["samples"], result, png_path, title):
        log(f"plot: {png_path.relative_to(ROOT)}")
        if args.plot is not None:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            args.plot.write_bytes(png_path.read_bytes())
    json_path.write_text(json.dumps(result, indent=2))
    log(f"results: {json_path.relative_to(ROOT)}")
    v = result["verdict"]
    print(
        f"\nRSS over the second half: {v.get('rss_slope_mib_per_min_second_half', 0):+.3f} MiB/min "
        f"({v.get('rss_start_mib')} MiB at the start of the run, {v.get('rss_end_mib')} at its "
        f"end, max {v.get('rss_max_mib')})\n"
        f"fds: {v.get('fds_start')} at the start of the run, {v.get('fds_end')} at its end; "
        f"{v.get('fds_idle_before')} idle before, {v.get('fds_after_close')} after every "
        f"client left\nverdict: "
        + ("flat, no leak" if v["flat"] else "LEAK? " + "; ".join(v["problems"]))
    )
    return 0 if v["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
