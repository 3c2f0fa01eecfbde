"""Two nodes on one redis-server of the test's own, which the test pauses or kills.

After Redis comes back (paused with SIGSTOP/SIGCONT, or killed and restarted empty on the
same port), every socket's presence roster must match the cluster's again, whatever
changed while the nodes could not hear each other; and a REST publish that cannot reach
the other nodes is refused with 503, never answered 200 (docs/redis.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pusher
import pytest
from pusher_helpers import (
    APP_ID,
    TIMEOUT,
    PusherSocket,
    SocketOpener,
    assert_error_response,
    eventually,
    rest_request,
    sdk_client,
    unique,
)

from redis_server import RedisServer
from tidings.brokers.redis import RECOVERY_SETTLE

MEMBER_ADDED = "pusher_internal:member_added"
MEMBER_REMOVED = "pusher_internal:member_removed"


def degraded(node: Any) -> bool:
    resp = rest_request(node.http_url, "GET", "/ready")
    assert resp.status == 200, (resp.status, resp.body)
    return bool(resp.json()["degraded"])


async def wait_degraded(nodes: list[Any], state: bool, timeout: float) -> None:
    async def all_there() -> bool:
        return all([await asyncio.to_thread(degraded, node) == state for node in nodes])

    await eventually(all_there, timeout=timeout, interval=0.1)


def trigger(node: Any, channel: str, name: str) -> None:
    body = {"name": name, "channel": channel, "data": "{}"}
    resp = rest_request(node.http_url, "POST", f"/apps/{APP_ID}/events", json_body=body)
    assert resp.status == 200, (node.port, resp.status, resp.body)


def channel_users(node: Any, channel: str) -> list[str]:
    resp = rest_request(node.http_url, "GET", f"/apps/{APP_ID}/channels/{channel}/users")
    assert resp.status == 200, (resp.status, resp.body)
    return sorted(u["id"] for u in resp.json()["users"])


@dataclass
class Roster:
    """What one presence socket was told: its subscription roster, then every member event.

    Each event must change what the socket knows (Pusher: member_added for a user it does
    not know, member_removed for one it does)."""

    name: str
    sock: PusherSocket
    ids: set[str]

    def apply(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event not in (MEMBER_ADDED, MEMBER_REMOVED):
            return
        user = json.loads(message["data"])["user_id"]
        if event == MEMBER_ADDED:
            assert user not in self.ids, f"{self.name}: member_added {user}, known: {self.ids}"
            self.ids.add(user)
        else:
            assert user in self.ids, f"{self.name}: member_removed {user}, known: {self.ids}"
            self.ids.discard(user)

    async def until(self, expected: set[str], timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while self.ids != expected:
                    self.apply(await self.sock.recv(timeout=timeout))
        except TimeoutError:
            raise AssertionError(f"{self.name} knows {self.ids}, expected {expected}") from None

    async def through(self, sentinel: str) -> None:
        """Apply every message up to the ``sentinel`` event."""
        while (message := await self.sock.recv()).get("event") != sentinel:
            self.apply(message)


async def join(sock: PusherSocket, name: str, channel: str, user: str) -> Roster:
    return Roster(name, sock, set((await sock.subscribe_presence(channel, user))["ids"]))


Outage = tuple[Callable[[], None], Callable[[], None]]  # (begin, end)


def outage(kind: str, redis: RedisServer) -> Outage:
    if kind == "pause":  # SIGSTOP: connections stay open, commands hang, then all resume
        assert redis.proc is not None
        pid = redis.proc.pid
        return (lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT))
    return (redis.kill, redis.start)  # killed, then back empty on the same port


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["pause", "restart_empty"])
async def test_presence_rosters_agree_again_after_a_redis_outage(
    make_cluster: Callable[..., list[Any]],
    open_socket: SocketOpener,
    own_redis: RedisServer,
    kind: str,
) -> None:
    node_a, node_b = make_cluster(2, redis_url=own_redis.url)
    channel = unique("presence")
    alice, bob, dave, carol = unique("alice"), unique("bob"), unique("dave"), unique("carol")
    on_a = await join(await open_socket(node_a.ws_url), "alice (A)", channel, alice)
    bob_sock = await open_socket(node_b.ws_url)
    await bob_sock.subscribe_presence(channel, bob)
    on_b = await join(await open_socket(node_b.ws_url), "dave (B)", channel, dave)
    before = {alice, bob, dave}
    for roster in (on_a, on_b):
        await roster.until(before, TIMEOUT)

    begin, end = outage(kind, own_redis)
    begin()
    try:
        # While Redis is away: bob leaves on B, carol joins on A. Each node hears of its
        # own change only, and carol's roster holds only what node A has.
        await bob_sock.close()
        joined = await join(await open_socket(node_a.ws_url), "carol (A)", channel, carol)
        await wait_degraded([node_a, node_b], True, 4 * TIMEOUT)
    finally:
        end()  # SIGCONT at once even if the test failed: never leave Redis stopped
    assert joined.ids <= {alice, carol}, joined.ids

    expected = {alice, carol, dave}
    await wait_degraded([node_a, node_b], False, 6 * TIMEOUT)
    for roster in (on_a, on_b, joined):
        await roster.until(expected, 6 * TIMEOUT)
    # And it stays so once every node has rechecked its rosters: nothing but the sentinel.
    await asyncio.sleep(RECOVERY_SETTLE + 1)
    await asyncio.to_thread(trigger, node_b, channel, "sentinel")
    for roster in (on_a, on_b, joined):
        await roster.through("sentinel")
        assert roster.ids == expected, roster.name
    for node in (node_a, node_b):
        assert await asyncio.to_thread(channel_users, node, channel) == sorted(expected)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["pause", "restart_empty"])
async def test_publishing_while_redis_is_unreachable_is_refused_not_lost(
    make_cluster: Callable[..., list[Any]],
    open_socket: SocketOpener,
    own_redis: RedisServer,
    kind: str,
) -> None:
    node_a, node_b = make_cluster(2, redis_url=own_redis.url)
    channel = unique("private")
    sender, local = await open_socket(node_a.ws_url), await open_socket(node_a.ws_url)
    remote = await open_socket(node_b.ws_url)
    for sock in (sender, local, remote):
        await sock.subscribe_private(channel)
    client = sdk_client(node_a.port)
    await asyncio.to_thread(client.trigger, channel, "before", {})
    for sock in (sender, local, remote):
        await sock.expect("before", channel)

    begin, end = outage(kind, own_redis)
    begin()
    try:
        await wait_degraded([node_a], True, 4 * TIMEOUT)
        # The official SDK raises on the 503: the publisher knows to retry.
        with pytest.raises(pusher.errors.PusherBadStatus, match="^503: ") as raised:
            await asyncio.to_thread(client.trigger, channel, "during", {})
        body = json.loads(str(raised.value).removeprefix("503: "))
        assert "unreachable" in body["error"], body
        resp = await asyncio.to_thread(
            rest_request,
            node_a.http_url,
            "POST",
            f"/apps/{APP_ID}/batch_events",
            json_body={"batch": [{"name": "during", "channel": channel, "data": "{}"}]},
        )
        assert_error_response(resp, 503)
        assert resp.headers.get("Retry-After") == "1", resp.headers

        # A client event reaches this node's subscribers; its sender is told the others
        # missed it (pusher:error without a code: the connection stays open).
        await sender.send_event("client-during", {"n": 1}, channel)
        error = await sender.expect("pusher:error")
        assert error["data"]["code"] is None and "other nodes" in error["data"]["message"]
        # The refused "during" reached nobody, not even this node's subscribers.
        assert json.loads((await local.expect("client-during", channel))["data"]) == {"n": 1}
        await sender.ping()
    finally:
        end()

    await wait_degraded([node_a, node_b], False, 6 * TIMEOUT)
    await asyncio.to_thread(client.trigger, channel, "after", {})
    for sock in (local, remote):
        # Neither "during" (refused) nor the client event (node B could not be reached).
        await sock.expect("after", channel)
