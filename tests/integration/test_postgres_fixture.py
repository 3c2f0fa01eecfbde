"""The PostgreSQL fixture itself: a real server, one empty database per test, isolated."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from postgres_server import PostgresServer


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
