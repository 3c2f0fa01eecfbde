"""Serve the chat on http://127.0.0.1:$PORT/ (default 8000): one uvicorn, in this process.

``make example NAME=chat`` runs this. Ctrl-C (or SIGTERM) drains Tidings, shuts uvicorn
down and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from pathlib import Path

import uvicorn

HERE = Path(__file__).resolve().parent


async def main(port: int) -> int:
    sys.path.insert(0, str(HERE))  # what `uvicorn --app-dir` does: app.py is importable
    config = uvicorn.Config(
        "app:app",
        host="127.0.0.1",
        port=port,
        # Browsers offer compression; accepted, every recipient would compress the same
        # message again. Tidings' own server leaves it off too.
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():  # the port is taken, the app failed to import...
            await serving
            return 1
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{port}/"
    await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).close())
    print(f"chat is ready: open {url}", flush=True)
    await serving
    return 0


if __name__ == "__main__":
    # uvicorn handles SIGINT and SIGTERM while it serves, then raises the signal again once
    # it has shut down: make that second SIGTERM a KeyboardInterrupt too, and exit 0.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = asyncio.run(main(int(os.environ.get("PORT", "8000"))))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
