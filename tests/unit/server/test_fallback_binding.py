"""server/fallback.py: ClientBinding, what a session's later requests must show."""

from __future__ import annotations

from tidings.server.fallback import ClientBinding


def test_the_same_origin_is_admitted_from_any_address_when_not_bound_to_one() -> None:
    binding = ClientBinding("https://app.example", None)
    assert binding.admits("https://app.example", "10.0.0.1")
    assert binding.admits("https://app.example", None)


def test_another_or_a_missing_origin_is_not_admitted() -> None:
    binding = ClientBinding("https://app.example", None)
    assert not binding.admits("https://evil.example", "10.0.0.1")
    assert not binding.admits(None, "10.0.0.1")
    assert not ClientBinding(None, None).admits("https://app.example", "10.0.0.1")
    assert ClientBinding(None, None).admits(None, "10.0.0.1")


def test_a_session_bound_to_an_address_admits_only_that_address() -> None:
    binding = ClientBinding("https://app.example", "10.0.0.1")
    assert binding.admits("https://app.example", "10.0.0.1")
    assert not binding.admits("https://app.example", "10.0.0.2")
    assert not binding.admits("https://app.example", None)
