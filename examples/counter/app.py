"""The visit counter: a Flask app (WSGI, under gunicorn) that counts visits in Redis and
publishes each new count to every open page through Tidings.

A WSGI worker cannot hold WebSockets, so the sockets live in ``tidings serve --redis``
beside it (``run.py`` starts both). The app publishes straight into that server's Redis
with ``Realtime.client("redis://…")``: no HTTP hop, and every Tidings node sharing the
Redis delivers the event to its own sockets.

Configuration, from the environment (``run.py`` sets it):

- ``REDIS_URL``: the Redis of the Tidings cluster, which also keeps the count;
- ``TIDINGS_PORT``: where the page's pusher-js connects;
- ``PUSHER_APP_ID``, ``PUSHER_APP_KEY``, ``PUSHER_APP_SECRET``: the app Tidings serves.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path

import redis
from flask import Flask, Response, render_template, request, send_from_directory

from tidings import PublishError, Realtime
from tidings.integrations.flask import blueprint

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:8002/0")
TIDINGS_PORT = int(os.environ.get("TIDINGS_PORT", "8001"))
# Demo-only credentials: anyone who reads this file knows the secret. Set your own in the
# environment (run.py passes the same three to `tidings serve`).
APP_ID = os.environ.get("PUSHER_APP_ID", "counter")
APP_KEY = os.environ.get("PUSHER_APP_KEY", "counter-demo-key")
APP_SECRET = os.environ.get("PUSHER_APP_SECRET", "counter-demo-secret")

VISITS = "counter:visits"  # the example's own key, away from Tidings' `tidings…` keys
COUNTER_CHANNEL = "counter"  # public: anyone may listen, only the app publishes
HERE_NOW_CHANNEL = "presence-counter"  # presence: Tidings counts the members for us
VISITOR_COOKIE = "visitor"
VISITOR_ID = re.compile(r"\A[A-Za-z0-9_-]{16,64}\Z")
PUSHER_JS = Path(__file__).resolve().parents[1] / "node_modules" / "pusher-js" / "dist" / "web"

log = logging.getLogger("counter")

# Each gunicorn worker imports this module and gets its own client (and its own Redis
# connections, opened on first use): nothing is shared across the fork.
rt = Realtime.client(REDIS_URL, app_id=APP_ID, key=APP_KEY, secret=APP_SECRET)
store = redis.Redis.from_url(REDIS_URL)


def visitor() -> str | None:
    """The anonymous id of this browser, from its cookie; None (refused with 403) if it has
    none or a malformed one."""
    value = request.cookies.get(VISITOR_COOKIE, "")
    return value if VISITOR_ID.match(value) else None


@rt.presence(HERE_NOW_CHANNEL)
def here_now(user: str) -> dict[str, object]:
    # One member per browser: two tabs share the cookie, so they count as one person
    # (Tidings keeps one member per user_id however many sockets it has).
    return {"user_id": user, "user_info": {}}


app = Flask(__name__)
# POST /pusher/auth (and /pusher/user-auth): pusher-js asks here before it joins the
# presence channel. Same origin as the page, so the browser sends the visitor cookie.
app.register_blueprint(blueprint(rt, user=visitor))


@app.get("/")
def index() -> Response:
    # INCR is atomic: two workers counting at once get two different numbers.
    count = int(store.incr(VISITS))
    try:
        rt.trigger(COUNTER_CHANNEL, "visits", {"count": count})
    except PublishError as error:
        # The visit is counted either way; only the live update is lost (pages catch up
        # with the next one).
        log.warning("could not publish the count: %s", error)
    page = Response(
        render_template(
            "index.html",
            count=count,
            pusher={
                "key": APP_KEY,
                "port": TIDINGS_PORT,
                "counter": COUNTER_CHANNEL,
                "hereNow": HERE_NOW_CHANNEL,
            },
        )
    )
    if visitor() is None:
        # Anonymous and carries no privilege: it only tells this browser's tabs apart from
        # other browsers in the presence channel.
        page.set_cookie(VISITOR_COOKIE, secrets.token_urlsafe(16), httponly=True, samesite="Lax")
    return page


@app.get("/pusher.min.js")
def pusher_js() -> Response:
    # Served by the app itself: nothing is fetched from a CDN.
    return send_from_directory(PUSHER_JS, "pusher.min.js")
