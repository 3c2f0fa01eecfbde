"""The PostgreSQL fixture itself: a real server, one empty database per test, isolated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from postgres_server import (
    OWNER_FILE,
    PREFIX,
    TIMEOUT,
    UNOWNED_GRACE,
    PostgresServer,
    sweep_stale_clusters,
)


def test_connect_create_table_and_query(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE todo (id serial PRIMARY KEY, title text NOT NULL)")
        conn.execute("INSERT INTO todo (title) VALUES (%s), (%s)", ("a", "b"))
        conn.commit()
        rows = conn.execute("SELECT id, title FROM todo ORDER BY id").fetchall()
    assert rows == [(1, "a"), (2, "b")]
    with psycopg.connect(postgres_url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit', 'full_page_writes', 'listen_addresses')"
            ).fetchall()
        )
    assert version is not None and int(version[0]) >= 130000  # DROP DATABASE ... WITH (FORCE)
    assert settings == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "listen_addresses": "127.0.0.1",
    }


def test_two_databases_are_isolated(postgres: PostgresServer) -> None:
    first, second = postgres.create_database(), postgres.create_database()
    try:
        assert first != second
        with psycopg.connect(postgres.url(first)) as conn:
            conn.execute("CREATE TABLE item (id int PRIMARY KEY)")
            conn.execute("INSERT INTO item VALUES (1)")
            conn.commit()
        with psycopg.connect(postgres.url(second)) as conn:
            exists = conn.execute("SELECT to_regclass('public.item')").fetchone()
        assert exists == (None,)
    finally:
        postgres.drop_database(first)
        postgres.drop_database(second)
    with psycopg.connect(postgres.url()) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname IN (%s, %s)", (first, second)
        ).fetchone()
    assert left == (0,)


def test_each_test_gets_an_empty_database(postgres_url: str) -> None:
    # The first test created `todo` in its own database; this one must not see it.
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,)


def test_a_second_cluster_starts_and_is_removed_on_close() -> None:
    # What an outage test would do: its own cluster, not the shared one.
    with PostgresServer() as server:
        directory = server.directory
        assert server.port != 0
        with psycopg.connect(server.url(), autocommit=True) as conn:
            who = conn.execute("SELECT current_user").fetchone()
        assert who == ("postgres",)
        if os.geteuid() == 0:  # initdb refused root: the files belong to the unprivileged user
            assert (directory / "data").stat().st_uid != 0
    assert not Path(directory).exists()
    with PostgresServer() as again:  # and nothing of the first is in the way
        with psycopg.connect(again.url(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


# -- what a SIGKILLed test process leaves behind ------------------------------------------

TESTS = Path(__file__).resolve().parents[1]
UIDS = {os.geteuid()}


@pytest.fixture
def dead_process() -> tuple[int, float]:
    """The pid and start time of a process that has exited (started and killed here)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = psutil.Process(child.pid).create_time()
    child.kill()
    child.wait()
    return child.pid, started


def cluster_dir(tmp: Path, name: str, owner: tuple[int, float] | None) -> Path:
    directory = tmp / f"{PREFIX}{name}"
    (directory / "data").mkdir(parents=True)
    if owner is not None:
        (directory / OWNER_FILE).write_text(f"{owner[0]} {owner[1]!r}\n")
    return directory


def test_the_sweep_removes_only_clusters_whose_owner_and_postmaster_are_gone(
    tmp_path: Path, dead_process: tuple[int, float]
) -> None:
    me = psutil.Process()
    alive = (me.pid, me.create_time())
    dead = {
        "dead-owner": cluster_dir(tmp_path, "dead-owner", dead_process),
        # Its owner's pid now runs another process (started later): the owner is gone.
        "recycled-owner": cluster_dir(tmp_path, "recycled-owner", (me.pid, alive[1] - 100)),
        # postmaster.pid names a live process that is no postgres: a recycled pid.
        "recycled-postmaster": cluster_dir(tmp_path, "recycled-postmaster", dead_process),
        "old-unowned": cluster_dir(tmp_path, "old-unowned", None),
    }
    (dead["recycled-postmaster"] / "data" / "postmaster.pid").write_text(f"{me.pid}\n/x\n")
    long_ago = time.time() - 2 * UNOWNED_GRACE
    os.utime(dead["old-unowned"], (long_ago, long_ago))
    kept = {
        "live-owner": cluster_dir(tmp_path, "live-owner", alive),
        "fresh-unowned": cluster_dir(tmp_path, "fresh-unowned", None),  # maybe being made
        "garbled-postmaster": cluster_dir(tmp_path, "garbled-postmaster", dead_process),
        "other-prefix": tmp_path / "tidings-other",
    }
    (kept["garbled-postmaster"] / "data" / "postmaster.pid").write_text("")
    kept["other-prefix"].mkdir()
    target = cluster_dir(tmp_path, "target", dead_process)
    link = tmp_path / f"{PREFIX}link"
    link.symlink_to(target.rename(tmp_path / "elsewhere"), target_is_directory=True)
    kept["link"] = link

    removed = sweep_stale_clusters(UIDS, tmp_path)

    assert sorted(removed) == sorted(dead.values())
    assert not any(path.exists() for path in dead.values())
    assert all(path.exists() for path in kept.values())
    assert (tmp_path / "elsewhere" / OWNER_FILE).exists()


def test_the_sweep_leaves_directories_of_other_users(
    tmp_path: Path, dead_process: tuple[int, float]
) -> None:
    directory = cluster_dir(tmp_path, "theirs", dead_process)
    if os.geteuid() == 0:
        os.chown(directory, 54321, 54321)
        assert sweep_stale_clusters(UIDS, tmp_path) == []
    assert sweep_stale_clusters(UIDS - {directory.stat().st_uid}, tmp_path) == []
    assert directory.exists()


def test_a_killed_test_process_leaves_a_cluster_the_next_fixture_sweeps() -> None:
    # A real cluster made by a process that is then SIGKILLed, as a stuck xdist worker is.
    script = (
        "import time\n"
        "from postgres_server import PostgresServer\n"
        "server = PostgresServer()\n"
        "server.start()\n"
        "print(server.directory, flush=True)\n"
        "time.sleep(300)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert line, "the child did not start its cluster"
    directory = Path(line)
    uids = {directory.stat().st_uid, os.geteuid()}
    # Its postmaster outlived it: the cluster is left alone while it runs.
    assert directory not in sweep_stale_clusters(uids)
    assert (directory / "data" / "postmaster.pid").exists()
    postmaster = psutil.Process(int((directory / "data" / "postmaster.pid").read_text().split()[0]))
    postmaster.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
    postmaster.wait(timeout=6 * TIMEOUT)
    assert directory in sweep_stale_clusters(uids)
    assert not directory.exists()
