"""The WebSocket upgrade on the lean path (server/lean_http.py) over real sockets.

With ``lean_rest`` on (the default), the plain opening upgrade to ``/app/{key}`` is answered
by the lean front without aiohttp; a server with it off is the reference: every refusal
(400, pusher:error and close code) must be the same bytes from both, for whoever answers it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    QUERY,
    TIMEOUT,
    SocketOpener,
    eventually,
    open_sockets,
    raw_http,
    rest_request,
    unique,
)

from server_process import ServerProcess, free_port, write_config

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

HOST = "127.0.0.1"
ORIGIN_KEY = "origin-key"  # an app that admits one origin
DISABLED_KEY = "disabled-key"
GOOD_ORIGIN = "https://good.example"
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3's example
LEAN_LINE = "upgraded on the lean path"
DEADLINE = 1.0


def start(tmp_path_factory: pytest.TempPathFactory, **settings: Any) -> ServerProcess:
    directory = tmp_path_factory.mktemp("upgrade")
    settings = {"log_level": "debug", **settings}
    apps = [
        {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET},
        {"id": "2", "key": ORIGIN_KEY, "secret": "s2", "allowed_origins": [GOOD_ORIGIN]},
        {"id": "3", "key": DISABLED_KEY, "secret": "s3", "enabled": False},
    ]
    config = write_config(directory / "tidings.toml", settings, apps)
    server = ServerProcess(free_port(), config, directory / "server.log")
    server.start()
    return server


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def general(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start(tmp_path_factory, lean_rest=False)
    yield server
    server.stop()


def lean_upgrades(server: ServerProcess) -> int:
    return server.logs().count(LEAN_LINE)


def upgrade(
    key: str = APP_KEY, query: str = QUERY, drop: tuple[str, ...] = (), **headers: str
) -> bytes:
    """An opening handshake's bytes; ``headers`` (underscores for dashes) replace or add."""
    fields = {
        "Host": HOST,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": WS_KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    lines = [f"{name}: {value}\r\n" for name, value in fields.items() if name not in drop]
    target = f"/app/{key}?{query}" if query else f"/app/{key}"
    return f"GET {target} HTTP/1.1\r\n{''.join(lines)}\r\n".encode()


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame (RFC 6455 5.3: masked), payload under 126 bytes."""
    mask = os.urandom(4)
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + data


class Peer:
    """A raw socket reading one HTTP answer, then (after a 101) server frames."""

    def __init__(self, server: ServerProcess, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            (HOST, server.port), timeout=TIMEOUT, source_address=(source, 0) if source else None
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def _more(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        self.buffer += data
        return bool(data)

    def head(self) -> tuple[bytes, list[bytes]]:
        """The status line and the header lines but Date (and the body, if any, after)."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._more():
                raise EOFError(f"closed before an answer: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        return status, [line for line in lines if not line.startswith(b"Date:")]

    def body(self, length: int) -> bytes:
        while len(self.buffer) < length:
            if not self._more():
                break
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body

    def frame(self) -> tuple[int, bytes]:
        """The next server frame's opcode and payload (unmasked, length < 65536)."""
        while len(self.buffer) < 2 or len(self.buffer) < self._frame_size():
            if not self._more():
                raise EOFError(f"closed mid-frame: {self.buffer!r}")
        size = self._frame_size()
        start = 4 if self.buffer[1] & 0x7F == 126 else 2
        frame, self.buffer = self.buffer[:size], self.buffer[size:]
        return frame[0] & 0x0F, frame[start:]

    def _frame_size(self) -> int:
        length = self.buffer[1] & 0x7F
        if length == 126:
            if len(self.buffer) < 4:
                return 4
            return 4 + struct.unpack("!H", self.buffer[2:4])[0]
        return 2 + length

    def answer(self) -> list[Any]:
        """What the server answers a handshake: the head; then a body, or (after a 101) the
        frames up to the close frame, connection_established's socket id left out."""
        status, lines = self.head()
        answer: list[Any] = [status, lines]
        if not status.startswith(b"HTTP/1.1 101"):
            length = next(
                (int(line.split(b":")[1]) for line in lines if line.startswith(b"Content-Length")),
                0,
            )
            return [*answer, self.body(length)]
        while True:
            opcode, payload = self.frame()
            if opcode == 0x1 and b"connection_established" in payload:
                return [*answer, "connection_established"]
            answer.append((opcode, payload))
            if opcode == 0x8:
                return answer

    def closed(self) -> bool:
        """The server closed the connection (EOF or reset) within TIMEOUT."""
        try:
            while self._more():
                pass
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peers() -> Iterator[Any]:
    opened: list[Peer] = []

    def opener(server: ServerProcess, source: str | None = None) -> Peer:
        peer = Peer(server, source)
        opened.append(peer)
        return peer

    yield opener
    for peer in opened:
        peer.close()


# -- the upgrade answered on the lean path ---------------------------------------------------


async def test_the_upgrade_is_lean_and_pusher_works(lean: ServerProcess) -> None:
    before = lean_upgrades(lean)
    channel = unique("lean-upgrade")
    async with open_sockets() as open_socket:
        sock = await open_socket(lean.ws_url)
        assert lean_upgrades(lean) == before + 1
        await sock.subscribe(channel)
        await sock.ping()
        resp = await asyncio.to_thread(
            rest_request,
            lean.http_url,
            "POST",
            f"/apps/{APP_ID}/events",
            json_body={"name": "hello", "channel": channel, "data": "{}"},
        )
        assert resp.status == 200
        event = await sock.expect("hello")
        assert event["channel"] == channel
    # The node's log names the connection's type, as on aiohttp's route.
    assert "ProtocolConnection" in lean.logs()


async def test_with_lean_rest_off_the_upgrade_is_aiohttps(general: ServerProcess) -> None:
    async with open_sockets() as open_socket:
        sock = await open_socket(general.ws_url)
        await sock.ping()
    assert lean_upgrades(general) == 0


# -- refusals: the same bytes from both paths ------------------------------------------------

SAME_ANSWER = {
    "accepted": lambda: upgrade(),
    "unknown-key": lambda: upgrade("no-such-key"),
    "no-protocol": lambda: upgrade(query="client=js"),
    "bad-protocol": lambda: upgrade(query="protocol=3"),
    "protocol-not-a-number": lambda: upgrade(query="protocol=x7"),
    "origin-allowed": lambda: upgrade(ORIGIN_KEY, Origin=GOOD_ORIGIN),
    "origin-refused": lambda: upgrade(ORIGIN_KEY, Origin="https://evil.example"),
    "origin-missing": lambda: upgrade(ORIGIN_KEY),
    "app-disabled": lambda: upgrade(DISABLED_KEY),
    "no-websocket-key": lambda: upgrade(drop=("Sec-WebSocket-Key",)),
    "short-websocket-key": lambda: upgrade(Sec_WebSocket_Key="c2hvcnQ="),
    "bad-websocket-key": lambda: upgrade(Sec_WebSocket_Key="!" * 22 + "=="),
    "version-12": lambda: upgrade(Sec_WebSocket_Version="12"),
    "version-8": lambda: upgrade(Sec_WebSocket_Version="8"),
    "no-upgrade": lambda: upgrade(drop=("Upgrade",)),
    "upgrade-h2c": lambda: upgrade(Upgrade="h2c"),
    "connection-keep-alive": lambda: upgrade(Connection="keep-alive"),
    "subprotocol": lambda: upgrade(Sec_WebSocket_Protocol="chat"),
    "a-body": lambda: upgrade(Content_Length="2") + b"{}",
    "a-tail-path": lambda: upgrade(f"{APP_KEY}/more"),
    "percent-key": lambda: upgrade("%41pp"),
    "dot-key": lambda: upgrade(".."),
    "http-1.0": lambda: upgrade().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "post-first": lambda: (
        (
            f"POST /apps/{APP_ID}/events HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{{}}"
        ).encode()
        + upgrade()
    ),
}


@pytest.mark.parametrize("case", list(SAME_ANSWER))
def test_every_answer_is_the_one_aiohttp_gives(
    lean: ServerProcess, general: ServerProcess, peers: Any, case: str
) -> None:
    answers = []
    for server in (lean, general):
        peer = peers(server)
        peer.sock.sendall(SAME_ANSWER[case]())
        if case == "post-first":
            answers.append(peer.answer())  # the POST's 401, then the upgrade's answer
        answers.append(peer.answer())
    half = len(answers) // 2
    assert answers[:half] == answers[half:]


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    servers = [
        start(tmp_path_factory, max_connection_rate=1),
        start(tmp_path_factory, max_connection_rate=1, lean_rest=False),
    ]
    yield servers
    for server in servers:
        server.stop()


def rate_refusals(server: ServerProcess) -> float:
    resp = raw_http(server.http_url, "GET", "/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(resp.body.decode())
        for sample in family.samples
        if sample.name == "tidings_connection_rate_refusals_total"
    )


def test_over_the_connection_rate_both_answer_the_same_503_counted_once(
    throttled: list[ServerProcess], peers: Any
) -> None:
    refusals = []
    for server in throttled:
        # One connection a second: of 4 at once, the first takes the only token.
        answers = []
        for _ in range(4):
            peer = peers(server)
            peer.sock.sendall(upgrade())
            answers.append(peer.answer())
        assert answers[0][-1] == "connection_established"
        refused = [a for a in answers if a[0] == b"HTTP/1.1 503 Service Unavailable"]
        assert refused
        assert rate_refusals(server) == len(refused)  # the lean front's try is not counted
        refusals.append(refused[0])
    assert refusals[0] == refusals[1]


def test_only_the_admitted_upgrade_is_lean(lean: ServerProcess, peers: Any) -> None:
    before = lean_upgrades(lean)
    refused = peers(lean)
    refused.sock.sendall(upgrade("no-such-key"))
    assert refused.answer()[-1][0] == 0x8
    assert lean_upgrades(lean) == before
    accepted = peers(lean)
    accepted.sock.sendall(upgrade())
    assert accepted.answer()[-1] == "connection_established"
    assert lean_upgrades(lean) == before + 1


# -- the socket after the head ---------------------------------------------------------------


def test_a_frame_sent_with_the_head_is_read(lean: ServerProcess, peers: Any) -> None:
    before = lean_upgrades(lean)
    peer = peers(lean)
    ping = json.dumps({"event": "pusher:ping", "data": {}}).encode()
    peer.sock.sendall(upgrade() + masked(ping))
    assert peer.answer()[-1] == "connection_established"
    opcode, payload = peer.frame()
    assert opcode == 0x1 and json.loads(payload)["event"] == "pusher:pong"
    assert lean_upgrades(lean) == before + 1


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_a_lean_websocket_has_tcp_keepalive_as_aiohttps_do(lean: ServerProcess, peers: Any) -> None:
    peer = peers(lean)
    peer.sock.sendall(upgrade())
    assert peer.answer()[-1] == "connection_established"
    client_port = peer.sock.getsockname()[1]
    # The server's end of this connection, with its timers (SO_KEEPALIVE: "keepalive").
    found = subprocess.run(
        ["ss", "-tnoH", "state", "established", f"( dport = :{client_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f":{lean.port} " in found and "timer:(keepalive" in found, found


# -- the connection guard --------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start(
        tmp_path_factory,
        request_header_timeout=DEADLINE,
        request_body_timeout=DEADLINE,
        max_connections_per_ip=2,
    )
    yield server
    server.stop()


def cuts(server: ServerProcess, reason: str) -> float:
    resp = raw_http(server.http_url, "GET", "/metrics")
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            if sample.name == "tidings_http_cuts_total" and sample.labels["reason"] == reason:
                return float(sample.value)
    return 0.0


def test_a_handshake_dripped_slowly_is_cut(guarded: ServerProcess, peers: Any) -> None:
    before = cuts(guarded, "header_timeout")
    peer = peers(guarded)
    peer.sock.sendall(upgrade()[:40])  # the start of a lean handshake, then nothing
    assert peer.closed()
    assert cuts(guarded, "header_timeout") == before + 1


async def test_lean_websockets_count_against_the_per_address_limit(
    guarded: ServerProcess, peers: Any
) -> None:
    before = lean_upgrades(guarded)
    refused_before = cuts(guarded, "per_ip")
    # From an address of its own: the test's /metrics requests come from 127.0.0.1.
    source = "127.0.0.3"
    opened = [peers(guarded, source) for _ in range(2)]
    for peer in opened:
        peer.sock.sendall(upgrade())
        assert peer.answer()[-1] == "connection_established"
    assert lean_upgrades(guarded) == before + 2
    third = peers(guarded, source)
    assert third.closed()  # over max_connections_per_ip: cut at accept
    assert cuts(guarded, "per_ip") == refused_before + 1
    # A WebSocket's close frees its place (the guard hears of it).
    opened[0].sock.sendall(masked(struct.pack("!H", 1000), opcode=0x8))
    assert opened[0].closed()

    async def detached() -> bool:
        return "closed by the client, code 1000" in guarded.logs()

    await eventually(detached)  # the guard hears of the close before the node detaches
    again = peers(guarded, source)
    again.sock.sendall(upgrade())
    assert again.answer()[-1] == "connection_established"


# -- stop ------------------------------------------------------------------------------------


async def test_stop_closes_a_lean_websocket_with_4200(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = start(tmp_path_factory, shutdown_ready_delay=0)
    try:
        opener: SocketOpener
        async with open_sockets() as opener:
            sock = await opener(server.ws_url)
            assert lean_upgrades(server) == 1
            closed, _ = await asyncio.gather(sock.wait_closed(), asyncio.to_thread(server.stop))
            assert closed.code == 4200
    finally:
        server.kill()
