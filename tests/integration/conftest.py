"""Integration-test fixtures: WebSocket clients that are always closed after the test.

This directory is put on ``sys.path`` so test modules can ``import pusher_helpers``
whatever pytest import mode is in use.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from pusher_helpers import SocketOpener, open_sockets  # noqa: E402


@pytest.fixture
async def open_socket() -> AsyncIterator[SocketOpener]:
    """Factory: ``await open_socket(base_ws_url, key)`` → a connected PusherSocket."""
    async with open_sockets() as opener:
        yield opener
