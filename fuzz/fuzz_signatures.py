"""Fuzz the signature checkers: channel auth, user sign-in and webhook signatures.

Contract (``protocol/auth.py``): ``channel_auth_ok`` and ``user_auth_ok`` take any value a
client may send as ``auth`` (any JSON value) and return a bool, never raise. Webhook bodies
are signed by ``core/webhooks.signature``. Invariants: what the Pusher Python SDK signs with
the app secret verifies; the same with one character of the signature changed, another key,
or another socket id does not; a webhook body signed here is accepted by the SDK's
``validate_webhook`` and decodes to the same events, and a changed body is refused.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson
import pusher
from reader import FuzzInput

from tidings.core.webhooks import body as webhook_body
from tidings.core.webhooks import signature as webhook_signature
from tidings.protocol.auth import channel_auth_ok, sign, user_auth_ok

APP_ID = "1"
KEY = "app-key"
SECRET = "app-secret"
SDK = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)


def any_auth(data: FuzzInput) -> object:
    """What a client may put in ``auth``: a string most often, else any JSON value."""
    raw = data.chunk()
    if data.flag():
        return raw.decode("utf-8", "replace")
    try:
        value: object = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    return value


def mutated(auth: str, position: int) -> str:
    key, _, sig = auth.partition(":")
    i = position % len(sig)
    return f"{key}:{sig[:i]}{'0' if sig[i] != '0' else '1'}{sig[i + 1 :]}"


def check_arbitrary(data: FuzzInput) -> None:
    text = data.unicode_text
    socket_id, channel, channel_data, user_data = text(), text(), text(), text()
    auth = any_auth(data)
    for cd in (None, channel_data):
        ok = channel_auth_ok(KEY, SECRET, socket_id, channel, auth, cd)
        assert isinstance(ok, bool)
    assert isinstance(user_auth_ok(KEY, SECRET, socket_id, user_data, auth), bool)


def sdk_channel_auth(channel: str, socket_id: str, custom: Any) -> dict[str, str] | None:
    try:
        result: dict[str, str] = SDK.authenticate(channel, socket_id, custom)
    except (ValueError, TypeError):
        return None  # the SDK refuses names and ids the server would refuse too
    return result


def check_signed(data: FuzzInput) -> None:
    socket_id = f"{data.byte() + 1}.{data.byte()}"
    channel = data.text()
    user_info = data.unicode_text()
    position = data.byte()
    custom = {"user_id": user_info or "u", "user_info": {"name": user_info}}
    presence = channel.startswith("presence-")
    signed = sdk_channel_auth(channel, socket_id, custom if presence else None)
    if signed is not None:
        auth = signed["auth"]
        channel_data = signed.get("channel_data")
        assert channel_auth_ok(KEY, SECRET, socket_id, channel, auth, channel_data), signed
        bad = mutated(auth, position)
        assert not channel_auth_ok(KEY, SECRET, socket_id, channel, bad, channel_data)
        other_key = "other:" + auth.partition(":")[2]
        assert not channel_auth_ok(KEY, SECRET, socket_id, channel, other_key, channel_data)
        other_socket = socket_id + "1"
        assert not channel_auth_ok(KEY, SECRET, other_socket, channel, auth, channel_data)
        if channel_data is not None:
            assert not channel_auth_ok(KEY, SECRET, socket_id, channel, auth, channel_data + " ")
    user = {"id": user_info or "u", "user_info": {"name": channel}}
    try:
        signin = SDK.authenticate_user(socket_id, user)
    except (ValueError, TypeError):
        signin = None
    if signin is not None:
        auth, user_data = signin["auth"], signin["user_data"]
        assert user_auth_ok(KEY, SECRET, socket_id, user_data, auth)
        assert not user_auth_ok(KEY, SECRET, socket_id, user_data, mutated(auth, position))
        assert not user_auth_ok(KEY, SECRET, socket_id, user_data + " ", auth)
        # The same string signed by the server's own helper is the same signature.
        assert auth == f"{KEY}:{sign(SECRET, f'{socket_id}::user::{user_data}')}"


def check_webhook(data: FuzzInput) -> None:
    events: list[dict[str, Any]] = []
    for _ in range(data.choice(4) + 1):
        events.append({"name": "client_event", "channel": data.text(), "data": data.text()})
    raw = webhook_body(events, int(time.time() * 1000))
    signature = webhook_signature(SECRET, raw)
    decoded = SDK.validate_webhook(KEY, signature, raw.decode())
    assert decoded is not None and decoded["events"] == events, (raw, decoded)
    assert (
        SDK.validate_webhook(KEY, mutated(f"k:{signature}", data.byte())[2:], raw.decode()) is None
    )
    assert SDK.validate_webhook(KEY, signature, raw.decode() + " ") is None
    assert webhook_signature(SECRET + "x", raw) != signature


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - the name atheris and libFuzzer use
    data = FuzzInput(raw)
    match data.choice(3):
        case 0:
            check_arbitrary(data)
        case 1:
            check_signed(data)
        case _:
            check_webhook(data)


if __name__ == "__main__":
    from entry import fuzz_main

    fuzz_main(TestOneInput)
    sys.exit(0)
