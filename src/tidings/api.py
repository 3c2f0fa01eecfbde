"""The public operations of one app over this process's node: trigger, channels, users, terminate.

The REST API, :class:`tidings.Realtime` and hooks all call these, so a check or an attribute
is written once. The plain functions raise what the node and the REST parsers raise
(:class:`RestError`, :class:`BackendRateLimited`, :class:`ClusterUnavailable`): the REST edge
turns them into HTTP answers. :class:`EmbeddedBackend` turns them into
:class:`tidings.backends.PublishError` with the same status.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import orjson

from tidings.backends import Event, PublishError
from tidings.brokers.history import HistoryPage
from tidings.core.apps import App
from tidings.node import BackendRateLimited, ClusterUnavailable, Node
from tidings.protocol.channels import USER_CHANNEL_PREFIX, channel_type, name_error
from tidings.protocol.rest import (
    HistoryQuery,
    RestError,
    RestLimits,
    Trigger,
    TriggerChecker,
    parse_info,
)


def rest_limits(app: App) -> RestLimits:
    return RestLimits(
        max_event_payload_bytes=app.max_event_payload_bytes,
        max_event_name_length=app.max_event_name_length,
        max_channel_name_length=app.max_channel_name_length,
        max_channels_per_event=app.max_channels_per_event,
        max_batch_size=app.max_batch_size,
    )


async def attributes(
    node: Node, app: App, channel: str, info: tuple[str, ...], *, strict: bool
) -> dict[str, Any]:
    """``user_count`` and ``subscription_count`` of one channel, as far as ``info`` asks.

    ``strict``: ``user_count`` on a non-presence channel is an error (``GET /channels/x``)
    rather than left out (a trigger's ``info``)."""
    presence = channel_type(channel).is_presence
    result: dict[str, Any] = {}
    if "user_count" in info:
        if presence:
            result["user_count"] = len(await node.members(app, channel))
        elif strict:
            raise RestError(400, "user_count is available only for presence channels")
    if "subscription_count" in info:
        # Pusher counts subscriptions on every channel kind, presence included (its SDKs
        # ask for user_count and subscription_count together on presence channels).
        result["subscription_count"] = await node.subscription_count(app, channel)
    return result


async def trigger_info(node: Node, app: App, trigger: Trigger) -> dict[str, Any]:
    """What ``POST /events`` answers after publishing: ``{}``, or the attributes asked for."""
    if not trigger.info:
        return {}
    channels: dict[str, dict[str, Any]] = {}
    for channel in trigger.channels:
        channels[channel] = await attributes(node, app, channel, trigger.info, strict=False)
    return {"channels": channels}


async def publish(
    node: Node, app: App, triggers: Sequence[Trigger], source: str = "python"
) -> None:
    """Publish checked triggers, counted against the app's backend rate limit first.
    ``source`` (``rest``, ``console``, ``python``) is shown by the console."""
    await node.check_backend_rate(app, len(triggers))
    await node.trigger_all(app, triggers, source)


async def batch_info(node: Node, app: App, triggers: Sequence[Trigger]) -> dict[str, Any]:
    """What ``POST /batch_events`` answers: ``{}``, or one entry per event when any asked."""
    for trigger in triggers:  # (a loop, not any() over a generator: no frame per event)
        if trigger.info:
            break
    else:
        return {}
    infos = []
    for trigger in triggers:
        info = await trigger_info(node, app, trigger)
        infos.append(info.get("channels", {}).get(trigger.channels[0], {}))
    return {"batch": infos}


async def channels_info(
    node: Node, app: App, prefix: str, info: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """``GET /channels``: occupied channels by name, each with the attributes asked for."""
    if "user_count" in info and not prefix.startswith("presence-"):
        raise RestError(400, "info=user_count needs filter_by_prefix=presence-")
    occupied = await node.channels(app, prefix)
    result: dict[str, dict[str, Any]] = {}
    for name, count in sorted(occupied.items()):
        found: dict[str, Any] = {}
        if "user_count" in info and channel_type(name).is_presence:
            found["user_count"] = len(await node.members(app, name))
        if "subscription_count" in info:
            found["subscription_count"] = count
        result[name] = found
    return result


def check_channel_name(app: App, channel: str) -> str:
    problem = name_error(channel, app.max_channel_name_length)
    if problem is not None:
        raise RestError(400, f"invalid channel: {problem}")
    return channel


async def channel_info(node: Node, app: App, channel: str, info: tuple[str, ...]) -> dict[str, Any]:
    """``GET /channels/{name}``: ``occupied`` plus the attributes asked for."""
    check_channel_name(app, channel)
    count = await node.subscription_count(app, channel)
    result: dict[str, Any] = {"occupied": count > 0}
    result.update(await attributes(node, app, channel, info, strict=True))
    if "cache" in info:
        if not channel_type(channel).cache:
            raise RestError(400, "cache is available only for cache channels")
        cached = await node.cached(app, channel)
        if cached is not None:
            message = orjson.loads(cached.message)
            ttl = max(0, int(cached.expires_at - node.clock()))
            result["cache"] = {
                "event": message.get("event"),
                "data": message.get("data"),
                "ttl": ttl,
            }
    return result


async def channel_history(
    node: Node, app: App, channel: str, query: HistoryQuery
) -> dict[str, Any]:
    """``GET /channels/{name}/history``: the channel's kept events after ``query.since``."""
    check_channel_name(app, channel)
    if app.history_rule(channel) is None:
        raise RestError(404, "no history is kept for this channel (no history rule matches it)")
    return history_page(await node.history(app, channel, query.since, query.limit))


def history_page(page: HistoryPage) -> dict[str, Any]:
    """``GET /channels/{name}/history``'s answer: the position, ``complete``, and each kept
    event as subscribers received it (``event``, ``channel``, ``data``, ``user_id``) after
    its ``offset``. The socket_id it excluded is not shown: it names a client connection."""
    events = []
    for stored in page.events:
        event: dict[str, Any] = {"offset": stored.offset}
        event.update(orjson.loads(stored.message))
        events.append(event)
    return {
        "epoch": page.position.epoch,
        "offset": page.position.offset,
        "complete": page.complete,
        "events": events,
    }


async def user_ids(node: Node, app: App, channel: str) -> list[str]:
    """``GET /channels/{name}/users``: the ids of a presence channel's members."""
    check_channel_name(app, channel)
    if not channel_type(channel).is_presence:
        raise RestError(400, "users are available only for presence channels")
    return [member.user_id for member in await node.members(app, channel)]


async def terminate_user(node: Node, app: App, user_id: str) -> None:
    """Close every connection signed in as ``user_id``, on every node."""
    if not user_id:
        raise RestError(400, "user id missing")
    await node.terminate_user(app, user_id)


def user_channel(user_id: str) -> str:
    """Pusher's ``send_to_user`` is a trigger on the user's own channel."""
    if not user_id:
        raise RestError(400, "user id missing")
    return USER_CHANNEL_PREFIX + user_id


class EmbeddedBackend:
    """:class:`tidings.backends.Backend` for one app of this process's node.

    It owns nothing: the node starts and stops with the :class:`tidings.lifecycle.Lifecycle`,
    so :meth:`start` and :meth:`close` have nothing to do. Every call must run on the loop
    the node runs on."""

    def __init__(self, node: Node, app: App) -> None:
        self.node = node
        self.app = app
        self.limits = rest_limits(app)
        self._checker = TriggerChecker(self.limits)
        self._refusing = Refusals(app)

    async def start(self) -> None:
        """Nothing to open: the node is the lifecycle's."""

    async def close(self) -> None:
        """Nothing to release: the node is the lifecycle's."""

    async def trigger(self, event: Event) -> dict[str, Any]:
        with self._refusals():
            trigger = self._check(event)
            await publish(self.node, self.app, (trigger,))
            if not trigger.info:
                return {}
            return await trigger_info(self.node, self.app, trigger)

    async def trigger_batch(self, events: Sequence[Event]) -> dict[str, Any]:
        with self._refusals():
            if not events:
                raise RestError(400, "batch must be a non-empty list")
            if len(events) > self.limits.max_batch_size:
                raise RestError(400, f"more than {self.limits.max_batch_size} events in a batch")
            for event in events:
                if len(event.channels) != 1:
                    raise RestError(400, "every batch entry has exactly one channel")
            triggers = [self._check(event) for event in events]
            await publish(self.node, self.app, triggers)
            return await batch_info(self.node, self.app, triggers)

    async def trigger_many(self, events: Sequence[Event]) -> None:
        # No batch limit and no info answer: one rate-limit count and one context for all.
        with self._refusals():
            await publish(self.node, self.app, [self._check(event) for event in events])

    async def send_to_user(self, user_id: str, name: str, data: str) -> None:
        with self._refusals():
            trigger = self._check(Event((user_channel(user_id),), name, data))
            await publish(self.node, self.app, [trigger])

    async def terminate_user(self, user_id: str) -> None:
        with self._refusals():
            await terminate_user(self.node, self.app, user_id)

    async def channels(self, prefix: str, info: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self._refusals():
            return await channels_info(self.node, self.app, prefix, _info(info))

    async def channel(self, name: str, info: Sequence[str]) -> dict[str, Any]:
        with self._refusals():
            return await channel_info(self.node, self.app, name, _info(info))

    async def users(self, channel: str) -> list[str]:
        with self._refusals():
            return await user_ids(self.node, self.app, channel)

    async def occupied(self, channels: Sequence[str]) -> set[str]:
        # No app-enabled check and no name check: the live layer asks this on every commit
        # with names it built, and an answer costs nothing that a refusal would protect.
        return await self.node.occupied(self.app, channels)

    def _check(self, event: Event) -> Trigger:
        return self._checker.check(
            event.channels, event.name, event.data, event.socket_id, event.info
        )

    def _refusals(self) -> Refusals:
        return self._refusing


class Refusals:
    """``with``: each refusal as the :class:`PublishError` carrying the status REST answers.
    One per backend, entered by every call; a plain context manager, since neither end
    waits for anything (an ``async with`` would make two coroutines per call)."""

    __slots__ = ("app",)

    def __init__(self, app: App) -> None:
        self.app = app

    def __enter__(self) -> None:
        if not self.app.enabled:
            raise PublishError(403, "app disabled")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, RestError):
            raise PublishError(exc.status, exc.message) from None
        if isinstance(exc, BackendRateLimited):
            raise PublishError(429, str(exc)) from None
        if isinstance(exc, ClusterUnavailable):
            raise PublishError(503, f"{exc}: event not published, retry later") from None


def _info(info: Sequence[str]) -> tuple[str, ...]:
    """Attribute names checked as the REST ``info`` parameter is (unknown ones are a 400)."""
    return parse_info(",".join(info))
