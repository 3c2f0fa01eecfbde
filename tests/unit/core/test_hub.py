"""core/hub.py: local subscribers by channel; one publication written to many."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tidings.core.hub import Hub, Subscriber, write_to_many
from tidings.core.publication import Publication


@dataclass
class FakeSubscriber:
    socket_id: str
    publications: list[Publication] = field(default_factory=list)

    def publish(self, publication: Publication) -> None:
        self.publications.append(publication)

    @property
    def messages(self) -> list[bytes]:
        return [m for publication in self.publications for m in publication.messages]


def p(*messages: bytes) -> Publication:
    return Publication(list(messages))


def test_write_to_many_hands_everyone_the_same_object() -> None:
    a, b = FakeSubscriber("1.1"), FakeSubscriber("2.2")
    publication = p(b"{}")
    assert write_to_many(publication, {"1.1": a, "2.2": b}, None) == 2
    assert a.publications[0] is publication and b.publications[0] is publication
    assert write_to_many(publication, {"1.1": a, "2.2": b}, "1.1") == 1
    assert len(a.publications) == 1 and len(b.publications) == 2
    assert write_to_many(publication, {}, None) == 0


def test_hub_uses_the_writer_it_is_given() -> None:
    calls: list[tuple[Publication, list[str], str | None]] = []

    def writer(
        publication: Publication, subscribers: dict[str, FakeSubscriber], exclude: str | None
    ) -> int:
        calls.append((publication, list(subscribers), exclude))
        return 7

    hub = Hub(writer)  # type: ignore[arg-type]
    hub.add("news", FakeSubscriber("1.1"))
    x = p(b"x")
    assert hub.deliver("news", x, exclude="1.1") == 7
    assert hub.deliver("empty", x) == 0
    assert calls == [(x, ["1.1"], "1.1")]


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
    assert hub.deliver("news", p(b"one")) == 3
    assert hub.deliver("news", p(b"two"), exclude="2.2") == 2
    assert hub.deliver("news", p(b"three"), exclude="9.9") == 3
    assert hub.deliver("empty", p(b"x")) == 0
    assert a.messages == [b"one", b"two", b"three"]
    assert b.messages == [b"one", b"three"]
    assert c.messages == [b"one", b"two", b"three"]


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

        def publish(self, publication: Publication) -> None:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    a, c = FakeSubscriber("1.1"), FakeSubscriber("3.3")
    subscribers: dict[str, Subscriber] = {"1.1": a, "2.2": Vanished(), "3.3": c}
    assert write_to_many(p(b"x"), subscribers, None) == 2
    assert a.messages == [b"x"] and c.messages == [b"x"]
    assert caplog.text.count("writing to 2.2 failed") == 1


def test_positioned_subscribers_get_the_spliced_copy_stock_ones_the_original() -> None:
    hub = Hub()
    stock, opted = FakeSubscriber("1.1"), FakeSubscriber("2.2")
    assert hub.add("news", stock) is True
    assert hub.add("news", opted, positioned=True) is False
    publication = Publication([b'{"event":"x","channel":"news"}'], [7])
    assert hub.deliver("news", publication) == 2
    assert stock.publications[0] is publication  # byte for byte what it got before
    assert opted.messages == [b'{"event":"x","channel":"news","tidings":{"offset":7}}']
    assert hub.deliver("news", publication, exclude="2.2") == 1
    assert len(opted.publications) == 1
    assert hub.count("news") == 2 and hub.is_positioned("news", "2.2")
    assert {s.socket_id for s in hub.subscribers("news")} == {"1.1", "2.2"}


def test_a_socket_moves_between_the_sets_and_the_channel_empties_once() -> None:
    hub = Hub()
    a = FakeSubscriber("1.1")
    assert hub.add("news", a, positioned=True) is True
    assert hub.add("news", a) is False  # replaced, not added twice
    assert hub.count("news") == 1 and not hub.is_positioned("news", "1.1")
    assert list(hub.channels()) == ["news"]
    assert hub.remove("news", "1.1") is True
    assert hub.count("news") == 0 and list(hub.channels()) == []
    hub.add("only-positioned", a, positioned=True)
    assert list(hub.channels()) == ["only-positioned"] and hub.contains("only-positioned", "1.1")
