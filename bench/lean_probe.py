"""What a lean REST path would save (issue 18): a probe, not a server to ship.

One process (core 0) serves the bench app twice from one started ``Realtime``: on PORT
through Tidings' own aiohttp listener, and on a second port through a minimal ``asyncio.Protocol``
with a pure-Python HTTP/1.1 framer (Content-Length bodies only, no guard, no metrics, no
in-flight tracking: those would add a few µs). Both answer through the same
``RestApi._answer`` (signature, timestamp window, body_md5, JSON checks, publish), so the
difference is what aiohttp costs per request. ``wrk`` (core 1, bench/publish.py's pool of
signed requests) drives each in turn, the order rotating per round; the server's CPU time
over each run, per request, is the figure to read on a shared machine.

    .venv/bin/python bench/lean_probe.py --cases single-0,batch-10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

ROUTE = re.compile(r"^/apps/([^/]+)/(events|batch_events)$")
REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 413: b"Payload Too Large"}


class ProbeRequest:
    """The :class:`~tidings.server.http_edge.HttpRequest` of one framed request."""

    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        raw_path, _, query = target.partition("?")
        self.method = method
        self.raw_path = raw_path
        self.path = unquote(raw_path)
        self.query_items = [
            (unquote(name), unquote(value))
            for name, _, value in (part.partition("=") for part in query.split("&") if part)
        ]
        self.query = dict(reversed(self.query_items))
        self.headers = headers
        self.remote = None
        found = ROUTE.match(self.path)
        assert found is not None, self.path
        self.params = {"app_id": found.group(1)}
        self.endpoint = found.group(2)
        self.body = body

    async def read_body(self, limit: int) -> bytes | None:
        return self.body if len(self.body) <= limit else None


class LeanProtocol(asyncio.Protocol):
    """Frames requests with bytes.find and answers them in order (pipelining kept)."""

    def __init__(self, rest: object) -> None:
        self.rest = rest
        self.buffer = b""
        self.last: asyncio.Future[None] | None = None
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            lines = buffer[:end].decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            size = int(headers.get("content-length", "0"))
            if len(buffer) < end + 4 + size:
                break
            request = ProbeRequest(method, target, headers, buffer[end + 4 : end + 4 + size])
            buffer = buffer[end + 4 + size :]
            keep_alive = headers.get("connection", "").lower() != "close"
            self.last = asyncio.ensure_future(self.answer(self.last, request, keep_alive))
        self.buffer = buffer

    async def answer(
        self, previous: asyncio.Future[None] | None, request: ProbeRequest, keep_alive: bool
    ) -> None:
        rest: object = self.rest
        handler = getattr(rest, request.endpoint)
        response = await rest._answer(request, handler)  # type: ignore[attr-defined]  # noqa: SLF001
        if previous is not None:
            await previous
        assert self.transport is not None
        reason = REASONS.get(response.status, b"Error")
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        self.transport.write(head % (response.status, reason, len(response.body)) + response.body)
        if not keep_alive:
            self.transport.close()


async def serve(config: Path, port: int) -> None:
    from tidings.config import load_settings
    from tidings.realtime import Realtime
    from tidings.server.app import listen
    from tidings.server.rest import RestApi

    settings = load_settings(config, flags={"host": "127.0.0.1", "port": port})
    realtime = Realtime.from_settings(settings)
    await realtime.start()
    await listen(realtime)
    rest = RestApi(realtime.node, settings.max_request_body)
    loop = asyncio.get_running_loop()
    lean = await loop.create_server(lambda: LeanProtocol(rest), "127.0.0.1", 0)
    print("ready", lean.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def drive(cases: list[str], rounds: int, seconds: int) -> None:
    import publish
    import servers
    from procs import free_port

    workdir = BENCH / "results" / "lean-probe"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = servers.tidings_config(workdir / "tidings.toml", "warning")
    command = ["taskset", "-c", servers.SERVER_CORE, sys.executable, __file__]
    server = subprocess.Popen(
        [*command, "--serve", str(config), str(port)],
        env=servers.server_env(),
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    ready, lean_port = server.stdout.readline().split()
    assert ready == b"ready"

    def cpu() -> float:
        fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        for name in cases:
            case = publish.CASES[name]
            variants = [("aiohttp", port), ("lean", int(lean_port))]
            for round_ in range(rounds):
                for variant, where in variants[round_ % 2 :] + variants[: round_ % 2]:
                    pool = publish.write_pool(workdir / f"pool-{where}.txt", where, case)
                    publish.wrk(where, pool, 1, workdir / "warm-up.log")
                    before = cpu()
                    result = publish.wrk(where, pool, seconds, workdir / f"wrk-{variant}.log")
                    spent = cpu() - before
                    count = result["requests"]
                    print(
                        f"{name} {variant:8s} {count / seconds:9,.0f} requests/s "
                        f"{1e6 * spent / max(count, 1):6.1f} µs CPU/request "
                        f"(non-2xx {result['status_errors']}, read errors {result['read_errors']})",
                        flush=True,
                    )
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="single-0,batch-10")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--serve", nargs=2, metavar=("CONFIG", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(Path(args.serve[0]), int(args.serve[1])))
        return
    drive(args.cases.split(","), args.rounds, args.seconds)


if __name__ == "__main__":
    main()
