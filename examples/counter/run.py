"""Start the visit counter: Redis, a Tidings server on it, and the Flask app under gunicorn.

``make example NAME=counter [PORT=8000]`` runs this. Ports: the page on ``PORT``, Tidings
on ``TIDINGS_PORT`` (default PORT+1), Redis on ``REDIS_PORT`` (default PORT+2). Ctrl-C
(SIGINT) or SIGTERM stops all three and exits 0.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import redis

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # tidings and gunicorn come from the same venv
PORT = int(os.environ.get("PORT", "8000"))
TIDINGS_PORT = int(os.environ.get("TIDINGS_PORT", PORT + 1))
REDIS_PORT = int(os.environ.get("REDIS_PORT", PORT + 2))
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
# Demo-only defaults (app.py has the same): set your own in the environment.
APP = {
    "PUSHER_APP_ID": os.environ.get("PUSHER_APP_ID", "counter"),
    "PUSHER_APP_KEY": os.environ.get("PUSHER_APP_KEY", "counter-demo-key"),
    "PUSHER_APP_SECRET": os.environ.get("PUSHER_APP_SECRET", "counter-demo-secret"),
}
START_TIMEOUT = 30.0  # seconds for each process to answer
STOP_TIMEOUT = 10.0  # seconds for each process to exit before it is killed
PR_SET_PDEATHSIG = 1


class Stopped(Exception):
    """SIGINT or SIGTERM arrived."""


class Failed(Exception):
    """A process did not start, or exited on its own."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # One stop is enough: ignore more Ctrl-Cs while the three processes shut down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped(signal.Signals(signum).name)


def _stop_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM should this script die unannounced
    (kill -9), so that no Redis or server outlives it."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(
    args: list[str], env: dict[str, str] | None = None, cwd: Path = HERE
) -> subprocess.Popen[bytes]:
    print("$", shlex.join(args), flush=True)
    return subprocess.Popen(
        args,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        # Its own process group: a Ctrl-C in the terminal reaches this script only, which
        # then stops the three in order (Tidings takes a second signal as "exit now").
        process_group=0,
        preexec_fn=_stop_with_parent,
    )


def wait_until(name: str, proc: subprocess.Popen[bytes], answers: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise Failed(f"{name} exited with {proc.returncode} while starting")
        try:
            if answers():
                return
        except (OSError, redis.RedisError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise Failed(f"{name} did not answer within {START_TIMEOUT:.0f} s")
        time.sleep(0.1)


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=1) as response:
            return bool(response.status == 200)

    return check


def redis_ok() -> bool:
    with redis.Redis(port=REDIS_PORT, socket_timeout=1, socket_connect_timeout=1) as client:
        return bool(client.ping())


def stop(name: str, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop within {STOP_TIMEOUT:.0f} s: killing it", flush=True)
            proc.kill()
            proc.wait()


def main() -> int:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("redis-server is not on PATH (make example installs it)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    with tempfile.TemporaryDirectory(prefix="counter-") as scratch:
        try:
            # Nothing persisted: each run counts from zero, and leaves no files behind.
            redis_args = ["--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", ""]
            redis_args += ["--appendonly", "no", "--dir", scratch, "--loglevel", "warning"]
            running.append(("redis-server", start([redis_server, *redis_args], cwd=Path(scratch))))
            wait_until("redis-server", running[-1][1], redis_ok)

            # The sockets: one Tidings node on the Redis (add more on other ports or
            # machines with the same --redis, and the app's publishes reach them all).
            tidings = [str(BIN / "tidings"), "serve", "--redis", REDIS_URL]
            tidings += ["--host", "127.0.0.1", "--port", str(TIDINGS_PORT)]
            # /ready turns 503 for a while at stop so a load balancer moves away first;
            # there is no load balancer here.
            tidings += ["--shutdown-ready-delay", "0"]
            app_spec = ":".join(APP.values())  # ID:KEY:SECRET, in the environment, not in `ps`
            running.append(("tidings", start(tidings, {"TIDINGS_APPS": app_spec}, Path(scratch))))
            wait_until("tidings", running[-1][1], http_ok(f"http://127.0.0.1:{TIDINGS_PORT}/ready"))

            # Two workers on purpose: each is its own process with its own Realtime.client.
            gunicorn = [str(BIN / "gunicorn"), "--workers", "2"]
            gunicorn += ["--bind", f"127.0.0.1:{PORT}", "app:app"]
            # gunicorn 27 (uv.lock) opens a control socket at one path in $HOME, which
            # two runs at once would fight over; this example does not use it.
            gunicorn += ["--no-control-socket"]
            env = {"REDIS_URL": REDIS_URL, "TIDINGS_PORT": str(TIDINGS_PORT), **APP}
            running.append(("gunicorn", start(gunicorn, env)))
            wait_until(
                "gunicorn", running[-1][1], http_ok(f"http://127.0.0.1:{PORT}/pusher.min.js")
            )

            print(
                f"counter is ready: open http://127.0.0.1:{PORT}/ "
                f"(Tidings on {TIDINGS_PORT}, Redis on {REDIS_PORT}; Ctrl-C stops all)",
                flush=True,
            )
            while True:
                for name, proc in running:
                    if proc.poll() is not None:
                        raise Failed(f"{name} exited with {proc.returncode}")
                time.sleep(0.5)
        except Stopped as stopped:
            print(f"{stopped}: stopping", flush=True)
            return 0
        except Failed as failed:
            print(f"counter: {failed}; stopping", file=sys.stderr, flush=True)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            # The app first (no more publishes), then Tidings (it tells its clients to
            # reconnect elsewhere), then the Redis they both use.
            for name, proc in reversed(running):
                stop(name, proc)


if __name__ == "__main__":
    sys.exit(main())
