"""Processes and /proc for the benchmarks: start and stop children by PID, CPU and RSS.

Every child is started in its own session (process group) and remembered, so the harness
stops exactly what it started (SIGTERM, then SIGKILL to that group) on exit, Ctrl-C or error.
"""

from __future__ import annotations

import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
CACHE = ROOT / ".cache" / "bench"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))

SERVER_CORE = "0"
CLIENT_CORE = "1"

STARTED: list[subprocess.Popen[bytes]] = []


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def raise_fd_limit(want: int = 1_048_576) -> None:
    """Children inherit it: the server and the client each hold N sockets. As root the hard
    limit can be raised too (this machine's default hard limit is 20,000: too few for 50k)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        nr_open = want
    want = min(want, nr_open)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            pass  # not root: the hard limit stays
    if hard == resource.RLIM_INFINITY or hard > want:
        hard = want
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ephemeral_ports() -> int:
    """How many local ports one source address has for connections to one server port."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(hi) - int(lo) + 1
    except (OSError, ValueError):
        return 28_000


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


def wait_ready(
    port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path, path: str = "/ready"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
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


def all_processes() -> dict[tuple[int, float], float]:
    """CPU seconds of every process on the machine, keyed by (pid, start time)."""
    out: dict[tuple[int, float], float] = {}
    for p in psutil.process_iter(["create_time", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is not None and p.info["create_time"] is not None:
            out[(p.pid, p.info["create_time"])] = t.user + t.system
    return out


def others_cpu(before: dict[str, Any], after: dict[str, Any], ours: set[int]) -> float:
    """CPU % (of one core) of processes that are not ours: other tenants of a shared machine.

    A lower bound: a process that started and ended inside the window is not seen."""
    total = 0.0
    for key, cpu in after["all"].items():
        if key[0] not in ours:
            total += cpu - before["all"].get(key, 0.0)
    return float(100.0 * total / (after["t"] - before["t"]))


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
        "ephemeral_ports": ephemeral_ports(),
        **versions,
    }
