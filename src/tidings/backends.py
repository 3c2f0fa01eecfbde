"""What a :class:`tidings.Realtime` does, whichever way it reaches the cluster.

A Realtime holds one :class:`Backend`:

- embedded (``Realtime(...)``, ``from_config``, ``from_env``): the operations run on this
  process's node (``tidings.api``), on the loop that serves the sockets;
- ``Realtime.client("redis://…")``: PUBLISH straight into a Tidings cluster, no HTTP hop
  (``tidings.clients.redis``);
- ``Realtime.client("http://key:secret@host/apps/ID")``: the signed Pusher HTTP API of any
  Pusher-protocol server (``tidings.clients.http``).

Every method is a coroutine bound to one event loop (the node's, or the client's private
loop thread): :class:`tidings.Realtime` turns them into thread-safe sync calls and into
awaitables for any other loop. Data arrives already serialised (``str``): the Realtime
encodes a ``dict`` once, as the pusher SDKs do. Limits are those of the REST API, with the
same errors (:class:`PublishError` carries the HTTP status a REST call would get).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class PublishError(Exception):
    """A call was refused: ``status`` is what the REST API answers for the same call
    (400 invalid, 403 app disabled, 413 too large, 429 rate limited, 503 cluster down)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Event:
    """One event for one or more channels (a trigger, or one entry of a batch)."""

    channels: tuple[str, ...]
    name: str
    data: str
    socket_id: str | None = None
    info: tuple[str, ...] = ()


class Backend(Protocol):
    """The operations of the Pusher HTTP API, plus start and close."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def trigger(self, event: Event) -> dict[str, Any]:
        """Publish; returns what ``POST /events`` answers (``{}``, or ``{"channels": …}``
        when ``info`` asked for attributes)."""
        ...

    async def trigger_batch(self, events: Sequence[Event]) -> dict[str, Any]:
        """What ``POST /batch_events`` answers (``{}`` or ``{"batch": […]}``)."""
        ...

    async def trigger_many(self, events: Sequence[Event]) -> None:
        """Publish ``events`` in order, each to its one channel, with no answer and no
        batch size limit: the live models' commits. Each event is checked as in a batch;
        a refusal raises :class:`PublishError` and the events after it are not sent."""
        ...

    async def send_to_user(self, user_id: str, name: str, data: str) -> None: ...

    async def terminate_user(self, user_id: str) -> None: ...

    async def channels(self, prefix: str, info: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Occupied channels and their attributes (``GET /channels``' ``channels``)."""
        ...

    async def channel(self, name: str, info: Sequence[str]) -> dict[str, Any]:
        """``GET /channels/{name}``: ``occupied`` plus the attributes asked for."""
        ...

    async def users(self, channel: str) -> list[str]:
        """Ids of a presence channel's members."""
        ...

    async def occupied(self, channels: Sequence[str]) -> set[str]:
        """Which of ``channels`` have at least one subscriber, cluster-wide.

        The live layer asks once per commit, for every channel the commit could publish to,
        and serializes nothing for the others. Embedded: the broker's counts (no network in
        memory mode, one round trip with Redis); ``RedisClient``: one round trip;
        ``HttpClient``: every channel (asking would cost a request per commit).
        """
        ...
