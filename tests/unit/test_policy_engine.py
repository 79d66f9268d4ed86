"""A node's policy decides who may ask what: every refusal code, its rule path and hint, and allowed queries."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import yaml

import hpf.policies.uses
from hpf.demo.examples import EXAMPLES, Example
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.errors import PolicyViolation
from hpf.federation.hpf_schema import demo_catalog
from hpf.federation.planner import plan_query
from hpf.policies import DEFAULT_POLICY
from hpf.policies.engine import Asker, Decision, check_query
from hpf.policies.loader import load_policy
from hpf.policies.model import Policy
from hpf.policies.query_stages import COMPUTED_NOTE, SHAPE_HINT

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

CATALOG = Catalog.model_validate(
    {
        "federation": "t",
        "nodes": [{"id": "hangzhou", "address": "127.0.0.1:1"}],
        "tables": {
            "deposits": {
                "columns": {
                    "person_id": {"type": "VARCHAR", "class": "identifier"},
                    "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": ["310000", "330100"]}},
                    "amount_fen": {"type": "BIGINT", "class": "public"},
                    "employer_id": {"type": "VARCHAR", "class": "commercial"},
                }
            },
            "loans": {
                "columns": {
                    "person_id": {"type": "VARCHAR", "class": "identifier"},
                    "status": {"type": "VARCHAR", "class": "sensitive", "domain": {"values": ["active", "settled"]}},
                    "outstanding_fen": {"type": "BIGINT", "class": "sensitive"},
                    "term_months": {"type": "INTEGER", "class": "sensitive", "domain": {"values": [120, 240]}},
                }
            },
            "branches": {"columns": {"n": {"type": "BIGINT", "class": "public"}}},
        },
    }
)

POLICY = """
version: 1
purposes:
  loan-review: checking a loan applicant's declared history
  statistics: aggregate reporting
classes:
  identifier: []
  public: [output, filter, group, aggregate]
  sensitive: [filter, aggregate]
  commercial: []
roles:
  caseworker:
    aggregates: [count, sum, avg]
    min_group_size: 5
    rate_limit: {requests: 60, per_seconds: 60}
    tables:
      deposits: {}
      loans:
        purposes: [loan-review]
        min_group_size: 7
        columns: {outstanding_fen: [aggregate], status: [filter, group, output]}
  analyst:
    aggregates: [count, sum, avg, var_pop]
    min_group_size: 10
    purposes: [statistics]
    classes: {sensitive: [aggregate]}
    tables:
      deposits: {}
      loans: {}
      "*": {purposes: []}
  operator:
    aggregates: [count]
    min_group_size: 10
    tables:
      loans:
        purposes: [loan-review]
        consent: required
        columns: {person_id: [filter]}
"""

CASEWORKER = Asker(name="li.na", role="caseworker", region="hangzhou")
ANALYST = Asker(name="wang.fang", role="analyst", region=None)
OPERATOR = Asker(name="ops.7", role="operator", region=None)  # a role with a consented table


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    path = tmp_path_factory.mktemp("policy") / "node.yaml"
    path.write_text(POLICY)
    return load_policy(path)


def check(policy: Policy, sql: str, asker: Asker, purpose: str = "", consent: bool = False) -> Decision:
    return check_query(policy, CATALOG, plan_query(sql, CATALOG), asker, purpose, consent, party="hangzhou")


def refused(policy: Policy, sql: str, asker: Asker, purpose: str = "", consent: bool = False) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as info:
        check(policy, sql, asker, purpose, consent)
    err = info.value
    assert err.code.startswith("POLICY_") and err.hint and err.rule and err.rule.startswith("hangzhou: ")
    return err


# -- allowed ---------------------------------------------------------------------------------------------


def test_allowed_query_gets_k_and_the_rules_that_allowed_it(policy: Policy) -> None:
    d = check(policy, "SELECT city_code, COUNT(*), SUM(amount_fen) FROM deposits GROUP BY city_code", CASEWORKER)
    assert d == Decision(
        min_group_size=5,
        role="caseworker",
        rules=(
            "hangzhou: roles.caseworker",
            "hangzhou: roles.caseworker.tables.deposits",
            "hangzhou: roles.caseworker.aggregates",
            "hangzhou: classes.public",
            "hangzhou: roles.caseworker.min_group_size",
        ),
        privacy_rule="roles.caseworker.privacy",
    )


def test_table_k_purpose_and_column_overrides_allow(policy: Policy) -> None:
    sql = "SELECT status, SUM(outstanding_fen) FROM loans WHERE term_months = 240 GROUP BY status"
    d = check(policy, sql, CASEWORKER, purpose="loan-review")
    assert d.min_group_size == 7
    assert "hangzhou: roles.caseworker.tables.loans.purposes" in d.rules
    assert "hangzhou: roles.caseworker.tables.loans.columns.status" in d.rules
    assert "hangzhou: classes.sensitive" in d.rules  # term_months in a filter
    assert d.rules[-1] == "hangzhou: roles.caseworker.tables.loans.min_group_size"


def test_count_star_uses_no_column(policy: Policy) -> None:
    d = check(policy, "SELECT COUNT(*) FROM loans", OPERATOR, purpose="loan-review", consent=True)
    assert d.min_group_size == 10 and "hangzhou: roles.operator.tables.loans.consent" in d.rules


def test_identifier_lookup_where_the_table_allows_it(policy: Policy) -> None:
    sql = "SELECT COUNT(*) FROM loans WHERE person_id = '330106199001011234'"
    assert check(policy, sql, OPERATOR, purpose="loan-review", consent=True).role == "operator"


def test_wildcard_table_and_its_purpose_override(policy: Policy) -> None:
    d = check(policy, "SELECT SUM(n) FROM branches", ANALYST)  # "*" says purposes: [] (none needed)
    assert "hangzhou: roles.analyst.tables.*" in d.rules
    with pytest.raises(PolicyViolation) as info:
        check(policy, "SELECT SUM(n) FROM branches", CASEWORKER)
    assert info.value.code == "POLICY_TABLE_DENIED"


# -- every refusal, in order -------------------------------------------------------------------------------


def test_role_denied_names_the_roles_that_may(policy: Policy) -> None:
    err = refused(policy, "SELECT COUNT(*) FROM deposits", Asker("icbc", "integrator", None))
    assert err.code == "POLICY_ROLE_DENIED"
    assert err.rule == "hangzhou: roles"
    assert err.message == "role 'integrator' may not query this node"
    assert err.hint == "roles that may query this node: caseworker, analyst, operator"


def test_auditor_is_told_to_use_hpf_audit(policy: Policy) -> None:
    err = refused(policy, "SELECT COUNT(*) FROM deposits", Asker("zhao", "auditor", None))
    assert err.code == "POLICY_ROLE_DENIED" and "hpf audit" in (err.hint or "")


def test_table_denied(policy: Policy) -> None:
    check(policy, "SELECT COUNT(*) FROM loans", OPERATOR, "loan-review", True)  # operators may query loans...
    err = refused(policy, "SELECT COUNT(*) FROM deposits", OPERATOR)  # ...not deposits
    assert err.code == "POLICY_TABLE_DENIED"
    assert err.rule == "hangzhou: roles.operator.tables"
    assert err.message == "role operator may not query table deposits on this node"
    assert err.hint == "tables role operator may query here: loans"


def test_purpose_required(policy: Policy) -> None:
    err = refused(policy, "SELECT COUNT(*) FROM loans", CASEWORKER)
    assert err.code == "POLICY_PURPOSE_REQUIRED"
    assert err.rule == "hangzhou: roles.caseworker.tables.loans.purposes"
    assert err.hint == "ask again with a purpose: loan-review"


def test_purpose_required_by_the_role(policy: Policy) -> None:
    err = refused(policy, "SELECT COUNT(*) FROM deposits", ANALYST)
    assert err.code == "POLICY_PURPOSE_REQUIRED" and err.rule == "hangzhou: roles.analyst.purposes"


def test_purpose_not_allowed(policy: Policy) -> None:
    err = refused(policy, "SELECT COUNT(*) FROM loans", CASEWORKER, purpose="statistics")
    assert err.code == "POLICY_PURPOSE_NOT_ALLOWED"
    assert err.rule == "hangzhou: roles.caseworker.tables.loans.purposes"
    assert err.message == "the 'statistics' purpose does not allow role caseworker to query loans"
    assert err.hint == "purposes that allow it: loan-review"


def test_purpose_unknown(policy: Policy) -> None:
    err = refused(policy, "SELECT COUNT(*) FROM deposits", CASEWORKER, purpose="curiosity")
    assert err.code == "POLICY_PURPOSE_UNKNOWN"
    assert err.rule == "hangzhou: purposes"
    assert err.hint == "purposes this node recognises: loan-review, statistics"


def test_a_purpose_that_is_no_code_is_not_echoed(policy: Policy) -> None:
    err = refused(policy, "SELECT COUNT(*) FROM deposits", CASEWORKER, purpose="Zhang San 330106199001011234")
    assert err.code == "POLICY_PURPOSE_UNKNOWN" and "330106" not in err.message and "Zhang" not in err.message


def test_consent_required(policy: Policy) -> None:
    err = refused(policy, "SELECT COUNT(*) FROM loans", OPERATOR, purpose="loan-review")
    assert err.code == "POLICY_CONSENT_REQUIRED"
    assert err.rule == "hangzhou: roles.operator.tables.loans.consent"
    assert "consent" in (err.hint or "")


def test_aggregate_denied(policy: Policy) -> None:
    err = refused(policy, "SELECT VAR_SAMP(amount_fen) FROM deposits", CASEWORKER)
    assert err.code == "POLICY_AGGREGATE_DENIED"
    assert err.rule == "hangzhou: roles.caseworker.aggregates"
    assert err.message == "aggregate VAR_SAMP is not allowed for role caseworker"
    assert err.hint == "aggregates role caseworker may use: COUNT, SUM, AVG"


def test_aggregate_in_having_only_is_checked(policy: Policy) -> None:
    sql = "SELECT city_code, COUNT(*) FROM deposits GROUP BY city_code HAVING STDDEV_POP(amount_fen) > 0"
    assert refused(policy, sql, CASEWORKER).code == "POLICY_AGGREGATE_DENIED"


def test_column_denied_identifier_filter(policy: Policy) -> None:
    err = refused(policy, "SELECT COUNT(*) FROM deposits WHERE person_id = '330106199001011234'", CASEWORKER)
    assert err.code == "POLICY_COLUMN_DENIED"
    assert err.message == "column person_id (identifier) may not be used in a filter"
    assert err.rule == "hangzhou: classes.identifier"
    assert err.hint == "leave column person_id out"
    assert "330106" not in str(err)


def test_column_denied_sensitive_output(policy: Policy) -> None:
    err = refused(policy, "SELECT term_months, COUNT(*) FROM loans GROUP BY 1", CASEWORKER, purpose="loan-review")
    assert err.code == "POLICY_COLUMN_DENIED"
    assert err.message == "column term_months (sensitive) may not be used in the output"
    assert err.rule == "hangzhou: classes.sensitive"
    assert err.hint == "column term_months may be used here only in a filter, inside an aggregate"


def test_column_denied_by_a_per_column_override(policy: Policy) -> None:
    sql = "SELECT COUNT(*) FROM loans WHERE outstanding_fen > 100000"
    err = refused(policy, sql, CASEWORKER, purpose="loan-review")
    assert err.message == "column outstanding_fen (sensitive) may not be used in a filter"
    assert err.rule == "hangzhou: roles.caseworker.tables.loans.columns.outstanding_fen"
    assert err.hint == "column outstanding_fen may be used here only inside an aggregate"
    assert "100000" not in str(err)


def test_column_denied_by_the_roles_classes(policy: Policy) -> None:
    sql = "SELECT COUNT(*) FROM loans WHERE status = 'active'"
    err = refused(policy, sql, ANALYST, purpose="statistics")
    assert err.message == "column status (sensitive) may not be used in a filter"
    assert err.rule == "hangzhou: roles.analyst.classes.sensitive"
    assert "active" not in str(err)


def test_commercial_column_in_a_filter_clause(policy: Policy) -> None:
    sql = "SELECT SUM(amount_fen) FILTER (WHERE employer_id = 'E-7') FROM deposits"
    err = refused(policy, sql, CASEWORKER)
    assert err.message == "column employer_id (commercial) may not be used in a filter"
    assert "E-7" not in str(err)


def test_checks_run_in_order(policy: Policy) -> None:
    # wrong purpose, no consent, a denied aggregate and a denied column at once: the purpose is named first
    sql = "SELECT SUM(outstanding_fen) FROM loans WHERE status = 'active'"
    assert refused(policy, sql, OPERATOR, purpose="statistics").code == "POLICY_PURPOSE_NOT_ALLOWED"
    assert refused(policy, sql, OPERATOR, purpose="loan-review").code == "POLICY_CONSENT_REQUIRED"
    assert refused(policy, sql, OPERATOR, "loan-review", True).code == "POLICY_AGGREGATE_DENIED"
    sql = "SELECT status, COUNT(*) FROM loans GROUP BY status"
    assert refused(policy, sql, OPERATOR, "loan-review", True).code == "POLICY_COLUMN_DENIED"


# -- fail closed: computing on a column filters on it; group keys are output; k covers what it counts -------


def test_a_comparison_inside_an_aggregate_is_a_filter(policy: Policy) -> None:
    # caseworker: outstanding_fen may only be summed; SUM of a comparison counts the loans above an amount
    for sql in (
        "SELECT SUM(CAST(outstanding_fen > 100000000 AS INTEGER)) FROM loans",
        "SELECT SUM((outstanding_fen = 123456789)::INTEGER) FROM loans",
        "SELECT COUNT(NULLIF(outstanding_fen, 123456789)) FROM loans",
        "SELECT SUM(SIGN(outstanding_fen - 123456789)) FROM loans",
        "SELECT SUM(GREATEST(outstanding_fen, 123456789)) FROM loans",
    ):
        err = refused(policy, sql, CASEWORKER, purpose="loan-review")
        assert err.code == "POLICY_COLUMN_DENIED", sql
        assert err.message == "column outstanding_fen (sensitive) may not be used in a filter"
        assert err.rule == "hangzhou: roles.caseworker.tables.loans.columns.outstanding_fen"
        assert err.hint == f"column outstanding_fen may be used here only inside an aggregate ({COMPUTED_NOTE})"
        assert "123456789" not in str(err) and "100000000" not in str(err)
    d = check(policy, "SELECT SUM(outstanding_fen * 2 - 1) FROM loans", CASEWORKER, purpose="loan-review")
    assert d.min_group_size == 7


def test_a_case_key_compares_the_value_it_tests(policy: Policy) -> None:
    # status may be grouped (and shown) but outstanding_fen only summed: a CASE key over it is a filter
    sql = "SELECT COUNT(*) FROM loans GROUP BY status, CASE WHEN outstanding_fen > 100000000 THEN 'hi' ELSE 'lo' END"
    err = refused(policy, sql, CASEWORKER, purpose="loan-review")
    assert err.code == "POLICY_COLUMN_DENIED"
    assert err.message == "column outstanding_fen (sensitive) may not be used in the output"
    assert "100000000" not in str(err)


def test_a_group_key_reaches_the_asker_even_when_not_selected(policy: Policy) -> None:
    # term_months may be filtered and aggregated, never shown: grouping by it shows it (every cell is decrypted)
    for sql in (
        "SELECT term_months, COUNT(*) FROM loans GROUP BY term_months",
        "SELECT COUNT(*) FROM loans GROUP BY term_months",
        "SELECT status, COUNT(*) FROM loans GROUP BY status, term_months",
    ):
        err = refused(policy, sql, CASEWORKER, purpose="loan-review")
        assert err.code == "POLICY_COLUMN_DENIED", sql
        assert err.message == "column term_months (sensitive) may not be used in the output"
    assert check(policy, "SELECT COUNT(*) FROM loans GROUP BY status", CASEWORKER, purpose="loan-review")


@pytest.mark.parametrize(
    "aggregate",
    [
        "SUM(CASE WHEN city_code = '310000' THEN 1 ELSE 0 END)",
        "SUM(IF(city_code = '310000', 1, 0))",
        "SUM(CAST(city_code = '310000' AS INTEGER))",
        "SUM((amount_fen > 100000)::INTEGER)",
        "SUM(CASE WHEN city_code = '310000' THEN amount_fen ELSE 0 END)",
        "AVG(CASE WHEN city_code = '310000' THEN 1.0 ELSE 0.0 END)",
        "COUNT(CASE WHEN city_code = '310000' THEN 1 ELSE 0 END)",
        "SUM(COALESCE(CASE WHEN city_code = '310000' THEN 1 END, 0))",
        "SUM(CASE WHEN city_code = '310000' THEN 1 WHEN city_code <> '310000' THEN 0 END)",
        "SUM(CASE WHEN city_code = '310000' THEN 1 WHEN TRUE THEN 1000000 END)",
        "SUM(CASE city_code WHEN '310000' THEN 1 WHEN '330100' THEN 2 END)",
        "SUM(CASE WHEN city_code = '310000' THEN amount_fen END + CASE WHEN amount_fen > 0 THEN 1 ELSE 0 END)",
        "SUM(ABS(amount_fen))",
        "COUNT(NULLIF(amount_fen, 0))",
    ],
)
def test_k_applies_to_the_rows_an_aggregate_counts(policy: Policy, aggregate: str) -> None:
    err = refused(policy, f"SELECT city_code, {aggregate} FROM deposits GROUP BY city_code", CASEWORKER)
    assert err.code == "POLICY_AGGREGATE_SHAPE"
    assert err.rule == "hangzhou: roles.caseworker.min_group_size"
    assert err.hint == SHAPE_HINT
    assert err.hint == (
        "write it as AGG(x) FILTER (WHERE cond) or CASE WHEN cond THEN x END (no ELSE), so the minimum group "
        "size applies to the rows it covers"
    )
    func = aggregate.split("(")[0]
    assert err.message == (
        f"the argument of {func} computes a condition as a value: it would count rows that the minimum group "
        "size (5) does not see"
    )
    assert "310000" not in err.message and "100000" not in err.message


@pytest.mark.parametrize(
    "aggregates",
    [
        "COUNT(*), SUM(amount_fen), AVG(amount_fen)",
        "SUM(amount_fen) FILTER (WHERE city_code = '310000'), COUNT(*) FILTER (WHERE amount_fen > 100000)",
        "COUNT(amount_fen) FILTER (WHERE amount_fen > 0)",
        "SUM(CASE WHEN city_code = '310000' THEN amount_fen END)",
        "SUM(CASE WHEN city_code = '310000' THEN amount_fen ELSE NULL END)",
        "SUM(IF(city_code = '310000', amount_fen, NULL))",
        "SUM(CASE WHEN city_code = '310000' THEN 1 END)",
        "SUM(CASE WHEN city_code = '310000' THEN amount_fen WHEN amount_fen > 9 THEN amount_fen END)",
        "SUM(CASE WHEN city_code = '310000' THEN CASE WHEN amount_fen > 0 THEN amount_fen * 2 END END)",
        "SUM(amount_fen * 3), SUM(-(amount_fen - 1) + 2)",
        "SUM(CAST(amount_fen AS DECIMAL(38, 2)))",
        "SUM(amount_fen) / COUNT(*), SUM(amount_fen) * 2",
        "COUNT(1), SUM(1)",
    ],
)
def test_aggregates_of_values_are_k_countable(policy: Policy, aggregates: str) -> None:
    sql = f"SELECT city_code, {aggregates} FROM deposits GROUP BY city_code"
    assert check(policy, sql, CASEWORKER).min_group_size == 5


def test_variances_of_columns_are_k_countable(policy: Policy) -> None:
    sql = "SELECT AVG(amount_fen), VAR_POP(amount_fen) FILTER (WHERE city_code = '310000') FROM deposits"
    assert check(policy, sql, ANALYST, purpose="statistics").min_group_size == 10


def test_the_shape_rule_names_the_k_that_applies(policy: Policy) -> None:
    sql = "SELECT SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END) FROM loans"
    err = refused(policy, sql, CASEWORKER, purpose="loan-review")  # loans: the table's own k = 7
    assert err.code == "POLICY_AGGREGATE_SHAPE"
    assert err.rule == "hangzhou: roles.caseworker.tables.loans.min_group_size"
    assert "(7)" in err.message


def test_the_shape_rule_applies_only_when_k_is_above_1() -> None:
    open_policy = load_policy(FIXTURES / "policies" / "open.yaml")  # k = 1: every group is released anyway
    sql = "SELECT city_code, SUM(CASE WHEN amount_fen > 0 THEN 1 ELSE 0 END) FROM deposits GROUP BY city_code"
    d = check_query(open_policy, CATALOG, plan_query(sql, CATALOG), CASEWORKER, "", False, party="a")
    assert d.min_group_size == 1


def test_column_uses_are_checked_before_the_shape(policy: Policy) -> None:
    sql = "SELECT SUM(CASE WHEN employer_id = 'E-7' THEN 1 ELSE 0 END) FROM deposits"
    assert refused(policy, sql, CASEWORKER).code == "POLICY_COLUMN_DENIED"


# -- the shipped policies on the demo's catalog -----------------------------------------------------------


DEMO = Catalog.model_validate(demo_catalog({"shanghai": "127.0.0.1:1", "hangzhou": "127.0.0.1:2"}))


def demo_check(sql: str, role: str, purpose: str = "", consent: bool = False) -> Decision:
    policy = load_policy(DEFAULT_POLICY)
    return check_query(policy, DEMO, plan_query(sql, DEMO), Asker("x", role, None), purpose, consent, party="shanghai")


def demo_refusal(sql: str, role: str, purpose: str = "", consent: bool = False) -> str:
    with pytest.raises(PolicyViolation) as info:
        demo_check(sql, role, purpose, consent)
    return info.value.code


def test_default_policy_on_the_demo_tables() -> None:
    caseworker = demo_check("SELECT status, COUNT(*) FROM loans GROUP BY status", "caseworker", "loan-review")
    assert (caseworker.privacy.mode, caseworker.privacy_rule) == ("dp", "roles.caseworker.privacy")
    assert demo_refusal("SELECT status, COUNT(*) FROM loans GROUP BY status", "caseworker") == "POLICY_PURPOSE_REQUIRED"
    sql = (
        "SELECT EXTRACT(YEAR FROM month) AS y, SUM(amount_fen) FROM deposits "
        "WHERE person_id = '310101199001011237' GROUP BY y"
    )
    assert demo_refusal(sql, "caseworker") == "POLICY_COLUMN_DENIED"  # identifiers stay out of SQL
    assert demo_refusal(sql, "analyst", "statistics") == "POLICY_COLUMN_DENIED"
    sql = "SELECT city_code, AVG(amount_fen), STDDEV_POP(amount_fen) FROM deposits GROUP BY city_code"
    analyst = demo_check(sql, "analyst", "statistics")  # public reports: DP replaces k
    assert (analyst.privacy.mode, analyst.privacy.threshold, analyst.min_group_size) == ("dp", 20, 1)
    assert analyst.privacy_rule == "roles.analyst.privacy"
    assert demo_refusal("SELECT COUNT(*) FROM withdrawals", "analyst", "statistics") == "POLICY_TABLE_DENIED"
    assert demo_refusal("SELECT COUNT(*) FROM loans WHERE loan_id = 'L1'", "analyst", "statistics") == (
        "POLICY_COLUMN_DENIED"
    )
    assert demo_refusal("SELECT COUNT(*) FROM accounts", "auditor") == "POLICY_ROLE_DENIED"
    sql = "SELECT COUNT(*), SUM(outstanding_fen) FROM loans WHERE status = 'active'"
    # a bank's statistics: DP, not k, and under no free-text consent (an aggregate has no one person's token)
    assert demo_check(sql, "integrator", "loan-review").privacy.mode == "dp"
    lookup = sql + " AND person_id = '310101199001011237'"
    assert demo_refusal(lookup, "integrator", "loan-review", consent=True) == "POLICY_COLUMN_DENIED"
    assert demo_refusal("SELECT COUNT(*) FROM loans WHERE status = 'overdue'", "operator", "operations") == (
        "POLICY_COLUMN_DENIED"
    )
    assert demo_check("SELECT status, COUNT(*) FROM loans GROUP BY 1", "operator", "operations").min_group_size == 3


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.title)
def test_the_demo_examples_are_accepted_by_the_default_policy(example: Example) -> None:
    # e.g. SUM(amount_fen) / COUNT(*) is arithmetic over aggregates, not inside an argument
    role = {"bank": "integrator"}.get(example.person, example.person)  # the demo's people (demo_people)
    assert demo_check(example.sql, role, example.purpose, consent=bool(example.consent)).role == role


def test_the_defaults_close_what_the_review_found() -> None:
    # analyst: principal_fen may be summed, never filtered on an amount, not even computed inside a SUM
    for sql in (
        "SELECT SUM(CAST(principal_fen > 100000000 AS INTEGER)) FROM loans",
        "SELECT SUM((principal_fen = 123456789)::INTEGER) FROM loans",
        "SELECT COUNT(NULLIF(principal_fen, 123456789)) FROM loans",
        "SELECT SUM(SIGN(principal_fen - 123456789)) FROM loans",
    ):
        assert demo_refusal(sql, "analyst", "statistics") == "POLICY_COLUMN_DENIED", sql
    assert demo_check("SELECT SUM(principal_fen) FROM loans", "analyst", "statistics").privacy.mode == "dp"
    # operator: groups by status, never filters on a value; a CASE key over an amount filters on it
    sql = "SELECT COUNT(*) FROM loans GROUP BY CASE WHEN outstanding_fen > 100000000 THEN 'hi' ELSE 'lo' END"
    assert demo_refusal(sql, "operator", "operations") == "POLICY_COLUMN_DENIED"
    # caseworker: a sensitive column's values are not shown, so not grouped by either (returned or not)
    sql = "SELECT COUNT(*) FROM withdrawals GROUP BY EXTRACT(YEAR FROM date)"
    assert demo_refusal(sql, "caseworker") == "POLICY_COLUMN_DENIED"
    assert demo_check("SELECT reason, COUNT(*) FROM withdrawals GROUP BY reason", "caseworker").privacy.mode == "dp"
    # caseworkers' counts of overdue loans carry noise whatever their shape: k does not apply, DP does
    sql = "SELECT city_code, SUM(CASE WHEN status = 'overdue' THEN 1 ELSE 0 END) FROM loans GROUP BY city_code"
    assert demo_check(sql, "caseworker", "loan-review").privacy.mode == "dp"
    # for the exact role, k = 3 applies to the sealed accounts a count reveals
    sql = "SELECT city_code, SUM(CASE WHEN status = 'sealed' THEN 1 ELSE 0 END) FROM accounts GROUP BY city_code"
    assert demo_refusal(sql, "operator", "operations") == "POLICY_AGGREGATE_SHAPE"
    sql = "SELECT city_code, COUNT(*) FILTER (WHERE status = 'sealed') FROM accounts GROUP BY city_code"
    assert demo_check(sql, "operator", "operations").min_group_size == 3


def test_open_test_policy_accepts_everything_but_identifiers() -> None:
    open_policy = load_policy(FIXTURES / "policies" / "open.yaml")
    mini = load_catalog(FIXTURES / "mini_catalog.yaml")
    sql = (
        "SELECT city_code, gender, EXTRACT(YEAR FROM month) AS y, COUNT(*), SUM(amount_fen) FILTER (WHERE rate > 0),"
        " VAR_SAMP(rate), STDDEV_POP(amount_fen) FROM deposits WHERE amount_fen > 0 GROUP BY 1, 2, 3"
        " HAVING AVG(amount_fen) > 1 ORDER BY 1"
    )
    for role in ("caseworker", "analyst", "operator", "integrator"):
        d = check_query(open_policy, mini, plan_query(sql, mini), Asker("t", role, None), "", False, party="a")
        assert d.min_group_size == 1
    lookup = plan_query("SELECT COUNT(*) FROM deposits WHERE person_id = 'p1'", mini)
    with pytest.raises(PolicyViolation) as info:
        check_query(open_policy, mini, lookup, CASEWORKER, "", False, party="a")
    assert info.value.code == "POLICY_COLUMN_DENIED"


def test_uses_docstring_examples() -> None:
    result = doctest.testmod(hpf.policies.uses, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_policy_validated_in_code_checks_purposes_too() -> None:
    doc = yaml.safe_load(POLICY)
    doc["roles"]["caseworker"]["tables"]["loans"]["purposes"] = ["audit"]
    with pytest.raises(ValueError, match=r"roles.caseworker.tables.loans.purposes.0: purpose 'audit' is not declared"):
        Policy.model_validate(doc)
