"""Debian's Chromium driven by Playwright, as every browser test here launches it.

Playwright's own browser download (``playwright install``) is never used: the Chromium is
Debian's (``make test`` installs it with apt-get), found on PATH. Either missing fails the
test that needs it; nothing is skipped.
"""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
PUSHER_JS = ROOT / "tests" / "e2e" / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js"

# Chromium as root, on a machine that must not talk to Google's update and sync hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(timeout: float) -> Iterator[Browser]:
    """A headless Chromium for the ``with`` block (Playwright's sync API)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "chromium is not on PATH: install Debian's package "
            "(apt-get install -y --no-install-recommends chromium); "
            "`playwright install` is not used"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=timeout * 1000,
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, folder: str, name: str) -> Path:
    """Keep a screenshot of ``page`` as a test artifact: test-artifacts/<folder>/<name>.png."""
    path = ARTIFACTS / folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


# A page's files by path: (the body, read at each request, and its Content-Type).
Files = Mapping[str, tuple[Callable[[], bytes], str]]


@contextmanager
def page_server(files: Files, name: str = "pages") -> Iterator[str]:
    """``http://127.0.0.1:P`` serving ``files`` (404 for any other path), and answering 200
    to every POST (a webhook receiver that keeps nothing); for the ``with`` block.

    A real local server, not a Playwright route: Chromium's Local Network Access checks
    refuse a routed (so, public) page a WebSocket to 127.0.0.1, and a page on another port
    than Tidings makes every fallback request a real cross-origin one."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            entry = files.get(urlsplit(self.path).path)
            if entry is None:
                self.send_error(404)
                return
            body = entry[0]()
            self.send_response(200)
            self.send_header("Content-Type", entry[1])
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest's output for failures

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def pusher_js() -> bytes:
    """The pusher-js browser bundle tests/e2e's package-lock installs."""
    if not PUSHER_JS.is_file():
        pytest.fail(f"pusher-js is not installed: run `npm ci` in {PUSHER_JS.parents[3]}")
    return PUSHER_JS.read_bytes()
