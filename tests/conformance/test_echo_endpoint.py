"""The Autobahn echo endpoint: there with ``serve --conformance``, absent (404) otherwise."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.frames import CloseCode

from server_process import TIMEOUT, ServerProcess, free_port
from tidings.cli import main
from tidings.config import load_settings

ECHO = "/conformance/echo"
MAX_MESSAGE = 16 * 1024 * 1024  # Autobahn's largest (cases 9.1.6 and 9.2.6)


@pytest.fixture(scope="module")
def conformance_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    d = tmp_path_factory.mktemp("conformance")
    config = d / "tidings.toml"
    config.write_text('[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\n')
    server = ServerProcess(free_port(), config, d / "server.log", args=("--conformance",))
    server.start()
    yield server
    server.stop()


def http_status(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_normal_server_has_no_echo(server: ServerProcess) -> None:
    assert http_status(server.http_url + ECHO)[0] == 404
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.ws_url + ECHO, open_timeout=TIMEOUT):
            pass
    assert refused.value.response.status_code == 404
    assert "CONFORMANCE MODE" not in server.logs()


async def test_conformance_mode_echoes_text_and_binary(conformance_server: ServerProcess) -> None:
    url = conformance_server.ws_url + ECHO
    async with connect(url, open_timeout=TIMEOUT, max_size=None) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xffbinary")
        assert await ws.recv() == b"\x00\xffbinary"
        # Lengths around the 7-bit, 16-bit and 64-bit header forms (RFC 6455 5.2).
        for size in (125, 126, 65535, 65536, 4 * 1024 * 1024):
            await ws.send("x" * size)
            assert await ws.recv() == "x" * size
        # A fragmented message comes back whole.
        await ws.send(["frag", "mented"])
        assert await ws.recv() == "fragmented"
        pong = await ws.ping(b"p")
        assert await pong == pytest.approx(0.0, abs=TIMEOUT)
    assert ws.close_code == CloseCode.NORMAL_CLOSURE


async def test_conformance_mode_limit_is_16_mib(conformance_server: ServerProcess) -> None:
    url = conformance_server.ws_url + ECHO
    async with connect(url, open_timeout=TIMEOUT, max_size=None) as ws:
        await ws.send(bytes(MAX_MESSAGE))
        assert len(await ws.recv()) == MAX_MESSAGE
        with pytest.raises(ConnectionClosedError):  # while sending, or on the next read
            await ws.send(bytes(MAX_MESSAGE + 1))
            await ws.recv()
    assert ws.close_code == CloseCode.MESSAGE_TOO_BIG


def test_conformance_mode_warns_loudly(conformance_server: ServerProcess) -> None:
    assert "CONFORMANCE MODE" in conformance_server.logs()


def test_conformance_flag_is_hidden() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--conformance" not in result.output


def test_health_still_served_in_conformance_mode(conformance_server: ServerProcess) -> None:
    assert http_status(conformance_server.http_url + "/ready")[0] == 200


def test_env_switches_conformance_mode_on() -> None:
    assert load_settings(env={"TIDINGS_CONFORMANCE": "1"}).conformance is True
    assert load_settings(env={}).conformance is False
