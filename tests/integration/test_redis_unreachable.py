"""A Redis that cannot be reached is said in the log: at start, while it lasts, and when it
comes back, with the URL's password left out.

The node still starts and serves its own clients (``/ready`` 200, ``"degraded": true``), so
without these lines a wrong ``--redis`` URL looks like a working cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import redis
from pusher_helpers import TIMEOUT

from redis_server import RedisServer, free_port
from server_process import ServerProcess
from tidings.brokers.redis import RedisBroker

ServerFactory = Callable[..., ServerProcess]
PASSWORD = "s3cret-redis-pass"

pytestmark = pytest.mark.timeout(12 * TIMEOUT)


def ready(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.http_url}/ready", timeout=TIMEOUT) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


async def logged(server: ServerProcess, text: str) -> str:
    deadline = time.monotonic() + 3 * TIMEOUT
    while text not in server.logs():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{server.logs()}"
        await asyncio.sleep(0.05)
    return server.logs()


async def test_unreachable_at_start_then_connected(
    make_server: ServerFactory, redis_prefix: str, tmp_path: Any
) -> None:
    port = free_port()  # nothing listens there yet
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    server = await asyncio.to_thread(make_server, redis=url, redis_prefix=redis_prefix)
    shown = f"redis://127.0.0.1:{port}/0"
    text = await logged(server, f"cannot reach Redis at {shown}")
    assert '"level":"error"' in next(ln for ln in text.splitlines() if "cannot reach" in ln)
    assert ready(server)["degraded"] is True
    with RedisServer(tmp_path / "redis", port=port) as late:
        redis.Redis(port=late.port).config_set("requirepass", PASSWORD)
        text = await logged(server, f"redis connected at {shown}")
        assert ready(server)["degraded"] is False
        await asyncio.to_thread(server.stop)
    assert PASSWORD not in server.logs()


async def test_a_lasting_outage_is_repeated_in_the_log(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    broker = RedisBroker(url, prefix=redis_prefix, unreachable_report_interval=TIMEOUT / 10)

    async def ignore(*args: Any) -> None:
        return None

    caplog.set_level(logging.INFO, logger="tidings.redis")
    await broker.start(ignore, ignore)
    try:
        deadline = time.monotonic() + 3 * TIMEOUT
        while "still unreachable" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.05)
    finally:
        await broker.close()
    first = caplog.records[0]
    assert first.levelno == logging.ERROR and "cannot reach Redis" in first.getMessage()
    assert f"redis://127.0.0.1:{port}/0" in caplog.text
    assert PASSWORD not in caplog.text
