"""examples/chat in Chromium: two people in a room, typing, the clock, rooms, refusals.

Each test starts ``examples/chat/run.py`` (one uvicorn serving the app and Tidings) and
opens pages in browser contexts of their own, so each page has its own nickname cookie.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from browser_support import screenshot
from server_process import TIMEOUT

pytestmark = pytest.mark.node

WAIT = 4 * TIMEOUT * 1000  # ms, for Playwright's waits

Open = Callable[..., Page]  # the new_page fixture
Start = Callable[..., Any]  # the example fixture (its Example lives in conftest)


def join(page: Page, nickname: str) -> Page:
    page.get_by_test_id("nickname-input").fill(nickname)
    page.get_by_test_id("nickname-input").press("Enter")
    expect(page.get_by_test_id("me")).to_have_text(nickname, timeout=WAIT)
    return page


def in_room(*pages: Page, members: list[str]) -> None:
    """Wait until each page lists ``members`` in its room: every page is subscribed."""
    for page in pages:
        expect(page.get_by_test_id("member")).to_have_count(len(members), timeout=WAIT)
        assert sorted(page.get_by_test_id("member").all_inner_texts()) == sorted(members)


def say(page: Page, text: str) -> None:
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("message-input").press("Enter")


def test_a_message_sent_with_enter_shows_in_both_pages(example: Start, new_page: Open) -> None:
    chat = example("chat")
    alice, bob = join(new_page(chat.url), "alice"), join(new_page(chat.url), "bob")
    in_room(alice, bob, members=["alice", "bob"])

    say(alice, "hello bob")
    for page in (alice, bob):
        message = page.get_by_test_id("message")
        expect(message).to_have_count(1, timeout=WAIT)
        expect(message).to_contain_text("alice", timeout=WAIT)
        expect(message).to_contain_text("hello bob", timeout=WAIT)
    expect(alice.get_by_test_id("message-input")).to_have_value("")
    screenshot(alice, "examples", "chat-alice")
    screenshot(bob, "examples", "chat-bob")


def test_typing_shows_in_the_other_page_under_the_real_nickname(
    example: Start, new_page: Open
) -> None:
    chat = example("chat")
    alice, bob = join(new_page(chat.url), "alice"), join(new_page(chat.url), "bob")
    in_room(alice, bob, members=["alice", "bob"])
    bob.evaluate(
        """window.seen = [];
        room.bind("client-typing", (data) => seen.push(data));
        room.bind("client-done", () => { window.done = true; });"""
    )
    alice.get_by_test_id("message-input").press_sequentially("hel")
    expect(bob.get_by_test_id("typing")).to_have_text("alice is typing…", timeout=WAIT)
    expect(alice.get_by_test_id("typing")).to_have_text("")  # Pusher: never echoed to the sender
    screenshot(bob, "examples", "chat-typing")
    # It goes away by itself once alice stops.
    expect(bob.get_by_test_id("typing")).to_have_text("", timeout=WAIT)

    # A page that makes up its own events: a burst, in somebody else's name. The `before`
    # hook lets the first one through as alice and drops the rest of the burst. The sender's
    # client events keep their order, so once `client-done` (no hook) is there, each event
    # of the burst was decided.
    alice.evaluate(
        """for (let i = 0; i < 5; i++) room.trigger("client-typing", {nickname: "mallory"});
        room.trigger("client-done", {});"""
    )
    bob.wait_for_function("window.done === true", timeout=WAIT)
    assert bob.evaluate("seen") == [{"nickname": "alice"}] * 2


def test_the_clock_ticks(example: Start, new_page: Open) -> None:
    page = new_page(example("chat").url)  # no nickname needed: the clock is a public channel
    clock = page.get_by_test_id("clock")
    expect(clock).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"), timeout=WAIT)
    first = clock.inner_text()
    expect(clock).not_to_have_text(first, timeout=WAIT)  # a tick a second


def test_a_message_stays_in_its_room(example: Start, new_page: Open) -> None:
    chat = example("chat")
    alice, bob = join(new_page(chat.url), "alice"), join(new_page(chat.url + "#python"), "bob")
    in_room(alice, members=["alice"])
    in_room(bob, members=["bob"])
    expect(bob.get_by_test_id("room-name")).to_have_text("#python")

    say(alice, "only in the lobby")
    expect(alice.get_by_test_id("message").locator(".text")).to_have_text(
        ["only in the lobby"], timeout=WAIT
    )
    say(bob, "only in python")
    # Published after the lobby's message was delivered: had that one been sent to bob, it
    # would be on his page by now.
    expect(bob.get_by_test_id("message").locator(".text")).to_have_text(
        ["only in python"], timeout=WAIT
    )
    expect(alice.get_by_test_id("message").locator(".text")).to_have_text(["only in the lobby"])

    # Switching rooms: bob joins the lobby, and the room lists both of them.
    bob.get_by_test_id("room").filter(has_text="#lobby").click()
    in_room(alice, bob, members=["alice", "bob"])
    say(bob, "hi alice")
    expect(alice.get_by_test_id("message").locator(".text")).to_have_text(
        ["only in the lobby", "hi alice"], timeout=WAIT
    )


def test_the_app_refuses_bad_messages_and_nicknames(example: Start, new_page: Open) -> None:
    page = new_page(example("chat").url)
    page.get_by_test_id("nickname-input").fill("not a nickname")
    page.get_by_test_id("nickname-input").press("Enter")
    expect(page.get_by_test_id("nickname-error")).to_have_text(
        "a nickname is 1 to 20 letters, digits, - or _", timeout=WAIT
    )
    join(page, "alice")
    in_room(page, members=["alice"])

    for text, status, error in [
        ("   ", 422, "the message is empty"),
        ("x" * 501, 422, "the message is 501 characters long, the limit is 500"),
    ]:
        with page.expect_response("**/messages", timeout=WAIT) as answer:
            say(page, text)
        assert answer.value.status == status
        assert answer.value.json() == {"error": error}
        expect(page.get_by_test_id("message-error")).to_have_text(error, timeout=WAIT)
    screenshot(page, "examples", "chat-refused")

    say(page, "x" * 500)  # the limit itself is fine, and clears the error
    expect(page.get_by_test_id("message")).to_have_count(1, timeout=WAIT)
    expect(page.get_by_test_id("message-error")).to_have_text("")
