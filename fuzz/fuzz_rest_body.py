"""Fuzz the REST body parsers: ``POST /events`` and ``POST /batch_events``.

Contract (``protocol/rest.py``): ``parse_trigger`` / ``parse_batch`` return typed triggers or
raise :class:`RestError` with status 400 (malformed) or 413 (too large). Invariants: every
trigger respects the app's limits and names only valid channels; a trigger written back as a
body parses to the same trigger; ``TriggerChecker.batch`` (the REST API's fast path, which
remembers the valid channel names across inputs) answers every body as ``parse_batch`` does.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from reader import FuzzInput

from tidings.protocol.channels import name_error
from tidings.protocol.rest import (
    RestError,
    RestLimits,
    Trigger,
    TriggerChecker,
    parse_batch,
    parse_trigger,
)

LIMITS = (
    RestLimits(),
    RestLimits(
        max_event_payload_bytes=64,
        max_event_name_length=8,
        max_channel_name_length=16,
        max_channels_per_event=3,
        max_batch_size=2,
    ),
)

CHECKERS = tuple(TriggerChecker(limits) for limits in LIMITS)


def outcome(parse: Any, *args: Any) -> list[Trigger] | tuple[int, str]:
    try:
        triggers: list[Trigger] = parse(*args)
    except RestError as exc:
        return exc.status, exc.message
    return triggers


def check_trigger(trigger: Trigger, limits: RestLimits) -> None:
    assert isinstance(trigger, Trigger)
    assert 0 < len(trigger.name) <= limits.max_event_name_length
    assert len(trigger.data.encode()) <= limits.max_event_payload_bytes
    assert 0 < len(trigger.channels) <= limits.max_channels_per_event
    assert len(set(trigger.channels)) == len(trigger.channels)
    for channel in trigger.channels:
        assert name_error(channel, limits.max_channel_name_length) is None, channel


def body_of(trigger: Trigger) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": trigger.name, "data": trigger.data}
    entry["channels"] = list(trigger.channels)
    if trigger.socket_id is not None:
        entry["socket_id"] = trigger.socket_id
    if trigger.info:
        entry["info"] = ",".join(trigger.info)
    return entry


def check_body(body: bytes, limits: RestLimits, checker: TriggerChecker) -> None:
    assert outcome(checker.batch, body) == outcome(parse_batch, body, limits)
    try:
        trigger = parse_trigger(body, limits)
    except RestError as exc:
        assert exc.status in (400, 413), exc.status
    else:
        check_trigger(trigger, limits)
        assert parse_trigger(orjson.dumps(body_of(trigger)), limits) == trigger
    try:
        batch = parse_batch(body, limits)
    except RestError as exc:
        assert exc.status in (400, 413), exc.status
    else:
        assert 0 < len(batch) <= limits.max_batch_size
        for trigger in batch:
            check_trigger(trigger, limits)
            assert len(trigger.channels) == 1
        again = []
        for trigger in batch:
            entry = body_of(trigger)
            entry["channel"] = entry.pop("channels")[0]
            again.append(entry)
        assert parse_batch(orjson.dumps({"batch": again}), limits) == batch


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - the name atheris and libFuzzer use
    data = FuzzInput(raw)
    which = data.choice(len(LIMITS))
    limits, checker = LIMITS[which], CHECKERS[which]
    body = data.rest()
    check_body(body, limits, checker)
    if body[:1] != b"{":
        # Most mutations break the JSON; also try the input as the contents of an entry,
        # so the fuzzer spends its time past the JSON parser too.
        check_body(b'{"batch":[' + body + b"]}", limits, checker)
        check_body(b'{"name":"e","data":"d",' + body + b"}", limits, checker)


if __name__ == "__main__":
    from entry import fuzz_main

    fuzz_main(TestOneInput)
    sys.exit(0)
