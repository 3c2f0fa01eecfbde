"""core/admission.py: deadlines, the pending cap and the per-address limit, with literal times."""

from __future__ import annotations

import pytest

from tidings.core.admission import Admission, AdmissionLimits, Cut

LIMITS = AdmissionLimits(header_timeout=20.0, body_timeout=30.0, max_pending=3)


def test_headers_not_complete_by_the_deadline_are_cut() -> None:
    admission: Admission[str] = Admission(LIMITS)
    assert admission.accepted("slow", None, now=0.0) == []
    assert admission.accepted("later", None, now=5.0) == []
    assert admission.expired(19.9) == []
    assert admission.expired(20.0) == [("slow", Cut.HEADER_TIMEOUT)]
    assert admission.expired(25.0) == [("later", Cut.HEADER_TIMEOUT)]
    assert admission.cuts == {Cut.HEADER_TIMEOUT: 2}
    assert admission.pending == 0


def test_a_complete_request_leaves_the_bookkeeping() -> None:
    """An upgraded WebSocket (no body) is never cut here: the activity timeout governs it."""
    admission: Admission[str] = Admission(LIMITS)
    admission.accepted("ws", None, now=0.0)
    admission.request_started("ws", now=0.1, body_complete=True)
    assert admission.pending == 0
    assert admission.expired(10_000.0) == []


def test_the_body_has_its_own_deadline_from_the_headers() -> None:
    admission: Admission[str] = Admission(LIMITS)
    admission.accepted("upload", None, now=0.0)
    admission.accepted("fast", None, now=0.0)
    admission.request_started("upload", now=15.0, body_complete=False)
    admission.request_started("fast", now=15.0, body_complete=False)
    admission.body_complete("fast")
    assert admission.pending == 1
    assert admission.expired(44.9) == []  # past the header deadline: headers were in time
    assert admission.expired(45.0) == [("upload", Cut.BODY_TIMEOUT)]


def test_at_the_cap_the_oldest_pending_connection_makes_room() -> None:
    admission: Admission[str] = Admission(LIMITS)
    for i, name in enumerate(("a", "b", "c")):
        assert admission.accepted(name, None, now=float(i)) == []
    admission.request_started("a", now=3.0, body_complete=False)  # a waits for its body
    assert admission.accepted("d", None, now=4.0) == [("b", Cut.PENDING_CAP)]
    assert admission.accepted("e", None, now=4.0) == [("c", Cut.PENDING_CAP)]
    assert admission.accepted("f", None, now=4.0) == [("d", Cut.PENDING_CAP)]
    assert admission.pending == 3
    assert admission.cuts[Cut.PENDING_CAP] == 3


def test_only_body_waiters_left_the_oldest_of_them_goes() -> None:
    admission: Admission[str] = Admission(AdmissionLimits(20.0, 30.0, max_pending=1))
    admission.accepted("a", None, now=0.0)
    admission.request_started("a", now=0.0, body_complete=False)
    assert admission.accepted("b", None, now=1.0) == [("a", Cut.PENDING_CAP)]


def test_per_address_limit_counts_open_connections() -> None:
    admission: Admission[str] = Admission(AdmissionLimits(20.0, 30.0, 100, max_per_address=2))
    assert admission.accepted("a1", "10.0.0.1", now=0.0) == []
    admission.request_started("a1", now=0.0, body_complete=True)  # established: still counted
    assert admission.accepted("a2", "10.0.0.1", now=0.0) == []
    assert admission.accepted("a3", "10.0.0.1", now=0.0) == [("a3", Cut.PER_IP)]
    assert admission.accepted("b1", "10.0.0.2", now=0.0) == []  # another address
    admission.lost("a3")  # the refused one closing changes nothing
    assert admission.accepted("a4", "10.0.0.1", now=0.0) == [("a4", Cut.PER_IP)]
    admission.lost("a1")
    assert admission.accepted("a5", "10.0.0.1", now=0.0) == []
    assert admission.cuts[Cut.PER_IP] == 2


def test_readdress_moves_a_proxied_connection_to_its_client() -> None:
    admission: Admission[str] = Admission(AdmissionLimits(20.0, 30.0, 100, max_per_address=1))
    for conn in ("p1", "p2", "p3"):
        admission.accepted(conn, None, now=0.0)  # from a trusted proxy: not counted yet
    assert admission.readdress("p1", "203.0.113.1")
    assert admission.readdress("p1", "203.0.113.1")  # the same client again: no change
    assert not admission.readdress("p2", "203.0.113.1")
    assert admission.readdress("p3", "203.0.113.2")
    assert admission.readdress("p1", "203.0.113.9")  # a keep-alive request for another client
    assert admission.readdress("p2", "203.0.113.1")  # ...which freed the first one
    assert admission.cuts[Cut.PER_IP] == 1


def test_hand_over_keeps_the_socket_counted_under_its_successor() -> None:
    admission: Admission[str] = Admission(AdmissionLimits(20.0, 30.0, 100, max_per_address=1))
    assert admission.accepted("handler", "10.0.0.1", now=0.0) == []
    admission.request_started("handler", now=0.0, body_complete=True)
    admission.hand_over("handler", "websocket")
    admission.lost("handler")  # the HTTP server forgets its handler: still counted
    assert admission.accepted("next", "10.0.0.1", now=0.0) == [("next", Cut.PER_IP)]
    admission.lost("websocket")
    assert admission.accepted("again", "10.0.0.1", now=0.0) == []


def test_a_handed_over_socket_is_never_pending() -> None:
    admission: Admission[str] = Admission(LIMITS)
    admission.accepted("handler", None, now=0.0)
    admission.hand_over("handler", "websocket")
    assert admission.pending == 0
    assert admission.expired(now=1000.0) == []


def test_no_per_address_limit_counts_nothing() -> None:
    admission: Admission[int] = Admission(AdmissionLimits(20.0, 30.0, 10_000))
    for conn in range(1000):
        assert admission.accepted(conn, "10.0.0.1", now=0.0) == []
    assert admission.readdress(0, "10.0.0.2")
    assert not admission._address_of  # established sockets cost no entry


def test_lost_connections_are_forgotten() -> None:
    admission: Admission[str] = Admission(LIMITS)
    admission.accepted("a", None, now=0.0)
    admission.accepted("b", None, now=0.0)
    admission.request_started("b", now=0.0, body_complete=False)
    admission.lost("a")
    admission.lost("b")
    assert admission.pending == 0
    assert admission.expired(1000.0) == []


@pytest.mark.parametrize(
    "limits",
    [(0.0, 1.0, 1, 0), (1.0, -1.0, 1, 0), (1.0, 1.0, 0, 0), (1.0, 1.0, 1, -1)],
)
def test_bad_limits(limits: tuple[float, float, int, int]) -> None:
    with pytest.raises(ValueError):
        AdmissionLimits(*limits)


def test_a_later_request_on_a_kept_alive_connection_has_a_header_deadline_again() -> None:
    admission: Admission[str] = Admission(LIMITS)
    admission.accepted("a", None, 0.0)
    admission.request_started("a", 1.0, body_complete=True)
    assert admission.pending == 0
    admission.awaiting_headers("a", 100.0)  # the lean path: the next request's first bytes
    admission.awaiting_headers("a", 110.0)  # more of the same head: the deadline stays
    assert admission.expired(119.9) == []
    assert admission.expired(120.0) == [("a", Cut.HEADER_TIMEOUT)]
