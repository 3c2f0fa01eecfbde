"""core/watchlist.py: who is told a watched user went online or offline, exactly once."""

from __future__ import annotations

from tidings.core.watchlist import Watchlist

EVERYONE = frozenset({"1.1", "1.2", "1.3"})  # connected sockets


def test_sign_in_snapshot_tells_only_the_online_users() -> None:
    watchlist = Watchlist()
    watchlist.watch("1.1", ["ann", "bob", "cat"])
    assert watchlist.told("ann", "1.1") is None  # the snapshot is on its way
    assert watchlist.snapshot("1.1", ["ann", "bob", "cat"], {"bob", "zed"}) == ["bob"]
    assert watchlist.told("bob", "1.1") is True
    assert watchlist.told("ann", "1.1") is False


def test_changes_reach_every_socket_watching() -> None:
    watchlist = Watchlist()
    for socket_id in ("1.1", "1.2"):
        watchlist.watch(socket_id, ["ann"])
        watchlist.snapshot(socket_id, ["ann"], set())
    assert watchlist.announce("ann", True, EVERYONE) == ["1.1", "1.2"]
    assert watchlist.announce("ann", True, EVERYONE) == []  # never twice
    assert watchlist.announce("ann", False, EVERYONE) == ["1.1", "1.2"]
    assert watchlist.announce("bob", True, EVERYONE) == []  # nobody watches bob


def test_offline_only_to_sockets_told_online() -> None:
    watchlist = Watchlist()
    watchlist.watch("1.1", ["ann"])
    watchlist.snapshot("1.1", ["ann"], set())  # told nothing: ann is offline
    assert watchlist.announce("ann", False, EVERYONE) == []


def test_events_during_the_snapshot_win_over_it() -> None:
    watchlist = Watchlist()
    watchlist.watch("1.1", ["ann", "bob", "cat"])
    # While the snapshot is read: ann comes online, bob goes offline (never told online).
    assert watchlist.announce("ann", True, EVERYONE) == ["1.1"]
    assert watchlist.announce("bob", False, EVERYONE) == []
    # The snapshot (older) says ann offline and bob online: both are left as the events said.
    assert watchlist.snapshot("1.1", ["ann", "bob", "cat"], {"bob", "cat"}) == ["cat"]
    assert watchlist.told("ann", "1.1") is True
    assert watchlist.told("bob", "1.1") is False
    # Offline now reaches 1.1 for ann (told online by the event), not bob.
    assert watchlist.announce("ann", False, EVERYONE) == ["1.1"]


def test_a_socket_not_connected_keeps_what_it_was_told() -> None:
    watchlist = Watchlist()
    watchlist.watch("1.1", ["ann"])
    watchlist.snapshot("1.1", ["ann"], set())
    assert watchlist.announce("ann", True, connected={"1.2"}) == []
    assert watchlist.told("ann", "1.1") is False
    assert watchlist.announce("ann", True, EVERYONE) == ["1.1"]


def test_unwatch_forgets_the_socket_and_empty_entries() -> None:
    watchlist = Watchlist()
    watchlist.watch("1.1", ["ann", "bob"])
    watchlist.watch("1.2", ["ann"])
    watchlist.unwatch("1.1", ["ann", "bob"])
    assert watchlist.watched() == {"ann"}
    assert watchlist.announce("ann", True, EVERYONE) == ["1.2"]
    watchlist.unwatch("1.2", ["ann"])
    assert watchlist.watched() == set()
    watchlist.unwatch("1.2", ["ann"])  # twice is harmless


def test_a_snapshot_after_sign_out_tells_nothing() -> None:
    watchlist = Watchlist()
    watchlist.watch("1.1", ["ann"])
    watchlist.unwatch("1.1", ["ann"])  # closed while the snapshot was read
    assert watchlist.snapshot("1.1", ["ann"], {"ann"}) == []
    assert watchlist.watched() == set()


def test_one_user_signed_in_on_several_sockets_each_told_once() -> None:
    watchlist = Watchlist()
    watchlist.watch("1.1", ["ann"])
    watchlist.watch("1.2", ["ann"])
    assert watchlist.snapshot("1.1", ["ann"], {"ann"}) == ["ann"]
    # ann's online event lands before 1.2's snapshot: 1.2 hears it from the event only.
    assert watchlist.announce("ann", True, EVERYONE) == ["1.2"]
    assert watchlist.snapshot("1.2", ["ann"], {"ann"}) == []
