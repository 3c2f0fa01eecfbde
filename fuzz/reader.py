"""Turn one fuzzer input into the typed arguments a harness needs.

A small stand-in for ``atheris.FuzzedDataProvider`` so the harnesses run without atheris
(the seed corpus and the regressions are replayed by pytest in ``make test``). Every method
is total: once the bytes run out it returns zeros and empty strings, never raises.
"""

from __future__ import annotations


class FuzzInput:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def choice(self, n: int) -> int:
        """An index in ``range(n)``."""
        return self.byte() % n

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def chunk(self) -> bytes:
        """Bytes up to the next NUL (or the end): field separators stay mutation-friendly."""
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            end = len(self.data)
        out = self.data[self.pos : end]
        self.pos = end + 1
        return out

    def text(self) -> str:
        """A chunk as text; the edges hand the core valid UTF-8 only (aiohttp decodes it)."""
        return self.chunk().decode("utf-8", "replace")

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out
