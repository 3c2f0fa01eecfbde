"""Client frames decoded into typed commands; server events encoded into bytes.

Pusher protocol 7: every message is a JSON object ``{"event", "channel"?, "data"?}``.
pusher-js sends ``data`` as an object; other clients send it as a JSON string, so both are
accepted. Server-to-client ``data`` is a JSON *string* ("double encoding"), except in
``pusher:error`` and ``pusher:subscription_error`` where it is an object, as Pusher does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tidings.protocol.errors import ErrorCode, ProtocolError


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    auth: object
    channel_data: object
    tidings: object = None  # the recovery opt-in (protocol/recovery.py), checked by the session


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Signin:
    auth: object
    user_data: object


@dataclass(frozen=True, slots=True)
class ClientEvent:
    event: str
    channel: str
    data: str  # always re-encoded as a JSON string, as Pusher forwards it


Command = Subscribe | Unsubscribe | Ping | Pong | Signin | ClientEvent


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _data_object(data: object, event: str) -> dict[str, Any]:
    if isinstance(data, str):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ProtocolError(f"{event}: data is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{event}: data must be an object")
    return data


def _channel(data: dict[str, Any], event: str) -> str:
    channel = data.get("channel")
    if not isinstance(channel, str):
        raise ProtocolError(f"{event}: data.channel must be a string")
    return channel


def decode(text: str | bytes) -> Command:
    """Decode one client frame, or raise :class:`ProtocolError` saying what is wrong."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("message must be a JSON object")
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise ProtocolError("message needs an event name (a string)")
    raw = message.get("data")
    match event:
        case "pusher:ping":
            return Ping()
        case "pusher:pong":
            return Pong()
        case "pusher:subscribe":
            data = _data_object(raw, event)
            return Subscribe(
                _channel(data, event),
                data.get("auth"),
                data.get("channel_data"),
                data.get("tidings"),
            )
        case "pusher:unsubscribe":
            return Unsubscribe(_channel(_data_object(raw, event), event))
        case "pusher:signin":
            data = _data_object(raw, event)
            return Signin(data.get("auth"), data.get("user_data"))
    if event.startswith("client-"):
        channel = message.get("channel")
        if not isinstance(channel, str):
            raise ProtocolError(f"{event}: client events need a channel (a string)")
        if isinstance(raw, str):
            return ClientEvent(event, channel, raw)
        try:
            return ClientEvent(event, channel, dumps(raw))
        except orjson.JSONEncodeError:
            # orjson reads JSON nested up to 1024 levels deep but writes at most 254.
            raise ProtocolError(f"{event}: data nested too deeply") from None
    if event.startswith("pusher:") or event.startswith("pusher_internal:"):
        raise ProtocolError(f"unsupported event {event}")
    raise ProtocolError(f"{event}: client events must be prefixed with client-")


# -- server -> client ----------------------------------------------------------------------


def event(
    name: str, channel: str | None = None, data: str | None = None, user_id: str | None = None
) -> bytes:
    """A server event; ``data`` is already a JSON string (or None to omit it)."""
    message: dict[str, str] = {"event": name}
    if channel is not None:
        message["channel"] = channel
    if data is not None:
        message["data"] = data
    if user_id is not None:
        message["user_id"] = user_id
    return orjson.dumps(message)


def connection_established(socket_id: str, activity_timeout: int) -> bytes:
    data = {"socket_id": socket_id, "activity_timeout": activity_timeout}
    return event("pusher:connection_established", data=dumps(data))


def error(message: str, code: ErrorCode | None = None) -> bytes:
    body = {"code": int(code) if code is not None else None, "message": message}
    return orjson.dumps({"event": "pusher:error", "data": body})


# What every message built by error() starts with (orjson keeps the keys in order).
ERROR_PREFIX = b'{"event":"pusher:error"'
SUBSCRIPTION_ERROR_PREFIX = b'{"event":"pusher:subscription_error"'


def error_code(message: bytes) -> int | None:
    """The code of a ``pusher:error`` built by :func:`error`; None when it has no code."""
    code = orjson.loads(message)["data"]["code"]
    return code if isinstance(code, int) else None


def subscription_error(channel: str, kind: str, message: str, status: int) -> bytes:
    body = {"type": kind, "error": message, "status": status}
    return orjson.dumps({"event": "pusher:subscription_error", "channel": channel, "data": body})


PONG = event("pusher:pong", data="{}")
PING = event("pusher:ping", data="{}")
