"""End-to-end: the real pusher-js 8.6.0 client, run by Node, against a Tidings server.

Each test runs one scenario script, ``node js/<name>.js`` (cwd = this folder, where
``npm ci`` installed pusher-js). The script prints one JSON object per stdout line:
``{"step": ...}`` when it waits for the test (which then makes its REST calls with the official
``pusher`` Python SDK and answers ``go`` on stdin), and finally ``{"result": {...}}`` with its
observations, which the test checks value by value. Negative checks ("B did not get it") rely on
sentinel messages that the server must deliver after the message in question, so they do not
depend on sleeps; see the comment at the top of each script.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pusher
import pytest
from scenario import SOCKET_ID, Scenario, ScenarioFactory, rest_client, unique

pytestmark = pytest.mark.node

COUNT_EVENTS = ("pusher_internal:subscription_count", "pusher:subscription_count")


def without_counts(events: list[str]) -> list[str]:
    """Event names minus the subscription_count ones (DEFAULT_APPS enables that feature)."""
    return [e for e in events if e not in COUNT_EVENTS]


@pytest.fixture
def scenario(server: Any) -> Iterator[ScenarioFactory]:
    """Factory: scenario(name, **env) starts `node js/<name>.js` against the module server."""
    started: list[Scenario] = []

    def start(name: str, **env: str) -> Scenario:
        run = Scenario(name, server.port, env)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


@pytest.fixture
def rest(server: Any) -> pusher.Pusher:
    """The official Python server SDK pointed at the module server."""
    return rest_client(server.port)


def test_connect_reaches_connected_with_a_socket_id(scenario: ScenarioFactory) -> None:
    result = scenario("connect").result()

    # pusher-js moves initialized -> connecting inside its constructor.
    assert result["initial_state"] == "connecting"
    assert result["states"] == [["connecting", "connected"]]
    assert result["state"] == "connected"
    assert SOCKET_ID.match(result["socket_id"]), result["socket_id"]
    assert result["connected_events"] == [result["socket_id"]]
    # min(pusher-js default 120 s, the activity_timeout the server announced: 120 s)
    assert result["activity_timeout_ms"] == 120_000
    assert result["errors"] == []


def test_public_channel_events_in_order_and_none_after_unsubscribe(
    scenario: ScenarioFactory, rest: pusher.Pusher
) -> None:
    channel = unique("public-")
    control = unique("control-")
    run = scenario("public_channel", CHANNEL=channel, CONTROL=control, EXPECTED_EVENTS="3")
    run.wait_step("subscribed")
    rest.trigger(channel, "first", {"n": 1, "text": "héllo ✓"})
    rest.trigger(channel, "second", "a plain string")
    rest.trigger(channel, "third", [1, 2, {"three": None}])
    run.go()
    run.wait_step("unsubscribed")
    rest.trigger(channel, "after-unsubscribe", {"n": 4})
    rest.trigger(control, "sentinel", {})
    run.go()
    result = run.result()

    assert result["events"] == [
        {"event": "first", "data": {"n": 1, "text": "héllo ✓"}},
        {"event": "second", "data": "a plain string"},
        {"event": "third", "data": [1, 2, {"three": None}]},
    ]
    assert result["after_unsubscribe"] == []
    # (The app has subscription_count on; those frames are checked in their own test.)
    assert without_counts(result["frames_on_channel"]) == [
        "pusher_internal:subscription_succeeded",
        "first",
        "second",
        "third",
    ]
    assert result["initial_state"] == "connecting"
    assert result["states"] == [["connecting", "connected"]]


def test_socket_id_excludes_the_sender(scenario: ScenarioFactory, rest: pusher.Pusher) -> None:
    channel = unique("public-")
    run = scenario("socket_exclusion", CHANNEL=channel)
    sockets = run.wait_step("subscribed")
    assert sockets["socket_a"] != sockets["socket_b"]
    rest.trigger(channel, "excluded", {"for": "b"}, socket_id=sockets["socket_a"])
    rest.trigger(channel, "sentinel", {"for": "both"})
    run.go()
    result = run.result()

    assert result["a_events"] == [{"event": "sentinel", "data": {"for": "both"}}]
    assert result["b_events"] == [
        {"event": "excluded", "data": {"for": "b"}},
        {"event": "sentinel", "data": {"for": "both"}},
    ]


def test_private_channel_auth_and_subscription_error(scenario: ScenarioFactory) -> None:
    result = scenario(
        "private_channel",
        PRIVATE_CHANNEL=unique("private-"),
        PUBLIC_CHANNEL=unique("public-"),
    ).result()

    assert result["good_subscribed"] is True
    assert result["bad_succeeded"] is False
    assert len(result["subscription_errors"]) == 1
    error = result["subscription_errors"][0]
    assert error["type"] == "AuthError"
    assert error["status"] == 401
    assert isinstance(error["error"], str) and error["error"]
    assert result["bad_state_after_error"] == "connected"
    assert result["bad_state_at_end"] == "connected"
    assert result["bad_socket_unchanged"] is True
    assert result["bad_closes"] == []
    assert result["public_subscribed"] is True


def test_presence_members_are_users_not_sockets(scenario: ScenarioFactory) -> None:
    alice = unique("alice-")
    bob = unique("bob-")
    result = scenario("presence", CHANNEL=unique("presence-"), ALICE=alice, BOB=bob).result()
    a_member = {"id": alice, "info": {"name": "Alice"}}
    b_member = {"id": bob, "info": {"name": "Bob"}}

    assert result["a_alone"] == {"count": 1, "me": a_member, "members": [a_member]}
    assert result["b1_join"] == {"count": 2, "me": b_member, "members": [a_member, b_member]}
    assert result["a_after_b1"] == {"count": 2, "added": [b_member]}
    # B2 is a second socket of the same user: same roster, no new member for anyone.
    assert result["b2_join"] == {"count": 2, "me": b_member, "members": [a_member, b_member]}
    assert result["a_after_b2"] == {
        "count": 2,
        "added": [b_member],
        "member_added_frames": [{"user_id": bob, "user_info": {"name": "Bob"}}],
    }
    assert result["b1_added_frames_after_b2"] == []
    # The client event from B2 reached A and B1 (B2's other socket), with B2's user id.
    assert result["hello"] == [
        {"to": "a", "data": {"from": "b2"}, "metadata": {"user_id": bob}},
        {"to": "b1", "data": {"from": "b2"}, "metadata": {"user_id": bob}},
    ]
    # B2 left but BOB is still here through B1.
    assert result["a_after_b2_left"] == {"count": 2, "removed": [], "member_removed_frames": []}
    # B1 (BOB's last socket) left.
    assert result["a_after_b1_left"] == {"count": 1, "removed": [b_member], "members": [a_member]}
    assert result["a_member_removed_frames"] == [{"user_id": bob}]
    assert result["a_member_added_frames"] == [{"user_id": bob, "user_info": {"name": "Bob"}}]


def test_client_events(scenario: ScenarioFactory) -> None:
    user_a = unique("ua-")
    user_b = unique("ub-")
    result = scenario(
        "client_events",
        PRIVATE_CHANNEL=unique("private-"),
        PRESENCE_CHANNEL=unique("presence-"),
        PUBLIC_CHANNEL=unique("public-"),
        USER_A=user_a,
        USER_B=user_b,
    ).result()

    assert result["trigger_returned"] is True
    private = result["private"]
    assert private["typing_on_b"] == [{"data": {"typing": True, "text": "héllo ✓"}, "metadata": {}}]
    assert private["ack_on_a"] == [{"data": {"ok": 1}, "metadata": {}}]
    # Pusher: client events are not echoed to the sender.
    assert private["typing_frames_on_a"] == []
    assert len(private["typing_frames_on_b"]) == 1
    assert private["typing_frames_on_b"][0]["user_id"] is None

    # On presence channels the event carries the sender's user_id (metadata in pusher-js).
    presence = result["presence"]
    assert presence["hi_on_b"] == [{"data": "just a string", "metadata": {"user_id": user_a}}]
    assert [f["user_id"] for f in presence["hi_frames_on_b"]] == [user_a]

    # Client events on a public channel are refused with pusher:error and delivered to nobody.
    public = result["public"]
    assert len(public["error_frames_on_a"]) == 1
    error = public["error_frames_on_a"][0]
    assert error["event"] == "pusher:error"
    assert error["data"]["code"] is None
    assert isinstance(error["data"]["message"], str) and error["data"]["message"]
    assert public["connection_errors_on_a"] == [{"type": "PusherError", "data": error["data"]}]
    assert public["client_x_on_b"] == []
    assert public["client_x_on_a"] == []
    assert public["sentinel_on_b"] == [{"last": True}]
    assert public["a_state"] == "connected"
    assert public["a_closes"] == []


def test_cache_channel_replays_last_event_or_reports_a_miss(
    scenario: ScenarioFactory, rest: pusher.Pusher
) -> None:
    cached = unique("cache-")
    empty = unique("cache-")
    rest.trigger(cached, "old", {"v": 0})
    rest.trigger(cached, "price", {"v": 42})
    result = scenario(
        "cache_channel", CACHED_CHANNEL=cached, EMPTY_CHANNEL=empty, EVENT="price"
    ).result()

    # The app has subscription_count on: a count frame may come in between; nothing else may.
    assert without_counts(result["cached_channel_frames"]) == [
        "pusher_internal:subscription_succeeded",
        "price",
    ]
    assert [e for e in result["cached_channel_events"] if e["event"] not in COUNT_EVENTS] == [
        {"event": "pusher:subscription_succeeded", "data": {}},
        {"event": "price", "data": {"v": 42}},
    ]
    assert without_counts(result["empty_channel_frames"]) == [
        "pusher_internal:subscription_succeeded",
        "pusher:cache_miss",
    ]
    assert result["cache_miss_callbacks"] == 1


def test_signin_and_send_to_user(scenario: ScenarioFactory, rest: pusher.Pusher) -> None:
    user_id = unique("u-")
    run = scenario("signin", USER_ID=user_id)
    run.wait_step("signed-in")
    rest.send_to_user(user_id, "notify", {"n": 1})
    rest.send_to_user(user_id, "notify-end", {"n": 2})
    run.go()
    result = run.result()

    user_data = {"id": user_id, "user_info": {"name": "Signed In"}}
    assert result["user_data"] == user_data
    assert len(result["signin_success_frames"]) == 1
    success = result["signin_success_frames"][0]["data"]
    assert json.loads(success["user_data"]) == user_data
    # pusher-js subscribes to its #server-to-user- channel with auth "" after signin.
    assert result["user_channel_frames"][0] == {
        "event": "pusher_internal:subscription_succeeded",
        "data": {},
    }
    # Each event arrives once, even though the socket is both signed in and subscribed.
    assert result["user_events"] == [
        {"event": "notify", "data": {"n": 1}},
        {"event": "notify-end", "data": {"n": 2}},
    ]
    assert result["errors"] == []
    assert result["state"] == "connected"


def test_watchlist_online_and_offline(scenario: ScenarioFactory) -> None:
    user_a = unique("wa-")
    user_b = unique("wb-")
    result = scenario("watchlist", USER_A=user_a, USER_B=user_b).result()

    # Nothing is online when A signs in; an empty "online" list then would be noise, not an error.
    online = [e for e in result["online_events"] if e["user_ids"]]
    assert online == [{"name": "online", "user_ids": [user_b]}]
    assert result["offline_events"] == [{"name": "offline", "user_ids": [user_b]}]
    assert result["a_errors"] == []
    assert result["a_state"] == "connected"


def test_terminate_user_connections(scenario: ScenarioFactory, rest: pusher.Pusher) -> None:
    user_id = unique("tu-")
    run = scenario("terminate", USER_ID=user_id)
    run.wait_step("signed-in")
    assert rest.terminate_user_connections(user_id) == {}
    run.go()
    result = run.result()

    assert [c["code"] for c in result["t_closes"]] == [4009]
    assert [f["code"] for f in result["t_error_frames"]] == [4009]
    # 4009 is in pusher-js's "refused" range: it disconnects and does not reconnect.
    assert result["t_state"] == "disconnected"
    assert result["t_states"][-1] == ["connected", "disconnected"]
    assert result["o_state"] == "connected"
    assert result["o_socket_unchanged"] is True
    assert result["o_closes"] == []


def test_subscription_count(scenario: ScenarioFactory) -> None:
    result = scenario("subscription_count", CHANNEL=unique("public-")).result()

    at_two = result["at_two"]
    assert at_two["c2"] == [{"subscription_count": 2}]
    assert at_two["c1"][-1] == {"subscription_count": 2}
    assert at_two["c1"] in (
        [{"subscription_count": 1}, {"subscription_count": 2}],
        [{"subscription_count": 2}],
    )
    assert at_two["c1_property"] == 2
    assert at_two["c2_property"] == 2
    assert result["c1_after_unsubscribe"] == [{"subscription_count": 1}]
