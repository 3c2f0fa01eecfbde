"""An app's ``max_connections`` counts its connections on every node (issue 17 item 5).

Nodes exchange their counts through Redis every second (``node.CONNECTION_REPORT_INTERVAL``),
so a node learns of the others' connections within about a second: that is the slack. Each
probe below closes the connection it was given, so the prober's own count stays at zero:
only the other node's connections can make it refuse (a per-node quota never would).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pusher_helpers import PusherSocket, SocketOpener, eventually

ClusterFactory = Callable[..., list[Any]]

QUOTA: dict[str, Any] = {
    "id": "400",
    "key": "quota-key",
    "secret": "quota-secret",
    "max_connections": 3,
}


async def probe(open_socket: SocketOpener, node: Any) -> int | None:
    """Connect to ``node`` and close at once: None if admitted, else the error code."""
    sock = await open_socket(node.ws_url, QUOTA["key"], handshake=False)
    first = await sock.recv(ignore=())
    await sock.close()
    if first["event"] == "pusher:connection_established":
        return None
    assert first["event"] == "pusher:error", first
    return int(first["data"]["code"])


async def hold(open_socket: SocketOpener, node: Any, n: int) -> list[PusherSocket]:
    return [await open_socket(node.ws_url, QUOTA["key"]) for _ in range(n)]


async def test_max_connections_of_an_app_counts_every_node(
    make_cluster: ClusterFactory, open_socket: SocketOpener
) -> None:
    a, b = make_cluster(2, apps=[QUOTA])
    on_a = await hold(open_socket, a, 3)
    assert await probe(open_socket, a) == 4004  # a's own quota, as on one node

    # b holds nothing, yet refuses once it has heard of a's three.
    async def b_refuses() -> bool:
        return await probe(open_socket, b) == 4004

    await eventually(b_refuses)

    # One leaves a: b admits again, and holding that one, a now refuses (2 + 1).
    await on_a[0].close()

    async def b_admits() -> bool:
        return await probe(open_socket, b) is None

    await eventually(b_admits)
    await hold(open_socket, b, 1)

    async def a_refuses() -> bool:
        return await probe(open_socket, a) == 4004

    await eventually(a_refuses)

    # b stops cleanly: it withdraws its count, and a admits its third again.
    b.stop()

    async def a_admits() -> bool:
        return await probe(open_socket, a) is None

    await eventually(a_admits)
