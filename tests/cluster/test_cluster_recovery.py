"""Recovery across nodes: a client whose node is killed reconnects to another node and gets
every event it missed, once and in order (docs/recovery.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pusher_helpers import APP_ID, APP_KEY, APP_SECRET, TIMEOUT, SocketOpener, unique
from recovery_helpers import Follower, Publisher, assert_exactly_once_in_order

pytestmark = pytest.mark.timeout(20 * TIMEOUT)

ClusterFactory = Callable[..., list[Any]]

APPS: list[dict[str, Any]] = [
    {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "history": [{"pattern": "hist-*", "size": 500, "ttl": 300}],
    }
]


async def test_kill_9_of_the_clients_node_then_recovery_on_another(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    first, second = make_cluster(2, apps=APPS)
    channel = unique("hist-cluster")
    follower = Follower(open_socket, first.ws_url, channel)
    await follower.subscribe()
    publisher = Publisher(second.http_url, channel, rate=50)  # published on the survivor
    publisher.start()
    try:
        await follower.read_until_offset(10)
        first.kill()  # SIGKILL: the client's connection dies with its node
        await follower.read_for(0.5)  # whatever was in flight, then the close
        follower.ws_url = second.ws_url
        data = await follower.subscribe(recover=True)
        assert data["recovered"] is True, data
        await follower.read_until_offset(follower.offset + 20)  # type: ignore[operator]
    finally:
        sent = await publisher.stop()
    await follower.read_until_offset(sent)
    assert follower.unrecovered == []
    assert_exactly_once_in_order(follower.offsets, 1, sent)
