"""Pins: a shared world map. A click drops a pin, and every open page sees it land.

The gevent + SockJS classic, rebuilt: a Starlette app stores the pins and publishes each new
one on the public channel ``pins``; Tidings runs inside the same process (``rt.asgi``) and
serves pusher-js on the same port, over WebSocket or, where WebSocket is blocked, over the
HTTP fallback (xhr_streaming, xhr_polling) that pusher-js switches to by itself.

Routes: ``/`` the page, ``/static/*`` its map, script and styles, ``/pusher.min.js``,
``GET /pins`` the pins so far, ``POST /pins`` a new pin. Tidings takes ``/app/…`` (sockets),
``/apps/…`` (the REST API) and ``/pusher/…`` (the fallback) before Starlette sees them.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tidings import PublishError, Realtime

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
# Installed by `make example` (npm ci in examples/): the page loads nothing from a CDN.
PUSHER_JS = HERE.parent / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js"

APP_KEY = "app-key"
CHANNEL = "pins"
MAX_PINS = 500  # the oldest pin goes when a new one would pass this
BODY_LIMIT = 1024  # bytes: {"lon": ..., "lat": ...} needs a few dozen

# The sockets live in this process: no server to run beside it. shutdown_ready_delay=0:
# on Ctrl-C there is no load balancer to take this node out first, so clients get their
# 4200 (reconnect) at once instead of after the default 2 s.
rt = Realtime(app_id="12345", key=APP_KEY, secret="app-secret", shutdown_ready_delay=0)


@dataclass(frozen=True, slots=True)
class Pin:
    id: int  # increasing: the page keeps the newest MAX_PINS by it, as the store does
    lon: float
    lat: float
    at: float  # when it was dropped, seconds since the epoch


class PinStore:
    """The newest ``limit`` pins, the oldest dropped first.

    In memory, on purpose: this example is one process, and pins have to outlive a page
    reload, not a restart. Across restarts or several workers they would be a table in the
    app's database; nothing else here would change. No lock: every call runs on the event
    loop, with no ``await`` inside."""

    def __init__(self, limit: int) -> None:
        self._pins: deque[Pin] = deque(maxlen=limit)
        self._last_id = 0

    def add(self, lon: float, lat: float, now: float) -> Pin:
        self._last_id += 1
        pin = Pin(self._last_id, lon, lat, round(now, 3))
        self._pins.append(pin)
        return pin

    def all(self) -> list[Pin]:
        return list(self._pins)


class PinRate:
    """Token buckets: at most ``burst`` pins at once per client, refilled at ``per_second``.

    Keyed by the client's address, not by its pusher-js socket id: the page sends the socket
    id itself, so a script could make up a new one for every request. The map of addresses is
    bounded: past ``max_clients`` the one idle longest is forgotten, which at worst lets it
    through with a full bucket once more."""

    def __init__(self, per_second: float, burst: int, max_clients: int = 10_000) -> None:
        self.per_second = per_second
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def take(self, client: str, now: float) -> float:
        """Take one token for ``client``: 0 when allowed, else the seconds until one is back."""
        tokens, then = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.per_second)
        allowed = tokens >= 1
        self._buckets[client] = (tokens - 1 if allowed else tokens, now)  # now the newest
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return 0.0 if allowed else (1 - tokens) / self.per_second


class BadPin(ValueError):
    """A request body that is not ``{"lon": number, "lat": number}`` in range."""


def parse_pin(body: bytes) -> tuple[float, float]:
    """``(lon, lat)`` from a JSON body, rounded to 4 decimals (about 10 m: a click is coarser)."""
    try:
        fields = json.loads(body)
    except ValueError:
        raise BadPin('the body must be JSON: {"lon": number, "lat": number}') from None
    if not isinstance(fields, dict):
        raise BadPin('the body must be a JSON object: {"lon": number, "lat": number}')
    return _coordinate(fields, "lon", 180), _coordinate(fields, "lat", 90)


def _coordinate(fields: dict[str, Any], name: str, bound: int) -> float:
    value = fields.get(name)
    # bool is an int in Python, and json.loads reads true as True: refuse it by name.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadPin(f"{name} must be a number, got {json.dumps(value)}")
    if not math.isfinite(value) or not -bound <= value <= bound:
        raise BadPin(f"{name} must be between -{bound} and {bound}, got {value}")
    return round(float(value), 4)


store = PinStore(MAX_PINS)
# Five quick clicks, then two a second: a person never notices; a loop is stopped.
rate = PinRate(per_second=2.0, burst=5)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None past ``limit`` bytes (read no further: it may never end)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


async def list_pins(request: Request) -> JSONResponse:
    return JSONResponse({"pins": [asdict(pin) for pin in store.all()], "max": MAX_PINS})


async def drop_pin(request: Request) -> JSONResponse:
    body = await read_body(request, BODY_LIMIT)
    if body is None:
        return error(413, f"the body is over {BODY_LIMIT} bytes")
    try:
        lon, lat = parse_pin(body)
    except BadPin as exc:
        return error(400, str(exc))
    client = request.client.host if request.client else "unknown"
    wait = rate.take(client, time.monotonic())
    if wait:
        retry = str(math.ceil(wait))
        return error(429, f"too many pins: try again in {retry} s", {"Retry-After": retry})
    pin = store.add(lon, lat, time.time())
    try:
        # Every page gets it, this one too: its own copy is dropped by id (see pins.js).
        await rt.atrigger(CHANNEL, "pin", asdict(pin))
    except PublishError as exc:
        # Stored but not sent: pages that load the list (on reload, on reconnect) get it.
        return error(exc.status, f"pin {pin.id} stored but not published: {exc.message}")
    return JSONResponse({"pin": asdict(pin)}, status_code=201)


PAGE = (STATIC / "index.html").read_text().replace("__APP_KEY__", APP_KEY)


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-cache"})


async def pusher_js(request: Request) -> Response:
    if not PUSHER_JS.is_file():
        return error(500, "pusher-js is not installed: run `npm ci` in examples/")
    return FileResponse(PUSHER_JS, media_type="application/javascript")


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 as JSON, like every other error here."""
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail, dict(exc.headers or {}))


pins = Starlette(
    routes=[
        Route("/", page),
        Route("/pins", list_pins, methods=["GET"]),
        Route("/pins", drop_pin, methods=["POST"]),
        Route("/pusher.min.js", pusher_js),
        Mount("/static", StaticFiles(directory=STATIC)),
    ],
    exception_handlers={HTTPException: http_error},
)
# Tidings' paths first, everything else (and the lifespan) to Starlette.
app = rt.asgi(pins)
