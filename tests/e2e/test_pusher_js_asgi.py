"""pusher-js in Node against Tidings' ASGI app under uvicorn: Tidings alone, wrapping a
FastAPI app, and mounted under ``/rt`` in Starlette (pusher-js's ``wsPath``, and
``httpPath: "/rt/pusher"``), over the WebSocket and over the HTTP fallbacks.

The apps and the server process are those of tests/integration/test_asgi.py
(tests/integration/asgi_apps); events are published through the served node.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenario import SOCKET_ID, Scenario, unique

APPS_DIR = str(Path(__file__).resolve().parents[1] / "integration" / "asgi_apps")
if APPS_DIR not in sys.path:
    sys.path.insert(0, APPS_DIR)

from asgi_server import AsgiServer  # noqa: E402


@pytest.fixture
def scenarios() -> Iterator[list[Scenario]]:
    started: list[Scenario] = []
    yield started
    for run in started:
        run.close()


@pytest.mark.parametrize(
    ("app", "mount", "transport"),
    [
        ("plain", "", "ws"),
        ("fastapi", "", "ws"),
        ("mounted", "/rt", "ws"),
        ("fastapi", "", "xhr_streaming"),
        ("mounted", "/rt", "xhr_polling"),
    ],
)
def test_pusher_js_subscribes_and_receives_through_uvicorn(
    tmp_path: Path, scenarios: list[Scenario], app: str, mount: str, transport: str
) -> None:
    server = AsgiServer(app, tmp_path)
    server.start()
    try:
        channel = unique("asgi-")
        run = Scenario(
            "asgi_channel",
            server.port,
            {
                "CHANNEL": channel,
                "EXPECTED_EVENTS": "5",
                "MOUNT": mount,
                "TRANSPORT": transport,
            },
        )
        scenarios.append(run)
        assert SOCKET_ID.match(run.wait_step("subscribed")["socket_id"])
        server.publish(channel, 5)
        run.go()
        result = run.result()
    finally:
        server.stop()
    assert [e["event"] for e in result["events"]] == ["tick"] * 5
    assert [e["data"][0] for e in result["events"]] == [0, 1, 2, 3, 4]
    assert result["transports"] == [transport]
    assert ["connecting", "connected"] in result["states"]
