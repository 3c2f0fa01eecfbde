"""Publications of one loop tick are written together (one write per socket), and every
socket still sees exactly the messages it would have seen one by one, in order.

A REST batch is handled in one tick, so its events reach the fan-out together: these tests
interleave channels and exclusions inside batches and check what each socket got.
"""

from __future__ import annotations

import json
from typing import Any

from pusher_helpers import rest_request, unique

APP_ID = "12345"


def batch(server: Any, events: list[tuple[str, str, int]]) -> None:
    body = {
        "batch": [
            {"channel": channel, "name": name, "data": json.dumps({"n": n})}
            for channel, name, n in events
        ]
    }
    resp = rest_request(server.http_url, "POST", f"/apps/{APP_ID}/batch_events", json_body=body)
    assert resp.status == 200, resp.body


async def test_a_batch_reaches_each_socket_whole_and_in_order(
    server: Any, open_socket: Any
) -> None:
    x, y = unique("x"), unique("y")
    both = await open_socket(server.ws_url)
    only_x = await open_socket(server.ws_url)
    await both.subscribe(x)
    await both.subscribe(y)
    await only_x.subscribe(x)
    events = [(x, "a", 1), (y, "b", 2), (x, "c", 3), (x, "d", 4), (x, "e", 5), (y, "f", 6)]
    for _ in range(3):
        batch(server, events)
    got_both = await both.recv_n(18)
    got_x = await only_x.recv_n(12)
    assert [(m["channel"], m["event"], json.loads(m["data"])["n"]) for m in got_both] == (
        events * 3
    )
    assert [(m["channel"], m["event"]) for m in got_x] == [
        (x, "a"),
        (x, "c"),
        (x, "d"),
        (x, "e"),
    ] * 3


async def test_publications_before_a_subscription_never_reach_it(
    server: Any, open_socket: Any
) -> None:
    """Deliveries wait for the end of the tick, but a subscription flushes them first: what
    was published before it goes to the old subscribers only."""
    channel = unique("burst")
    old = await open_socket(server.ws_url)
    await old.subscribe(channel)
    for n in range(20):
        batch(server, [(channel, "tick", n)])
    new = await open_socket(server.ws_url)
    await new.subscribe(channel)
    batch(server, [(channel, "tick", 100), (channel, "tick", 101)])
    got_old = await old.recv_n(22)
    assert [json.loads(m["data"])["n"] for m in got_old] == [*range(20), 100, 101]
    got_new = await new.recv_n(2)
    assert [json.loads(m["data"])["n"] for m in got_new] == [100, 101]
