"""A node's tables in PostgreSQL: answers equal DuckDB's over the same rows, exactly; types checked at start.

The oracle is DuckDB over the same rows loaded into an in-memory table with the catalog's types, never the
backend under test. Each test gets a database of its own on the shared server (tests/pg.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from pg import fresh_database, load_table

from hpf.federation.catalog import Catalog
from hpf.federation.config_files import parse_model
from hpf.federation.errors import ConfigError, DataError, UnavailableError
from hpf.node.backends.postgres_backend import PostgresBackend
from hpf.node.config import NodeConfig, PostgresDsn, PostgresTable

COLUMNS = {"city": "VARCHAR", "month": "DATE", "amount_fen": "BIGINT", "balance": "DECIMAL(12,2)", "n": "INTEGER"}
PG_COLUMNS = {"city": "text", "month": "date", "amount_fen": "bigint", "balance": "numeric(12,2)", "n": "integer"}


def catalog(columns: dict[str, str]) -> Catalog:
    return Catalog.model_validate(
        {
            "federation": "t",
            "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
            "tables": {"deposits": {"columns": {c: {"type": t} for c, t in columns.items()}}},
        }
    )


def rows(n: int, seed: int = 7) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    return [
        (
            rng.choice(["310000", "330100", "320100"]),
            dt.date(2020 + rng.randrange(3), rng.randrange(1, 13), 1),
            rng.randrange(-(2**40), 2**40),
            Decimal(rng.randrange(-(10**11), 10**11)).scaleb(-2),
            rng.randrange(-(2**31), 2**31),
        )
        for _ in range(n)
    ]


def oracle(columns: dict[str, str], data: Sequence[Sequence[Any]], sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(":memory:")
    try:
        con.execute("CREATE TABLE deposits (" + ", ".join(f'"{c}" {t}' for c, t in columns.items()) + ")")
        con.executemany(f"INSERT INTO deposits VALUES ({', '.join('?' for _ in columns)})", [tuple(r) for r in data])
        return con.execute(sql).fetchall()
    finally:
        con.close()


def source(env: str = "HPF_TEST_PG_DSN", table: str = "deposits") -> PostgresTable:
    return PostgresTable(postgres=PostgresDsn(dsn_env=env), table=table)


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with fresh_database() as dsn:
        monkeypatch.setenv("HPF_TEST_PG_DSN", dsn)
        yield dsn


def open_backend(columns: dict[str, str] = COLUMNS, **kwargs: Any) -> PostgresBackend:
    return PostgresBackend(catalog(columns), {"deposits": source()}, **kwargs)


def test_grouped_sums_equal_duckdb_over_the_same_rows_exactly(database: str) -> None:
    data = rows(3_000)
    load_table(database, "deposits", PG_COLUMNS, data)
    backend = open_backend()
    try:
        pg_sql = (
            "SELECT city, month, COUNT(*), SUM(amount_fen), SUM(balance), SUM(n), COUNT(balance) FROM deposits "
            "WHERE amount_fen > 0 GROUP BY city, month ORDER BY city, month"
        )
        got = backend.run(pg_sql)
        expected = oracle(COLUMNS, data, pg_sql.replace("SUM(n)", "SUM(n)::HUGEINT"))
        assert len(got) == len(expected) > 10
        assert [tuple(r) for r in got] == expected
        for row, duck in zip(got, expected, strict=True):  # exact on the way, as DuckDB's values: never a float
            assert [type(v) for v in row] == [type(v) for v in duck]
            assert isinstance(row[1], dt.date) and isinstance(row[2], int) and isinstance(row[3], int)
            assert isinstance(row[4], Decimal) and row[4].as_tuple().exponent == -2
    finally:
        backend.close()


def test_a_question_runs_read_only_and_sees_the_catalog_types(database: str) -> None:
    load_table(database, "deposits", {**PG_COLUMNS, "n": "smallint"}, [("310000", dt.date(2020, 1, 1), 5, 1, 2)])
    backend = open_backend(memory_limit="64MiB", query_seconds=2.5)
    try:
        settings = "SELECT current_setting('transaction_read_only'), current_setting('statement_timeout'), "
        settings += "current_setting('work_mem'), current_setting('search_path')"
        assert backend.run(settings) == [("on", "2500ms", "64MB", "pg_catalog")]  # the node's limits, set per question
        # the view casts to the catalog's types: the smallint column is an INTEGER to the plan
        assert backend.run("SELECT pg_typeof(n)::text, pg_typeof(balance)::text FROM deposits") == [
            ("integer", "numeric")
        ]
        with pytest.raises(DataError) as refused:  # a read-only transaction: nothing is written
            backend.run("CREATE TABLE public.x AS SELECT 1")
        assert refused.value.code == "NODE_EXECUTION_FAILED"
        with psycopg.connect(database) as conn:
            assert conn.execute("SELECT to_regclass('public.x')").fetchone() == (None,)
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("pg_type", "catalog_type", "values", "fits"),
    [
        ("integer", "BIGINT", [1, -(2**31)], True),  # a lossless widening passes unread
        ("bigint", "INTEGER", [1, 2**31 - 1], True),  # a narrowing whose values all fit passes
        ("bigint", "INTEGER", [1, 2**31], False),  # ... one value out of range refuses the table
        ("numeric(15,2)", "DECIMAL(12,2)", [Decimal("9999999999.99")], True),
        ("numeric(15,2)", "DECIMAL(12,2)", [Decimal("10000000000.00")], False),
        ("numeric(15,2)", "INTEGER", [1], False),  # digits after the point would be lost
        ("numeric", "DECIMAL(38,10)", [1], False),  # no scale: any value may come
        ("double precision", "DECIMAL(12,2)", [1.5], False),
        ("timestamp", "DATE", [dt.datetime(2020, 1, 1)], False),
        ("character(6)", "VARCHAR", ["310000"], False),
    ],
)
def test_start_up_type_check(database: str, pg_type: str, catalog_type: str, values: list[Any], fits: bool) -> None:
    load_table(database, "deposits", {"x": pg_type}, [(v,) for v in values])
    if fits:
        backend = open_backend({"x": catalog_type})
        try:
            assert backend.run("SELECT COUNT(*), SUM(x) FROM deposits") == oracle(
                {"x": catalog_type}, [(v,) for v in values], "SELECT COUNT(*), SUM(x) FROM deposits"
            )
        finally:
            backend.close()
        return
    with pytest.raises(DataError) as refused:
        open_backend({"x": catalog_type})
    assert refused.value.code == "DATA_TYPE_MISMATCH"
    assert catalog_type in str(refused.value)
    assert all(str(v) not in str(refused.value) for v in values if len(str(v)) > 3)  # no value in the message


def test_a_missing_table_or_column_is_refused_at_start(database: str) -> None:
    with pytest.raises(DataError) as missing:
        open_backend()
    assert missing.value.code == "NODE_TABLE_UNREADABLE"
    load_table(database, "deposits", {"city": "text"}, [("310000",)])
    with pytest.raises(DataError) as lacking:
        open_backend()
    assert lacking.value.code == "NODE_TABLE_SCHEMA"


def test_a_view_is_served_like_a_table(database: str) -> None:
    data = rows(200)
    load_table(database, "raw_deposits", PG_COLUMNS, data)
    with psycopg.connect(database) as conn:
        conn.execute("CREATE SCHEMA hpf")
        conn.execute("CREATE VIEW hpf.deposits_v AS SELECT * FROM public.raw_deposits WHERE n > 0")
    tables = {
        "deposits": PostgresTable.model_validate(
            {"postgres": {"dsn_env": "HPF_TEST_PG_DSN"}, "schema": "hpf", "table": "deposits_v"}
        )
    }
    backend = PostgresBackend(catalog(COLUMNS), tables)
    try:
        sql = "SELECT city, COUNT(*), SUM(amount_fen) FROM deposits GROUP BY city ORDER BY city"
        assert backend.run(sql) == oracle(COLUMNS, [r for r in data if r[4] > 0], sql)
    finally:
        backend.close()


def test_a_statement_past_the_limit_is_cancelled_in_the_database(database: str) -> None:
    load_table(database, "deposits", PG_COLUMNS, rows(10))
    backend = open_backend(query_seconds=0.2)
    try:
        with pytest.raises(DataError) as stopped:
            backend.run("SELECT COUNT(*) FROM deposits, pg_sleep(5)")
        assert stopped.value.code == "NODE_EXECUTION_FAILED"
        assert backend.limit_hits == 1
        assert not _still_running(database, "pg_sleep(5)")
        # the next question runs as before on the same pool
        assert backend.run("SELECT COUNT(*) FROM deposits") == [(10,)]
    finally:
        backend.close()


def test_a_question_the_coordinator_abandons_is_cancelled(database: str) -> None:
    load_table(database, "deposits", PG_COLUMNS, rows(10))
    backend = open_backend(query_seconds=60.0)
    stops: list[Any] = []
    try:
        timer = threading.Timer(0.5, lambda: [stop() for stop in stops])
        timer.start()
        with pytest.raises(DataError) as stopped:
            backend.run("SELECT COUNT(*) FROM deposits, pg_sleep(30)", on_abandon=stops.append)
        timer.join()
        assert stopped.value.code == "NODE_EXECUTION_FAILED" and backend.limit_hits == 0
        assert not _still_running(database, "pg_sleep(30)")
    finally:
        backend.close()


def _still_running(dsn: str, text: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(20):
            found = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND position(%s in query) > 0 "
                "AND pid <> pg_backend_pid()",
                (text,),
            ).fetchone()
            if found == (0,):
                return False
            time.sleep(0.1)
    return True


def test_the_dsn_is_read_from_a_private_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pg.dsn"
    secret.write_text("host=127.0.0.1 password=hunter2-secret\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError) as unsafe:
        PostgresDsn(dsn_file=secret).read()
    assert unsafe.value.code == "NODE_DSN_UNSAFE" and "hunter2" not in str(unsafe.value)
    secret.chmod(0o600)
    assert PostgresDsn(dsn_file=secret).read() == "host=127.0.0.1 password=hunter2-secret"
    monkeypatch.delenv("HPF_TEST_UNSET_DSN", raising=False)
    with pytest.raises(ConfigError) as missing:
        PostgresDsn(dsn_env="HPF_TEST_UNSET_DSN").read()
    assert missing.value.code == "NODE_DSN_MISSING"
    with pytest.raises(ValueError):  # never inline, and exactly one place
        PostgresTable.model_validate({"postgres": {"dsn": "host=x password=y"}, "table": "t"})
    with pytest.raises(ValueError):
        PostgresDsn.model_validate({"dsn_env": "A", "dsn_file": str(secret)})


def test_a_malformed_dsn_leaks_no_part_of_itself(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HPF_TEST_PG_DSN", "host=127.0.0.1 port=5432 password=Sekr1t-zz-Q dbname")  # "dbname" lacks "="
    backend = open_backend()
    try:
        refused = backend.check_sources()
        assert refused is not None and refused.code == "NODE_DATABASE_UNREACHABLE"
        with pytest.raises(UnavailableError) as unwell:
            backend.run("SELECT 1")
        assert unwell.value.code == "NODE_UNWELL"
        time.sleep(0.5)  # the pool's background attempts
        for text in (str(refused), str(unwell.value), caplog.text):
            assert "Sekr1t" not in text and "dbname" not in text
    finally:
        backend.close()


def test_a_node_config_puts_every_table_on_one_engine(tmp_path: Path) -> None:
    (tmp_path / "pg.dsn").write_text("host=127.0.0.1\n")
    doc = {
        "node_id": "north",
        "catalog": "federation.yaml",
        "tables": {
            "deposits": {"postgres": {"dsn_file": "pg.dsn"}, "schema": "hpf", "table": "deposits_v"},
            "loans": {"postgres": {"dsn_env": "HPF_PG"}, "table": "loans"},
        },
        "insecure": True,
    }
    config = parse_model(tmp_path / "node.yaml", doc, NodeConfig)
    assert set(config.on_postgres) == {"deposits", "loans"} and config.on_files == {}
    deposits = config.on_postgres["deposits"]
    assert (deposits.db_schema, deposits.table) == ("hpf", "deposits_v")
    assert deposits.postgres.dsn_file == tmp_path / "pg.dsn"
    assert config.on_postgres["loans"].db_schema == "public"
    mixed = {**doc, "tables": {**doc["tables"], "loans": "data/loans.parquet"}}
    with pytest.raises(ConfigError) as refused:
        parse_model(tmp_path / "node.yaml", mixed, NodeConfig)
    assert refused.value.code == "CONFIG_INVALID" and "not a mix" in str(refused.value)


def test_a_value_written_later_that_does_not_fit_fails_the_question_never_rounds(database: str) -> None:
    load_table(database, "deposits", {"x": "bigint", "d": "numeric(15,2)"}, [(1, Decimal("1.25"))])
    backend = open_backend({"x": "INTEGER", "d": "DECIMAL(12,2)"})
    try:
        assert backend.run("SELECT SUM(x), SUM(d) FROM deposits") == [(1, Decimal("1.25"))]
        with psycopg.connect(database) as conn:  # fits the database's type, not the catalog's
            conn.execute("INSERT INTO deposits VALUES (%s, 0)", (2**31,))
        with pytest.raises(DataError) as failed:
            backend.run("SELECT SUM(x) FROM deposits")
        assert failed.value.code == "NODE_EXECUTION_FAILED" and str(2**31) not in str(failed.value)
        assert backend.check_sources() is None  # the question's failure (masked), not the region's
    finally:
        backend.close()


def test_names_in_mixed_case_are_matched_exactly(database: str) -> None:
    """The catalog's names are lower case; the database's are matched as they are spelled: a schema and a table
    in mixed case are served, a column spelled in other letters' case (quoted in PostgreSQL) is not the
    catalog's, and a table holding both reads the catalog's own."""
    data = [("310000", 5), ("330100", 7), ("310000", -2)]
    with psycopg.connect(database) as conn:
        conn.execute('CREATE SCHEMA "Hpf"')
        conn.execute('CREATE TABLE "Hpf"."Deposits" (city text, amount_fen bigint)')
        conn.execute('CREATE TABLE public.shouted ("CITY" text, "Amount_Fen" bigint)')
        conn.execute('CREATE TABLE public.twins ("City" text, city text, amount_fen bigint)')
        with conn.cursor() as cur:
            cur.executemany('INSERT INTO "Hpf"."Deposits" VALUES (%s, %s)', data)
            cur.executemany("INSERT INTO public.twins VALUES ('X', %s, %s)", data)
    columns = {"city": "VARCHAR", "amount_fen": "BIGINT"}
    sql = "SELECT city, COUNT(*), SUM(amount_fen) FROM deposits GROUP BY city ORDER BY city"

    def table(schema: str, name: str) -> dict[str, PostgresTable]:
        spec = {"postgres": {"dsn_env": "HPF_TEST_PG_DSN"}, "schema": schema, "table": name}
        return {"deposits": PostgresTable.model_validate(spec)}

    for schema, name in (("Hpf", "Deposits"), ("public", "twins")):
        backend = PostgresBackend(catalog(columns), table(schema, name))
        try:
            assert backend.run(sql) == oracle(columns, data, sql)
        finally:
            backend.close()
    with pytest.raises(DataError) as refused:
        PostgresBackend(catalog(columns), table("public", "shouted"))
    assert refused.value.code == "NODE_TABLE_SCHEMA" and "'city'" in str(refused.value)
    assert "matched exactly" in (refused.value.hint or "")
