"""``--workers N``: N server processes sharing one port through SO_REUSEPORT.

The kernel spreads new connections over the workers; they share state through the Redis
broker (the configuration refuses workers without it). This supervisor forwards SIGTERM
and SIGINT to every worker (each drains on its own), restarts a worker that crashes, and
exits when all have stopped. A second signal kills the workers at once.

A worker often gets one stop twice: Ctrl-C reaches the whole foreground process group,
and systemd (``KillMode=control-group``) or ``kill -- -PGID`` signal every process, so the
copy forwarded here arrives after the original. Workers therefore ignore every signal after
their first and drain; cutting a drain short is this supervisor's job, on its own second
signal. A worker that exits with status 2 (a configuration error found while starting,
such as the port being taken) stops the node instead of being restarted.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from tidings.config import Settings
from tidings.server.banner import client_hint
from tidings.server.listening import check_can_listen

log = logging.getLogger("tidings.workers")

WORKER_SETTINGS_ENV = "TIDINGS_WORKER_SETTINGS"
RESTART_DELAY = 1.0
CONFIG_ERROR = 2  # the exit status of `tidings serve` and `tidings worker` for bad settings


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def supervise(settings: Settings) -> int:
    """Run ``settings.workers`` workers until stopped; raises ConfigError if the port is taken."""
    if settings.port:
        # Said once here rather than once per worker.
        check_can_listen(settings.host, settings.port)
    # With port 0 every worker would get a port of its own: choose one for all of them.
    port = settings.port or _free_port(settings.host)
    update: dict[str, object] = {"workers": 1, "port": port, "reuse_port": True}
    if settings.console and not settings.console_session_key:
        # One key signs every worker's console sessions: a login on one is good on all.
        update["console_session_key"] = secrets.token_hex(32)
    worker_settings = settings.model_copy(update=update)
    env = {**os.environ, WORKER_SETTINGS_ENV: worker_settings.model_dump_json()}
    command = [sys.executable, "-m", "tidings", "worker"]

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env)

    workers = [spawn() for _ in range(settings.workers)]
    log.info(
        "started %d workers on port %d: pids %s",
        len(workers),
        port,
        ", ".join(str(w.pid) for w in workers),
    )
    keys = [app.key for app in settings.apps]
    log.info(
        "%s", client_hint(settings.host, port, bool(settings.tls_cert), keys, settings.http_path)
    )
    stopping = False
    status: int | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping, status
        if stopping:
            # The second signal: exit at once, with the status a single process exits with.
            status = 1
            for w in workers:
                if w.poll() is None:
                    w.kill()
            return
        stopping = True
        for w in workers:
            if w.poll() is None:
                w.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while True:
        alive = False
        for i, w in enumerate(workers):
            code = w.poll()
            if code is None:
                alive = True
            elif code == CONFIG_ERROR and not stopping:
                # Restarting would fail the same way (the worker has said why on stderr).
                stopping, status = True, CONFIG_ERROR
                for other in workers:
                    if other.poll() is None:
                        other.terminate()
            elif not stopping:
                log.error("worker %d exited with %s; restarting it", w.pid, code)
                time.sleep(RESTART_DELAY)
                workers[i] = spawn()
                alive = True
        if not alive:
            break
        time.sleep(0.2)
    if status is not None:
        return status
    codes = [w.returncode for w in workers]
    return max(codes, key=abs) if codes else 0
