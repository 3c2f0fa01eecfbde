"""The apps in examples/, started the way a reader starts them, and a browser to use them.

Each test runs ``examples/<name>/run.py`` (what ``make example NAME=<name>`` runs) with
``PORT`` and the other ports it honours set to free ports, waits for its "is ready" line,
and drives the app in Debian's Chromium. At the end the app gets SIGINT (Ctrl-C) and must
stop everything it started and exit 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from browser_support import chromium
from server_process import free_port

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# run.py prints this once every process it started answers.
READY = re.compile(r"is ready: open (http://\S+)")
# Startup can include Django migrations and redis-server: longer than one server's start.
START_TIMEOUT = 6 * TIMEOUT


@dataclass
class Example:
    """A running ``examples/<name>/run.py``: its page URL and everything it printed."""

    name: str
    proc: subprocess.Popen[str]
    url: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        """Ctrl-C, as a reader stops it; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(3 * TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(TIMEOUT)
                pytest.fail(f"{self.name} did not stop on Ctrl-C:\n{self.output}")
        return self.proc.returncode


def _read(example: Example, ready: threading.Event) -> None:
    assert example.proc.stdout is not None
    with example.proc.stdout:  # closed at the end: an open pipe is a ResourceWarning (error)
        for line in example.proc.stdout:
            example.lines.append(line)
            match = READY.search(line)
            if match and not ready.is_set():
                example.url = match.group(1)
                ready.set()
    ready.set()  # the output ended: the process exited


def start_example(name: str, extra_ports: tuple[str, ...] = (), **env: str) -> Example:
    """Start ``examples/<name>/run.py`` on free ports (``PORT`` and each of ``extra_ports``,
    such as ``TIDINGS_PORT``) and wait until it says it is ready."""
    ports = {"PORT": free_port(), **{var: free_port() for var in extra_ports}}
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name / "run.py")],
        cwd=ROOT,
        env={**os.environ, **{k: str(v) for k, v in ports.items()}, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: killed as one if it hangs
    )
    example = Example(name, proc, ports=ports)
    ready = threading.Event()
    threading.Thread(target=_read, args=(example, ready), daemon=True).start()
    if not ready.wait(START_TIMEOUT) or not example.url:
        example.stop()
        pytest.fail(f"{name} never said it was ready:\n{example.output}")
    return example


@pytest.fixture
def example() -> Iterator[Callable[..., Example]]:
    """``example("chat", extra_ports=(...), **env)``: a running example, stopped at the end
    (where it must exit 0 on Ctrl-C)."""
    started: list[Example] = []

    def start(name: str, extra_ports: tuple[str, ...] = (), **env: str) -> Example:
        started.append(start_example(name, extra_ports, **env))
        return started[-1]

    yield start
    for running in started:
        code = running.stop()
        assert code == 0, f"{running.name} exited {code} on Ctrl-C:\n{running.output}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(4 * TIMEOUT) as launched:
        yield launched


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """``new_page(url, websocket=True)``: a page in a context of its own (its own cookies
    and localStorage). ``websocket=False`` deletes ``window.WebSocket`` before any script
    runs, so pusher-js has to use its HTTP fallback."""
    contexts: list[BrowserContext] = []

    def open_page(url: str, websocket: bool = True) -> Page:
        context = browser.new_context()
        contexts.append(context)
        if not websocket:
            context.add_init_script("delete window.WebSocket; delete window.MozWebSocket;")
        page = context.new_page()
        page.set_default_timeout(4 * TIMEOUT * 1000)
        page.goto(url)
        return page

    yield open_page
    for context in contexts:
        context.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 4 * TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
