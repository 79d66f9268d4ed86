"""The demo's synthetic data (hpf.demo.synth, one region) in DuckDB and in PostgreSQL: every example question's
node SQL, plain and over the DP row cap of its table, rendered for PostgreSQL returns DuckDB's rows exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
from pg import pg_connect
from sqlglot import exp

from hpf.demo.examples import EXAMPLES
from hpf.demo.synth import generate_node
from hpf.federation.catalog import Catalog
from hpf.federation.config_files import parse_model
from hpf.federation.hpf_schema import TABLE_NAMES, demo_catalog
from hpf.federation.planner import plan_query
from hpf.federation.planner.dialects import render_node_sql, unsupported
from hpf.federation.planner.pg_types import pg_type
from hpf.federation.privacy.dp_plan import capped_table_sql

CATALOG = parse_model("catalog.yaml", demo_catalog({"shanghai": "127.0.0.1:1"}), Catalog)


def column_types(table: str) -> dict[str, str]:
    return {name: column.type for name, column in CATALOG.tables[table].columns.items()}


@pytest.fixture(scope="module")
def engines(
    pg_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[duckdb.DuckDBPyConnection, psycopg.Connection]]:
    data = tmp_path_factory.mktemp("synth")
    generate_node(data, "shanghai", rows=2_000, seed=7)
    with duckdb.connect(":memory:") as duck, pg_connect(pg_database) as pg:
        pg.execute("CREATE SCHEMA synth")
        pg.execute("SET search_path TO synth")
        for table in TABLE_NAMES:
            types = column_types(table)
            select = ", ".join(f"CAST({n} AS {t}) AS {n}" for n, t in types.items())
            parquet = Path(data) / "shanghai" / f"{table}.parquet"
            duck.execute(f"CREATE TABLE {table} AS SELECT {select} FROM read_parquet('{parquet}')")
            pg_cols = ", ".join(
                f"{n} {pg_type(exp.DataType.build(t, dialect='duckdb'), unsupported).sql('postgres')}"
                for n, t in types.items()
            )
            pg.execute(f"CREATE TABLE {table} ({pg_cols})")
            rows = duck.execute(f"SELECT * FROM {table}").fetchall()
            with pg.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            assert pg.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (len(rows),)
        yield duck, pg


def typed(rows: list[tuple[object, ...]]) -> list[tuple[tuple[str, str], ...]]:
    return sorted(tuple((type(v).__name__, repr(v)) for v in row) for row in rows)


@pytest.mark.parametrize("capped", [False, True], ids=["plain", "dp-row-cap"])
@pytest.mark.parametrize("sql", sorted({e.sql for e in EXAMPLES}))
def test_example_questions_over_synthetic_rows(
    engines: tuple[duckdb.DuckDBPyConnection, psycopg.Connection], sql: str, capped: bool
) -> None:
    duck, pg = engines
    plan = plan_query(sql, CATALOG)
    source = f"({capped_table_sql(plan.table, CATALOG.tables[plan.table])}) AS {plan.table}" if capped else None
    node_sql = plan.node_sql(source)
    want = duck.execute(node_sql).fetchall()
    assert want and any(row[-1] for row in want)  # rows to compare, not an empty answer
    got = pg.execute(render_node_sql(node_sql, "postgres", column_types(plan.table))).fetchall()  # type: ignore[arg-type]
    assert typed(got) == typed(want)
