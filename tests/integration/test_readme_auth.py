"""Channel authorization as the README tells a newcomer to write it, against a real server.

The README's Flask endpoint is read out of README.md and run as written, with the real
`pusher` SDK as ``client`` and stand-ins for Flask's ``app``, ``request`` and
``current_user``; so the example cannot drift from what the server accepts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pusher
import pytest
from pusher_helpers import TIMEOUT, SocketOpener, sdk_client, unique

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

README = Path(__file__).resolve().parents[2] / "README.md"
AuthEndpoint = Callable[[str, str, str], dict[str, Any]]


def readme_auth_block() -> str:
    """The README's ```python block that defines the /pusher/auth endpoint."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    found = [b for b in blocks if '"/pusher/auth"' in b]
    assert len(found) == 1, "README.md should have one Python /pusher/auth example"
    return found[0]


class FlaskStandIn:
    """Just enough of ``flask.Flask`` for ``@app.post(path)``."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[], Any]] = {}

    def post(self, path: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        def register(view: Callable[[], Any]) -> Callable[[], Any]:
            self.routes[path] = view
            return view

        return register


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[pusher.Pusher]:
    c = sdk_client(server.port)
    yield c
    c._pusher_client.http.session.close()
    c._authentication_client.http.session.close()


@pytest.fixture
def readme_endpoint(client: pusher.Pusher) -> AuthEndpoint:
    """``endpoint(socket_id, channel, user_id)`` runs the README's view as a POST would."""
    app = FlaskStandIn()
    request = SimpleNamespace(form={})
    current_user = SimpleNamespace(id=0)
    namespace = {"app": app, "client": client, "request": request, "current_user": current_user}
    exec(compile(readme_auth_block(), str(README), "exec"), namespace)  # noqa: S102
    view = app.routes["/pusher/auth"]

    def endpoint(socket_id: str, channel: str, user_id: str) -> dict[str, Any]:
        request.form = {"socket_id": socket_id, "channel_name": channel}
        current_user.id = user_id
        response: dict[str, Any] = view()
        return response

    return endpoint


async def test_readme_auth_endpoint_authorizes_private_and_presence(
    server: Any, readme_endpoint: AuthEndpoint, open_socket: SocketOpener
) -> None:
    sock = await open_socket(server.ws_url)

    channel = unique("private-readme")
    auth = readme_endpoint(sock.socket_id, channel, "42")
    assert "channel_data" not in auth, auth
    await sock.subscribe(channel, auth["auth"])

    channel = unique("presence-readme")
    auth = readme_endpoint(sock.socket_id, channel, "42")
    message = await sock.subscribe(channel, auth["auth"], auth["channel_data"])
    assert json.loads(message["data"])["presence"]["ids"] == ["42"]


async def test_private_auth_signed_with_custom_data_is_accepted(
    server: Any, client: pusher.Pusher, open_socket: SocketOpener
) -> None:
    # The README's earlier example (and Laravel Reverb's auth) signs channel_data on a
    # private channel too: socket_id:channel:channel_data.
    sock = await open_socket(server.ws_url)
    channel = unique("private-custom")
    auth = client.authenticate(channel=channel, socket_id=sock.socket_id, custom_data={"a": 1})
    await sock.subscribe(channel, auth["auth"], auth["channel_data"])

    # Sending the channel_data without the signature over it is still refused.
    other = unique("private-custom")
    plain = client.authenticate(channel=other, socket_id=sock.socket_id)
    await sock.send_subscribe(other, plain["auth"], auth["channel_data"])
    error = await sock.subscription_error(other)
    assert error["status"] == 401, error
    assert f"{sock.socket_id}:{other}:{auth['channel_data']}" in error["error"], error


async def test_private_subscribe_without_auth_says_auth_is_missing(
    server: Any, open_socket: SocketOpener
) -> None:
    sock = await open_socket(server.ws_url)
    channel = unique("private-noauth")
    await sock.send_subscribe(channel, "")
    error = await sock.subscription_error(channel)
    assert error == {
        "type": "AuthError",
        "error": f"Missing auth for channel {channel}",
        "status": 401,
    }
