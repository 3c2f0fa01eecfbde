"""The lean path of the hot REST endpoints (server/lean_http.py) over real sockets.

A server with ``lean_rest`` on answers signed ``POST /apps/{id}/events`` itself and hands
every other request to aiohttp at its first byte; one with it off is the reference: the
same requests must get the same bytes back (but for the Date), and on a shared connection
the answers come in request order, whoever gives them.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pusher_helpers import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    TIMEOUT,
    SocketOpener,
    hmac_hex,
    query_string,
    raw_http,
    rest_requests_seen,
    unique,
)

from server_process import ServerProcess, free_port, write_config
from tls_support import self_signed

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

HOST = "127.0.0.1"


def signed_target(path: str, body: bytes, method: str = "POST", **overrides: str) -> str:
    query = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query.update(overrides)
    signature = hmac_hex(APP_SECRET, "\n".join([method, path, query_string(query)]))
    return f"{path}?{query_string(query)}&auth_signature={signature}"


def trigger_body(channel: str = "lean", name: str = "e") -> bytes:
    return json.dumps({"name": name, "channel": channel, "data": "d"}).encode()


def hot(body: bytes | None = None, headers: str = "", endpoint: str = "events") -> bytes:
    """A signed trigger, as one request's bytes."""
    body = trigger_body() if body is None else body
    target = signed_target(f"/apps/{APP_ID}/{endpoint}", body)
    return (
        f"POST {target} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"{headers}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


COLD = b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclass
class Answer:
    head: bytes  # status line and headers, without the final CRLF CRLF
    body: bytes

    @property
    def status_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> list[tuple[str, str]]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines)]

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


class Reader:
    """Reads HTTP responses (Content-Length bodies) off a raw socket, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        sock.settimeout(TIMEOUT)

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"closed by the server; unread: {self.buffer!r}")
        self.buffer += data

    def answer(self) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        answer = Answer(head, b"")
        length = int(answer.header("Content-Length") or 0)
        while len(self.buffer) < length:
            self._more()
        answer.body, self.buffer = self.buffer[:length], self.buffer[length:]
        return answer

    def closed(self) -> bool:
        """The server closed the connection (EOF or reset) within TIMEOUT."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buffer += data
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


@pytest.fixture
def connect() -> Iterator[Any]:
    opened: list[socket.socket] = []

    def opener(server: ServerProcess) -> tuple[socket.socket, Reader]:
        sock = socket.create_connection((HOST, server.port), timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        opened.append(sock)
        return sock, Reader(sock)

    yield opener
    for sock in opened:
        sock.close()


@dataclass
class TlsServerProcess(ServerProcess):
    """A server with ``tls_cert``: ready when /ready answers over https."""

    cafile: str = ""

    def is_ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"tidings exited early:\n{self.logs()}")
        context = ssl.create_default_context(cafile=self.cafile)
        url = f"https://127.0.0.1:{self.port}/ready"
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def start(
    tmp_path_factory: pytest.TempPathFactory, cafile: str = "", **settings: Any
) -> ServerProcess:
    directory = tmp_path_factory.mktemp("lean")
    settings = {"log_level": "debug", **settings}
    app = {"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET}
    config = write_config(directory / "tidings.toml", settings, [app])
    if cafile:
        server: ServerProcess = TlsServerProcess(
            free_port(), config, directory / "server.log", cafile=cafile
        )
    else:
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


def handovers(server: ServerProcess) -> list[str]:
    return [line for line in server.logs().splitlines() if "handed to aiohttp" in line]


# -- the same bytes as aiohttp ---------------------------------------------------------------

SAME_BYTES = {
    "ok": lambda: hot(),
    "ok-batch": lambda: hot(
        b'{"batch": [{"name": "e", "channel": "c", "data": "d"}]}', "", "batch_events"
    ),
    "bad-signature": lambda: hot().replace(b"auth_signature=", b"auth_signature=0"),
    "malformed-json": lambda: hot(b"{nope"),
    "event-too-large": lambda: hot(trigger_body().replace(b'"d"', b'"' + b"x" * 20000 + b'"')),
    "body-over-limit": lambda: hot(b" " * 300_000),
    "unknown-app": lambda: hot().replace(f"/apps/{APP_ID}/".encode(), b"/apps/999/"),
    "connection-close": lambda: hot(headers="Connection: close\r\n"),
}


@pytest.mark.parametrize("case", list(SAME_BYTES))
def test_answers_are_the_bytes_aiohttp_sends(
    lean: ServerProcess, general: ServerProcess, connect: Any, case: str
) -> None:
    answers = []
    for server in (lean, general):
        sock, reader = connect(server)
        try:
            sock.sendall(SAME_BYTES[case]())
        except ConnectionResetError:
            pass  # a 413 may close before the body is read; the answer is still there
        answers.append(reader.answer())
    mine, theirs = answers
    assert mine.status_line == theirs.status_line
    without_date = [[h for h in a.headers if h[0] != "Date"] for a in answers]
    assert without_date[0] == without_date[1]
    assert mine.header("Date") is not None
    if b"auth_timestamp" not in theirs.body:  # a 401 names the string to sign
        assert mine.body == theirs.body


# -- one connection, both servers ------------------------------------------------------------


def test_pipelined_answers_keep_request_order_across_the_hand_over(
    lean: ServerProcess, connect: Any
) -> None:
    before = len(handovers(lean))
    sock, reader = connect(lean)
    batch = b'{"batch": [{"name": "b", "channel": "c", "data": "d"}]}'
    sock.sendall(hot() + hot(batch, endpoint="batch_events") + COLD + hot(b"{nope"))
    first, second, cold, last = (reader.answer() for _ in range(4))
    assert (first.status_line, first.body) == (b"HTTP/1.1 200 OK", b"{}")
    assert (second.status_line, second.body) == (b"HTTP/1.1 200 OK", b"{}")
    assert json.loads(cold.body)["ready"] is True
    # After the hand-over the connection is aiohttp's, hot requests too: still answered.
    assert last.status_line == b"HTTP/1.1 400 Bad Request"
    assert handovers(lean)[before:] and "not a hot request line" in handovers(lean)[before]


async def test_a_body_split_across_packets_and_the_hand_over_byte(
    lean: ServerProcess, connect: Any, open_socket: SocketOpener
) -> None:
    channel = unique("split")
    ws = await open_socket(lean.ws_url)
    await ws.subscribe(channel)
    sock, reader = connect(lean)
    first = hot(trigger_body(channel, "one"))
    # A chunked trigger: the framer hands it over; aiohttp must read it from its "P".
    body = trigger_body(channel, "two")
    target = signed_target(f"/apps/{APP_ID}/events", body)
    chunked = (
        (
            f"POST {target} HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
            f"{len(body):x}\r\n"
        ).encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    sock.sendall(first[:-7])
    sock.sendall(first[-7:] + chunked[:5])
    assert reader.answer().status_line == b"HTTP/1.1 200 OK"
    sock.sendall(chunked[5:40])
    sock.sendall(chunked[40:])
    assert reader.answer().status_line == b"HTTP/1.1 200 OK"
    await ws.expect("one", channel)
    await ws.expect("two", channel)


def test_expect_100_continue_is_aiohttps(lean: ServerProcess, connect: Any) -> None:
    sock, reader = connect(lean)
    request = hot(headers="Expect: 100-continue\r\n")
    head, body = request.split(b"\r\n\r\n", 1)
    sock.sendall(head + b"\r\n\r\n")
    assert reader.answer().status_line == b"HTTP/1.1 100 Continue"
    sock.sendall(body)
    assert reader.answer().status_line == b"HTTP/1.1 200 OK"


def test_http_1_0_and_garbage_are_answered_by_aiohttp(lean: ServerProcess, connect: Any) -> None:
    sock, reader = connect(lean)
    sock.sendall(hot().replace(b"HTTP/1.1\r\n", b"HTTP/1.0\r\n", 1))
    answer = reader.answer()
    assert answer.status_line == b"HTTP/1.0 200 OK" and answer.body == b"{}"
    assert reader.closed()  # HTTP/1.0 without keep-alive
    sock, reader = connect(lean)
    sock.sendall(b"GARBAGE\r\n\r\n")
    assert reader.answer().status_line == b"HTTP/1.0 400 Bad Request"


def test_a_head_too_large_is_aiohttps_400(lean: ServerProcess, connect: Any) -> None:
    sock, reader = connect(lean)
    sock.sendall(hot(headers="X-Big: " + "a" * 9000 + "\r\n"))
    assert reader.answer().status_line == b"HTTP/1.0 400 Bad Request"


def test_connection_close_closes_after_the_answer(lean: ServerProcess, connect: Any) -> None:
    sock, reader = connect(lean)
    sock.sendall(hot() + hot(headers="Connection: close\r\n") + hot())
    assert reader.answer().header("Connection") is None
    answer = reader.answer()
    assert answer.status_line == b"HTTP/1.1 200 OK" and answer.header("Connection") == "close"
    assert reader.closed() and reader.buffer == b""  # the third is never answered


def test_a_client_gone_mid_body_is_timed_as_499(lean: ServerProcess, connect: Any) -> None:
    endpoint = "/apps/{app_id}/batch_events"
    before = rest_requests_seen(lean.http_url, endpoint).get("499", 0)
    sock, reader = connect(lean)
    sock.sendall(hot(b'{"batch": []}' + b" " * 100, endpoint="batch_events")[:-50])
    sock.sendall(hot()[:10])  # not even reached: the body above is incomplete
    sock.close()

    deadline = time.monotonic() + 4 * TIMEOUT
    while rest_requests_seen(lean.http_url, endpoint).get("499", 0) == before:
        assert time.monotonic() < deadline, rest_requests_seen(lean.http_url, endpoint)
        time.sleep(0.05)  # polling /metrics: the server has no event to wait on from here


# -- the guard and the timers ----------------------------------------------------------------

DEADLINE = 1.0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start(
        tmp_path_factory,
        request_header_timeout=DEADLINE,
        request_body_timeout=DEADLINE,
        keepalive_timeout=2 * DEADLINE,
    )
    yield server
    server.stop()


def cut_count(server: ServerProcess, reason: str) -> float:
    resp = raw_http(server.http_url, "GET", "/metrics")
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            if sample.name == "tidings_http_cuts_total" and sample.labels["reason"] == reason:
                return float(sample.value)
    return 0.0


def test_a_hot_head_sent_slowly_is_cut(strict: ServerProcess, connect: Any) -> None:
    before = cut_count(strict, "header_timeout")
    sock, reader = connect(strict)
    sock.sendall(hot()[:30])  # the start of a hot request line, then nothing
    started = time.monotonic()
    assert reader.closed()
    assert time.monotonic() - started >= DEADLINE / 2
    assert cut_count(strict, "header_timeout") == before + 1


def test_a_slow_second_request_on_a_kept_alive_connection_is_cut(
    strict: ServerProcess, connect: Any
) -> None:
    before = cut_count(strict, "header_timeout")
    sock, reader = connect(strict)
    sock.sendall(hot())
    assert reader.answer().status_line == b"HTTP/1.1 200 OK"
    sock.sendall(hot()[:30])
    assert reader.closed()
    assert cut_count(strict, "header_timeout") == before + 1


def test_an_idle_lean_connection_is_closed_after_keepalive_timeout(
    strict: ServerProcess, connect: Any
) -> None:
    sock, reader = connect(strict)
    sock.sendall(hot())
    assert reader.answer().status_line == b"HTTP/1.1 200 OK"
    started = time.monotonic()
    assert reader.closed()
    assert time.monotonic() - started >= DEADLINE  # not cut as a pending connection


def test_stop_closes_kept_alive_lean_connections(
    tmp_path_factory: pytest.TempPathFactory, connect: Any
) -> None:
    server = start(tmp_path_factory)
    try:
        sock, reader = connect(server)
        sock.sendall(hot())
        assert reader.answer().status_line == b"HTTP/1.1 200 OK"
    finally:
        server.stop()
    assert reader.closed()
    assert "Traceback" not in server.logs()


def test_over_tls_hot_then_cold_on_one_connection(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The lean front sits under TLS too: the hand-over moves the TLS transport's protocol."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    server = start(tmp_path_factory, str(cert), tls_cert=str(cert), tls_key=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    before = len(handovers(server))  # the readiness checks' GET /ready
    try:
        raw = socket.create_connection((HOST, server.port), timeout=TIMEOUT)
        with context.wrap_socket(raw, server_hostname=HOST) as sock:
            reader = Reader(sock)
            sock.sendall(hot() + COLD + hot())
            assert reader.answer().body == b"{}"
            assert json.loads(reader.answer().body)["ready"] is True
            assert reader.answer().body == b"{}"
    finally:
        server.stop()
    assert len(handovers(server)) == before + 1


def test_behind_a_trusted_proxy_hot_requests_count_under_their_client(
    tmp_path_factory: pytest.TempPathFactory, connect: Any
) -> None:
    server = start(tmp_path_factory, trusted_proxies=["127.0.0.1"], max_connections_per_ip=1)
    try:
        first, first_reader = connect(server)
        first.sendall(hot(headers="X-Forwarded-For: 198.51.100.7\r\n"))
        assert first_reader.answer().status_line == b"HTTP/1.1 200 OK"
        # The same client through a second proxy connection: over its limit of one.
        second, second_reader = connect(server)
        second.sendall(hot(headers="X-Forwarded-For: 198.51.100.7\r\n"))
        refused = second_reader.answer()
        assert refused.status_line == b"HTTP/1.1 429 Too Many Requests"
        assert json.loads(refused.body) == {"error": "too many connections from this address"}
        assert refused.header("Connection") == "close" and second_reader.closed()
        # Another client through the proxy is let in.
        third, third_reader = connect(server)
        third.sendall(hot(headers="X-Forwarded-For: 198.51.100.8\r\n"))
        assert third_reader.answer().status_line == b"HTTP/1.1 200 OK"
    finally:
        server.stop()
