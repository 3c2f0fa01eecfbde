"""`tidings serve --workers N` stopped the way service managers and terminals stop it.

Ctrl-C signals the whole foreground process group, and systemd (``KillMode=control-group``)
every process of the service, so each worker gets the stop from there and again from the
supervisor. That must still be one drain (docs/deployment.md, "Stopping a node"): every
client gets 4200 and the node exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pusher_helpers import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, SocketOpener

from redis_server import RedisServer, free_port

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

WORKERS = 2
# The kernel spreads connections over the workers by a hash of the client port: with 16
# sockets, all of them landing on one worker has a chance of 2 in 65536.
SOCKETS = 16
RECONNECT = 4200
# Long enough that the supervisor's copy of a stop arrives while the workers drain.
READY_DELAY = TIMEOUT / 2

Popen = subprocess.Popen[bytes]


def listening_workers(log: Path) -> int:
    return log.read_text(errors="replace").count("listening on ")


@contextmanager
def workers_group(redis: RedisServer, prefix: str, tmp: Path) -> Iterator[tuple[Popen, Path, int]]:
    """`tidings serve --workers 2` in a process group of its own, once every worker listens."""
    port = free_port()
    log = tmp / "tidings.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        PYTHONUNBUFFERED="1",
        TIDINGS_SHUTDOWN_READY_DELAY=str(READY_DELAY),
        TIDINGS_LOG_LEVEL="info",
    )
    command = [sys.executable, "-m", "tidings", "serve", "--port", str(port)]
    command += ["--workers", str(WORKERS), "--redis", redis.url, "--redis-prefix", prefix]
    command += ["--app", f"{APP_ID}:{APP_KEY}:{APP_SECRET}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 6 * TIMEOUT
        while listening_workers(log) < WORKERS or not ready(port):
            assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"workers never listened:\n{log.read_text()}"
            time.sleep(0.05)
        yield proc, log, port
    finally:
        # The whole group: a worker can outlive a supervisor that failed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def worker_pids(log: Path) -> list[int]:
    text = log.read_text(errors="replace")
    listed = text.split("pids ", 1)[1].split('"', 1)[0]
    return [int(pid) for pid in listed.split(", ")]


async def wait_for(log: Path, text: str, count: int) -> None:
    deadline = time.monotonic() + 2 * TIMEOUT
    while log.read_text(errors="replace").count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} never logged {count}x:\n{log.read_text()}"
        await asyncio.sleep(0.02)


async def stop_like_systemd(proc: Popen, log: Path, signum: signal.Signals) -> None:
    """Signal every process of the group in turn, workers first (KillMode=control-group)."""
    for pid in worker_pids(log):
        os.kill(pid, signum)
    await wait_for(log, "draining", WORKERS)
    os.kill(proc.pid, signum)  # the supervisor forwards it to workers already draining


async def stop_group(proc: Popen, log: Path, signum: signal.Signals) -> None:
    """Ctrl-C in a terminal, `kill -- -PGID`: one signal to every process at once."""
    os.killpg(proc.pid, signum)


STOPS = {
    "group-SIGTERM": (stop_group, signal.SIGTERM),
    "group-SIGINT": (stop_group, signal.SIGINT),
    "each-process-SIGTERM": (stop_like_systemd, signal.SIGTERM),
}


def test_the_start_banner_says_how_to_connect_once(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    with workers_group(redis_server, redis_prefix, tmp_path) as (_, log, port):
        text = log.read_text(errors="replace")
    assert listening_workers(log) == WORKERS
    assert text.count("stop with Ctrl-C") == 1, text
    assert f"wsPort: {port}" in text, text


@pytest.mark.parametrize("how", list(STOPS))
async def test_a_stop_every_worker_gets_twice_drains_once(
    how: str,
    redis_server: RedisServer,
    redis_prefix: str,
    tmp_path: Path,
    open_socket: SocketOpener,
) -> None:
    stop, signum = STOPS[how]
    with workers_group(redis_server, redis_prefix, tmp_path) as (proc, log, port):
        url = f"ws://127.0.0.1:{port}"
        sockets = [await open_socket(url) for _ in range(SOCKETS)]
        await stop(proc, log, signum)
        closed = await asyncio.gather(*(s.wait_closed(3 * TIMEOUT) for s in sockets))
        code = await asyncio.to_thread(proc.wait, 3 * TIMEOUT)
        text = log.read_text(errors="replace")
    assert [c.code for c in closed] == [RECONNECT] * SOCKETS, text
    assert code == 0, text
    assert "second signal" not in text, text
    assert text.count('"message":"stopped"') == WORKERS, text  # each worker finished its drain


async def test_a_second_signal_to_the_supervisor_exits_at_once(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path, open_socket: SocketOpener
) -> None:
    with workers_group(redis_server, redis_prefix, tmp_path) as (proc, log, port):
        sock = await open_socket(f"ws://127.0.0.1:{port}")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        await wait_for(log, "draining", WORKERS)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C again: do not wait for the drain
        code = await asyncio.to_thread(proc.wait, 3 * TIMEOUT)
        closed = await sock.wait_closed()
    assert code == 1, log.read_text()
    assert closed.code != RECONNECT  # killed during the ready delay, before any 4200
