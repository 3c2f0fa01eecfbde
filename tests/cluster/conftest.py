"""Cluster fixtures: several `tidings serve` processes sharing one Redis.

``make_cluster(n)`` starts ``n`` nodes (through the ``make_server`` fixture of tests/conftest.py)
pointed at ``redis_backend`` with this test's unique ``redis_prefix`` and a short ``node_ttl``
so a killed node is noticed within seconds. The nodes start in parallel and are stopped after
the test by ``make_server``.

``redis_backend`` is parametrized: every test of the suite runs on the session ``redis_server``
and on the session ``redis_cluster`` (a real 3-master Redis Cluster, ``--redis-cluster``).
A test that owns its redis-server (``own_redis``, an outage test) runs on it alone.

tests/integration and tests/e2e are put on ``sys.path`` so the test modules can import
``pusher_helpers`` (the raw Pusher WebSocket client and REST signer) and the pusher-js
``Scenario`` runner of ``scenario`` (tests/e2e/scenario.py) whatever pytest import mode is in use.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
for folder in (TESTS / "integration", TESTS / "e2e"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from pusher_helpers import SocketOpener, open_sockets  # noqa: E402

from redis_server import RedisBus, RedisServer  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)

# Seconds without a heartbeat after which survivors declare a node dead (heartbeat every 1 s).
NODE_TTL = 3

ClusterFactory = Callable[..., list[Any]]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def print_logs_on_failure(request: pytest.FixtureRequest, nodes: list[Any]) -> None:
    """After a failed test, print the tail of every node's log (shown by pytest)."""
    report = getattr(request.node, "report_call", None)
    if report is None or not report.failed:
        return
    for i, node in enumerate(nodes, start=1):
        tail = "\n".join(node.logs().splitlines()[-60:])
        print(f"--- node {i} (port {node.port}) log tail ---\n{tail}")


BACKENDS = ["redis", "redis-cluster"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that owns a redis-server (``own_redis``: it stops or restarts it) runs on
    that one Redis alone; every other test runs on each of ``BACKENDS``."""
    if "redis_backend" in metafunc.fixturenames:
        owns = "own_redis" in metafunc.fixturenames
        metafunc.parametrize("redis_backend", ["redis"] if owns else BACKENDS, indirect=True)


@pytest.fixture
def redis_backend(request: pytest.FixtureRequest) -> str:
    """The URL nodes are given: the session redis-server's, or the Redis Cluster's
    (``redis+cluster://``, what ``--redis-cluster`` sets)."""
    if request.param == "redis-cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture
def bus(redis_backend: str, redis_prefix: str) -> Iterator[RedisBus]:
    """The nodes' pub/sub topics under this test's prefix, on this test's backend."""
    opened = RedisBus(redis_backend, redis_prefix)
    yield opened
    opened.close()


@pytest.fixture
def make_cluster(
    request: pytest.FixtureRequest,
    make_server: Callable[..., Any],
    redis_backend: str,
    redis_prefix: str,
) -> Iterator[ClusterFactory]:
    """Factory: ``make_cluster(n=3, **settings)`` → ``n`` ready ServerProcess nodes on one Redis.

    ``settings`` are extra top-level TOML settings; ``redis_url`` replaces the session Redis
    (for a test that owns its Redis and stops it).
    """

    def factory(n: int = 3, *, redis_url: str | None = None, **settings: Any) -> list[Any]:
        merged: dict[str, Any] = {
            "redis": redis_url if redis_url is not None else redis_backend,
            "redis_prefix": redis_prefix,
            "node_ttl": NODE_TTL,
            **settings,
        }
        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(make_server, **merged) for _ in range(n)]
            nodes = [f.result() for f in futures]
        started.extend(nodes)
        return nodes

    started: list[Any] = []
    yield factory
    print_logs_on_failure(request, started)


@pytest.fixture
async def open_socket() -> AsyncIterator[SocketOpener]:
    """Factory: ``await open_socket(node.ws_url)`` → a connected PusherSocket, closed after."""
    async with open_sockets() as opener:
        yield opener


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may stop and restart (an outage test)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.close()
