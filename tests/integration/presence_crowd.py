"""A crowd of Pusher clients in a process of its own, for tests that kill it (SIGKILL).

``python presence_crowd.py WS_URL PRESENCE PUBLIC COUNT`` opens COUNT WebSocket connections to
``WS_URL`` (a server's ``ws://host:port``); connection ``i`` signs in as user ``crowd-i``,
joins the presence channel PRESENCE as that user and subscribes to the public channel PUBLIC.
When every connection is in it prints ``ready`` and waits to be killed; on any failure it
prints the error and exits 1. Every wait is bounded by tests/integration/pusher_helpers.TIMEOUT.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pusher_helpers import (  # noqa: E402
    DEFAULT_IGNORE,
    TIMEOUT,
    PusherSocket,
    channel_auth,
    raw_connect,
    ws_app_url,
)

# The crowd's own member events arrive in any order around its subscriptions.
NOISE = DEFAULT_IGNORE | {"pusher_internal:member_added", "pusher_internal:member_removed"}


def user_id(i: int) -> str:
    return f"crowd-{i}"


async def join(base_ws_url: str, presence: str, public: str, i: int) -> PusherSocket:
    sock = PusherSocket(await raw_connect(ws_app_url(base_ws_url)))
    await sock.handshake()
    await sock.signin({"id": user_id(i)})
    member = json.dumps({"user_id": user_id(i)})
    await sock.send_subscribe(presence, channel_auth(sock.socket_id, presence, member), member)
    await sock.expect("pusher_internal:subscription_succeeded", presence, ignore=NOISE)
    await sock.send_subscribe(public)
    await sock.expect("pusher_internal:subscription_succeeded", public, ignore=NOISE)
    return sock


async def main(base_ws_url: str, presence: str, public: str, count: int) -> None:
    async with asyncio.timeout(6 * TIMEOUT):
        sockets = await asyncio.gather(
            *(join(base_ws_url, presence, public, i) for i in range(count))
        )
    assert len(sockets) == count
    print("ready", flush=True)
    # The connections must stay open (and silent) until the test kills this process;
    # the bound only keeps an abandoned child from living forever.
    await asyncio.sleep(60 * TIMEOUT)


if __name__ == "__main__":
    url, presence_channel, public_channel, n = sys.argv[1:5]
    try:
        asyncio.run(main(url, presence_channel, public_channel, int(n)))
    except Exception as exc:
        print(f"failed: {exc!r}", flush=True)
        sys.exit(1)
