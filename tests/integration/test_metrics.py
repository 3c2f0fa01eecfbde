"""``GET /metrics``: Prometheus text, labelled by app, from a real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    SocketOpener,
    channel_auth,
    eventually,
    raw_http,
    rest_request,
    scrape,
    sdk_client,
    unique,
    value,
)


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
    client = sdk_client(server.port)
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


# --- errors, closes, bytes, refusals, webhook queue, broker round trips -----------------

WEBHOOK_TOKEN = "hook-token-do-not-show"
HOOK_URL = f"http://hook-user:{WEBHOOK_TOKEN}@127.0.0.1:9/hooks?token={WEBHOOK_TOKEN}"


async def test_metrics_after_errors_closes_bytes_refusals_and_webhooks(
    make_server: Any, open_socket: SocketOpener
) -> None:
    app = {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "max_client_events_per_second": 1,
        "webhooks": [{"url": HOOK_URL, "event_types": ["channel_occupied"]}],
    }
    srv = make_server(apps=[app], max_connection_rate=8, webhook_batch_delay=0.01)
    channel = unique("private-metrics")
    sender = await open_socket(srv.ws_url)
    receiver = await open_socket(srv.ws_url)
    await receiver.subscribe_private(channel)
    _, before = scrape(srv.http_url)

    # Bytes in: exactly what the client sent (UTF-8 bytes, not characters).
    subscribe = json.dumps(
        {
            "event": "pusher:subscribe",
            "data": {"channel": channel, "auth": channel_auth(sender.socket_id, channel)},
        }
    )
    await sender.send_raw(subscribe)
    await sender.expect("pusher_internal:subscription_succeeded", channel)
    ping = json.dumps({"event": "pusher:ping", "data": {"caf\u00e9": "\u00e9"}}, ensure_ascii=False)
    await sender.send_raw(ping)
    await sender.expect("pusher:pong")
    # An error with a code (4301) and one without (a malformed frame).
    for i in range(3):
        await sender.send_event("client-fast", {"i": i}, channel)
    await sender.send_raw("not json")
    while (await sender.recv())["data"]["code"] is not None:
        pass  # the 4301s before it
    # Closes: 1009 (over max_message_bytes) and 4001 (no such app, so no app label).
    big = await open_socket(srv.ws_url)
    await big.send_event("pusher:ping", {"pad": "x" * 40000})
    assert (await big.wait_closed()).code == 1009
    stranger = await open_socket(srv.ws_url, "no-such-key", handshake=False)
    assert (await stranger.wait_closed()).code == 4001
    # REST by status: a bad signature (401) and an unknown app (401 too, so app ids cannot be
    # probed; no made-up app label).
    assert rest_request(srv.http_url, "GET", f"/apps/{APP_ID}/channels", secret="x").status == 401
    assert rest_request(srv.http_url, "GET", "/apps/999999/channels").status == 401

    async def settled() -> bool:
        # A batch waits in the queue, and its first delivery attempt (to a closed port) has
        # failed: the two happen in that order, a moment apart on a busy machine.
        _, found = scrape(srv.http_url)
        url = "http://127.0.0.1:9/hooks"
        return (
            value(found, "tidings_webhook_queue_depth", app=APP_ID, url=url) >= 1
            and value(found, "tidings_webhook_batches_retried_total", app=APP_ID) >= 1
        )

    await eventually(settled)
    text, after = scrape(srv.http_url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tidings_received_bytes_total", app=APP_ID) == len(subscribe) + len(
        ping.encode()
    ) + 3 * len(json.dumps({"event": "client-fast", "data": {"i": 0}, "channel": channel})) + len(
        "not json"
    ), after
    assert grew("tidings_sent_bytes_total", app=APP_ID) > 0
    assert grew("tidings_errors_total", app=APP_ID, code="4301") >= 1
    assert grew("tidings_errors_total", app=APP_ID, code="null") == 1
    assert grew("tidings_closes_total", app=APP_ID, code="1009") == 1
    assert grew("tidings_closes_total", app="", code="4001") == 1
    assert grew("tidings_errors_total", app="", code="4001") == 1
    assert (
        grew(
            "tidings_rest_request_seconds_count",
            app=APP_ID,
            endpoint="/apps/{app_id}/channels",
            status="401",
        )
        == 1
    )
    assert (
        grew(
            "tidings_rest_request_seconds_count",
            app="",
            endpoint="/apps/{app_id}/channels",
            status="401",
        )
        == 1
    )
    # No label made up from the request (a latency value may contain the digits by chance).
    assert 'app="999999"' not in text
    assert value(after, "tidings_webhook_batches_retried_total", app=APP_ID) >= 1
    # The webhook URL is shown without its credentials.
    for secret in (APP_SECRET, WEBHOOK_TOKEN, "hook-user"):
        assert secret not in text

    # Over max_connection_rate (8 a second): 503s, counted by app.
    await asyncio.sleep(1.1)
    opened = await asyncio.gather(
        *(open_socket(srv.ws_url) for _ in range(12)), return_exceptions=True
    )
    refused = [r for r in opened if isinstance(r, Exception)]
    assert refused and all("503" in str(r) for r in refused), refused
    _, final = scrape(srv.http_url)
    assert value(final, "tidings_connection_rate_refusals_total", app=APP_ID) == len(refused)
    assert value(final, "tidings_closes_total", app=APP_ID, code="4200") == 0


async def test_broker_round_trips_with_redis(
    make_server: Any, open_socket: SocketOpener, redis_server: Any, redis_prefix: str
) -> None:
    srv = make_server(redis=redis_server.url, redis_prefix=redis_prefix, node_ttl=1)
    sock = await open_socket(srv.ws_url)
    await sock.subscribe(unique("timed"))

    async def timed() -> bool:
        _, found = scrape(srv.http_url)
        return value(found, "tidings_broker_round_trip_seconds_count") >= 2

    await eventually(timed)
    _, found = scrape(srv.http_url)
    assert value(found, "tidings_broker_round_trip_seconds_bucket", le="+Inf") == value(
        found, "tidings_broker_round_trip_seconds_count"
    )
    assert value(found, "tidings_broker_round_trip_seconds_sum") > 0


async def test_no_broker_round_trips_with_the_memory_broker(server: Any) -> None:
    text, _ = scrape(server.http_url)
    assert "tidings_broker_round_trip_seconds" not in text
