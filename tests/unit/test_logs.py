"""Log lines: JSON off a terminal, text on one."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from tidings import logs


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    logs.setup("info", "auto", out)
    logging.getLogger("tidings.test").warning("node %s went away", "n1")
    logging.getLogger("tidings.test").debug("not shown at info")
    [line] = out.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["logger"] == "tidings.test"
    assert entry["message"] == "node n1 went away"
    assert entry["time"].endswith("+00:00")


def test_exceptions_are_kept_in_one_json_line() -> None:
    out = io.StringIO()
    logs.setup("debug", "json", out)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("tidings.test").exception("failed")
    [line] = out.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_text_on_a_terminal() -> None:
    out = Tty()
    logs.setup("info", "auto", out)
    logging.getLogger("tidings.test").info("listening")
    assert out.getvalue().rstrip().endswith("INFO tidings.test: listening")
