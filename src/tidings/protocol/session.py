"""One connection's Pusher protocol state machine, with no I/O.

The edge feeds each text frame to :meth:`Session.receive` and calls :meth:`Session.tick`
periodically, both with the current time; they return :data:`Action` values for the
edge and the node to carry out (send bytes, close, join or leave a channel, broadcast a
client event, register a signed-in user). The session never reads a clock or a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tidings.protocol import messages
from tidings.protocol.auth import channel_auth_error, user_auth_error
from tidings.protocol.channels import USER_CHANNEL_PREFIX, ChannelKind, ChannelType, channel_type
from tidings.protocol.channels import name_error as channel_name_error
from tidings.protocol.errors import ErrorCode, ProtocolError
from tidings.protocol.recovery import OptIn, opt_in

# Pusher: "The user id ... at most 128 characters"; "watchlist ... up to 100 user ids".
MAX_USER_ID_LENGTH = 128
MAX_WATCHLIST = 100
# The wording of Pusher's client libraries, which refuse these events themselves.
ENCRYPTED_CLIENT_EVENTS = "Client events are not supported on encrypted channels"


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """What one app allows a connection to do; built once per app."""

    key: str
    secret: str
    activity_timeout: float = 120.0
    pong_timeout: float = 30.0
    client_events: bool = True
    max_client_events_per_second: int = 10
    max_event_payload_bytes: int = 10240
    max_event_name_length: int = 200
    max_channel_name_length: int = 200
    max_channels_per_connection: int = 100
    max_presence_member_bytes: int = 1024
    authorized_connections_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """A presence channel member: a user, who may be connected through several sockets."""

    user_id: str
    user_info: Any = None


@dataclass(frozen=True, slots=True)
class User:
    """A signed-in user (``pusher:signin``)."""

    id: str
    user_data: str
    watchlist: tuple[str, ...] = ()

    @property
    def channel(self) -> str:
        return USER_CHANNEL_PREFIX + self.id


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send this JSON message to the connection itself."""

    message: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with a WebSocket close code."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Join:
    """Subscribe the connection; the node answers with subscription_succeeded or an error.

    ``opt_in``: the client asked for positions (and maybe recovery); the node honours it on
    channels with history and ignores it elsewhere."""

    channel: str
    type: ChannelType
    member: Member | None
    opt_in: OptIn | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    channel: str
    type: ChannelType
    member: Member | None


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A client event for every other subscriber of ``channel``."""

    channel: str
    event: str
    data: str
    user_id: str | None


@dataclass(frozen=True, slots=True)
class SignIn:
    """Join the user's channel: done before ``pusher:signin_success`` goes out, so that a
    message sent to the user as soon as the client hears of its sign-in reaches it."""

    user: User


@dataclass(frozen=True, slots=True)
class Watch:
    """Start the user's watchlist: its first ``online`` event follows the sign-in's answer."""

    user: User


Action = Send | Close | Join | Leave | Broadcast | SignIn | Watch


def _refuse(channel: str, kind: str, message: str, status: int) -> list[Action]:
    return [Send(messages.subscription_error(channel, kind, message, status))]


def _fail(message: str, code: ErrorCode) -> list[Action]:
    """pusher:error then a close with the same code (as Pusher and Soketi do)."""
    return [Send(messages.error(message, code)), Close(code, message)]


@dataclass(slots=True)
class Session:
    socket_id: str
    policy: SessionPolicy
    connected_at: float
    last_seen: float = 0.0
    ping_sent_at: float | None = None
    user: User | None = None
    authorized: bool = False
    closed: bool = False
    subscriptions: dict[str, Member | None] = field(default_factory=dict)
    _window_start: float = 0.0
    _window_count: int = 0

    def __post_init__(self) -> None:
        self.last_seen = self.connected_at

    def greeting(self) -> bytes:
        return messages.connection_established(self.socket_id, int(self.policy.activity_timeout))

    # -- input -------------------------------------------------------------------------------

    def receive(self, text: str | bytes, now: float) -> list[Action]:
        """Handle one client frame received at ``now``."""
        if self.closed:
            return []
        # Pusher: any message from the client counts as activity.
        self.last_seen = now
        self.ping_sent_at = None
        try:
            command = messages.decode(text)
        except ProtocolError as exc:
            return [Send(messages.error(exc.message, exc.code))]
        match command:
            case messages.Ping():
                return [Send(messages.PONG)]
            case messages.Pong():
                return []
            case messages.Subscribe():
                return self._subscribe(command)
            case messages.Unsubscribe(channel=channel):
                if channel not in self.subscriptions:
                    return []  # Pusher: unsubscribing twice is harmless
                return [Leave(channel, channel_type(channel), self.subscriptions.pop(channel))]
            case messages.Signin():
                return self._signin(command)
            case messages.ClientEvent():
                return self._client_event(command, now)
        raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover

    def touch(self, now: float) -> None:
        """Activity without a message (the HTTP fallbacks' empty ``xhr_send`` ping)."""
        if not self.closed:
            self.last_seen = now
            self.ping_sent_at = None

    def tick(self, now: float) -> list[Action]:
        """Timers: authorized-connection deadline, idle ping, and the pong deadline."""
        if self.closed:
            return []
        deadline = self.policy.authorized_connections_timeout
        if deadline is not None and not self.authorized and now - self.connected_at >= deadline:
            return self.close(ErrorCode.UNAUTHORIZED, "Connection not authorized within timeout")
        if self.ping_sent_at is not None:
            if now - self.ping_sent_at >= self.policy.pong_timeout:
                return self.close(ErrorCode.PONG_NOT_RECEIVED, "Pong reply not received")
            return []
        if now - self.last_seen >= self.policy.activity_timeout:
            # Pusher: the server pings an idle client and closes with 4201 without an answer.
            self.ping_sent_at = now
            return [Send(messages.PING)]
        return []

    def close(self, code: ErrorCode, message: str) -> list[Action]:
        self.closed = True
        return _fail(message, code)

    def forget(self, channel: str) -> None:
        """The node refused a Join (e.g. a full presence channel)."""
        self.subscriptions.pop(channel, None)
        self.authorized = self.user is not None or any(
            channel_type(c).needs_auth for c in self.subscriptions
        )

    # -- commands ----------------------------------------------------------------------------

    def _subscribe(self, command: messages.Subscribe) -> list[Action]:
        channel = command.channel
        policy = self.policy
        if (problem := channel_name_error(channel, policy.max_channel_name_length)) is not None:
            return _refuse(channel, "InvalidChannel", problem, 400)
        ctype = channel_type(channel)
        if channel in self.subscriptions:
            # Pusher answers a subscribe to a channel the socket is already on with this
            # pusher:error (code null) and keeps the subscription. Answering with another
            # subscription_succeeded would resend a presence roster (up to 100 KB) for each
            # 100-byte request. pusher-js never sends one: it resubscribes on a new socket.
            return [Send(messages.error(f"Existing subscription to channel {channel}"))]
        if len(self.subscriptions) >= policy.max_channels_per_connection:
            limit = policy.max_channels_per_connection
            return _refuse(channel, "LimitReached", f"more than {limit} channels", 4100)
        try:
            wanted = opt_in(command.tidings)
        except ProtocolError as exc:
            # Not subscribed: a client that asked for recovery must not silently get a
            # subscription without it.
            return [Send(messages.error(exc.message, exc.code))]
        member: Member | None = None
        if ctype.kind is ChannelKind.USER:
            if self.user is None or channel != self.user.channel:
                return _refuse(channel, "AuthError", "only the signed-in user may subscribe", 401)
        elif ctype.needs_auth:
            if not command.auth:
                # Say so rather than report a signature mismatch: the usual cause is a client
                # with no auth endpoint configured. Same status as a bad signature (Soketi's
                # AuthError 401), which pusher-js reports on the channel.
                return _refuse(channel, "AuthError", f"Missing auth for channel {channel}", 401)
            data = command.channel_data
            if ctype.is_presence and not isinstance(data, str):
                return _refuse(channel, "AuthError", "presence channels need channel_data", 401)
            # A private channel's subscribe may carry channel_data that the auth endpoint
            # signed too (Laravel Reverb, or the pusher SDKs' authenticate() given
            # custom_data): then the signature covers socket_id:channel:channel_data.
            # Either way it needs the secret. Only presence channels use the data.
            signed = data if isinstance(data, str) else None
            if (
                problem := channel_auth_error(
                    policy.key, policy.secret, self.socket_id, channel, command.auth, signed
                )
            ) is not None:
                return _refuse(channel, "AuthError", problem, 401)
            if ctype.is_presence and isinstance(data, str):
                member_or_refusal = self._member(channel, data)
                if not isinstance(member_or_refusal, Member):
                    return member_or_refusal
                member = member_or_refusal
        if ctype.needs_auth:
            self.authorized = True
        self.subscriptions[channel] = member
        return [Join(channel, ctype, member, wanted)]

    def _member(self, channel: str, channel_data: str) -> Member | list[Action]:
        """The member a signed ``channel_data`` describes, or the subscription_error."""
        try:
            data = orjson.loads(channel_data)
        except orjson.JSONDecodeError:
            return _refuse(channel, "AuthError", "channel_data is not valid JSON", 401)
        if not isinstance(data, dict):
            return _refuse(channel, "AuthError", "channel_data must be a JSON object", 401)
        user_id = data.get("user_id")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str) or not user_id:
            return _refuse(channel, "AuthError", "channel_data needs a user_id", 401)
        if len(user_id) > MAX_USER_ID_LENGTH:
            limit = MAX_USER_ID_LENGTH
            return _refuse(channel, "LimitReached", f"user_id longer than {limit}", 4100)
        info = data.get("user_info")
        limit = self.policy.max_presence_member_bytes
        try:
            size = len(orjson.dumps(info))
        except orjson.JSONEncodeError:
            # orjson reads JSON nested up to 1024 levels deep but writes at most 254.
            return _refuse(channel, "LimitReached", "user_info nested too deeply", 4100)
        if size > limit:
            return _refuse(channel, "LimitReached", f"user_info larger than {limit} bytes", 4100)
        return Member(user_id, info)

    def _signin(self, command: messages.Signin) -> list[Action]:
        policy = self.policy
        if self.user is not None:
            return [Send(messages.error("already signed in"))]
        user_data = command.user_data
        if not isinstance(user_data, str):
            return self.close(ErrorCode.UNAUTHORIZED, "signin needs user_data (a JSON string)")
        problem = user_auth_error(
            policy.key, policy.secret, self.socket_id, user_data, command.auth
        )
        if problem is not None:
            return self.close(ErrorCode.UNAUTHORIZED, problem)
        try:
            data = orjson.loads(user_data)
        except orjson.JSONDecodeError:
            return self.close(ErrorCode.UNAUTHORIZED, "user_data is not valid JSON")
        user_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID_LENGTH:
            return self.close(ErrorCode.UNAUTHORIZED, "user_data needs an id (a string)")
        watchlist = data.get("watchlist") or []
        if not isinstance(watchlist, list):
            watchlist = []
        ids = tuple(
            dict.fromkeys(
                str(w) for w in watchlist if isinstance(w, str | int) and not isinstance(w, bool)
            )
        )
        self.user = User(user_id, user_data, ids[:MAX_WATCHLIST])
        self.authorized = True
        actions: list[Action] = [
            SignIn(self.user),
            Send(
                messages.event(
                    "pusher:signin_success", data=messages.dumps({"user_data": user_data})
                )
            ),
        ]
        if len(ids) > MAX_WATCHLIST:
            actions.append(
                Send(
                    messages.error(
                        f"watchlist over {MAX_WATCHLIST} user ids; only the first ones are used",
                        ErrorCode.WATCHLIST_LIMIT,
                    )
                )
            )
        actions.append(Watch(self.user))
        return actions

    def _client_event(self, command: messages.ClientEvent, now: float) -> list[Action]:
        policy = self.policy
        channel = command.channel
        if not policy.client_events:
            return [Send(messages.error("client events are not enabled for this app"))]
        ctype = channel_type(channel)
        if ctype.kind is ChannelKind.ENCRYPTED:
            # The server cannot read or check an encrypted channel's events, and Pusher's
            # client libraries never send client events there: refuse rather than relay
            # plaintext to peers that expect ciphertext.
            return [Send(messages.error(ENCRYPTED_CLIENT_EVENTS))]
        if not ctype.accepts_client_events:
            return [
                Send(
                    messages.error(
                        "client events are allowed only on private and presence channels"
                    )
                )
            ]
        if channel not in self.subscriptions:
            return [Send(messages.error(f"not subscribed to {channel}"))]
        if len(command.event) > policy.max_event_name_length:
            return [Send(messages.error("event name too long"))]
        if len(command.data.encode()) > policy.max_event_payload_bytes:
            return [
                Send(
                    messages.error(f"event data larger than {policy.max_event_payload_bytes} bytes")
                )
            ]
        # Pusher: at most N client events per second per connection, excess rejected (4301).
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._window_count = 0
        self._window_count += 1
        if self._window_count > policy.max_client_events_per_second:
            return [
                Send(
                    messages.error(
                        "Client event rejected due to rate limit", ErrorCode.CLIENT_EVENT_RATE_LIMIT
                    )
                )
            ]
        member = self.subscriptions[channel]
        user_id = member.user_id if member is not None else None
        return [Broadcast(channel, command.event, command.data, user_id)]
