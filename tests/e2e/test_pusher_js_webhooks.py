"""Webhooks produced by the real pusher-js client: presence joins/leaves and client events.

The scenario (js/webhooks_presence.js) pauses at each step while the test checks what the
webhook receiver (tests/integration/webhook_helpers.py) got. The server runs on a config of
this test with ``[[apps.webhooks]]``; every request is verified with the ``pusher`` SDK.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

INTEGRATION = str(Path(__file__).resolve().parent.parent / "integration")
if INTEGRATION not in sys.path:  # tests/e2e itself is put there by tests/e2e/conftest.py
    sys.path.insert(0, INTEGRATION)

from scenario import Scenario  # noqa: E402
from webhook_helpers import (  # noqa: E402
    EXTRA_HEADER,
    EXTRA_VALUE,
    Receiver,
    TidingsProcess,
    app_config,
    assert_signed,
    has,
    receiver_fixture,  # noqa: F401  (fixture "receiver")
    webhook_config,
)

pytestmark = pytest.mark.node


@pytest.fixture
def webhook_server(tmp_path: Path, receiver: Receiver) -> Iterator[TidingsProcess]:
    config = webhook_config(
        tmp_path, [app_config({"url": receiver.url(), "headers": {EXTRA_HEADER: EXTRA_VALUE}})]
    )
    server = TidingsProcess(config, tmp_path / "server.log")
    server.start()
    yield server
    server.stop()
    print(f"--- server log ---\n{server.logs()[-6000:]}")  # shown only on failure


def test_presence_and_client_event_webhooks_from_pusher_js(
    webhook_server: TidingsProcess, receiver: Receiver
) -> None:
    suffix = uuid.uuid4().hex[:10]
    room = f"presence-room-{suffix}"
    chat = f"private-chat-{suffix}"
    run = Scenario(
        "webhooks_presence",
        webhook_server.port,
        {"PRESENCE_CHANNEL": room, "PRIVATE_CHANNEL": chat, "ALICE": "alice", "BOB": "bob"},
    )
    try:
        info = run.wait_step("events")
        socket_a = info["socket_a"]
        receiver.wait_until(
            "both client events",
            lambda ev: sum(e["name"] == "client_event" for e in ev) == 2,
        )
        run.go()
        run.wait_step("b_left")
        receiver.wait_until(
            "member_removed bob",
            has({"name": "member_removed", "channel": room, "user_id": "bob"}),
        )
        run.go()
        result = run.result()
        assert len(result["on_b"]) == 2, result
        events = receiver.wait_until(
            "both channels vacated",
            lambda ev: sum(e["name"] == "channel_vacated" for e in ev) == 2,
        )
    finally:
        run.close()

    assert [e for e in events if e["channel"] == room] == [
        {"name": "channel_occupied", "channel": room},
        {"name": "member_added", "channel": room, "user_id": "alice"},
        {"name": "member_added", "channel": room, "user_id": "bob"},
        {
            "name": "client_event",
            "channel": room,
            "event": "client-typing",
            "data": json.dumps({"typing": True}, separators=(",", ":")),
            "socket_id": socket_a,
            "user_id": "alice",
        },
        {"name": "member_removed", "channel": room, "user_id": "bob"},
        {"name": "member_removed", "channel": room, "user_id": "alice"},
        {"name": "channel_vacated", "channel": room},
    ]
    assert [e for e in events if e["channel"] == chat] == [
        {"name": "channel_occupied", "channel": chat},
        {
            "name": "client_event",
            "channel": chat,
            "event": "client-ping",
            "data": json.dumps({"n": 1}, separators=(",", ":")),
            "socket_id": socket_a,
        },
        {"name": "channel_vacated", "channel": chat},
    ]
    assert_signed(receiver.all(), extra={EXTRA_HEADER: EXTRA_VALUE})
