"""What one fan-out writes: the Pusher messages of one run of publications, and their
encodings for each kind of edge, each made once.

The node and the brokers carry Pusher JSON messages; framing is the edge's business. But a
channel's subscribers are many and of few kinds, so a message must not be encoded once per
recipient: the first subscriber of a kind that asks for an encoding makes it, and every
other subscriber of that kind gets the same object.

- :attr:`Publication.frame`: the messages as unmasked WebSocket text frames back to back, one
  ``bytes`` for the native writer (and any WebSocket connection);
- :attr:`Publication.texts`: the messages as ``str``, for ASGI ``websocket.send``;
- :attr:`Publication.messages`: the messages as they are, for the HTTP fallback sessions;
- :attr:`Publication.positioned`: for a channel with history, the same messages with their
  offsets spliced in, for the sockets that opted in to recovery (``protocol/recovery.py``);
- :attr:`Publication.sse`: the messages as the SSE edge reads them (``protocol/sse.py``).
"""

from __future__ import annotations

from tidings.protocol.frames import text_frame, text_frame_size
from tidings.protocol.recovery import positioned
from tidings.protocol.sse import Outgoing, read


class Publication:
    """Consecutive messages of one (channel, exclude) run, in publication order."""

    __slots__ = ("messages", "offsets", "_frame", "_texts", "_positioned", "_sse")

    def __init__(self, messages: list[bytes], offsets: list[int | None] | None = None) -> None:
        self.messages = messages  # read only: every subscriber shares this list
        # Each message's offset in its channel's history (None: not stored); None when no
        # message has one, which is every publication on a channel without history.
        self.offsets = offsets
        self._frame: bytes | None = None
        self._texts: list[str] | None = None
        self._positioned: Publication | None = None
        self._sse: list[Outgoing] | None = None

    @property
    def positioned(self) -> Publication:
        """The messages with ``"tidings":{"offset":N}`` spliced in, for opted-in sockets
        (made on first use, once for all of them; ``self`` when nothing has an offset).

        Call it on a publication as published, never on its positioned copy (that would
        splice twice); the copy keeps :attr:`offsets` for whoever buffers it."""
        offsets = self.offsets
        if offsets is None:
            return self  # not kept in _positioned: no reference cycle per publication
        result = self._positioned
        if result is None:
            spliced = [
                message if offset is None else positioned(message, offset)
                for message, offset in zip(self.messages, offsets, strict=True)
            ]
            result = self._positioned = Publication(spliced, offsets)
        return result

    @property
    def frame(self) -> bytes:
        """Every message as one WebSocket text frame, joined (made on first use)."""
        frame = self._frame
        if frame is None:
            if len(self.messages) == 1:
                frame = text_frame(self.messages[0])
            else:
                frame = b"".join([text_frame(message) for message in self.messages])
            self._frame = frame
        return frame

    @property
    def texts(self) -> list[str]:
        """Every message decoded to ``str`` (made on first use; read only, it is shared)."""
        texts = self._texts
        if texts is None:
            texts = self._texts = [message.decode() for message in self.messages]
        return texts

    @property
    def sse(self) -> list[Outgoing]:
        """Every message read for the SSE edge (made on first use, once for every stream;
        read only, it is shared)."""
        sse = self._sse
        if sse is None:
            sse = self._sse = [read(message) for message in self.messages]
        return sse

    @property
    def size(self) -> int:
        """The bytes of :attr:`frame`, what ``bytes_out`` counts per recipient, without
        building it when no WebSocket needs it."""
        if self._frame is not None:
            return len(self._frame)
        return sum([text_frame_size(len(message)) for message in self.messages])
