"""A node's database breaking under it, on a private PostgreSQL server the test starts and stops (tests/pg.py).

A database that is down, or refuses the node's credentials, makes the region unwell (NODE_UNWELL; health
NOT_SERVING) until it is back, which the node finds by itself; neither the connection string nor the
database's own words reach an error or a log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from grpc_health.v1 import health, health_pb2
from pg import PRIVATE_PASSWORD, PrivatePostgres, fresh_database, load_table, private_postgres

from hpf.federation.catalog import Catalog
from hpf.federation.crypto.lookup_codec import FACT_COLUMNS
from hpf.federation.errors import DataError, FederationError, UnavailableError
from hpf.node.backends.postgres_backend import PostgresBackend
from hpf.node.config import PostgresDsn, PostgresTable
from hpf.node.lookup_index import LookupIndex
from hpf.node.lookup_refresh import FactsRefresher
from hpf.node.source_watch import SourceWatch

CATALOG = Catalog.model_validate(
    {
        "federation": "t",
        "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
        "tables": {"t": {"columns": {"k": {"type": "VARCHAR"}, "x": {"type": "BIGINT"}}}},
    }
)
ROWS = [("a" if i % 3 else "b", i * 1_000_003) for i in range(500)]
SQL = "SELECT k, COUNT(*), SUM(x) FROM t GROUP BY k ORDER BY k"
EXPECTED = [  # DuckDB over the same rows: SELECT k, COUNT(*), SUM(x) ... (computed here in Python as a check of it)
    (k, sum(1 for r in ROWS if r[0] == k), sum(r[1] for r in ROWS if r[0] == k)) for k in ("a", "b")
]


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    with private_postgres() as pg:
        yield pg


@pytest.fixture
def dsn(server: PrivatePostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with fresh_database(server.dsn()) as db:
        load_table(db, "t", {"k": "text", "x": "bigint"}, ROWS)
        monkeypatch.setenv("HPF_FAULT_DSN", db)
        yield db


def backend(**kwargs: Any) -> PostgresBackend:
    return PostgresBackend(
        CATALOG, {"t": PostgresTable(postgres=PostgresDsn(dsn_env="HPF_FAULT_DSN"), table="t")}, **kwargs
    )


def status(servicer: health.HealthServicer) -> int:
    return int(servicer.Check(health_pb2.HealthCheckRequest(service="hpf.v1.Node"), None).status)


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "the condition did not come true in time"
        time.sleep(0.1)


def refusal(call: Callable[[], Any]) -> FederationError:
    with pytest.raises(FederationError) as info:
        call()
    return info.value


def test_a_database_stopped_mid_question_makes_the_region_unwell_until_it_is_back(
    server: PrivatePostgres, dsn: str
) -> None:
    node = backend(query_seconds=30.0)
    servicer = health.HealthServicer()
    watch = SourceWatch(node, servicer, "hpf.v1.Node", 0.2)
    try:
        assert [tuple(r) for r in node.run(SQL)] == EXPECTED
        assert status(servicer) == health_pb2.HealthCheckResponse.SERVING
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(node.run, "SELECT COUNT(*) FROM t, pg_sleep(20)")
            time.sleep(0.5)
            server.stop()
            unwell = refusal(running.result)
        assert isinstance(unwell, UnavailableError) and unwell.code == "NODE_UNWELL"
        assert status(servicer) == health_pb2.HealthCheckResponse.NOT_SERVING
        later = refusal(lambda: node.run(SQL))  # every question, until it is back
        assert later.code == "NODE_UNWELL"
        assert watch.refusal is not None and watch.refusal.code == "NODE_DATABASE_UNREACHABLE"
        server.start()
        wait_for(lambda: status(servicer) == health_pb2.HealthCheckResponse.SERVING)  # by itself: the watch's probe
        assert [tuple(r) for r in node.run(SQL)] == EXPECTED
    finally:
        watch.stop()
        node.close()


def test_a_database_down_before_a_question_refuses_it_as_the_regions(server: PrivatePostgres, dsn: str) -> None:
    node = backend(query_seconds=5.0)
    try:
        server.stop()
        assert refusal(lambda: node.run(SQL)).code == "NODE_UNWELL"
        assert node.check_sources() is not None
        server.start()
        assert node.check_sources() is None
        assert [tuple(r) for r in node.run(SQL)] == EXPECTED
    finally:
        node.close()


def test_refused_credentials_make_the_region_unwell_and_leak_nothing(
    server: PrivatePostgres, dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-pa55word-zq"
    monkeypatch.setenv("HPF_FAULT_DSN", dsn.replace(PRIVATE_PASSWORD, wrong))
    node = backend(query_seconds=5.0)
    try:
        refused = node.check_sources()
        assert refused is not None and refused.code == "NODE_DATABASE_UNREACHABLE"
        unwell = refusal(lambda: node.run(SQL))
        assert unwell.code == "NODE_UNWELL"
        time.sleep(1.0)  # the pool's own attempts run in the background: give them time to log, if they would
        said = " ".join([str(refused), str(unwell), refused.hint or "", unwell.hint or ""])
        logged = " ".join(r.getMessage() for r in caplog.records) + caplog.text
        for text in (said, logged):
            assert wrong not in text and PRIVATE_PASSWORD not in text
            assert "password" not in text.lower() and "authentication" not in text.lower()  # the server's words
            assert str(server.port) not in text  # nor any part of the connection string
        assert "SQLSTATE class" in logged
    finally:
        node.close()
    # the right credentials again: served
    monkeypatch.setenv("HPF_FAULT_DSN", dsn)
    node = backend()
    try:
        assert [tuple(r) for r in node.run(SQL)] == EXPECTED
    finally:
        node.close()


def test_a_database_that_never_answers_at_start_leaves_the_node_unwell(
    server: PrivatePostgres, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.stop()
    node = backend()
    try:
        assert refusal(lambda: node.run(SQL)).code == "NODE_UNWELL"
        assert PRIVATE_PASSWORD not in caplog.text and str(server.port) not in caplog.text
        server.start()
        assert node.check_sources() is None
        assert [tuple(r) for r in node.run(SQL)] == EXPECTED
    finally:
        node.close()


def test_a_statement_over_the_limit_is_a_masked_failure_and_the_region_stays_well(
    server: PrivatePostgres, dsn: str
) -> None:
    node = backend(query_seconds=0.3)
    try:
        failed = refusal(lambda: node.run("SELECT COUNT(*) FROM t, pg_sleep(10)"))
        assert isinstance(failed, DataError) and failed.code == "NODE_EXECUTION_FAILED"
        assert node.limit_hits == 1 and node.check_sources() is None
        assert [tuple(r) for r in node.run(SQL)] == EXPECTED
    finally:
        node.close()


def test_questions_at_once_share_the_pool(server: PrivatePostgres, dsn: str) -> None:
    node = backend(scans=2, query_seconds=10.0)
    try:
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(node.run(SQL))) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [[tuple(r) for r in rows] for rows in results] == [EXPECTED] * 6
    finally:
        node.close()


LOOKUP_CATALOG = Catalog.model_validate(
    {
        "federation": "t",
        "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
        "tables": {
            "accounts": {
                "columns": {c: {"type": t} for c, t in (("person_id", "VARCHAR"), ("status", "VARCHAR"))}
                | {"balance_fen": {"type": "BIGINT"}}
            },
            "deposits": {"columns": {"person_id": {"type": "VARCHAR"}, "amount_fen": {"type": "BIGINT"}}},
            "loans": {
                "columns": {"person_id": {"type": "VARCHAR"}, "status": {"type": "VARCHAR"}}
                | {"outstanding_fen": {"type": "BIGINT"}}
            },
        },
    }
)
PERSON = "11010119700101123X"


def test_lookup_facts_keep_through_a_database_outage_and_lookups_wait_for_it(
    server: PrivatePostgres, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A computation of the facts while the database is down fails by its code and keeps the facts in force;
    meanwhile a lookup is refused as the region's (NODE_UNWELL), and once the database is back it is answered
    again, from a fresh computation on request. No connection string or password reaches a log."""
    with fresh_database(server.dsn()) as db:
        accounts = {"person_id": "text", "status": "text", "balance_fen": "bigint"}
        load_table(db, "accounts", accounts, [(PERSON, "active", 500)])
        load_table(db, "deposits", {"person_id": "text", "amount_fen": "bigint"}, [(PERSON, 70), (PERSON, 30)])
        load_table(db, "loans", {"person_id": "text", "status": "text", "outstanding_fen": "bigint"}, [])
        monkeypatch.setenv("HPF_FAULT_DSN", db)
        source = PostgresDsn(dsn_env="HPF_FAULT_DSN")
        node = PostgresBackend(
            LOOKUP_CATALOG,
            {t: PostgresTable(postgres=source, table=t) for t in LOOKUP_CATALOG.tables},
            query_seconds=5.0,
        )
        index = LookupIndex(node, LOOKUP_CATALOG)
        refresher = FactsRefresher(index, tmp_path / "lookup-facts", None)
        try:
            assert index.refresh() == 1
            months = FACT_COLUMNS.index("contribution_months")
            assert index.facts([PERSON])[0][months] == 2
            server.stop()
            outcome = refresher.refresh()
            assert not outcome.ok and outcome.code == "NODE_UNWELL"
            assert refusal(lambda: index.facts([PERSON])).code == "NODE_UNWELL"
            server.start()
            assert node.check_sources() is None  # as the node's watch finds it back
            assert index.facts([PERSON])[0][months] == 2  # the facts before the outage
            with psycopg.connect(db, autocommit=True) as con:  # a change the facts do not follow by themselves
                con.execute("INSERT INTO deposits VALUES (%s, 5)", (PERSON,))
            assert index.facts([PERSON])[0][months] == 2
            assert refresher.refresh().ok
            assert index.facts([PERSON])[0][months] == 3
        finally:
            refresher.stop()
            node.close()
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert PRIVATE_PASSWORD not in said and "password" not in said and PERSON not in said
