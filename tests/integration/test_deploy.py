"""The deployment recipes run: the Dockerfile and the systemd unit (deploy/tidings.service).

No Docker engine runs on these machines, so the Dockerfile is linted with hadolint and its
install step is run as written, outside Docker, from the same build context (the files
.dockerignore lets in): the environment it makes must start a server that answers the
image's health check and drains on SIGTERM. The unit is checked by `systemd-analyze verify`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from server_process import TIMEOUT, free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "deploy" / "tidings.service"
UV = ROOT / ".cache" / "uv" / "bin" / "uv"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_of(args: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(args))


def test_dockerfile_lints_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_as_a_user_drains_and_checks_ready() -> None:
    steps = instructions()
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].isdigit() and int(users[-1]) > 0, users
    assert ("STOPSIGNAL", "SIGTERM") in final
    [health] = [args for word, args in final if word == "HEALTHCHECK"]
    assert "/ready" in health
    [entry] = [args for word, args in final if word == "ENTRYPOINT"]
    assert entry == '["tidings", "serve"]'


def test_the_images_install_step_makes_a_server_that_serves_and_drains(tmp_path: Path) -> None:
    assert UV.exists(), "uv is missing: run make install"
    steps = instructions()
    # The build context: what .dockerignore lets in.
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(
        ROOT / "src", context / "src", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    # The build stage's environment and its `uv sync`, as written.
    build_env = {}
    for word, args in steps:
        if word == "ENV" and "UV_PROJECT_ENVIRONMENT" in args:
            build_env = env_of(args)
    [sync] = [args for word, args in steps if word == "RUN" and args.startswith("uv sync")]
    venv = tmp_path / "opt-tidings"
    env = {**os.environ, **build_env, "UV_PROJECT_ENVIRONMENT": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [str(UV), *shlex.split(sync)[1:]], cwd=context, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # Runtime only: none of the dev tools.
    for tool in ("pytest", "mypy", "ruff", "playwright"):
        assert not (venv / "bin" / tool).exists(), tool
    # The final stage's environment, on a free port; then the image's health check.
    run_env = {}
    for word, args in steps:
        if word == "ENV" and "TIDINGS_PORT" in args:
            run_env = env_of(args.replace("$PATH", os.environ["PATH"]))
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    run_env.update(
        TIDINGS_HOST="127.0.0.1",
        TIDINGS_PORT=str(port),
        TIDINGS_WEBHOOK_QUEUE=str(home / "webhooks.sqlite3"),
        TIDINGS_SHUTDOWN_READY_DELAY="0",
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "tidings"), "serve"],
            cwd=home,
            env={"PATH": os.environ["PATH"], **run_env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 4 * TIMEOUT
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        [health] = [args for word, args in steps if word == "HEALTHCHECK"]
        command = re.search(r"CMD (\[.*\])", health)
        assert command is not None, health
        argv = [
            str(venv / "bin" / "python") if a == "python" else a for a in json.loads(command[1])
        ]
        check = subprocess.run(argv, env={"TIDINGS_PORT": str(port)}, capture_output=True)
        assert check.returncode == 0, check.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=3 * TIMEOUT) == 0, log.read_text()
        assert "stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: run make install"
    tidings = Path(sys.executable).parent / "tidings"
    text = UNIT.read_text().replace("/opt/tidings/bin/tidings", str(tidings))
    unit = tmp_path / "tidings.service"
    unit.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
    )
    # The drain gets its time (shutdown_ready_delay + shutdown_timeout = 12 s by default),
    # and SIGTERM reaches the main process, which forwards it to any --workers.
    assert settings["KillSignal"] == "SIGTERM"
    assert settings["KillMode"] == "mixed"
    assert int(settings["TimeoutStopSec"]) >= 12
