"""server/webhooks.py: a delivery that aiohttp refuses is a logged, retried failure; events
and held events are in the queue before their windows close; held events of a dead node are
released, and undone, through the queue."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from tidings.core.apps import App, AppRegistry
from tidings.core.webhooks import Hold, WebhookTarget, hold_id
from tidings.server.webhook_queue import SqliteQueue
from tidings.server.webhooks import QueueLock, WebhookSender, WebhookSettings

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
SECRETS = ("hook-pass-S3CRET", "hook-token-S3CRET", "Bearer header-S3CRET")


async def test_a_request_aiohttp_refuses_is_a_failure_without_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials in the URL and an Authorization header: aiohttp raises ValueError before
    sending. (The configuration refuses this pair; the sender must survive it anyway.)"""
    target = WebhookTarget(
        url="http://user:hook-pass-S3CRET@127.0.0.1:9/hook?token=hook-token-S3CRET",
        headers=(("Authorization", "Bearer header-S3CRET"),),
    )
    app = App(id="1", key="k", secret="s", webhooks=(target,))
    sender = WebhookSender(
        AppRegistry.of([app]),
        SqliteQueue(tmp_path / "queue.sqlite3"),
        WebhookSettings(batch_delay=0),
        QueueLock(None, "t", "node"),
    )
    caplog.set_level(logging.INFO, logger="tidings.webhooks")
    await sender.start()
    try:
        sender.emit(app, {"name": "channel_occupied", "channel": "c"})
        async with asyncio.timeout(TIMEOUT):
            while sender.stats[app.id].retried == 0:
                await asyncio.sleep(0.01)
    finally:
        await sender.close()
    [warning] = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert warning.startswith("webhook http://127.0.0.1:9/hook (app 1) failed: ValueError"), warning
    for secret in SECRETS:
        assert secret not in caplog.text, caplog.text


# --- the durable window: events reach the queue before their batch window closes ------------

HOOK = WebhookTarget(url="http://127.0.0.1:9/hook")  # nothing listens: batches stay queued
HOOKED = App(id="1", key="k", secret="s", webhooks=(HOOK,))
KEY = f"1|{HOOK.url}"


def sender_on(queue: SqliteQueue, **settings: float) -> WebhookSender:
    return WebhookSender(
        AppRegistry.of([HOOKED]),
        queue,
        WebhookSettings(**settings),
        QueueLock(None, "t", "node"),
    )


async def queued(queue: SqliteQueue, count: int) -> list[dict[str, object]]:
    """The events of the queue once it holds ``count`` entries (bounded wait)."""
    async with asyncio.timeout(TIMEOUT):
        while await queue.length(KEY) < count:
            await asyncio.sleep(0.01)
    return [e for _, raw in await queue.peek_many(KEY, 100) for e in json.loads(raw)["events"]]


async def test_an_event_is_in_the_queue_long_before_its_batch_window_closes(
    tmp_path: Path,
) -> None:
    queue = SqliteQueue(tmp_path / "queue.sqlite3")
    sender = sender_on(queue, batch_delay=60.0)
    await sender.start()
    try:
        sender.emit(HOOKED, {"name": "channel_occupied", "channel": "c"})
        sender.defer(HOOKED, ("vacated", "d"), {"name": "channel_vacated", "channel": "d"})
        assert await queued(queue, 1) == [{"name": "channel_occupied", "channel": "c"}]
        async with asyncio.timeout(TIMEOUT):
            while not await queue.overdue(10**15):
                await asyncio.sleep(0.01)
        [(_, app_id, event)] = await queue.overdue(10**15)
        assert (app_id, json.loads(event)) == ("1", {"name": "channel_vacated", "channel": "d"})
    finally:
        await sender.close()


async def test_a_held_event_its_node_never_released_is_released_by_another(
    tmp_path: Path,
) -> None:
    """A node died holding channel_vacated (it is in the queue, overdue): a sender's scan
    queues it, once."""
    queue = SqliteQueue(tmp_path / "queue.sqlite3")
    event = {"name": "channel_vacated", "channel": "gone"}
    await queue.write([Hold(hold_id("1", ("vacated", "gone")), 1_000, "1", orjson.dumps(event))])
    sender = sender_on(queue)
    await sender.start()
    try:
        assert await queued(queue, 1) == [event]
        assert await queue.overdue(10**15) == []
    finally:
        await sender.close()


async def test_an_occupancy_through_this_node_undoes_a_vacancy_another_node_held(
    tmp_path: Path,
) -> None:
    queue = SqliteQueue(tmp_path / "queue.sqlite3")
    vacated = {"name": "channel_vacated", "channel": "c"}
    due = 10**15  # far off: the other node is alive and will release it itself
    await queue.write([Hold(hold_id("1", ("vacated", "c")), due, "1", orjson.dumps(vacated))])
    sender = sender_on(queue)
    await sender.start()
    try:
        sender.occur(HOOKED, ("vacated", "c"), {"name": "channel_occupied", "channel": "c"})
        sender.emit(HOOKED, {"name": "channel_occupied", "channel": "sentinel"})
        assert await queued(queue, 1) == [{"name": "channel_occupied", "channel": "sentinel"}]
        assert await queue.overdue(due + 1) == []  # the other node's release finds nothing
    finally:
        await sender.close()


async def test_a_window_of_more_events_than_the_first_read_goes_in_one_request(
    tmp_path: Path,
) -> None:
    bodies: list[list[dict[str, object]]] = []

    async def receive(request: web.Request) -> web.Response:
        bodies.append(json.loads(await request.read())["events"])
        return web.Response()

    server = web.Application()
    server.router.add_post("/hook", receive)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    target = WebhookTarget(url=f"http://127.0.0.1:{port}/hook")
    app = App(id="1", key="k", secret="s", webhooks=(target,))
    sender = WebhookSender(
        AppRegistry.of([app]),
        SqliteQueue(tmp_path / "queue.sqlite3"),
        WebhookSettings(batch_delay=1.0),
        QueueLock(None, "t", "node"),
    )
    await sender.start()
    try:
        events = [{"name": "channel_occupied", "channel": f"c{i}"} for i in range(300)]
        for event in events:  # one event-loop pass: one write, one window
            sender.emit(app, event)
        async with asyncio.timeout(TIMEOUT):
            while sender.stats[app.id].sent == 0:
                await asyncio.sleep(0.01)
    finally:
        await sender.close()
        await runner.cleanup()
    assert bodies == [events]
