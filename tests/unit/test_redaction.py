"""redaction.py: what may be shown of a URL, and scrubbing URLs out of library messages."""

from __future__ import annotations

import pytest

from tidings.redaction import REDACTED, UNPARSABLE, public_url, scrub


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example/in", "https://hooks.example/in"),
        ("http://127.0.0.1:8080/a/b", "http://127.0.0.1:8080/a/b"),
        ("https://user:pa55@hooks.example/in?token=t0k#frag", "https://hooks.example/in"),
        ("http://[::1]:9/x?sig=abc", "http://[::1]:9/x"),
        ("redis://:hunter22@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://default:hunter22@cache.example:6380/1", "rediss://cache.example:6380/1"),
        # Nothing of an unparsable URL is shown: where its host ends is anyone's guess.
        ("http://user:pw@example.com:99999/x?token=t0k", UNPARSABLE),
        ("http://[::1/x?token=t0k", UNPARSABLE),
    ],
)
def test_public_url_drops_credentials_query_and_fragment(url: str, shown: str) -> None:
    assert public_url(url) == shown


HOOK = "http://hook-user:hook-pass@127.0.0.1:9/hook?token=SECRET-TOKEN&v=2#SECRET-FRAGMENT"


@pytest.mark.parametrize(
    "message",
    [
        # aiohttp's InvalidURL and connection timeout messages quote the URL as given...
        HOOK,
        f"Connection timeout to host {HOOK}",
        # ...or as yarl re-encoded it; pieces of it may appear on their own.
        "Connection timeout to host http://127.0.0.1:9/hook?token=SECRET-TOKEN&v=2",
        "bad header for hook-user:hook-pass",
        "fragment SECRET-FRAGMENT",
    ],
)
def test_scrub_removes_the_url_credentials_from_a_message(message: str) -> None:
    scrubbed = scrub(message, HOOK)
    for secret in ("hook-user", "hook-pass", "SECRET-TOKEN", "SECRET-FRAGMENT"):
        assert secret not in scrubbed, scrubbed


def test_scrub_shows_the_public_url_and_keeps_the_rest() -> None:
    assert scrub(f"Connection timeout to host {HOOK}", HOOK) == (
        "Connection timeout to host http://127.0.0.1:9/hook"
    )
    message = "Cannot connect to host 127.0.0.1:9 ssl:default [Connect call failed]"
    assert scrub(message, HOOK) == message
    assert scrub("x", None) == "x"


def test_scrub_percent_encoded_and_unparsable_urls() -> None:
    url = "http://u:p%40ss-word@example.com:99999/x?token=a%20secret"
    scrubbed = scrub("p@ss-word and a secret and p%40ss-word and a%20secret", url)
    assert scrubbed == f"{REDACTED} and {REDACTED} and {REDACTED} and {REDACTED}"


def test_short_values_are_only_removed_with_their_key() -> None:
    url = "http://example.com/x?v=1&token=abcdef"
    assert scrub("v=1&token=abcdef, version 1", url) == f"{REDACTED}, version 1"


def test_scrub_also_removes_given_values_and_unparsable_urls() -> None:
    url = "http://[::1/hook?token=t0k-secret"
    message = f"bad request to {url} with Bearer header-value"
    scrubbed = scrub(message, url, also=("Bearer header-value", "abc"))
    assert "t0k-secret" not in scrubbed and "header-value" not in scrubbed, scrubbed
    assert scrubbed == f"bad request to {UNPARSABLE} with {REDACTED}"
