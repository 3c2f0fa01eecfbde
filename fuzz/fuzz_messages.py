"""Fuzz the WebSocket message decoder and the session that consumes it.

Contract (``protocol/messages.py``): ``decode`` returns one of the typed commands or raises
:class:`ProtocolError`; ``Session.receive`` never raises (it answers a bad frame with
``pusher:error``). Invariants: a decoded command re-encoded as a client frame decodes to the
same command; every message the session sends is a JSON object with an ``event``; a frame
signed with the app secret is never refused for its signature.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from reader import FuzzInput

from tidings.protocol import messages
from tidings.protocol.auth import sign
from tidings.protocol.channels import channel_type, name_error
from tidings.protocol.errors import ProtocolError
from tidings.protocol.session import (
    Broadcast,
    Close,
    Join,
    Leave,
    Send,
    Session,
    SessionPolicy,
    SignIn,
    Watch,
)

KEY = "app-key"
SECRET = "app-secret"
SOCKET_ID = "1234.5678"
POLICY = SessionPolicy(KEY, SECRET, authorized_connections_timeout=30.0)


def client_frame(command: messages.Command) -> bytes | None:
    """The frame a client would send for ``command`` (None if its values cannot be encoded)."""
    frame: dict[str, Any]
    match command:
        case messages.Ping():
            frame = {"event": "pusher:ping", "data": {}}
        case messages.Pong():
            frame = {"event": "pusher:pong", "data": {}}
        case messages.Subscribe(channel=channel, auth=auth, channel_data=channel_data):
            frame = {"event": "pusher:subscribe", "data": {"channel": channel}}
            if auth is not None:
                frame["data"]["auth"] = auth
            if channel_data is not None:
                frame["data"]["channel_data"] = channel_data
        case messages.Unsubscribe(channel=channel):
            frame = {"event": "pusher:unsubscribe", "data": {"channel": channel}}
        case messages.Signin(auth=auth, user_data=user_data):
            frame = {"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}
        case messages.ClientEvent(event=event, channel=channel, data=data):
            frame = {"event": event, "channel": channel, "data": data}
    try:
        return orjson.dumps(frame)
    except orjson.JSONEncodeError:
        # auth/channel_data nested deeper than orjson writes: the harness cannot re-encode
        # them, and the server never re-encodes them either.
        return None


def check_decode(frame: str | bytes) -> None:
    try:
        command = messages.decode(frame)
    except ProtocolError as exc:
        assert exc.code is None, "a malformed frame keeps the connection open"
        return
    assert isinstance(
        command,
        messages.Ping
        | messages.Pong
        | messages.Subscribe
        | messages.Unsubscribe
        | messages.Signin
        | messages.ClientEvent,
    )
    if isinstance(command, messages.ClientEvent):
        assert isinstance(command.data, str)
        assert command.event.startswith("client-")
    again = client_frame(command)
    if again is not None:
        assert messages.decode(again) == command, (command, again)


def check_actions(actions: list[Any]) -> None:
    for action in actions:
        assert isinstance(action, Send | Close | Join | Leave | Broadcast | SignIn | Watch), action
        if isinstance(action, Send):
            message = orjson.loads(action.message)
            assert isinstance(message, dict) and isinstance(message.get("event"), str)
        elif isinstance(action, Close):
            assert 4000 <= action.code < 4400
        elif isinstance(action, Broadcast):
            assert isinstance(action.data, str)


def check_session(frames: list[bytes]) -> None:
    session = Session(SOCKET_ID, POLICY, 0.0)
    for i, frame in enumerate(frames):
        now = float(i)
        check_actions(session.receive(frame, now))
        check_actions(session.tick(now))
        check_actions(session.receive(frame.decode("utf-8", "replace"), now))


def check_signed(data: FuzzInput) -> None:
    """Subscribe and sign in with fuzzed channel_data / user_data, correctly signed."""
    session = Session(SOCKET_ID, POLICY, 0.0)
    text = data.unicode_text if data.flag() else data.text
    channel, channel_data, user_data, event, payload = (text() for _ in range(5))
    presence = channel_type(channel).is_presence
    to_sign = f"{SOCKET_ID}:{channel}" + (f":{channel_data}" if presence else "")
    subscribe: dict[str, Any] = {"channel": channel, "auth": f"{KEY}:{sign(SECRET, to_sign)}"}
    if presence:
        subscribe["channel_data"] = channel_data
    actions = session.receive(orjson.dumps({"event": "pusher:subscribe", "data": subscribe}), 1.0)
    check_actions(actions)
    if name_error(channel, POLICY.max_channel_name_length) is None:
        for action in actions:
            if isinstance(action, Send):
                assert b"Invalid signature" not in action.message, (channel, action)
    client_event = {"event": f"client-{event}", "channel": channel, "data": payload}
    check_actions(session.receive(orjson.dumps(client_event), 2.0))
    signin = {
        "user_data": user_data,
        "auth": f"{KEY}:{sign(SECRET, f'{SOCKET_ID}::user::{user_data}')}",
    }
    actions = session.receive(orjson.dumps({"event": "pusher:signin", "data": signin}), 3.0)
    check_actions(actions)
    for action in actions:
        if isinstance(action, Send | Close):
            assert "Invalid signature" not in repr(action), (user_data, action)
    check_actions(
        session.receive(
            orjson.dumps({"event": "pusher:unsubscribe", "data": {"channel": channel}}), 4.0
        )
    )


def check_nested(data: FuzzInput) -> None:
    """Client values nested up to ~500 levels deep: byte mutation alone rarely grows an input
    that far, and JSON libraries limit depth differently when reading and writing."""
    depth = data.byte() * 2
    opener, closer = ((b"[", b"]"), (b'{"a":', b"}"))[data.choice(2)]
    nested = opener * depth + (data.chunk() or b"1") + closer * depth
    channel_data = b'{"user_id":"1","user_info":' + nested + b"}"
    frames = [
        b'{"event":"client-x","channel":"private-a","data":' + nested + b"}",
        b'{"event":"pusher:subscribe","data":{"channel":"private-b","auth":' + nested + b"}}",
        b'{"event":"pusher:signin","data":{"auth":"k:s","user_data":' + nested + b"}}",
    ]
    for frame in frames:
        check_decode(frame)
    session = Session(SOCKET_ID, POLICY, 0.0)
    auth = f"{KEY}:{sign(SECRET, f'{SOCKET_ID}:private-a')}"
    session.receive(
        orjson.dumps({"event": "pusher:subscribe", "data": {"channel": "private-a", "auth": auth}}),
        0.0,
    )
    for frame in frames:
        check_actions(session.receive(frame, 1.0))
    try:
        text = channel_data.decode()
    except UnicodeDecodeError:
        return
    signed = f"{KEY}:{sign(SECRET, f'{SOCKET_ID}:presence-p:{text}')}"
    subscribe = {"channel": "presence-p", "auth": signed, "channel_data": text}
    session = Session(SOCKET_ID, POLICY, 0.0)  # the signin above closed the other one
    check_actions(
        session.receive(orjson.dumps({"event": "pusher:subscribe", "data": subscribe}), 2.0)
    )


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - the name atheris and libFuzzer use
    data = FuzzInput(raw)
    match data.choice(5):
        case 0:
            check_decode(data.rest())
        case 1:
            check_decode(data.rest().decode("utf-8", "replace"))
        case 2:
            check_session(data.rest().split(b"\n"))
        case 3:
            check_signed(data)
        case _:
            check_nested(data)


if __name__ == "__main__":
    from entry import fuzz_main

    fuzz_main(TestOneInput)
    sys.exit(0)
