"""examples/editing: Django users on a document page see who else is on it, live.

Each browser context is one signed-in user (Django's session cookie). Avatars come from the
page's presence channel, ``presence-document-<id>``, joined through the Django auth view of
``tidings.integrations.django``; what a page has not received yet cannot be asserted
absent, so the checks for "still shown once" wait for a later event on the same socket
first (a save, which Tidings delivers after the membership events before it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pusher
import pytest
from playwright.sync_api import Page, expect

from browser_support import screenshot
from server_process import TIMEOUT

pytestmark = pytest.mark.node

WAIT = 4 * TIMEOUT * 1000  # Playwright's timeouts are in milliseconds
PASSWORD = "not-the-default"  # EDITING_PASSWORD: the demo password can be changed
# The demo app's credentials (examples/editing/editing_site/realtime.py), for its REST API.
APP = {"app_id": "1001", "key": "editing-key", "secret": "demo-only-editing-secret"}
NAMES = {"alice": "Alice Archer", "bob": "Bob Brown", "carol": "Carol Chen"}


def sign_in(new_page: Callable[..., Page], site: str, username: str) -> Page:
    """A new browser context, signed in on the login page as ``username``."""
    page = new_page(site + "login/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("signed-in-as")).to_have_text(NAMES[username], timeout=WAIT)
    return page


def open_document(page: Page, site: str, number: int) -> Page:
    page.goto(f"{site}docs/{number}/")
    return page


def expect_editors(page: Page, *initials: str) -> None:
    """The avatars on ``page``, in order (the page's own user first)."""
    expect(page.get_by_test_id("editor")).to_have_text(list(initials), timeout=WAIT)


def subscription_count(site: str, channel: str) -> int:
    host, port = site.removeprefix("http://").rstrip("/").split(":")
    client = pusher.Pusher(**APP, host=host, port=int(port), ssl=False)
    return int(client.channel_info(channel, ["subscription_count"])["subscription_count"])


def wait_for_subscriptions(site: str, channel: str, count: int) -> None:
    """Until Tidings counts ``count`` sockets on ``channel`` (its REST API, as the pusher
    SDK asks it)."""
    deadline = time.monotonic() + 4 * TIMEOUT
    while (found := subscription_count(site, channel)) != count:
        assert time.monotonic() < deadline, f"{channel} has {found} sockets, not {count}"
        time.sleep(0.05)


def test_editors_appear_and_disappear_live(
    example: Callable[..., Any], new_page: Callable[..., Page]
) -> None:
    site = example("editing", EDITING_PASSWORD=PASSWORD).url
    alice = open_document(sign_in(new_page, site, "alice"), site, 1)
    expect_editors(alice, "AA")
    expect(alice.get_by_test_id("editor")).to_have_attribute("title", "Alice Archer (you)")
    expect(alice.get_by_test_id("presence-status")).to_have_text("Only you are here.")

    bob = open_document(sign_in(new_page, site, "bob"), site, 1)
    expect_editors(alice, "AA", "BB")
    expect_editors(bob, "BB", "AA")
    expect(alice.get_by_test_id("presence-status")).to_have_text("You and 1 other are here.")
    screenshot(alice, "examples", "editing-alice-sees-bob")
    screenshot(bob, "examples", "editing-bob-sees-alice")

    # bob in a second tab is still one editor: presence counts users, not sockets. His
    # save from that tab reaches alice after any member event his join could have caused.
    second_tab = open_document(bob.context.new_page(), site, 1)
    expect_editors(second_tab, "BB", "AA")
    second_tab.get_by_test_id("body").fill("Bob was here")
    second_tab.get_by_test_id("save").click()
    expect(alice.get_by_test_id("saved")).to_contain_text("Bob Brown saved", timeout=WAIT)
    expect(alice.get_by_test_id("body")).to_have_value("Bob was here")
    expect_editors(alice, "AA", "BB")
    expect(bob.get_by_test_id("saved")).to_contain_text("you (in another tab) saved")

    # Closing one of his tabs leaves him there.
    second_tab.close()
    wait_for_subscriptions(site, "presence-document-1", 2)
    bob.get_by_test_id("body").fill("Bob is still here")
    bob.get_by_test_id("save").click()
    expect(alice.get_by_test_id("body")).to_have_value("Bob is still here", timeout=WAIT)
    expect_editors(alice, "AA", "BB")

    # bob goes to another document: he leaves this one, and is not shown on it from there.
    open_document(bob, site, 2)
    expect_editors(alice, "AA")
    expect_editors(bob, "BB")
    expect(alice.get_by_test_id("presence-status")).to_have_text("Only you are here.")

    # bob opens this document again, then closes the page.
    back = open_document(bob.context.new_page(), site, 1)
    expect_editors(alice, "AA", "BB")
    back.close()
    expect_editors(alice, "AA")
    screenshot(alice, "examples", "editing-bob-left")


def test_only_signed_in_readers_join(
    example: Callable[..., Any], new_page: Callable[..., Page]
) -> None:
    site = example("editing", EDITING_PASSWORD=PASSWORD).url
    join = {"socket_id": "1.1", "channel_name": "presence-document-1"}

    # Anonymous: without the CSRF token Django refuses before Tidings is asked; with it,
    # the auth view refuses an anonymous user.
    anonymous = new_page(site + "login/")
    assert anonymous.request.post(site + "pusher/auth", form=join).status == 403
    token = next(c["value"] for c in anonymous.context.cookies() if c["name"] == "csrftoken")
    refused = anonymous.request.post(
        site + "pusher/auth", form=join, headers={"X-CSRFToken": token}
    )
    assert (refused.status, refused.json()) == (403, {"error": "not signed in"})

    # "Alice's drafts" (document 3) is alice's alone: the page and its channel.
    bob = sign_in(new_page, site, "bob")
    response = bob.goto(site + "docs/3/")
    assert response is not None and response.status == 403
    expect(bob.get_by_test_id("refused")).to_be_visible()
    open_document(bob, site, 1)
    expect_editors(bob, "BB")
    outcome = bob.evaluate(
        """(name) => new Promise((resolve) => {
            const channel = window.editing.pusher.subscribe(name);
            channel.bind("pusher:subscription_error", (error) => resolve(error.status));
            channel.bind("pusher:subscription_succeeded", () => resolve("joined"));
        })""",
        "presence-document-3",
    )
    assert outcome == 403
    alice = open_document(sign_in(new_page, site, "alice"), site, 3)
    expect_editors(alice, "AA")

    # bob signs out in another tab; when his page joins again (a reconnection), the join
    # is refused and the page says so, and alice no longer sees him.
    open_document(alice, site, 1)
    expect_editors(alice, "AA", "BB")
    other_tab = bob.context.new_page()
    other_tab.goto(site)
    other_tab.get_by_role("button", name="Sign out").click()
    expect(other_tab.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT)
    bob.evaluate("() => { window.editing.pusher.disconnect(); window.editing.pusher.connect(); }")
    refusal = bob.get_by_test_id("refused")
    expect(refusal).to_be_visible(timeout=WAIT)
    expect(refusal).to_contain_text("you are signed out")
    expect(bob.get_by_test_id("editor")).to_have_count(0)
    expect_editors(alice, "AA")
    screenshot(bob, "examples", "editing-refused-after-sign-out")
