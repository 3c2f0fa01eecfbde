"""Connections the server is waiting on: deadlines, a cap, and a per-address limit.

A slow client ("slowloris") holds a connection open by sending its request a byte at a
time; thousands of them exhaust file descriptors without ever reaching a handler. This
module bounds them. A connection is *pending* from the moment it is accepted until its
request has fully arrived (headers, then body): until then the server waits on the
client. Once a request is complete (a WebSocket upgraded, a REST body read) the
connection leaves this bookkeeping, so established sockets cost nothing here and are
governed by the Pusher activity timeout instead.

Sans-I/O: connections are opaque hashable keys, the caller passes the current time and
closes whatever a method returns.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Cut(StrEnum):
    """Why a connection was closed before it completed a request (the metric's label)."""

    HEADER_TIMEOUT = "header_timeout"  # headers not complete within header_timeout of accept
    BODY_TIMEOUT = "body_timeout"  # body not complete within body_timeout of the headers
    PENDING_CAP = "pending_cap"  # the oldest pending connection, making room for a new one
    PER_IP = "per_ip"  # over max_per_address connections from one client address


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """``header_timeout``: seconds from accept until the request headers are complete.
    ``body_timeout``: seconds from then until the request body is complete.
    ``max_pending``: connections at once that have not completed a request.
    ``max_per_address``: open connections per client address; 0 for no limit."""

    header_timeout: float
    body_timeout: float
    max_pending: int
    max_per_address: int = 0

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.body_timeout <= 0:
            raise ValueError("header_timeout and body_timeout must be > 0")
        if self.max_pending < 1 or self.max_per_address < 0:
            raise ValueError("max_pending must be >= 1 and max_per_address >= 0")


class Admission(Generic[K]):
    """Pending connections by phase, each table in deadline order, and open connections
    per client address.

    Each phase has one timeout, so insertion order is deadline order: :meth:`expired`
    looks only at the front of each table, and one periodic sweep serves every
    connection (no timer per connection).
    """

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.cuts: Counter[Cut] = Counter()
        self._headers: OrderedDict[K, float] = OrderedDict()  # connection -> deadline
        self._bodies: OrderedDict[K, float] = OrderedDict()
        self._address_of: dict[K, str] = {}
        self._per_address: dict[str, int] = {}

    @property
    def pending(self) -> int:
        return len(self._headers) + len(self._bodies)

    def accepted(self, conn: K, address: str | None, now: float) -> list[tuple[K, Cut]]:
        """A new connection from ``address`` (None: not counted now, e.g. a trusted proxy,
        whose clients are named later by :meth:`readdress`). Returns the connections to
        close: ``conn`` itself when its address is over the limit, or the oldest pending
        connection when the cap is reached (a slow client loses its place, not the new
        one, which most likely is a client about to send its request at once)."""
        if address is not None and self.limits.max_per_address:
            if not self._count(conn, address):
                self.cuts[Cut.PER_IP] += 1
                return [(conn, Cut.PER_IP)]
        to_close: list[tuple[K, Cut]] = []
        if self.pending >= self.limits.max_pending:
            oldest = self._headers if self._headers else self._bodies
            victim, _ = oldest.popitem(last=False)
            self.cuts[Cut.PENDING_CAP] += 1
            to_close.append((victim, Cut.PENDING_CAP))
        self._headers[conn] = now + self.limits.header_timeout
        return to_close

    def request_started(self, conn: K, now: float, body_complete: bool) -> None:
        """The headers of a request on ``conn`` are complete; its body may still be coming."""
        self._headers.pop(conn, None)
        if not body_complete:
            self._bodies[conn] = now + self.limits.body_timeout

    def awaiting_headers(self, conn: K, now: float) -> None:
        """A request on ``conn`` has begun after an earlier one completed (or the socket
        changed hands): its headers are due within ``header_timeout`` of ``now``. Not
        subject to the pending cap, which applies to new connections."""
        if conn not in self._headers:
            self._headers[conn] = now + self.limits.header_timeout

    def body_complete(self, conn: K) -> None:
        self._bodies.pop(conn, None)

    def readdress(self, conn: K, address: str) -> bool:
        """Count ``conn`` under ``address`` from now on (a proxied request named its client).
        False, and ``conn`` no longer counted, when that address is over the limit."""
        if not self.limits.max_per_address or self._address_of.get(conn) == address:
            return True
        self._uncount(conn)
        if self._count(conn, address):
            return True
        self.cuts[Cut.PER_IP] += 1
        return False

    def hand_over(self, conn: K, successor: K) -> None:
        """``conn``'s socket now belongs to ``successor`` (a WebSocket leaving the HTTP
        server after its handshake): it stays counted under its address, as ``successor``."""
        self._headers.pop(conn, None)
        self._bodies.pop(conn, None)
        address = self._address_of.pop(conn, None)
        if address is not None:
            self._address_of[successor] = address

    def lost(self, conn: K) -> None:
        """``conn`` closed, for whatever reason."""
        self._headers.pop(conn, None)
        self._bodies.pop(conn, None)
        self._uncount(conn)

    def expired(self, now: float) -> list[tuple[K, Cut]]:
        """Pending connections past their deadline, now forgotten here; the caller closes them."""
        to_close: list[tuple[K, Cut]] = []
        for table, reason in (
            (self._headers, Cut.HEADER_TIMEOUT),
            (self._bodies, Cut.BODY_TIMEOUT),
        ):
            while table:
                conn, deadline = next(iter(table.items()))
                if deadline > now:
                    break
                del table[conn]
                self.cuts[reason] += 1
                to_close.append((conn, reason))
        return to_close

    def _count(self, conn: K, address: str) -> bool:
        n = self._per_address.get(address, 0)
        if n >= self.limits.max_per_address:
            return False
        self._per_address[address] = n + 1
        self._address_of[conn] = address
        return True

    def _uncount(self, conn: K) -> None:
        address = self._address_of.pop(conn, None)
        if address is None:
            return
        n = self._per_address[address] - 1
        if n:
            self._per_address[address] = n
        else:
            del self._per_address[address]
