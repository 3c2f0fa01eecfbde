"""`tidings serve --debug`: what clients and the REST API do, line by line (logger
``tidings.debug``), like Pusher's debug console in text. Without it, none of those lines.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    SocketOpener,
    eventually,
    rest_request,
    unique,
)

from server_process import ServerProcess, free_port

ServerFactory = Callable[..., ServerProcess]


async def exercise(srv: ServerProcess, open_socket: SocketOpener) -> dict[str, str]:
    """One of each thing the debug log reports; returns the names used."""
    public, private = unique("public-"), unique("private-")
    sock = await open_socket(srv.ws_url, APP_KEY)
    await sock.subscribe(public)
    refused = unique("private-refused-")
    await sock.send_subscribe(refused, auth=f"{APP_KEY}:{'0' * 64}")
    await sock.subscription_error(refused)
    await sock.subscribe_private(private)
    await sock.send_event("client-typing", {"who": "me"}, channel=private)
    ok = rest_request(
        srv.http_url,
        "POST",
        f"/apps/{APP_ID}/events",
        json_body={"name": "created", "channel": public, "data": "{}"},
    )
    assert ok.status == 200
    bad = rest_request(srv.http_url, "GET", f"/apps/{APP_ID}/channels", secret="wrong")
    assert bad.status == 401
    await sock.close()
    return {"socket_id": sock.socket_id, "public": public, "private": private}


def debug_lines(srv: ServerProcess) -> list[str]:
    return [line for line in srv.logs().splitlines() if '"tidings.debug"' in line]


@pytest.mark.parametrize("how", ["setting", "flag", "env"])
async def test_debug_logs_connections_subscriptions_client_events_and_rest(
    how: str, make_server: ServerFactory, open_socket: SocketOpener, tmp_path: Any
) -> None:
    if how == "setting":
        srv = make_server(debug=True)
    elif how == "env":
        srv = make_server(env={"TIDINGS_DEBUG": "1"})
    else:
        config = tmp_path / "tidings.toml"
        config.write_text(
            f'[[apps]]\nid = "{APP_ID}"\nkey = "{APP_KEY}"\nsecret = "{APP_SECRET}"\n'
            "client_events = true\n"
        )
        srv = ServerProcess(free_port(), config, tmp_path / "server.log", args=("--debug",))
        await srv.astart()
    try:
        names = await exercise(srv, open_socket)
        socket_id = names["socket_id"]

        async def ended() -> bool:
            return any("ended" in line or "closed" in line for line in debug_lines(srv))

        await eventually(ended)
        text = "\n".join(debug_lines(srv))
        assert f"connection {socket_id} opened" in text, text
        assert f"{socket_id} subscribed to {names['public']}" in text, text
        assert f"{socket_id} subscribed to {names['private']}" in text, text
        assert "private-refused-" in text and "subscription_error" in text, text
        assert f"client event client-typing on {names['private']} from {socket_id}" in text
        assert f"REST POST /apps/{APP_ID}/events from 127.0.0.1: 200" in text, text
        assert f"REST GET /apps/{APP_ID}/channels from 127.0.0.1: 401" in text, text
        assert f"connection {socket_id} closed" in text, text
        assert f"connection {socket_id} ended: closed by the client, code 1000" in text
        assert 'level":"debug"' in text
        # Only our own debug lines: the rest of the log stays at its level.
        assert not [line for line in srv.logs().splitlines() if '"asyncio"' in line]
    finally:
        if how == "flag":
            srv.stop()


async def test_without_debug_there_are_no_debug_lines(
    make_server: ServerFactory, open_socket: SocketOpener
) -> None:
    srv = make_server()
    await exercise(srv, open_socket)
    await asyncio.sleep(0.2)
    assert debug_lines(srv) == []


async def test_a_connection_the_server_closes_logs_why(
    make_server: ServerFactory, open_socket: SocketOpener
) -> None:
    """A refused sign-in closes the socket; the debug line carries the reason the server
    gave, which names the string it signed."""
    srv = make_server(debug=True)
    sock = await open_socket(srv.ws_url, APP_KEY)
    user_data = '{"id":"u1"}'
    await sock.send_event(
        "pusher:signin", {"user_data": user_data, "auth": f"{APP_KEY}:{'0' * 64}"}
    )
    await sock.wait_closed()
    signed = f"{sock.socket_id}::user::{user_data}"

    async def ended() -> bool:
        return any(f"connection {sock.socket_id} ended" in line for line in debug_lines(srv))

    await eventually(ended)
    line = next(x for x in debug_lines(srv) if f"connection {sock.socket_id} ended" in x)
    message = json.loads(line)["message"]
    assert message == (
        f"connection {sock.socket_id} ended: closed by the server, code 4009 (Invalid "
        f"signature: Expected "
        f"HMAC SHA256 hex digest of {signed}, but got {'0' * 64})"
    )
