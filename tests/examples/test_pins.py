"""examples/pins in Chromium: a click on the map drops a pin in every open page, over
WebSocket and, with ``window.WebSocket`` removed, over pusher-js's HTTP fallback; pins
survive a reload; bad pins are refused with a JSON error.

Each test starts ``examples/pins/run.py`` (one uvicorn serving the app and Tidings) and opens
pages in browser contexts of their own. What pusher-js did on the wire is read from
Playwright's request and WebSocket events, recorded from a page's first request on.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, Request, Route, expect

from browser_support import screenshot
from server_process import TIMEOUT

pytestmark = pytest.mark.node

WAIT = 4 * TIMEOUT * 1000  # ms, for Playwright's waits
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PARIS = (2.35, 48.86)
SYDNEY = (151.21, -33.87)

Open = Callable[..., Page]
Start = Callable[..., Any]  # the `example` fixture: example(name) -> a running Example


class Wire:
    """What one page sent to the example's port: ``"POST /pusher/app/…/xhr_send"``, and
    ``"WS /app/app-key"`` for each WebSocket it opened."""

    def __init__(self, page: Page, url: str) -> None:
        self.netloc = urlsplit(url).netloc
        self.sent: list[str] = []
        page.on("request", self._request)
        page.on("websocket", lambda ws: self._record("WS", ws.url))

    def _request(self, request: Request) -> None:
        self._record(request.method, request.url)

    def _record(self, method: str, url: str) -> None:
        parts = urlsplit(url)
        if parts.netloc == self.netloc:
            self.sent.append(f"{method} {parts.path}")

    def used(self, method: str, suffix: str) -> bool:
        return any(r.startswith(f"{method} ") and r.endswith(suffix) for r in self.sent)

    @property
    def over_http(self) -> bool:
        """pusher-js received over xhr_streaming or xhr_polling, and sent with xhr_send."""
        receive = self.used("POST", "/xhr_streaming") or self.used("POST", "/xhr")
        return receive and self.used("POST", "/xhr_send")

    @property
    def websockets(self) -> list[str]:
        return [r for r in self.sent if r.startswith("WS ")]


def open_map(new_page: Open, url: str, websocket: bool = True) -> tuple[Page, Wire]:
    """A page on ``url``, recorded from its first request, once it is subscribed and shows
    the pins dropped so far (the page marks the map ``data-live``)."""
    page = new_page("about:blank", websocket=websocket)
    wire = Wire(page, url)
    page.goto(url)
    live(page)
    return page, wire


def live(page: Page) -> None:
    expect(page.get_by_test_id("map")).to_have_attribute("data-live", "yes", timeout=WAIT)


def drop(page: Page, lon: float, lat: float) -> None:
    """Click the map where (lon, lat) is: it fills its box, 360 by 180 degrees."""
    box = page.get_by_test_id("map").bounding_box()
    assert box is not None
    x = (lon + 180) / 360 * box["width"]
    y = (90 - lat) / 180 * box["height"]
    page.get_by_test_id("map").click(position={"x": x, "y": y})


def pins_on(page: Page) -> list[tuple[float, float]]:
    """(lon, lat) of every pin on the page's map, oldest first (by id)."""
    found = page.get_by_test_id("pin").evaluate_all(
        "pins => pins.map(p => [p.dataset.id, p.dataset.lon, p.dataset.lat].map(Number))"
    )
    return [(lon, lat) for _, lon, lat in sorted(found)]


def body(point: tuple[float, float]) -> dict[str, float]:
    return {"lon": point[0], "lat": point[1]}


def still(*pages: Page) -> None:
    """Until no pin is mid-drop (a CSS animation), so that screenshots show them all."""
    for page in pages:
        page.wait_for_function("document.getAnimations().length === 0", timeout=WAIT)


def shows(page: Page, *expected: tuple[float, float]) -> None:
    """The page's map has exactly these pins, each within a degree of where it was clicked
    (the click is in whole pixels, about 0.4 degrees at this size)."""
    expect(page.get_by_test_id("pin")).to_have_count(len(expected), timeout=WAIT)
    found = pins_on(page)
    for (lon, lat), (want_lon, want_lat) in zip(found, expected, strict=True):
        assert abs(lon - want_lon) < 1 and abs(lat - want_lat) < 1, (found, expected)


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "no-websocket"])
def test_a_click_drops_a_pin_in_every_page_and_it_survives_a_reload(
    example: Start, new_page: Open, websocket: bool
) -> None:
    pins = example("pins")
    mode = "websocket" if websocket else "no-websocket"
    first, first_wire = open_map(new_page, pins.url, websocket)
    second, second_wire = open_map(new_page, pins.url, websocket)

    drop(first, *PARIS)
    shows(first, PARIS)
    shows(second, PARIS)

    second.reload()
    live(second)
    shows(second, PARIS)
    drop(second, *SYDNEY)
    shows(second, PARIS, SYDNEY)
    shows(first, PARIS, SYDNEY)
    still(first, second)
    screenshot(first, "examples", f"pins-{mode}-first")
    screenshot(second, "examples", f"pins-{mode}-second")

    for name, wire in (("first", first_wire), ("second", second_wire)):
        if websocket:
            # Only that it opened one: a machine slow enough to keep the WebSocket from
            # connecting within pusher-js's delay would see it start the fallback as well.
            assert wire.websockets, (name, wire.sent)
        else:
            # pusher-js found no WebSocket and went over HTTP by itself: nothing configured.
            assert wire.over_http and not wire.websockets, (name, wire.sent)


def test_a_pin_dropped_while_the_page_loads_the_list_is_not_lost(
    example: Start, new_page: Open
) -> None:
    """The race of loading state: the page subscribes, then asks for the list; a pin dropped
    after the server made the list, before the page has it, must come as an event."""
    pins = example("pins")
    with httpx.Client(base_url=pins.url, timeout=TIMEOUT) as http:
        assert http.post("/pins", json=body(PARIS)).status_code == 201
        dropped: list[httpx.Response] = []

        def stale_list(route: Route) -> None:
            if route.request.method != "GET":
                route.continue_()
                return
            listed = route.fetch()  # the list as the server has it now: Paris
            dropped.append(http.post("/pins", json=body(SYDNEY)))
            route.fulfill(response=listed)

        page = new_page("about:blank")
        page.route("**/pins", stale_list)
        page.goto(pins.url)
        live(page)
        assert [answer.status_code for answer in dropped] == [201], dropped
        shows(page, PARIS, SYDNEY)


def test_transport_fallback_in_the_address_keeps_pusher_js_off_websocket(
    example: Start, new_page: Open
) -> None:
    pins = example("pins")
    native, native_wire = open_map(new_page, pins.url)
    forced, forced_wire = open_map(new_page, pins.url + "?transport=fallback")
    expect(forced.get_by_test_id("status")).to_contain_text("WebSocket off")

    drop(native, *PARIS)
    shows(forced, PARIS)
    still(forced)
    screenshot(forced, "examples", "pins-transport-fallback")
    assert forced.evaluate("typeof window.WebSocket") == "function"  # there, but not used
    assert forced_wire.over_http and not forced_wire.websockets, forced_wire.sent
    assert native_wire.websockets, native_wire.sent


def test_bad_pins_are_refused_with_a_json_error(example: Start) -> None:
    pins = example("pins")
    with httpx.Client(base_url=pins.url, timeout=TIMEOUT) as http:
        refusals = {
            "lon 500": http.post("/pins", json={"lon": 500, "lat": 10}),
            "lat -91": http.post("/pins", json={"lon": 0, "lat": -91}),
            "lat a string": http.post("/pins", json={"lon": 0, "lat": "north"}),
            "not JSON": http.post("/pins", content=b"lon=1&lat=2"),
            "a list": http.post("/pins", json=[1, 2]),
        }
        for what, response in refusals.items():
            assert response.status_code == 400, (what, response.text)
            assert response.headers["content-type"] == "application/json", what
            assert response.json()["error"], what
        assert "lon must be between -180 and 180" in refusals["lon 500"].json()["error"]
        too_big = http.post("/pins", content=b'{"lon": 1, "lat": 2, "pad": "' + b"x" * 2000 + b'"}')
        assert too_big.status_code == 413 and too_big.json()["error"], too_big.text
        assert http.get("/pins").json() == {"pins": [], "max": 500}

        # A loop of clicks meets the per-client limit: five at once, then two a second.
        answers: list[httpx.Response] = []
        while len(answers) < 50 and (not answers or answers[-1].status_code == 201):
            answers.append(http.post("/pins", json={"lon": 1.5, "lat": 2.5}))
        limited = answers[-1]
        assert limited.status_code == 429, [a.status_code for a in answers]
        assert limited.headers["retry-after"] == "1" and "too many" in limited.json()["error"]
        assert len(http.get("/pins").json()["pins"]) == len(answers) - 1


def test_the_store_drops_the_oldest_pins_and_the_rate_refills(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The two bounds of app.py, with the clock passed in (no 500 clicks, no waiting)."""
    spec = importlib.util.spec_from_file_location("pins_app", EXAMPLES / "pins" / "app.py")
    assert spec is not None and spec.loader is not None
    pins_app = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, pins_app)  # dataclasses look their module up
    spec.loader.exec_module(pins_app)

    store = pins_app.PinStore(3)
    for n in range(5):
        store.add(n, -n, now=1000.0 + n)
    assert [(pin.id, pin.lon, pin.lat) for pin in store.all()] == [
        (3, 2, -2),
        (4, 3, -3),
        (5, 4, -4),
    ]

    rate = pins_app.PinRate(per_second=2.0, burst=5, max_clients=2)
    assert [rate.take("a", now=0.0) for _ in range(5)] == [0.0] * 5
    assert rate.take("a", now=0.0) == 0.5  # empty: one token is half a second away
    assert rate.take("a", now=0.5) == 0.0
    assert rate.take("b", now=0.5) == rate.take("c", now=0.5) == 0.0
    assert rate.take("a", now=0.5) == 0.0  # forgotten past max_clients: a full bucket again
