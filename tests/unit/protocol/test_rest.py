"""protocol/rest.py: Pusher HTTP API bodies parsed into typed triggers."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import orjson
import pytest

from tidings.protocol.rest import (
    HistoryQuery,
    RestError,
    RestLimits,
    Trigger,
    TriggerChecker,
    check_trigger,
    parse_batch,
    parse_history_query,
    parse_info,
    parse_trigger,
)

LIMITS = RestLimits()


def error_of(body: bytes, batch: bool = False, limits: RestLimits = LIMITS) -> tuple[int, str]:
    with pytest.raises(RestError) as caught:
        if batch:
            parse_batch(body, limits)
        else:
            parse_trigger(body, limits)
    return caught.value.status, caught.value.message


# -- parse_trigger ------------------------------------------------------------------------


def test_reference_body() -> None:
    body = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
    assert parse_trigger(body, LIMITS) == Trigger(
        "foo", '{"some":"data"}', ("project-3",), None, ()
    )


def test_single_channel_socket_id_and_info() -> None:
    body = (
        b'{"name":"e","channel":"private-a","data":"x","socket_id":"1.2",'
        b'"info":"user_count, subscription_count"}'
    )
    assert parse_trigger(body, LIMITS) == Trigger(
        "e", "x", ("private-a",), "1.2", ("user_count", "subscription_count")
    )


def test_channel_wins_over_channels() -> None:
    body = b'{"name":"e","channel":"a","channels":["b","c"],"data":""}'
    assert parse_trigger(body, LIMITS).channels == ("a",)


def test_duplicate_channels_collapse_in_order() -> None:
    body = b'{"name":"e","channels":["b","a","b"],"data":""}'
    assert parse_trigger(body, LIMITS).channels == ("b", "a")


def test_single_encrypted_channel_is_allowed() -> None:
    body = b'{"name":"e","channels":["private-encrypted-a"],"data":"x"}'
    assert parse_trigger(body, LIMITS).channels == ("private-encrypted-a",)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "body is not valid JSON"),
        (b"{", 400, "body is not valid JSON"),
        (b"[]", 400, "body must be a JSON object"),
        (b'"x"', 400, "body must be a JSON object"),
        (b'{"data":"x","channel":"a"}', 400, "name must be a non-empty string"),
        (b'{"name":"","data":"x","channel":"a"}', 400, "name must be a non-empty string"),
        (b'{"name":1,"data":"x","channel":"a"}', 400, "name must be a non-empty string"),
        (b'{"name":"e","channel":"a"}', 400, "data must be a string"),
        (b'{"name":"e","data":{"a":1},"channel":"a"}', 400, "data must be a string"),
        (b'{"name":"e","data":"x"}', 400, "channels must be a non-empty list of channel names"),
        (
            b'{"name":"e","data":"x","channels":[]}',
            400,
            "channels must be a non-empty list of channel names",
        ),
        (
            b'{"name":"e","data":"x","channels":"a"}',
            400,
            "channels must be a non-empty list of channel names",
        ),
        (
            b'{"name":"e","data":"x","channel":null}',
            400,
            "invalid channel None: channel name must be a non-empty string",
        ),
        (
            b'{"name":"e","data":"x","channels":["ok","bad name"]}',
            400,
            "invalid channel 'bad name': channel name may contain only A-Z a-z 0-9 _ - = @ , . ;",
        ),
        (
            b'{"name":"e","data":"x","channels":["private-encrypted-a","b"]}',
            400,
            "an encrypted channel must be the only channel of a trigger",
        ),
        (
            b'{"name":"e","data":"x","channel":"a","socket_id":12}',
            400,
            "socket_id must look like 123.456",
        ),
        (
            b'{"name":"e","data":"x","channel":"a","socket_id":"abc"}',
            400,
            "socket_id must look like 123.456",
        ),
        (
            b'{"name":"e","data":"x","channel":"a","socket_id":"1.2\\n"}',
            400,
            "socket_id must look like 123.456",
        ),
        (
            b'{"name":"e","data":"x","channel":"a","socket_id":"1."}',
            400,
            "socket_id must look like 123.456",
        ),
        (
            b'{"name":"e","data":"x","channel":"a","info":"bogus"}',
            400,
            "unknown info attribute 'bogus'",
        ),
        (
            b'{"name":"e","data":"x","channel":"a","info":["cache"]}',
            400,
            "info must be a comma-separated string",
        ),
    ],
)
def test_trigger_errors(body: bytes, status: int, message: str) -> None:
    assert error_of(body) == (status, message)


def test_limits() -> None:
    limits = RestLimits(
        max_event_payload_bytes=4,
        max_event_name_length=3,
        max_channel_name_length=5,
        max_channels_per_event=2,
    )
    assert parse_trigger(b'{"name":"abc","data":"1234","channels":["aaaaa","b"]}', limits)
    assert error_of(b'{"name":"abcd","data":"","channel":"a"}', limits=limits) == (
        400,
        "event name longer than 3 characters",
    )
    assert error_of(b'{"name":"a","data":"12345","channel":"a"}', limits=limits) == (
        413,
        "data larger than 4 bytes",
    )
    # The payload limit counts UTF-8 bytes: "éé" is 4 bytes, "ééé" is 6.
    assert parse_trigger('{"name":"a","data":"éé","channel":"a"}'.encode(), limits)
    assert error_of('{"name":"a","data":"ééé","channel":"a"}'.encode(), limits=limits)[0] == 413
    assert error_of(b'{"name":"a","data":"","channels":["a","b","c"]}', limits=limits) == (
        400,
        "more than 2 channels",
    )
    assert error_of(b'{"name":"a","data":"","channel":"aaaaaa"}', limits=limits) == (
        400,
        "invalid channel 'aaaaaa': channel name longer than 5 characters",
    )


# -- parse_batch --------------------------------------------------------------------------


def test_batch() -> None:
    body = (
        b'{"batch":[{"name":"a","channel":"c1","data":"1"},'
        b'{"name":"b","channel":"c2","data":"2","socket_id":"1.1","info":"subscription_count"}]}'
    )
    assert parse_batch(body, LIMITS) == [
        Trigger("a", "1", ("c1",), None, ()),
        Trigger("b", "2", ("c2",), "1.1", ("subscription_count",)),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "body must be a JSON object"),
        (b"{}", "batch must be a non-empty list"),
        (b'{"batch":[]}', "batch must be a non-empty list"),
        (b'{"batch":{}}', "batch must be a non-empty list"),
        (b'{"batch":[1]}', "every batch entry must be an object"),
        (
            b'{"batch":[{"name":"a","channels":["c"],"data":"1"}]}',
            "invalid channel None: channel name must be a non-empty string",
        ),
    ],
)
def test_batch_errors(body: bytes, message: str) -> None:
    assert error_of(body, batch=True) == (400, message)


def test_batch_size_limit() -> None:
    entry = b'{"name":"a","channel":"c","data":""}'
    ten = b'{"batch":[' + b",".join([entry] * 10) + b"]}"
    eleven = b'{"batch":[' + b",".join([entry] * 11) + b"]}"
    assert len(parse_batch(ten, LIMITS)) == 10
    assert error_of(eleven, batch=True) == (400, "more than 10 events in a batch")


def test_batch_entry_data_too_large_is_413() -> None:
    body = b'{"batch":[{"name":"a","channel":"c","data":"' + b"x" * 10241 + b'"}]}'
    assert error_of(body, batch=True) == (413, "data larger than 10240 bytes")


# -- parse_info ---------------------------------------------------------------------------


def test_parse_info() -> None:
    assert parse_info(None) == ()
    assert parse_info("") == ()
    assert parse_info("user_count") == ("user_count",)
    assert parse_info(" cache ,, subscription_count ") == ("cache", "subscription_count")
    with pytest.raises(RestError) as caught:
        parse_info("user_count,members")
    assert (caught.value.status, caught.value.message) == (400, "unknown info attribute 'members'")


def test_history_query_defaults_and_bounds() -> None:
    assert parse_history_query(None, None) == HistoryQuery(since=0, limit=100)
    assert parse_history_query("12", "1000") == HistoryQuery(since=12, limit=1000)
    assert parse_history_query(str(2**63 - 1), "1").since == 2**63 - 1


@pytest.mark.parametrize(
    ("since", "limit", "named"),
    [
        ("-1", None, "since"),
        ("1.5", None, "since"),
        ("", None, "since"),
        (" 1", None, "since"),
        ("\u0661", None, "since"),  # an Arabic-Indic one: a digit to str.isdigit, not to us
        ("9" * 19, None, "since"),
        ("9" * 5000, None, "since"),
        (None, "0", "limit"),
        (None, "1001", "limit"),
        (None, "ten", "limit"),
    ],
)
def test_bad_history_queries_are_400_naming_the_parameter(
    since: str | None, limit: str | None, named: str
) -> None:
    with pytest.raises(RestError) as caught:
        parse_history_query(since, limit)
    assert caught.value.status == 400 and caught.value.message.startswith(f"{named} must be")


# -- TriggerChecker: check_trigger with the valid channel names remembered -----------------


def checker_error(checker: TriggerChecker, *args: Any) -> tuple[int, str]:
    with pytest.raises(RestError) as caught:
        checker.check(*args)
    return caught.value.status, caught.value.message


def check_trigger_error(limits: RestLimits, *args: Any) -> tuple[int, str]:
    with pytest.raises(RestError) as caught:
        check_trigger(*args, limits)
    return caught.value.status, caught.value.message


BAD_CALLS: list[tuple[Any, ...]] = [
    (("known",), "", "x", None, ()),
    (("known",), 1, "x", None, ()),
    (("known",), "e" * 201, "x", None, ()),
    (("known",), "e", 1, None, ()),
    (("known",), "e", "x" * 10241, None, ()),
    (("known",), "e", "é" * 5121, None, ()),  # 10,242 bytes in UTF-8, 5,121 characters
    ((), "e", "x", None, ()),
    (tuple(f"c{i}" for i in range(101)), "e", "x", None, ()),
    (("known", "bad name"), "e", "x", None, ()),
    (("known", "private-encrypted-known"), "e", "x", None, ()),
    (("private-encrypted-known", "private-encrypted-known"), "e", "x", None, ()),
    (("known",), "e", "x", "not-a-socket-id", ()),
    (("known",), "e", "x", 12, ()),
    (("known",), "e", "x", None, ("members",)),
]


@pytest.mark.parametrize("call", BAD_CALLS)
def test_checker_refuses_as_check_trigger_does_with_names_known(call: tuple[Any, ...]) -> None:
    checker = TriggerChecker(LIMITS)
    checker.check(("private-encrypted-known",), "e", "x", None, ())  # remembered
    assert checker.check(("known",), "e", "x", None, ()).channels == ("known",)
    assert checker_error(checker, *call) == check_trigger_error(LIMITS, *call)


def test_checker_answers_what_check_trigger_answers() -> None:
    checker = TriggerChecker(LIMITS)
    calls: list[tuple[Any, ...]] = [
        (("a",), "e", "x", None, ()),
        (("b", "a", "b"), "e", "é", "1.2", ()),
        (("a",), "e", "x", None, ("subscription_count",)),
        (("#server-to-user-u1",), "e", "x", None, ()),
        (("private-encrypted-a",), "e", "x", None, ()),
    ]
    for _ in range(2):  # unknown names, then remembered ones
        for call in calls:
            assert checker.check(*call) == check_trigger(*call, LIMITS)


def test_a_remembered_name_is_valid_only_under_its_own_limits() -> None:
    long_name = "c" * 50
    lenient = TriggerChecker(LIMITS)
    strict = TriggerChecker(RestLimits(max_channel_name_length=20))
    assert lenient.check((long_name,), "e", "x", None, ()).channels == (long_name,)
    assert checker_error(strict, (long_name,), "e", "x", None, ()) == (
        400,
        f"invalid channel {long_name!r}: channel name longer than 20 characters",
    )


def test_the_remembered_names_are_bounded() -> None:
    checker = TriggerChecker(LIMITS, max_names=3)
    for name in ("a", "b", "c", "d", "e"):
        checker.check((name,), "e", "x", None, ())
        assert len(checker._valid) <= 3  # noqa: SLF001
    assert checker.check(("a",), "e", "x", None, ()).channels == ("a",)  # learned again


# -- TriggerChecker.batch: POST /batch_events with the common shape of entry fast -----------


def outcome(check: Any, *args: Any) -> list[Trigger] | tuple[int, str]:
    try:
        result: list[Trigger] = check(*args)
    except RestError as refused:
        return refused.status, refused.message
    return result


BATCH_ENTRIES: list[Any] = [
    {"channel": "known", "name": "e", "data": "x"},
    {"channel": "known", "name": "e", "data": "é" * 10},
    {"channel": "known", "name": "e", "data": "x", "socket_id": "1.2"},
    {"channel": "known", "name": "e", "data": "x", "socket_id": None},
    {"channel": "known", "name": "e", "data": "x", "extra": 1},
    {"channel": "known", "name": "e", "data": "x", "info": "subscription_count"},
    {"channel": "known", "name": "e", "data": "x", "info": ""},
    {"channel": "known", "name": "e", "data": "x", "info": None},
    {"channel": "known", "name": "e", "data": "x", "channels": ["other", "bad name"]},
    {"channel": "unknown", "name": "e", "data": "x"},
    {"channel": "private-encrypted-known", "name": "e", "data": "x"},
    {"channel": "#server-to-user-u1", "name": "e", "data": "x"},
    {"channel": "known", "name": "", "data": "x"},
    {"channel": "known", "name": 1, "data": "x"},
    {"channel": "known", "name": "e" * 201, "data": "x"},
    {"channel": "known", "name": "e", "data": 1},
    {"channel": "known", "name": "e", "data": "x" * 10241},
    {"channel": "known", "name": "e", "data": "é" * 5121},  # 10,242 bytes in UTF-8
    # At the limits (of LIMITS, and of the small limits below).
    {"channel": "known", "name": "e" * 200, "data": "x" * 10240},
    {"channel": "known", "name": "e", "data": "é" * 5120},
    {"channel": "known", "name": "abc", "data": "abcd"},
    {"channel": "known", "name": "abc", "data": "éé"},
    {"channel": "known", "name": "e", "data": "ééa"},
    {"channel": "known", "name": "e"},
    {"channel": "known", "name": "e", "info": "x"},  # three keys, but not the three
    {"channel": "bad name", "name": "e", "data": "x"},
    {"channel": ["known"], "name": "e", "data": "x"},
    {"channel": None, "name": "e", "data": "x"},
    {"name": "e", "data": "x"},
    {"channels": ["known"], "name": "e", "data": "x"},
    {"channel": "known", "name": "e", "data": "x", "socket_id": "not-a-socket-id"},
    {"channel": "known", "name": "e", "data": "x", "socket_id": 12},
    {"channel": "known", "name": "e", "data": "x", "info": "members"},
    1,
    None,
    "entry",
    ["known", "e", "x"],
]

BATCH_BODIES: list[bytes] = [
    b"",
    b"not json",
    b"[]",
    b"{}",
    b'{"batch":null}',
    b'{"batch":[]}',
    b'{"batch":{}}',
    b'{"batch":"abc"}',
    orjson.dumps({"batch": [{"channel": "known", "name": "e", "data": "x"}] * 11}),
]


def batch_bodies(seed: int, count: int) -> list[bytes]:
    """Every entry alone, then ``count`` batches of 1 to 11 entries drawn from them."""
    rng = random.Random(seed)
    bodies = [*BATCH_BODIES, *(orjson.dumps({"batch": [entry]}) for entry in BATCH_ENTRIES)]
    for _ in range(count):
        entries = [rng.choice(BATCH_ENTRIES) for _ in range(rng.randint(1, 11))]
        bodies.append(orjson.dumps({"batch": entries}))
    return bodies


@pytest.mark.parametrize(
    "limits",
    [
        LIMITS,
        RestLimits(max_event_payload_bytes=4, max_event_name_length=3),
        RestLimits(max_channel_name_length=5, max_batch_size=3),
        RestLimits(max_channels_per_event=0),
    ],
)
def test_checker_batch_answers_what_parse_batch_answers(limits: RestLimits) -> None:
    checker = TriggerChecker(limits)
    with contextlib.suppress(RestError):  # remembered, where the limits let it be valid
        checker.batch(b'{"batch":[{"channel":"known","name":"e","data":""}]}')
    bodies = batch_bodies(seed=18, count=300)
    for body in bodies + bodies:  # the second time, every valid name is remembered
        expected = outcome(parse_batch, body, limits)
        assert outcome(checker.batch, body) == expected, body
        assert outcome(parse_batch, body, limits, checker) == expected, body


def test_checker_batch_takes_the_common_shape_fast() -> None:
    checker = TriggerChecker(LIMITS)
    body = b'{"batch":[{"channel":"known","name":"e","data":"x"}]}'
    assert checker.batch(body) == [Trigger("e", "x", ("known",), None, ())]
    assert checker._valid == {"known"}  # noqa: SLF001
    checker._valid.add("not valid but remembered")  # noqa: SLF001
    # A remembered name is not checked again: that is the fast path (never taken for a
    # name that was not found valid, see the test above).
    odd = b'{"batch":[{"channel":"not valid but remembered","name":"e","data":"x"}]}'
    assert checker.batch(odd)[0].channels == ("not valid but remembered",)
