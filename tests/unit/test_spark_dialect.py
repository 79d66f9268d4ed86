"""A node query rendered for Spark: the rules that keep it exact, and refusals, with PLAN_BACKEND_UNSUPPORTED naming
the construct and no value of the question, of every construct the allow-list's Spark column marks refused.
(That the rendered SQL returns DuckDB's rows is tests/integration/test_spark_render.py, on a local Spark.)"""

from __future__ import annotations

import collections
import importlib.util
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from sqlglot import exp

from hpf.federation.catalog import Catalog, Contribution, load_catalog
from hpf.federation.config_files import parse_model
from hpf.federation.errors import PlanError
from hpf.federation.planner import plan_query
from hpf.federation.planner.allow_list import AGGREGATES, FUNCTIONS, NODES
from hpf.federation.planner.dialects import BACKENDS, check_backend, plan_node_sql, render_node_sql
from hpf.federation.planner.spark_dialect import REFUSED, SPARK_SESSION_CONF, render_spark
from hpf.federation.planner.spark_types import spark_value
from hpf.federation.privacy.dp_plan import capped_table_sql

TESTS = Path(__file__).resolve().parents[1]
MINI: Catalog = load_catalog(TESTS / "fixtures" / "mini_catalog.yaml")
COLUMNS = {name: column.type for name, column in MINI.tables["deposits"].columns.items()}

# one question per construct Spark cannot run exactly, each with a value that must not reach the message
REFUSED_USES = {
    exp.TryCast: "TRY_CAST(city_code AS INTEGER) = 310007",
    exp.Lower: "LOWER(gender) = 'f310007'",
    exp.Upper: "UPPER(gender) = 'F310007'",
    exp.ILike: "gender ILIKE 'f310007%'",
}
MORE_REFUSED = {
    "SUBSTRING counted from the start 0": "SUBSTRING(city_code, 0, 2) = '310007'",
    "a DOUBLE as text": "CAST(score AS VARCHAR) = '310007'",
    "a DOUBLE joined into text": "gender || score = 'F310007'",
    "a DECIMAL cast to DOUBLE": "CAST(rate AS DOUBLE) = 310007",
    "SIGN of a DOUBLE": "SIGN(score) = 1 AND amount_fen = 310007",
    "/ of DECIMALs": "rate / 3 > 310007",
    "/ of HUGEINTs": "CAST(amount_fen AS HUGEINT) / 3 > 310007",
    "// of HUGEINTs": "CAST(amount_fen AS HUGEINT) // 3 = 310007",
}


def node_sql(condition: str, catalog: Catalog = MINI) -> str:
    return plan_query(f"SELECT COUNT(*) FROM deposits WHERE {condition}", catalog).node_sql()


def test_spark_is_a_backend_and_duckdb_runs_the_planners_sql_unchanged() -> None:
    assert "spark" in BACKENDS
    sql = node_sql("LOWER(gender) = 'f'")
    assert render_node_sql(sql, "duckdb") == sql
    plain = node_sql("gender = 'F'")
    assert render_node_sql(plain, "spark", COLUMNS) == render_spark(plain, COLUMNS)


def test_the_allow_lists_spark_column_names_exactly_the_refused_kinds() -> None:
    for kind, entry in NODES.items():
        assert entry.spark.startswith("refused") == (kind in REFUSED), entry.shown
    for classes, entry in FUNCTIONS.values():
        assert entry.spark.startswith("refused") == any(c in REFUSED for c in classes), entry.shown
    assert not any(e.spark.startswith("refused") for e in AGGREGATES.values())
    assert set(REFUSED_USES) == set(REFUSED)


@pytest.mark.parametrize("condition", [*REFUSED_USES.values(), *MORE_REFUSED.values()])
def test_a_construct_spark_cannot_run_exactly_is_refused_by_name(condition: str) -> None:
    sql = node_sql(condition)
    with pytest.raises(PlanError) as err:
        render_node_sql(sql, "spark", COLUMNS)
    assert err.value.code == "PLAN_BACKEND_UNSUPPORTED"
    assert "310007" not in err.value.message and "cannot run exactly on spark" in err.value.message


def test_an_operand_of_unknown_type_is_refused() -> None:
    """Without the table's column types, DuckDB cannot type a SUM's argument: refused, not guessed."""
    sql = plan_query("SELECT SUM(amount_fen) FROM deposits", MINI).node_sql()
    assert "DECIMAL(38, 0)" in render_node_sql(sql, "spark", COLUMNS)
    with pytest.raises(PlanError) as err:
        render_node_sql(sql, "spark")
    assert err.value.code == "PLAN_BACKEND_UNSUPPORTED" and "unknown type" in err.value.message


def test_sums_are_summed_in_duckdbs_result_types() -> None:
    sql = plan_query("SELECT SUM(amount_fen), SUM(rate), VAR_POP(amount_fen) FROM deposits", MINI).node_sql()
    rendered = render_node_sql(sql, "spark", COLUMNS)
    assert "SUM(CAST(`amount_fen` AS DECIMAL(38, 0)))" in rendered
    assert "SUM(CAST(`rate` AS DECIMAL(38, 4)))" in rendered
    assert "PMOD(" in rendered and ">>" not in rendered and "&" not in rendered and "HUGEINT" not in rendered


def test_an_answer_holding_a_decimal_of_scale_zero_is_refused() -> None:
    """spark_value reads a DECIMAL of scale 0 as int (DuckDB's HUGEINT): DuckDB's own DECIMAL(p,0) would differ."""
    table = MINI.tables["deposits"].model_dump(by_alias=True)
    table["columns"]["whole"] = {"type": "DECIMAL(12,0)", "class": "public"}
    catalog = MINI.model_copy(update={"tables": {"deposits": type(MINI.tables["deposits"]).model_validate(table)}})
    columns = {**COLUMNS, "whole": "DECIMAL(12,0)"}
    with pytest.raises(PlanError) as err:
        render_node_sql(plan_query("SELECT SUM(whole) FROM deposits", catalog).node_sql(), "spark", columns)
    assert err.value.code == "PLAN_BACKEND_UNSUPPORTED" and "scale 0" in err.value.message
    assert spark_value(Decimal("-12")) == -12 and type(spark_value(Decimal("-12"))) is int
    assert spark_value(Decimal("1.00")) == Decimal("1.00") and spark_value("x") == "x"


def test_like_gets_an_escape_character_its_pattern_does_not_hold() -> None:
    assert "LIKE '31\\\\%' ESCAPE '!'" in render_node_sql(node_sql("city_code LIKE '31\\%'"), "spark", COLUMNS)
    assert "ESCAPE '#'" in render_node_sql(node_sql("city_code LIKE '31!%'"), "spark", COLUMNS)
    with pytest.raises(PlanError):
        render_node_sql(node_sql("city_code LIKE '!#~^|@&$%'"), "spark", COLUMNS)


@pytest.mark.parametrize(
    ("condition", "spark"),
    [
        ("DAYOFWEEK(month) = 0", "CAST(DAYOFWEEK(`month`) - 1 AS BIGINT) = 0"),
        ("EXTRACT(isodow FROM month) = 7", "CAST(WEEKDAY(`month`) + 1 AS BIGINT) = 7"),
        ("DAY(month) = 1", "CAST(DAYOFMONTH(`month`) AS BIGINT) = 1"),
        ("amount_fen // 7 = -1", "`amount_fen` DIV 7 = -1"),
        ("CONCAT(gender, amount_fen > 0) = 'Ftrue'", "CONCAT_WS('', `gender`, CAST(`amount_fen` > 0 AS STRING))"),
        ("CAST(rate AS INTEGER) = 0", "CAST(CAST(`rate` AS DECIMAL(38, 0)) AS INT) = 0"),
        ("CAST(amount_fen AS BOOLEAN)", "(`amount_fen` <> 0)"),
        ("SIGN(amount_fen) = 1", "CASE WHEN `amount_fen` > 0 THEN 1 WHEN `amount_fen` < 0 THEN -1 WHEN"),
        ("STARTS_WITH(city_code, '31')", "STARTSWITH(`city_code`, '31')"),
        ("TRIM(city_code) = '31'", "TRIM(BOTH ' \u00a0\u1680\u2000"),
    ],
)
def test_forms_that_differ_between_the_engines_are_rewritten(condition: str, spark: str) -> None:
    assert spark in render_node_sql(node_sql(condition), "spark", COLUMNS)


def test_the_dp_row_cap_is_a_ranked_subquery_with_nulls_last_both_ways() -> None:
    table = MINI.tables["deposits"]
    capped = table.model_copy(update={"contribution": Contribution(person="person_id", max_rows=3, prefer="month")})
    catalog = MINI.model_copy(update={"tables": {"deposits": capped}})
    plan = plan_query("SELECT COUNT(*) FROM deposits", catalog)
    check_backend(plan, catalog, "spark")
    rendered = plan_node_sql(plan, catalog, "spark", f"({capped_table_sql('deposits', capped)}) AS deposits")
    assert "QUALIFY" not in rendered and "`__hpf_row` <= 3" in rendered
    # Spark's DESC already puts NULLs last; an ascending item says so
    assert "`month` DESC," in rendered and "`gender` NULLS LAST" in rendered and "NULLS FIRST" not in rendered


def test_check_backend_refuses_for_spark_what_it_cannot_run() -> None:
    plan = plan_query("SELECT COUNT(*) FROM deposits WHERE UPPER(gender) = 'F'", MINI)
    with pytest.raises(PlanError) as err:
        check_backend(plan, MINI, "spark")
    assert err.value.code == "PLAN_BACKEND_UNSUPPORTED" and "UPPER" in err.value.message


def test_the_session_settings_the_rendering_assumes() -> None:
    assert SPARK_SESSION_CONF["spark.sql.ansi.enabled"] == "true"
    assert SPARK_SESSION_CONF["spark.sql.session.timeZone"] == "UTC"
    assert SPARK_SESSION_CONF["spark.sql.ansi.enforceReservedKeywords"] == "true"


def _property_module() -> Any:
    path = TESTS / "integration" / "test_federated_property.py"
    spec = importlib.util.spec_from_file_location("federated_property", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["federated_property"] = module
    spec.loader.exec_module(module)
    return module


prop = _property_module()
PROP_CATALOG = parse_model(
    "catalog.yaml",
    yaml.safe_load(
        yaml.safe_dump({"federation": "t", "nodes": [{"id": "n0", "address": "127.0.0.1:1"}], "tables": prop.TABLES})
    ),
    Catalog,
)
PROP_COLUMNS = {name: c["type"] for name, c in prop.TABLES["deposits"]["columns"].items()}
REFUSALS: collections.Counter[str] = collections.Counter()
RENDERED: list[str] = []


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(query=prop.queries())
def test_the_property_grammar_is_rarely_refused_on_spark(query: Any) -> None:
    """The share of the federated property test's queries that Spark refuses, and why, stays small (at most one
    in twenty); every refusal is the backend's own."""
    try:
        sql = plan_query(query.sql, PROP_CATALOG).node_sql()
    except PlanError:
        return
    try:
        RENDERED.append(render_node_sql(sql, "spark", PROP_COLUMNS))
    except PlanError as err:
        assert err.code == "PLAN_BACKEND_UNSUPPORTED", err.code
        REFUSALS[err.message] += 1
    total = len(RENDERED) + sum(REFUSALS.values())
    assert sum(REFUSALS.values()) <= max(1, total // 20), REFUSALS
