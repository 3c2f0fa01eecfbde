"""What the node counts per app, exported by `/metrics`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class AppCounters:
    """Totals since start, per app, for ``/metrics`` (plain ints: cheap on the hot path)."""

    messages_in: int = 0  # frames received from clients
    deliveries: int = 0  # frames written to subscribers (one per socket per publication)
    publications: int = 0  # events published (REST, client events)
    connections_opened: int = 0
    slow_consumers: int = 0
    bytes_in: int = 0  # bytes of the messages received from clients
    bytes_out: int = 0  # bytes written to clients (frames included)
    connection_rate_refusals: int = 0  # new connections answered 503 (max_connection_rate)
    # History (tidings/recovery.py): holes in a channel's deliveries filled from its history,
    # and those that could not be (the channel's sockets closed with 4200); opted-in
    # subscriptions that asked to recover, by outcome.
    gaps_filled: int = 0
    gaps_unfilled: int = 0
    recovered: int = 0
    unrecovered: int = 0
    # pusher:error messages sent, by code (None: an error Pusher sends without a code)
    errors: dict[int | None, int] = field(default_factory=dict)
    closes: dict[int, int] = field(default_factory=dict)  # close codes sent, by code

    def count_error(self, code: int | None) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def count_close(self, code: int) -> None:
        self.closes[code] = self.closes.get(code, 0) + 1
