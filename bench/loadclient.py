"""The C load client (bench/loadclient.c): build it, pre-sign its publishes, drive it.

Publishes are Pusher REST triggers (POST /apps/12345/events), signed as the HTTP API wants
and written to a file before the phase starts, so signing costs nothing while measuring. Every
server under test takes this same request: Tidings and Soketi check the signature, the raw and
python-socketio peers ignore it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import selectors
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from procs import BENCH, CLIENT_CORE, RESULTS, ephemeral_ports, start, stop

APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"
EVENTS_PATH = f"/apps/{APP_ID}/events"
# Keep-alive REST connections the client publishes through, one request in flight on each.
# bench/cluster.py opens one per broadcast in flight instead (see there).
PUBLISHER_CONNECTIONS = 4


def build_client() -> Path:
    """gcc -O2 bench/loadclient.c into bench/results/ (again whenever the source is newer)."""
    source = BENCH / "loadclient.c"
    binary = RESULTS / "loadclient"
    RESULTS.mkdir(parents=True, exist_ok=True)
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


AUTH_WINDOW = 600  # seconds the server accepts auth_timestamp away from its clock


def write_requests(path: Path, port: int, count: int, ahead: int = 0) -> Path:
    """``ahead``: sign as if ``ahead`` seconds from now, so that the requests stay valid until
    ``ahead + AUTH_WINDOW`` seconds from now (a run longer than the window: bench/hold.py)."""
    timestamp = int(time.time()) + ahead
    with path.open("wb") as f:
        f.write(f"{count}\n".encode())
        for seq in range(count):
            req = signed_request(port, seq, timestamp)
            f.write(f"{len(req)}\n".encode())
            f.write(req)
    return path


def source_addresses(n: int) -> int:
    """Loopback source addresses for n subscribers: one gives at most one connection per
    ephemeral port to one server port (28,232 with Linux's default range)."""
    return max(1, math.ceil(n / (0.8 * ephemeral_ports())))


class LoadClient:
    """bench/loadclient.c driven line by line over its stdin/stdout."""

    def __init__(
        self,
        binary: Path,
        port: int,
        n: int,
        requests: Path,
        log: Path,
        *,
        protocol: str = "pusher",
        cores: str = CLIENT_CORE,
        port2: int | None = None,
        spin_us: int | None = None,
        sources: int | None = None,
        publishers: int = PUBLISHER_CONNECTIONS,
    ) -> None:
        sources = sources or source_addresses(n)  # more when other clients share the ports
        cmd = ["taskset", "-c", cores, str(binary), "-P", protocol, "-S", str(sources)]
        if port2:
            cmd += ["-2", str(port2)]
        if spin_us is not None:
            cmd += ["-W", str(spin_us)]
        cmd += ["127.0.0.1", str(port), APP_KEY, str(n), str(requests), str(publishers)]
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
