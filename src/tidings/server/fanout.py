"""The server's fan-out writer: one publication to every subscriber of a channel.

:class:`Sink` is what a WebSocket connection is to the writer: its socket's file
descriptor, its transport and its high-water mark. :func:`write_many` writes a
publication's WebSocket frame to every Sink and hands the publication itself to every other
subscriber (the HTTP fallback, ASGI), which encodes it its own way. The native version
(``tidings._fanout``, C, built by pip) sends straight to each socket whose transport has
nothing buffered and leaves only short writes, buffered sockets and errors to the
transport. Without a C compiler the package falls back to
:func:`_py_write_many`, the same contract written with ``transport.write``.

The contract, for both:

- a sink with no usable descriptor (``fd`` -1: TLS) gets ``deliver(frame)``, and any other
  subscriber ``publish(publication)``;
- a frame is never written to a closing sink (its descriptor may already serve another
  connection); a sink whose transport is closing is marked ``closing`` and skipped;
- bytes on one socket keep their order: once a transport holds buffered bytes, the frame
  goes through the transport too;
- a sink whose transport buffer passes ``high_water`` is handed to its ``slow_consumer()``
  after the loop, and only then, so a slow client never delays the others;
- an exception for one subscriber (its write or its ``slow_consumer()``) is logged and
  skipped: the others still get the frame. ``write_many`` never raises for a subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

from tidings.core.hub import Subscriber
from tidings.core.publication import Publication

log = logging.getLogger("tidings.fanout")


class _PySink:
    """Pure-Python stand-in for ``tidings._fanout.Sink`` (same attributes)."""

    __slots__ = ("fd", "closing", "high_water", "transport")

    def __init__(self) -> None:
        self.fd = -1
        self.closing = False
        self.high_water = sys.maxsize
        self.transport: Any = None  # an asyncio transport (uvloop's are not subclasses)


def _py_write_many(
    frame: bytes,
    subscribers: dict[str, Subscriber],
    exclude: str | None,
    publication: Publication,
) -> tuple[int, list[_PySink], list[tuple[Any, BaseException]]]:
    skip = subscribers.get(exclude) if exclude is not None else None
    slow: list[_PySink] = []
    failed: list[tuple[Any, BaseException]] = []
    count = 0
    for target in list(subscribers.values()):
        if target is skip:
            continue
        try:
            if isinstance(target, _PySink):
                transport = target.transport
                if target.closing or transport is None:
                    continue
                if target.fd < 0:
                    target.deliver(frame)  # type: ignore[attr-defined]
                elif transport.is_closing():
                    target.closing = True  # the peer is gone: never write to it again
                    continue
                else:
                    transport.write(frame)
                    if transport.get_write_buffer_size() > target.high_water:
                        slow.append(target)
            else:
                target.publish(publication)
            count += 1
        except Exception as exc:  # one subscriber's failure is never the others'
            failed.append((target, exc))
    return count, slow, failed


if TYPE_CHECKING:
    Sink = _PySink
    _write_many = _py_write_many
    NATIVE = False
else:
    try:
        from tidings._fanout import Sink
        from tidings._fanout import write_many as _write_many

        NATIVE = True
    except ImportError:  # built without a C compiler
        Sink, _write_many, NATIVE = _PySink, _py_write_many, False


def write_many(
    publication: Publication, subscribers: dict[str, Subscriber], exclude: str | None
) -> int:
    """A :data:`tidings.core.hub.Writer`: returns how many subscribers were written to.

    The frame is built here, once, even when no subscriber is a Sink: fan-out in
    ``tidings serve`` is almost always to WebSockets, and a check would cost every call."""
    count, slow, failed = _write_many(publication.frame, subscribers, exclude, publication)
    for sink in slow:
        try:
            sink.slow_consumer()  # type: ignore[attr-defined]
        except Exception as error:  # the next slow sink still gets its 4100
            failed.append((sink, error))
    for target, exc in failed:
        log.error("writing to %s failed", getattr(target, "socket_id", target), exc_info=exc)
    return count


def describe() -> str:
    return "native (tidings._fanout)" if NATIVE else "pure Python (tidings._fanout not built)"


def socket_fd(transport: asyncio.BaseTransport) -> int:
    """The descriptor ``write_many`` may send to directly, or -1 (TLS, or no socket)."""
    if transport.get_extra_info("sslcontext") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    if sock is None:
        return -1
    try:
        return int(sock.fileno())
    except (OSError, ValueError):
        return -1
