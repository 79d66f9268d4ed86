"""The allow-list: one list in the code and in the docs, each entry usable, and every engine locked down.

- the table in docs/sql-surface.md is the code's (scripts/gen_sql_surface.py --check);
- every allowed function and form is accepted end to end by the planner (both parsers agree it is allowed), and
  the forms next to it that are not are refused with their code;
- every DuckDB connection a party opens (the planner's binder and its parse-tree check, the asker's finishing
  engine, a node's backend) has extension install and load off, external access off but for a node's own data
  folders, and its configuration locked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from hpf.client import finish
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.errors import PlanError
from hpf.federation.planner import engine_tree, plan_query
from hpf.federation.planner.allow_list import AGGREGATES, FUNCTIONS, NODES, markdown_table
from hpf.federation.planner.binder import binder_for
from hpf.node.backends.duckdb_backend import DuckDBBackend
from hpf.node.config import TableSource

ROOT = Path(__file__).resolve().parents[2]
MINI: Catalog = load_catalog(ROOT / "tests" / "fixtures" / "mini_catalog.yaml")


def test_the_docs_table_is_the_codes_allow_list() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_sql_surface.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    doc = (ROOT / "docs" / "sql-surface.md").read_text()
    assert markdown_table() in doc
    for entry in [*NODES.values(), *(e for _, e in FUNCTIONS.values()), *AGGREGATES.values()]:
        assert f"`{entry.shown}`" in doc and entry.why in doc


# one accepted use of every allowed function, by DuckDB name (each goes through both parsers' checks)
EVERY_FUNCTION = {
    "year": "YEAR(month) = 2020",
    "quarter": "QUARTER(month) = 1",
    "month": "MONTH(month) = 1",
    "day": "DAY(month) = 1 AND DAYOFMONTH(month) = 1",
    "dayofweek": "DAYOFWEEK(month) = 1",
    "date_part": "DATE_PART('year', month) = 2020",
    "make_date": "month < MAKE_DATE(2020, 7, 1)",
    "abs": "ABS(amount_fen) > 5",
    "sign": "SIGN(amount_fen) = 1",
    "coalesce": "COALESCE(amount_fen, 0) > 0",
    "nullif": "NULLIF(amount_fen, 0) > 0",
    "greatest": "GREATEST(amount_fen, 0) > 0",
    "least": "LEAST(amount_fen, 0) < 0",
    "length": "LENGTH(gender) = 1",
    "lower": "LOWER(gender) = 'f'",
    "upper": "UPPER(gender) = 'F'",
    "trim": "TRIM(gender) = 'F'",
    "concat": "gender || city_code = 'F310000' AND CONCAT(gender, amount_fen) <> ''",
    "substring": "SUBSTRING(city_code, 1, 2) = '31'",
    "starts_with": "STARTS_WITH(city_code, '31')",
    "ends_with": "ENDS_WITH(city_code, '00')",
    "contains": "CONTAINS(city_code, '100')",
}


def test_every_allowed_function_has_an_accepted_use() -> None:
    assert set(EVERY_FUNCTION) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(EVERY_FUNCTION))
def test_each_allowed_function_passes_both_parsers(name: str) -> None:
    plan = plan_query(f"SELECT COUNT(*) FROM deposits WHERE {EVERY_FUNCTION[name]}", MINI)
    assert plan.where


@pytest.mark.parametrize(
    "where",
    [
        "amount_fen + 1 > 0 AND amount_fen - 1 < 0 AND -amount_fen < 0 AND amount_fen * 2 > 0",
        "amount_fen / 3 > 1.5 AND amount_fen % 7 = 1 AND amount_fen // 7 = 1",
        "NOT (amount_fen > 0) OR amount_fen IS NULL OR gender IS NOT NULL OR (amount_fen > 0) IS TRUE",
        "amount_fen BETWEEN 1 AND 5 AND gender IN ('F', 'M') AND gender NOT IN ('x')",
        "amount_fen IS DISTINCT FROM 5 AND amount_fen IS NOT DISTINCT FROM 5",
        "gender LIKE 'F%' AND gender NOT LIKE 'x%' AND gender ILIKE 'f%'",
        "CASE WHEN amount_fen > 0 THEN gender ELSE 'x' END = 'F' AND CASE gender WHEN 'F' THEN 1 END = 1",
        "IF(amount_fen > 0, 1, 2) = 1 AND EXTRACT(YEAR FROM month) = 2020",
        "CAST(amount_fen AS HUGEINT) > 0 AND CAST(amount_fen AS DECIMAL(38, 2)) > 0 AND CAST(rate AS DOUBLE) > 0",
        "CAST(amount_fen AS VARCHAR) = '5' AND TRY_CAST(gender AS INTEGER) = 1 AND CAST(gender = 'F' AS INTEGER) = 1",
        "month >= '2020-01-01' AND month < DATE '2021-01-01' AND amount_fen = 5 AND score > 0.5",
        "rate > 0.01 AND amount_fen > rate",
    ],
)
def test_the_allowed_forms_pass_both_parsers(where: str) -> None:
    assert plan_query(f"SELECT COUNT(*), SUM(amount_fen) FROM deposits WHERE {where}", MINI).where


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("SELECT COUNT(*) FROM deposits WHERE COLUMNS('gender') = 'F'", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT COUNT(*) FROM deposits WHERE #6 = 'F'", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT COUNT(*) FROM deposits WHERE strlen(gender) = 1", "PLAN_EXPRESSION_NOT_ALLOWED"),
        # DATE_TRUNC of a DATE is a TIMESTAMP, which fails on dates beyond the TIMESTAMP range
        ("SELECT COUNT(DATE_TRUNC('month', month)) FROM deposits", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT COUNT(*) FROM deposits WHERE gender = 1", "PLAN_TYPE_MIX"),
        ("SELECT COUNT(*) FROM deposits WHERE gender", "PLAN_TYPE_MIX"),
        ("SELECT COUNT(*) FROM deposits WHERE CAST(gender AS DATE) = DATE '2020-01-01'", "PLAN_CAST_NOT_TOTAL"),
        ("SELECT COUNT(*) FROM deposits WHERE CAST(amount_fen AS SMALLINT) = 1", "PLAN_CAST_NOT_TOTAL"),
        ("SELECT COUNT(*) FROM deposits WHERE CAST(amount_fen AS UBIGINT) = 1", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen * amount_fen * amount_fen = 1", "PLAN_MAY_OVERFLOW"),
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen % gender = 1", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen // 0 = 1", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT COUNT(*) FROM deposits WHERE gender LIKE city_code", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT COUNT(*) FROM deposits WHERE DATE_PART(gender, month) = 1", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT COUNT(*) FROM deposits WHERE SUBSTRING(gender, amount_fen, 2) = 'F'", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT COUNT(*) FROM deposits LIMIT amount_fen", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT SUM(CAST(amount_fen AS HUGEINT) * amount_fen * 4096) FROM deposits", "PLAN_MAY_OVERFLOW"),
    ],
)
def test_what_is_not_on_the_list_is_refused_with_its_code(sql: str, code: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_query(sql, MINI)
    assert info.value.code == code, info.value


def test_a_form_duckdb_reads_differently_from_sqlglot_is_refused() -> None:
    """sqlglot reads ``x -> x + 1`` as a JSON path; the node SQL it writes is a lambda to DuckDB."""
    with pytest.raises(PlanError) as info:
        engine_tree.check_engine_sql("SELECT COUNT(*) FROM t WHERE a -> (a + 1)", {"a"}, table="t")
    assert info.value.code == "PLAN_EXPRESSION_NOT_ALLOWED"
    with pytest.raises(PlanError):
        engine_tree.check_engine_sql("SELECT COUNT(*) FROM t WHERE b > 1", {"a"}, table="t")  # not a plan column
    with pytest.raises(PlanError):
        engine_tree.check_engine_sql("SELECT COUNT(*) FROM u WHERE a > 1", {"a"}, table="t")  # another table
    engine_tree.check_engine_sql("SELECT COUNT(*) FROM t WHERE a > 1", {"a"}, table="t")


# ------------------------------------------------------------------------------------------------ the engines


def _settings(con: duckdb.DuckDBPyConnection) -> tuple[object, ...]:
    names = (
        "autoinstall_known_extensions",
        "autoload_known_extensions",
        "enable_external_access",
        "lock_configuration",
    )
    row = con.execute("SELECT " + ", ".join(f"current_setting('{n}')" for n in names)).fetchone()
    assert row is not None
    return tuple(row)


def _assert_locked(con: duckdb.DuckDBPyConnection, outside: Path) -> None:
    assert _settings(con) == (False, False, False, True)
    for statement in [
        "SET enable_external_access = true",
        "SET autoinstall_known_extensions = true",
        "SET lock_configuration = false",
        "RESET lock_configuration",
    ]:
        with pytest.raises(duckdb.Error):
            con.execute(statement)
    for statement in [
        f"SELECT * FROM read_parquet('{outside}')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "INSTALL httpfs",
    ]:
        with pytest.raises(duckdb.Error):
            con.execute(statement).fetchall()
    with pytest.raises(duckdb.Error):
        con.execute("LOAD httpfs")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "x.parquet"
    path.parent.mkdir()
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 1 AS a) TO '{path}' (FORMAT parquet)")
    con.close()
    return path


def test_the_planners_engines_are_locked(outside: Path) -> None:
    _assert_locked(binder_for(MINI)._con, outside)
    engine_tree.check_engine_sql("SELECT COUNT(*) FROM t", set(), table="t")  # opens its connection
    assert engine_tree._con is not None
    _assert_locked(engine_tree._con, outside)


def test_the_askers_finishing_engine_is_locked(outside: Path) -> None:
    _assert_locked(finish._ENGINE, outside)


def test_a_nodes_engine_reads_its_own_folders_only(tmp_path: Path, outside: Path) -> None:
    data = tmp_path / "data" / "n0"
    data.mkdir(parents=True)
    con = duckdb.connect()
    cols = ", ".join(f"CAST(NULL AS {c.type}) AS {n}" for n, c in MINI.tables["deposits"].columns.items())
    con.execute(f"COPY (SELECT {cols}) TO '{data / 'deposits.parquet'}' (FORMAT parquet)")
    con.close()
    source = TableSource.model_validate({"path": str(data / "deposits.parquet")})
    backend = DuckDBBackend(MINI, {"deposits": source}, memory_limit="64MB")
    try:
        assert backend.run("SELECT COUNT(*) FROM deposits") == [(1,)]
        _assert_locked(backend._con, outside)
    finally:
        backend.close()


# ------------------------------------------------------------------ what the red team found, kept as regressions


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        # a constant that cannot be computed, guarded by a row condition, failed only on the rows reaching it
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen > 1000000 AND CAST('x' AS INTEGER) = 1", "PLAN_BIND"),
        ("SELECT COUNT(*) FROM deposits WHERE CASE WHEN amount_fen > 9 THEN CAST(300 AS TINYINT) END = 1", "PLAN_BIND"),
        ("SELECT COUNT(*) FROM deposits WHERE IF(amount_fen > 9, CAST('x' AS BOOLEAN), FALSE)", "PLAN_BIND"),
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen > 9 AND DATE '2020-02-30' = month", "PLAN_BIND"),
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen > 9 AND MAKE_DATE(2020, 2, 30) = month", "PLAN_BIND"),
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen > 9 AND (2147483647 - -339) <> 1", "PLAN_BIND"),
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen > 9 AND month = '2020-02-30'", "PLAN_BIND"),
        (
            "SELECT SUM(CAST(9223372036854775807 AS INTEGER)) FILTER (WHERE amount_fen > 9) FROM deposits",
            "PLAN_BIND",
        ),
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen > 9 AND amount_fen = '1e30'", "PLAN_TYPE_MIX"),
        # a variance scales its argument as DECIMAL(38, s) before squaring
        ("SELECT VAR_POP(CAST(rate AS DECIMAL(38, 20))) FROM deposits", "PLAN_MAY_OVERFLOW"),
        # text or a date into DOUBLE, DOUBLE into REAL: each fails on some values
        ("SELECT COUNT(*) FROM deposits WHERE CAST(city_code AS DOUBLE) > 0", "PLAN_CAST_NOT_TOTAL"),
        ("SELECT COUNT(*) FROM deposits WHERE CAST(month AS DOUBLE) > 0", "PLAN_CAST_NOT_TOTAL"),
        ("SELECT COUNT(*) FROM deposits WHERE CAST(score AS REAL) > 0", "PLAN_EXPRESSION_NOT_ALLOWED"),
        # NULLIF keeps its first argument's type: a BIGINT compared with DECIMAL(38, 30)
        (
            "SELECT COUNT(*) FROM deposits WHERE CAST(rate AS DECIMAL(38, 30)) = NULLIF(amount_fen, score)",
            "PLAN_MAY_OVERFLOW",
        ),
        # numbers past any exact type: refused before anything converts them
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen = " + "9" * 4301, "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT gender, COUNT(*) FROM deposits GROUP BY " + "1" * 4400, "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen % " + "7" * 4400 + " = 1", "PLAN_EXPRESSION_NOT_ALLOWED"),
        ("SELECT " + ", ".join(f"SUM(amount_fen + {i})" for i in range(300)) + " FROM deposits", "PLAN_TOO_LARGE"),
        # the second round: IS TRUE of text or a date casts every row to BOOLEAN
        ("SELECT COUNT(*) FROM deposits WHERE gender IS TRUE", "PLAN_TYPE_MIX"),
        ("SELECT COUNT(*) FROM deposits WHERE month IS NOT FALSE", "PLAN_TYPE_MIX"),
        ("SELECT COUNT(*) FROM deposits WHERE amount_fen > 0 AND 'x' IS TRUE", "PLAN_TYPE_MIX"),
        # TRUE does not fit DECIMAL(1, 1)
        ("SELECT SUM(CAST(amount_fen > 0 AS DECIMAL(1, 1))) FROM deposits", "PLAN_CAST_NOT_TOTAL"),
        # a cast's precision is checked before anything is computed from it
        (
            "SELECT COUNT(*) FROM deposits WHERE TRY_CAST(gender AS DECIMAL(10000000, 0)) IS NULL",
            "PLAN_EXPRESSION_NOT_ALLOWED",
        ),
        (
            "SELECT COUNT(*) FROM deposits WHERE TRY_CAST(gender AS DECIMAL(99999999999999999999, 0)) IS NULL",
            "PLAN_EXPRESSION_NOT_ALLOWED",
        ),
        # the asker's own finishing query: no cast or comparison there that fails on some totals
        (
            "SELECT gender, SUM(amount_fen) FROM deposits GROUP BY gender HAVING CAST(SUM(amount_fen) AS TINYINT) > 1",
            "PLAN_CAST_NOT_TOTAL",
        ),
        (
            "SELECT gender, SUM(amount_fen) FROM deposits GROUP BY gender HAVING SUM(amount_fen) > 'abc'",
            "PLAN_TYPE_MIX",
        ),
    ],
)
def test_what_the_red_team_found_is_refused_at_plan_time(sql: str, code: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_query(sql, MINI)
    assert info.value.code == code, info.value
    for secret in ("O'Brien", "SECRET", "310101199001011234"):
        assert secret not in info.value.message


def test_a_case_over_a_column_is_no_constant_and_its_arithmetic_is_computed_wide() -> None:
    """CASE WHEN row-condition THEN 2147483647 END + 1 overflowed INTEGER only where the condition held."""
    plan = plan_query("SELECT COUNT(*) FROM deposits WHERE CASE WHEN amount_fen > 5 THEN 2147483647 END + 1 > 0", MINI)
    con = duckdb.connect()
    cols = ", ".join(f'"{n}" {c.type}' for n, c in MINI.tables["deposits"].columns.items())
    con.execute(f"CREATE TABLE deposits ({cols})")
    con.execute("INSERT INTO deposits (amount_fen) VALUES (10), (1)")
    assert con.execute(plan.node_sql()).fetchall()[0][0] == 1


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM deposits WHERE amount_fen = 'O''Brien SECRET'",
        "SELECT COUNT(*) FROM deposits WHERE CAST('a''SECRET''b' AS INTEGER) = 1",
        "SELECT COUNT(*) FROM deposits WHERE CAST('ab\nSECRET' AS BOOLEAN)",
        'SELECT COUNT(*) FROM deposits WHERE "310101199001011234" = 1',
        'SELECT COUNT(*) FROM "310101199001011234"',
        "SELECT COUNT(*) FROM deposits GROUP BY amount_fen + 310101199001011234",
    ],
)
def test_refusals_never_echo_a_value_of_the_query(sql: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_query(sql, MINI)
    text = info.value.message + (info.value.hint or "")
    assert "SECRET" not in text and "Brien" not in text and "310101199001011234" not in text, text


@pytest.mark.parametrize(
    ("column", "ok"),
    [
        ({"type": "INTEGER", "bounds": [-1, "0.0000000000000000000000000000000000001"]}, False),
        ({"type": "DECIMAL(20,10)", "bounds": [-(10**30), 10**30]}, False),
        ({"type": "TINYINT", "bounds": [0, 1000]}, False),
        ({"type": "DECIMAL(12,2)", "bounds": ["0.005", 10]}, False),
        ({"type": "BIGINT", "bounds": [0, 2_000_000]}, True),
        ({"type": "DECIMAL(12,2)", "bounds": ["-0.50", "99.99"]}, True),
    ],
)
def test_dp_bounds_are_values_of_the_columns_type(column: dict[str, object], ok: bool) -> None:
    """DP clamps with the bounds: one its type cannot hold made the engine convert every value, and fail on some."""
    from pydantic import ValidationError

    from hpf.federation.catalog import Column

    if ok:
        Column.model_validate(column)
    else:
        with pytest.raises(ValidationError):
            Column.model_validate(column)
