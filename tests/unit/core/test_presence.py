"""core/presence.py: presence members are users, each with one or more sockets."""

from __future__ import annotations

from tidings.core.presence import MemberEvent, PresenceChannel, PresenceView, roster
from tidings.protocol.session import Member


def test_first_socket_joins_last_socket_leaves() -> None:
    channel = PresenceChannel()
    ann = Member("ann", {"name": "Ann"})
    assert channel.join("1.1", ann) is True
    assert channel.join("1.2", ann) is False
    assert channel.join("1.2", ann) is False
    assert len(channel) == 1
    assert channel.leave("1.1", "ann") is False
    assert channel.has_user("ann")
    assert channel.leave("1.2", "ann") is True
    assert not channel.has_user("ann")
    assert len(channel) == 0


def test_leave_unknown_user_or_socket() -> None:
    channel = PresenceChannel()
    channel.join("1.1", Member("ann"))
    assert channel.leave("1.1", "bob") is False
    assert channel.leave("9.9", "ann") is False
    assert channel.has_user("ann")


def test_members_in_join_order_with_first_info() -> None:
    channel = PresenceChannel()
    channel.join("2.2", Member("bob", {"n": 2}))
    channel.join("1.1", Member("ann", {"n": 1}))
    channel.join("3.3", Member("bob", {"n": "other"}))
    assert channel.members() == [Member("bob", {"n": 2}), Member("ann", {"n": 1})]


def test_roster() -> None:
    members = [Member("1", {"name": "A"}), Member("2")]
    assert roster(members) == {
        "presence": {"ids": ["1", "2"], "hash": {"1": {"name": "A"}, "2": None}, "count": 2}
    }
    assert roster([]) == {"presence": {"ids": [], "hash": {}, "count": 0}}


# -- PresenceView: what one socket knows of the members ---------------------------------


def test_view_holds_events_until_the_snapshot_then_replays_only_news() -> None:
    view = PresenceView()
    # u1 joined before the snapshot (it is in the roster); u2 after it; u3 left before it.
    assert view.offer(MemberEvent(True, "u1", {"n": 1})) is False
    assert view.offer(MemberEvent(True, "u2")) is False
    assert view.offer(MemberEvent(False, "u3")) is False
    replay = view.snapshot(["me", "u1"])
    assert replay == [MemberEvent(True, "u2")]
    assert view.known == {"me", "u1", "u2"}


def test_view_passes_each_change_once() -> None:
    view = PresenceView()
    assert view.snapshot(["me"]) == []
    assert view.offer(MemberEvent(True, "u1")) is True
    assert view.offer(MemberEvent(True, "u1")) is False  # the same join seen twice
    assert view.offer(MemberEvent(False, "u1")) is True
    assert view.offer(MemberEvent(False, "u1")) is False
    assert view.offer(MemberEvent(False, "never-joined")) is False


def test_recheck_sends_what_separates_the_view_from_the_cluster_roster() -> None:
    view = PresenceView()
    view.snapshot(["me", "left-during-outage", "stays"])
    view.begin_recheck()
    roster = [Member("me"), Member("stays"), Member("joined-elsewhere", {"n": 1})]
    assert view.recheck(roster) == [
        MemberEvent(False, "left-during-outage"),
        MemberEvent(True, "joined-elsewhere", {"n": 1}),
    ]
    assert view.known == {"me", "stays", "joined-elsewhere"}
    # Done: a second recheck without begin_recheck sends nothing.
    assert view.recheck([Member("me")]) == []


def test_recheck_leaves_users_whose_events_arrived_meanwhile_as_the_event_said() -> None:
    view = PresenceView()
    view.snapshot(["me", "u1"])
    view.begin_recheck()
    # While the roster was read: u1 left and u2 joined (the read may predate either).
    assert view.offer(MemberEvent(False, "u1")) is True
    assert view.offer(MemberEvent(True, "u2")) is True
    assert view.recheck([Member("me"), Member("u1")]) == []
    assert view.known == {"me", "u2"}


def test_recheck_skips_a_view_whose_snapshot_is_pending_or_untrusted() -> None:
    pending = PresenceView()
    pending.begin_recheck()
    pending.snapshot(["me"])  # taken while the roster was read: as fresh as the roster
    assert pending.recheck([Member("me"), Member("other")]) == []
    view = PresenceView()
    view.snapshot(["me", "u1"])
    view.begin_recheck()
    assert view.cancel_recheck() == []  # the roster came from a degraded broker
    assert view.recheck([Member("me")]) == []
    assert view.known == {"me", "u1"}
