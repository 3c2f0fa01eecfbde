"""Replay the fuzzing seed corpus and every crash ever found through the atheris harnesses.

Runs without atheris: each ``fuzz/fuzz_<target>.py`` exposes ``TestOneInput``, and every
file under ``fuzz/corpus/<target>/`` and ``fuzz/regressions/<target>/`` is fed to it here,
so the harnesses cannot rot and a fixed crash stays fixed (see docs/testing.md).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py"))


def harness(target: str) -> Callable[[bytes], None]:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))  # the harnesses import their sibling reader.py
    module = importlib.import_module(f"fuzz_{target}")
    test_one_input: Callable[[bytes], None] = module.TestOneInput
    return test_one_input


def inputs() -> Iterator[tuple[str, Path]]:
    for target in TARGETS:
        for kind in ("corpus", "regressions"):
            for path in sorted((FUZZ / kind / target).glob("*")):
                if path.is_file() and not path.name.startswith("."):
                    yield target, path


def test_every_target_has_a_seed_corpus() -> None:
    assert set(TARGETS) >= {"messages", "rest_body", "rest_auth", "signatures", "fallback"}
    for target in TARGETS:
        assert any((FUZZ / "corpus" / target).iterdir()), f"no seeds for {target}"


def test_regressions_belong_to_a_target() -> None:
    folder = FUZZ / "regressions"
    if folder.exists():
        assert {p.name for p in folder.iterdir() if p.is_dir()} <= set(TARGETS)


@pytest.mark.parametrize(
    ("target", "path"), list(inputs()), ids=lambda v: v.name if isinstance(v, Path) else v
)
def test_replay(target: str, path: Path) -> None:
    harness(target)(path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_short_and_empty_inputs(target: str) -> None:
    run = harness(target)
    for data in (b"", b"\0", b"\x01", b"\x02\0\0", b"\x03" + b"\0" * 8, b"\xff" * 3):
        run(data)
