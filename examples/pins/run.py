"""Start the pins example: one uvicorn process on $PORT (default 8000) serving the page, the
app and Tidings' sockets and HTTP fallback. Ctrl-C (or SIGTERM) stops it.

``make example NAME=pins [PORT=8000]`` runs this once it has installed what the example needs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # app.py, when run from elsewhere

from app import PUSHER_JS, app  # noqa: E402

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0  # seconds for uvicorn to answer: startup is well under one


def announce_when_ready(server: uvicorn.Server, url: str) -> None:
    """Print the ready line once the app answers over HTTP, not merely once it is bound."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not server.should_exit and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "pins", timeout=1) as response:
                if response.status == 200:
                    print(f"pins is ready: open {url}", flush=True)
                    return
        except OSError:
            time.sleep(0.05)
    if not server.should_exit:
        print(f"pins did not answer on {url} within {READY_TIMEOUT:g} s", flush=True)


def main() -> int:
    if not PUSHER_JS.is_file():
        print(f"{PUSHER_JS} is missing: run `make example NAME=pins`", file=sys.stderr)
        return 1
    port = int(os.environ.get("PORT", "8000"))
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        # Browsers offer compression; without this each page would compress every pin again.
        ws_per_message_deflate=False,
        # Every xhr_streaming and xhr_polling request would be a line: too noisy for a demo.
        access_log=False,
    )
    server = uvicorn.Server(config)
    url = f"http://{HOST}:{port}/"
    threading.Thread(target=announce_when_ready, args=(server, url), daemon=True).start()
    # Once stopped, uvicorn raises the signal that stopped it again. Ctrl-C then comes back
    # as KeyboardInterrupt; SIGTERM is made to do the same, so both end here with status 0.
    # (Tidings drains first: rt.asgi() stands in front of uvicorn's signal handlers.)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
