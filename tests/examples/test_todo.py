"""examples/todo: a Django model made live with ``@rt.live``, on two members' pages.

Each browser context is one signed-in user (Django's session cookie). A list page draws its
items from ``Tidings.liveCollection`` on ``private-live.todo.list_id.<id>``: the snapshot
Tidings sends on subscribing, then the ``created``/``updated``/``deleted`` events of each
commit. What a page has not received yet cannot be asserted absent, so the checks for "not
sent" wait first for a later event on the same channel (Tidings delivers a channel's events
in order).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from browser_support import screenshot
from server_process import TIMEOUT

pytestmark = pytest.mark.node

WAIT = 4 * TIMEOUT * 1000  # Playwright's timeouts are in milliseconds
PASSWORD = "not-the-default"  # TODO_PASSWORD: the demo password can be changed
NAMES = {"alice": "Alice Archer", "bob": "Bob Brown", "carol": "Carol Chen"}
GROCERIES = [("Oat milk", False), ("Bread", False), ("Coffee beans", False)]  # run.py's list 1
WEEKEND = [("Fix the bike", False)]  # list 2

# Every Pusher message the page's socket receives, kept for the assertions on exclusion.
RECORD = """() => {
    window.received = [];
    window.todo.pusher.connection.bind("message", (message) => window.received.push(message));
}"""


def sign_in(new_page: Callable[..., Page], site: str, username: str) -> Page:
    """A new browser context, signed in on the login page as ``username``."""
    page = new_page(site + "login/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("signed-in-as")).to_have_text(NAMES[username], timeout=WAIT)
    return page


def open_list(page: Page, site: str, number: int) -> Page:
    """``page`` on list ``number``, once its snapshot has arrived (the page is live)."""
    page.goto(f"{site}lists/{number}/")
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live", timeout=WAIT)
    return page


def items(page: Page) -> list[tuple[str, bool]]:
    """The page's items, in order: (title, done)."""
    found: list[list[Any]] = page.get_by_test_id("todo-item").evaluate_all(
        """(items) => items.map((item) => [
            item.querySelector('[data-testid="todo-title"]').value,
            item.querySelector('[data-testid="todo-done"]').checked,
        ])"""
    )
    return [(str(title), bool(done)) for title, done in found]


def expect_items(page: Page, expected: list[tuple[str, bool]]) -> None:
    deadline = time.monotonic() + 4 * TIMEOUT
    while (found := items(page)) != expected:
        assert time.monotonic() < deadline, f"{page.url} shows {found}, not {expected}"
        time.sleep(0.05)


def item(page: Page, title: str) -> Any:
    """The ``todo-item`` whose title is ``title`` (as last received: data-title)."""
    return page.locator(f'[data-testid="todo-item"][data-title="{title}"]')


def events(page: Page, event: str) -> list[Any]:
    """The ``event`` messages the page's socket received since RECORD, as parsed data."""
    found: list[Any] = page.evaluate(
        """(event) => window.received.filter((m) => m.event === event).map((m) => m.data)""",
        event,
    )
    return found


def test_members_see_each_others_changes_live(
    example: Callable[..., Any], new_page: Callable[..., Page]
) -> None:
    site = example("todo", TODO_PASSWORD=PASSWORD).url
    alice = sign_in(new_page, site, "alice")
    expect(alice.get_by_test_id("todo-list")).to_have_count(3)
    alice = open_list(alice, site, 1)
    bob = open_list(sign_in(new_page, site, "bob"), site, 1)
    bob_weekend = open_list(bob.context.new_page(), site, 2)
    expect_items(alice, GROCERIES)
    expect_items(bob, GROCERIES)
    expect_items(bob_weekend, WEEKEND)
    alice.evaluate(RECORD)
    bob.evaluate(RECORD)

    # alice adds an item: it shows on bob's page. Her own page shows it from the view's
    # answer: her socket is left out of the event (X-Socket-ID).
    alice.get_by_test_id("todo-input").fill("Tea")
    alice.get_by_test_id("todo-input").press("Enter")
    expect_items(alice, [*GROCERIES, ("Tea", False)])
    expect_items(bob, [*GROCERIES, ("Tea", False)])
    assert [data["title"] for data in events(bob, "created")] == ["Tea"]
    expect(alice.get_by_test_id("todo-input")).to_have_value("")

    # bob ticks it done: alice's page ticks it too, from an `updated` with what changed.
    item(bob, "Tea").get_by_test_id("todo-done").check()
    expect_items(alice, [*GROCERIES, ("Tea", True)])
    expect_items(bob, [*GROCERIES, ("Tea", True)])
    (updated,) = events(alice, "updated")
    assert set(updated) == {"id", "version", "done"} and updated["done"] is True
    # That event came after any alice's own write could have caused: none came.
    assert events(alice, "created") == []
    screenshot(alice, "examples", "todo-alice-sees-bobs-tick")

    # alice renames an item; bob sees the new title.
    title = item(alice, "Bread").get_by_test_id("todo-title")
    title.fill("Rye bread")
    title.press("Enter")
    renamed = [GROCERIES[0], ("Rye bread", False), GROCERIES[2], ("Tea", True)]
    expect_items(bob, renamed)
    expect_items(alice, renamed)

    # alice moves "Tea" to list 2: it leaves both list-1 pages and appears on bob's
    # list-2 page, done as it was.
    item(alice, "Tea").get_by_test_id("todo-move").select_option(label="Weekend")
    expect_items(alice, renamed[:3])
    expect_items(bob, renamed[:3])
    expect_items(bob_weekend, [*WEEKEND, ("Tea", True)])
    screenshot(bob_weekend, "examples", "todo-moved-to-weekend")

    # bob deletes an item: alice's page loses it.
    bob.bring_to_front()  # his list-2 tab opened last: Chromium slows a hidden tab's clicks
    item(bob, "Oat milk").get_by_test_id("todo-delete").click()
    left = [("Rye bread", False), ("Coffee beans", False)]
    expect_items(alice, left)
    expect_items(bob, left)

    # bob's connection drops while alice adds an item: when pusher-js is back it
    # subscribes again, and the fresh snapshot brings what he missed.
    bob.evaluate("() => window.todo.pusher.disconnect()")
    alice.get_by_test_id("todo-input").fill("Jam")
    alice.get_by_test_id("todo-input").press("Enter")
    left = [*left, ("Jam", False)]
    expect_items(alice, left)
    bob.evaluate("() => window.todo.pusher.connect()")
    expect_items(bob, left)
    expect(bob.get_by_test_id("live-status")).to_have_attribute("data-state", "live")
    assert len(events(bob, "tidings:snapshot")) == 1  # the one after reconnecting
    assert [data["title"] for data in events(bob, "created")] == ["Tea"]  # not "Jam"

    # A reload shows the same lists: the snapshot, fresh from the database.
    expect_items(open_list(alice, site, 1), left)
    expect_items(open_list(bob_weekend, site, 2), [*WEEKEND, ("Tea", True)])
    screenshot(alice, "examples", "todo-after-reload")


def test_only_members_get_a_list(
    example: Callable[..., Any], new_page: Callable[..., Page]
) -> None:
    site = example("todo", TODO_PASSWORD=PASSWORD).url
    carol = sign_in(new_page, site, "carol")
    # Her lists: "Book club" only.
    expect(carol.get_by_test_id("todo-list")).to_have_text(["Book club · alice, carol"])
    # List 1 is alice's and bob's: carol may open the page, which holds no items, but the
    # channel is refused and the page says so.
    carol.goto(site + "lists/1/")
    refusal = carol.get_by_test_id("refused")
    expect(refusal).to_be_visible(timeout=WAIT)
    expect(refusal).to_contain_text("not a member of this list")
    expect(carol.get_by_test_id("todo-item")).to_have_count(0)
    expect(carol.get_by_test_id("todo-input")).to_have_count(0)
    screenshot(carol, "examples", "todo-carol-refused")

    # Asked directly, the auth view refuses her too, and so does each write.
    token = carol.evaluate("""() => document.querySelector('meta[name="csrf-token"]').content""")
    csrf = {"X-CSRFToken": token}
    join = {"socket_id": "1.1", "channel_name": "private-live.todo.list_id.1"}
    assert carol.request.post(site + "pusher/auth", form=join, headers=csrf).status == 403
    add = carol.request.post(site + "lists/1/items", form={"title": "Mine"}, headers=csrf)
    assert (add.status, add.json()) == (403, {"error": "you are not a member of list 1"})
    tick = carol.request.post(site + "items/1/done", form={"done": "true"}, headers=csrf)
    assert tick.status == 403
    # Without the CSRF token Django refuses before any view runs.
    assert carol.request.post(site + "lists/3/items", form={"title": "x"}).status == 403

    # Her own list works, and a bad write is a clear 400.
    open_list(carol, site, 3)
    expect_items(carol, [("Pick the next book", False)])
    empty = carol.request.post(site + "lists/3/items", form={"title": "  "}, headers=csrf)
    assert (empty.status, empty.json()) == (400, {"error": "the title is empty"})
    bad = carol.request.post(site + "items/5/done", form={"done": "yes"}, headers=csrf)
    assert (bad.status, bad.json()) == (400, {"error": "done must be true or false"})
    nowhere = carol.request.post(site + "items/5/move", form={"list": "²"}, headers=csrf)
    assert (nowhere.status, nowhere.json()) == (400, {"error": "no list to move the item to"})
