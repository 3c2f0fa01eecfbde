"""Pusher HTTP API request bodies, parsed and validated with no I/O.

Each function takes the raw body bytes and the app's limits and returns a typed request,
or raises :class:`RestError` with the HTTP status Pusher uses (400 malformed, 413 too large).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from tidings.protocol.channels import ChannelKind, channel_type, name_error

SOCKET_ID_PATTERN = re.compile(r"\A\d+\.\d+\Z")


class RestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RestLimits:
    max_event_payload_bytes: int = 10240
    max_event_name_length: int = 200
    max_channel_name_length: int = 200
    max_channels_per_event: int = 100
    max_batch_size: int = 10


class Trigger(NamedTuple):
    """One event for one or more channels (``POST /events`` or one batch entry).

    Immutable; a tuple rather than a frozen dataclass because a batch makes ten of them per
    request, and a frozen dataclass pays a ``setattr`` per field (3x slower to build)."""

    name: str
    data: str
    channels: tuple[str, ...]
    socket_id: str | None
    info: tuple[str, ...]


_new = tuple.__new__

INFO_ATTRIBUTES = frozenset({"user_count", "subscription_count", "cache"})


def parse_info(value: object) -> tuple[str, ...]:
    """``info=user_count,subscription_count`` (comma-separated attribute names)."""
    if value is None or value == "":
        return ()
    if not isinstance(value, str):
        raise RestError(400, "info must be a comma-separated string")
    attributes = tuple(a.strip() for a in value.split(",") if a.strip())
    unknown = [a for a in attributes if a not in INFO_ATTRIBUTES]
    if unknown:
        raise RestError(400, f"unknown info attribute {unknown[0]!r}")
    return attributes


HISTORY_LIMIT = 100  # events one history page holds unless ``limit`` says otherwise
MAX_HISTORY_LIMIT = 1000
MAX_OFFSET = 2**63 - 1  # offsets are Redis integers


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """``GET /channels/{name}/history?since=N&limit=M``: events after offset ``since``."""

    since: int
    limit: int


def parse_history_query(since: str | None, limit: str | None) -> HistoryQuery:
    """``since`` (default 0: from the oldest kept) and ``limit`` (default
    :data:`HISTORY_LIMIT`, at most :data:`MAX_HISTORY_LIMIT`), as decimal integers."""
    return HistoryQuery(
        _integer("since", since, 0, 0, MAX_OFFSET),
        _integer("limit", limit, HISTORY_LIMIT, 1, MAX_HISTORY_LIMIT),
    )


def _integer(name: str, value: str | None, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    # ASCII digits only (str.isdigit takes other scripts' digits), and few enough of them
    # that int() never works on a long string.
    if not value.isascii() or not value.isdigit() or len(value) > len(str(high)):
        raise RestError(400, f"{name} must be an integer from {low} to {high}")
    number = int(value)
    if not low <= number <= high:
        raise RestError(400, f"{name} must be an integer from {low} to {high}")
    return number


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RestError(400, "body is not valid JSON") from None
    if not isinstance(value, dict):
        raise RestError(400, "body must be a JSON object")
    return value


def _trigger(entry: dict[str, Any], limits: RestLimits, batch: bool) -> Trigger:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise RestError(400, "name must be a non-empty string")
    if len(name) > limits.max_event_name_length:
        raise RestError(400, f"event name longer than {limits.max_event_name_length} characters")
    data = entry.get("data")
    if not isinstance(data, str):
        raise RestError(400, "data must be a string")
    if len(data.encode()) > limits.max_event_payload_bytes:
        raise RestError(413, f"data larger than {limits.max_event_payload_bytes} bytes")
    if batch or "channel" in entry:
        channels_value: object = [entry.get("channel")]
    else:
        channels_value = entry.get("channels")
    if not isinstance(channels_value, list) or not channels_value:
        raise RestError(400, "channels must be a non-empty list of channel names")
    if len(channels_value) > limits.max_channels_per_event:
        raise RestError(400, f"more than {limits.max_channels_per_event} channels")
    channels: list[str] = []
    for channel in channels_value:
        problem = name_error(channel, limits.max_channel_name_length)
        if problem is not None:
            raise RestError(400, f"invalid channel {channel!r}: {problem}")
        channels.append(channel)
    if len(channels) > 1 and any(channel_type(c).kind is ChannelKind.ENCRYPTED for c in channels):
        # Pusher: encrypted channels cannot be triggered together with other channels.
        raise RestError(400, "an encrypted channel must be the only channel of a trigger")
    socket_id = entry.get("socket_id")
    if socket_id is not None and (
        not isinstance(socket_id, str) or not SOCKET_ID_PATTERN.match(socket_id)
    ):
        raise RestError(400, "socket_id must look like 123.456")
    return Trigger(
        name, data, tuple(dict.fromkeys(channels)), socket_id, parse_info(entry.get("info"))
    )


def parse_trigger(body: bytes, limits: RestLimits) -> Trigger:
    return _trigger(_json_object(body), limits, batch=False)


def parse_batch(
    body: bytes, limits: RestLimits, checker: TriggerChecker | None = None
) -> list[Trigger]:
    """``checker``: the app's :class:`TriggerChecker` (for ``limits``), which checks the
    common shape of an entry faster, with the same answers."""
    if checker is not None:
        return checker.batch(body)
    return [_batch_entry(entry, limits) for entry in _batch_list(body, limits)]


def _batch_list(body: bytes, limits: RestLimits) -> list[Any]:
    """The ``batch`` list of a ``POST /batch_events`` body, its length checked."""
    batch = _json_object(body).get("batch")
    if not isinstance(batch, list) or not batch:
        raise RestError(400, "batch must be a non-empty list")
    if len(batch) > limits.max_batch_size:
        raise RestError(400, f"more than {limits.max_batch_size} events in a batch")
    return batch


def _batch_entry(entry: object, limits: RestLimits) -> Trigger:
    if not isinstance(entry, dict):
        raise RestError(400, "every batch entry must be an object")
    return _trigger(entry, limits, batch=True)


def check_trigger(
    channels: tuple[str, ...],
    name: str,
    data: str,
    socket_id: str | None,
    info: tuple[str, ...],
    limits: RestLimits,
) -> Trigger:
    """A trigger made in Python (``Realtime.trigger``, a publish-only client), checked
    exactly as ``POST /events`` checks its body, with the same errors."""
    entry: dict[str, Any] = {"name": name, "data": data, "channels": list(channels)}
    if socket_id is not None:
        entry["socket_id"] = socket_id
    if info:
        entry["info"] = ",".join(info)
    return _trigger(entry, limits, batch=False)


class TriggerChecker:
    """:func:`check_trigger` for one set of limits, with the channel names already found
    valid remembered: what ``Realtime.trigger`` and a publish-only client check per call
    (and :meth:`batch`, :func:`parse_batch` for the REST API's ``POST /batch_events``).

    A call that passes every check in the common shape (no ``info``, channel names seen
    before) becomes its :class:`Trigger` at once; any other call, and every call that
    fails, goes through :func:`check_trigger` itself, so the errors are its errors, word
    for word. The valid names are at most ``max_names``; when full they are forgotten
    together and learned again (a name costs one check per ``max_names`` new names).
    """

    __slots__ = ("limits", "max_names", "_valid")

    def __init__(self, limits: RestLimits, max_names: int = 10_000) -> None:
        self.limits = limits
        self.max_names = max_names
        self._valid: set[str] = set()

    def check(
        self,
        channels: tuple[str, ...],
        name: str,
        data: str,
        socket_id: str | None,
        info: tuple[str, ...],
    ) -> Trigger:
        limits = self.limits
        valid = self._valid
        if (
            not info
            and type(name) is str
            and 0 < len(name) <= limits.max_event_name_length
            and type(data) is str
            # str.isascii() reads a flag: then the UTF-8 length is len(data), no copy made.
            and (len(data) if data.isascii() else len(data.encode()))
            <= limits.max_event_payload_bytes
            and type(channels) is tuple
            and 0 < len(channels) <= limits.max_channels_per_event
            and (
                socket_id is None or (type(socket_id) is str and SOCKET_ID_PATTERN.match(socket_id))
            )
        ):
            if len(channels) == 1:
                if type(channels[0]) is str and channels[0] in valid:
                    return Trigger(name, data, channels, socket_id, ())
            elif all(type(c) is str and c in valid for c in channels) and not any(
                channel_type(c).kind is ChannelKind.ENCRYPTED for c in channels
            ):
                return Trigger(name, data, tuple(dict.fromkeys(channels)), socket_id, ())
        return self._learn(check_trigger(channels, name, data, socket_id, info, limits))

    def batch(self, body: bytes) -> list[Trigger]:
        """``POST /batch_events``' body, as ``parse_batch(body, limits)`` answers it.

        An entry of the common shape (an object with no ``info``, whose ``channel`` is a
        name seen before) becomes its :class:`Trigger` in this loop; any other entry goes
        through the general check itself, so the first entry refused, and its error, are
        the general path's (it checks the entries in order too)."""
        limits = self.limits
        valid = self._valid
        max_name = limits.max_event_name_length
        max_data = limits.max_event_payload_bytes
        fast = limits.max_channels_per_event >= 1  # else every entry is refused
        triggers: list[Trigger] = []
        for entry in _batch_list(body, limits):
            if fast and type(entry) is dict:
                channel = entry.get("channel")
                name = entry.get("name")
                data = entry.get("data")
                if len(entry) == 3:
                    # No other key (if the three are there, which the checks below see).
                    socket_id = info = None
                else:
                    socket_id = entry.get("socket_id")
                    info = entry.get("info")
                if (
                    type(channel) is str
                    and channel in valid
                    and info is None
                    and type(name) is str
                    and 0 < len(name) <= max_name
                    and type(data) is str
                    # str.isascii() reads a flag: then the UTF-8 length is len(data).
                    and (len(data) if data.isascii() else len(data.encode())) <= max_data
                    and (
                        socket_id is None
                        or (type(socket_id) is str and SOCKET_ID_PATTERN.match(socket_id))
                    )
                ):
                    # tuple.__new__ straight away: a NamedTuple's own __new__ is a Python
                    # function, whose call costs as much as the rest of this check.
                    triggers.append(_new(Trigger, (name, data, (channel,), socket_id, ())))
                    continue
            triggers.append(self._learn(_batch_entry(entry, limits)))
        return triggers

    def _learn(self, trigger: Trigger) -> Trigger:
        """Remember the channels of a trigger that passed every check."""
        valid = self._valid
        if len(valid) + len(trigger.channels) > self.max_names:
            valid.clear()
        valid.update(trigger.channels)
        return trigger
