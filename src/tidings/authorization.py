"""Channel authorization and user sign-in, declared once and signed for pusher-js.

An app says who may do what with three decorators (on :class:`tidings.Realtime`, which
delegates here)::

    @rt.authorize("private-orders.{order_id}")
    def can_see(user, order_id): return Order.owned_by(user, order_id)

    @rt.presence("presence-room.{room}")
    def member(user, room): return {"user_id": str(user.id), "user_info": {"name": user.name}}

    @rt.user
    def signin(user): return {"id": str(user.id), "user_info": {"name": user.name}}

The framework integrations (``tidings.integrations.*``) call :meth:`Authorizer.
authenticate_channel` and :meth:`Authorizer.authenticate_user` and answer with exactly what
pusher-js expects; nobody hand-signs an HMAC. A channel that no pattern matches is refused:
nothing is allowed by default.

Patterns
    ``{name}`` matches one dot-separated part of a channel name: one or more characters
    other than ``.`` (Pusher names may also hold ``-_=@,;``, which a placeholder does take).
    ``*`` matches any run of characters, dots included, possibly empty. Everything else
    matches itself. The whole name must match. When several patterns match a channel, the
    first one registered decides.

Handlers
    Sync or async. The sync entry points (Flask, Django) call sync handlers directly and run
    async ones to completion with :func:`asyncio.run`; the async ones (FastAPI) await async
    handlers and run sync ones in a worker thread, so a blocking database call never stalls
    the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tidings.core.apps import App
from tidings.protocol import messages, sse
from tidings.protocol.auth import channel_string_to_sign, sign
from tidings.protocol.channels import USER_CHANNEL_PREFIX, ChannelKind, channel_type, name_error

# pusher-http-* SDKs accept socket ids of this shape only; Tidings issues "<n>.<n>".
SOCKET_ID = re.compile(r"\A\d{1,20}\.\d{1,20}\Z")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATTERN_LITERAL = re.compile(r"\A[A-Za-z0-9_\-=@,.;*]*\Z")
MASTER_KEY_BYTES = 32  # Pusher: the encryption master key is 32 bytes (base64 in configs)

Handler = TypeVar("Handler", bound=Callable[..., Any])


class AuthRefused(Exception):
    """An auth request refused; the integrations answer ``status`` with ``{"error": message}``.

    403 when the app says no (or no pattern matches), 400 when the request itself is
    malformed (a bad socket id or channel name).
    """

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def sse_token(
    app_secret: str, channels: Iterable[str], ttl: float = 3600.0, *, now: float | None = None
) -> str:
    """The ``token`` of a Server-Sent Events stream with private channels (``docs/sse.md``):
    ``GET /app/{key}/events?channel=...&token=...``, valid ``ttl`` seconds from ``now``
    (default: the current time).

    ``channels``: the stream's channels, as in its URL; the token signs its private ones,
    exactly, so the app decides which private channels the stream may read as it would
    answer a Pusher auth request (it is the answer to every reconnect, so choose ``ttl`` for
    how long the page may keep reading)."""
    listed = list(dict.fromkeys(channels))
    if not listed or len(listed) > sse.MAX_CHANNELS:
        raise ValueError(f"a stream has 1 to {sse.MAX_CHANNELS} channels, not {len(listed)}")
    for channel in listed:
        if (problem := name_error(channel, 200)) is not None:
            raise ValueError(f"channel {channel!r}: {problem}")
        if channel_type(channel).kind not in (ChannelKind.PUBLIC, ChannelKind.PRIVATE):
            raise ValueError(f"channel {channel!r}: streams carry public and private- channels")
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, not {ttl!r}")
    private = [c for c in listed if channel_type(c).kind is ChannelKind.PRIVATE]
    expires = int((time.time() if now is None else now) + ttl)
    return sse.sign_token(app_secret, private, expires)


@dataclass(frozen=True, slots=True)
class ChannelPattern:
    """A channel-name pattern with ``{placeholders}`` and ``*`` (see the module docstring)."""

    text: str
    regex: re.Pattern[str]

    @classmethod
    def compile(cls, text: str, reserved: str = "") -> ChannelPattern:
        """``reserved``: the handler's positional parameter, which no placeholder may name."""
        parts: list[str] = []
        names: list[str] = []
        position = 0
        for found in _PLACEHOLDER.finditer(text):
            parts.append(_literal(text, text[position : found.start()]))
            name = found.group(1)
            if name == reserved:
                raise ValueError(f"channel pattern {text!r}: {{{name}}} would hide the {name}")
            if name in names:
                raise ValueError(f"channel pattern {text!r} names {{{name}}} twice")
            names.append(name)
            parts.append(f"(?P<{name}>[^.]+)")
            position = found.end()
        parts.append(_literal(text, text[position:]))
        if not text:
            raise ValueError("a channel pattern cannot be empty")
        return cls(text, re.compile("".join(parts)))

    def match(self, channel: str) -> dict[str, str] | None:
        """The placeholders' values when ``channel`` matches the whole pattern, else None."""
        found = self.regex.fullmatch(channel)
        return found.groupdict() if found is not None else None


def _literal(pattern: str, literal: str) -> str:
    if not _PATTERN_LITERAL.match(literal):
        raise ValueError(
            f"channel pattern {pattern!r}: outside {{placeholders}} only A-Z a-z 0-9 _ - = @ , . ; "
            "and * may appear"
        )
    return ".*".join(re.escape(piece) for piece in literal.split("*"))


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: ChannelPattern
    handler: Callable[..., Any]


class Authorizer:
    """The channel and user rules of one app, and the signatures that grant them."""

    def __init__(self, app: App, encryption_master_key: bytes | None = None) -> None:
        if encryption_master_key is not None and len(encryption_master_key) != MASTER_KEY_BYTES:
            raise ValueError(f"the encryption master key must be {MASTER_KEY_BYTES} bytes")
        self.app = app
        self.encryption_master_key = encryption_master_key
        self._private: list[_Rule] = []
        self._presence: list[_Rule] = []
        self._user: Callable[..., Any] | None = None

    # -- declaring the rules -----------------------------------------------------------------

    def authorize(self, pattern: str) -> Callable[[Handler], Handler]:
        """Register ``f(user, **placeholders) -> bool`` for ``private-`` channels matching
        ``pattern`` (``private-encrypted-`` ones too, given an encryption master key)."""
        compiled = ChannelPattern.compile(pattern, reserved="user")
        if not pattern.startswith("private-"):
            raise ValueError(
                f"@authorize({pattern!r}): private channels only (their names start with "
                "private-); presence channels use @presence"
            )
        if pattern.startswith("private-encrypted-") and self.encryption_master_key is None:
            raise ValueError(
                f"@authorize({pattern!r}): private-encrypted channels need an encryption master "
                "key (32 bytes), which this app was not given"
            )

        def register(handler: Handler) -> Handler:
            self._private.append(_Rule(compiled, handler))
            return handler

        return register

    def presence(self, pattern: str) -> Callable[[Handler], Handler]:
        """Register ``f(user, **placeholders) -> member | None`` for ``presence-`` channels.

        The member is ``{"user_id": ..., "user_info": {...}}`` (``user_info`` optional), or
        just the user id (a ``str`` or ``int``) for a member without info. None or False
        refuses.
        """
        compiled = ChannelPattern.compile(pattern, reserved="user")
        if not pattern.startswith("presence-"):
            raise ValueError(f"@presence({pattern!r}): presence channels only (presence-...)")

        def register(handler: Handler) -> Handler:
            self._presence.append(_Rule(compiled, handler))
            return handler

        return register

    def user(self, handler: Handler) -> Handler:
        """Register ``f(user) -> user_data | None`` for user sign-in (``pusher.signin()``).

        ``user_data`` is a dict with an ``id`` (``str``, or an ``int`` turned into one) and
        optionally ``user_info`` and ``watchlist``; None or False refuses.
        """
        self._user = handler
        return handler

    # -- answering auth requests -------------------------------------------------------------

    def authenticate_channel(
        self, user: object, socket_id: object, channel: object
    ) -> dict[str, str]:
        """The auth response for a subscription, from a sync view (Flask, Django)."""
        rule, params = self._channel_rule(user, socket_id, channel)
        verdict = _call_sync(rule.handler, user, **params)
        return self._channel_response(str(socket_id), str(channel), verdict)

    async def aauthenticate_channel(
        self, user: object, socket_id: object, channel: object
    ) -> dict[str, str]:
        """The auth response for a subscription, from an async view (FastAPI)."""
        rule, params = self._channel_rule(user, socket_id, channel)
        verdict = await _call_async(rule.handler, user, **params)
        return self._channel_response(str(socket_id), str(channel), verdict)

    def authenticate_user(self, user: object, socket_id: object) -> dict[str, str]:
        """The sign-in response (``{"auth", "user_data"}``), from a sync view."""
        handler = self._user_handler(user, socket_id)
        return self._user_response(str(socket_id), _call_sync(handler, user))

    async def aauthenticate_user(self, user: object, socket_id: object) -> dict[str, str]:
        """The sign-in response (``{"auth", "user_data"}``), from an async view."""
        handler = self._user_handler(user, socket_id)
        return self._user_response(str(socket_id), await _call_async(handler, user))

    # -- the steps ---------------------------------------------------------------------------

    def _channel_rule(
        self, user: object, socket_id: object, channel: object
    ) -> tuple[_Rule, dict[str, str]]:
        """The rule that decides ``channel``, and its placeholders; raise if there is none."""
        _check_socket_id(socket_id)
        problem = name_error(channel, self.app.max_channel_name_length)
        if problem is not None:
            raise AuthRefused(f"invalid channel_name: {problem}", 400)
        assert isinstance(channel, str)
        if channel.startswith(USER_CHANNEL_PREFIX):
            raise AuthRefused("user channels are joined by signing in, not subscribed to", 400)
        kind = channel_type(channel).kind
        if kind is ChannelKind.PUBLIC:
            raise AuthRefused(f"{channel} is a public channel: it needs no authorization", 400)
        if user is None:
            raise AuthRefused("not signed in")
        rules = self._presence if kind is ChannelKind.PRESENCE else self._private
        for rule in rules:
            params = rule.pattern.match(channel)
            if params is not None:
                return rule, params
        raise AuthRefused(f"no rule authorizes {channel}")

    def _channel_response(self, socket_id: str, channel: str, verdict: object) -> dict[str, str]:
        kind = channel_type(channel).kind
        if kind is ChannelKind.PRESENCE:
            member = _member(verdict, channel)
            channel_data = messages.dumps(member)
            signed = sign(self.app.secret, channel_string_to_sign(socket_id, channel, channel_data))
            return {"auth": f"{self.app.key}:{signed}", "channel_data": channel_data}
        if not verdict:
            raise AuthRefused(f"not allowed to subscribe to {channel}")
        signed = sign(self.app.secret, channel_string_to_sign(socket_id, channel, None))
        response = {"auth": f"{self.app.key}:{signed}"}
        if kind is ChannelKind.ENCRYPTED:
            response["shared_secret"] = self._shared_secret(channel)
        return response

    def _shared_secret(self, channel: str) -> str:
        """Pusher end-to-end encryption: the channel's key is SHA-256(name + master key),
        sent base64-encoded to the authorized client only."""
        if self.encryption_master_key is None:
            raise AuthRefused(
                f"{channel} is end-to-end encrypted and this app has no encryption master key",
                403,
            )
        digest = hashlib.sha256(channel.encode() + self.encryption_master_key).digest()
        return base64.b64encode(digest).decode()

    def _user_handler(self, user: object, socket_id: object) -> Callable[..., Any]:
        _check_socket_id(socket_id)
        if user is None:
            raise AuthRefused("not signed in")
        if self._user is None:
            raise AuthRefused("user sign-in is not enabled: no @user handler")
        return self._user

    def _user_response(self, socket_id: str, verdict: object) -> dict[str, str]:
        if not verdict:
            raise AuthRefused("not allowed to sign in")
        if not isinstance(verdict, Mapping):
            raise TypeError(f"the @user handler must return a dict or None, not {verdict!r}")
        user_data = dict(verdict)
        user_data["id"] = _user_id(user_data.get("id"), "the @user handler's id")
        encoded = messages.dumps(user_data)
        signed = sign(self.app.secret, f"{socket_id}::user::{encoded}")
        return {"auth": f"{self.app.key}:{signed}", "user_data": encoded}


def _check_socket_id(socket_id: object) -> None:
    if not isinstance(socket_id, str) or not SOCKET_ID.match(socket_id):
        raise AuthRefused("invalid socket_id: expected two numbers joined by a dot", 400)


def _user_id(value: object, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what} must be a non-empty str (or an int), not {value!r}")
    return value


def _member(verdict: object, channel: str) -> dict[str, Any]:
    """A presence handler's answer as the ``channel_data`` object, or a refusal."""
    if verdict is None or verdict is False:
        raise AuthRefused(f"not allowed to join {channel}")
    if isinstance(verdict, str | int) and not isinstance(verdict, bool):
        return {"user_id": _user_id(verdict, "the @presence handler's user id")}
    if not isinstance(verdict, Mapping):
        raise TypeError(
            f"a @presence handler returns a member dict, a user id or None: {verdict!r}"
        )
    member = {"user_id": _user_id(verdict.get("user_id"), "the member's user_id")}
    if "user_info" in verdict:
        member["user_info"] = verdict["user_info"]
    return member


def _call_sync(handler: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if inspect.iscoroutinefunction(handler) and _loop_running():
        raise RuntimeError(
            f"{handler.__qualname__} is async and this thread runs an event loop: call the "
            "async form (aauthenticate_channel, aauthenticate_user)"
        )
    result = handler(*args, **kwargs)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def _call_async(handler: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if inspect.iscoroutinefunction(handler):
        return await handler(*args, **kwargs)
    result = await asyncio.to_thread(handler, *args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result
