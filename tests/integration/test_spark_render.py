"""The node SQL rendered for Spark returns DuckDB's rows, exactly: same values, same Python types.

The oracle is DuckDB running the plan's own node SQL over the same rows; Spark runs the rendering over a view of
those rows loaded with the catalog's types (tests/spark.py), in the one local session of the test run. Queries
are the federated property test's grammar over its catalog, plain and over the DP row cap, the planner's golden
cases, each allowed function and each operator form where the engines differ; rows are the property test's
seeded rows and the PostgreSQL rendering test's edge rows (NULLs, integer extremes, DECIMALs at full precision,
dates at the ends of the calendar, text in mixed case and beyond ASCII). A query the renderer refuses must be
refused with PLAN_BACKEND_UNSUPPORTED; most of every batch must run. Few examples: a Spark query costs a
fraction of a second, and the whole file must stay within a CI minute with the JVM's start.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from spark import load_view, spark_rows

from hpf.federation.errors import PlanError
from hpf.federation.planner import plan_query
from hpf.federation.planner.dialects import render_node_sql
from hpf.federation.privacy.dp_plan import capped_table_sql


def _test_module(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


TESTS = Path(__file__).resolve().parents[1]
pg_render = _test_module("postgres_render", TESTS / "integration" / "test_postgres_render.py")
prop, surface = pg_render.prop, pg_render.surface
COLUMNS, CATALOG, CAPPED, SEEDED, EDGE_ROW = (
    pg_render.COLUMNS,
    pg_render.CATALOG,
    pg_render.CAPPED,
    pg_render.SEEDED,
    pg_render.EDGE_ROW,
)
MINI, MINI_COLUMNS, MINI_ROW = pg_render.MINI, pg_render.MINI_COLUMNS, pg_render.MINI_ROW
CAPPED_SOURCE = f"({capped_table_sql('deposits', CAPPED)}) AS deposits"
# no shrinking: a failure is reported with its query and rendering as drawn (a Spark query costs too much to shrink)
PHASES = (Phase.explicit, Phase.reuse, Phase.generate)
SETTINGS = settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), phases=PHASES)


class Engines:
    """The same rows in DuckDB and in Spark (a temporary view ``deposits``)."""

    def __init__(self, session: Any, columns: dict[str, str]) -> None:
        self.spark, self.columns = session, columns
        self.duck = duckdb.connect(":memory:")
        self.duck.execute(f"CREATE TABLE deposits ({', '.join(f'{n} {t}' for n, t in columns.items())})")

    def load(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.duck.execute("DELETE FROM deposits")
        if rows:
            marks = ", ".join(["?"] * len(self.columns))
            self.duck.executemany(f"INSERT INTO deposits VALUES ({marks})", [list(r) for r in rows])
        load_view(self.spark, "deposits", self.columns, rows)

    def same(self, node_sql: str) -> bool:
        """Whether ``node_sql`` rendered (and so was compared); a refusal must be the backend's."""
        try:
            rendered = render_node_sql(node_sql, "spark", self.columns)
        except PlanError as err:
            assert err.code == "PLAN_BACKEND_UNSUPPORTED", (node_sql, err.code)
            return False
        want = self.duck.execute(node_sql).fetchall()
        try:
            got = spark_rows(self.spark, rendered)
        except Exception as err:  # Spark's own error, with the query that caused it
            raise AssertionError(f"{node_sql}\n{rendered}") from err
        assert typed(got) == typed(want), (node_sql, rendered)
        return True


def typed(rows: Sequence[Sequence[Any]]) -> list[tuple[tuple[str, str], ...]]:
    """Rows as (type, value) pairs, sorted: equal only for the same values of the same Python types."""
    return sorted(tuple((type(v).__name__, repr(v)) for v in row) for row in rows)


@pytest.fixture(scope="module")
def engines(spark_session: Any) -> Engines:
    return Engines(spark_session, COLUMNS)


@pytest.fixture(scope="module")
def mini(spark_session: Any) -> Engines:
    return Engines(spark_session, MINI_COLUMNS)


def compare_batch(engines: Engines, batch: list[Any], source: str | None = None) -> None:
    """Each query compared, or refused by the planner or the renderer; most of a batch must be compared."""
    compared = []
    for query in batch:
        try:
            plan = plan_query(query.sql, CATALOG)
        except PlanError:
            continue
        compared.append(engines.same(plan.node_sql(source)))
    assert sum(compared) >= len(compared) // 2 + len(compared) % 2, [q.sql for q in batch]


@SETTINGS
@given(batch=st.lists(prop.queries(), min_size=5, max_size=5))
def test_property_queries_over_seeded_rows(engines: Engines, batch: list[Any]) -> None:
    engines.load(SEEDED)
    compare_batch(engines, batch)


@SETTINGS
@given(rows=st.lists(EDGE_ROW, max_size=12), batch=st.lists(prop.queries(), min_size=5, max_size=5))
def test_property_queries_over_edge_rows(engines: Engines, rows: list[tuple[Any, ...]], batch: list[Any]) -> None:
    engines.load(rows)
    compare_batch(engines, batch)


@SETTINGS
@given(rows=st.lists(EDGE_ROW, max_size=12), batch=st.lists(prop.queries(), min_size=5, max_size=5))
def test_property_queries_over_the_dp_row_cap(engines: Engines, rows: list[tuple[Any, ...]], batch: list[Any]) -> None:
    """The DP path's source: at most two rows per person, the most recent first, ties in the order of every
    column (NULLs last both ways, text by code point, DOUBLE extremes among them)."""
    engines.load(rows)
    compare_batch(engines, batch, CAPPED_SOURCE)


@settings(SETTINGS, max_examples=1)
@given(rows=st.lists(MINI_ROW, min_size=8, max_size=15))
def test_golden_plans_over_drawn_rows(mini: Engines, rows: list[tuple[Any, ...]]) -> None:
    mini.load(rows)
    for case in pg_render.golden.GOLDEN:
        assert mini.same(plan_query(case.sql, MINI).node_sql()), case.sql  # every golden case renders


# where Spark and DuckDB differ unless rendered with care, beyond the PostgreSQL test's operator forms
SPARK_USES = [
    "amount_fen // 3 = -1 AND amount_fen % 3 = -1",
    "amount_fen / 0 > 0 OR amount_fen / 3 < 0 OR (amount_fen / 0) IS NULL",
    "city_code LIKE '%\\%' OR city_code LIKE '3!%' OR city_code NOT LIKE '_1%'",
    "DAYOFWEEK(month) = 0 AND EXTRACT(isodow FROM month) = 7",
    "CONCAT(city_code, NULL, gender) = '31F' OR city_code || NULL IS NULL",
    "GREATEST(city_code, NULL, gender) = 'F' OR LEAST(NULL, amount_fen) < 0",
    "SUBSTRING(city_code, 2, 100) = '10000' AND SIGN(rate) = -1",
    "CAST(rate AS BIGINT) = 0 AND CAST(rate AS DECIMAL(6, 2)) = 0.01",
    "CAST(rate AS VARCHAR) LIKE '-0.%' OR CAST(month AS VARCHAR) LIKE '0001%'",
    "city_code > '东' OR gender <= 'é'",
]


@settings(SETTINGS, max_examples=1)
@given(rows=st.lists(MINI_ROW, min_size=8, max_size=15))
def test_every_allowed_function_and_operator_form(mini: Engines, rows: list[tuple[Any, ...]]) -> None:
    """Each allowed function's use (test_sql_surface's), each operator form of the PostgreSQL test and the
    Spark-specific ones, as a filter; only the constructs the allow-list's spark column refuses are refused."""
    mini.load(rows)
    for condition in [*surface.EVERY_FUNCTION.values(), *pg_render.OPERATOR_USES, *SPARK_USES]:
        sql = f"SELECT gender, COUNT(*), SUM(amount_fen), SUM(rate) FROM deposits WHERE {condition} GROUP BY gender"
        ran = mini.same(plan_query(sql, MINI).node_sql())
        assert ran or condition.split("(")[0] in ("LOWER", "UPPER"), condition


# text where the engines' rules differ unless rendered with care: every Unicode space separator (DuckDB's TRIM
# strips them, Spark's only U+0020), other blanks, letters beyond the BMP, LIKE's wildcards and a backslash
TEXTS = [f"{c}31{c}" for c in " \u00a0\u1680\u2000\u200a\u202f\u205f\u3000\t\u200b\ufeff"]
TEXTS += ["", "3", "31", "31%", "31\\%", "3_1", "😀1", "东", "é", "e\u0301", "Z", "a", None]
TEXT_USES = [
    "TRIM(city_code) = '31'",
    "LENGTH(TRIM(city_code)) = 2",
    "city_code LIKE '_1%' OR city_code LIKE '%\\%'",
    "SUBSTRING(TRIM(city_code), 2, 1) = '1'",
    "city_code < '3' OR city_code >= 'é'",
    "CONCAT(TRIM(city_code), gender) = '31F'",
]


def test_text_functions_over_blanks_and_letters_beyond_ascii(mini: Engines) -> None:
    rows = [("p", text, None, None, None, gender, None) for text in TEXTS for gender in ("F", None)]
    mini.load(rows)
    for condition in TEXT_USES:
        sql = f"SELECT city_code, COUNT(*) FROM deposits WHERE {condition} GROUP BY city_code"
        assert mini.same(plan_query(sql, MINI).node_sql()), condition
