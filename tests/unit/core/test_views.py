"""core/views.py: which sockets a presence member event or a roster recheck is for."""

from __future__ import annotations

from tidings.core.presence import MemberEvent
from tidings.core.views import PresenceViews
from tidings.protocol.session import Member

CONNECTED = frozenset({"1.1", "1.2"})
ANN = MemberEvent(True, "ann", {"name": "Ann"})


def test_events_go_to_connected_sockets_whose_view_they_change() -> None:
    views = PresenceViews()
    for socket_id in ("1.1", "1.2", "1.3"):  # 1.3 is closing
        views.open("presence-a", socket_id).snapshot([])
    assert views.offer("presence-a", ANN, CONNECTED) == ["1.1", "1.2"]
    assert views.offer("presence-a", ANN, CONNECTED) == []  # known already
    assert views.offer("presence-b", ANN, CONNECTED) == []


def test_a_view_waiting_for_its_snapshot_holds_events() -> None:
    views = PresenceViews()
    view = views.open("presence-a", "1.1")
    assert views.offer("presence-a", ANN, CONNECTED) == []
    assert views.open("presence-a", "1.1") is view  # joining again keeps the view
    assert view.snapshot([]) == [ANN]


def test_drop_forgets_empty_channels() -> None:
    views = PresenceViews()
    views.open("presence-a", "1.1")
    views.open("presence-a", "1.2")
    views.drop("presence-a", "1.1")
    assert views.channels() == ["presence-a"]
    views.drop("presence-a", "1.2")
    views.drop("presence-a", "1.2")  # twice is harmless
    assert views.channels() == []


def test_recheck_brings_each_socket_to_the_roster() -> None:
    views = PresenceViews()
    views.open("presence-a", "1.1").snapshot(["ann"])
    views.open("presence-a", "1.2").snapshot(["ann", "bob"])
    views.begin_recheck("presence-a")
    assert views.recheck("presence-a", [Member("bob", 2)]) == [
        ("1.1", [MemberEvent(False, "ann"), MemberEvent(True, "bob", 2)]),
        ("1.2", [MemberEvent(False, "ann")]),
    ]


def test_an_untrusted_roster_sends_nothing_and_ends_the_recheck() -> None:
    views = PresenceViews()
    views.open("presence-a", "1.1").snapshot(["ann"])
    views.begin_recheck("presence-a")
    assert views.recheck("presence-a", None) == [("1.1", [])]
    # The recheck is over: a later one starts afresh.
    views.begin_recheck("presence-a")
    assert views.recheck("presence-a", []) == [("1.1", [MemberEvent(False, "ann")])]
