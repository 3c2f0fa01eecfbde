"""Turn one fuzzer input into the typed arguments a harness needs.

A small stand-in for ``atheris.FuzzedDataProvider`` so the harnesses run without atheris
(the seed corpus and the regressions are replayed by pytest in ``make test``). Every method
is total: once the bytes run out it returns zeros and empty strings, never raises.
"""

from __future__ import annotations

UNICODE = (
    # Decimal digits of other scripts (str.isdigit and int() accept them), digits that are
    # not decimal (isdigit accepts them, int() does not), other numbers.
    "\u0660\u0663\u06f5\u0969\u0e53\uff10\uff19\U0001d7ce"
    "\u00b2\u00b3\u00b9\u2070\u2074\u2460\u2776\u24ea"
    "\u00bd\u2155\u216b\u3007\u4e09"
    # Spaces, line breaks and invisible characters.
    "\u00a0\u1680\u2000\u2007\u200b\u2028\u2029\u202f\u205f\u3000\ufeff\u0085"
    # Case changes that change the length or leave ASCII.
    "\u0130\u0131\u00df\ufb00\u212a\u017f\u1e9e\u0149\u01c5"
    # Combining marks, right-to-left text, a non-BMP character, the replacement character.
    "\u0301\u0308\u05d0\u0627\U0001f600\ufffd\uffff\u00e9\u4e2d"
)
UNICODE = (UNICODE * (128 // len(UNICODE) + 1))[:128]


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

    def unicode_text(self) -> str:
        """A chunk as text over an alphabet that matters to parsers: ASCII for bytes below
        0x80, and for the others one of :data:`UNICODE` (digits of other scripts, numbers
        that are not digits, spaces, letters whose case changes their length). Random UTF-8
        rarely lands on these, so the fuzzer gets them one byte each."""
        return "".join(chr(b) if b < 0x80 else UNICODE[b & 0x7F] for b in self.chunk())

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out
