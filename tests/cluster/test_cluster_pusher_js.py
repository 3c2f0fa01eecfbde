"""pusher-js 8.6.0 clients spread over three Tidings nodes that share one Redis.

Each test runs one ``node js/cluster_<name>.js`` scenario (see js/cluster_lib.js): the script
gets every node's port in ``TIDINGS_PORTS`` and puts each client on a chosen node; the test
makes its REST calls with the official ``pusher`` SDK pointed at node 1 (``nodes[0]``), so
everything a client on node 2 or 3 sees crossed Redis. The step/result protocol and the
negative-check style (sentinels) are those of tests/e2e/test_pusher_js.py, whose ``Scenario``
runner (tests/e2e/scenario.py) is reused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pusher
import pytest
from scenario import Scenario, rest_client, unique

pytestmark = pytest.mark.node


class Node(Protocol):
    port: int


class Cluster:
    """Three running nodes, a scenario starter and SDK clients for each node."""

    def __init__(self, nodes: list[Node]) -> None:
        self.ports = [node.port for node in nodes]
        self.scenarios: list[Scenario] = []

    def scenario(self, name: str, **env: str) -> Scenario:
        """Start ``node js/<name>.js`` with the ports of every node."""
        run = Scenario(
            name, self.ports[0], {"TIDINGS_PORTS": ",".join(map(str, self.ports)), **env}
        )
        self.scenarios.append(run)
        return run

    def rest(self, node: int = 0) -> pusher.Pusher:
        """The official Python server SDK pointed at node ``node`` (0-based)."""
        return rest_client(self.ports[node])


@pytest.fixture
def cluster(make_cluster: Callable[..., list[Node]]) -> Iterator[Cluster]:
    running = Cluster(make_cluster(3))
    yield running
    for run in running.scenarios:
        run.close()


def test_public_events_reach_every_node_once_in_order_with_exclusion(cluster: Cluster) -> None:
    channel = unique("public-")
    run = cluster.scenario("cluster_public", CHANNEL=channel)
    sockets = run.wait_step("subscribed")["sockets"]
    assert len(set(sockets)) == 3
    rest = cluster.rest(0)
    rest.trigger(channel, "first", {"n": 1, "text": "héllo ✓"})
    rest.trigger(channel, "second", "a plain string")
    rest.trigger(channel, "third", [1, 2, {"three": None}])
    # The excluded socket (B) is on node 2; the trigger goes to node 1.
    rest.trigger(channel, "excluded", {"not": "b"}, socket_id=sockets[1])
    rest.trigger(channel, "sentinel", {})
    run.go()
    result = run.result()

    common = [
        {"event": "first", "data": {"n": 1, "text": "héllo ✓"}},
        {"event": "second", "data": "a plain string"},
        {"event": "third", "data": [1, 2, {"three": None}]},
    ]
    excluded = {"event": "excluded", "data": {"not": "b"}}
    sentinel = {"event": "sentinel", "data": {}}
    a_events, b_events, c_events = result["events"]
    assert a_events == [*common, excluded, sentinel]
    assert b_events == [*common, sentinel]
    assert c_events == [*common, excluded, sentinel]
    # subscription_count is cluster-wide: every client saw 3 (never more).
    assert result["count_properties"] == [3, 3, 3]
    for counts in result["counts"]:
        assert counts[-1] == 3 and max(counts) == 3, result["counts"]


def test_client_events_reach_other_nodes_and_not_the_sender(cluster: Cluster) -> None:
    result = cluster.scenario("cluster_client_events", CHANNEL=unique("private-")).result()

    assert result["triggered"] is True
    typing = {"data": {"text": "héllo ✓"}, "metadata": {}}
    assert result["typing"] == {"a": [], "b": [typing], "c": [typing]}
    assert result["typing_frames_on_a"] == []
    ack = {"data": {"ok": 1}, "metadata": {}}
    assert result["ack"] == {"a": [ack], "b": [], "c": [ack]}
    assert result["ack_frames_on_b"] == []


def test_presence_roster_and_member_events_are_cluster_wide(cluster: Cluster) -> None:
    alice, bob, carol = unique("alice-"), unique("bob-"), unique("carol-")
    result = cluster.scenario(
        "cluster_presence", CHANNEL=unique("presence-"), ALICE=alice, BOB=bob, CAROL=carol
    ).result()
    a: dict[str, Any] = {"id": alice, "info": {"name": "Alice"}}
    b: dict[str, Any] = {"id": bob, "info": {"name": "Bob"}}
    c: dict[str, Any] = {"id": carol, "info": {"name": "Carol"}}

    def by_id(*members: dict[str, Any]) -> list[dict[str, Any]]:
        return sorted(members, key=lambda m: str(m["id"]))

    assert result["a_alone"] == {"count": 1, "me": a, "members": [a]}
    assert result["b1_join"] == {"count": 2, "me": b, "members": by_id(a, b)}
    # BOB's second socket, on node 3: the same roster and no new member anywhere.
    assert result["b2_join"] == {"count": 2, "me": b, "members": by_id(a, b)}
    # CAROL joins on node 3: her roster lists members connected to nodes 1, 2 and 3.
    assert result["c_join"] == {"count": 3, "me": c, "members": by_id(a, b, c)}
    assert result["added_after_c"] == {"a": [bob, carol], "b1": [carol], "b2": [carol], "c": []}
    assert result["counts_after_c"] == {"a": 3, "b1": 3, "b2": 3, "c": 3}

    # The client event from BOB's node-3 socket reached nodes 1, 2 and 3, but not its sender.
    meta = {"user_id": bob}
    assert result["hello"] == [
        {"to": "a", "data": {"from": "b2"}, "metadata": meta},
        {"to": "b1", "data": {"from": "b2"}, "metadata": meta},
        {"to": "c", "data": {"from": "b2"}, "metadata": meta},
    ]
    assert result["hello_frames_on_b2"] == []

    # B2 left but BOB is still on node 2: the only removal before B1 leaves is CAROL's.
    assert result["removed_after_c_left"] == {"a": [carol], "b1": [carol]}
    end = result["a_at_end"]
    assert end["count"] == 1
    assert end["members"] == [a]
    assert end["removed"] == [carol, bob]
    assert end["added"] == [bob, carol]
    assert end["member_removed_frames"] == [{"user_id": carol}, {"user_id": bob}]
    assert end["member_added_frames"] == [
        {"user_id": bob, "user_info": {"name": "Bob"}},
        {"user_id": carol, "user_info": {"name": "Carol"}},
    ]


def test_users_across_nodes_send_to_user_terminate_and_watchlist(cluster: Cluster) -> None:
    user_id, watcher_id = unique("u-"), unique("w-")
    run = cluster.scenario("cluster_users", USER_ID=user_id, WATCHER_ID=watcher_id)
    run.wait_step("signed-in")
    rest = cluster.rest(0)
    rest.send_to_user(user_id, "notify", {"n": 1})
    rest.send_to_user(user_id, "notify-end", {"n": 2})
    run.go()
    run.wait_step("notified")
    assert rest.terminate_user_connections(user_id) == {}
    run.go()
    result = run.result()

    events = [{"event": "notify", "data": {"n": 1}}, {"event": "notify-end", "data": {"n": 2}}]
    assert result["notified"] == {"u1": events, "u2": events, "o": []}

    # Both of the user's sockets (nodes 2 and 3) were closed by a terminate sent to node 1.
    assert [c["code"] for c in result["closes"]["u1"]] == [4009]
    assert [c["code"] for c in result["closes"]["u2"]] == [4009]
    assert [f["code"] for f in result["error_frames"]["u1"]] == [4009]
    assert [f["code"] for f in result["error_frames"]["u2"]] == [4009]
    assert result["states"] == {"u1": "disconnected", "u2": "disconnected"}
    assert result["o_state"] == "connected"
    assert result["o_socket_unchanged"] is True
    assert result["o_closes"] == []

    # The watcher on node 1 heard once that the user (on two other nodes) came and went.
    assert [e for e in result["online_events"] if e["user_ids"]] == [
        {"name": "online", "user_ids": [user_id]}
    ]
    assert result["offline_events"] == [{"name": "offline", "user_ids": [user_id]}]
    assert result["w_state"] == "connected"


def test_rest_info_from_every_node_agrees_with_pusher_js_clients(cluster: Cluster) -> None:
    channel = unique("public-")
    run = cluster.scenario("cluster_public", CHANNEL=channel)
    run.wait_step("subscribed")
    for node in range(3):
        rest = cluster.rest(node)
        assert channel in rest.channels_info()["channels"], node
        info = rest.channel_info(channel, ["subscription_count"])
        assert info == {"occupied": True, "subscription_count": 3}, node
    cluster.rest(2).trigger(channel, "sentinel", {})
    run.go()
    result = run.result()
    assert result["events"] == [[{"event": "sentinel", "data": {}}]] * 3
