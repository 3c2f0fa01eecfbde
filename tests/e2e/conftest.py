"""pusher-js end-to-end fixtures: this directory is put on ``sys.path`` so test modules can
``import scenario`` (the shared node scenario runner) whatever pytest import mode is in use."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
