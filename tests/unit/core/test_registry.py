"""core/registry.py: this node's connections per app, signed-in users, and who may connect."""

from __future__ import annotations

import pytest

from tidings.core.apps import App
from tidings.core.registry import Registry, handshake_refusal
from tidings.protocol.errors import ErrorCode

APP = App("1", "key-1", "secret-1", max_connections=2)
OTHER = App("2", "key-2", "secret-2")
OFF = App("3", "key-3", "secret-3", enabled=False)
PICKY = App("4", "key-4", "secret-4", allowed_origins=("https://ok.example",))


def registry(max_connections: int = 10) -> Registry[str]:
    return Registry([APP.id, OTHER.id, OFF.id, PICKY.id], max_connections)


def test_add_and_remove_count_per_app_and_per_node() -> None:
    reg = registry()
    reg.add(APP.id, "1.1", "conn-a")
    reg.add(OTHER.id, "1.1", "conn-b")  # socket ids are per app
    assert reg.count == 2
    assert len(reg.of(APP.id)) == 1
    assert reg.of(APP.id).get("1.1") == "conn-a"
    assert "1.1" in reg.of(OTHER.id)
    assert sorted(reg.all()) == ["conn-a", "conn-b"]
    assert reg.remove(APP.id, "1.1") == "conn-a"
    assert reg.remove(APP.id, "1.1") is None  # a second detach changes nothing
    assert reg.count == 1
    assert reg.of(APP.id).get("1.1") is None


def test_registering_a_socket_id_again_replaces_it_and_counts_once() -> None:
    reg = registry()
    reg.add(APP.id, "1.1", "old")
    reg.add(APP.id, "1.1", "new")
    assert reg.count == 1
    assert reg.of(APP.id).get("1.1") == "new"


def test_a_user_with_several_sockets() -> None:
    reg = registry()
    connections = reg.of(APP.id)
    for socket_id in ("1.1", "1.2", "1.3"):
        reg.add(APP.id, socket_id, f"conn-{socket_id}")
    connections.sign_in("ann", "1.1")
    connections.sign_in("ann", "1.2")
    connections.sign_in("bob", "1.3")
    assert sorted(connections.of_user("ann")) == ["conn-1.1", "conn-1.2"]
    # A socket that closed but is not signed out yet is no longer the user's.
    reg.remove(APP.id, "1.2")
    assert connections.of_user("ann") == ["conn-1.1"]
    connections.sign_out("ann", "1.2")
    assert connections.users() == {"ann", "bob"}
    connections.sign_out("ann", "1.1")  # the last socket: the user goes
    assert connections.users() == {"bob"}
    assert connections.of_user("ann") == []
    connections.sign_out("ann", "1.1")  # signing out twice is harmless
    assert connections.of_user("nobody") == []


def test_refusals_in_order() -> None:
    reg = registry(max_connections=3)
    assert reg.refusal(OFF, draining=True) is ErrorCode.APP_DISABLED
    assert reg.refusal(APP, draining=True) is ErrorCode.RECONNECT
    assert reg.refusal(APP, draining=False) is None
    reg.add(APP.id, "1.1", "a")
    reg.add(APP.id, "1.2", "b")
    # The app's quota (2) is reached; other apps still connect.
    assert reg.refusal(APP, draining=False) is ErrorCode.OVER_CONNECTION_QUOTA
    assert reg.refusal(OTHER, draining=False) is None
    reg.add(OTHER.id, "1.1", "c")
    # The node's limit (3) comes before any app's quota.
    assert reg.refusal(OTHER, draining=False) is ErrorCode.OVER_CAPACITY
    assert reg.refusal(APP, draining=False) is ErrorCode.OVER_CAPACITY
    reg.remove(OTHER.id, "1.1")
    assert reg.refusal(OTHER, draining=False) is None


def test_free_socket_id_skips_ids_in_use() -> None:
    reg = registry()
    draws = iter([4, 6, 4, 6, 4, 7])
    reg.add(APP.id, "5.7", "taken")
    assert reg.free_socket_id(APP.id, lambda n: next(draws)) == "5.8"
    # Another app may use the same id.
    draws = iter([4, 6])
    assert reg.free_socket_id(OTHER.id, lambda n: next(draws)) == "5.7"


def test_free_socket_id_parts_are_pusher_shaped() -> None:
    asked = []

    def draw(n: int) -> int:
        asked.append(n)
        return n - 1

    assert registry().free_socket_id(APP.id, draw) == "1000000000.1000000000"
    assert asked == [10**9, 10**9]


@pytest.mark.parametrize(
    ("app", "protocol", "origin", "expected"),
    [
        (None, "7", None, ErrorCode.APP_NOT_FOUND),
        (APP, None, None, ErrorCode.NO_PROTOCOL),
        (APP, "seven", None, ErrorCode.INVALID_VERSION),
        (APP, "4", None, ErrorCode.UNSUPPORTED_PROTOCOL),
        (APP, "8", None, ErrorCode.UNSUPPORTED_PROTOCOL),
        (PICKY, "7", "https://evil.example", ErrorCode.UNAUTHORIZED),
        (PICKY, "7", None, ErrorCode.UNAUTHORIZED),
    ],
)
def test_handshake_refusals(
    app: App | None, protocol: str | None, origin: str | None, expected: ErrorCode
) -> None:
    refused = handshake_refusal(app, protocol, origin)
    assert refused is not None
    assert refused[0] is expected


@pytest.mark.parametrize("protocol", ["5", "6", "7"])
def test_handshake_accepts_supported_protocols(protocol: str) -> None:
    assert handshake_refusal(APP, protocol, None) is None
    assert handshake_refusal(PICKY, protocol, "https://ok.example") is None


def test_unsupported_protocol_message_names_the_version() -> None:
    assert handshake_refusal(APP, "3", None) == (
        ErrorCode.UNSUPPORTED_PROTOCOL,
        "Unsupported protocol version 3",
    )


def test_an_apps_quota_counts_the_other_nodes_connections() -> None:
    reg = registry(max_connections=10)
    reg.add(APP.id, "1.1", "a")
    assert reg.counts() == {APP.id: 1, OTHER.id: 0, OFF.id: 0, PICKY.id: 0}
    reg.elsewhere({APP.id: 1})  # the app's quota (2) is reached across nodes
    assert reg.refusal(APP, draining=False) is ErrorCode.OVER_CONNECTION_QUOTA
    assert reg.refusal(OTHER, draining=False) is None
    reg.elsewhere({})  # the other node left
    assert reg.refusal(APP, draining=False) is None
