"""pusher-js in Chromium with WebSocket removed, against Tidings' HTTP edge inside an ASGI app
under uvicorn (``tests/asgi_process.py``): it falls back to ``xhr_streaming``, then to
``xhr_polling`` when told to, and gets every event triggered with the ``pusher`` SDK.

The page, its origin and the browser are those of test_chromium_fallback.py (imported, so
both files drive pusher-js the same way); only the server differs.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pusher
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_chromium_fallback import (  # noqa: E402
    APP_ID,
    APP_KEY,
    APP_SECRET,
    TIMEOUT,
    PageFactory,
    browser,
    open_page,
    page_origin,
    trigger_events,
    wait_events,
)

from asgi_process import AsgiServer, start_asgi  # noqa: E402

pytestmark = pytest.mark.node

__all__ = ["browser", "open_page", "page_origin"]  # fixtures this module uses by name


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsgiServer]:
    """uvicorn with Tidings' HTTP edge, in place of ``tidings serve`` for ``open_page``."""
    app = {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET}
    server = start_asgi(tmp_path_factory.mktemp("asgi-browser"), [app])
    yield server
    server.stop()


@pytest.fixture
def rest(server: AsgiServer) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host="127.0.0.1",
        port=server.port,
        ssl=False,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize(
    ("transports", "expected"),
    [(None, "xhr_streaming"), (["xhr_polling"], "xhr_polling")],
    ids=["defaults", "xhr_polling"],
)
def test_pusher_js_without_websocket_falls_back_over_asgi(
    open_page: PageFactory,
    rest: pusher.Pusher,
    server: AsgiServer,
    transports: list[str] | None,
    expected: str,
) -> None:
    channel = f"asgi-{uuid.uuid4().hex[:10]}"
    page = open_page("no WebSocket, ASGI", channel, websocket=False, transports=transports)
    page.wait_subscribed(server)
    assert page.text("transport") == expected, page.describe()
    receive = "xhr_streaming" if expected == "xhr_streaming" else "xhr"
    assert page.used(receive) and page.used("xhr_send"), page.describe()

    events = trigger_events(rest, channel, "asgi")
    wait_events(page, events, server, f"chromium-asgi-{expected}.png")
    assert (page.text("state"), page.text("transport")) == ("connected", expected)
    assert page.events() == events, page.describe()
