"""protocol/session.py: one connection's state machine, fed literal frames and a fake clock."""

from __future__ import annotations

import json

import pytest

from tidings.protocol.auth import sign
from tidings.protocol.channels import ChannelKind, ChannelType
from tidings.protocol.errors import ErrorCode
from tidings.protocol.recovery import OptIn, Resume
from tidings.protocol.session import (
    Broadcast,
    Close,
    Join,
    Leave,
    Member,
    Send,
    Session,
    SessionPolicy,
    SignIn,
    User,
    Watch,
)

KEY = "app-key"
SECRET = "app-secret"
SOCKET = "1.1"
T0 = 1000.0
POLICY = SessionPolicy(KEY, SECRET)

PUBLIC = ChannelType(ChannelKind.PUBLIC, False)
PRIVATE = ChannelType(ChannelKind.PRIVATE, False)
ENCRYPTED = ChannelType(ChannelKind.ENCRYPTED, False)
PRESENCE = ChannelType(ChannelKind.PRESENCE, False)
USER = ChannelType(ChannelKind.USER, False)


def new(policy: SessionPolicy = POLICY) -> Session:
    return Session(SOCKET, policy, T0)


def frame(event: str, data: object = None, channel: str | None = None) -> str:
    message: dict[str, object] = {"event": event}
    if channel is not None:
        message["channel"] = channel
    if data is not None:
        message["data"] = data
    return json.dumps(message)


def auth(message: str, key: str = KEY) -> str:
    return f"{key}:{sign(SECRET, message)}"


def subscribe(channel: str, channel_data: str | None = None, signed: bool = True) -> str:
    data: dict[str, object] = {"channel": channel}
    if signed:
        to_sign = f"{SOCKET}:{channel}" + (f":{channel_data}" if channel_data is not None else "")
        data["auth"] = auth(to_sign)
    if channel_data is not None:
        data["channel_data"] = channel_data
    return frame("pusher:subscribe", data)


def signin(user_data: str, signature: str | None = None) -> str:
    signature = signature or auth(f"{SOCKET}::user::{user_data}")
    return frame("pusher:signin", {"auth": signature, "user_data": user_data})


def error(message: str, code: int | None = None) -> Send:
    body = json.dumps({"code": code, "message": message}, separators=(",", ":"))
    return Send(b'{"event":"pusher:error","data":' + body.encode() + b"}")


def refused(channel: str, kind: str, message: str, status: int) -> Send:
    data = json.dumps({"type": kind, "error": message, "status": status}, separators=(",", ":"))
    return Send(
        b'{"event":"pusher:subscription_error","channel":"'
        + channel.encode()
        + b'","data":'
        + data.encode()
        + b"}"
    )


def test_greeting() -> None:
    assert new().greeting() == (
        b'{"event":"pusher:connection_established",'
        b'"data":"{\\"socket_id\\":\\"1.1\\",\\"activity_timeout\\":120}"}'
    )


def test_greeting_activity_timeout_is_an_integer() -> None:
    session = Session("2.2", SessionPolicy(KEY, SECRET, activity_timeout=30.5), T0)
    assert b'activity_timeout\\":30}' in session.greeting()


# -- ping, pong, malformed ----------------------------------------------------------------


def test_ping_pong() -> None:
    session = new()
    assert session.receive('{"event":"pusher:ping","data":{}}', T0) == [
        Send(b'{"event":"pusher:pong","data":"{}"}')
    ]
    assert session.receive('{"event":"pusher:pong","data":{}}', T0) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "message is not valid JSON"),
        (b"\x00\x01", "message is not valid JSON"),
        ("[1]", "message must be a JSON object"),
        ('{"event":"pusher:subscribe","data":5}', "pusher:subscribe: data must be an object"),
        ('{"event":"pusher:whatever"}', "unsupported event pusher:whatever"),
    ],
)
def test_malformed_frames_answer_error_code_null(text: str | bytes, message: str) -> None:
    session = new()
    assert session.receive(text, T0) == [error(message)]
    assert not session.closed
    assert session.receive('{"event":"pusher:ping"}', T0) == [
        Send(b'{"event":"pusher:pong","data":"{}"}')
    ]


# -- subscribe ----------------------------------------------------------------------------


def test_subscribe_public() -> None:
    session = new()
    assert session.receive(subscribe("news", signed=False), T0) == [Join("news", PUBLIC, None)]
    assert session.subscriptions == {"news": None}
    assert not session.authorized  # public channels do not authorize a connection


def test_subscribe_with_the_tidings_opt_in() -> None:
    session = new()
    recover = {"epoch": "E", "offset": 3, "socket_id": "9.9"}
    text = frame("pusher:subscribe", {"channel": "news", "tidings": {"v": 1, "recover": recover}})
    assert session.receive(text, T0) == [Join("news", PUBLIC, None, OptIn(Resume("E", 3, "9.9")))]
    assert session.subscriptions == {"news": None}


def test_subscribe_with_a_malformed_opt_in_is_refused_with_4303_and_not_subscribed() -> None:
    session = new()
    text = frame("pusher:subscribe", {"channel": "news", "tidings": {"v": 1, "recover": []}})
    assert session.receive(text, T0) == [
        error("pusher:subscribe: tidings recover must be an object", 4303)
    ]
    assert session.subscriptions == {} and not session.closed


def test_subscribe_public_data_as_json_string() -> None:
    text = '{"event":"pusher:subscribe","data":"{\\"channel\\":\\"news\\"}"}'
    assert new().receive(text, T0) == [Join("news", PUBLIC, None)]


def test_subscribe_cache_channel() -> None:
    assert new().receive(subscribe("cache-news", signed=False), T0) == [
        Join("cache-news", ChannelType(ChannelKind.PUBLIC, True), None)
    ]


def test_subscribe_private() -> None:
    session = new()
    assert session.receive(subscribe("private-a"), T0) == [Join("private-a", PRIVATE, None)]
    assert session.authorized


def test_subscribe_private_cache() -> None:
    assert new().receive(subscribe("private-cache-a"), T0) == [
        Join("private-cache-a", ChannelType(ChannelKind.PRIVATE, True), None)
    ]


def test_subscribe_encrypted() -> None:
    session = new()
    assert session.receive(subscribe("private-encrypted-a"), T0) == [
        Join("private-encrypted-a", ENCRYPTED, None)
    ]


def bad_signature(channel: str, signed: str, given: str) -> Send:
    """The refusal naming the string the server signed (and never the expected HMAC);
    ``given`` is the client's whole ``key:signature``."""
    signature = given.partition(":")[2]
    message = f"Invalid signature: Expected HMAC SHA256 hex digest of {signed}, but got {signature}"
    return refused(channel, "AuthError", message, 401)


@pytest.mark.parametrize("missing", [{}, {"auth": ""}, {"auth": None}])
def test_subscribe_private_without_auth_says_auth_is_missing(missing: dict[str, object]) -> None:
    session = new()
    text = frame("pusher:subscribe", {"channel": "private-a", **missing})
    assert session.receive(text, T0) == [
        refused("private-a", "AuthError", "Missing auth for channel private-a", 401)
    ]
    assert session.subscriptions == {}
    assert not session.authorized


def test_subscribe_private_bad_signature() -> None:
    text = frame("pusher:subscribe", {"channel": "private-a", "auth": f"{KEY}:{'0' * 64}"})
    refusal = new().receive(text, T0)
    assert refusal == [bad_signature("private-a", f"{SOCKET}:private-a", f"{KEY}:{'0' * 64}")]
    # The refusal teaches the string to sign; it never gives away the right answer.
    assert sign(SECRET, f"{SOCKET}:private-a") not in str(refusal)
    assert SECRET not in str(refusal)


def test_subscribe_private_signature_for_another_channel() -> None:
    given = auth(f"{SOCKET}:private-b")
    text = frame("pusher:subscribe", {"channel": "private-a", "auth": given})
    expected = bad_signature("private-a", f"{SOCKET}:private-a", given)
    assert new().receive(text, T0) == [expected]


def test_subscribe_private_wrong_key_in_auth() -> None:
    given = auth(f"{SOCKET}:private-a", key="other-key")
    text = frame("pusher:subscribe", {"channel": "private-a", "auth": given})
    message = (
        "Invalid key in subscription auth data: 'other-key'; auth must be 'app-key:' and the"
        f" HMAC SHA256 hex digest of {SOCKET}:private-a"
    )
    assert new().receive(text, T0) == [refused("private-a", "AuthError", message, 401)]


@pytest.mark.parametrize("given", ["x" * 5000, f"{KEY}:{'x' * 5000}"])
def test_subscribe_private_echoes_at_most_100_characters_of_auth(given: str) -> None:
    text = frame("pusher:subscribe", {"channel": "private-a", "auth": given})
    [refusal] = new().receive(text, T0)
    assert isinstance(refusal, Send)
    assert "x" * 100 + "..." in refusal.message.decode()
    assert "x" * 101 not in refusal.message.decode()


def test_subscribe_private_with_signed_channel_data() -> None:
    # Laravel Reverb, and pusher SDKs' authenticate(custom_data=...), sign channel_data on
    # private channels too: socket_id:channel:channel_data.
    session = new()
    assert session.receive(subscribe("private-a", '{"user_id":"u1"}'), T0) == [
        Join("private-a", PRIVATE, None)
    ]
    assert session.authorized


def test_subscribe_private_channel_data_must_be_signed_when_sent() -> None:
    given = auth(f"{SOCKET}:private-a")  # signed without the channel_data it sends
    text = frame(
        "pusher:subscribe",
        {"channel": "private-a", "auth": given, "channel_data": '{"user_id":"u1"}'},
    )
    signed = f'{SOCKET}:private-a:{{"user_id":"u1"}}'
    assert new().receive(text, T0) == [bad_signature("private-a", signed, given)]


def test_subscribe_private_channel_data_signature_needs_the_secret() -> None:
    data = '{"user_id":"u1"}'
    given = f"{KEY}:{sign('not-the-secret', f'{SOCKET}:private-a:{data}')}"
    text = frame("pusher:subscribe", {"channel": "private-a", "auth": given, "channel_data": data})
    assert new().receive(text, T0) == [
        bad_signature("private-a", f"{SOCKET}:private-a:{data}", given)
    ]


def test_subscribe_presence_without_auth_says_auth_is_missing() -> None:
    text = frame("pusher:subscribe", {"channel": "presence-room", "auth": ""})
    assert new().receive(text, T0) == [
        refused("presence-room", "AuthError", "Missing auth for channel presence-room", 401)
    ]


def test_subscribe_encrypted_without_auth() -> None:
    assert new().receive(subscribe("private-encrypted-a", signed=False), T0) == [
        refused(
            "private-encrypted-a", "AuthError", "Missing auth for channel private-encrypted-a", 401
        )
    ]


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ("", "channel name must be a non-empty string"),
        ("bad name", "channel name may contain only A-Z a-z 0-9 _ - = @ , . ;"),
        ("#secret", "channel name may contain only A-Z a-z 0-9 _ - = @ , . ;"),
        ("x" * 201, "channel name longer than 200 characters"),
        ("#server-to-user-", "user channel without a user id"),
    ],
)
def test_subscribe_bad_names(channel: str, message: str) -> None:
    session = new()
    assert session.receive(subscribe(channel, signed=False), T0) == [
        refused(channel, "InvalidChannel", message, 400)
    ]
    assert session.subscriptions == {}


def test_subscribe_name_length_follows_policy() -> None:
    session = new(SessionPolicy(KEY, SECRET, max_channel_name_length=3))
    assert session.receive(subscribe("abc", signed=False), T0) == [Join("abc", PUBLIC, None)]
    assert session.receive(subscribe("abcd", signed=False), T0) == [
        refused("abcd", "InvalidChannel", "channel name longer than 3 characters", 400)
    ]


def test_subscribe_presence() -> None:
    session = new()
    data = '{"user_id":"u1","user_info":{"name":"Ann"}}'
    member = Member("u1", {"name": "Ann"})
    assert session.receive(subscribe("presence-room", data), T0) == [
        Join("presence-room", PRESENCE, member)
    ]
    assert session.subscriptions == {"presence-room": member}
    assert session.authorized


def test_subscribe_presence_cache() -> None:
    data = '{"user_id":"u1"}'
    assert new().receive(subscribe("presence-cache-room", data), T0) == [
        Join("presence-cache-room", ChannelType(ChannelKind.PRESENCE, True), Member("u1"))
    ]


def test_presence_numeric_user_id_becomes_a_string() -> None:
    data = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    assert new().receive(subscribe("presence-foobar", data), T0) == [
        Join("presence-foobar", PRESENCE, Member("10", {"name": "Mr. Channels"}))
    ]


def test_presence_without_channel_data() -> None:
    assert new().receive(subscribe("presence-room"), T0) == [
        refused("presence-room", "AuthError", "presence channels need channel_data", 401)
    ]


def test_presence_channel_data_not_a_string() -> None:
    text = frame(
        "pusher:subscribe",
        {"channel": "presence-room", "auth": "x", "channel_data": {"user_id": "1"}},
    )
    assert new().receive(text, T0) == [
        refused("presence-room", "AuthError", "presence channels need channel_data", 401)
    ]


def test_presence_bad_signature() -> None:
    given = auth(f"{SOCKET}:presence-room")  # signed without channel_data
    text = frame(
        "pusher:subscribe",
        {"channel": "presence-room", "auth": given, "channel_data": '{"user_id":"u1"}'},
    )
    signed = f'{SOCKET}:presence-room:{{"user_id":"u1"}}'
    assert new().receive(text, T0) == [bad_signature("presence-room", signed, given)]


def test_presence_channel_data_tampered() -> None:
    signed = auth(f'{SOCKET}:presence-room:{{"user_id":"u1"}}')
    text = frame(
        "pusher:subscribe",
        {"channel": "presence-room", "auth": signed, "channel_data": '{"user_id":"admin"}'},
    )
    signed_for = f'{SOCKET}:presence-room:{{"user_id":"admin"}}'
    assert new().receive(text, T0) == [bad_signature("presence-room", signed_for, signed)]


@pytest.mark.parametrize(
    ("channel_data", "message"),
    [
        ("not json", "channel_data is not valid JSON"),
        ('["u1"]', "channel_data must be a JSON object"),
        ('{"user_info":{}}', "channel_data needs a user_id"),
        ('{"user_id":""}', "channel_data needs a user_id"),
        ('{"user_id":true}', "channel_data needs a user_id"),
        ('{"user_id":1.5}', "channel_data needs a user_id"),
    ],
)
def test_presence_signed_but_invalid_channel_data_is_an_auth_error(
    channel_data: str, message: str
) -> None:
    """Contract: channel_data invalid JSON / no user_id -> AuthError 401."""
    assert new().receive(subscribe("presence-room", channel_data), T0) == [
        refused("presence-room", "AuthError", message, 401)
    ]


def test_presence_user_id_too_long() -> None:
    data = json.dumps({"user_id": "u" * 129})
    session = new()
    assert session.receive(subscribe("presence-room", data), T0) == [
        refused("presence-room", "LimitReached", "user_id longer than 128", 4100)
    ]
    ok = json.dumps({"user_id": "u" * 128})
    assert session.receive(subscribe("presence-room", ok), T0) == [
        Join("presence-room", PRESENCE, Member("u" * 128))
    ]


def test_presence_member_info_too_big() -> None:
    policy = SessionPolicy(KEY, SECRET, max_presence_member_bytes=20)
    fits = json.dumps({"user_id": "1", "user_info": {"n": "x" * 12}})  # {"n":"xxxxxxxxxxxx"} = 20
    too_big = json.dumps({"user_id": "1", "user_info": {"n": "x" * 13}})
    session = new(policy)
    assert session.receive(subscribe("presence-a", fits), T0) == [
        Join("presence-a", PRESENCE, Member("1", {"n": "x" * 12}))
    ]
    assert session.receive(subscribe("presence-b", too_big), T0) == [
        refused("presence-b", "LimitReached", "user_info larger than 20 bytes", 4100)
    ]
    assert "presence-b" not in session.subscriptions


def test_presence_member_info_limit_counts_utf8_bytes() -> None:
    """max_presence_member_bytes is a byte limit: 12 "é" are 24 bytes of UTF-8."""
    policy = SessionPolicy(KEY, SECRET, max_presence_member_bytes=20)
    data = json.dumps({"user_id": "1", "user_info": {"n": "é" * 12}}, ensure_ascii=False)
    [action] = new(policy).receive(subscribe("presence-a", data), T0)
    assert action == refused("presence-a", "LimitReached", "user_info larger than 20 bytes", 4100)


def test_presence_member_info_nested_too_deeply() -> None:
    """orjson reads 1024 levels but writes 254 (found by fuzzing: a TypeError escaped)."""
    data = '{"user_id":"1","user_info":' + "[" * 300 + "]" * 300 + "}"
    [action] = new().receive(subscribe("presence-a", data), T0)
    assert action == refused("presence-a", "LimitReached", "user_info nested too deeply", 4100)


def existing(channel: str) -> Send:
    return error(f"Existing subscription to channel {channel}")


def test_channel_limit() -> None:
    session = new(SessionPolicy(KEY, SECRET, max_channels_per_connection=2))
    assert session.receive(subscribe("a", signed=False), T0) == [Join("a", PUBLIC, None)]
    assert session.receive(subscribe("b", signed=False), T0) == [Join("b", PUBLIC, None)]
    assert session.receive(subscribe("c", signed=False), T0) == [
        refused("c", "LimitReached", "more than 2 channels", 4100)
    ]
    # Resubscribing to a channel already held is not a new channel.
    assert session.receive(subscribe("a", signed=False), T0) == [existing("a")]
    session.receive(frame("pusher:unsubscribe", {"channel": "b"}), T0)
    assert session.receive(subscribe("c", signed=False), T0) == [Join("c", PUBLIC, None)]


def test_resubscribe_is_an_error_without_a_join() -> None:
    """Pusher: a duplicate subscribe gets pusher:error "Existing subscription to channel"
    (code null). No Join, so no second roster: the reply is smaller than the request."""
    session = new()
    data = '{"user_id":"u1"}'
    first = session.receive(subscribe("presence-room", data), T0)
    assert first == [Join("presence-room", PRESENCE, Member("u1"))]
    for again in (
        subscribe("presence-room", data),
        # Unsigned, or as another member: the subscription held is kept, never replaced.
        subscribe("presence-room", '{"user_id":"u2"}', signed=False),
    ):
        assert session.receive(again, T0) == [existing("presence-room")]
    assert session.subscriptions == {"presence-room": Member("u1")}
    assert not session.closed


@pytest.mark.parametrize("channel", ["news", "private-a", "private-encrypted-a", "cache-a"])
def test_resubscribe_to_other_kinds_is_an_error_too(channel: str) -> None:
    session = new()
    [join] = session.receive(subscribe(channel), T0)
    assert isinstance(join, Join)
    assert session.receive(subscribe(channel), T0) == [existing(channel)]


def test_resubscribe_after_unsubscribe_or_refusal_joins_again() -> None:
    session = new()
    session.receive(subscribe("presence-room", '{"user_id":"u1"}'), T0)
    session.receive(frame("pusher:unsubscribe", {"channel": "presence-room"}), T0)
    assert session.receive(subscribe("presence-room", '{"user_id":"u2"}'), T0) == [
        Join("presence-room", PRESENCE, Member("u2"))
    ]
    # The node refused the Join (a full presence channel): the next subscribe is a new one.
    session.forget("presence-room")
    assert session.receive(subscribe("presence-room", '{"user_id":"u2"}'), T0) == [
        Join("presence-room", PRESENCE, Member("u2"))
    ]


def test_resubscribe_to_the_user_channel_is_an_error() -> None:
    session = new()
    session.receive(signin('{"id":"u1"}'), T0)
    assert session.receive(subscribe("#server-to-user-u1", signed=False), T0) == [
        Join("#server-to-user-u1", USER, None)
    ]
    assert session.receive(subscribe("#server-to-user-u1", signed=False), T0) == [
        existing("#server-to-user-u1")
    ]


def test_unsubscribe() -> None:
    session = new()
    session.receive(subscribe("presence-room", '{"user_id":"u1"}'), T0)
    session.receive(subscribe("news", signed=False), T0)
    assert session.receive(frame("pusher:unsubscribe", {"channel": "presence-room"}), T0) == [
        Leave("presence-room", PRESENCE, Member("u1"))
    ]
    assert session.receive(frame("pusher:unsubscribe", {"channel": "news"}), T0) == [
        Leave("news", PUBLIC, None)
    ]
    assert session.subscriptions == {}


def test_unsubscribe_twice_or_never_subscribed_is_silent() -> None:
    session = new()
    session.receive(subscribe("news", signed=False), T0)
    text = frame("pusher:unsubscribe", {"channel": "news"})
    assert session.receive(text, T0) == [Leave("news", PUBLIC, None)]
    assert session.receive(text, T0) == []
    assert session.receive(frame("pusher:unsubscribe", {"channel": "other"}), T0) == []


def test_forget_after_node_refusal() -> None:
    session = new()
    session.receive(subscribe("presence-room", '{"user_id":"u1"}'), T0)
    session.forget("presence-room")
    session.forget("never-there")
    assert session.subscriptions == {}


# -- signin -------------------------------------------------------------------------------


def test_signin() -> None:
    session = new()
    user_data = '{"id":"u1","user_info":{"name":"Ann"}}'
    # The user's channel is joined before the client hears of its sign-in.
    assert session.receive(signin(user_data), T0) == [
        SignIn(User("u1", user_data)),
        Send(
            b'{"event":"pusher:signin_success",'
            b'"data":"{\\"user_data\\":\\"{\\\\\\"id\\\\\\":\\\\\\"u1\\\\\\",'
            b'\\\\\\"user_info\\\\\\":{\\\\\\"name\\\\\\":\\\\\\"Ann\\\\\\"}}\\"}"}'
        ),
        Watch(User("u1", user_data)),
    ]
    assert session.user == User("u1", user_data)
    assert session.authorized


def test_signin_success_data_round_trips() -> None:
    user_data = '{"id":"u1"}'
    [_, success, _] = new().receive(signin(user_data), T0)
    assert isinstance(success, Send)
    message = json.loads(success.message)
    assert message["event"] == "pusher:signin_success"
    assert json.loads(message["data"]) == {"user_data": user_data}


def test_signin_data_as_json_string() -> None:
    user_data = '{"id":"u1"}'
    inner = json.dumps({"auth": auth(f"{SOCKET}::user::{user_data}"), "user_data": user_data})
    actions = new().receive(frame("pusher:signin", inner), T0)
    assert actions[0] == SignIn(User("u1", user_data))


def test_signin_bad_signature_closes_4009_naming_the_string_to_sign() -> None:
    session = new()
    problem = (
        f"Invalid signature: Expected HMAC SHA256 hex digest of "
        f'{SOCKET}::user::{{"id":"u1"}}, but got {"0" * 64}'
    )
    assert session.receive(signin('{"id":"u1"}', f"{KEY}:{'0' * 64}"), T0) == [
        error(problem, 4009),
        Close(4009, problem),
    ]
    assert session.closed and session.user is None
    assert session.receive('{"event":"pusher:ping"}', T0) == []  # nothing after close


def test_signin_wrong_key_closes_4009() -> None:
    user_data = '{"id":"u1"}'
    wrong = auth(f"{SOCKET}::user::{user_data}", key="other")
    problem = (
        f"Invalid key in signin auth: 'other'; auth must be '{KEY}:' and the HMAC SHA256 "
        f"hex digest of {SOCKET}::user::{user_data}"
    )
    assert new().receive(signin(user_data, wrong), T0) == [
        error(problem, 4009),
        Close(4009, problem),
    ]


def test_signin_without_auth_says_it_is_missing() -> None:
    user_data = '{"id":"u1"}'
    problem = (
        f"signin needs auth: '{KEY}:' and the HMAC SHA256 hex digest of {SOCKET}::user::{user_data}"
    )
    assert new().receive(frame("pusher:signin", {"user_data": user_data}), T0) == [
        error(problem, 4009),
        Close(4009, problem),
    ]


def test_signin_without_user_data() -> None:
    text = frame("pusher:signin", {"auth": "x"})
    message = "signin needs user_data (a JSON string)"
    assert new().receive(text, T0) == [error(message, 4009), Close(4009, message)]


def test_signin_user_data_not_json() -> None:
    message = "user_data is not valid JSON"
    assert new().receive(signin("{not json"), T0) == [error(message, 4009), Close(4009, message)]


@pytest.mark.parametrize(
    "user_data",
    [
        '{"user_info":{}}',
        '{"id":""}',
        '{"id":12345}',
        '["u1"]',
        '"u1"',
        json.dumps({"id": "u" * 129}),
    ],
)
def test_signin_user_data_without_id(user_data: str) -> None:
    message = "user_data needs an id (a string)"
    assert new().receive(signin(user_data), T0) == [error(message, 4009), Close(4009, message)]


def test_signin_twice() -> None:
    session = new()
    session.receive(signin('{"id":"u1"}'), T0)
    assert session.receive(signin('{"id":"u2"}'), T0) == [error("already signed in")]
    assert session.user is not None and session.user.id == "u1"


def test_signin_watchlist() -> None:
    user_data = '{"id":"u1","watchlist":["u2",3,"u2",null,{"x":1},"u4"]}'
    actions = new().receive(signin(user_data), T0)
    assert actions[-1] == Watch(User("u1", user_data, ("u2", "3", "u4")))


def test_signin_watchlist_not_a_list_is_ignored() -> None:
    user_data = '{"id":"u1","watchlist":"u2"}'
    assert new().receive(signin(user_data), T0)[-1] == Watch(User("u1", user_data, ()))


def test_signin_watchlist_over_100() -> None:
    ids = [f"w{i}" for i in range(150)]
    user_data = json.dumps({"id": "u1", "watchlist": ids})
    session = new()
    actions = session.receive(signin(user_data), T0)
    user = User("u1", user_data, tuple(ids[:100]))
    assert len(actions) == 4
    assert actions[0] == SignIn(user)
    assert isinstance(actions[1], Send)
    assert json.loads(actions[1].message)["event"] == "pusher:signin_success"
    assert actions[2] == error("watchlist over 100 user ids; only the first ones are used", 4302)
    assert actions[3] == Watch(user)
    assert not session.closed


def test_signin_watchlist_of_exactly_100() -> None:
    ids = [str(i) for i in range(100)]
    user_data = json.dumps({"id": "u1", "watchlist": ids})
    actions = new().receive(signin(user_data), T0)
    assert len(actions) == 3 and actions[2] == Watch(User("u1", user_data, tuple(ids)))


def test_user_channel() -> None:
    assert User("u1", "{}").channel == "#server-to-user-u1"


def test_subscribe_own_user_channel() -> None:
    session = new()
    session.receive(signin('{"id":"u1"}'), T0)
    assert session.receive(subscribe("#server-to-user-u1", signed=False), T0) == [
        Join("#server-to-user-u1", USER, None)
    ]


def test_subscribe_user_channel_of_another_user_or_before_signin() -> None:
    session = new()
    expected = [
        refused("#server-to-user-u1", "AuthError", "only the signed-in user may subscribe", 401)
    ]
    assert session.receive(subscribe("#server-to-user-u1", signed=False), T0) == expected
    session.receive(signin('{"id":"u2"}'), T0)
    assert session.receive(subscribe("#server-to-user-u1", signed=False), T0) == expected


# -- client events ------------------------------------------------------------------------


def client_event(channel: str, data: object = None, name: str = "client-typing") -> str:
    return frame(name, data if data is not None else {"t": 1}, channel)


def test_client_event_on_private_channel() -> None:
    session = new()
    session.receive(subscribe("private-a"), T0)
    assert session.receive(client_event("private-a", {"t": 1}), T0) == [
        Broadcast("private-a", "client-typing", '{"t":1}', None)
    ]


def test_client_event_string_data_kept_as_is() -> None:
    session = new()
    session.receive(subscribe("private-a"), T0)
    assert session.receive(client_event("private-a", "cipher"), T0) == [
        Broadcast("private-a", "client-typing", "cipher", None)
    ]


@pytest.mark.parametrize("channel", ["private-encrypted-a", "private-encrypted-cache-a"])
@pytest.mark.parametrize("data", [{"t": 1}, {"nonce": "bm9uY2U=", "ciphertext": "Y2lwaGVy"}])
def test_client_event_on_encrypted_channel_is_refused(channel: str, data: object) -> None:
    """Pusher's client libraries never send these ("Client events are not supported on
    encrypted channels"); one that does is refused, plaintext or not, and nothing is relayed."""
    session = new()
    session.receive(subscribe(channel), T0)
    assert session.receive(client_event(channel, data), T0) == [
        error("Client events are not supported on encrypted channels")
    ]
    assert not session.closed
    # The refusal does not use up the client event rate of the connection.
    session.receive(subscribe("private-b"), T0)
    for _ in range(POLICY.max_client_events_per_second):
        assert isinstance(session.receive(client_event("private-b"), T0)[0], Broadcast)


def test_client_event_on_presence_carries_user_id() -> None:
    session = new()
    session.receive(subscribe("presence-room", '{"user_id":42}'), T0)
    assert session.receive(client_event("presence-room"), T0) == [
        Broadcast("presence-room", "client-typing", '{"t":1}', "42")
    ]


def test_client_events_disabled() -> None:
    session = new(SessionPolicy(KEY, SECRET, client_events=False))
    session.receive(subscribe("private-a"), T0)
    assert session.receive(client_event("private-a"), T0) == [
        error("client events are not enabled for this app")
    ]


@pytest.mark.parametrize("channel", ["news", "cache-news", "#server-to-user-u1"])
def test_client_event_on_public_channel(channel: str) -> None:
    session = new()
    session.receive(signin('{"id":"u1"}'), T0)
    session.receive(subscribe(channel, signed=False), T0)
    assert channel in session.subscriptions
    assert session.receive(client_event(channel), T0) == [
        error("client events are allowed only on private and presence channels")
    ]


def test_client_event_not_subscribed() -> None:
    assert new().receive(client_event("private-a"), T0) == [error("not subscribed to private-a")]


def test_client_event_too_big() -> None:
    session = new(SessionPolicy(KEY, SECRET, max_event_payload_bytes=10))
    session.receive(subscribe("private-a"), T0)
    assert session.receive(client_event("private-a", "x" * 10), T0) == [
        Broadcast("private-a", "client-typing", "x" * 10, None)
    ]
    assert session.receive(client_event("private-a", "x" * 11), T0) == [
        error("event data larger than 10 bytes")
    ]
    # Bytes, not characters.
    assert session.receive(client_event("private-a", "é" * 6), T0) == [
        error("event data larger than 10 bytes")
    ]


def test_client_event_name_too_long() -> None:
    session = new(SessionPolicy(KEY, SECRET, max_event_name_length=10))
    session.receive(subscribe("private-a"), T0)
    assert session.receive(client_event("private-a", name="client-abc"), T0) == [
        Broadcast("private-a", "client-abc", '{"t":1}', None)
    ]
    assert session.receive(client_event("private-a", name="client-abcd"), T0) == [
        error("event name too long")
    ]


RATE_LIMITED = error("Client event rejected due to rate limit", 4301)


def test_client_event_rate_limit() -> None:
    session = new()
    session.receive(subscribe("private-a"), T0)
    ok = [Broadcast("private-a", "client-typing", '{"t":1}', None)]
    # Ten events in the window that starts at 100.9 are allowed...
    for i in range(10):
        assert session.receive(client_event("private-a"), 100.9 + i * 0.01) == ok
    # ...crossing the wall-clock second does not open a new window: still 4301.
    assert session.receive(client_event("private-a"), 101.1) == [RATE_LIMITED]
    assert session.receive(client_event("private-a"), 101.8) == [RATE_LIMITED]
    assert not session.closed
    # A full second after the window opened, events flow again.
    assert session.receive(client_event("private-a"), 101.9) == ok
    for _ in range(9):
        assert session.receive(client_event("private-a"), 102.0) == ok
    assert session.receive(client_event("private-a"), 102.5) == [RATE_LIMITED]
    assert session.receive(client_event("private-a"), 103.0) == ok


def test_client_event_rate_limit_follows_policy() -> None:
    session = new(SessionPolicy(KEY, SECRET, max_client_events_per_second=2))
    session.receive(subscribe("private-a"), T0)
    results = [session.receive(client_event("private-a"), T0 + 0.1 * i) for i in range(3)]
    assert results[2] == [RATE_LIMITED]
    assert all(isinstance(r[0], Broadcast) for r in results[:2])


def test_refused_client_events_do_not_count_against_the_rate() -> None:
    session = new(SessionPolicy(KEY, SECRET, max_client_events_per_second=1))
    session.receive(subscribe("private-a"), T0)
    session.receive(client_event("private-b"), T0)  # not subscribed
    assert isinstance(session.receive(client_event("private-a"), T0)[0], Broadcast)


# -- tick: activity, pong and authorization timers ----------------------------------------


def test_tick_idle_ping_then_4201() -> None:
    session = new(SessionPolicy(KEY, SECRET, activity_timeout=120, pong_timeout=30))
    assert session.tick(T0 + 119.9) == []
    assert session.tick(T0 + 120) == [Send(b'{"event":"pusher:ping","data":"{}"}')]
    assert session.tick(T0 + 125) == []  # one ping per idle period
    assert session.tick(T0 + 149.9) == []
    assert session.tick(T0 + 150) == [
        error("Pong reply not received", 4201),
        Close(4201, "Pong reply not received"),
    ]
    assert session.closed
    assert session.tick(T0 + 500) == []


def test_tick_any_message_resets_activity() -> None:
    session = new(SessionPolicy(KEY, SECRET, activity_timeout=120, pong_timeout=30))
    session.receive(subscribe("news", signed=False), T0 + 100)
    assert session.tick(T0 + 219) == []
    assert session.tick(T0 + 220) == [Send(b'{"event":"pusher:ping","data":"{}"}')]
    # Even a malformed frame counts as activity, and cancels the pending pong deadline.
    session.receive("garbage", T0 + 240)
    assert session.tick(T0 + 255) == []
    assert session.tick(T0 + 359) == []
    assert session.tick(T0 + 360) == [Send(b'{"event":"pusher:ping","data":"{}"}')]
    session.receive('{"event":"pusher:pong","data":{}}', T0 + 361)
    assert session.tick(T0 + 400) == []
    assert not session.closed


def test_tick_authorized_connections_deadline() -> None:
    policy = SessionPolicy(KEY, SECRET, authorized_connections_timeout=30)
    session = new(policy)
    assert session.tick(T0 + 29.9) == []
    message = "Connection not authorized within timeout"
    assert session.tick(T0 + 30) == [error(message, 4009), Close(4009, message)]
    assert session.closed
    assert session.tick(T0 + 31) == []
    assert session.receive(subscribe("private-a"), T0 + 31) == []


def test_public_subscription_does_not_authorize() -> None:
    session = new(SessionPolicy(KEY, SECRET, authorized_connections_timeout=30))
    session.receive(subscribe("news", signed=False), T0 + 1)
    assert session.tick(T0 + 30)[-1] == Close(4009, "Connection not authorized within timeout")


@pytest.mark.parametrize(
    "text",
    [subscribe("private-a"), subscribe("presence-a", '{"user_id":"1"}'), signin('{"id":"u1"}')],
)
def test_authorizing_before_the_deadline(text: str) -> None:
    session = new(SessionPolicy(KEY, SECRET, authorized_connections_timeout=30))
    session.receive(text, T0 + 10)
    assert session.authorized
    assert session.tick(T0 + 31) == []


def test_no_authorized_deadline_by_default() -> None:
    session = new()
    assert session.tick(T0 + 100) == []


def test_close_and_nothing_after() -> None:
    session = new()
    assert session.close(ErrorCode.RECONNECT, "bye") == [error("bye", 4200), Close(4200, "bye")]
    assert session.closed
    assert session.receive(subscribe("news", signed=False), T0) == []
    assert session.tick(T0 + 10_000) == []
