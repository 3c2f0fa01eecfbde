"""Console logins: signed session cookies, CSRF tokens and the failed-login limit.

A session is not stored anywhere: its cookie is a signed, expiring statement of which apps
it may see (``base64(JSON).base64(HMAC-SHA256)``), so any process holding the signing key
can check it. ``--workers`` gives its workers one key (the supervisor makes it), so a login
on one worker is good on the others; a lone process makes its own at start, so a restart
logs everyone out. The CSRF token is an HMAC of the session token: it needs no storage
either. A logout cannot unsign a cookie: it revokes the session id until the cookie would
have expired anyway, on every node (``watch.py`` carries the revocation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import orjson

SESSION_LIFETIME = 8 * 3600  # seconds
MAX_FAILURES = 10  # failed logins per address per FAILURE_WINDOW
FAILURE_WINDOW = 60.0
MAX_ADDRESSES = 10_000  # addresses whose failures are remembered (the oldest go first)
MAX_REVOKED = 100_000
EVERY_APP = "*"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid session may see: ``apps`` (ids), or every app when ``every_app``."""

    session_id: str
    apps: tuple[str, ...]
    every_app: bool
    expires: float

    def allows(self, app_id: str) -> bool:
        return self.every_app or app_id in self.apps


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks session tokens signed with ``key``."""

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock
        self._revoked: dict[str, float] = {}  # session id -> when its cookie expires

    def issue(self, apps: tuple[str, ...] | None) -> tuple[str, Grant]:
        """A new session for ``apps`` (None: every app, the operator token's login)."""
        session_id = secrets.token_hex(16)
        expires = int(self._clock()) + SESSION_LIFETIME
        body = {"s": session_id, "a": EVERY_APP if apps is None else list(apps), "e": expires}
        payload = _b64(orjson.dumps(body))
        token = f"{payload}.{self._sign(payload)}"
        return token, Grant(session_id, apps or (), apps is None, expires)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def check(self, token: str | None) -> Grant | None:
        """The grant of a valid, unexpired, unrevoked token; None otherwise."""
        if not token or token.count(".") != 1 or len(token) > 4096:
            return None
        payload, signature = token.split(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            body = orjson.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(body, dict):
            return None
        session_id, apps, expires = body.get("s"), body.get("a"), body.get("e")
        if not isinstance(session_id, str) or not isinstance(expires, int):
            return None
        if expires <= self._clock() or session_id in self._revoked:
            return None
        if apps == EVERY_APP:
            return Grant(session_id, (), True, expires)
        if not isinstance(apps, list) or not all(isinstance(a, str) for a in apps):
            return None
        return Grant(session_id, tuple(apps), False, expires)

    def csrf(self, token: str) -> str:
        """The session's CSRF token (sent back in ``X-CSRF-Token`` on every POST)."""
        return _b64(hmac.new(self._key, b"csrf:" + token.encode(), hashlib.sha256).digest())

    def csrf_ok(self, token: str, header: str | None) -> bool:
        return header is not None and hmac.compare_digest(
            header.encode(), self.csrf(token).encode()
        )

    def revoke(self, session_id: str, expires: float) -> None:
        now = self._clock()
        if len(self._revoked) >= MAX_REVOKED:
            self._revoked = {s: e for s, e in self._revoked.items() if e > now}
        if expires > now and len(self._revoked) < MAX_REVOKED:
            self._revoked[session_id] = expires


class LoginLimit:
    """At most MAX_FAILURES failed logins per address per FAILURE_WINDOW seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> int:
        """Seconds until ``address`` may try again; 0 when it may now."""
        failures = self._failures.get(address)
        if failures is None:
            return 0
        now = self._clock()
        while failures and failures[0] <= now - FAILURE_WINDOW:
            failures.popleft()
        if len(failures) < MAX_FAILURES:
            return 0
        return max(1, int(failures[0] + FAILURE_WINDOW - now + 0.999))

    def failed(self, address: str) -> None:
        failures = self._failures.pop(address, None) or deque(maxlen=MAX_FAILURES)
        failures.append(self._clock())
        self._failures[address] = failures  # most recent last
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two strings (any length, any characters)."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )
