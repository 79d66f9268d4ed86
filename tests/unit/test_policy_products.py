"""Products of two row values under a minimum group size: TPC-H's sums are values, a factor that filters is not.

The attacker's aim: a sum over a group k admits (every row counted) that is in truth a sum over a few of its rows,
chosen by a condition multiplied in as a factor. Each way to smuggle one in is refused, with a message about the
product that names the factor's column and construct (never a value of the query) and says how to ask instead;
TPC-H Q1's and Q6's sums, products of measured quantities, are accepted (their exact answers end to end:
tests/integration/test_products_e2e.py). The rules apply to exact answers under k: the role judged is hpf:base's
caseworker made exact again by a test policy (hpf:base itself makes caseworkers' answers differentially private).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from hpf.federation.catalog import load_catalog
from hpf.federation.errors import PlanError, PolicyViolation
from hpf.federation.planner import plan_query
from hpf.policies.engine import Asker, Decision, check_query
from hpf.policies.loader import load_policy
from hpf.policies.model import Policy
from hpf.policies.uses import column_uses

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TPCH = load_catalog(FIXTURES / "tpch_catalog.yaml")
# hpf:base with exact caseworkers (a test policy): the product rules hold where k applies, for exact answers only
EXACT_CASEWORKERS = FIXTURES / "policies" / "base-exact-caseworkers.yaml"
EXACT_BASE = load_policy(EXACT_CASEWORKERS)
OPEN = load_policy(FIXTURES / "policies" / "open.yaml")

Q1 = (
    "SELECT l_returnflag, l_linestatus, SUM(l_quantity) AS sum_qty, SUM(l_extendedprice) AS sum_base_price, "
    "SUM(l_extendedprice * (1 - l_discount)) AS sum_disc_price, "
    "SUM(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge, AVG(l_quantity) AS avg_qty, "
    "AVG(l_extendedprice) AS avg_price, AVG(l_discount) AS avg_disc, COUNT(*) AS count_order FROM lineitem "
    "WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL 90 DAY GROUP BY l_returnflag, l_linestatus "
    "ORDER BY l_returnflag, l_linestatus"
)
Q6 = (
    "SELECT SUM(l_extendedprice * l_discount) AS revenue FROM lineitem WHERE l_shipdate >= DATE '1994-01-01' "
    "AND l_shipdate < DATE '1995-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"
)


def check(sql: str, role: str = "caseworker", policy: Policy = EXACT_BASE, purpose: str = "") -> Decision:
    plan = plan_query(sql, TPCH)
    return check_query(policy, TPCH, plan, Asker("x", role, None), purpose, False, party="n")


def refused(sql: str, role: str = "caseworker", policy: Policy = EXACT_BASE, purpose: str = "") -> PolicyViolation:
    with pytest.raises(PolicyViolation) as info:
        check(sql, role, policy, purpose)
    err = info.value
    for literal in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Literal):  # no value of the query is echoed
        shown = f"'{literal.this}'" if literal.is_string else literal.this
        if literal.is_string or len(shown) > 1:  # (digits alone: k and "0 and 1" are in the messages)
            assert shown not in err.message and shown not in (err.hint or ""), (sql, shown)
    return err


# -- accepted: TPC-H's products of measured quantities ------------------------------------------------------------


def q1_without_its_where() -> str:
    """Q1 as the planner takes it (no INTERVAL arithmetic on dates): the same aggregates."""
    return Q1.replace("DATE '1998-12-01' - INTERVAL 90 DAY", "DATE '1998-09-02'")


@pytest.mark.parametrize("sql", [q1_without_its_where(), Q6], ids=["Q1", "Q6"])
def test_tpch_q1_and_q6_are_answered_exactly_under_k_by_caseworkers(sql: str) -> None:
    decision = check(sql)
    assert decision.min_group_size == 5 and decision.privacy.mode == "exact"


def test_tpch_q1_and_q6_are_accepted_for_analysts_who_answer_with_dp() -> None:
    for sql in (q1_without_its_where(), Q6):
        decision = check(sql, "analyst", purpose="statistics")
        assert decision.privacy.mode == "dp" and decision.min_group_size == 1  # DP replaces k for analysts


def test_a_product_of_measured_quantities_is_an_aggregate_use_only() -> None:
    """Operators may sum sensitive values but never filter on them: a product of them is no filter."""
    sql = "SELECT SUM(l_extendedprice * (1 - l_discount) * (1 + l_tax)), SUM(l_quantity * l_discount) FROM lineitem"
    assert check(sql, "operator", purpose="operations").min_group_size == 3
    uses = column_uses(plan_query(sql, TPCH), columns=TPCH.tables["lineitem"].columns)
    assert uses == {c: {"aggregate"} for c in ("l_extendedprice", "l_discount", "l_tax", "l_quantity")}


@pytest.mark.parametrize(
    "aggregate",
    [
        "SUM(CAST(l_extendedprice AS DECIMAL(38, 2)) * l_discount)",  # the planner's own widening, written out
        "SUM(-l_extendedprice * -(l_discount))",
        "SUM((l_extendedprice + 100) * (l_discount - l_tax))",
        "SUM(l_extendedprice * l_discount) FILTER (WHERE l_quantity < 24)",  # the condition where k sees it
        "SUM(CASE WHEN l_quantity < 24 THEN l_extendedprice * l_discount END)",
        "AVG(l_extendedprice * l_discount)",
        "COUNT(l_extendedprice * l_discount)",
        "SUM(l_late * 3), SUM(l_priority * 2)",  # a column times a constant is no product of two row values
        "SUM(l_extendedprice * l_discount) / SUM(l_extendedprice)",  # arithmetic over aggregates
    ],
)
def test_other_products_of_measured_quantities_are_values(aggregate: str) -> None:
    assert check(f"SELECT l_returnflag, {aggregate} FROM lineitem GROUP BY 1").min_group_size == 5


# -- refused: every way a product could smuggle a condition past k ----------------------------------------------


def _product(reason: str, column: str, construct: str = "") -> str:
    return {
        "computes": f"multiplies by a factor that computes {construct} over column {column}",
        "itself": f"multiplies column {column} by itself",
        "category": f"multiplies by column {column}, which has a group-by domain",
        "unbounded": f"multiplies by column {column}, which declares no bounds",
        "two-valued": f"multiplies by column {column}, whose declared bounds allow only two values",
    }[reason]


ATTACKS = [
    # a condition computed as a factor
    ("SUM(l_extendedprice * CASE WHEN l_returnflag = 'R' THEN 1 ELSE 0 END)", "computes", "l_returnflag", "a CASE"),
    ("SUM(l_extendedprice * CASE WHEN l_returnflag = 'R' THEN 1 END)", "computes", "l_returnflag", "a CASE"),
    ("SUM(l_extendedprice * IF(l_quantity > 30, 1, 0))", "computes", "l_quantity", "a CASE"),
    (
        "SUM(l_extendedprice * (l_quantity > 30)::INTEGER)",
        "computes",
        "l_quantity",
        "a condition turned into a number by CAST",
    ),
    (
        "SUM(l_extendedprice * CAST(l_discount IS NULL AS INTEGER))",
        "computes",
        "l_discount",
        "a condition turned into a number by CAST",
    ),
    (
        "SUM(l_extendedprice * CAST(l_discount BETWEEN 0.05 AND 0.07 AS DECIMAL(38, 2)))",
        "computes",
        "l_discount",
        "a condition turned into a number by CAST",
    ),
    ("SUM(l_extendedprice * CAST(l_rush AS INTEGER))", "computes", "l_rush", "a BOOLEAN turned into a number by CAST"),
    ("SUM(l_extendedprice * SIGN(l_discount))", "computes", "l_discount", "SIGN"),
    ("SUM(l_extendedprice * SIGN(l_discount - 0.05))", "computes", "l_discount", "SIGN"),
    ("SUM(l_extendedprice * NULLIF(l_discount, 0))", "computes", "l_discount", "NULLIF"),
    ("SUM(l_extendedprice * COALESCE(l_discount, 0))", "computes", "l_discount", "COALESCE"),
    ("SUM(l_extendedprice * GREATEST(l_discount, 0.05))", "computes", "l_discount", "GREATEST"),
    ("SUM(l_extendedprice * LEAST(l_discount, 0.05))", "computes", "l_discount", "LEAST"),
    ("SUM(l_extendedprice * ABS(l_discount - 0.05))", "computes", "l_discount", "ABS"),
    ("SUM(l_extendedprice * (l_priority % 2))", "computes", "l_priority", "%"),
    (
        "SUM(l_extendedprice * TRY_CAST(l_discount AS DECIMAL(4, 2)))",
        "computes",
        "l_discount",
        "a TRY_CAST to DECIMAL(4, 2)",
    ),
    ("SUM(l_extendedprice * YEAR(l_shipdate))", "computes", "l_shipdate", "YEAR"),
    ("SUM(l_extendedprice * LENGTH(l_returnflag))", "computes", "l_returnflag", "LENGTH"),
    # nested: the condition deeper inside a factor, or the product inside a CASE's value
    (
        "SUM(l_extendedprice * (l_tax * (l_quantity > 30)::INTEGER))",
        "computes",
        "l_quantity",
        "a condition turned into a number by CAST",
    ),
    ("SUM(l_extendedprice * (1 + CASE WHEN l_quantity > 30 THEN 1 END))", "computes", "l_quantity", "a CASE"),
    ("SUM(CASE WHEN l_returnflag = 'R' THEN l_extendedprice * l_late END)", "two-valued", "l_late", ""),
    ("SUM((l_extendedprice * l_discount) * l_late)", "two-valued", "l_late", ""),
    # a column of 0 and 1 (declared so), as a factor or in (1 - c), negated, or added into a factor
    ("SUM(l_extendedprice * l_late)", "two-valued", "l_late", ""),
    ("SUM(l_extendedprice * (1 - l_late))", "two-valued", "l_late", ""),
    ("SUM(l_extendedprice * -l_late)", "two-valued", "l_late", ""),
    ("SUM(l_extendedprice * (l_discount + l_late))", "two-valued", "l_late", ""),
    ("SUM(l_late * l_extendedprice)", "two-valued", "l_late", ""),
    ("AVG(l_extendedprice * l_late)", "two-valued", "l_late", ""),
    ("COUNT(l_extendedprice * (1 - l_late))", "two-valued", "l_late", ""),
    # a column whose values the catalog does not declare: it may be a flag
    ("SUM(l_extendedprice * l_priority)", "unbounded", "l_priority", ""),
    ("SUM(l_extendedprice * (1 - l_priority))", "unbounded", "l_priority", ""),
    # a category's codes as weights
    ("SUM(l_extendedprice * l_linenumber)", "category", "l_linenumber", ""),
    # a column times itself: its powers sum the rows apart by value
    ("SUM(l_extendedprice * l_extendedprice)", "itself", "l_extendedprice", ""),
    ("SUM(l_discount * (1 - l_discount))", "itself", "l_discount", ""),
    ("SUM((l_extendedprice + l_tax) * (l_extendedprice - l_tax))", "itself", "l_extendedprice", ""),
    ("SUM(l_extendedprice * l_discount * l_discount)", "itself", "l_discount", ""),
]


@pytest.mark.parametrize(("aggregate", "reason", "column", "construct"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_a_product_that_filters_is_refused_naming_its_factor(
    aggregate: str, reason: str, column: str, construct: str
) -> None:
    sql = f"SELECT l_linestatus, {aggregate} FROM lineitem GROUP BY l_linestatus"
    err = refused(sql)
    assert err.code == "POLICY_AGGREGATE_PRODUCT", (err.code, err.message)
    func = aggregate.split("(")[0]
    assert err.message.startswith(f"the argument of {func} is a product that {_product(reason, column, construct)}: ")
    assert err.message.endswith("the minimum group size (5) does not see")
    assert err.rule == "n: roles.caseworker.min_group_size"
    assert err.hint and column in err.hint


def test_each_refusal_says_how_to_ask_instead() -> None:
    hints = {
        "SUM(l_extendedprice * (l_quantity > 30)::INTEGER)": "multiply plain values only (columns and numbers with "
        "+ - * and casts to a wide number) and put the condition on l_quantity in a filter: SUM(a * b) FILTER "
        "(WHERE condition)",
        "SUM(l_extendedprice * l_late)": "filter on it instead, SUM(x) FILTER (WHERE l_late = ...), so the minimum "
        "group size applies to the rows it covers",
        "SUM(l_extendedprice * l_priority)": "if l_priority is a measured quantity, declare its bounds: [low, high] "
        "in the catalog every party holds; if it is a flag or a code, filter on it: SUM(x) FILTER (WHERE "
        "l_priority = ...)",
        "SUM(l_extendedprice * l_linenumber)": "group by l_linenumber or filter on it, SUM(x) FILTER (WHERE "
        "l_linenumber = ...), where the minimum group size applies",
        "SUM(l_discount * l_discount)": "ask VAR_POP(l_discount) or STDDEV_POP(l_discount) for its square; a column "
        "may stand in one factor of a product only",
    }
    for aggregate, hint in hints.items():
        assert refused(f"SELECT {aggregate} FROM lineitem").hint == hint, aggregate
    err = refused("SELECT SUM(l_extendedprice * l_late) FROM lineitem")
    assert err.message == (
        "the argument of SUM is a product that multiplies by column l_late, whose declared bounds allow only two "
        "values: a factor of two values is a condition, and the product a filtered sum over rows the minimum group "
        "size (5) does not see"
    )


def test_the_rule_names_the_k_of_the_table_that_applies(tmp_path: Path) -> None:
    node = tmp_path / "node.yaml"
    node.write_text(
        f"version: 1\nextends: {EXACT_CASEWORKERS}\nroles:\n  caseworker:\n    tables:\n      lineitem:\n"
        "        min_group_size: 20\n"
    )
    err = refused("SELECT SUM(l_extendedprice * l_late) FROM lineitem", policy=load_policy(node))
    assert err.rule == "n: roles.caseworker.tables.lineitem.min_group_size" and "(20)" in err.message


@pytest.mark.parametrize(
    "aggregate",
    [
        "SUM(l_extendedprice * (l_discount / l_tax))",  # a division is a DOUBLE: no exact sum of it
        "SUM(l_extendedprice * (l_priority // 1000))",
        "SUM(CAST(l_extendedprice * (l_discount / l_tax) AS DECIMAL(38, 2)))",  # nor a cast of one that could fail
        "SUM(l_extendedprice * CAST(l_returnflag AS INTEGER))",  # text into a number could fail
        "SUM(l_extendedprice * l_extendedprice * l_extendedprice * l_extendedprice)",  # could overflow a sum
    ],
)
def test_what_the_planner_refuses_never_reaches_the_product_rule(aggregate: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_query(f"SELECT {aggregate} FROM lineitem", TPCH)
    assert info.value.code in ("PLAN_INEXACT_ARGUMENT", "PLAN_CAST_NOT_TOTAL", "PLAN_MAY_OVERFLOW")


# -- where k does not apply, a product that filters is a filter ---------------------------------------------------


def test_a_product_that_filters_is_a_filter_use_of_its_factors() -> None:
    """Operators may group by and sum sensitive values, never filter on them: weighing by a flag filters."""
    err = refused("SELECT SUM(l_extendedprice * l_late) FROM lineitem", "operator", purpose="operations")
    assert err.code == "POLICY_COLUMN_DENIED"
    assert err.message == (
        "column l_extendedprice (sensitive) may not be used in a filter: it is a factor of a product that multiplies "
        "by column l_late, whose declared bounds allow only two values, which counts as a filter"
    )
    assert err.rule == "n: roles.operator.classes.sensitive"
    assert err.hint == (
        "column l_extendedprice may be used here only in the output, as a group key, inside an aggregate; filter on "
        "it instead, SUM(x) FILTER (WHERE l_late = ...), so the minimum group size applies to the rows it covers"
    )


def test_a_column_allowed_only_as_a_filter_is_no_factor(tmp_path: Path) -> None:
    node = tmp_path / "node.yaml"
    node.write_text(
        f"version: 1\nextends: {EXACT_CASEWORKERS}\nroles:\n  caseworker:\n    tables:\n      lineitem:\n"
        "        columns: {l_discount: [filter]}\n"
    )
    err = refused("SELECT SUM(l_extendedprice * l_discount) FROM lineitem", policy=load_policy(node))
    assert err.code == "POLICY_COLUMN_DENIED"
    assert err.message == "column l_discount (sensitive) may not be used inside an aggregate"


def test_under_dp_or_k_of_1_a_product_that_filters_is_judged_as_a_filter_only() -> None:
    sql = "SELECT SUM(l_extendedprice * l_late) FROM lineitem"
    assert check(sql, "analyst", purpose="statistics").privacy.mode == "dp"  # analysts may filter sensitive values
    assert check(sql, policy=OPEN).min_group_size == 1  # every group is released anyway
    uses = column_uses(plan_query(sql, TPCH), columns=TPCH.tables["lineitem"].columns)
    assert uses == {"l_extendedprice": {"aggregate", "filter"}, "l_late": {"aggregate", "filter"}}


def test_without_the_catalogs_bounds_no_product_of_columns_is_a_value() -> None:
    """Fail closed: the judgement reads the catalog's declarations; column types alone declare no quantity."""
    plan = plan_query("SELECT SUM(l_extendedprice * l_discount) FROM lineitem", TPCH)
    types = {n: c.type for n, c in TPCH.tables["lineitem"].columns.items()}
    assert column_uses(plan, types) == {c: {"aggregate", "filter"} for c in ("l_extendedprice", "l_discount")}
    assert column_uses(plan, columns=TPCH.tables["lineitem"].columns) == {
        c: {"aggregate"} for c in ("l_extendedprice", "l_discount")
    }


def test_the_products_examples() -> None:
    import doctest

    import hpf.policies.products

    result = doctest.testmod(hpf.policies.products, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# -- a variance sums its argument's square: the square multiplies every two of the argument's columns -------------

# caseworkers who may ask variances, exactly, under k = 5 (the base grants variances to DP analysts only)
VARIANCES = f"""
version: 1
extends: {EXACT_CASEWORKERS}
roles:
  caseworker:
    aggregates: [count, sum, avg, var_pop, var_samp, stddev_pop, stddev_samp]
"""


@pytest.fixture(scope="module")
def variances(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    path = tmp_path_factory.mktemp("policy") / "node.yaml"
    path.write_text(VARIANCES)
    return load_policy(path)


def test_a_variance_of_a_sum_would_hand_out_the_product_the_rule_refuses() -> None:
    """The arithmetic the attack relies on, over rows of DuckDB: SUM((x + f)^2) - SUM(x^2) - SUM(f^2) = 2 SUM(x f),
    and every term of it is read off VAR_POP(x + f), VAR_POP(x), AVG(f) and COUNT(*)."""
    import duckdb

    rows = [(100.0, 0), (250.0, 1), (40.0, 0), (75.0, 1), (310.0, 0)]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (x DOUBLE, f INTEGER)")
    con.executemany("INSERT INTO t VALUES (?, ?)", rows)
    n, v_sum, v_x, mean_x, mean_f = con.execute(
        "SELECT COUNT(*), VAR_POP(x + f), VAR_POP(x), AVG(x), AVG(f) FROM t"
    ).fetchone()
    sumsq = lambda var, mean: n * (var + mean * mean)  # noqa: E731
    flagged = (sumsq(v_sum, mean_x + mean_f) - sumsq(v_x, mean_x) - n * mean_f) / 2  # f * f = f for 0 and 1
    assert round(flagged, 6) == 250.0 + 75.0  # the flagged rows' sum, while k sees all five


VARIANCE_ATTACKS = [
    # a two-valued, undeclared or category column added in: its product with the other lands in the square
    ("VAR_POP(l_extendedprice + l_late)", "two-valued", "l_late"),
    ("VAR_SAMP(l_extendedprice - l_late)", "two-valued", "l_late"),
    ("STDDEV_POP(l_extendedprice + 1000 * l_late)", "two-valued", "l_late"),
    ("STDDEV_SAMP(l_extendedprice + l_priority)", "unbounded", "l_priority"),
    ("VAR_POP(l_extendedprice + l_linenumber)", "category", "l_linenumber"),
    # under a filter (the planner's CASE) the square is still the square of the sum
    ("VAR_POP(l_extendedprice + l_late) FILTER (WHERE l_quantity > 10)", "two-valued", "l_late"),
    ("VAR_POP(l_extendedprice + CASE WHEN l_quantity > 10 THEN l_late END)", "two-valued", "l_late"),
    # a product in the argument: its square multiplies each of its columns by itself
    ("VAR_POP(l_extendedprice * l_discount)", "itself", "l_extendedprice"),
    ("STDDEV_POP(l_extendedprice * (1 - l_discount))", "itself", "l_extendedprice"),
]


@pytest.mark.parametrize(("aggregate", "reason", "column"), VARIANCE_ATTACKS, ids=[a[0] for a in VARIANCE_ATTACKS])
def test_a_variance_whose_square_filters_is_refused(
    aggregate: str, reason: str, column: str, variances: Policy
) -> None:
    err = refused(f"SELECT l_linestatus, {aggregate} FROM lineitem GROUP BY l_linestatus", policy=variances)
    assert err.code == "POLICY_AGGREGATE_PRODUCT", (err.code, err.message)
    func = aggregate.split("(")[0]
    assert err.message.startswith(f"the square of {func}'s argument is a product that {_product(reason, column)}: ")
    assert err.rule == "n: roles.caseworker.min_group_size"
    assert err.hint and err.hint.startswith(f"{func} sums its argument's square, which multiplies every two of its ")


@pytest.mark.parametrize(
    "aggregate",
    [
        "VAR_POP(l_extendedprice)",  # one column's square is the variance the rule grants
        "STDDEV_SAMP(l_discount * 100 - 5)",
        "VAR_POP(l_extendedprice) FILTER (WHERE l_late = 1)",  # the condition where k sees it
        "VAR_SAMP(CASE WHEN l_quantity > 10 THEN l_extendedprice END)",
        "VAR_POP(l_extendedprice + l_quantity)",  # the square's product of two measured quantities is a value
        "VAR_POP(l_extendedprice - l_tax) FILTER (WHERE l_late = 0)",
        "VAR_POP(l_late)",  # a flag's own variance says no more than its sum
    ],
)
def test_a_variance_of_one_column_or_of_measured_quantities_is_answered(aggregate: str, variances: Policy) -> None:
    assert check(f"SELECT l_linestatus, {aggregate} FROM lineitem GROUP BY 1", policy=variances).min_group_size == 5


def test_a_variance_whose_square_filters_is_a_filter_use_of_its_columns() -> None:
    uses = column_uses(
        plan_query("SELECT VAR_POP(l_extendedprice + l_late) FROM lineitem", TPCH),
        columns=TPCH.tables["lineitem"].columns,
    )
    assert uses == {"l_extendedprice": {"aggregate", "filter"}, "l_late": {"aggregate", "filter"}}
    uses = column_uses(
        plan_query("SELECT VAR_POP(l_extendedprice + l_quantity) FROM lineitem", TPCH),
        columns=TPCH.tables["lineitem"].columns,
    )
    assert uses == {"l_extendedprice": {"aggregate"}, "l_quantity": {"aggregate"}}
