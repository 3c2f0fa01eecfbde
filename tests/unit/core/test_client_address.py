"""core/client_address.py: the client behind trusted proxies, read from the right."""

from __future__ import annotations

import pytest

from tidings.core.client_address import TrustedProxies, normalize, parse_networks

PROXIES = TrustedProxies(parse_networks(["10.0.0.0/8", "::1"]))


def test_an_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    assert PROXIES.client("203.0.113.5", "198.51.100.1") == "203.0.113.5"
    assert not TrustedProxies(()).trusts("10.0.0.1")
    assert TrustedProxies(()).client("10.0.0.1", "198.51.100.1") == "10.0.0.1"


def test_the_first_untrusted_entry_from_the_right() -> None:
    # The client forged its first entry; the proxies appended the real ones.
    header = "1.1.1.1, 198.51.100.7, 10.0.0.2"
    assert PROXIES.client("10.0.0.1", header) == "198.51.100.7"
    assert PROXIES.client("::1", "198.51.100.7") == "198.51.100.7"


def test_no_header_or_garbage_means_the_proxy_itself() -> None:
    assert PROXIES.client("10.0.0.1", "") == "10.0.0.1"
    assert PROXIES.client("10.0.0.1", "unknown") == "10.0.0.1"
    assert PROXIES.client("10.0.0.1", "198.51.100.7, nonsense") == "10.0.0.1"
    # Garbage further left ends the walk at the last address that could be placed.
    assert PROXIES.client("10.0.0.1", "nonsense, 10.0.0.3") == "10.0.0.3"


def test_normalize() -> None:
    assert normalize("::ffff:127.0.0.1") == "127.0.0.1"
    assert normalize(" 2001:DB8::1 ") == "2001:db8::1"
    assert normalize("fe80::1%eth0") == "fe80::1"
    assert normalize("example.com") is None
    assert normalize("") is None


def test_parse_networks_names_a_bad_entry() -> None:
    assert [str(n) for n in parse_networks(["10.1.2.3/8", "127.0.0.1"])] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
    ]
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        parse_networks(["10.0.0.0/33"])
