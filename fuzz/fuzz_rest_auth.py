"""Fuzz the REST request authentication: the query string and its signature.

Contract (``protocol/auth.py``): ``rest_request_error`` returns None (authenticated) or a
string saying why not (HTTP 401); it never raises, whatever the query, path or body.
``parse_info`` (the ``info=`` parameter) returns attribute names or raises
:class:`RestError` 400. Invariants: a request signed by the Pusher Python SDK's signer with
the app secret passes; the same request with one signature character changed, a changed
body or a stale timestamp does not.

The query is parsed from raw text with yarl, as aiohttp does for ``request.query``.
"""

from __future__ import annotations

import hashlib
import sys
from urllib.parse import urlencode

import pusher.http
import pusher.signature
import yarl
from reader import FuzzInput

from tidings.protocol.auth import TIMESTAMP_WINDOW, rest_request_error
from tidings.protocol.channels import name_error
from tidings.protocol.rest import RestError, parse_info

KEY = "app-key"
SECRET = "app-secret"
NOW = 1_700_000_000
AUTH_PARAMS = {"auth_key", "auth_timestamp", "auth_version", "auth_signature", "body_md5"}


def query_pairs(query_string: str) -> list[tuple[str, str]] | None:
    try:
        url = yarl.URL("/apps/1/events?" + query_string)
    except ValueError:
        return None  # aiohttp answers 400 before any handler runs
    return list(url.query.items())


def check_arbitrary(data: FuzzInput) -> None:
    method = ("GET", "POST", "get")[data.choice(3)]
    path = data.text()
    query: list[tuple[str, str]] | None
    if data.flag():
        query = query_pairs(data.text())  # a raw query string, parsed as aiohttp parses it
    else:
        # The parameters every request needs, with fuzzed values: past the "missing" checks.
        text = data.unicode_text
        query = [
            ("auth_key", text()),
            ("auth_timestamp", text()),
            ("auth_version", text() or "1.0"),
            ("auth_signature", text()),
        ]
        for _ in range(data.choice(3)):
            query.append((text(), text()))
    body = data.chunk()
    now = NOW + (data.byte() - 128) * 10.0
    if query is None:
        return
    problem = rest_request_error(SECRET, method, path, query, body, now)
    assert problem is None or isinstance(problem, str)
    for key, value in query:
        if key == "info":
            try:
                parse_info(value)
            except RestError as exc:
                assert exc.status == 400
        problem = name_error(value, 200)
        assert problem is None or isinstance(problem, str)


def check_signed(data: FuzzInput) -> None:
    method = ("GET", "POST")[data.choice(2)]
    path = "/apps/1/" + data.text()
    body = data.chunk() if method == "POST" else b""
    params: dict[str, str] = {}
    for _ in range(data.choice(4)):
        key, value = data.unicode_text(), data.unicode_text()
        if key == key.lower() and key not in AUTH_PARAMS:
            params[key] = value
    params.update(
        auth_key=KEY,
        auth_timestamp=str(NOW),
        auth_version="1.0",
        body_md5=hashlib.md5(body).hexdigest(),
    )
    string_to_sign = "\n".join((method, path, pusher.http.make_query_string(params)))
    signature = pusher.signature.sign(SECRET, string_to_sign)
    drift = data.choice(int(TIMESTAMP_WINDOW) + 1)

    def error(signature: str, body: bytes, now: float) -> str | None:
        wire = urlencode({**params, "auth_signature": signature})
        query = query_pairs(wire)
        assert query is not None, wire
        return rest_request_error(SECRET, method, path, query, body, now)

    assert error(signature, body, NOW + drift) is None, (params, path)
    assert error(signature, body, NOW - drift) is None
    assert error(signature, body, NOW + TIMESTAMP_WINDOW + 1 + drift) is not None
    position = data.choice(len(signature))
    flipped = "0" if signature[position] != "0" else "1"
    mutated = signature[:position] + flipped + signature[position + 1 :]
    assert (error(mutated, body, NOW) or "").startswith("Invalid signature: ")
    assert (error(signature[:-1], body, NOW) or "").startswith("Invalid signature: ")
    assert error(signature, body + b"x", NOW) == "body_md5 does not match the request body"


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - the name atheris and libFuzzer use
    data = FuzzInput(raw)
    if data.flag():
        check_signed(data)
    else:
        check_arbitrary(data)


if __name__ == "__main__":
    from entry import fuzz_main

    fuzz_main(TestOneInput)
    sys.exit(0)
