"""Puts one HTTP fallback session's ``xhr_send`` requests back in the client's order.

pusher-js posts every message in an ``xhr_send`` of its own, without waiting for the one
before (``http_socket.ts`` ``sendRaw``). Behind a load balancer two of them can reach two
nodes; the one relayed to the session's owner over the broker arrives after the one that
went to the owner directly. A subscribe followed by a client event would then be applied
the other way round.

The client numbers its requests: every URL pusher-js builds ends with ``&n=<counter>``
(``getUniqueURL``), one counter per page, incremented for each receive request and each send.
A session's requests therefore carry increasing numbers, consecutive unless another session
of the same page took one in between. The owner sees every request of the session (its
receive requests and sends, local or relayed) and applies a send only once every smaller
number has arrived. A missing number is waited for at most ``wait`` seconds, then given up
on: it may belong to another session of the page and never come. At most ``max_held``
requests wait; past that the oldest gap is given up on at once.

Requests without a number (not pusher-js), and requests numbered at or below what has
already been passed, are applied on arrival: that is the order nothing better is known for.
"""

from __future__ import annotations

Batch = tuple[str, ...]  # the messages of one xhr_send, in order

MAX_HELD = 64  # requests of one session waiting for a gap (bounded: see the docstring)


class SendOrder:
    """The order in which one session's sends are applied (sans-I/O: the caller passes the
    time and applies what comes back, in the order returned)."""

    __slots__ = ("floor", "wait", "max_held", "_held", "_waiting_since")

    def __init__(self, first: int | None, wait: float, max_held: int = MAX_HELD) -> None:
        """``first``: the number of the request that opened the session (None: unnumbered,
        no ordering); ``wait``: seconds a gap is waited for (0: apply on arrival)."""
        self.floor = first if wait > 0 else None  # every request up to it has been seen
        self.wait = wait
        self.max_held = max_held
        # Requests past a gap: a send's messages, or None for a receive request.
        self._held: dict[int, Batch | None] = {}
        self._waiting_since: float | None = None  # the current gap has been open since

    def send(self, n: int | None, batch: Batch, now: float) -> list[Batch]:
        """A send numbered ``n`` arrived: the sends to apply now, in order (maybe none)."""
        if self.floor is None or n is None or n <= self.floor:
            return [batch]
        if n in self._held:  # the same number twice: not pusher-js; keep both, in arrival order
            earlier = self._held[n]
            batch = batch if earlier is None else earlier + batch
        self._held[n] = batch
        return self._advance(now)

    def receive(self, n: int | None, now: float) -> list[Batch]:
        """A receive request numbered ``n`` arrived; it may close a gap: the sends due now."""
        if self.floor is None or n is None or n <= self.floor:
            return []
        self._held.setdefault(n, None)
        return self._advance(now)

    @property
    def deadline(self) -> float | None:
        """When :meth:`expire` gives up on the current gap (None: nothing is waiting)."""
        if self._waiting_since is None:
            return None
        return self._waiting_since + self.wait

    @property
    def held(self) -> int:
        """Requests waiting for a gap to close."""
        return len(self._held)

    def expire(self, now: float) -> list[Batch]:
        """Give up on a gap waited for ``wait`` seconds: the sends due now, in order."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        return self._skip_gap(now)

    def _skip_gap(self, now: float) -> list[Batch]:
        assert self.floor is not None
        self.floor = min(self._held) - 1
        return self._advance(now, moved=True)

    def _advance(self, now: float, moved: bool = False) -> list[Batch]:
        assert self.floor is not None
        due: list[Batch] = []
        while self.floor + 1 in self._held:
            self.floor += 1
            moved = True
            batch = self._held.pop(self.floor)
            if batch is not None:
                due.append(batch)
        if len(self._held) > self.max_held:
            return due + self._skip_gap(now)
        if not self._held:
            self._waiting_since = None
        elif moved or self._waiting_since is None:
            self._waiting_since = now  # a new gap: waited for from now
        return due
