"""Shared fixtures: a real `tidings serve` process on a free port.

Every timeout in the suite is a multiple of ``TIMEOUT`` (here: in tests/server_process.py) so a
slow CI machine can scale them all at once with ``TIDINGS_TEST_TIMEOUT_SCALE``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # --import-mode=importlib does not add tests/ itself
    sys.path.insert(0, _TESTS_DIR)

from server_process import ServerProcess, free_port, write_config  # noqa: E402
from working_tree import untracked  # noqa: E402

# Servers started by tests stop at once: the pause for load balancers on SIGTERM
# (shutdown_ready_delay) is tested where a test sets it explicitly.
os.environ.setdefault("TIDINGS_SHUTDOWN_READY_DELAY", "0")

_UNTRACKED_AT_START: set[str] | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _UNTRACKED_AT_START
    _UNTRACKED_AT_START = untracked()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when it left files in the working tree (they belong under a tmp dir)."""
    if _UNTRACKED_AT_START is None:
        return
    left = sorted((untracked() or set()) - _UNTRACKED_AT_START)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the test run left files in the working tree: " + ", ".join(left)
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


APP_ID = "12345"
APP_KEY = "app-key"
APP_SECRET = "app-secret"


DEFAULT_APPS: list[dict[str, Any]] = [
    {
        "id": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "client_events": True,
        "subscription_count": True,
    },
    {"id": "23456", "key": "disabled-key", "secret": "disabled-secret", "enabled": False},
]


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start a server with the given settings and apps; stopped after the test."""
    started: list[ServerProcess] = []

    def factory(
        apps: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        **settings: Any,
    ) -> ServerProcess:
        d = tmp_path_factory.mktemp("tidings")
        config = write_config(
            d / "tidings.toml", settings, apps if apps is not None else DEFAULT_APPS
        )
        server = ServerProcess(free_port(), config, d / "server.log", env or {})
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with DEFAULT_APPS shared by a test module."""
    d = tmp_path_factory.mktemp("tidings-shared")
    config = write_config(d / "tidings.toml", {}, DEFAULT_APPS)
    srv = ServerProcess(free_port(), config, d / "server.log")
    srv.start()
    yield srv
    srv.stop()


# --- Redis: one real redis-server for the whole session; tests isolate themselves by prefix ---

from redis_server import RedisClusterServer, RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port, started on first use and stopped at session end.

    Shared by every test: never stop or restart it in a test (start your own RedisServer
    for outage tests); isolate keys and pub/sub channels with ``redis_prefix``.
    """
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    """A real 3-master Redis Cluster, started on first use and stopped at session end.

    Shared like ``redis_server``: isolate with ``redis_prefix``; a test that kills a
    master starts its own :class:`RedisClusterServer`.
    """
    cluster = RedisClusterServer(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
def redis_prefix() -> str:
    """A key and pub/sub channel prefix no other test uses."""
    return f"t{uuid4().hex[:12]}"


# --- PostgreSQL: one cluster per pytest process (per xdist worker); a fresh database per test ---

from postgres_server import PostgresServer  # noqa: E402


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster (initdb + pg_ctl) on a free port, for the whole session.

    Shared by every test of this process: never stop it in a test; take a database of your
    own with ``postgres_url`` (or ``postgres.create_database()``).
    """
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A libpq URL of an empty database made for this test, dropped after it.

    SQLAlchemy: ``postgres.sqlalchemy_url(name)``; Django: ``postgres.django_settings(name)``,
    with ``name = postgres_url.rsplit("/", 1)[1]``.
    """
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)
