"""A node's connection pool to PostgreSQL: ready before the first question, and again after the database is back.

A question whose time left is no more than the node's own time limit has no time to wait for a connection beyond
a short floor: a pool still making its first connection must not turn it into the failure mark. The oracle is
DuckDB over the same rows (test_postgres_backend.oracle), each test on a database of its own (tests/pg.py).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import duckdb
import psycopg
import pytest
from pg import SHARED_DSN, fresh_database, load_table
from psycopg import sql

from hpf.federation.catalog import Catalog
from hpf.federation.errors import UnavailableError
from hpf.node.backends import postgres_backend
from hpf.node.backends.postgres_backend import PostgresBackend
from hpf.node.config import PostgresDsn, PostgresTable

QUERY = "SELECT city, COUNT(*), SUM(amount_fen) FROM deposits GROUP BY city ORDER BY city"
CATALOG = Catalog.model_validate(
    {
        "federation": "t",
        "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
        "tables": {"deposits": {"columns": {"city": {"type": "VARCHAR"}, "amount_fen": {"type": "BIGINT"}}}},
    }
)


def rows(n: int, seed: int = 11) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(rng.choice(["310000", "330100", "320100"]), rng.randrange(-(2**40), 2**40)) for _ in range(n)]


def oracle(data: list[tuple[str, int]]) -> list[tuple[Any, ...]]:
    """DuckDB over the same rows, with the catalog's types."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("CREATE TABLE deposits (city VARCHAR, amount_fen BIGINT)")
        con.executemany("INSERT INTO deposits VALUES (?, ?)", data)
        return con.execute(QUERY).fetchall()
    finally:
        con.close()


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with fresh_database() as dsn:
        monkeypatch.setenv("HPF_TEST_PG_DSN", dsn)
        yield dsn


def open_backend(**kwargs: Any) -> PostgresBackend:
    table = PostgresTable(postgres=PostgresDsn(dsn_env="HPF_TEST_PG_DSN"), table="deposits")
    return PostgresBackend(CATALOG, {"deposits": table}, **kwargs)


def load(dsn: str, n: int) -> list[tuple[str, int]]:
    data = rows(n)
    load_table(dsn, "deposits", {"city": "text", "amount_fen": "bigint"}, data)
    return data


def allow_connections(dsn: str, allowed: bool) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(SHARED_DSN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(sql.Identifier(str(name)), sql.SQL(str(allowed)))
        )


def test_the_first_question_of_a_fresh_node_is_answered_when_its_wait_is_the_nodes_time_limit(database: str) -> None:
    data = load(database, 300)
    backend = open_backend(query_seconds=5.0)
    try:
        # the coordinator's wait is the node's own limit: no time is left over for the pool beyond its floor
        got = backend.run(QUERY, finish_by=time.monotonic() + 5.0)
        assert [tuple(r) for r in got] == oracle(data)
        assert backend.busy_refusals == 0
    finally:
        backend.close()


def test_the_first_question_after_the_database_is_back_is_answered(database: str) -> None:
    data = load(database, 300)
    allow_connections(database, False)
    backend = open_backend(query_seconds=5.0)
    try:
        with pytest.raises(UnavailableError) as unwell:
            backend.run(QUERY, finish_by=time.monotonic() + 5.0)
        assert unwell.value.code == "NODE_UNWELL"
        allow_connections(database, True)
        assert backend.check_sources() is None  # back: a new pool, its connection made before questions come
        got = backend.run(QUERY, finish_by=time.monotonic() + 5.0)
        assert [tuple(r) for r in got] == oracle(data)
        assert backend.busy_refusals == 0
    finally:
        allow_connections(database, True)
        backend.close()


def test_a_question_waits_a_short_floor_while_the_pool_grows(database: str) -> None:
    data = load(database, 300)
    backend = open_backend(query_seconds=5.0, scans=2)
    try:
        started, results = threading.Event(), []

        def slow() -> None:
            started.set()
            results.append(backend.run("SELECT COUNT(*) FROM deposits, pg_sleep(1)"))

        holder = threading.Thread(target=slow)
        holder.start()
        started.wait(5)
        time.sleep(0.2)  # the pool's one connection is taken: the next question needs the pool to grow
        got = backend.run(QUERY, finish_by=time.monotonic() + 5.0)
        holder.join(10)
        assert [tuple(r) for r in got] == oracle(data)
        assert results == [[(300,)]] and backend.busy_refusals == 0
    finally:
        backend.close()


def test_a_pool_that_cannot_make_its_first_connection_leaves_the_node_unwell_not_hanging(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(database, 10)
    monkeypatch.setattr(postgres_backend, "POOL_READY_S", 0.5)

    def broken(self: PostgresBackend, conn: psycopg.Connection[Any]) -> None:
        raise psycopg.OperationalError("the views cannot be made")

    monkeypatch.setattr(PostgresBackend, "_configure", broken)
    backend = open_backend(query_seconds=5.0)
    try:
        with pytest.raises(UnavailableError) as unwell:
            backend.run(QUERY, finish_by=time.monotonic() + 5.0)
        assert unwell.value.code == "NODE_UNWELL" and backend.busy_refusals == 0
    finally:
        backend.close()
