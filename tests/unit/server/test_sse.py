"""server/sse.py's SseConnection: what a stream writes for what the node sends it, and the
first id, which must never claim an event the client has not received."""

from __future__ import annotations

from tidings.core.apps import App
from tidings.core.hub import Coalescer
from tidings.core.publication import Publication
from tidings.node import AppCounters
from tidings.protocol import messages, sse
from tidings.protocol.recovery import positioned, succeeded_data
from tidings.protocol.session import Session, SessionPolicy
from tidings.server.sse import SseConnection

A, B = "hist-a", "hist-b"


def stream(max_queue_bytes: int = 4096) -> tuple[SseConnection, list[str]]:
    aborted: list[str] = []
    policy = SessionPolicy(key="k", secret="s", activity_timeout=20.0, pong_timeout=30.0)
    connection = SseConnection(
        Session("1.1", policy, 0.0),
        App(id="1", key="k", secret="s"),
        max_queue_bytes,
        Coalescer(lambda callback: None),
        AppCounters(),
        lambda: 50.0,
        lambda: aborted.append("aborted"),
    )
    return connection, aborted


def succeeded(channel: str, epoch: str, offset: int, recovered: bool | None) -> bytes:
    data = succeeded_data({}, epoch, offset, recovered)
    return messages.event("pusher_internal:subscription_succeeded", channel, data)


def tick(channel: str, n: int) -> bytes:
    return positioned(messages.event("tick", channel, str(n)), n)


def blocks(data: bytes) -> list[bytes]:
    return [b for b in data.split(b"\n\n") if b]


def test_a_recovered_channel_stays_at_the_clients_mark_until_its_replay() -> None:
    """A resumed from 1 (top 3: 2 and 3 replayed); B fresh at 7. The first id must say
    A=1, not 3: a client cut off before the replay would otherwise lose 2 and 3."""
    connection, _ = stream()
    connection.resumed = {A: sse.Mark("ea", 1)}
    connection.send(messages.event("pusher:connection_established", data="{}"))
    connection.send(succeeded(A, "ea", 3, True))
    connection.publish(Publication([tick(A, 2), tick(A, 3)]))
    connection.send(succeeded(B, "eb", 7, None))
    assert connection.take() == b""  # nothing is written while setting up
    connection.begin([])
    out = blocks(connection.take())
    ta, tb = sse.tag(A), sse.tag(B)
    assert out == [
        f"id: 1.{ta}-ea-1.{tb}-eb-7".encode(),
        f"id: 1.{ta}-ea-2.{tb}-eb-7\n".encode()
        + b'data: {"event":"tick","channel":"hist-a","data":"2"}',
        f"id: 1.{ta}-ea-3.{tb}-eb-7\n".encode()
        + b'data: {"event":"tick","channel":"hist-a","data":"3"}',
    ]


def test_an_unrecovered_channel_moves_to_the_top_and_an_unreadable_id_is_told_so() -> None:
    connection, _ = stream()
    connection.send(succeeded(A, "ea", 9, False))
    connection.send(succeeded(B, "eb", 4, None))
    connection.begin([B])  # the client's id could not be read: B is told to re-fetch
    out = blocks(connection.take())
    assert out[0] == f"id: 1.{sse.tag(A)}-ea-9.{sse.tag(B)}-eb-4".encode()
    notice = sse.read(out[1].removeprefix(b"data: "))
    assert (notice.event, notice.channel) == ("tidings:unrecovered", B)


def test_a_refusal_while_setting_up_is_kept_for_the_http_answer() -> None:
    connection, _ = stream()
    refusal = messages.subscription_error("private-x", "AuthError", "no", 401)
    connection.send(refusal)
    assert connection.refused == refusal


def test_the_nodes_ping_becomes_a_comment_and_counts_as_the_pong() -> None:
    connection, _ = stream()
    connection.begin([])
    connection.session.ping_sent_at = 40.0  # the node's timers pinged at 40
    connection.send(messages.PING)
    assert connection.take() == sse.PING
    assert connection.session.ping_sent_at is None and connection.session.last_seen == 50.0


def test_a_stream_that_falls_behind_is_cut() -> None:
    connection, aborted = stream(max_queue_bytes=1024)
    connection.begin([])
    big = messages.event("tick", "plain", "x" * 600)
    connection.publish(Publication([big]))
    connection.publish(Publication([big]))
    assert connection.closing and connection.ended and aborted == ["aborted"]
    assert connection.take() == b""  # what was queued is dropped
