"""Run one harness under atheris (libFuzzer): ``python fuzz/fuzz_<target>.py [libFuzzer flags]``.

atheris is imported here only, so the harnesses import without it (pytest replays the seed
corpus and the regressions through them in ``make test``); ``make fuzz`` installs it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def fuzz_main(test_one_input: Callable[[bytes], None]) -> None:
    import atheris  # type: ignore[import-not-found,unused-ignore]

    # Coverage feedback for every Python function loaded so far: the tidings modules the
    # harness imported, and orjson's callers; orjson itself is C and stays opaque.
    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
