"""A node query rendered per backend: DuckDB unchanged; PostgreSQL refuses, with PLAN_BACKEND_UNSUPPORTED naming
the construct and no value of the question, every construct the allow-list's PostgreSQL column marks refused.
(That the rendered SQL returns DuckDB's rows is tests/integration/test_postgres_render.py, on a real server.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlglot import exp

from hpf.federation.catalog import Catalog, Contribution, load_catalog
from hpf.federation.errors import PlanError
from hpf.federation.planner import dialects, plan_query
from hpf.federation.planner.allow_list import FUNCTIONS, NODES
from hpf.federation.planner.dialects import REFUSED, check_backend, plan_node_sql, render_node_sql
from hpf.federation.privacy.dp_plan import capped_table_sql

MINI: Catalog = load_catalog(Path(__file__).resolve().parents[1] / "fixtures" / "mini_catalog.yaml")
COLUMNS = {name: column.type for name, column in MINI.tables["deposits"].columns.items()}

# one question per construct PostgreSQL cannot run exactly, each with a value that must not reach the message
REFUSED_USES = {
    exp.TryCast: "TRY_CAST(city_code AS INTEGER) = 310007",
    exp.Div: "amount_fen / 310007 > 1",
    exp.Lower: "LOWER(gender) = 'f310007'",
    exp.Upper: "UPPER(gender) = 'F310007'",
    exp.ILike: "gender ILIKE 'f310007%'",
}
MORE_REFUSED = {
    "SUBSTRING counted from the end": "SUBSTRING(city_code, -3, 2) = '31'",
    "a DOUBLE as text": "CAST(score AS VARCHAR) = '310007'",
    "a DOUBLE joined into text": "gender || score = 'F310007'",
    "SIGN of a DOUBLE": "SIGN(score) = 1",
}


def node_sql(condition: str) -> str:
    return plan_query(f"SELECT COUNT(*) FROM deposits WHERE {condition}", MINI).node_sql()


def test_duckdb_runs_the_planners_sql_unchanged() -> None:
    sql = node_sql("LOWER(gender) = 'f'")
    assert render_node_sql(sql, "duckdb") == sql


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(PlanError) as err:
        render_node_sql(node_sql("gender = 'F'"), "oracle")
    assert err.value.code == "PLAN_BACKEND_UNSUPPORTED"


def test_the_allow_lists_postgres_column_names_exactly_the_refused_kinds() -> None:
    for kind, entry in NODES.items():
        assert entry.postgres.startswith("refused") == (kind in REFUSED), entry.shown
    for classes, entry in FUNCTIONS.values():
        assert entry.postgres.startswith("refused") == any(c in REFUSED for c in classes), entry.shown
    assert set(REFUSED_USES) == set(REFUSED)


@pytest.mark.parametrize("condition", [*REFUSED_USES.values(), *MORE_REFUSED.values()])
def test_a_construct_postgres_cannot_run_exactly_is_refused_by_name(condition: str) -> None:
    sql = node_sql(condition)
    with pytest.raises(PlanError) as err:
        render_node_sql(sql, "postgres", COLUMNS)
    assert err.value.code == "PLAN_BACKEND_UNSUPPORTED"
    assert "310007" not in err.value.message and "cannot run exactly on postgres" in err.value.message


def test_text_ordering_of_an_operand_of_unknown_type_is_refused() -> None:
    sql = node_sql("city_code < '33'")
    assert 'city_code COLLATE "C" < ' in render_node_sql(sql, "postgres", COLUMNS)
    with pytest.raises(PlanError) as err:
        render_node_sql(sql, "postgres")
    assert err.value.code == "PLAN_BACKEND_UNSUPPORTED"


def test_check_backend_refuses_for_postgres_what_it_cannot_run_and_passes_duckdb() -> None:
    plan = plan_query("SELECT COUNT(*) FROM deposits WHERE LOWER(gender) = 'f'", MINI)
    check_backend(plan, MINI, "duckdb")
    with pytest.raises(PlanError) as err:
        check_backend(plan, MINI, "postgres")
    assert err.value.code == "PLAN_BACKEND_UNSUPPORTED" and "LOWER" in err.value.message
    fine = plan_query("SELECT city_code, COUNT(*) FROM deposits WHERE gender >= 'F' GROUP BY 1", MINI)
    check_backend(fine, MINI, "postgres")
    assert 'gender COLLATE "C" >= ' in plan_node_sql(fine, MINI, "postgres")


def test_check_backend_renders_the_dp_row_cap_of_a_table_that_declares_one() -> None:
    table = MINI.tables["deposits"]
    capped = table.model_copy(update={"contribution": Contribution(person="person_id", max_rows=3, prefer="month")})
    catalog = MINI.model_copy(update={"tables": {"deposits": capped}})
    plan = plan_query("SELECT COUNT(*) FROM deposits", catalog)
    check_backend(plan, catalog, "postgres")
    source = f"({capped_table_sql('deposits', capped)}) AS deposits"
    rendered = plan_node_sql(plan, catalog, "postgres", source)
    assert "QUALIFY" not in rendered and '"month" DESC NULLS LAST' in rendered and '"gender" COLLATE "C"' in rendered


def test_check_backend_keeps_what_it_rendered_for_the_run_the_clamped_query_under_dp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = MINI.tables["deposits"]
    capped = table.model_copy(update={"contribution": Contribution(person="person_id", max_rows=3, prefer="month")})
    catalog = MINI.model_copy(update={"tables": {"deposits": capped}})
    plan = plan_query("SELECT COUNT(*) FROM deposits WHERE gender >= 'F'", catalog)
    exact: dict[str, str] = {}
    check_backend(plan, catalog, "postgres", rendered=exact)
    source = f"({capped_table_sql('deposits', capped)}) AS deposits"
    assert set(exact) == {plan.node_sql(), plan.node_sql(source)}
    assert exact[plan.node_sql()] == plan_node_sql(plan, catalog, "postgres")
    # under DP the capped query kept is the clamped plan's, the one a DP answer runs (a COUNT(*): none to clamp)
    dp: dict[str, str] = {}
    check_backend(plan, catalog, "postgres", dp=True, rendered=dp)
    assert dp == exact
    # the run finds its query there: nothing is parsed or rendered again
    calls: list[str] = []
    monkeypatch.setattr(dialects, "render_node_sql", lambda sql, *args: calls.append(sql) or sql)
    assert plan_node_sql(plan, catalog, "postgres", source, dp) == exact[plan.node_sql(source)]
    assert plan_node_sql(plan, catalog, "postgres", rendered=dp) == exact[plan.node_sql()] and calls == []
    # an unbounded sum cannot be clamped: its DP terms refuse it later; the plan's own capped query is checked here
    unbounded = plan_query("SELECT SUM(amount_fen) FROM deposits", catalog)
    kept: dict[str, str] = {}
    check_backend(unbounded, catalog, "postgres", dp=True, rendered=kept)
    assert set(kept) == {unbounded.node_sql(), unbounded.node_sql(source)}
