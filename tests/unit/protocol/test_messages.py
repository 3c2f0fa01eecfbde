"""protocol/messages.py: client frames decoded into commands; server events encoded."""

from __future__ import annotations

import pytest

from tidings.protocol.errors import ErrorCode, ProtocolError
from tidings.protocol.messages import (
    PING,
    PONG,
    ClientEvent,
    Command,
    Ping,
    Pong,
    Signin,
    Subscribe,
    Unsubscribe,
    connection_established,
    decode,
    dumps,
    error,
    event,
    subscription_error,
)

# -- decode: good frames ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "command"),
    [
        ('{"event":"pusher:ping","data":{}}', Ping()),
        ('{"event":"pusher:ping"}', Ping()),
        (b'{"event":"pusher:pong","data":"{}"}', Pong()),
        (
            '{"event":"pusher:subscribe","data":{"channel":"news"}}',
            Subscribe("news", None, None),
        ),
        (
            '{"event":"pusher:subscribe","data":"{\\"channel\\":\\"news\\"}"}',
            Subscribe("news", None, None),
        ),
        (
            '{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s",'
            '"channel_data":"{\\"user_id\\":\\"1\\"}"}}',
            Subscribe("presence-a", "k:s", '{"user_id":"1"}'),
        ),
        (
            '{"event":"pusher:subscribe","data":{"channel":"private-a","auth":5}}',
            Subscribe("private-a", 5, None),
        ),
        ('{"event":"pusher:unsubscribe","data":{"channel":"news"}}', Unsubscribe("news")),
        ('{"event":"pusher:unsubscribe","data":"{\\"channel\\":\\"n\\"}"}', Unsubscribe("n")),
        (
            '{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\\"id\\":\\"1\\"}"}}',
            Signin("k:s", '{"id":"1"}'),
        ),
        ('{"event":"pusher:signin","data":{}}', Signin(None, None)),
        (
            '{"event":"client-typing","channel":"private-a","data":{"who":"me"}}',
            ClientEvent("client-typing", "private-a", '{"who":"me"}'),
        ),
        (
            '{"event":"client-x","channel":"private-a","data":"raw text"}',
            ClientEvent("client-x", "private-a", "raw text"),
        ),
        (
            '{"event":"client-x","channel":"private-a","data":[1, 2.5, null]}',
            ClientEvent("client-x", "private-a", "[1,2.5,null]"),
        ),
        (
            '{"event":"client-x","channel":"private-a"}',
            ClientEvent("client-x", "private-a", "null"),
        ),
        (
            '{"event":"client-x","channel":"private-a","data":"{\\"a\\":1}"}',
            ClientEvent("client-x", "private-a", '{"a":1}'),
        ),
    ],
)
def test_decode(frame: str | bytes, command: Command) -> None:
    assert decode(frame) == command


# -- decode: malformed frames -------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("", "message is not valid JSON"),
        ("not json", "message is not valid JSON"),
        (b"\xff\xfe", "message is not valid JSON"),
        ('{"event":"pusher:ping"', "message is not valid JSON"),
        ("[]", "message must be a JSON object"),
        ('"pusher:ping"', "message must be a JSON object"),
        ("null", "message must be a JSON object"),
        ("{}", "message needs an event name (a string)"),
        ('{"event":""}', "message needs an event name (a string)"),
        ('{"event":5}', "message needs an event name (a string)"),
        ('{"event":null}', "message needs an event name (a string)"),
        ('{"event":"pusher:subscribe"}', "pusher:subscribe: data must be an object"),
        ('{"event":"pusher:subscribe","data":[]}', "pusher:subscribe: data must be an object"),
        ('{"event":"pusher:subscribe","data":"{"}', "pusher:subscribe: data is not valid JSON"),
        ('{"event":"pusher:subscribe","data":"[1]"}', "pusher:subscribe: data must be an object"),
        (
            '{"event":"pusher:subscribe","data":{}}',
            "pusher:subscribe: data.channel must be a string",
        ),
        (
            '{"event":"pusher:subscribe","data":{"channel":1}}',
            "pusher:subscribe: data.channel must be a string",
        ),
        ('{"event":"pusher:unsubscribe","data":7}', "pusher:unsubscribe: data must be an object"),
        (
            '{"event":"pusher:unsubscribe","data":{"channel":null}}',
            "pusher:unsubscribe: data.channel must be a string",
        ),
        ('{"event":"pusher:signin","data":"nope"}', "pusher:signin: data is not valid JSON"),
        ('{"event":"pusher:signin"}', "pusher:signin: data must be an object"),
        (
            '{"event":"client-x","data":{}}',
            "client-x: client events need a channel (a string)",
        ),
        (
            '{"event":"client-x","channel":["a"]}',
            "client-x: client events need a channel (a string)",
        ),
        ('{"event":"pusher:unknown"}', "unsupported event pusher:unknown"),
        (
            '{"event":"pusher_internal:subscription_succeeded"}',
            "unsupported event pusher_internal:subscription_succeeded",
        ),
        ('{"event":"hello","channel":"a"}', "hello: client events must be prefixed with client-"),
        # orjson reads 1024 levels but writes 254 (found by fuzzing: a TypeError escaped).
        (
            '{"event":"client-x","channel":"private-a","data":' + "[" * 300 + "]" * 300 + "}",
            "client-x: data nested too deeply",
        ),
    ],
)
def test_decode_errors(frame: str | bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.message == message
    assert caught.value.code is None  # Pusher: malformed frames get code null


# -- encode -------------------------------------------------------------------------------


def test_constants() -> None:
    assert PONG == b'{"event":"pusher:pong","data":"{}"}'
    assert PING == b'{"event":"pusher:ping","data":"{}"}'


def test_connection_established_data_is_a_string() -> None:
    assert connection_established("123.456", 120) == (
        b'{"event":"pusher:connection_established",'
        b'"data":"{\\"socket_id\\":\\"123.456\\",\\"activity_timeout\\":120}"}'
    )


def test_event() -> None:
    assert event("e") == b'{"event":"e"}'
    assert event("e", "c") == b'{"event":"e","channel":"c"}'
    assert event("e", "c", '{"a":1}') == b'{"event":"e","channel":"c","data":"{\\"a\\":1}"}'
    assert event("client-x", "presence-a", "hi", "u1") == (
        b'{"event":"client-x","channel":"presence-a","data":"hi","user_id":"u1"}'
    )
    assert event("e", data="{}") == b'{"event":"e","data":"{}"}'


def test_error_data_is_an_object() -> None:
    assert error("bad") == b'{"event":"pusher:error","data":{"code":null,"message":"bad"}}'
    assert error("slow", ErrorCode.CLIENT_EVENT_RATE_LIMIT) == (
        b'{"event":"pusher:error","data":{"code":4301,"message":"slow"}}'
    )


def test_subscription_error_data_is_an_object() -> None:
    assert subscription_error("private-a", "AuthError", "Invalid signature", 401) == (
        b'{"event":"pusher:subscription_error","channel":"private-a",'
        b'"data":{"type":"AuthError","error":"Invalid signature","status":401}}'
    )


def test_dumps_is_compact() -> None:
    assert dumps({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'


def test_error_code_of_every_error_message() -> None:
    from tidings.protocol import messages

    limited = messages.error("slow down", ErrorCode.CLIENT_EVENT_RATE_LIMIT)
    assert limited.startswith(messages.ERROR_PREFIX)
    assert messages.error_code(limited) == 4301
    codeless = messages.error("not JSON")
    assert codeless.startswith(messages.ERROR_PREFIX)
    assert messages.error_code(codeless) is None
    # Other messages never look like errors, whatever their data says.
    assert not messages.PONG.startswith(messages.ERROR_PREFIX)
    tricky = messages.event("client-x", "c", '{"event":"pusher:error"}')
    assert not tricky.startswith(messages.ERROR_PREFIX)
