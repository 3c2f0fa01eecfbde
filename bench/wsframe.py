"""The client frame reader in C (``tidings._wsframe``) against the pure-Python one (issue 17).

Two measurements, each printing C / Python ratios from the same run:

1. **In process** (the default): one reader per implementation is fed the frames a Pusher
   client sends, one read per frame (a fragmented message: one read per fragment), and the
   CPU time per 1,000 messages is taken with ``time.process_time`` (wall µs alongside).
   Implementations alternate per round, the order rotating; medians over the rounds, and the
   median of the per-round ratios. Then the memory of 10,000 idle readers (tracemalloc), each
   after one message, and while each holds half a 1 KB frame.
2. **Through a server** (``--server``): two ``tidings serve`` on the server core, one with
   ``TIDINGS_WS_READER=python``, one with the C reader; on the client core, ``--connections``
   sockets per server each send ``pusher:ping`` and wait for the ``pusher:pong``, ``--pings``
   times; the figure is the server's CPU-seconds per 1,000 pings. That is the whole inbound
   path (read, parse, JSON, session, the answer's write), of which the reader is one part.

    .venv/bin/python bench/wsframe.py                       # ~1 min
    .venv/bin/python bench/wsframe.py --server --rounds 3   # ~2 min more
    .venv/bin/python bench/wsframe.py --server --profile    # py-spy: the bench group of uv.lock
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import statistics
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from tidings.protocol import websocket  # noqa: E402
from tidings.protocol.websocket import PyFrameReader, unmask  # noqa: E402

MASK = b"\x5a\x13\xc4\x7e"
LIMIT = 32 * 1024  # max_message_bytes' default; 10 KB events fit, as in tidings serve
AUTH = "app-key:" + "f" * 64


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A frame as a client sends it: masked (RFC 6455 5.3)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    return header + MASK + unmask(payload, MASK)


def client_event(size: int) -> bytes:
    head = '{"event":"client-typing","channel":"private-chat-42","data":{"text":"'
    return (head + "x" * (size - len(head) - 3) + '"}}').encode()


def fragmented(payload: bytes, parts: int) -> list[bytes]:
    step = -(-len(payload) // parts)
    pieces = [payload[i : i + step] for i in range(0, len(payload), step)]
    return [
        client_frame(0x1 if i == 0 else 0x0, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]


def workloads() -> dict[str, list[bytes]]:
    """Each workload: the reads that carry one message."""
    ping = b'{"event":"pusher:ping","data":{}}'
    subscribe = (
        '{"event":"pusher:subscribe","data":{"auth":"' + AUTH + '","channel":"private-chat-42"}}'
    ).encode()
    return {
        f"pusher:ping ({len(ping)} B)": [client_frame(0x1, ping)],
        f"pusher:subscribe with auth ({len(subscribe)} B)": [client_frame(0x1, subscribe)],
        "client event 100 B": [client_frame(0x1, client_event(100))],
        "client event 1 KB": [client_frame(0x1, client_event(1000))],
        "client event 10 KB": [client_frame(0x1, client_event(10_000))],
        "1 KB in 3 fragments": fragmented(client_event(1000), 3),
        "10 KB in 4 fragments": fragmented(client_event(10_000), 4),
    }


def cpu_per_message(cls: type[PyFrameReader], reads: list[bytes], n: int) -> tuple[float, float]:
    """(CPU ms per 1,000 messages, wall µs per message) over ``n`` messages."""
    reader = cls(LIMIT)
    for read in reads:  # warm up, and check the message comes out
        events = reader.feed(read)
    assert len(events) == 1 and isinstance(events[0], websocket.Text), events
    feed = reader.feed
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        for read in reads:
            feed(read)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / n * 1e6, wall / n * 1e6


def idle_bytes(
    cls: type[PyFrameReader], count: int, after: Callable[[PyFrameReader], None]
) -> float:
    """Bytes allocated per reader (tracemalloc: the object and anything it holds)."""
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    readers = [cls(LIMIT) for _ in range(count)]
    for reader in readers:
        after(reader)
    used = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    del readers
    return used / count


def in_process(rounds: int, messages: int) -> None:
    native = websocket.NativeFrameReader
    if native is None:
        sys.exit("tidings._wsframe is not built: `make install` builds it")
    impls: dict[str, type[PyFrameReader]] = {"python": PyFrameReader, "c": native}
    print(f"in process: {rounds} rounds x {messages:,} messages per workload and reader")
    print(
        f"{'workload':<34} {'Py wall µs':>10} {'C wall µs':>9} {'Python CPU-ms/1k':>17} "
        f"{'C CPU-ms/1k':>12} {'C/Python':>9}"
    )
    for name, reads in workloads().items():
        cpu: dict[str, list[float]] = {k: [] for k in impls}
        wall: dict[str, list[float]] = {k: [] for k in impls}
        ratios = []
        for r in range(rounds):
            order = list(impls) if r % 2 == 0 else list(reversed(impls))
            for key in order:
                c, w = cpu_per_message(impls[key], reads, messages)
                cpu[key].append(c)
                wall[key].append(w)
            ratios.append(cpu["c"][-1] / cpu["python"][-1])
        med = {k: statistics.median(v) for k, v in cpu.items()}
        medw = {k: statistics.median(v) for k, v in wall.items()}
        print(
            f"{name:<34} {medw['python']:>10.2f} {medw['c']:>9.2f} "
            f"{med['python']:>17.2f} {med['c']:>12.2f} {statistics.median(ratios):>9.2f}"
            f"  ({min(ratios):.2f}-{max(ratios):.2f})"
        )

    ping = workloads()[next(iter(workloads()))][0]
    half = client_frame(0x1, client_event(1000))[:500]
    print("\nmemory per reader, 10,000 readers (tracemalloc)")
    for label, after in (
        ("idle, after one pusher:ping", lambda r: r.feed(ping)),
        ("holding half a 1 KB frame", lambda r: r.feed(half)),
    ):
        py = idle_bytes(PyFrameReader, 10_000, after)
        c = idle_bytes(native, 10_000, after)
        print(f"  {label:<30} Python {py:7.0f} B   C {c:7.0f} B   C/Python {c / py:.2f}")


# ------------------------------------------------------------------ through a server


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    from loadclient import APP_KEY

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /app/{APP_KEY}?protocol=7&client=bench&version=1 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    await server_message(reader)  # pusher:connection_established
    return reader, writer


async def server_message(reader: asyncio.StreamReader) -> bytes:
    first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return await reader.readexactly(n)


async def ping_loop(port: int, connections: int, pings: int, timeout: float) -> None:
    frame = client_frame(0x1, b'{"event":"pusher:ping","data":{}}')
    sockets = await asyncio.gather(*(connect(port) for _ in range(connections)))

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(pings):
            writer.write(frame)
            answer = await server_message(reader)
            assert b"pusher:pong" in answer, answer

    await asyncio.wait_for(asyncio.gather(*(one(r, w) for r, w in sockets)), timeout)
    for _, writer in sockets:
        writer.close()


def shares(raw: Path) -> tuple[int, float, float]:
    """py-spy's raw output (one ``frame;frame;... count`` line per stack): the samples, the
    share inside the Python reader's ``feed`` and the share inside ``data_received`` (the
    whole read: the reader, C or Python, and the handling of its events)."""
    total = reader = received = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        names = [frame.split(" (")[0] for frame in stack.split(";")]
        total += int(count)
        reader += int(count) if "PyFrameReader.feed" in names else 0
        received += int(count) if any(n.endswith(".data_received") for n in names) else 0
    return total, reader / max(total, 1), received / max(total, 1)


def profile(
    started: dict[str, tuple[int, subprocess.Popen[bytes]]],
    work: Path,
    connections: int,
    pings: int,
) -> None:
    import pyspy

    print("  py-spy, one more run per server: where the server's samples are")
    for reader, (port, proc) in started.items():
        spy = pyspy.start_profiler(proc.pid, work, reader, seconds=3600)
        time.sleep(1.0)  # py-spy attaches
        asyncio.run(ping_loop(port, connections, pings, timeout=300))
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        spy.wait(timeout=30)
        samples, share, received = shares(work / f"pyspy-{reader}.txt")
        print(
            f"  {'Python' if reader == 'python' else 'C':>6}: {samples:,} samples, "
            f"{share:.1%} in PyFrameReader.feed, {received:.1%} in data_received"
        )


def through_server(rounds: int, connections: int, pings: int, with_profile: bool) -> None:
    import procs
    import servers

    os.sched_setaffinity(0, {int(procs.CLIENT_CORE)})
    work = procs.RESULTS / time.strftime("wsframe-%Y%m%d-%H%M%S")  # logs, configs, profiles
    work.mkdir(parents=True)
    started = {}
    for reader in ("python", "c"):
        port = procs.free_port()
        cmd, env = servers.command("tidings", port, work, "warning")
        env["TIDINGS_WS_READER"] = "python" if reader == "python" else "native"
        log_path = work / f"{reader}.log"
        proc = procs.start(cmd, log_path, env=env)
        procs.wait_ready(port, proc, 60, log_path)
        started[reader] = (port, proc)
    total = connections * pings
    print(
        f"\nthrough a server: {connections} sockets x {pings} pusher:ping each "
        f"({total:,} per run), {rounds} rounds; server CPU-ms per 1,000 pings"
    )
    cpu: dict[str, list[float]] = {"python": [], "c": []}
    try:
        for r in range(rounds):
            for reader in ("python", "c") if r % 2 == 0 else ("c", "python"):
                port, proc = started[reader]
                before = procs.cpu_seconds(proc.pid)
                asyncio.run(ping_loop(port, connections, pings, timeout=300))
                cpu[reader].append((procs.cpu_seconds(proc.pid) - before) / total * 1e6)
            print(
                f"  round {r + 1}: Python {cpu['python'][-1]:.1f}  C {cpu['c'][-1]:.1f}"
                f"  C/Python {cpu['c'][-1] / cpu['python'][-1]:.3f}"
            )
        if with_profile:
            profile(started, work, connections, pings)
    finally:
        for _, proc in started.values():
            procs.stop(proc)
    ratios = [c / p for c, p in zip(cpu["c"], cpu["python"], strict=True)]
    print(
        f"  median: Python {statistics.median(cpu['python']):.1f}  "
        f"C {statistics.median(cpu['c']):.1f}  C/Python {statistics.median(ratios):.3f} "
        f"({min(ratios):.3f}-{max(ratios):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20_000, help="per workload and round")
    parser.add_argument("--server", action="store_true", help="also measure through a server")
    parser.add_argument("--profile", action="store_true", help="with --server: py-spy")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--pings", type=int, default=1000, help="per connection and round")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50 or not 1 <= args.messages <= 1_000_000:
        parser.error("--rounds 1-50, --messages 1-1,000,000")
    if not 1 <= args.connections <= 1000 or not 1 <= args.pings <= 10_000:
        parser.error("--connections 1-1,000, --pings 1-10,000")
    print(f"readers: Python and {websocket.describe()}")
    in_process(args.rounds, args.messages)
    if args.server:
        through_server(args.rounds, args.connections, args.pings, args.profile)


if __name__ == "__main__":
    main()
