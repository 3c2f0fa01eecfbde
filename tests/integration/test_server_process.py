"""The test harness itself: a port taken between free_port() and the server's bind."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from pusher_helpers import APP_ID, APP_KEY, APP_SECRET

from server_process import ServerProcess


def test_a_port_taken_before_the_bind_gets_another(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(f'[[apps]]\nid = "{APP_ID}"\nkey = "{APP_KEY}"\nsecret = "{APP_SECRET}"\n')
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        srv = ServerProcess(taken, config, tmp_path / "server.log")
        try:
            srv.start()
            assert srv.port != taken
            with urllib.request.urlopen(f"{srv.http_url}/ready", timeout=5) as answer:
                assert answer.status == 200
            assert "address already in use" in srv.logs()
        finally:
            srv.stop()
