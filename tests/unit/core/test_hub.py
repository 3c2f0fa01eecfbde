"""core/hub.py: local subscribers by channel; one frame written to many."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tidings.core.hub import Hub, Subscriber, write_to_many


@dataclass
class FakeSubscriber:
    socket_id: str
    frames: list[bytes] = field(default_factory=list)

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)


def test_write_to_many_writes_the_same_object() -> None:
    a, b = FakeSubscriber("1.1"), FakeSubscriber("2.2")
    frame = b"\x81\x02{}"
    assert write_to_many(frame, {"1.1": a, "2.2": b}, None) == 2
    assert a.frames[0] is frame and b.frames[0] is frame
    assert write_to_many(frame, {"1.1": a, "2.2": b}, "1.1") == 1
    assert len(a.frames) == 1 and len(b.frames) == 2
    assert write_to_many(frame, {}, None) == 0


def test_hub_uses_the_writer_it_is_given() -> None:
    calls: list[tuple[bytes, list[str], str | None]] = []

    def writer(frame: bytes, subscribers: dict[str, FakeSubscriber], exclude: str | None) -> int:
        calls.append((frame, list(subscribers), exclude))
        return 7

    hub = Hub(writer)  # type: ignore[arg-type]
    hub.add("news", FakeSubscriber("1.1"))
    assert hub.deliver("news", b"x", exclude="1.1") == 7
    assert hub.deliver("empty", b"x") == 0
    assert calls == [(b"x", ["1.1"], "1.1")]


def test_add_and_remove_report_first_and_last() -> None:
    hub = Hub()
    a, b = FakeSubscriber("1.1"), FakeSubscriber("2.2")
    assert hub.add("news", a) is True
    assert hub.add("news", b) is False
    assert hub.add("news", a) is False  # idempotent
    assert hub.count("news") == 2
    assert hub.remove("news", "1.1") is False
    assert hub.remove("news", "9.9") is False
    assert hub.remove("news", "2.2") is True
    assert hub.count("news") == 0
    assert list(hub.channels()) == []
    assert hub.remove("news", "2.2") is False


def test_deliver_with_and_without_exclude() -> None:
    hub = Hub()
    a, b, c = FakeSubscriber("1.1"), FakeSubscriber("2.2"), FakeSubscriber("3.3")
    for s in (a, b, c):
        hub.add("news", s)
    hub.add("other", c)
    assert hub.deliver("news", b"one") == 3
    assert hub.deliver("news", b"two", exclude="2.2") == 2
    assert hub.deliver("news", b"three", exclude="9.9") == 3
    assert hub.deliver("empty", b"x") == 0
    assert a.frames == [b"one", b"two", b"three"]
    assert b.frames == [b"one", b"three"]
    assert c.frames == [b"one", b"two", b"three"]


def test_contains_count_subscribers_channels() -> None:
    hub = Hub()
    a, b = FakeSubscriber("1.1"), FakeSubscriber("2.2")
    hub.add("x", a)
    hub.add("y", a)
    hub.add("y", b)
    assert hub.contains("x", "1.1") and not hub.contains("x", "2.2")
    assert not hub.contains("z", "1.1")
    assert (hub.count("x"), hub.count("y"), hub.count("z")) == (1, 2, 0)
    assert [s.socket_id for s in hub.subscribers("y")] == ["1.1", "2.2"]
    assert list(hub.subscribers("z")) == []
    assert sorted(hub.channels()) == ["x", "y"]


def test_subscribers_is_a_snapshot() -> None:
    hub = Hub()
    hub.add("x", FakeSubscriber("1.1"))
    hub.add("x", FakeSubscriber("2.2"))
    seen = []
    for subscriber in hub.subscribers("x"):
        hub.remove("x", subscriber.socket_id)  # removing while iterating is safe
        seen.append(subscriber.socket_id)
    assert seen == ["1.1", "2.2"]


def test_before_change_runs_before_every_add_and_remove() -> None:
    seen: list[tuple[str, int]] = []
    hub = Hub(before_change=lambda: seen.append(("change", hub.count("news"))))
    hub.add("news", FakeSubscriber("1.1"))
    hub.remove("news", "1.1")
    assert seen == [("change", 0), ("change", 1)]  # called before the change is made


def test_write_to_many_goes_on_past_a_raising_subscriber(caplog: pytest.LogCaptureFixture) -> None:
    class Vanished:
        socket_id = "2.2"

        def send(self, frame: bytes) -> None:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    a, c = FakeSubscriber("1.1"), FakeSubscriber("3.3")
    subscribers: dict[str, Subscriber] = {"1.1": a, "2.2": Vanished(), "3.3": c}
    assert write_to_many(b"x", subscribers, None) == 2
    assert a.frames == [b"x"] and c.frames == [b"x"]
    assert caplog.text.count("writing to 2.2 failed") == 1
