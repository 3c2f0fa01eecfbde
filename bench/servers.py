"""The servers under test, how each is installed and how each is started.

    tidings        this repository, `python -m tidings serve` from .venv
    tidings-asgi   this repository under uvicorn: `rt.asgi()` (bench/peers/tidings_asgi.py)
    tidings-history  `tidings serve` with history kept on the bench channel (docs/history.md)
    tidings-aiohttp-ws  `tidings serve` with websocket_engine = "aiohttp" (the reader before
                   issue 17)
    tidings-py-reader  `tidings serve` with TIDINGS_WS_READER=python: our engine, its frames
                   read by the pure-Python reader instead of tidings._wsframe
    tidings-no-lean  `tidings serve --no-lean-rest`: every request, the WebSocket upgrade
                   included, through aiohttp (the connect path before the lean upgrade)
    soketi         Soketi 1.6.1 (Node, uWebSockets.js), npm ci into .cache/bench/soketi from the
                   package.json and package-lock.json in bench/peers/soketi/
    socketio       python-socketio on aiohttp + uvloop (bench/peers/socketio_server.py), from
                   a venv of its own in .cache/bench/venv (bench/peers/socketio-requirements.txt)
    socketio-asgi  python-socketio's ASGIApp under uvicorn (bench/peers/socketio_asgi.py),
                   from the same venv
    raw            bench/raw_aiohttp.py: aiohttp writing one pre-encoded frame to every socket

Both ASGI modes run under the same uvicorn command (`uvicorn_command`): the version uv.lock
pins (the socketio venv pins the same uvicorn, websockets, h11 and uvloop), uvloop, h11,
uvicorn's default WebSocket implementation (websockets' sans-I/O protocol), permessage-deflate
off, one worker.

The peers are installed outside the package (nothing in pyproject.toml) and only when their
pinned inputs change: a stamp file holds a hash of them. Every server is pinned to the server
core with taskset; Soketi is single-threaded JavaScript (its few helper threads are pinned too).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loadclient import APP_ID, APP_KEY, APP_SECRET
from procs import BENCH, CACHE, PYTHON, ROOT, SERVER_CORE, free_port, log

PEERS = BENCH / "peers"
SOKETI_DIR = CACHE / "soketi"
VENV = CACHE / "venv"
SOKETI_INPUTS = [PEERS / "soketi" / "package.json", PEERS / "soketi" / "package-lock.json"]
SOCKETIO_REQUIREMENTS = PEERS / "socketio-requirements.txt"


@dataclass(frozen=True)
class Server:
    name: str
    label: str  # column header in the table and legend in the plots
    protocol: str  # the load client's -P
    python: bool  # py-spy can profile it


SERVERS = {
    "tidings": Server("tidings", "Tidings", "pusher", True),
    "soketi": Server("soketi", "Soketi 1.6.1", "pusher", False),
    "tidings-asgi": Server("tidings-asgi", "Tidings-ASGI", "pusher", True),
    # The same server with history kept on the bench channel (issue 16: at most 1.3x the cost)
    "tidings-history": Server("tidings-history", "Tidings, history on", "pusher", True),
    # The same server reading WebSockets with aiohttp's reader (the engine before issue 17)
    "tidings-aiohttp-ws": Server(
        "tidings-aiohttp-ws", "Tidings, aiohttp WS reader", "pusher", True
    ),
    # The same server with the pure-Python frame reader instead of the C one (issue 17)
    "tidings-py-reader": Server(
        "tidings-py-reader", "Tidings, Python frame reader", "pusher", True
    ),
    # The same server with the lean front off: upgrades through aiohttp (connect rate)
    "tidings-no-lean": Server("tidings-no-lean", "Tidings, no lean front", "pusher", True),
    "socketio": Server("socketio", "python-socketio", "socketio", True),
    "socketio-asgi": Server("socketio-asgi", "python-socketio-ASGI", "socketio", True),
    "raw": Server("raw", "raw aiohttp", "pusher", True),
}
# Run only when named in --servers: a variant measured once for a decision, not in every
# `make bench` (docs/benchmarks.md says which run measured it).
ON_REQUEST = {"tidings-py-reader", "tidings-no-lean"}


# ---------------------------------------------------------------- installation


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def _fresh(stamp: Path, digest: str) -> bool:
    return stamp.exists() and stamp.read_text() == digest


def install_soketi() -> None:
    """npm ci in .cache/bench/soketi (the lock file pins every package, uWS included)."""
    stamp = SOKETI_DIR / ".installed"
    digest = _digest(SOKETI_INPUTS)
    if _fresh(stamp, digest):
        return
    if shutil.which("npm") is None:
        raise SystemExit("Soketi needs Node 20 and npm (apt-get install nodejs npm)")
    log(f"installing Soketi 1.6.1 into {SOKETI_DIR.relative_to(ROOT)} (npm ci)")
    SOKETI_DIR.mkdir(parents=True, exist_ok=True)
    for path in SOKETI_INPUTS:
        shutil.copy2(path, SOKETI_DIR / path.name)
    cmd = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run(cmd, cwd=SOKETI_DIR, check=True)
    stamp.write_text(digest)


def install_socketio() -> None:
    """A venv of its own, so python-socketio never lands in Tidings' environment."""
    stamp = VENV / ".installed"
    digest = _digest([SOCKETIO_REQUIREMENTS])
    if _fresh(stamp, digest):
        return
    log(f"installing python-socketio into {VENV.relative_to(ROOT)}")
    subprocess.run([PYTHON, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--require-hashes", "-r", str(SOCKETIO_REQUIREMENTS)], check=True)
    stamp.write_text(digest)


def install(names: list[str]) -> None:
    if "soketi" in names:
        install_soketi()
    if "socketio" in names or "socketio-asgi" in names:
        install_socketio()


def versions() -> dict[str, str]:
    """What is installed, for the JSON."""
    out: dict[str, str] = {}
    node = shutil.which("node")
    if node:
        out["node"] = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    lock = SOKETI_DIR / "node_modules" / "@soketi" / "soketi" / "package.json"
    if lock.exists():
        out["soketi"] = _json_field(lock, "version")
    venv_python = VENV / "bin" / "python"
    if venv_python.exists():
        names = ("python-socketio", "aiohttp", "uvicorn", "websockets")
        out[f"{', '.join(names)} (its venv)"] = _pip_versions(str(venv_python), names)
    out["uvicorn, websockets (Tidings' venv)"] = _pip_versions(PYTHON, ("uvicorn", "websockets"))
    return {k: v.strip() for k, v in out.items()}


def _pip_versions(python: str, names: tuple[str, ...]) -> str:
    code = "import sys; from importlib.metadata import version as v; "
    code += "print(*(v(n) for n in sys.argv[1:]))"
    done = subprocess.run([python, "-c", code, *names], capture_output=True, text=True)
    return done.stdout


def _json_field(path: Path, key: str) -> str:
    import json

    return str(json.loads(path.read_text()).get(key, ""))


# ---------------------------------------------------------------- starting


def tidings_config(
    path: Path, log_level: str, history: bool = False, engine: str = "tidings"
) -> Path:
    """``history``: the bench channel keeps its last 100 events (docs/history.md);
    ``engine``: what reads WebSockets after the handshake (``websocket_engine``)."""
    path.write_text(
        f'log_level = "{log_level}"\n'
        f'websocket_engine = "{engine}"\n'
        "max_connections = 200000\n"
        "\n[[apps]]\n"
        f'id = "{APP_ID}"\nkey = "{APP_KEY}"\nsecret = "{APP_SECRET}"\n'
        "max_connections = 200000\n"
        "max_backend_events_per_second = 1000000\n"
        + ('\n[[apps.history]]\npattern = "bench*"\nsize = 100\nttl = 300\n' if history else "")
    )
    return path


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def soketi_env(port: int) -> dict[str, str]:
    """Soketi's own settings (SOKETI_* variables): the bench app, loopback only, no limit that
    would throttle the bench, no metrics, the local adapter, and its discovery (which always
    runs) on a private UDP port by unicast to 127.0.0.1 instead of broadcasting."""
    env = dict(os.environ)
    env.update(
        {
            "SOKETI_HOST": "127.0.0.1",
            "SOKETI_PORT": str(port),
            "SOKETI_DEFAULT_APP_ID": APP_ID,
            "SOKETI_DEFAULT_APP_KEY": APP_KEY,
            "SOKETI_DEFAULT_APP_SECRET": APP_SECRET,
            "SOKETI_DEFAULT_APP_MAX_CONNS": "-1",
            "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "-1",
            "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": "-1",
            "SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC": "-1",
            "SOKETI_EVENT_MAX_SIZE_IN_KB": "1024",
            "SOKETI_HTTP_ACCEPT_TRAFFIC_MEMORY_THRESHOLD": "100",
            "SOKETI_ADAPTER_DRIVER": "local",
            "SOKETI_RATE_LIMITER_DRIVER": "local",
            "SOKETI_QUEUE_DRIVER": "sync",
            "SOKETI_CACHE_DRIVER": "memory",
            "SOKETI_METRICS_ENABLED": "false",
            "SOKETI_METRICS_HOST": "127.0.0.1",
            "SOKETI_METRICS_SERVER_PORT": str(free_port()),
            "SOKETI_CLUSTER_HOST": "127.0.0.1",
            "SOKETI_CLUSTER_UNICAST_ADDRESSES": "127.0.0.1",
            "SOKETI_CLUSTER_PORT": str(free_port()),
            "SOKETI_DEBUG": "false",
            "SOKETI_SHUTDOWN_GRACE_PERIOD": "1000",
        }
    )
    return env


def uvicorn_command(python: str, app: str, log_level: str) -> list[str]:
    """uvicorn as a user would run it for fan-out: uvloop, one worker, permessage-deflate
    off (with it, every recipient compresses the message again: reference/embedding.md §2).
    h11 and websockets' sans-I/O protocol are what "auto" picks in both venvs (neither has
    httptools); naming them keeps the two ASGI stacks identical if that ever changes.
    Keep-alive 75 s as Tidings' own: uvicorn's 5 s closes a publisher connection that waits
    for a slow broadcast, and a request racing that close fails."""
    cmd = [python, "-m", "uvicorn", app, "--app-dir", str(PEERS), "--workers", "1"]
    cmd += ["--loop", "uvloop", "--http", "h11", "--ws", "websockets-sansio"]
    cmd += ["--ws-per-message-deflate", "false", "--backlog", "4096", "--lifespan", "on"]
    cmd += ["--timeout-keep-alive", "75"]
    cmd += ["--timeout-graceful-shutdown", "5", "--no-access-log", "--log-level", log_level]
    return cmd


def command(
    name: str, port: int, workdir: Path, log_level: str
) -> tuple[list[str], dict[str, str]]:
    """The command line (pinned to the server core) and environment of one server."""
    pin = ["taskset", "-c", SERVER_CORE]
    where = ["--host", "127.0.0.1", "--port", str(port)]
    if name == "tidings-asgi":  # the standalone server's settings, from the same file
        env = server_env()
        env["TIDINGS_CONFIG"] = str(tidings_config(workdir / f"tidings-{port}.toml", log_level))
        return [*pin, *uvicorn_command(PYTHON, "tidings_asgi:app", log_level), *where], env
    if name == "socketio-asgi":
        python = str(VENV / "bin" / "python")
        return [*pin, *uvicorn_command(python, "socketio_asgi:app", log_level), *where], dict(
            os.environ
        )
    if name == "raw":
        return [*pin, PYTHON, str(BENCH / "raw_aiohttp.py"), *where], server_env()
    if name == "socketio":
        script = str(PEERS / "socketio_server.py")
        return [*pin, str(VENV / "bin" / "python"), script, *where], dict(os.environ)
    if name == "soketi":
        node = shutil.which("node") or "node"
        script = str(SOKETI_DIR / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js")
        return [*pin, node, script, "start"], soketi_env(port)
    history = name == "tidings-history"
    engine = "aiohttp" if name == "tidings-aiohttp-ws" else "tidings"
    config = tidings_config(workdir / f"tidings-{port}.toml", log_level, history, engine)
    cmd = [*pin, PYTHON, "-m", "tidings", "serve", *where, "--config", str(config)]
    if name == "tidings-no-lean":
        cmd.append("--no-lean-rest")
    env = server_env()
    env["TIDINGS_WS_READER"] = "python" if name == "tidings-py-reader" else "native"
    return cmd, env
