"""Attacks on a node whose rows live in PostgreSQL: questions whose PostgreSQL answer is not DuckDB's over the
same rows, and a database that hangs under a question.

Each test builds the same rows in DuckDB (the oracle, running the plan's own node SQL) and in a fresh PostgreSQL
database on the shared server (or a private server for the fault), and runs the plan's PostgreSQL rendering
through the node's own backend (its temporary views, its read-only transaction, its ``search_path``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import psycopg
import pytest
from pg import SHARED_DSN, dsn_for, fresh_database, private_postgres
from psycopg import sql

from hpf.federation.catalog import Catalog
from hpf.federation.crypto.lookup_codec import FACT_COLUMNS
from hpf.federation.errors import FederationError
from hpf.federation.planner import plan_query
from hpf.federation.planner.dialects import plan_node_sql
from hpf.node.backends.postgres_backend import PostgresBackend
from hpf.node.config import PostgresDsn, PostgresTable
from hpf.node.lookup_index import FACTS_SQL, LookupIndex

ENV = "HPF_RED_PG_DSN"


def catalog(columns: dict[str, str]) -> Catalog:
    return Catalog.model_validate(
        {
            "federation": "t",
            "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
            "tables": {"t": {"columns": {c: {"type": t, "class": "public"} for c, t in columns.items()}}},
        }
    )


class Both:
    """The same rows in DuckDB and behind a PostgresBackend; ``answers`` runs one question in each."""

    def __init__(self, cat: Catalog, duck: duckdb.DuckDBPyConnection, node: PostgresBackend) -> None:
        self.catalog, self.duck, self.node = cat, duck, node

    def answers(self, question: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        plan = plan_query(question, self.catalog)
        want = sorted(self.duck.execute(plan.node_sql()).fetchall())
        got = sorted(tuple(r) for r in self.node.run(plan_node_sql(plan, self.catalog, "postgres")))
        return want, got


def answered_alike_or_failed(engines: Both, question: str) -> None:
    """The question is answered as DuckDB answers it, or fails as the region's (the masked failure mark): never
    another answer. A value PostgreSQL's type holds and the catalog's does not fails the question that reads it."""
    try:
        want, got = engines.answers(question)
    except FederationError as failed:
        assert failed.code == "NODE_EXECUTION_FAILED", failed
        return
    assert got == want


@contextlib.contextmanager
def both(
    monkeypatch: pytest.MonkeyPatch,
    columns: dict[str, str],
    pg_columns: dict[str, str],
    duck_values: Sequence[str],
    pg_values: Sequence[str] | None = None,
    *,
    icu_english: bool = False,
    setup: Sequence[str] = (),
    scans: int | None = None,
) -> Iterator[Both]:
    """Table ``t`` of ``columns`` (catalog types) in DuckDB and in PostgreSQL (``pg_columns``: its types there),
    rows given as SQL value lists (``pg_values`` where PostgreSQL spells the same value otherwise)."""
    with fresh_database(icu_english=icu_english) as dsn, duckdb.connect(":memory:") as duck:
        duck.execute(f"CREATE TABLE t ({', '.join(f'{c} {t}' for c, t in columns.items())})")
        for row in duck_values:
            duck.execute(f"INSERT INTO t VALUES ({row})")
        with psycopg.connect(dsn, autocommit=True) as pg:
            for statement in setup:
                pg.execute(statement.encode())
            cols = ", ".join(f"{sql.Identifier(c).as_string(pg)} {t}" for c, t in pg_columns.items())
            pg.execute(f"CREATE TABLE t ({cols})".encode())
            for row in pg_values if pg_values is not None else duck_values:
                pg.execute(f"INSERT INTO t VALUES ({row})".encode())
        monkeypatch.setenv(ENV, dsn)
        cat = catalog(columns)
        node = PostgresBackend(cat, {"t": PostgresTable(postgres=PostgresDsn(dsn_env=ENV), table="t")}, scans=scans)
        try:
            yield Both(cat, duck, node)
        finally:
            node.close()


# ------------------------------------------------------------------------------ silent wrong answers


def test_trim_removes_unicode_spaces_in_duckdb_but_not_in_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRIM is rendered as is: PostgreSQL's trim() removes U+0020 alone, DuckDB's every space separator (the
    lookup facts know this and pass them to btrim; a question's TRIM does not)."""
    rows = ["'\u00a0acme'", "'acme\u3000'", "'acme'", "'other'"]
    with both(monkeypatch, {"employer": "VARCHAR"}, {"employer": "text"}, rows) as engines:
        want, got = engines.answers("SELECT COUNT(*) FROM t WHERE TRIM(employer) = 'acme'")
        assert want == [(3,)]
        assert got == want


def test_greatest_and_least_led_by_null_compare_text_by_the_database_collation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """COLLATE "C" goes on the first operand only when it is known to be text: GREATEST(NULL, t, 'B') leaves
    every operand to the database's default collation (here ICU English, where 'a' < 'B')."""
    rows = ["'apple'", "'Banana'", "'Zed'", "'acme'"]
    with both(monkeypatch, {"employer": "VARCHAR"}, {"employer": "text"}, rows, icu_english=True) as engines:
        want, got = engines.answers("SELECT COUNT(*) FROM t WHERE GREATEST(NULL, employer, 'B') = employer")
        assert want == [(4,)]  # by code point every row is above 'B'
        assert got == want
        want, got = engines.answers("SELECT COUNT(*) FROM t WHERE LEAST(NULL, employer, 'B') = 'B'")
        assert got == want


def test_year_and_text_of_a_date_before_the_common_era(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same day, 15 March 44 BC: DuckDB counts years astronomically (year -43, written '0044-03-15 (BC)'),
    PostgreSQL's EXTRACT has no year 0 (-44) and TO_CHAR(YYYY) drops the era ('0044-03-15'): a question reading
    it must fail rather than answer otherwise."""
    duck_rows, pg_rows = ["DATE '0044-03-15 (BC)'", "DATE '2020-01-01'"], ["DATE '0044-03-15 BC'", "DATE '2020-01-01'"]
    with both(monkeypatch, {"day": "DATE"}, {"day": "date"}, duck_rows, pg_rows) as engines:
        assert engines.duck.execute("SELECT COUNT(*) FROM t WHERE YEAR(day) = -43").fetchall() == [(1,)]
        answered_alike_or_failed(engines, "SELECT COUNT(*) FROM t WHERE YEAR(day) = -43")
        answered_alike_or_failed(engines, "SELECT COUNT(*) FROM t WHERE CAST(day AS VARCHAR) = '0044-03-15'")


def test_a_column_with_a_nondeterministic_collation_passes_the_start_check_and_merges_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A text column under a case-insensitive ICU collation is 'text' to the start-up check, and the view's
    CAST(... AS text) keeps its collation: '=' and GROUP BY then treat 'active' and 'ACTIVE' as one value."""
    setup = ["CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"]
    rows = ["'active'", "'ACTIVE'", "'Active'", "'sealed'"]
    with both(monkeypatch, {"status": "VARCHAR"}, {"status": 'text COLLATE "ci"'}, rows, setup=setup) as engines:
        assert engines.node.check_sources() is None  # served, not refused as a type that does not fit
        want, got = engines.answers("SELECT COUNT(*) FROM t WHERE status = 'active'")
        assert want == [(1,)]
        assert got == want


def test_a_column_named_current_schema_is_read_as_the_function_by_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog allows a column named current_schema; the node SQL names it unquoted, which PostgreSQL reads as
    the function CURRENT_SCHEMA ('pg_catalog' under the node's search_path), DuckDB as the column."""
    rows = ["'main', 1", "'pg_catalog', 2", "'x', 3"]
    columns, pg_columns = {"current_schema": "VARCHAR", "x": "BIGINT"}, {"current_schema": "text", "x": "bigint"}
    with both(monkeypatch, columns, pg_columns, rows) as engines:
        want, got = engines.answers("SELECT COUNT(*), SUM(x) FROM t WHERE \"current_schema\" = 'pg_catalog'")
        assert want[0][0] == 1
        assert got == want


# ------------------------------------------------------------------------------ faults


@contextlib.contextmanager
def node_on_private_server(monkeypatch: pytest.MonkeyPatch, limit_s: float) -> Iterator[tuple[PostgresBackend, Any]]:
    """A node (one pooled connection) over a private server's table ``t``, after one question answered; yields
    it and a function that stops (SIGSTOP) the server processes serving the node's connections: hung, not down.
    They are continued after the test."""
    with private_postgres() as server, fresh_database(server.dsn()) as dsn:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("CREATE TABLE t (k text, x bigint)")
            admin.execute("INSERT INTO t SELECT 'a', g FROM generate_series(1, 100) g")
            monkeypatch.setenv(ENV, dsn)
            cat = catalog({"k": "VARCHAR", "x": "BIGINT"})
            table = PostgresTable(postgres=PostgresDsn(dsn_env=ENV), table="t")
            node = PostgresBackend(cat, {"t": table}, query_seconds=limit_s, scans=1)
            stopped: list[int] = []

            def hang() -> None:
                pids = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'hpf-node'")
                for (pid,) in pids.fetchall():
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
                assert stopped

            try:
                assert [tuple(r) for r in node.run(QUESTION)] == [(100,)]
                yield node, hang
            finally:
                for pid in stopped:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                node.close()


QUESTION = "SELECT COUNT(*) AS c0_0 FROM t"


def ended_within(call: Any, seconds: float) -> float | None:
    """Run ``call`` in a thread; how long it took, or None if it had not ended within ``seconds``."""
    done = threading.Event()

    def run() -> None:
        with contextlib.suppress(FederationError):
            call()
        done.set()

    began = time.monotonic()
    threading.Thread(target=run, daemon=True).start()
    return time.monotonic() - began if done.wait(seconds) else None


def test_a_database_that_hangs_mid_question_holds_the_question_past_the_node_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server process serving the node's connection stops answering (SIGSTOP: not down, hung). Its
    statement_timeout cannot fire and the node sets no client-side limit nor TCP keepalives, so the question
    should end, as a failure, within the node's own limit; it waits for as long as the database hangs."""
    limit_s = 2.0
    with node_on_private_server(monkeypatch, limit_s) as (node, hang):
        hang()
        took = ended_within(lambda: node.run(QUESTION), limit_s + 10.0)
        assert took is not None, f"the question still waits after {limit_s + 10.0:.0f} s (limit {limit_s} s)"


def test_a_database_that_hangs_keeps_the_health_probe_waiting_so_the_region_stays_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The health watch's probe (check_sources over a pooled connection) runs its catalog query on the hung
    connection with no time limit: it never returns, holds the probe lock every question's wait for a connection
    also takes, and health stays SERVING. It should find the database unusable within a few seconds."""
    with node_on_private_server(monkeypatch, 2.0) as (node, hang):
        hang()
        took = ended_within(node.check_sources, 15.0)
        assert took is not None, "the probe of a hung database still waits after 15 s"


LOOKUP_TABLES = {
    "accounts": {"person_id": "VARCHAR", "status": "VARCHAR", "balance_fen": "BIGINT"},
    "deposits": {"person_id": "VARCHAR", "amount_fen": "BIGINT"},
    "loans": {"person_id": "VARCHAR", "status": "VARCHAR", "outstanding_fen": "BIGINT"},
}
PERSON = "110101199001011234"
LOOKUP_ROWS = {
    "accounts": [f"'{PERSON}', 'active', 100"],
    "deposits": [f"'{PERSON}', 5"],
    "loans": [f"'{PERSON}', 'ACTIVE', 7", f"'{PERSON}', 'active', 3"],
}


def lookup_facts(monkeypatch: pytest.MonkeyPatch, dsn: str, status_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The facts about PERSON over LOOKUP_ROWS: (DuckDB's FACTS_SQL over them, a PostgresBackend's LookupIndex over
    the same rows in ``dsn``, the status columns of type ``status_type`` there)."""
    cat = Catalog.model_validate(
        {
            "federation": "t",
            "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
            "tables": {
                t: {"columns": {c: {"type": ty, "class": "public"} for c, ty in cols.items()}}
                for t, cols in LOOKUP_TABLES.items()
            },
        }
    )
    pg_types = {"VARCHAR": "text", "BIGINT": "bigint"}
    with duckdb.connect(":memory:") as duck, psycopg.connect(dsn, autocommit=True) as pg:
        for name, cols in LOOKUP_TABLES.items():
            duck.execute(f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in cols.items())})")
            pg_cols = [f"{c} {status_type if c == 'status' else pg_types[t]}" for c, t in cols.items()]
            pg.execute(f"CREATE TABLE {name} ({', '.join(pg_cols)})".encode())
            for row in LOOKUP_ROWS[name]:
                duck.execute(f"INSERT INTO {name} VALUES ({row})")
                pg.execute(f"INSERT INTO {name} VALUES ({row})".encode())
        names = [d[0] for d in duck.execute(FACTS_SQL).description]
        (want_row,) = duck.execute(FACTS_SQL).fetchall()
    monkeypatch.setenv(ENV, dsn)
    sources = {name: PostgresTable(postgres=PostgresDsn(dsn_env=ENV), table=name) for name in LOOKUP_TABLES}
    node = PostgresBackend(cat, sources)
    try:
        got = dict(zip(FACT_COLUMNS, LookupIndex(node, cat).facts([PERSON])[0].tolist(), strict=True))
    finally:
        node.close()
    return dict(zip(names, want_row, strict=True)), got


def test_lookup_facts_over_a_nondeterministic_collation_count_other_statuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lookup facts compare ``status = 'active'`` in the database: under a case-insensitive collation (which
    the start-up check lets through) a loan written 'ACTIVE' counts as an active loan there, not in DuckDB."""
    with fresh_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as pg:
            pg.execute("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
        want, got = lookup_facts(monkeypatch, dsn, "text COLLATE ci")
    assert want["active_loans"] == 1 and want["outstanding_fen"] == 3
    assert (got["active_loans"], got["outstanding_fen"]) == (want["active_loans"], want["outstanding_fen"])


@contextlib.contextmanager
def sql_ascii_database() -> Iterator[str]:
    """A fresh database in the legacy SQL_ASCII encoding (bytes, unchecked), as older centres' databases are."""
    name = f"hpf_red_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SHARED_DSN, autocommit=True) as admin:
        create = "CREATE DATABASE {} TEMPLATE template0 ENCODING SQL_ASCII LC_COLLATE 'C' LC_CTYPE 'C'"
        admin.execute(sql.SQL(create).format(sql.Identifier(name)))
    try:
        yield dsn_for(name)
    finally:
        with psycopg.connect(SHARED_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_sql_ascii_database_is_refused_as_lacking_columns_it_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a legacy SQL_ASCII database psycopg reads text as bytes: the start-up check reads the column names as
    b'employer' and refuses the table as having no column 'employer' (NODE_TABLE_SCHEMA), which it has. It should
    either serve it with DuckDB's answers (LENGTH counts bytes there: another answer over text beyond ASCII) or
    refuse the database's encoding by name, not send its operator after a column that is there."""
    with sql_ascii_database() as dsn, duckdb.connect(":memory:") as duck, psycopg.connect(dsn, autocommit=True) as pg:
        for con, statement in ((duck, "CREATE TABLE t (employer VARCHAR)"), (pg, "CREATE TABLE t (employer text)")):
            con.execute(statement)
        duck.execute("INSERT INTO t VALUES ('café'), ('cafe')")
        pg.execute("INSERT INTO t VALUES ('café'), ('cafe')".encode())
        monkeypatch.setenv(ENV, dsn)
        cat = catalog({"employer": "VARCHAR"})
        try:
            node = PostgresBackend(cat, {"t": PostgresTable(postgres=PostgresDsn(dsn_env=ENV), table="t")})
        except FederationError as refused:
            assert refused.code != "NODE_TABLE_SCHEMA", refused.message
            return
        try:
            plan = plan_query("SELECT COUNT(*) FROM t WHERE LENGTH(employer) = 4", cat)
            want = duck.execute(plan.node_sql()).fetchall()
            got = [tuple(r) for r in node.run(plan_node_sql(plan, cat, "postgres"))]
        finally:
            node.close()
    assert got == want


@pytest.mark.parametrize("name", ["user", "current_user", "localtime"])
def test_a_table_named_like_a_sql_value_function_is_read_as_that_function_by_postgres(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The catalog allows a table named ``user``; the node SQL writes ``FROM user`` unquoted, which PostgreSQL
    reads as the one-row function CURRENT_USER (and so for the other SQL value functions), DuckDB as the table
    (the node's temporary view of that name is never read)."""
    cat = Catalog.model_validate(
        {
            "federation": "t",
            "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
            "tables": {name: {"columns": {"x": {"type": "BIGINT", "class": "public"}}}},
        }
    )
    with fresh_database() as dsn, duckdb.connect(":memory:") as duck, psycopg.connect(dsn, autocommit=True) as pg:
        quoted = sql.Identifier(name).as_string(pg)
        for statement in (f"CREATE TABLE {quoted} (x BIGINT)", f"INSERT INTO {quoted} VALUES (1), (2), (3)"):
            duck.execute(statement)
            pg.execute(statement.encode())
        monkeypatch.setenv(ENV, dsn)
        node = PostgresBackend(cat, {name: PostgresTable(postgres=PostgresDsn(dsn_env=ENV), table=name)})
        try:
            plan = plan_query(f'SELECT COUNT(*) FROM "{name}"', cat)
            want = duck.execute(plan.node_sql()).fetchall()
            got = [tuple(r) for r in node.run(plan_node_sql(plan, cat, "postgres"))]
        finally:
            node.close()
        assert want == [(3,)]
        assert got == want


def test_a_tinyint_value_written_later_that_does_not_fit_is_served_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database smallint under a catalog TINYINT passes the start-up check while every value fits; the view casts
    it to smallint (PostgreSQL has no 1-byte integer), so a value written later beyond TINYINT's range is served
    as is, where a narrowed INTEGER or DECIMAL column's cast fails the question (and DuckDB holds no such row)."""
    with both(monkeypatch, {"x": "TINYINT"}, {"x": "smallint"}, ["1"]) as engines:
        cat = engines.catalog
        question = plan_node_sql(plan_query("SELECT SUM(x) FROM t", cat), cat, "postgres")
        assert engines.node.run(question)
        with psycopg.connect(os.environ[ENV], autocommit=True) as pg:
            pg.execute("INSERT INTO t VALUES (200)")  # fits the database's type, not the catalog's
        with pytest.raises(FederationError) as failed:
            engines.node.run(question)
        assert failed.value.code == "NODE_EXECUTION_FAILED"


def test_a_late_cancel_of_an_abandoned_question_stops_the_next_question_on_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The coordinator abandons a question just as it ends. Its cancel (a connection of its own to the server,
    here made slow to open, as to a distant server) was decided while the question ran, but reaches the server
    after the connection went back to the pool and a second question began on it: that one is cancelled, and
    counted as a question past this node's limit."""
    original = psycopg.Connection.cancel_safe

    def slow_cancel(self: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> None:
        time.sleep(1.0)
        original(self, *args, **kwargs)

    # one pooled connection, so the second question runs on the first one's
    with both(monkeypatch, {"x": "BIGINT"}, {"x": "bigint"}, ["1", "2"], scans=1) as engines:
        node = engines.node
        monkeypatch.setattr(psycopg.Connection, "cancel_safe", slow_cancel)
        cancels: list[Any] = []
        first = threading.Thread(
            target=lambda: node.run("SELECT COUNT(*) FROM t, pg_sleep(0.5)", on_abandon=cancels.append), daemon=True
        )
        first.start()
        deadline = time.monotonic() + 10.0
        while not cancels and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        abandon = threading.Thread(target=cancels[0], daemon=True)
        abandon.start()  # the coordinator gives the first question up while it runs
        first.join(10.0)
        assert not first.is_alive()
        second = node.run("SELECT COUNT(*) FROM t, pg_sleep(2)")  # asked by someone else, on the same connection
        abandon.join(10.0)
        assert [tuple(r) for r in second] == [(2,)]
        assert node.limit_hits == 0


def test_the_text_and_year_of_an_infinite_date(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both engines hold the date 'infinity'. DuckDB writes it 'infinity' and gives it no year (NULL); the
    rendering's TO_CHAR gives NULL (the row drops out of a comparison) and EXTRACT fails: a question reading it
    must fail rather than answer otherwise."""
    rows = ["'infinity'::DATE", "DATE '2020-01-01'"]
    with both(monkeypatch, {"day": "DATE"}, {"day": "date"}, rows) as engines:
        assert engines.duck.execute("SELECT COUNT(*) FROM t WHERE CAST(day AS VARCHAR) = 'infinity'").fetchall() == [
            (1,)
        ]
        answered_alike_or_failed(engines, "SELECT COUNT(*) FROM t WHERE CAST(day AS VARCHAR) = 'infinity'")
        answered_alike_or_failed(engines, "SELECT COUNT(*) FROM t WHERE YEAR(day) IS NULL")
        # a question that does not read the day is answered
        want, got = engines.answers("SELECT COUNT(*) FROM t")
        assert got == want == [(2,)]


def test_a_nan_in_a_decimal_column_is_served_as_a_value_above_every_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL's numeric(12,2) holds 'NaN', which no DECIMAL(12,2) can (DuckDB has none): the start-up check
    passes it, and a question counts it above any bound instead of refusing the table or failing."""
    with both(monkeypatch, {"balance": "DECIMAL(12,2)"}, {"balance": "numeric(12,2)"}, ["1.00"]) as engines:
        with psycopg.connect(os.environ[ENV], autocommit=True) as pg:
            pg.execute("INSERT INTO t VALUES ('NaN')")
        refused = engines.node.check_sources()
        question = plan_node_sql(
            plan_query("SELECT COUNT(*) FROM t WHERE balance > 1000", engines.catalog), engines.catalog, "postgres"
        )
        if refused is None:
            with pytest.raises(FederationError):
                engines.node.run(question)


def reopened_with(engines: Both, setting: str) -> None:
    """``setting`` made the database's default (ALTER DATABASE ... SET), and the node started again after it."""
    dbname = psycopg.conninfo.conninfo_to_dict(os.environ[ENV])["dbname"]
    with psycopg.connect(os.environ[ENV], autocommit=True) as pg:
        pg.execute(sql.SQL("ALTER DATABASE {} SET " + setting).format(sql.Identifier(str(dbname))))
    engines.node.close()
    table = PostgresTable(postgres=PostgresDsn(dsn_env=ENV), table="t")
    engines.node = PostgresBackend(engines.catalog, {"t": table})


def test_sql_injection_through_a_backslash_literal_under_nonstandard_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database whose default is standard_conforming_strings = off (a legacy setting some centres keep) reads a
    backslash before a quote as an escape. The question's literal 'x\\' then swallows the next quote, and text
    the planner took for a string literal runs as SQL: here a call of pg_backend_pid() no allow-list admits,
    turning a filter that matches no row into one that matches every row."""
    rows = ["'acme'", "'other'"]
    with both(monkeypatch, {"employer": "VARCHAR"}, {"employer": "text"}, rows) as engines:
        reopened_with(engines, "standard_conforming_strings = off")
        injected = "SELECT COUNT(*) FROM t WHERE employer = 'x\\' OR employer = ' OR pg_backend_pid() > 0 --'"
        want, got = engines.answers(injected)
        assert want == [(0,)]
        assert got == want


@pytest.mark.parametrize(
    ("setting", "columns", "pg_columns", "rows", "question"),
    [
        (
            "standard_conforming_strings = off",
            {"employer": "VARCHAR"},
            {"employer": "text"},
            ["'a\\b'", "'ab'"],
            "SELECT COUNT(*) FROM t WHERE employer = 'a\\b'",
        ),
        (
            "client_encoding = 'LATIN1'",
            {"employer": "VARCHAR"},
            {"employer": "text"},
            ["'café'", "'cafe'"],
            "SELECT COUNT(*) FROM t WHERE employer = 'café'",
        ),
        (
            "transform_null_equals = on",
            {"employer": "VARCHAR"},
            {"employer": "text"},
            ["NULL", "'acme'"],
            "SELECT COUNT(*) FROM t WHERE employer = NULL",
        ),
    ],
)
def test_a_database_setting_the_node_does_not_pin_changes_the_answer(
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    columns: dict[str, str],
    pg_columns: dict[str, str],
    rows: list[str],
    question: str,
) -> None:
    """The node pins search_path, statement_timeout and work_mem for its transaction, not the session settings a
    database (ALTER DATABASE ... SET) or role may carry that change how its SQL is read or its values written:
    backslashes in literals, the client encoding of the bytes it sends, ``= NULL`` read as ``IS NULL``."""
    with both(monkeypatch, columns, pg_columns, rows) as engines:
        reopened_with(engines, setting)
        want, got = engines.answers(question)
        assert got == want
