"""DECIMAL sums on a region in PostgreSQL: the same units as DuckDB's, whatever the decimals of each value.

PostgreSQL keeps each NUMERIC value's own number of decimals (``2`` and ``0.5`` under one CASE), and a node
reads a NUMERIC without a fraction as an integer, which it takes as a sum already in units of its scale; DuckDB
gives every value of a DECIMAL(p,s) expression s decimals. The oracle is DuckDB over the same rows: the node
query's rows and the slots a node encodes from them must be equal, and a federation with a region on
PostgreSQL must answer as DuckDB over every region's rows. DECIMAL(18,0) columns (NUMERIC without a fraction
either way) are among them.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import harness
import pytest
import yaml
from pg import fresh_database, load_table, pg_connect

from hpf.federation.catalog import Catalog
from hpf.federation.config_files import parse_model
from hpf.federation.crypto.slot_codec import encode_partials
from hpf.federation.planner import plan_query
from hpf.federation.planner.dialects import plan_node_sql

CITIES = ["310000", "330100", "320100"]
TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": CITIES}},
            "units": {"type": "DECIMAL(18,0)", "class": "public"},
            "balance": {"type": "DECIMAL(12,2)", "class": "public"},
        }
    }
}
DUCK_COLUMNS = {"city_code": "VARCHAR", "units": "DECIMAL(18,0)", "balance": "DECIMAL(12,2)"}
PG_COLUMNS = {"city_code": "text", "units": "numeric(18,0)", "balance": "numeric(12,2)"}
CATALOG = parse_model(
    "catalog.yaml",
    yaml.safe_load(
        yaml.safe_dump({"federation": "t", "nodes": [{"id": "n0", "address": "127.0.0.1:1"}], "tables": TABLES})
    ),
    Catalog,
)
QUERIES = [
    "SELECT city_code, COUNT(*), SUM(units) FROM deposits GROUP BY city_code",
    "SELECT city_code, AVG(units), VAR_POP(units), STDDEV_SAMP(units) FROM deposits GROUP BY city_code",
    # a value's decimals in PostgreSQL are its own: 2 here has none, where DuckDB's DECIMAL(2,1) gives 2.0
    "SELECT city_code, SUM(CASE WHEN city_code = '310000' THEN 2 ELSE 0.5 END) FROM deposits GROUP BY city_code",
    "SELECT city_code, SUM(COALESCE(units, 0.25)), SUM(units + 0.0) FROM deposits GROUP BY city_code",
    "SELECT city_code, SUM(CASE WHEN units > 0 THEN units ELSE balance END) FROM deposits GROUP BY city_code",
    "SELECT city_code, VAR_SAMP(CASE WHEN city_code = '330100' THEN units ELSE 1.5 END) FROM deposits GROUP BY 1",
    "SELECT SUM(units), SUM(balance), SUM(CASE WHEN balance > 0 THEN 7 ELSE 0.125 END) FROM deposits",
]


def rows(seed: int, n: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    out: list[tuple[Any, ...]] = []
    for i in range(n):
        units = None if i % 9 == 0 else Decimal(rng.randrange(-(10**17), 10**17))
        balance = Decimal(rng.randrange(-(10**9), 10**9)).scaleb(-2) if i % 4 else Decimal(rng.randrange(-99, 99))
        out.append((rng.choice(CITIES), units, balance))
    return out


def integral(value: Any) -> Any:
    """A DECIMAL value without decimals as the integer a node reads from PostgreSQL's NUMERIC for it."""
    if isinstance(value, Decimal) and value.as_tuple().exponent == 0:
        return int(value)
    return value


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with fresh_database() as db:
        yield db


@pytest.mark.parametrize("sql", QUERIES)
def test_a_decimal_sums_node_query_encodes_as_duckdbs_over_the_same_rows(dsn: str, sql: str) -> None:
    data = rows(3, 400)
    table = f"d_{abs(hash(sql)) % 10**8}"
    load_table(dsn, table, PG_COLUMNS, data)
    plan = plan_query(sql, CATALOG)
    with duckdb.connect(":memory:") as duck, pg_connect(dsn) as pg:
        duck.execute(f"CREATE TABLE deposits ({', '.join(f'{c} {t}' for c, t in DUCK_COLUMNS.items())})")
        duck.executemany("INSERT INTO deposits VALUES (?, ?, ?)", data)
        want = duck.execute(plan.node_sql()).fetchall()
        pg.execute(f"CREATE TEMP VIEW deposits AS SELECT * FROM public.{table}")
        got = pg.execute(plan_node_sql(plan, CATALOG, "postgres")).fetchall()  # type: ignore[arg-type]
    # the same values, of the same Python types but for a DECIMAL without decimals, an integer to the node
    # (which encodes both alike, as the slots show): its sum has no scale to lose
    assert sorted(map(repr, got)) == sorted(repr(tuple(map(integral, row))) for row in want)
    slots, duck_slots = encode_partials(plan, got), encode_partials(plan, want)
    assert len(slots) == len(duck_slots) and all((a == b).all() for a, b in zip(slots, duck_slots, strict=True))


def test_a_region_on_postgres_answers_decimal_sums_as_duckdb(monkeypatch: pytest.MonkeyPatch) -> None:
    node_rows = {"n0": {"deposits": rows(1, 600)}, "n1": {"deposits": rows(2, 300)}}
    with fresh_database() as db, tempfile.TemporaryDirectory(prefix="hpf-pg-dec-") as tmp:
        load_table(db, "deposits", PG_COLUMNS, node_rows["n0"]["deposits"])
        monkeypatch.setenv("HPF_TEST_PG_DEC_DSN", db)
        settings = {
            "n0": {"tables": {"deposits": {"postgres": {"dsn_env": "HPF_TEST_PG_DEC_DSN"}, "table": "deposits"}}}
        }
        with (
            harness.federation(Path(tmp), TABLES, node_rows, node_settings=settings) as fed,
            fed.client() as c,
        ):
            for sql in (QUERIES[0], QUERIES[2], QUERIES[3], QUERIES[4], QUERIES[6]):
                ordered = sql if "GROUP BY" not in sql else sql + " ORDER BY 1"
                answer = c.query(ordered)
                assert answer.missing == []
                assert answer.rows == [list(r) for r in fed.oracle(ordered)], ordered
