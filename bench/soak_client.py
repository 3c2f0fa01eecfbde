"""The load of the soak benchmark: N Pusher connections with steady churn (run by bench/soak.py).

    .venv/bin/python bench/soak_client.py --port PORT [--connections 10000] [--seconds 600]

Every connection subscribes to one public and one private channel, and every fourth one to a
presence channel too, signing private and presence subscriptions with the app secret as an
auth endpoint would. Then, for ``--seconds``, every second:

* ``--reconnect-fraction`` of the connections close and connect again (a new socket id, all
  subscriptions again);
* ``--resubscribe-fraction`` of them leave one of their channels and join another of the
  same kind (public, private or presence);
* ``--client-events`` client events are sent on private channels;
* ``--publishes`` events are published through the REST API (one in ten as a batch of 3).

Connections answer ``pusher:ping``. Every ``--report`` seconds one JSON line of counters goes
to stdout; at the end every connection is closed and a last line has ``"phase": "done"``.
Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

HANDSHAKE_TIMEOUT = 15.0


def sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass
class Options:
    host: str
    port: int
    app_id: str
    key: str
    secret: str
    connections: int
    seconds: float
    reconnect_fraction: float
    resubscribe_fraction: float
    client_events: float
    publishes: float
    public_channels: int
    private_channels: int
    presence_channels: int
    ramp_in_flight: int
    report: float

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/app/{self.key}?protocol=7&client=soak&version=1"


@dataclass
class Stats:
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    subscribed: int = 0
    unsubscribed: int = 0
    subscription_errors: int = 0
    deliveries: int = 0
    member_events: int = 0
    pings_answered: int = 0
    client_events_sent: int = 0
    publishes: int = 0
    publish_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not isinstance(v, Counter)}
        out["errors"] = dict(self.errors)
        out["closes"] = dict(self.closes)
        return out


class Connection:
    """One Pusher connection; :meth:`run` keeps it open until told to stop."""

    def __init__(self, index: int, load: Load) -> None:
        self.index = index
        self.load = load
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.socket_id: str | None = None
        self.channels: set[str] = set()
        self.reader: asyncio.Task[None] | None = None
        self.closing = False

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.ws.closed and self.socket_id is not None

    def initial_channels(self) -> list[str]:
        o, i = self.load.options, self.index
        channels = [f"soak-{i % o.public_channels}", f"private-soak-{i % o.private_channels}"]
        if i % 4 == 0:
            channels.append(f"presence-soak-{(i // 4) % o.presence_channels}")
        return channels

    async def connect(self) -> bool:
        stats = self.load.stats
        established = asyncio.get_running_loop().create_future()
        try:
            ws = await self.load.http.ws_connect(
                self.load.options.url, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            stats.connect_failures += 1
            stats.errors[f"connect:{type(exc).__name__}"] += 1
            return False
        self.ws, self.socket_id, self.closing = ws, None, False
        self.channels = set()
        self.reader = asyncio.create_task(self._read(ws, established))
        try:
            await asyncio.wait_for(established, HANDSHAKE_TIMEOUT)
        except (TimeoutError, ConnectionError):
            stats.connect_failures += 1
            stats.errors["connect:no connection_established"] += 1
            await self.close()
            return False
        stats.connects += 1
        for channel in self.initial_channels():
            await self.subscribe(channel)
        return True

    async def close(self) -> None:
        self.closing = True
        ws, reader = self.ws, self.reader
        self.ws, self.socket_id, self.reader = None, None, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def send(self, message: dict[str, Any]) -> None:
        if self.ws is None or self.ws.closed:
            return
        try:
            await self.ws.send_str(json.dumps(message, separators=(",", ":")))
        except (ConnectionError, RuntimeError) as exc:
            self.load.stats.errors[f"send:{type(exc).__name__}"] += 1

    async def subscribe(self, channel: str) -> None:
        assert self.socket_id is not None
        data: dict[str, str] = {"channel": channel}
        secret, key = self.load.options.secret, self.load.options.key
        if channel.startswith("presence-"):
            member = {"user_id": f"user-{self.index}", "user_info": {"n": self.index}}
            channel_data = json.dumps(member, separators=(",", ":"))
            data["channel_data"] = channel_data
            data["auth"] = f"{key}:{sign(secret, f'{self.socket_id}:{channel}:{channel_data}')}"
        elif channel.startswith("private-"):
            data["auth"] = f"{key}:{sign(secret, f'{self.socket_id}:{channel}')}"
        self.channels.add(channel)
        await self.send({"event": "pusher:subscribe", "data": data})

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        await self.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})
        self.load.stats.unsubscribed += 1

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, established: Any) -> None:
        stats = self.load.stats
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            event = message.get("event")
            if event == "pusher:connection_established":
                self.socket_id = json.loads(message["data"])["socket_id"]
                if not established.done():
                    established.set_result(None)
            elif event == "pusher_internal:subscription_succeeded":
                stats.subscribed += 1
            elif event == "pusher:ping":
                stats.pings_answered += 1
                await ws.send_str('{"event":"pusher:pong","data":{}}')
            elif event == "pusher:subscription_error":
                stats.subscription_errors += 1
                stats.errors[f"subscription_error:{message['data'].get('status')}"] += 1
            elif event == "pusher:error":
                stats.errors[f"pusher:error:{message['data'].get('code')}"] += 1
            elif event in ("pusher_internal:member_added", "pusher_internal:member_removed"):
                stats.member_events += 1
            else:
                stats.deliveries += 1
        if not self.closing:
            # The server closed it: counted, and connected again by the churn loop.
            stats.closes[str(ws.close_code)] += 1
            if not established.done():
                established.set_exception(ConnectionError("closed before connection_established"))


class Load:
    def __init__(self, options: Options, http: aiohttp.ClientSession) -> None:
        self.options = options
        self.http = http
        self.stats = Stats()
        self.connections = [Connection(i, self) for i in range(options.connections)]
        self.rng = random.Random(7)
        self.background: set[asyncio.Task[Any]] = set()

    def report(self, phase: str, started: float) -> None:
        line = {"phase": phase, "t": round(time.monotonic() - started, 1)}
        line["open"] = sum(1 for c in self.connections if c.open)
        line.update(self.stats.snapshot())
        print(json.dumps(line), flush=True)

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def ramp(self) -> None:
        """Open every connection with at most ``ramp_in_flight`` handshakes at a time."""
        gate = asyncio.Semaphore(self.options.ramp_in_flight)

        async def one(conn: Connection) -> None:
            async with gate:
                await conn.connect()

        await asyncio.gather(*(one(c) for c in self.connections))

    async def reconnect(self, conn: Connection) -> None:
        await conn.close()
        if await conn.connect():
            self.stats.reconnects += 1

    async def resubscribe(self, conn: Connection) -> None:
        """Move the connection from one of its channels to another of the same kind:
        public most often, else private, else (for presence members) presence."""
        o = self.options
        roll = self.rng.random()
        prefix, count = ("soak-", o.public_channels)
        if roll > 0.85 and any(c.startswith("presence-") for c in conn.channels):
            prefix, count = ("presence-soak-", o.presence_channels)
        elif roll > 0.6:
            prefix, count = ("private-soak-", o.private_channels)
        for channel in [c for c in conn.channels if c.startswith(prefix)]:
            await conn.unsubscribe(channel)
        await conn.subscribe(f"{prefix}{self.rng.randrange(count)}")

    async def client_event(self) -> None:
        candidates = [c for c in self.rng.sample(self.connections, 8) if c.open]
        for conn in candidates:
            private = [c for c in conn.channels if c.startswith("private-")]
            if private:
                message = {"event": "client-soak", "channel": private[0], "data": {"t": 1}}
                await conn.send(message)
                self.stats.client_events_sent += 1
                return

    async def publish(self) -> None:
        o = self.options
        kinds = (
            f"soak-{self.rng.randrange(o.public_channels)}",
            f"private-soak-{self.rng.randrange(o.private_channels)}",
            f"presence-soak-{self.rng.randrange(o.presence_channels)}",
        )
        data = json.dumps({"at": time.time(), "pad": "x" * 64})
        if self.rng.random() < 0.1:
            path = f"/apps/{o.app_id}/batch_events"
            batch = [{"name": "soak", "channel": c, "data": data} for c in kinds]
            body = json.dumps({"batch": batch}).encode()
        else:
            path = f"/apps/{o.app_id}/events"
            body = json.dumps({"name": "soak", "channel": self.rng.choice(kinds), "data": data})
            body = body.encode()
        params = {
            "auth_key": o.key,
            "auth_timestamp": str(int(time.time())),
            "auth_version": "1.0",
            "body_md5": hashlib.md5(body).hexdigest(),
        }
        query = "&".join(f"{k}={params[k]}" for k in sorted(params))
        signature = sign(o.secret, f"POST\n{path}\n{query}")
        url = f"http://{o.host}:{o.port}{path}?{query}&auth_signature={signature}"
        try:
            async with self.http.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                if response.status == 200:
                    self.stats.publishes += 1
                else:
                    self.stats.publish_errors += 1
                    self.stats.errors[f"rest:{response.status}"] += 1
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.stats.publish_errors += 1
            self.stats.errors[f"rest:{type(exc).__name__}"] += 1

    async def churn(self, seconds: float, started: float) -> None:
        """Ten ticks a second; each does a tenth of every per-second quota."""
        o = self.options
        tick = 0.1
        per_tick = {
            "reconnect": o.reconnect_fraction * o.connections * tick,
            "resubscribe": o.resubscribe_fraction * o.connections * tick,
            "client_event": o.client_events * tick,
            "publish": o.publishes * tick,
        }
        owed = dict.fromkeys(per_tick, 0.0)
        end = time.monotonic() + seconds
        next_tick = time.monotonic()
        next_report = time.monotonic() + o.report
        busy: set[int] = set()
        ticks = 0
        while time.monotonic() < end:
            next_tick += tick
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            for name, amount in per_tick.items():
                owed[name] += amount
            while owed["reconnect"] >= 1:
                owed["reconnect"] -= 1
                conn = self.rng.choice(self.connections)
                if conn.index not in busy:
                    busy.add(conn.index)
                    self.spawn(self._guarded(self.reconnect(conn), busy, conn.index))
            ticks += 1
            if ticks % 10 == 0:
                # Connections the server closed (or that failed to connect) come back too.
                for conn in self.connections:
                    if conn.index in busy or not (conn.ws is None or conn.ws.closed):
                        continue
                    if len(busy) >= o.ramp_in_flight:
                        break
                    busy.add(conn.index)
                    self.spawn(self._guarded(self.reconnect(conn), busy, conn.index))
            while owed["resubscribe"] >= 1:
                owed["resubscribe"] -= 1
                conn = self.rng.choice(self.connections)
                if conn.open and conn.index not in busy:
                    await self.resubscribe(conn)
            while owed["client_event"] >= 1:
                owed["client_event"] -= 1
                await self.client_event()
            while owed["publish"] >= 1:
                owed["publish"] -= 1
                self.spawn(self.publish())
            if time.monotonic() >= next_report:
                next_report += o.report
                self.report("run", started)

    async def _guarded(self, coro: Any, busy: set[int], index: int) -> None:
        try:
            await coro
        finally:
            busy.discard(index)

    async def stop(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        gate = asyncio.Semaphore(500)

        async def one(conn: Connection) -> None:
            async with gate:
                await conn.close()

        await asyncio.gather(*(one(c) for c in self.connections))


async def main_async(options: Options) -> None:
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        load = Load(options, http)
        await load.ramp()
        load.report("ramped", started)
        try:
            await load.churn(options.seconds, started)
        finally:
            load.report("stopping", started)
            await load.stop()
        load.report("done", started)


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--app-id", default="soak")
    p.add_argument("--key", default="soak-key")
    p.add_argument("--secret", default="soak-secret")
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--reconnect-fraction", type=float, default=0.01, help="per second")
    p.add_argument("--resubscribe-fraction", type=float, default=0.01, help="per second")
    p.add_argument("--client-events", type=float, default=20.0, help="per second")
    p.add_argument("--publishes", type=float, default=20.0, help="REST requests per second")
    p.add_argument("--public-channels", type=int, default=100)
    p.add_argument("--private-channels", type=int, default=100)
    p.add_argument("--presence-channels", type=int, default=100)
    p.add_argument("--ramp-in-flight", type=int, default=200)
    p.add_argument("--report", type=float, default=10.0, help="seconds between reports")
    a = p.parse_args(argv)
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("loopback only")
    return Options(**{k: v for k, v in vars(a).items()})


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main_async(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
