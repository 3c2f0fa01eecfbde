"""``GET /metrics``: Prometheus text, labelled by app, from a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pusher
from prometheus_client.parser import text_string_to_metric_families
from pusher_helpers import SocketOpener, raw_http, unique


def samples(http_url: str) -> dict[tuple[str, str], float]:
    resp = raw_http(http_url, "GET", "/metrics")
    assert resp.status == 200, resp
    assert resp.headers["Content-Type"].startswith("text/plain"), resp.headers
    text = resp.body.decode()
    assert "app-secret" not in text and "disabled-secret" not in text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            app = sample.labels.get("app") or sample.labels.get("status", "")
            found[(sample.name, app)] = found.get((sample.name, app), 0) + sample.value
    return found


async def test_metrics_count_connections_deliveries_and_rest(
    server: Any, open_socket: SocketOpener
) -> None:
    before = samples(server.http_url)
    channel = unique("metrics")
    a = await open_socket(server.ws_url)
    b = await open_socket(server.ws_url)
    await a.subscribe(channel)
    await b.subscribe(channel)
    client = pusher.Pusher(
        app_id="12345",
        key="app-key",
        secret="app-secret",
        host="127.0.0.1",
        port=server.port,
        ssl=False,
    )
    await asyncio.to_thread(client.trigger, channel, "tick", {"n": 1})
    await a.expect("tick")
    await b.expect("tick")
    after = samples(server.http_url)

    def grew(name: str) -> float:
        return after[(name, "12345")] - before.get((name, "12345"), 0)

    assert after[("tidings_connections", "12345")] >= 2
    assert after[("tidings_channels", "12345")] >= 1
    assert grew("tidings_connections_opened_total") == 2
    assert grew("tidings_publications_total") == 1
    assert grew("tidings_deliveries_total") >= 2
    assert grew("tidings_messages_received_total") == 2  # the two subscribes
    assert ("tidings_connections", "23456") in after  # every app is listed, by id
    assert after[("tidings_rest_request_seconds_count", "12345")] >= 1
