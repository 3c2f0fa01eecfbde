"""`tidings serve` (memory, and `--redis`): a clean start prints no Python warning at all.

redis-py 8.2 warns (UserWarning) when the asyncio client is given the synchronous
``redis.retry.Retry``; the broker must use ``redis.asyncio.retry.Retry``. aiohttp warns
(DeprecationWarning) when ``shutdown_timeout`` is given to the site instead of the runner.
Python shows every warning here (``PYTHONWARNINGS=always``), so any other warning on the start
path fails too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest
from pusher_helpers import APP_KEY, SocketOpener

from server_process import ServerProcess

ServerFactory = Callable[..., ServerProcess]


@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_start_prints_no_python_warning(
    broker: str,
    make_server: ServerFactory,
    request: pytest.FixtureRequest,
    open_socket: SocketOpener,
) -> None:
    settings: dict[str, str] = {}
    if broker == "redis":
        redis_server = request.getfixturevalue("redis_server")
        settings = {
            "redis": redis_server.url,
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }
    srv = make_server(env={"PYTHONWARNINGS": "always"}, **settings)
    # Exercise the broker once (a subscription goes through it) before reading the log.
    sock = await open_socket(srv.ws_url, APP_KEY)
    await sock.subscribe("warmup")
    await asyncio.sleep(0.2)
    logs = srv.logs()
    # Python prints a warning as "<file>:<line>: <Category>Warning: <message>".
    assert re.search(r"\w*Warning: ", logs) is None, logs
