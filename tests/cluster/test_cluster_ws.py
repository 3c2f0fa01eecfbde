"""Several `tidings serve` nodes on one Redis, driven with raw WebSocket clients.

Node i of a cluster is ``nodes[i]``; every REST call says which node it goes to, so each test
shows that something done on one node is seen on the others. Negative checks ("X did not get
it") rely on a sentinel that the server must deliver after the message in question.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any, Protocol

import psutil
import pytest
from pusher_helpers import (
    APP_ID,
    SUBSCRIPTION_COUNT,
    TIMEOUT,
    PusherSocket,
    SocketOpener,
    eventually,
    rest_request,
    unique,
)

from redis_server import RedisServer


class Node(Protocol):
    """What the tests use of tests/conftest.py's ServerProcess."""

    port: int
    proc: subprocess.Popen[bytes] | None

    @property
    def http_url(self) -> str: ...

    @property
    def ws_url(self) -> str: ...

    def logs(self) -> str: ...


ClusterFactory = Callable[..., list[Node]]


# --- REST helpers ----------------------------------------------------------------------


def rest_get(node: Node, path: str, params: dict[str, str] | None = None) -> Any:
    resp = rest_request(node.http_url, "GET", f"/apps/{APP_ID}{path}", params=params)
    assert resp.status == 200, (node.port, path, resp.status, resp.body)
    return resp.json()


def trigger(
    node: Node, channel: str, name: str, data: Any, *, socket_id: str | None = None
) -> None:
    """POST /events to ``node``; ``data`` is JSON-encoded into the string Pusher carries."""
    body: dict[str, Any] = {"name": name, "channel": channel, "data": json.dumps(data)}
    if socket_id is not None:
        body["socket_id"] = socket_id
    resp = rest_request(node.http_url, "POST", f"/apps/{APP_ID}/events", json_body=body)
    assert resp.status == 200, (node.port, resp.status, resp.body)
    assert resp.json() == {}, resp.body


def channel_users(node: Node, channel: str) -> list[str]:
    users = rest_get(node, f"/channels/{channel}/users")["users"]
    return sorted(u["id"] for u in users)


def ready(node: Node) -> tuple[int, dict[str, Any]]:
    """/ready's status and the three fields the contract names (others, e.g. a node id, may
    be there too)."""
    resp = rest_request(node.http_url, "GET", "/ready")
    body = resp.json()
    assert isinstance(body, dict), resp.body
    return resp.status, {k: body.get(k) for k in ("ready", "broker", "degraded")}


def pids_holding(node: Node, status: str) -> set[int]:
    """Pids of the node's process tree with a TCP socket on its port in ``status``."""
    assert node.proc is not None
    root = psutil.Process(node.proc.pid)
    pids: set[int] = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.status == status and c.laddr and c.laddr.port == node.port for c in conns):
            pids.add(proc.pid)
    return pids


# --- WebSocket helpers -----------------------------------------------------------------


def decoded(message: dict[str, Any]) -> Any:
    data = message.get("data")
    assert isinstance(data, str), message
    return json.loads(data)


async def events_until(
    sock: PusherSocket, channel: str, last: str, timeout: float = TIMEOUT
) -> list[tuple[str, Any]]:
    """(event, decoded data) of every message on ``channel`` up to and including ``last``."""
    got: list[tuple[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            message = await sock.recv()
            assert message.get("channel") == channel, message
            got.append((message["event"], decoded(message)))
            if message["event"] == last:
                return got


# --- tests -----------------------------------------------------------------------------


async def test_rest_trigger_on_one_node_reaches_every_node_once_in_order(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    nodes = make_cluster(3)
    channel = unique("public")
    socks = [await open_socket(node.ws_url) for node in nodes]
    for sock in socks:
        await sock.subscribe(channel)

    for n in range(5):
        trigger(nodes[0], channel, "ordered", {"n": n})
    # socket_id exclusion: the excluded socket is on node 3, the trigger goes to node 1.
    trigger(nodes[0], channel, "excluded", {"not": "node3"}, socket_id=socks[2].socket_id)
    trigger(nodes[0], channel, "sentinel", {})

    ordered = [("ordered", {"n": n}) for n in range(5)]
    for i, sock in enumerate(socks):
        expected = ordered + ([] if i == 2 else [("excluded", {"not": "node3"})])
        assert await events_until(sock, channel, "sentinel") == [*expected, ("sentinel", {})], i


async def test_multi_channel_trigger_and_batch_reach_other_nodes(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    nodes = make_cluster(3)
    first, second = unique("public"), unique("public")
    on_node2 = await open_socket(nodes[1].ws_url)
    on_node3 = await open_socket(nodes[2].ws_url)
    await on_node2.subscribe(first)
    await on_node3.subscribe(second)

    body = {"name": "both", "channels": [first, second], "data": json.dumps({"x": 1})}
    resp = rest_request(nodes[0].http_url, "POST", f"/apps/{APP_ID}/events", json_body=body)
    assert resp.status == 200, resp.body
    batch = {
        "batch": [
            {"channel": second, "name": "b1", "data": json.dumps(1)},
            {"channel": first, "name": "b2", "data": json.dumps(2)},
            {"channel": second, "name": "b3", "data": json.dumps(3)},
        ]
    }
    resp = rest_request(nodes[0].http_url, "POST", f"/apps/{APP_ID}/batch_events", json_body=batch)
    assert resp.status == 200, resp.body

    assert await events_until(on_node2, first, "b2") == [("both", {"x": 1}), ("b2", 2)]
    assert await events_until(on_node3, second, "b3") == [("both", {"x": 1}), ("b1", 1), ("b3", 3)]


async def test_client_event_reaches_other_nodes_and_not_the_sender(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    nodes = make_cluster(3)
    channel = unique("private")
    a, b, c = [await open_socket(node.ws_url) for node in nodes]
    for sock in (a, b, c):
        await sock.subscribe_private(channel)

    await a.send_event("client-typing", {"text": "héllo"}, channel=channel)
    for sock in (b, c):
        message = await sock.expect("client-typing", channel)
        assert decoded(message) == {"text": "héllo"}
        assert "user_id" not in message, message
    # B answers; A's next message is B's answer, so A never got its own event back.
    await b.send_event("client-ack", {"ok": 1}, channel=channel)
    assert decoded(await a.expect("client-ack", channel)) == {"ok": 1}
    assert decoded(await c.expect("client-ack", channel)) == {"ok": 1}


async def test_presence_roster_and_member_events_are_cluster_wide(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    nodes = make_cluster(3)
    channel = unique("presence")
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    a = await open_socket(nodes[0].ws_url)
    b1 = await open_socket(nodes[1].ws_url)
    b2 = await open_socket(nodes[2].ws_url)  # a second socket of bob, on another node
    c = await open_socket(nodes[2].ws_url)

    roster = await a.subscribe_presence(channel, alice, {"name": "A"})
    assert roster == {"ids": [alice], "hash": {alice: {"name": "A"}}, "count": 1}

    roster = await b1.subscribe_presence(channel, bob, {"name": "B"})
    assert sorted(roster["ids"]) == sorted([alice, bob])
    assert roster["hash"] == {alice: {"name": "A"}, bob: {"name": "B"}}
    assert roster["count"] == 2
    added = await a.expect("pusher_internal:member_added", channel)
    assert decoded(added) == {"user_id": bob, "user_info": {"name": "B"}}

    roster = await b2.subscribe_presence(channel, bob, {"name": "B"})
    assert sorted(roster["ids"]) == sorted([alice, bob]) and roster["count"] == 2

    roster = await c.subscribe_presence(channel, carol, {"name": "C"})
    assert sorted(roster["ids"]) == sorted([alice, bob, carol])
    assert roster["hash"] == {alice: {"name": "A"}, bob: {"name": "B"}, carol: {"name": "C"}}
    assert roster["count"] == 3
    # Carol's member_added is the next thing everybody gets: bob's second socket (node 3)
    # announced nobody.
    for sock in (a, b1, b2):
        added = await sock.expect("pusher_internal:member_added", channel)
        assert decoded(added) == {"user_id": carol, "user_info": {"name": "C"}}

    for node in nodes:
        assert channel_users(node, channel) == sorted([alice, bob, carol]), node.port

    # Bob's socket on node 3 leaves; bob is still here through node 2: nobody is told.
    await b2.close()
    await asyncio.sleep(TIMEOUT / 10)
    await c.send_event("pusher:unsubscribe", {"channel": channel})
    for sock in (a, b1):
        removed = await sock.expect("pusher_internal:member_removed", channel)
        assert decoded(removed) == {"user_id": carol}
    # Bob's last socket (node 2) leaves: member_removed once.
    await b1.close()
    removed = await a.expect("pusher_internal:member_removed", channel)
    assert decoded(removed) == {"user_id": bob}
    trigger(nodes[1], channel, "sentinel", {})
    assert (await a.expect("sentinel", channel)).get("data") == "{}"

    for node in nodes:
        assert channel_users(node, channel) == [alice], node.port


async def test_send_to_user_terminate_and_watchlist_across_nodes(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    nodes = make_cluster(3)
    user, watcher = unique("u"), unique("w")
    w = await open_socket(nodes[0].ws_url)
    await w.signin({"id": watcher, "watchlist": [user]})
    u1 = await open_socket(nodes[1].ws_url)
    u2 = await open_socket(nodes[2].ws_url)
    other = await open_socket(nodes[2].ws_url)

    await u1.signin({"id": user})
    await u2.signin({"id": user})

    # The watcher (node 1) hears that the user came online (node 2) once.
    async def watch_events(expected: str) -> list[dict[str, Any]]:
        while True:
            message = await w.expect("pusher_internal:watchlist_events")
            events = [e for e in decoded(message)["events"] if e["user_ids"]]
            if events:
                assert [e["name"] for e in events] == [expected], events
                return events

    assert await watch_events("online") == [{"name": "online", "user_ids": [user]}]

    trigger(nodes[0], f"#server-to-user-{user}", "notify", {"n": 1})
    trigger(nodes[0], f"#server-to-user-{user}", "notify-end", {"n": 2})
    for sock in (u1, u2):
        first = await sock.expect("notify")
        second = await sock.expect("notify-end")
        assert (decoded(first), decoded(second)) == ({"n": 1}, {"n": 2})
    await other.ping()  # nothing reached the anonymous socket on node 3

    resp = rest_request(
        nodes[0].http_url, "POST", f"/apps/{APP_ID}/users/{user}/terminate_connections"
    )
    assert resp.status == 200 and resp.json() == {}, resp.body
    for sock in (u1, u2):
        closed = await sock.wait_closed()
        assert closed.code == 4009, closed
        assert [m["data"]["code"] for m in closed.messages if m["event"] == "pusher:error"] == [
            4009
        ], closed.messages
    await other.ping()
    assert await watch_events("offline") == [{"name": "offline", "user_ids": [user]}]
    await w.ping()


async def test_rest_channel_info_agrees_on_every_node(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    nodes = make_cluster(3)
    public = unique("public")
    presence = unique("presence")
    alice, bob = unique("alice"), unique("bob")
    # The public channel has two subscribers, both on node 2; the presence channel has alice on
    # node 1 and bob on nodes 2 and 3.
    p1 = await open_socket(nodes[1].ws_url)
    p2 = await open_socket(nodes[1].ws_url)
    await p1.subscribe(public)
    await p2.subscribe(public)
    a = await open_socket(nodes[0].ws_url)
    b1 = await open_socket(nodes[1].ws_url)
    b2 = await open_socket(nodes[2].ws_url)
    await a.subscribe_presence(channel=presence, user_id=alice)
    await b1.subscribe_presence(channel=presence, user_id=bob)
    await b2.subscribe_presence(channel=presence, user_id=bob)

    def views(node: Node) -> dict[str, Any]:
        channels = rest_get(node, "/channels")["channels"]
        return {
            "channels": sorted(name for name in channels if name in (public, presence)),
            "presence_list": rest_get(
                node, "/channels", {"filter_by_prefix": "presence-", "info": "user_count"}
            )["channels"].get(presence),
            "public": rest_get(node, f"/channels/{public}", {"info": "subscription_count"}),
            "presence": rest_get(node, f"/channels/{presence}", {"info": "user_count"}),
            "users": channel_users(node, presence),
        }

    expected = {
        "channels": sorted([public, presence]),
        "presence_list": {"user_count": 2},
        "public": {"occupied": True, "subscription_count": 2},
        "presence": {"occupied": True, "user_count": 2},
        "users": sorted([alice, bob]),
    }
    for node in nodes:
        assert views(node) == expected, node.port

    # Emptying the channels is seen by every node too.
    for sock in (p1, p2):
        await sock.send_event("pusher:unsubscribe", {"channel": public})
        await sock.ping()
    for sock in (a, b1, b2):
        await sock.send_event("pusher:unsubscribe", {"channel": presence})
        # member_added/member_removed may come before the pong; they are not checked here.
        await sock.send_event("pusher:ping", {})
        while (await sock.recv()).get("event") != "pusher:pong":
            pass
    for node in nodes:
        channels = rest_get(node, "/channels")["channels"]
        assert public not in channels and presence not in channels, (node.port, channels)
        assert rest_get(node, f"/channels/{public}", {"info": "subscription_count"}) == {
            "occupied": False,
            "subscription_count": 0,
        }
        assert channel_users(node, presence) == []


async def test_killed_node_is_removed_by_the_survivors(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    nodes = make_cluster(3)
    presence, public = unique("presence"), unique("public")
    alice, bob, dave = unique("alice"), unique("bob"), unique("dave")
    a = await open_socket(nodes[0].ws_url)
    b = await open_socket(nodes[1].ws_url)
    d = await open_socket(nodes[2].ws_url)
    await a.subscribe(public)
    await d.subscribe(public)
    await a.subscribe_presence(presence, alice)
    await b.subscribe_presence(presence, bob)
    await d.subscribe_presence(presence, dave)
    for sock, others in ((a, (bob, dave)), (b, (dave,))):
        for user in others:
            added = await sock.expect("pusher_internal:member_added", presence)
            assert decoded(added)["user_id"] == user
    for node in nodes:
        assert channel_users(node, presence) == sorted([alice, bob, dave])
        info = rest_get(node, f"/channels/{public}", {"info": "subscription_count"})
        assert info == {"occupied": True, "subscription_count": 2}, node.port

    dead = nodes[2].proc
    assert dead is not None
    dead.kill()  # SIGKILL: no goodbye, only the missing heartbeat tells
    dead.wait(timeout=TIMEOUT)
    killed_at = time.monotonic()

    # node_ttl = 3 s: expect ~3-6 s; allow 6 × TIMEOUT. A (node 1) is on both channels; the
    # subscription_count frames it gets on the public channel are kept for the last check.
    counts: list[int] = []

    async def next_on_a(timeout: float = TIMEOUT) -> dict[str, Any]:
        while True:
            message = await a.recv(timeout=timeout, ignore=())
            if message["event"] != SUBSCRIPTION_COUNT:
                return message
            assert message.get("channel") == public, message
            counts.append(decoded(message)["subscription_count"])

    removed = await next_on_a(timeout=6 * TIMEOUT)
    assert removed["event"] == "pusher_internal:member_removed", removed
    assert removed.get("channel") == presence, removed
    assert decoded(removed) == {"user_id": dave}
    removed = await b.expect("pusher_internal:member_removed", presence, timeout=6 * TIMEOUT)
    assert decoded(removed) == {"user_id": dave}
    assert time.monotonic() - killed_at < 6 * TIMEOUT

    # Exactly once: the next thing after member_removed is a sentinel triggered now.
    trigger(nodes[1], presence, "sentinel", {})
    sentinel = await next_on_a()
    assert (sentinel["event"], sentinel.get("data")) == ("sentinel", "{}"), sentinel
    assert (await b.expect("sentinel", presence)).get("data") == "{}"

    for node in nodes[:2]:
        assert channel_users(node, presence) == sorted([alice, bob]), node.port
        assert rest_get(node, f"/channels/{presence}", {"info": "user_count"}) == {
            "occupied": True,
            "user_count": 2,
        }
        info = rest_get(node, f"/channels/{public}", {"info": "subscription_count"})
        assert info == {"occupied": True, "subscription_count": 1}, node.port

    # The count dropped from 2 to 1, so the survivor subscribed to the public channel is told
    # (contract: subscribers get subscription_count "when the count changes").
    try:
        async with asyncio.timeout(TIMEOUT):
            while not counts or counts[-1] != 1:
                message = await a.recv(timeout=TIMEOUT, ignore=())
                assert message["event"] == SUBSCRIPTION_COUNT, message
                assert message.get("channel") == public, message
                counts.append(decoded(message)["subscription_count"])
    except TimeoutError:
        raise AssertionError(
            f"node 1's subscriber of {public} got subscription_count {counts} after the kill; "
            "expected a last count of 1 (REST already reports 1)"
        ) from None


async def test_workers_share_one_port(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    (node,) = make_cluster(1, workers=2)
    # /ready answers as soon as one worker listens; wait until both do before connecting.
    listening: set[int] = set()

    async def both_workers_listen() -> bool:
        listening.clear()
        listening.update(pids_holding(node, psutil.CONN_LISTEN))
        return len(listening) >= 2

    await eventually(both_workers_listen, timeout=4 * TIMEOUT)
    channel = unique("public")
    socks = [await open_socket(node.ws_url) for _ in range(20)]
    for sock in socks:
        await sock.subscribe(channel)
    # The kernel spread the 20 connections over both worker processes (SO_REUSEPORT).
    holders = pids_holding(node, psutil.CONN_ESTABLISHED)
    assert len(holders) >= 2 and holders <= listening, (holders, listening)

    trigger(node, channel, "hello", {"to": "all"})
    trigger(node, channel, "sentinel", {})
    for i, sock in enumerate(socks):
        assert await events_until(sock, channel, "sentinel") == [
            ("hello", {"to": "all"}),
            ("sentinel", {}),
        ], i

    presence = unique("presence")
    users = [unique(f"user{i}") for i in range(10)]
    members: list[set[str]] = []
    for sock, user in zip(socks[:10], users, strict=True):
        roster = await sock.subscribe_presence(presence, user)
        assert roster["count"] == len(roster["ids"]) == len(members) + 1, roster
        members.append(set(roster["ids"]))
    for i, sock in enumerate(socks[:10]):
        while len(members[i]) < 10:
            added = await sock.expect("pusher_internal:member_added", presence)
            user = decoded(added)["user_id"]
            assert user not in members[i], (
                f"socket {i} got member_added {user}, already in its roster or announced"
            )
            members[i].add(user)
        assert members[i] == set(users)
    assert channel_users(node, presence) == sorted(users)


@pytest.mark.timeout(120)
async def test_redis_outage_degrades_then_recovers(
    make_cluster: ClusterFactory, open_socket: SocketOpener, own_redis: RedisServer
) -> None:
    nodes = make_cluster(2, redis_url=own_redis.url)
    channel = unique("public")
    local = await open_socket(nodes[0].ws_url)
    remote = await open_socket(nodes[1].ws_url)
    await local.subscribe(channel)
    await remote.subscribe(channel)
    for node in nodes:
        assert ready(node) == (200, {"ready": True, "broker": "redis", "degraded": False})
    trigger(nodes[0], channel, "before", {})
    for sock in (local, remote):
        await sock.expect("before", channel)

    own_redis.stop()

    async def both_degraded() -> bool:
        return all(ready(node)[1].get("degraded") is True for node in nodes)

    await eventually(both_degraded, timeout=4 * TIMEOUT)
    for node in nodes:
        assert ready(node) == (200, {"ready": True, "broker": "redis", "degraded": True})
    # Node 1 keeps serving its own clients, but refuses a REST publish it could not pass on
    # to node 2 (503, for the publisher to retry; tests/cluster/test_redis_outage.py).
    await local.ping()
    body = {"name": "during", "channel": channel, "data": "{}"}
    resp = rest_request(nodes[0].http_url, "POST", f"/apps/{APP_ID}/events", json_body=body)
    assert resp.status == 503, (resp.status, resp.body)
    await local.ping()  # and it reached nobody

    own_redis.restart()

    async def none_degraded() -> bool:
        return all(ready(node)[1].get("degraded") is False for node in nodes)

    # Without restarting any node, both reconnect (REST publishes are accepted again) and
    # cross-node delivery comes back.
    await eventually(none_degraded, timeout=6 * TIMEOUT)
    deadline = time.monotonic() + 6 * TIMEOUT
    probe = 0
    while True:
        probe += 1
        trigger(nodes[0], channel, "probe", {"n": probe})
        try:
            message = await remote.recv(timeout=TIMEOUT / 5)
        except TimeoutError:
            assert time.monotonic() < deadline, "cross-node delivery did not resume"
            continue
        assert message.get("event") == "probe", message
        break
    trigger(nodes[0], channel, "after", {"resumed": True})
    after = await events_until(remote, channel, "after")
    assert [e for e in after if e[0] != "probe"] == [("after", {"resumed": True})]
    for node in nodes:
        assert ready(node) == (200, {"ready": True, "broker": "redis", "degraded": False})
