"""The pusher-js hint of the start-up banner, for each kind of listening address."""

from __future__ import annotations

from tidings.server.banner import client_hint


def test_one_app_names_its_key_and_the_address() -> None:
    hint = client_hint("127.0.0.1", 6001, False, ["my-key"])
    assert hint.startswith("stop with Ctrl-C")
    assert "new Pusher('my-key', {wsHost: '127.0.0.1', wsPort: 6001, forceTLS: false" in hint


def test_the_http_fallback_comes_here_too() -> None:
    hint = client_hint("127.0.0.1", 6001, False, ["k"])
    assert "httpHost: '127.0.0.1', httpPort: 6001" in hint
    assert "httpPath" not in hint  # pusher-js's default
    assert "httpPath: '/rt'" in client_hint("127.0.0.1", 6001, False, ["k"], "/rt")


def test_several_apps_name_no_key() -> None:
    assert "new Pusher('<app key>'" in client_hint("127.0.0.1", 6001, False, ["a", "b"])


def test_tls_forces_tls() -> None:
    assert "forceTLS: true" in client_hint("example.test", 443, True, ["k"])


def test_every_interface_points_at_loopback_and_says_so() -> None:
    for host in ("0.0.0.0", "::"):
        hint = client_hint(host, 6001, False, ["k"])
        assert "wsHost: '127.0.0.1'" in hint
        assert "another machine" in hint


def test_ipv6_address_gets_brackets() -> None:
    assert "wsHost: '[::1]'" in client_hint("::1", 6001, False, ["k"])
