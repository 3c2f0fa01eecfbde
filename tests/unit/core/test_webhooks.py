"""core/webhooks.py: targets and filters, the batch window, delays, backoff, body and signature.

Signatures are checked with the official ``pusher`` SDK's ``validate_webhook``: a receiver
written against Pusher must accept what Tidings sends (protocol reference section 3.3).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pusher
import pytest

from tidings.core.webhooks import (
    BACKOFF_CAP,
    EVENT_TYPES,
    Delayer,
    WebhookTarget,
    backoff,
    body,
    entry,
    hold_id,
    signature,
    window,
)

APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"

OCCUPIED = {"name": "channel_occupied", "channel": "presence-room"}
VACATED = {"name": "channel_vacated", "channel": "presence-room"}
MEMBER_ADDED = {"name": "member_added", "channel": "presence-room", "user_id": "1"}
MEMBER_REMOVED = {"name": "member_removed", "channel": "presence-room", "user_id": "1"}
CLIENT_EVENT = {
    "name": "client_event",
    "channel": "private-chat",
    "event": "client-typing",
    "data": '{"who":"ann"}',
    "socket_id": "1.2",
}
CACHE_MISS = {"name": "cache_miss", "channel": "cache-prices"}
SUBSCRIPTION_COUNT = {"name": "subscription_count", "channel": "news", "subscription_count": 3}
ALL_EVENTS = [
    OCCUPIED,
    VACATED,
    MEMBER_ADDED,
    MEMBER_REMOVED,
    CLIENT_EVENT,
    CACHE_MISS,
    SUBSCRIPTION_COUNT,
]


def now_ms() -> int:
    return int(time.time() * 1000)


def sdk() -> pusher.Pusher:
    return pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET)


# --- WebhookTarget.wants -------------------------------------------------------------------


def test_the_event_types_list_names_every_pusher_webhook() -> None:
    assert EVENT_TYPES == {e["name"] for e in ALL_EVENTS}


def test_a_target_without_filters_wants_every_event() -> None:
    target = WebhookTarget("http://127.0.0.1/hook")
    assert target.event_types == frozenset()
    assert (target.starts_with, target.ends_with, target.headers) == ("", "", ())
    assert all(target.wants(e) for e in ALL_EVENTS)


def test_event_types_keep_only_the_listed_names() -> None:
    target = WebhookTarget(
        "http://127.0.0.1/hook", event_types=frozenset({"channel_occupied", "channel_vacated"})
    )
    assert [e["name"] for e in ALL_EVENTS if target.wants(e)] == [
        "channel_occupied",
        "channel_vacated",
    ]


def test_starts_with_filters_on_the_channel_name() -> None:
    target = WebhookTarget("http://127.0.0.1/hook", starts_with="presence-")
    assert target.wants(OCCUPIED)
    assert target.wants(MEMBER_REMOVED)
    assert not target.wants(CLIENT_EVENT)  # private-chat
    assert not target.wants(SUBSCRIPTION_COUNT)  # news
    assert not target.wants({"name": "channel_occupied", "channel": "xpresence-room"})


def test_ends_with_filters_on_the_channel_name() -> None:
    target = WebhookTarget("http://127.0.0.1/hook", ends_with="-chat")
    assert target.wants(CLIENT_EVENT)
    assert not target.wants(OCCUPIED)
    assert not target.wants({"name": "channel_occupied", "channel": "private-chat-2"})


def test_starts_with_and_ends_with_must_both_match() -> None:
    target = WebhookTarget("http://127.0.0.1/hook", starts_with="private-", ends_with="-chat")
    assert target.wants({"name": "channel_occupied", "channel": "private-team-chat"})
    assert not target.wants({"name": "channel_occupied", "channel": "private-team"})
    assert not target.wants({"name": "channel_occupied", "channel": "presence-team-chat"})


def test_event_types_and_channel_filter_combine() -> None:
    target = WebhookTarget(
        "http://127.0.0.1/hook",
        event_types=frozenset({"member_added"}),
        starts_with="presence-",
    )
    assert target.wants(MEMBER_ADDED)
    assert not target.wants(MEMBER_REMOVED)  # right channel, wrong type
    assert not target.wants({**MEMBER_ADDED, "channel": "private-x"})  # right type, wrong channel


def test_targets_are_immutable_and_hashable() -> None:
    a = WebhookTarget("http://h/1", frozenset({"cache_miss"}), "c", "", (("X-Extra", "1"),))
    b = WebhookTarget("http://h/1", frozenset({"cache_miss"}), "c", "", (("X-Extra", "1"),))
    assert a == b
    assert hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.url = "http://elsewhere"  # type: ignore[misc]


# --- the batch window (applied when the queue is read) ----------------------------------------


def test_an_empty_queue_makes_no_request() -> None:
    assert window([], 50) == 0


def test_entries_within_the_delay_of_the_first_go_in_one_request() -> None:
    assert window([1000, 1010, 1049, 1050], 50) == 4
    assert window([1000, 1010, 1051, 1052], 50) == 2  # 1052 is within 50 of 1010 only


def test_the_window_counts_from_the_first_entry_not_the_previous_one() -> None:
    assert window([0, 40, 80, 120], 50) == 2


def test_a_zero_delay_takes_the_entries_of_the_same_millisecond() -> None:
    assert window([7, 7, 7, 8], 0) == 3


def test_the_first_entry_always_goes_even_when_later_ones_look_older() -> None:
    # Clocks of two nodes differ a little: an entry written later may carry an older time.
    assert window([1000, 990, 2000], 50) == 2
    assert window([1000], 0) == 1


def test_an_entry_keeps_the_events_and_when_they_happened() -> None:
    assert json.loads(entry([OCCUPIED, MEMBER_ADDED], 1_700_000_000_123)) == {
        "created": 1_700_000_000_123,
        "events": [OCCUPIED, MEMBER_ADDED],
    }


def test_hold_ids_differ_per_app_and_key_and_cannot_collide_through_separators() -> None:
    ids = {
        hold_id("1", ("vacated", "a")),
        hold_id("2", ("vacated", "a")),
        hold_id("1", ("removed", "a", "u")),
        hold_id("1", ("removed", "a|u", "")),
        hold_id("1", ("removed", 'a","u', "")),
    }
    assert len(ids) == 5
    assert hold_id("1", ("vacated", "a")) == hold_id("1", ("vacated", "a"))


# --- Delayer ---------------------------------------------------------------------------------


def test_a_new_delayer_is_empty() -> None:
    delayer = Delayer()
    assert len(delayer) == 0
    assert delayer.next_due() is None
    assert delayer.due(1e9) == []
    assert delayer.cancel("nothing") is False


def test_held_events_come_out_when_due_in_time_order() -> None:
    delayer = Delayer()
    delayer.defer("late", VACATED, 13.0)
    delayer.defer("early", MEMBER_REMOVED, 11.0)
    delayer.defer("middle", {"name": "channel_vacated", "channel": "b"}, 12.0)
    assert len(delayer) == 3
    assert delayer.next_due() == 11.0
    assert delayer.due(10.99) == []
    assert delayer.due(12.0) == [MEMBER_REMOVED, {"name": "channel_vacated", "channel": "b"}]
    assert delayer.next_due() == 13.0
    assert delayer.due(100.0) == [VACATED]
    assert len(delayer) == 0
    assert delayer.next_due() is None


def test_events_due_at_the_same_time_keep_their_defer_order() -> None:
    delayer = Delayer()
    for i in range(5):
        delayer.defer(i, {"name": "channel_vacated", "channel": f"c{i}"}, 3.0)
    assert [e["channel"] for e in delayer.due(3.0)] == ["c0", "c1", "c2", "c3", "c4"]


def test_cancel_drops_a_held_event_and_says_so() -> None:
    delayer = Delayer()
    delayer.defer(("12345", "presence-room"), VACATED, 3.0)
    assert delayer.cancel(("12345", "presence-room")) is True
    assert len(delayer) == 0
    assert delayer.due(10.0) == []


def test_cancel_is_false_when_nothing_is_held() -> None:
    delayer = Delayer()
    assert delayer.cancel("k") is False
    delayer.defer("k", VACATED, 3.0)
    assert delayer.cancel("other") is False
    assert delayer.cancel("k") is True
    assert delayer.cancel("k") is False  # already cancelled


def test_cancel_is_false_once_the_event_went_out() -> None:
    delayer = Delayer()
    delayer.defer("k", VACATED, 3.0)
    assert delayer.due(3.0) == [VACATED]
    assert delayer.cancel("k") is False


def test_deferring_the_same_key_again_replaces_the_held_event() -> None:
    delayer = Delayer()
    delayer.defer("k", MEMBER_REMOVED, 3.0)
    replacement = {**MEMBER_REMOVED, "user_id": "2"}
    delayer.defer("k", replacement, 3.0)
    assert len(delayer) == 1
    assert delayer.due(3.0) == [replacement]
    assert delayer.due(100.0) == []


def test_a_replacement_held_for_longer_is_not_released_at_the_old_time() -> None:
    delayer = Delayer()
    delayer.defer("k", MEMBER_REMOVED, 3.0)
    replacement = {**MEMBER_REMOVED, "user_id": "2"}
    delayer.defer("k", replacement, 5.0)
    assert delayer.due(4.0) == []
    assert len(delayer) == 1
    assert delayer.due(5.0) == [replacement]
    assert delayer.due(100.0) == []


def test_a_replacement_held_for_less_time_is_released_once_at_the_new_time() -> None:
    delayer = Delayer()
    delayer.defer("k", MEMBER_REMOVED, 5.0)
    replacement = {**MEMBER_REMOVED, "user_id": "2"}
    delayer.defer("k", replacement, 3.0)
    assert delayer.next_due() == 3.0
    assert delayer.due(3.0) == [replacement]
    assert delayer.due(100.0) == []
    assert delayer.next_due() is None


def test_next_due_skips_cancelled_events() -> None:
    delayer = Delayer()
    delayer.defer("a", VACATED, 1.0)
    delayer.defer("b", MEMBER_REMOVED, 2.0)
    delayer.defer("c", CACHE_MISS, 3.0)
    assert delayer.cancel("a") is True
    assert delayer.next_due() == 2.0
    assert delayer.cancel("b") is True
    assert delayer.next_due() == 3.0
    assert delayer.cancel("c") is True
    assert delayer.next_due() is None


def test_next_due_is_the_time_of_a_replacement_not_of_the_event_it_replaced() -> None:
    delayer = Delayer()
    delayer.defer("k", VACATED, 1.0)
    delayer.defer("k", VACATED, 4.0)  # e.g. vacated again after a quick re-occupy
    assert delayer.next_due() == 4.0


def test_next_due_after_cancel_and_defer_again_is_the_new_time() -> None:
    delayer = Delayer()
    delayer.defer("k", VACATED, 1.0)
    assert delayer.cancel("k") is True
    delayer.defer("k", VACATED, 4.0)
    assert delayer.next_due() == 4.0
    assert delayer.due(2.0) == []
    assert delayer.due(4.0) == [VACATED]


# --- backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "full"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 32.0), (7, 60.0), (8, 60.0)],
)
def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half(
    attempt: int, full: float
) -> None:
    assert backoff(attempt, 0.0) == pytest.approx(full / 2)
    assert backoff(attempt, 0.5) == pytest.approx(full * 0.75)
    assert full / 2 <= backoff(attempt, 0.999999) < full


def test_backoff_grows_with_the_attempt() -> None:
    for jitter in (0.0, 0.3, 0.9):
        waits = [backoff(a, jitter) for a in range(1, 7)]
        assert waits == sorted(waits)
        assert all(b == pytest.approx(2 * a) for a, b in zip(waits, waits[1:], strict=False))


def test_backoff_never_passes_sixty_seconds() -> None:
    assert BACKOFF_CAP == 60.0
    for attempt in (7, 10, 50, 1000):
        assert 30.0 <= backoff(attempt, 0.0) <= backoff(attempt, 0.999999) < 60.0


@pytest.mark.parametrize("attempt", [1025, 10_000])
def test_backoff_stays_capped_after_a_thousand_attempts(attempt: int) -> None:
    # At about 45 s a retry, attempt 1025 comes some 13 hours in: reachable with a long
    # webhook_retry_for.
    assert 30.0 <= backoff(attempt, 0.0) <= backoff(attempt, 0.999999) < 60.0


def test_backoff_jitter_spreads_over_the_range() -> None:
    waits = [backoff(3, j / 100) for j in range(100)]
    assert min(waits) == pytest.approx(2.0)
    assert max(waits) < 4.0
    assert waits == sorted(waits)
    assert len(set(waits)) == 100


def test_backoff_before_the_first_retry_is_the_base() -> None:
    assert backoff(0, 0.0) == backoff(1, 0.0) == pytest.approx(0.5)


# --- body and signature ----------------------------------------------------------------------


def test_body_is_compact_json_with_time_ms_and_events() -> None:
    raw = body([OCCUPIED, MEMBER_ADDED], 1700000000123)
    assert isinstance(raw, bytes)
    assert raw == (
        b'{"time_ms":1700000000123,"events":['
        b'{"name":"channel_occupied","channel":"presence-room"},'
        b'{"name":"member_added","channel":"presence-room","user_id":"1"}]}'
    )


def test_body_keeps_every_event_field_and_non_ascii_text() -> None:
    event = {**CLIENT_EVENT, "data": '{"text":"héllo 🚀"}', "user_id": "7"}
    decoded = json.loads(body([event, SUBSCRIPTION_COUNT], 5))
    assert decoded == {"time_ms": 5, "events": [event, SUBSCRIPTION_COUNT]}
    assert isinstance(decoded["time_ms"], int)


def test_body_of_no_events() -> None:
    assert json.loads(body([], 1)) == {"time_ms": 1, "events": []}


def test_signature_is_hex_hmac_sha256_of_the_raw_body() -> None:
    raw = body([OCCUPIED], 1700000000000)
    expected = hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert signature(APP_SECRET, raw) == expected
    assert len(expected) == 64
    assert signature("other-secret", raw) != expected
    assert signature(APP_SECRET, raw + b" ") != expected


def test_the_pusher_sdk_accepts_a_signed_body() -> None:
    raw = body(ALL_EVENTS, now_ms())
    parsed = sdk().validate_webhook(APP_KEY, signature(APP_SECRET, raw), raw)
    assert parsed is not None
    assert parsed["events"] == ALL_EVENTS


def test_the_pusher_sdk_accepts_the_body_as_text_too() -> None:
    raw = body([{**CLIENT_EVENT, "data": '{"t":"é"}'}], now_ms())
    parsed = sdk().validate_webhook(APP_KEY, signature(APP_SECRET, raw), raw.decode())
    assert parsed is not None
    assert parsed["events"][0]["data"] == '{"t":"é"}'


def test_the_pusher_sdk_refuses_a_tampered_body() -> None:
    raw = body([MEMBER_ADDED], now_ms())
    sig = signature(APP_SECRET, raw)
    tampered = raw.replace(b'"user_id":"1"', b'"user_id":"2"')
    assert tampered != raw
    assert sdk().validate_webhook(APP_KEY, sig, tampered) is None


def test_the_pusher_sdk_refuses_another_key_or_secret() -> None:
    raw = body([OCCUPIED], now_ms())
    assert sdk().validate_webhook("other-key", signature(APP_SECRET, raw), raw) is None
    assert sdk().validate_webhook(APP_KEY, signature("other-secret", raw), raw) is None


def test_the_pusher_sdk_refuses_a_time_ms_older_than_five_minutes() -> None:
    old = body([OCCUPIED], now_ms() - 301_000)
    assert sdk().validate_webhook(APP_KEY, signature(APP_SECRET, old), old) is None
    recent = body([OCCUPIED], now_ms() - 290_000)
    assert sdk().validate_webhook(APP_KEY, signature(APP_SECRET, recent), recent) is not None
