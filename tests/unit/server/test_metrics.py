"""server/metrics.py: what may appear in label values."""

from __future__ import annotations

import pytest

from tidings.server.metrics import public_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example/in", "https://hooks.example/in"),
        ("http://127.0.0.1:8080/a/b", "http://127.0.0.1:8080/a/b"),
        ("https://user:pa55@hooks.example/in?token=t0k#frag", "https://hooks.example/in"),
        ("http://[::1]:9/x?sig=abc", "http://[::1]:9/x"),
    ],
)
def test_public_url_drops_credentials_query_and_fragment(url: str, shown: str) -> None:
    assert public_url(url) == shown
