"""Debian's Chromium driven by Playwright, as every browser test here launches it.

Playwright's own browser download (``playwright install``) is never used: the Chromium is
Debian's (``make test`` installs it with apt-get), found on PATH. Either missing fails the
test that needs it; nothing is skipped.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

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
