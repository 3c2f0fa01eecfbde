"""server/webhooks.py: a delivery that aiohttp refuses is a logged, retried failure."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from tidings.core.apps import App, AppRegistry
from tidings.core.webhooks import WebhookTarget
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
