"""server/http_session.py: what a session's later requests must show (ClientBinding), its
one receiver at a time (HttpSession.take_receiver) and the receiver's waits (wait,
wait_for_nudge)."""

from __future__ import annotations

import asyncio

import pytest

from tidings.core.apps import App
from tidings.core.hub import Coalescer
from tidings.node import AppCounters
from tidings.protocol.session import Session, SessionPolicy
from tidings.server import http_session
from tidings.server.http_session import ClientBinding, HttpSession

LONG = 3600.0  # a wait that only an event can end (the test's own timeout would fail first)


def test_the_same_origin_is_admitted_from_any_address_when_not_bound_to_one() -> None:
    binding = ClientBinding("https://app.example", None)
    assert binding.admits("https://app.example", "10.0.0.1")
    assert binding.admits("https://app.example", None)


def test_another_or_a_missing_origin_is_not_admitted() -> None:
    binding = ClientBinding("https://app.example", None)
    assert not binding.admits("https://evil.example", "10.0.0.1")
    assert not binding.admits(None, "10.0.0.1")
    assert not ClientBinding(None, None).admits("https://app.example", "10.0.0.1")
    assert ClientBinding(None, None).admits(None, "10.0.0.1")


def test_a_session_bound_to_an_address_admits_only_that_address() -> None:
    binding = ClientBinding("https://app.example", "10.0.0.1")
    assert binding.admits("https://app.example", "10.0.0.1")
    assert not binding.admits("https://app.example", "10.0.0.2")
    assert not binding.admits("https://app.example", None)


# --- the one receiver -----------------------------------------------------------------------


class FakeSink:
    gone = False

    async def write(self, data: bytes) -> None: ...

    async def end(self) -> None: ...


def idle_session() -> HttpSession:
    policy = SessionPolicy(key="k", secret="s", activity_timeout=120.0, pong_timeout=30.0)
    return HttpSession(
        "k/1/abcdefgh",
        Session("1.1", policy, 0.0),
        App(id="1", key="k", secret="s"),
        ClientBinding(None, None),
        1024,
        Coalescer(lambda callback: None),
        AppCounters(),
    )


@pytest.fixture(autouse=True)
def short_takeover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_session, "TAKEOVER_WAIT", 0.5)


async def test_a_free_session_takes_the_first_receiver_at_once() -> None:
    session, first = idle_session(), FakeSink()
    assert await session.take_receiver(first)
    assert session.receiver is first and session.detached_at is None


async def test_a_second_receiver_is_refused_while_the_first_stays() -> None:
    session, first = idle_session(), FakeSink()
    assert await session.take_receiver(first)
    assert not await session.take_receiver(FakeSink())
    assert session.receiver is first


async def test_a_second_receiver_takes_over_from_one_whose_client_went_away() -> None:
    session, first, second = idle_session(), FakeSink(), FakeSink()
    assert await session.take_receiver(first)
    waiting = asyncio.create_task(session.take_receiver(second))
    await asyncio.sleep(0)
    assert not await session.take_receiver(FakeSink())  # only one may wait
    session.release(first, gone=True)
    assert await waiting
    assert session.receiver is second


async def test_a_receiver_that_ends_normally_hands_nothing_to_a_waiting_one() -> None:
    """A poll answered: its client comes straight back; a parked request must not win."""
    session, first, second = idle_session(), FakeSink(), FakeSink()
    assert await session.take_receiver(first)
    waiting = asyncio.create_task(session.take_receiver(second))
    await asyncio.sleep(0)
    session.release(first, gone=False)
    assert not await waiting
    assert session.receiver is None and session.detached_at is not None


def test_releasing_a_sink_that_is_not_attached_changes_nothing() -> None:
    session, first = idle_session(), FakeSink()
    session.receiver = first
    session.release(FakeSink(), gone=True)
    assert session.receiver is first


# --- the receiver's waits ---------------------------------------------------------------------


async def test_a_queued_message_ends_the_receivers_wait() -> None:
    session = idle_session()
    waiting = asyncio.create_task(session.wait(LONG))
    await asyncio.sleep(0)
    session.send(b'{"event":"e"}')
    await asyncio.wait_for(waiting, 5)
    assert session.take() == b'a["{\\"event\\":\\"e\\"}"]\n'


async def test_a_wait_with_something_queued_returns_at_once() -> None:
    session = idle_session()
    session.send(b'{"event":"e"}')
    await asyncio.wait_for(session.wait(LONG), 5)


async def test_a_close_ends_the_receivers_wait() -> None:
    session = idle_session()
    waiting = asyncio.create_task(session.wait(LONG))
    await asyncio.sleep(0)
    session.close(4200, "Please reconnect")
    await asyncio.wait_for(waiting, 5)
    assert session.take() == b'c[4200,"Please reconnect"]\n'


async def test_a_wait_ends_after_its_timeout_with_nothing_to_send() -> None:
    session = idle_session()
    await asyncio.wait_for(session.wait(0.01), 5)
    assert session.take() == b""


async def test_a_second_receiver_wakes_the_attached_one_to_check_its_client() -> None:
    """The attached receiver checks at once whether its client is gone (its stream
    reconnect), and one parked past the client's buffer limit is nudged."""
    session, first = idle_session(), FakeSink()
    assert await session.take_receiver(first)
    waiting = asyncio.create_task(session.wait(LONG))
    nudged = asyncio.create_task(session.wait_for_nudge(LONG))
    await asyncio.sleep(0)
    taking = asyncio.create_task(session.take_receiver(FakeSink()))
    await asyncio.wait_for(asyncio.gather(waiting, nudged), 5)
    session.release(first, gone=True)
    assert await taking


async def test_a_cancelled_wait_leaves_the_session_waitable() -> None:
    session = idle_session()
    waiting = asyncio.create_task(session.wait(LONG))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    session.send(b'{"event":"e"}')  # wakes nobody, and does not fail
    again = asyncio.create_task(session.wait(LONG))
    await asyncio.wait_for(again, 5)
