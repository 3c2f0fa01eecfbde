"""examples/counter: a Flask app under gunicorn counts visits in a real redis-server and
publishes each count with ``Realtime.client("redis://…")``; ``tidings serve --redis`` holds
the pages' sockets. Pages in separate browser contexts are separate people."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from browser_support import screenshot
from server_process import TIMEOUT

pytestmark = pytest.mark.node

WAIT_MS = 4 * TIMEOUT * 1000


def visitors(page: Page, count: int) -> None:
    expect(page.get_by_test_id("visitors")).to_have_text(str(count), timeout=WAIT_MS)


def here_now(page: Page, count: int) -> None:
    expect(page.get_by_test_id("here-now")).to_have_text(str(count), timeout=WAIT_MS)


def test_a_visit_and_a_departure_show_live_on_the_other_pages(
    example: Callable[..., Any], new_page: Callable[..., Page]
) -> None:
    counter = example("counter", extra_ports=("TIDINGS_PORT", "REDIS_PORT"))

    first = new_page(counter.url)
    visitors(first, 1)  # a fresh Redis: this is the first visit
    # Page 1 is on both channels once it counts itself here (it subscribes to the visits
    # channel first); from then on every publish reaches it.
    here_now(first, 1)
    second = new_page(counter.url)
    visitors(second, 2)
    here_now(second, 2)
    here_now(first, 2)
    visitors(first, 2)  # page 2's visit, live
    screenshot(first, "examples", "counter-two-pages")

    third = new_page(counter.url)
    visitors(third, 3)  # rendered with the count its own visit made
    visitors(first, 3)  # exactly one more, live
    here_now(first, 3)
    here_now(third, 3)
    screenshot(first, "examples", "counter-three-pages")

    third.context.close()
    here_now(first, 2)
    here_now(second, 2)
    visitors(first, 3)  # leaving is not a visit
    screenshot(first, "examples", "counter-after-one-left")

    # A second tab of page 1's browser shares its cookie: one more visit, not one more person.
    tab = first.context.new_page()
    tab.goto(counter.url)
    visitors(tab, 4)
    visitors(first, 4)
    here_now(tab, 2)
    here_now(first, 2)
