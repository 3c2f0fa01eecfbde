"""A Flask app that publishes through ``Realtime.client("redis://…")``, served by gunicorn in
tests/e2e/test_frameworks.py.

``TIDINGS_URL`` is the cluster's Redis, ``TIDINGS_TEST_REDIS_PREFIX`` its key prefix. At
import (in gunicorn's master with ``--preload``) it publishes once, so the client's loop
thread runs in the master before the workers are forked: each worker must then make its own.

``POST /publish/<channel>`` publishes ``ping {"pid": <worker pid>}`` and answers the pid.
With ``?hold=KEY`` the view then says so (``LPUSH KEY:held pid``) and waits for ``KEY`` in
Redis before answering: the test keeps this worker busy, so that the next request must go
to another one.
"""

from __future__ import annotations

import os

import redis
from flask import Flask, request

from tidings import Realtime

HOLD_SECONDS = 30

rt = Realtime.client(
    os.environ["TIDINGS_URL"],
    app_id="12345",
    key="app-key",
    secret="app-secret",
    redis_prefix=os.environ["TIDINGS_TEST_REDIS_PREFIX"],
)
rt.trigger("deploys", "started", {"pid": os.getpid()})

app = Flask(__name__)


@app.post("/publish/<channel>")
def publish(channel: str) -> dict[str, int]:
    rt.trigger(channel, "ping", {"pid": os.getpid()})
    hold = request.args.get("hold")
    if hold:
        store = redis.Redis.from_url(os.environ["TIDINGS_URL"])
        store.lpush(f"{hold}:held", os.getpid())
        store.blpop([hold], timeout=HOLD_SECONDS)
        store.close()
    return {"pid": os.getpid()}
