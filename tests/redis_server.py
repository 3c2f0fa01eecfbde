"""A real ``redis-server`` child process on a free 127.0.0.1 port, for broker tests.

Not a conftest: ``tests/conftest.py`` puts this directory on ``sys.path`` and builds its
session-scoped ``redis_server`` fixture from :class:`RedisServer`. A test that kills or
restarts Redis (an outage test) should start its own ``RedisServer`` rather than take the
shared one down under other tests.

Nothing is persisted (``--save "" --appendonly no``): a restart starts empty, as a
replacement Redis would after a crash.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServerError(RuntimeError):
    """redis-server is missing, exited early or never answered PING."""


class RedisServer:
    """One ``redis-server`` process; ``restart()`` brings it back on the same port."""

    def __init__(
        self, directory: Path | None = None, port: int | None = None, *, cluster: bool = False
    ) -> None:
        self.cluster = cluster
        self._own_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="tidings-redis-")) if directory is None else directory
        )
        self.port = port if port is not None else free_port()
        self.log_path = self.directory / "redis-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start redis-server and return once it answers PING."""
        if self.running:
            raise RedisServerError(f"redis-server already running on port {self.port}")
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisServerError(
                "redis-server is not on PATH: the broker tests need a real Redis 7. "
                "Install it with `apt-get install -y redis-server` (`make test` does this)."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    executable,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.directory),
                    *self._cluster_options(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        self._wait_for_ping()

    def _cluster_options(self) -> list[str]:
        """A cluster node forgets its peers on restart (its nodes.conf is per process) and
        notices a dead master within a second, so a replica takes over fast in tests."""
        if not self.cluster:
            return []
        nodes_conf = self.directory / f"nodes-{self.port}.conf"
        return [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(nodes_conf),
            "--cluster-node-timeout",
            "1000",
            # Else the bus listens on port + 10000, which may be taken (or above 65535).
            "--cluster-port",
            str(free_port()),
        ]

    def _wait_for_ping(self) -> None:
        deadline = time.monotonic() + 4 * TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with {self.proc.returncode} on port {self.port}:\n"
                    f"{self.logs()}"
                )
            client = redis.Redis(
                host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5
            )
            try:
                if client.ping():
                    return
            except redis.RedisError as exc:  # still loading or not listening yet
                last_error = exc
            finally:
                client.close()
            time.sleep(0.05)
        self.kill()
        raise RedisServerError(
            f"redis-server on port {self.port} did not answer PING within {4 * TIMEOUT} s "
            f"({last_error!r}):\n{self.logs()}"
        )

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not exit; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=2 * TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=TIMEOUT)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: Redis disappears without closing its connections cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)

    def restart(self) -> None:
        """Stop, then start again on the same port (with empty data)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and remove the directory if this object created it."""
        self.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisClusterServer:
    """A real Redis Cluster: ``masters`` redis-servers with ``--cluster-enabled yes`` on free
    ports (plus ``replicas`` replicas of each), joined with ``redis-cli --cluster create``.

    ``url`` names one master; a cluster client discovers the rest (``CLUSTER SLOTS``).
    ``kill_master(i)`` SIGKILLs one master so a test can watch its replica take over.
    """

    def __init__(self, directory: Path | None = None, masters: int = 3, replicas: int = 0) -> None:
        self._own_directory = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="tidings-cluster-")) if directory is None else directory
        )
        self.servers = [
            RedisServer(self.directory / f"n{i}", cluster=True)
            for i in range(masters * (1 + replicas))
        ]
        self.masters = masters
        self.replicas = replicas

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    def start(self) -> None:
        for server in self.servers:
            server.start()
        executable = shutil.which("redis-cli")
        if executable is None:
            raise RedisServerError("redis-cli is not on PATH (apt-get install redis-tools)")
        nodes = [f"127.0.0.1:{s.port}" for s in self.servers]
        created = subprocess.run(
            [executable, "--cluster", "create", *nodes]
            + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True,
            timeout=4 * TIMEOUT,
        )
        if created.returncode != 0:
            self.close()
            raise RedisServerError(f"redis-cli --cluster create failed:\n{created.stdout!r}")
        self._wait_for_state_ok()

    def _wait_for_state_ok(self) -> None:
        """Every node agrees the cluster is up (all slots served, replicas attached)."""
        deadline = time.monotonic() + 4 * TIMEOUT
        while time.monotonic() < deadline:
            if all(self.cluster_info(s).get("cluster_state") == "ok" for s in self.live()) and all(
                len(shard) >= 3 + self.replicas for shard in self.slots()
            ):
                return
            time.sleep(0.1)
        raise RedisServerError("the Redis Cluster did not reach cluster_state:ok")

    def live(self) -> list[RedisServer]:
        return [s for s in self.servers if s.running]

    @staticmethod
    def cluster_info(server: RedisServer) -> dict[str, str]:
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=TIMEOUT)
        try:
            raw = client.execute_command("CLUSTER INFO")
        except redis.RedisError:
            return {}
        finally:
            client.close()
        if isinstance(raw, dict):  # redis-py parses the reply
            return {str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in raw.items()}
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def slots(self) -> list[Any]:
        """``CLUSTER SLOTS`` as a live node sees it: [start, end, master, *replicas]."""
        client = redis.Redis(host="127.0.0.1", port=self.live()[0].port, socket_timeout=TIMEOUT)
        try:
            return list(client.execute_command("CLUSTER SLOTS"))
        except redis.RedisError:
            return []
        finally:
            client.close()

    def master_of(self, key: str | bytes) -> RedisServer | None:
        """The server that serves ``key``'s slot now (None while no one does)."""
        client = redis.Redis(host="127.0.0.1", port=self.live()[0].port, socket_timeout=TIMEOUT)
        try:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
        finally:
            client.close()
        for start, end, master, *_ in self.slots():
            if start <= slot <= end:
                port = int(master[1])
                return next(s for s in self.servers if s.port == port)
        return None

    def close(self) -> None:
        for server in self.servers:
            server.close()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisClusterServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisBus:
    """The nodes' Redis pub/sub as a stranger reaches it: the topics nodes listen on
    (``brokers/redis/cluster.py``), publishing on them and listening to one, with plain
    pub/sub on one Redis and sharded pub/sub on a Redis Cluster, as the nodes do."""

    def __init__(self, url: str, prefix: str) -> None:
        self.sharded = url.startswith("redis+cluster://")
        self.prefix = prefix
        self._client: Any = (
            redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://", 1))
            if self.sharded
            else redis.Redis.from_url(url)
        )

    def topic(self, channel: str, app_id: str = "12345") -> bytes:
        return f"{self.prefix}#{{{app_id}#{channel}}}".encode()

    @property
    def control(self) -> bytes:
        return f"{self.prefix}#{{control}}".encode()

    def node(self, node_id: str) -> bytes:
        return f"{self.prefix}#node#{{{node_id}}}".encode()

    def publish(self, topic: bytes, data: bytes) -> int:
        """Publish; the number of subscribers that got it."""
        if self.sharded:
            return int(self._client.spublish(topic, data))
        return int(self._client.publish(topic, data))

    def publish_many(self, topic: bytes, many: list[bytes]) -> None:
        """Publish each of ``many`` on ``topic`` in one pipeline: one write to Redis, so
        Redis writes them to a subscriber together too."""
        with self._client.pipeline(transaction=False) as pipe:
            for data in many:
                if self.sharded:
                    pipe.spublish(topic, data)
                else:
                    pipe.publish(topic, data)
            pipe.execute()

    def listen(self, topic: bytes) -> Any:
        """A pub/sub connection subscribed to ``topic`` (read with :meth:`next_message`)."""
        pubsub = self._client.pubsub()
        if self.sharded:
            pubsub.ssubscribe(topic)
        else:
            pubsub.subscribe(topic)
        return pubsub

    def next_message(self, pubsub: Any, timeout: float) -> bytes | None:
        """The data of the next message on ``pubsub`` within ``timeout``, or None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.sharded:
                message = pubsub.get_sharded_message(timeout=min(left, 0.1))
            else:
                message = pubsub.get_message(timeout=left)
            if message is not None and message["type"] in ("message", "smessage"):
                return bytes(message["data"])
        return None

    def close(self) -> None:
        self._client.close()
