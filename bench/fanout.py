"""Fan-out benchmark for Tidings (a benchmark, not a test).

    .venv/bin/python bench/fanout.py [--n 1000,10000] [--runs 3] [--quick]

For each run, each N and each server (Tidings, and the raw aiohttp broadcast peer in
bench/raw_aiohttp.py, interleaved so machine noise hits both), it:

1. starts the server pinned to core 0 (`taskset -c 0`) and waits for GET /ready;
2. runs a 50-connection warm-up client through every phase, then reads the baseline RSS
   (sum over the server's process tree, from /proc);
3. starts the load client (bench/loadclient.c, compiled here with gcc into bench/results/)
   pinned to core 1 and opens N Pusher connections with at most 200 handshakes in flight:
   connections/s = N / time until the last pusher:connection_established;
4. 1 s later: RSS per idle connection = (RSS - baseline) / N; then subscribes every socket
   to channel "bench" and measures RSS again (idle subscribed connection);
5. latency: open loop at a fixed rate (10 msg/s at N = 1,000, 5 msg/s at N = 10,000) through
   the REST API; p50/p99 over every delivery, counted from the scheduled send time;
6. saturation: closed loop, at most 4 broadcasts (4·N deliveries) in flight; deliveries/s
   over a fixed window, with server, client and per-core CPU sampled around the window;
7. stops the client and the server (by PID; also on Ctrl-C or an error).

Publishes are pre-signed Pusher REST requests (POST /apps/12345/events) sent by the load
client over keep-alive connections; each event's data carries a sequence number and the client
keeps the send time of each, so it computes the latency of every delivery. The raw peer gets
the very same requests (it ignores the signature). Prints min/median/max over runs and the
ratio Tidings/raw per run, and writes everything to bench/results/fanout-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))

APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"
EVENTS_PATH = f"/apps/{APP_ID}/events"

SERVER_CORE = "0"
CLIENT_CORE = "1"
HANDSHAKES_IN_FLIGHT = 200
BROADCASTS_IN_FLIGHT = 4
PUBLISHER_CONNECTIONS = 4
WARMUP_CONNECTIONS = 50
MAX_DELIVERIES_PER_S = 800_000  # sizes the pre-signed request supply; never the limit

STARTED: list[subprocess.Popen[bytes]] = []


# ---------------------------------------------------------------- processes


def raise_fd_limit() -> None:
    """Children inherit it: the server and the client each hold N sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1_048_576:
        hard = 1_048_576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def start(cmd: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so it can be stopped as a group) and remember it."""
    with log.open("ab") as err:
        proc = subprocess.Popen(cmd, stderr=err, start_new_session=True, cwd=ROOT, **kwargs)  # noqa: S603
    STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL the process and the group it leads."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers it started (it led this group)
    except (ProcessLookupError, PermissionError):
        pass
    if proc in STARTED:
        STARTED.remove(proc)


def stop_all() -> None:
    for proc in list(STARTED):
        stop(proc, grace=3.0)


def on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready on port {port} after {timeout} s")


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def rss_bytes(pid: int) -> int:
    return sum(p.memory_info().rss for p in tree(pid))


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        t = p.cpu_times()
        total += t.user + t.system
    return total


def core_times() -> dict[str, list[int]]:
    """Jiffies per core from /proc/stat: [busy, softirq, steal, total].

    busy is everything but idle/iowait/steal (so it includes irq and softirq: the kernel's
    loopback TCP work, which no process is charged for); steal is time the hypervisor gave
    this vCPU to someone else (other tenants of a shared machine)."""
    out: dict[str, list[int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            nums = [int(v) for v in vals[:8]]
            idle, softirq, steal = nums[3] + nums[4], nums[6], nums[7]
            total = sum(nums)
            out[name[3:]] = [total - idle - steal, softirq, steal, total]
    return out


# ---------------------------------------------------------------- servers


def tidings_config(path: Path, log_level: str) -> Path:
    path.write_text(
        f'log_level = "{log_level}"\n'
        "max_connections = 200000\n"
        "\n[[apps]]\n"
        f'id = "{APP_ID}"\nkey = "{APP_KEY}"\nsecret = "{APP_SECRET}"\n'
        "max_connections = 200000\n"
        "max_backend_events_per_second = 1000000\n"
    )
    return path


def server_command(name: str, port: int, workdir: Path, log_level: str) -> list[str]:
    pin = ["taskset", "-c", SERVER_CORE]
    if name == "raw":
        script = str(BENCH / "raw_aiohttp.py")
        return [*pin, PYTHON, script, "--host", "127.0.0.1", "--port", str(port)]
    config = tidings_config(workdir / f"tidings-{port}.toml", log_level)
    return [
        *pin,
        *[PYTHON, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)],
        *["--config", str(config)],
    ]


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# ---------------------------------------------------------------- load client


def build_client() -> Path:
    source = BENCH / "loadclient.c"
    binary = RESULTS / "loadclient"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(binary), str(source)], check=True
        )
    return binary


def signed_request(port: int, seq: int, timestamp: int) -> bytes:
    """One Pusher REST trigger, signed as the HTTP API wants (reference 3.2)."""
    data = json.dumps({"seq": seq, "pad": "x" * 40}, separators=(",", ":"))
    body = json.dumps(
        {"name": "e", "channel": "bench", "data": data}, separators=(",", ":")
    ).encode()
    params = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(timestamp),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    to_sign = f"POST\n{EVENTS_PATH}\n{query}".encode()
    signature = hmac.new(APP_SECRET.encode(), to_sign, hashlib.sha256).hexdigest()
    head = (
        f"POST {EVENTS_PATH}?{query}&auth_signature={signature} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def write_requests(path: Path, port: int, count: int) -> Path:
    timestamp = int(time.time())
    with path.open("wb") as f:
        f.write(f"{count}\n".encode())
        for seq in range(count):
            req = signed_request(port, seq, timestamp)
            f.write(f"{len(req)}\n".encode())
            f.write(req)
    return path


class LoadClient:
    """bench/loadclient.c driven line by line over its stdin/stdout."""

    def __init__(self, binary: Path, port: int, n: int, requests: Path, log: Path) -> None:
        cmd = ["taskset", "-c", CLIENT_CORE, str(binary), "127.0.0.1", str(port), APP_KEY]
        cmd += [str(n), str(requests), str(PUBLISHER_CONNECTIONS)]
        self.proc = start(cmd, log, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.log = log
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._stdout: IO[bytes] = self.proc.stdout
        self._sel.register(self._stdout, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                raise TimeoutError(f"load client silent for {timeout} s")
            chunk = os.read(self._stdout.fileno(), 65536)
            if not chunk:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"load client exited ({self.proc.poll()}):\n{tail}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        result: dict[str, Any] = json.loads(line)
        return result

    def command(self, line: str, timeout: float) -> dict[str, Any]:
        self.send(line)
        return self.read(timeout)

    def close(self) -> None:
        try:
            self.command("quit", 30)
            self.proc.wait(timeout=10)
        except (TimeoutError, RuntimeError, BrokenPipeError, subprocess.TimeoutExpired):
            pass
        stop(self.proc, grace=3.0)
        self._sel.close()


# ---------------------------------------------------------------- one measurement


@dataclass(frozen=True)
class Plan:
    latency_seconds: float
    sat_warm: float
    sat_window: float
    log_level: str
    profile: Path | None = None  # a folder: py-spy the server during the saturation window

    def latency_rate(self, n: int) -> float:
        """10 msg/s at N = 1,000, 5 msg/s at N = 10,000 (2 at most at 25,000+)."""
        return float(min(10, max(2, 50_000 // n)))

    def request_count(self, n: int) -> int:
        sat = (self.sat_warm + self.sat_window) * MAX_DELIVERIES_PER_S / n
        return int(sat + self.latency_rate(n) * self.latency_seconds + 50)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def client_session(
    binary: Path, port: int, n: int, plan: Plan, workdir: Path, tag: str, server_pid: int
) -> dict[str, Any]:
    """The measured phases against a running server; returns the raw numbers."""
    requests = write_requests(workdir / f"requests-{tag}.bin", port, plan.request_count(n))
    client = LoadClient(binary, port, n, requests, workdir / f"client-{tag}.log")
    out: dict[str, Any] = {}
    try:
        base_rss = rss_bytes(server_pid)
        out["rss_base_mib"] = base_rss / 2**20
        conn = client.command(f"connect {HANDSHAKES_IN_FLIGHT}", 180)
        out["connect"] = conn
        log(
            f"    connect: {conn['established']}/{n} in {conn['seconds']:.2f} s "
            f"({conn['rate']:,.0f}/s), failed {conn['failed']}"
        )
        time.sleep(1.0)
        out["rss_conn_kib"] = (rss_bytes(server_pid) - base_rss) / n / 1024
        sub = client.command(f"subscribe {HANDSHAKES_IN_FLIGHT}", 180)
        out["subscribe"] = sub
        time.sleep(1.0)
        out["rss_sub_kib"] = (rss_bytes(server_pid) - base_rss) / n / 1024
        log(
            f"    subscribe: {sub['subscribed']}/{n} in {sub['seconds']:.2f} s; RSS/conn "
            f"{out['rss_conn_kib']:.1f} KiB idle, {out['rss_sub_kib']:.1f} KiB subscribed"
        )
        warm = client.command("warm 3", 60)
        out["warm"] = warm
        rate = plan.latency_rate(n)
        lat = client.command(f"latency {rate} {plan.latency_seconds}", plan.latency_seconds + 40)
        out["latency"] = lat
        log(
            f"    latency @{rate:g} msg/s: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms "
            f"({lat['received']}/{lat['expected']} deliveries)"
        )
        out["saturate"] = saturate(client, server_pid, plan, tag)
        sat = out["saturate"]
        log(
            f"    saturation: {sat['rate']:,.0f} deliveries/s; CPU server {sat['server_cpu']:.0f}% "
            f"client {sat['client_cpu']:.0f}%, core {SERVER_CORE} busy {sat['server_core']:.0f}% "
            f"core {CLIENT_CORE} busy {sat['client_core']:.0f}%, "
            f"core {SERVER_CORE} steal {sat['server_core_steal']:.0f}%"
        )
    finally:
        client.close()
        requests.unlink(missing_ok=True)
    return out


def saturate(client: LoadClient, server_pid: int, plan: Plan, tag: str) -> dict[str, Any]:
    client.send(f"saturate {BROADCASTS_IN_FLIGHT} {plan.sat_warm} {plan.sat_window}")
    first = client.read(plan.sat_warm + 30)
    assert first["phase"] == "sat_start", first
    spy = start_profiler(server_pid, plan, tag) if plan.profile else None
    t0, s0, c0, k0 = (
        time.monotonic(),
        cpu_seconds(server_pid),
        cpu_seconds(client.pid),
        core_times(),
    )
    end = client.read(plan.sat_window + 30)
    t1, s1, c1, k1 = (
        time.monotonic(),
        cpu_seconds(server_pid),
        cpu_seconds(client.pid),
        core_times(),
    )
    assert end["phase"] == "sat_end", end
    result = client.read(60)
    if spy is not None and plan.profile is not None:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        stop(spy)
        result["profile"] = profile_summary(plan.profile / f"pyspy-{tag}.txt")
    wall = t1 - t0

    def share(core: str, field: int) -> float:
        before, after = k0.get(core, [0, 0, 0, 0]), k1.get(core, [0, 0, 0, 0])
        total = after[3] - before[3]
        return 100.0 * (after[field] - before[field]) / total if total > 0 else float("nan")

    def busy(core: str) -> float:
        return share(core, 0)

    result["server_cpu"] = 100.0 * (s1 - s0) / wall
    result["client_cpu"] = 100.0 * (c1 - c0) / wall
    result["server_core"] = busy(SERVER_CORE)
    result["client_core"] = busy(CLIENT_CORE)
    result["server_core_softirq"] = share(SERVER_CORE, 1)
    result["server_core_steal"] = share(SERVER_CORE, 2)
    result["client_core_steal"] = share(CLIENT_CORE, 2)
    result["deliveries_per_server_cpu_s"] = (
        result["deliveries"] / (s1 - s0) if s1 > s0 else float("nan")
    )
    return result


def start_profiler(pid: int, plan: Plan, tag: str) -> subprocess.Popen[bytes]:
    """py-spy (sampling, not pausing the server) on the client's core for the window."""
    assert plan.profile is not None
    out = plan.profile / f"pyspy-{tag}.txt"
    spy = str(Path(PYTHON).parent / "py-spy")
    cmd = ["taskset", "-c", CLIENT_CORE, spy, "record", "--pid", str(pid), "--nonblocking"]
    cmd += ["--rate", "200", "--function", "--format", "raw", "--output", str(out)]
    cmd += ["--duration", str(max(1, int(plan.sat_window)))]
    return start(cmd, plan.profile / f"pyspy-{tag}.log", stdout=subprocess.DEVNULL)


def profile_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive share of samples per function, from py-spy's collapsed stacks."""
    if not path.exists():
        return {"error": f"no profile written ({path.name})"}
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + count

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        pairs = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [(name, round(100.0 * c / total, 1)) for name, c in pairs]

    return {"samples": total, "file": path.name, "self": ranked(own), "inclusive": ranked(incl)}


def measure(
    server: str, n: int, run: int, binary: Path, plan: Plan, workdir: Path
) -> dict[str, Any]:
    port = free_port()
    tag = f"{server}-n{n}-r{run}"
    server_log = workdir / f"server-{tag}.log"
    cmd = server_command(server, port, workdir, plan.log_level)
    log(f"run {run + 1}, N={n:,}, {server}: {' '.join(cmd[3:])}")
    proc = start(cmd, server_log, stdout=subprocess.DEVNULL, env=server_env())
    record: dict[str, Any] = {"server": server, "n": n, "run": run, "port": port}
    try:
        wait_ready(port, proc, 30, server_log)
        warm_plan = Plan(1.0, 0.2, 0.5, plan.log_level)  # never profiled
        warm = warmup(binary, port, warm_plan, workdir, tag)
        record["warmup_ok"] = warm
        time.sleep(1.0)
        record.update(client_session(binary, port, n, plan, workdir, tag, proc.pid))
        record["ok"] = validate(record, n)
    except (OSError, RuntimeError, AssertionError, KeyError, psutil.Error) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["ok"] = False
        log(f"    FAILED: {record['error']}")
    finally:
        stop(proc, grace=15.0)
        record["server_exit"] = proc.returncode
    return record


def warmup(binary: Path, port: int, plan: Plan, workdir: Path, tag: str) -> bool:
    """A small client through every phase, so lazy imports and first-use allocations are
    not charged to the measured connections."""
    n = WARMUP_CONNECTIONS
    requests = write_requests(workdir / f"requests-warm-{tag}.bin", port, plan.request_count(n))
    client = LoadClient(binary, port, n, requests, workdir / f"client-warm-{tag}.log")
    try:
        client.command("connect 50", 30)
        sub = client.command("subscribe 50", 30)
        client.command("warm 3", 30)
        client.command("latency 20 1", 30)
        client.command(f"saturate 4 {plan.sat_warm} {plan.sat_window}", 30)
        client.read(30)
        client.read(30)
        return bool(sub["subscribed"] == n)
    finally:
        client.close()
        requests.unlink(missing_ok=True)


def phase_problems(record: dict[str, Any], n: int) -> list[str]:
    """What went wrong in the connect, subscribe, latency and saturation phases."""
    problems = []
    if record["connect"]["established"] != n:
        problems.append(f"connected {record['connect']['established']}/{n}")
    if record["subscribe"]["subscribed"] != n:
        problems.append(f"subscribed {record['subscribe']['subscribed']}/{n}")
    lat = record["latency"]
    if lat["received"] != lat["expected"]:
        problems.append(f"latency deliveries {lat['received']}/{lat['expected']}")
    sat = record["saturate"]
    if sat["exhausted"]:
        problems.append("saturation ran out of pre-signed requests")
    if not sat["drained"]:
        problems.append("saturation did not drain")
    return problems


def validate(record: dict[str, Any], n: int) -> list[str] | bool:
    """True, or the list of problems that make the record suspect (kept, flagged)."""
    problems = phase_problems(record, n)
    sat = record["saturate"]
    if sat["pub_errors"]:
        problems.append(f"{sat['pub_errors']} publish errors")
    if sat["closed_by_peer"]:
        problems.append(
            f"{sat['closed_by_peer']} sockets closed by the server {sat['close_codes']}"
        )
    if problems:
        log("    SUSPECT: " + "; ".join(problems))
        return problems
    return True


# ---------------------------------------------------------------- summary

METRICS: list[tuple[str, Callable[[dict[str, Any]], float], int]] = [
    ("deliveries/s (saturation)", lambda r: r["saturate"]["rate"], 0),
    ("deliveries per server CPU-s", lambda r: r["saturate"]["deliveries_per_server_cpu_s"], 0),
    ("server process CPU % (saturation)", lambda r: r["saturate"]["server_cpu"], 0),
    (f"core {SERVER_CORE} busy % (incl. softirq)", lambda r: r["saturate"]["server_core"], 0),
    (f"core {SERVER_CORE} softirq %", lambda r: r["saturate"]["server_core_softirq"], 0),
    (f"core {SERVER_CORE} steal %", lambda r: r["saturate"]["server_core_steal"], 0),
    ("load client CPU %", lambda r: r["saturate"]["client_cpu"], 0),
    (f"core {CLIENT_CORE} busy % (client core)", lambda r: r["saturate"]["client_core"], 0),
    ("latency p50 ms", lambda r: r["latency"]["p50_ms"], 1),
    ("latency p99 ms", lambda r: r["latency"]["p99_ms"], 1),
    ("RSS KiB / idle connection", lambda r: r["rss_conn_kib"], 1),
    ("RSS KiB / idle subscribed conn.", lambda r: r["rss_sub_kib"], 1),
    ("connections/s", lambda r: r["connect"]["rate"], 0),
    ("subscriptions/s", lambda r: r["subscribe"]["rate"], 0),
]


def spread(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    fmt = f"{{:,.{digits}f}}"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def summarize(records: list[dict[str, Any]], ns: list[int]) -> tuple[str, dict[str, Any]]:
    """A markdown table: median (min–max) per server, and Tidings/raw ratios per run."""
    good = [r for r in records if "saturate" in r]
    lines = [
        "| N | metric | Tidings | raw aiohttp peer | Tidings / raw |",
        "|---:|---|---:|---:|---:|",
    ]
    data: dict[str, Any] = {}
    for n in ns:
        for name, get, digits in METRICS:
            per: dict[str, list[float]] = {"tidings": [], "raw": []}
            by_run: dict[int, dict[str, float]] = {}
            for r in good:
                if r["n"] != n:
                    continue
                value = float(get(r))
                per[r["server"]].append(value)
                by_run.setdefault(r["run"], {})[r["server"]] = value
            ratios = [
                v["tidings"] / v["raw"]
                for v in by_run.values()
                if "tidings" in v and "raw" in v and v["raw"]
            ]
            data[f"{n}:{name}"] = {**per, "ratio": ratios}
            lines.append(
                f"| {n:,} | {name} | {spread(per['tidings'], digits)} | "
                f"{spread(per['raw'], digits)} | {spread(ratios, 2)} |"
            )
    return "\n".join(lines), data


def targets(data: dict[str, Any]) -> list[str]:
    out = []
    sat = data.get("1000:deliveries/s (saturation)", {}).get("tidings", [])
    if sat:
        med = statistics.median(sat)
        verdict = "met" if med >= 100_000 else "NOT met"
        out.append(f"≥ 100k deliveries/s at N = 1,000: median {med:,.0f}/s → {verdict}")
    for key, value in data.items():
        if key.endswith(":RSS KiB / idle connection") and value["tidings"]:
            med = statistics.median(value["tidings"])
            verdict = "met" if med * 1024 <= 16_000 else "NOT met"
            n = int(key.split(":")[0])
            out.append(f"≤ 16 KB RSS per idle connection (N = {n:,}): {med:.1f} KiB → {verdict}")
    return out


def git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions = {}
    for mod in ("aiohttp", "uvloop", "orjson"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "tidings_commit": git("rev-parse", "--short", "HEAD"),
        "tidings_src_dirty": bool(git("status", "--porcelain", "src")),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
        "fd_limit": fd_limit(),
        **versions,
    }


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Tidings fan-out benchmark")
    p.add_argument("--n", default=None, help="subscriber counts, comma-separated (1000,10000)")
    p.add_argument("--runs", type=int, default=None, help="repetitions (3)")
    p.add_argument("--quick", action="store_true", help="1 run, N=1000, short phases")
    p.add_argument(
        "--servers", default="raw,tidings", help="which of raw,tidings to run (raw,tidings)"
    )
    p.add_argument("--window", type=float, default=None, help="saturation window seconds (4)")
    p.add_argument("--log-level", default="warning", help="Tidings log_level (warning)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy each server during the saturation window (slows it; numbers not comparable)",
    )
    args = p.parse_args(argv)
    args.n = [int(x) for x in (args.n or ("1000" if args.quick else "1000,10000")).split(",")]
    args.runs = args.runs or (1 if args.quick else 3)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in args.servers:
        if s not in ("raw", "tidings"):
            p.error(f"unknown server {s!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    raise_fd_limit()
    need = max(args.n) + 1000
    if fd_limit() < need:
        log(f"RLIMIT_NOFILE is {fd_limit()}, N={max(args.n)} needs ~{need}")
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"fanout-{stamp}"
    workdir.mkdir()
    binary = build_client()
    profile = workdir if args.profile else None
    plan = (
        Plan(2.0, 0.5, args.window or 2.0, args.log_level, profile)
        if args.quick
        else Plan(3.0, 1.0, args.window or 4.0, args.log_level, profile)
    )
    info = machine()
    log(f"machine: {info}")
    log(f"logs in {workdir.relative_to(ROOT)}")
    records: list[dict[str, Any]] = []
    out_path = RESULTS / f"fanout-{stamp}.json"
    started = time.time()
    interrupted = False
    try:
        for run in range(args.runs):
            for n in args.n:
                order = args.servers if run % 2 == 0 else list(reversed(args.servers))
                for server in order:
                    records.append(measure(server, n, run, binary, plan, workdir))
                    write_json(out_path, info, args, plan, records, started)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping every process started")
    finally:
        stop_all()
    table, data = summarize(records, args.n)
    info["loadavg_end"] = os.getloadavg()
    write_json(out_path, info, args, plan, records, started, data)
    print()
    print(table)
    print()
    for line in targets(data):
        print(line)
    bad = [r for r in records if r.get("ok") is not True]
    if bad:
        print(f"\n{len(bad)} of {len(records)} measurements failed or are suspect:")
        for r in bad:
            print(f"  {r['server']} N={r['n']} run {r['run'] + 1}: {r.get('error') or r['ok']}")
    print_profiles(records)
    print(f"\nresults: {out_path.relative_to(ROOT)}")
    if interrupted:
        return 130
    return 0 if records and not bad else 1


def print_profiles(records: list[dict[str, Any]], top: int = 15) -> None:
    for r in records:
        prof = r.get("saturate", {}).get("profile")
        if not prof or "self" not in prof:
            continue
        print(f"\nprofile {r['server']} N={r['n']} run {r['run'] + 1} ({prof['samples']} samples)")
        print("  self %   function")
        for name, share in prof["self"][:top]:
            print(f"  {share:6.1f}   {name}")
        print("  incl %   function")
        for name, share in prof["inclusive"][:top]:
            print(f"  {share:6.1f}   {name}")


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
        "command": " ".join(["bench/fanout.py", *sys.argv[1:]]),
        "machine": info,
        "options": {"n": args.n, "runs": args.runs, "servers": args.servers},
        "plan": plan.__dict__,
        "constants": {
            "handshakes_in_flight": HANDSHAKES_IN_FLIGHT,
            "broadcasts_in_flight": BROADCASTS_IN_FLIGHT,
            "publisher_connections": PUBLISHER_CONNECTIONS,
            "server_core": SERVER_CORE,
            "client_core": CLIENT_CORE,
        },
        "records": records,
        "summary": summary,
    }
    path.write_text(json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
