"""Who may ask from where: the ``askers`` policy section, check_asker_home and the catalog's region codes.

Written as an asker outside the allowed provinces would try it: from another province, with no home region in
the certificate, through an operation the rule does not name, under a role whose rule is wider, from a region
whose id merely looks like a rule's keyword, or from a region the catalog places elsewhere than its name
suggests. Every refusal is POLICY_ASKER_REGION and names the rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hpf.federation.catalog import Catalog
from hpf.federation.catalog_watch import catalog_changes
from hpf.federation.errors import ConfigError, PolicyViolation
from hpf.policies import DEFAULT_POLICY
from hpf.policies.asker_rules import AskerRule
from hpf.policies.engine import Asker, check_asker_home
from hpf.policies.loader import check_policy, load_policy
from hpf.policies.model import Policy

TABLES = {"t": {"columns": {"x": {"type": "BIGINT", "class": "public"}}}}
# nanjing, suzhou and wuxi are in Jiangsu (32), hangzhou in Zhejiang (33), hefei in Anhui (34), as the catalog says
CODES = {"nanjing": "320100", "suzhou": "320500", "wuxi": "320200", "hangzhou": "330100", "hefei": "340100"}
YRD = Catalog.model_validate(
    {
        "federation": "f",
        "nodes": [{"id": n, "address": "h:1", "code": code} for n, code in CODES.items()],
        "tables": TABLES,
    }
)


def role(**extra: Any) -> dict[str, Any]:
    return {"aggregates": ["count"], "min_group_size": 1, "tables": {"*": {}}, **extra}


def policy(askers: dict[str, Any] | None = None, **roles: dict[str, Any]) -> Policy:
    return Policy.model_validate(
        {
            "version": 1,
            "purposes": {"loan-review": "checking a loan applicant"},
            "askers": askers or {},
            "roles": roles or {"caseworker": role(), "integrator": role()},
        }
    )


def check(
    p: Policy,
    region: str | None,
    operation: str,
    *,
    role_name: str = "caseworker",
    at: str = "nanjing",
    cat: Catalog = YRD,
) -> str | None:
    asker = Asker(name="someone", role=role_name, region=region)
    return check_asker_home(p, asker, operation, party=at, region_code=cat.region_code)


def refused(p: Policy, region: str | None, operation: str, **kw: Any) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as info:
        check(p, region, operation, **kw)
    assert info.value.code == "POLICY_ASKER_REGION"
    return info.value


SAME_PROVINCE_LOOKUPS = {"lookup": {"provinces": ["same"]}}


# -------------------------------------------------------------------------------------- the engine


def test_lookups_from_the_same_province_only_aggregates_from_anywhere() -> None:
    p = policy(SAME_PROVINCE_LOOKUPS)
    assert check(p, "suzhou", "lookup") == "askers.lookup"  # Jiangsu asks Jiangsu
    assert check(p, "nanjing", "lookup") == "askers.lookup"  # its own region is in its own province
    err = refused(p, "hangzhou", "lookup")  # Zhejiang asks Jiangsu
    assert err.rule == "nanjing: askers.lookup"
    assert "province 33 (Zhejiang)" in err.message and "province 32 (Jiangsu)" in err.message
    refused(p, "hefei", "lookup")
    # the same asker's aggregates and explains: no rule names them, so from anywhere
    assert check(p, "hangzhou", "query") is None
    assert check(p, "hangzhou", "explain") is None
    # the same rule at a Zhejiang node turns round
    assert check(p, "hangzhou", "lookup", at="hangzhou") == "askers.lookup"
    refused(p, "suzhou", "lookup", at="hangzhou")


def test_an_asker_with_no_home_region_is_refused_by_every_rule_but_anywhere() -> None:
    for rule in ({"provinces": ["same"]}, {"provinces": ["32", "33", "34"]}, {"regions": ["same", "suzhou"]}):
        err = refused(policy({"query": rule}), None, "query")
        assert "names no home region" in err.message
    assert check(policy({"query": {"anywhere": True}}), None, "query") == "askers.query"
    assert check(policy({}), None, "query") is None  # no rule at all: nothing limits it


@pytest.mark.parametrize("operation", ["query", "explain", "lookup"])
def test_each_operation_is_judged_by_its_own_rule(operation: str) -> None:
    closed = {operation: {"provinces": ["same"]}}
    refused(policy(closed), "hangzhou", operation)
    assert check(policy(closed), "wuxi", operation) == f"askers.{operation}"
    for other in {"query", "explain", "lookup"} - {operation}:
        if (operation, other) == ("query", "explain"):
            continue  # an explain follows the query's rule (below)
        assert check(policy(closed), "hangzhou", other) is None


def test_an_explain_follows_the_query_rule_unless_given_its_own() -> None:
    p = policy({"query": {"provinces": ["same"]}})
    assert refused(p, "hangzhou", "explain").rule == "nanjing: askers.query"
    p = policy({"query": {"provinces": ["same"]}, "explain": {"anywhere": True}})
    assert check(p, "hangzhou", "explain") == "askers.explain"
    refused(p, "hangzhou", "query")


def test_a_role_rule_replaces_the_top_level_one_for_that_role_only() -> None:
    p = policy(
        SAME_PROVINCE_LOOKUPS,
        caseworker=role(),
        integrator=role(askers={"lookup": {"anywhere": True}}),
        operator=role(askers={"lookup": {"regions": ["same"]}}),
    )
    assert check(p, "hangzhou", "lookup", role_name="integrator") == "roles.integrator.askers.lookup"
    refused(p, "hangzhou", "lookup", role_name="caseworker")
    # narrower for operators: their own centre only, not even the same province
    err = refused(p, "suzhou", "lookup", role_name="operator")
    assert err.rule == "nanjing: roles.operator.askers.lookup"
    assert check(p, "nanjing", "lookup", role_name="operator") == "roles.operator.askers.lookup"
    # a role the policy does not list meets the top-level rule (and is refused by role later, not admitted here)
    refused(p, "hangzhou", "lookup", role_name="auditor")


def test_regions_are_matched_whole_and_same_means_this_node() -> None:
    p = policy({"lookup": {"regions": ["same", "suzhou"]}})
    assert check(p, "suzhou", "lookup") == "askers.lookup"
    assert check(p, "nanjing", "lookup") == "askers.lookup"
    refused(p, "wuxi", "lookup")  # same province, but the rule names regions, not provinces
    refused(p, "suzhou-ah", "lookup")  # a longer id is not the region
    refused(p, "same", "lookup")  # a certificate whose region is the keyword itself is no region of the rule


def test_only_the_catalog_code_places_a_node() -> None:
    catalog = Catalog.model_validate(
        {
            "federation": "other",
            "nodes": [
                {"id": "north", "address": "h:1", "code": "320100"},
                {"id": "south", "address": "h:2", "code": 320500},  # unquoted in YAML: an int
                {"id": "suzhou", "address": "h:3", "code": "341300"},  # Suzhou of Anhui, not the demo's
                {"id": "east", "address": "h:4"},  # no code
                {"id": "hangzhou", "address": "h:5"},  # a city's name, but no code: nowhere
            ],
            "tables": TABLES,
        }
    )
    p = policy(SAME_PROVINCE_LOOKUPS)
    assert check(p, "south", "lookup", at="north", cat=catalog) == "askers.lookup"
    err = refused(p, "suzhou", "lookup", at="north", cat=catalog)
    assert "province 34 (Anhui)" in err.message
    err = refused(p, "east", "lookup", at="north", cat=catalog)
    assert "no province" in err.message and "no code" in (err.hint or "")
    # a node the catalog places nowhere admits nobody by its own province: it fails closed
    err = refused(p, "east", "lookup", at="east", cat=catalog)
    assert "this node no code" in (err.hint or "")
    refused(p, "north", "lookup", at="east", cat=catalog)
    err = refused(p, "hangzhou", "lookup", at="north", cat=catalog)
    assert "no province" in err.message


def test_listed_provinces_admit_each_of_them() -> None:
    p = policy({"lookup": {"provinces": ["32", 34]}})
    assert check(p, "wuxi", "lookup", at="hangzhou") == "askers.lookup"
    assert check(p, "hefei", "lookup", at="hangzhou") == "askers.lookup"
    refused(p, "hangzhou", "lookup", at="hangzhou")  # its own province is not listed: not admitted


# -------------------------------------------------------------------------------------- the format


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ({"provinces": ["99"]}, "'99' is not a province code"),
        ({"provinces": ["3"]}, "'3' is not a province code"),
        ({"provinces": ["330100"]}, "'330100' is a region code: its province is '33'"),
        ({"provinces": ["Zhejiang"]}, "write its code '33'"),
        ({"provinces": [True]}, "provinces.0"),
        ({"regions": ["Hang Zhou"]}, "must be a node id"),
        ({}, "admits nobody"),
        ({"provinces": [], "regions": []}, "admits nobody"),
        ({"anywhere": True, "provinces": ["32"]}, "give it alone"),
        ({"provinces": ["32"], "from": "anywhere"}, "Extra inputs"),
    ],
)
def test_bad_rules_are_refused_with_what_is_wrong(rule: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        AskerRule.model_validate(rule)


@pytest.mark.parametrize(("name", "alias"), [("screen", "lookup"), ("aggregates", "query"), ("lookups", "lookup")])
def test_unknown_operations_are_refused_and_near_names_named(name: str, alias: str) -> None:
    with pytest.raises(ValidationError, match=f"unknown operation '{name}' \\(write '{alias}' for it\\)"):
        policy({name: {"provinces": ["same"]}})
    with pytest.raises(ValidationError, match="unknown operation 'delete'"):
        policy({}, caseworker=role(askers={"delete": {"anywhere": True}}))


def write(tmp_path: Path, text: str, name: str = "node.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_policy_check_names_every_problem_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"version: 1\nextends: {DEFAULT_POLICY}\naskers:\n  lookup:\n    provinces: [same, '99']\n"
        "  screen: {provinces: [same]}\nroles:\n  integrator:\n    askers:\n      explain: {}\n",
    )
    checked = check_policy(path)
    assert checked.policy is None
    text = "\n".join(checked.problems)
    assert f"{path}:5: askers.lookup.provinces[1]: '99' is not a province code" in text
    assert f"{path}:6: askers.screen: unknown operation 'screen'" in text
    assert f"{path}:10: roles.integrator.askers.explain: admits nobody" in text
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert info.value.code == "POLICY_FILE_INVALID"


def test_policy_check_against_the_catalog_names_unknown_regions_and_unplaced_nodes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "version: 1\nextends: hpf:base\naskers:\n  lookup:\n    regions: [hangzou]\n    provinces: [same]\n",
    )
    assert check_policy(path).problems == []  # without a catalog, nothing to compare with
    problems = check_policy(path, YRD).problems
    assert len(problems) == 1 and "the catalog has no node 'hangzou'; did you mean 'hangzhou'?" in problems[0]
    other = Catalog.model_validate(
        {
            "federation": "other",
            "nodes": [{"id": "north", "address": "h:1", "code": "320100"}, {"id": "east", "address": "h:2"}],
            "tables": TABLES,
        }
    )
    problems = check_policy(path, other).problems
    assert any("node(s) east no code" in p for p in problems), problems
    placed = write(tmp_path, "version: 1\nextends: hpf:base\naskers:\n  lookup: {regions: [north]}\n")
    assert check_policy(placed, other).problems == []  # by region only: codes are not needed


def test_the_packaged_policies_leave_every_operation_open_and_show_a_rule() -> None:
    default = load_policy(DEFAULT_POLICY)
    for name in default.roles:
        for op in ("query", "explain", "lookup"):
            assert default.asker_rule(name, op) is None
    p = policy(SAME_PROVINCE_LOOKUPS, caseworker=role(lookups={"purposes": ["loan-review"]}))
    assert "  lookup: askers only from its own province (askers.lookup)" in p.summary()


@pytest.mark.parametrize("bad", ["3201", "990100", "32010a", "３２０１００", True, "320100 "])
def test_a_catalog_node_code_must_be_a_region_code_of_a_province(bad: Any) -> None:
    with pytest.raises(ValidationError, match="code"):
        Catalog.model_validate(
            {"federation": "f", "nodes": [{"id": "a", "address": "h:1", "code": bad}], "tables": TABLES}
        )


def test_a_changed_node_code_waits_for_a_restart() -> None:
    """A running node placed its askers by the code it started with; a new code is not taken behind its back."""

    def with_code(code: str) -> Catalog:
        return Catalog.model_validate(
            {"federation": "f", "nodes": [{"id": "a", "address": "h:1", "code": code}], "tables": TABLES}
        )

    changes = catalog_changes(with_code("320100"), with_code("330100"))
    assert changes.taken == () and changes.needs_restart == ("node a: code",)
