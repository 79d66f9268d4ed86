"""The node SQL rendered for PostgreSQL returns DuckDB's rows, exactly: same values, same Python types.

The oracle is DuckDB running the plan's own node SQL over the same rows. Queries are the federated property
test's (its grammar, over its catalog) and the planner's golden cases; rows are its seeded data plus
Hypothesis-drawn edge rows (NULLs, each integer type's extremes, DECIMALs at full precision, dates at the ends
of the calendar, text in mixed case and beyond ASCII). A query the renderer refuses must be refused with
PLAN_BACKEND_UNSUPPORTED naming a construct, and the refused share stays small.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg import pg_connect

from hpf.federation.catalog import Catalog, Contribution, load_catalog
from hpf.federation.config_files import parse_model
from hpf.federation.errors import PlanError
from hpf.federation.planner import plan_query
from hpf.federation.planner.dialects import render_node_sql
from hpf.federation.privacy.dp_plan import capped_table_sql


def _test_module(name: str, path: Path) -> Any:
    """Another test file's module, for its generators (tests/integration and tests/unit are not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


TESTS = Path(__file__).resolve().parents[1]
prop = _test_module("federated_property", TESTS / "integration" / "test_federated_property.py")
golden = _test_module("planner_golden", TESTS / "unit" / "test_planner_golden.py")

COLUMNS: dict[str, str] = {name: c["type"] for name, c in prop.TABLES["deposits"]["columns"].items()}
PG_TYPES = {"VARCHAR": "TEXT", "DOUBLE": "DOUBLE PRECISION", "DECIMAL(12,2)": "NUMERIC(12,2)"}
PG_TYPES["DECIMAL(6,4)"] = "NUMERIC(6,4)"
_NODES = [{"id": "n0", "address": "127.0.0.1:1"}]
CATALOG = parse_model(
    "catalog.yaml", yaml.safe_load(yaml.safe_dump({"federation": "t", "nodes": _NODES, "tables": prop.TABLES})), Catalog
)
CAPPED = CATALOG.tables["deposits"].model_copy(
    update={"contribution": Contribution(person="person_id", max_rows=2, prefer="month")}
)
SEEDED = [row for seed in range(4) for rows in prop.seeded_node_rows(seed).values() for row in rows["deposits"]]

_INT64, _INT32 = 2**63 - 1, 2**31 - 1
EDGE_ROW = st.tuples(
    st.sampled_from(["p1", "P1", "ß", "東"]),
    st.one_of(st.none(), st.sampled_from(["Acme", "acme", "ÄCME", "东方", "a\\b", "", "Z", "é"])),
    st.one_of(st.none(), st.sampled_from([*prop.CITIES, "31", "3100000"])),
    st.one_of(st.none(), st.sampled_from([-_INT32 - 1, _INT32, 0, 1, 4, 5])),
    st.one_of(st.none(), st.booleans()),
    st.one_of(st.none(), st.sampled_from([dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(2020, 2, 29)])),
    st.one_of(st.none(), st.sampled_from([-_INT64 - 1, _INT64, -1, 0, 2**32, -(2**32) - 1])),
    st.one_of(st.none(), st.integers(-(10**12) + 1, 10**12 - 1).map(lambda c: Decimal(c).scaleb(-2))),
    st.one_of(st.none(), st.sampled_from([Decimal("99.9999"), Decimal("-99.9999"), Decimal("0.0001")])),
    st.one_of(st.none(), st.sampled_from([0.0, -0.5, 1e300])),
)


Engines = tuple[duckdb.DuckDBPyConnection, psycopg.Connection]


@contextlib.contextmanager
def deposits_in_both(dsn: str, schema: str, columns: dict[str, str], pg_types: dict[str, str]) -> Iterator[Engines]:
    """An empty ``deposits`` table in DuckDB and in PostgreSQL (in ``schema``), of the same columns."""
    with duckdb.connect(":memory:") as duck, pg_connect(dsn) as pg:
        duck.execute(f"CREATE TABLE deposits ({', '.join(f'{n} {t}' for n, t in columns.items())})")
        pg.execute(f"CREATE SCHEMA {schema}")
        pg.execute(f"SET search_path TO {schema}")
        pg.execute(f"CREATE TABLE deposits ({', '.join(f'{n} {pg_types.get(t, t)}' for n, t in columns.items())})")
        yield duck, pg


@pytest.fixture(scope="module")
def engines(pg_database: str) -> Iterator[Engines]:
    with deposits_in_both(pg_database, "federated", COLUMNS, PG_TYPES) as both:
        yield both


def load(engines: Engines, rows: Sequence[tuple[Any, ...]]) -> None:
    duck, pg = engines
    marks = ", ".join(["?"] * len(rows[0])) if rows else ""
    duck.execute("DELETE FROM deposits")
    pg.execute("DELETE FROM deposits")
    if rows:
        duck.executemany(f"INSERT INTO deposits VALUES ({marks})", [list(r) for r in rows])
        with pg.cursor() as cur:
            cur.executemany(f"INSERT INTO deposits VALUES ({marks.replace('?', '%s')})", [list(r) for r in rows])


def typed(rows: Sequence[Sequence[Any]]) -> list[tuple[tuple[str, str], ...]]:
    """Rows as (type, value) pairs, sorted: equal only for the same values of the same Python types."""
    return sorted(tuple((type(v).__name__, repr(v)) for v in row) for row in rows)


def compare(engines: Engines, sql: str, source: str | None = None) -> bool:
    """Whether the query's node SQL (over ``source``) was rendered and so compared; a refusal must be the
    backend's."""
    try:
        plan = plan_query(sql, CATALOG)
    except PlanError:
        return False
    node_sql = plan.node_sql(source)
    try:
        rendered = render_node_sql(node_sql, "postgres", COLUMNS)
    except PlanError as err:
        assert err.code == "PLAN_BACKEND_UNSUPPORTED", (sql, err.code)
        return False
    duck, pg = engines
    want = duck.execute(node_sql).fetchall()
    got = pg.execute(rendered).fetchall()  # type: ignore[arg-type]
    assert typed(got) == typed(want), (sql, rendered)
    return True


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(prop.queries(), min_size=8, max_size=8))
def test_property_queries_over_seeded_rows(engines: Any, batch: list[Any]) -> None:
    load(engines, SEEDED)
    compare_batch(engines, batch)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(EDGE_ROW, max_size=12), batch=st.lists(prop.queries(), min_size=6, max_size=6))
def test_property_queries_over_edge_rows(engines: Any, rows: list[tuple[Any, ...]], batch: list[Any]) -> None:
    load(engines, rows)
    compare_batch(engines, batch)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(EDGE_ROW, max_size=12), batch=st.lists(prop.queries(), min_size=6, max_size=6))
def test_property_queries_over_the_dp_row_cap(engines: Any, rows: list[tuple[Any, ...]], batch: list[Any]) -> None:
    """The DP path's source: at most two rows per person (few people here, so the cap bites), the most recent
    first, ties in the order of every column (NULLs, text by code point, DOUBLE extremes among them)."""
    load(engines, rows)
    compare_batch(engines, batch, f"({capped_table_sql('deposits', CAPPED)}) AS deposits")


def compare_batch(engines: Any, batch: list[Any], source: str | None = None) -> None:
    """Each query compared, or refused by the planner or the renderer; most of a batch must be compared."""
    compared = [compare(engines, q.sql, source) for q in batch]
    assert sum(compared) >= len(batch) // 2, [q.sql for q in batch]


# the planner's golden cases, over the mini catalog's table (in a schema of its own) and drawn rows
MINI = load_catalog(TESTS / "fixtures" / "mini_catalog.yaml")
MINI_COLUMNS = {name: column.type for name, column in MINI.tables["deposits"].columns.items()}
MINI_PG = {"VARCHAR": "TEXT", "DOUBLE": "DOUBLE PRECISION", "DECIMAL(6,4)": "NUMERIC(6,4)"}
GOLDEN = [case.sql for case in golden.GOLDEN]
MINI_ROW = st.tuples(
    st.sampled_from(["P-0001", "p-0001", "ü"]),
    st.one_of(st.none(), st.sampled_from(["310000", "330100", "320100", "31", "东", "31%", "31\\%", " 3 "])),
    st.one_of(st.none(), st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31))),
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(-5, 200_000)),
    st.one_of(st.none(), st.integers(-999_999, 999_999).map(lambda c: Decimal(c).scaleb(-4))),
    st.one_of(st.none(), st.sampled_from(["F", "M", "f", "É"])),
    st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)),
)


@pytest.fixture(scope="module")
def mini_engines(pg_database: str) -> Iterator[Engines]:
    with deposits_in_both(pg_database, "mini", MINI_COLUMNS, MINI_PG) as both:
        yield both


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(MINI_ROW, max_size=15))
def test_golden_plans_over_drawn_rows(mini_engines: Any, rows: list[tuple[Any, ...]]) -> None:
    load(mini_engines, rows)
    for sql in GOLDEN:
        node_sql = plan_query(sql, MINI).node_sql()
        rendered = render_node_sql(node_sql, "postgres", MINI_COLUMNS)  # every golden case renders
        duck, pg = mini_engines
        assert typed(pg.execute(rendered).fetchall()) == typed(duck.execute(node_sql).fetchall()), rendered  # type: ignore[arg-type]


surface = _test_module("sql_surface", TESTS / "unit" / "test_sql_surface.py")
# the forms where the two engines differ unless rendered with care: text order, LIKE's escape, integer division
# and remainder of negatives, casts to and from BOOLEAN, text forms of values, date parts
OPERATOR_USES = [
    "city_code < '33'",
    "gender BETWEEN 'E' AND 'a'",
    "GREATEST(gender, 'a') = 'a' AND LEAST(city_code, gender) < '5'",
    "city_code LIKE '31\\%'",
    "amount_fen // 7 = -1",
    "amount_fen % 7 = -1",
    "CAST(amount_fen > 0 AS INTEGER) = 1 AND CAST(gender = 'F' AS BIGINT) = 1",
    "CAST(amount_fen AS BOOLEAN)",
    "EXTRACT(dow FROM month) = 0 OR EXTRACT(isodow FROM month) = 7 OR DATE_PART('dow', month) = 1",
    "CONCAT(gender, amount_fen > 0, NULL) = 'Ftrue'",
    "gender || month = 'F2020-01-01'",
    "CAST(rate AS INTEGER) = 0 AND CAST(amount_fen AS VARCHAR) LIKE '1%'",
    "LENGTH(city_code) = 1 AND TRIM(city_code) <> ''",
]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(MINI_ROW, max_size=15))
def test_every_allowed_function_and_operator_form(mini_engines: Any, rows: list[tuple[Any, ...]]) -> None:
    """Each allowed function's use (test_sql_surface's) and each tricky operator form, as a filter."""
    load(mini_engines, rows)
    duck, pg = mini_engines
    for condition in [*surface.EVERY_FUNCTION.values(), *OPERATOR_USES]:
        sql = f"SELECT gender, COUNT(*), SUM(amount_fen) FROM deposits WHERE {condition} GROUP BY gender"
        node_sql = plan_query(sql, MINI).node_sql()
        try:
            rendered = render_node_sql(node_sql, "postgres", MINI_COLUMNS)
        except PlanError as err:  # only the functions the allow-list marks refused
            assert err.code == "PLAN_BACKEND_UNSUPPORTED" and condition.split("(")[0] in ("LOWER", "UPPER"), condition
            continue
        assert typed(pg.execute(rendered).fetchall()) == typed(duck.execute(node_sql).fetchall()), rendered  # type: ignore[arg-type]
