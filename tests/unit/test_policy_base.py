"""The packaged base policy (``hpf:base``): table-agnostic, extendable from any folder, and the default's base.

An operator federating their own tables writes ``extends: hpf:base`` and nothing else to start: caseworkers,
analysts and operators may ask every table of the catalog ("*"), each column as its class allows; a bank
(integrator) is granted no table until a node names one; auditors run no queries. ``policies/default.yaml`` is
the same base with the demo federation's tables granted role by role, so the two cannot drift.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.errors import ConfigError, PolicyViolation
from hpf.federation.hpf_schema import DEMO_CONSENT_ISSUER, demo_catalog
from hpf.federation.planner import plan_query
from hpf.policies import BASE_POLICY, DEFAULT_POLICY
from hpf.policies.engine import Asker, Decision, check_query
from hpf.policies.fields import WILDCARD
from hpf.policies.loader import check_against_catalog, check_policy, load_policy, policy_path
from hpf.policies.model import Policy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TPCH = load_catalog(FIXTURES / "tpch_catalog.yaml")
# the demo catalog, publishing the consent service the default policy names (a key nobody here signs with)
ISSUERS = [{"id": DEMO_CONSENT_ISSUER, "key": "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="}]
DEMO = Catalog.model_validate(demo_catalog({"shanghai": "127.0.0.1:1"}, issuers=ISSUERS))


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def ask(policy: Policy, catalog: Catalog, sql: str, role: str, purpose: str = "") -> Decision:
    return check_query(policy, catalog, plan_query(sql, catalog), Asker("x", role, None), purpose, False, party="n")


def refusal(policy: Policy, catalog: Catalog, sql: str, role: str, purpose: str = "") -> PolicyViolation:
    with pytest.raises(PolicyViolation) as info:
        ask(policy, catalog, sql, role, purpose)
    return info.value


# -- the base names no table or column --------------------------------------------------------------------------


def test_the_base_names_no_table_and_no_column() -> None:
    base = load_policy("hpf:base")
    assert set(base.roles) == {"caseworker", "analyst", "operator", "integrator"}  # auditors run no queries
    for name, role in base.roles.items():
        assert set(role.tables) <= {WILDCARD}, name
        assert all(table.columns == {} for table in role.tables.values()), name
        assert role.lookups is None, name  # lookups read the demo's tables: default.yaml grants them
    assert set(base.roles["integrator"].tables) == set()  # a bank is granted a table explicitly, or none
    text = BASE_POLICY.read_text(encoding="utf-8")
    for table, spec in DEMO.tables.items():  # nor does any of its settings mention one of the demo's
        assert f"  {table}:" not in text
        assert not any(f"  {column}:" in text for column in spec.columns), table


def test_the_base_checks_clean_against_a_catalog_of_other_tables() -> None:
    assert check_policy("hpf:base", TPCH).problems == []
    # the demo's full policy names the demo's tables: against another catalog, every one is a problem
    problems = check_policy("hpf:default", TPCH).problems
    tables = [p for p in problems if "the catalog has no table" in p]
    assert len(tables) == 12 and problems == [*tables, problems[-1]]
    assert "the catalog publishes no consent issuer 'shanghai-consent'" in problems[-1]  # the demo's issuer


# -- extends: hpf:NAME, from any folder ----------------------------------------------------------------------------


def test_extends_hpf_base_and_hpf_default_from_any_folder(tmp_path: Path) -> None:
    node = write(tmp_path / "deep" / "er", "node.yaml", "version: 1\nextends: hpf:base\n")
    assert load_policy(node).model_dump() == load_policy(BASE_POLICY).model_dump()
    node = write(tmp_path / "else", "node.yaml", "version: 1\nextends: hpf:default\n")
    assert load_policy(node).model_dump() == load_policy(DEFAULT_POLICY).model_dump()
    assert policy_path("hpf:base") == BASE_POLICY and policy_path("hpf:default") == DEFAULT_POLICY


def test_a_copy_of_the_default_still_finds_its_base(tmp_path: Path) -> None:
    """The demo and operators copy default.yaml elsewhere: its `extends: hpf:base` does not depend on where."""
    copy = write(tmp_path, "default.yaml", DEFAULT_POLICY.read_text(encoding="utf-8"))
    assert load_policy(copy).model_dump() == load_policy(DEFAULT_POLICY).model_dump()


@pytest.mark.parametrize("name", ["hpf:nope", "hpf:", "hpf:Base", "hpf:base.yaml", "hpf:../default"])
def test_an_unknown_packaged_name_lists_the_packaged_ones(tmp_path: Path, name: str) -> None:
    node = write(tmp_path, "node.yaml", f"version: 1\nextends: '{name}'\n")
    with pytest.raises(ConfigError) as info:
        load_policy(node)
    err = info.value
    assert err.code == "POLICY_FILE_INVALID"
    assert err.message == (
        f"{node}:2: extends: {name!r}: no packaged policy has that name; the packaged policies are hpf:base, "
        "hpf:default"
    )
    assert "hpf:base" in (err.hint or "")
    with pytest.raises(ConfigError) as direct:  # named directly, as `hpf policy show hpf:nope` does
        load_policy(name)
    assert direct.value.message.startswith(f"{name!r}: no packaged policy has that name")


def test_a_missing_relative_base_says_where_extends_looks(tmp_path: Path) -> None:
    node = write(tmp_path, "node.yaml", "version: 1\nextends: base.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_policy(node)
    assert info.value.message == f"{node}:2: extends: {tmp_path / 'base.yaml'}: file not found"
    assert "hpf:base, hpf:default" in (info.value.hint or "")


# -- the default is the base plus the demo's tables -------------------------------------------------------------


def test_the_default_is_the_base_with_the_demo_tables_granted() -> None:
    base, default = load_policy("hpf:base"), load_policy(DEFAULT_POLICY)
    assert default.purposes == base.purposes and list(default.purposes) == list(base.purposes)
    assert default.classes == base.classes
    assert list(default.roles) == list(base.roles)
    for name, role in default.roles.items():
        own = role.model_dump(exclude={"tables", "lookups"})
        assert own == base.roles[name].model_dump(exclude={"tables", "lookups"}), name
        assert WILDCARD not in role.tables and set(role.tables) <= set(DEMO.tables), name
    # the one setting it changes, for the reason its comments give (exact roles may group by city)
    assert base.secure_aggregation.exact_subsets is False and default.secure_aggregation.exact_subsets is True
    assert default.secure_aggregation.model_dump(exclude={"exact_subsets"}) == base.secure_aggregation.model_dump(
        exclude={"exact_subsets"}
    )
    assert check_against_catalog(default, DEMO) == []


def test_the_default_lists_its_tables_so_another_table_is_refused() -> None:
    doc = demo_catalog({"shanghai": "127.0.0.1:1"}, issuers=ISSUERS)
    doc["tables"]["branches"] = {"columns": {"n": {"type": "BIGINT", "class": "public"}}}
    catalog = Catalog.model_validate(doc)
    for role in ("caseworker", "analyst", "operator", "integrator"):
        err = refusal(load_policy(DEFAULT_POLICY), catalog, "SELECT COUNT(*) FROM branches", role, "statistics")
        assert err.code == "POLICY_TABLE_DENIED", role
    assert ask(load_policy("hpf:base"), catalog, "SELECT COUNT(*) FROM branches", "caseworker").role == "caseworker"


# -- what an operator extending the base gets -----------------------------------------------------------------


def test_extends_hpf_base_alone_answers_every_table_by_class(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "node.yaml", "version: 1\nextends: hpf:base\n"))
    sql = "SELECT l_returnflag, COUNT(*), SUM(l_quantity) FROM lineitem WHERE l_shipdate > '1995-01-01' GROUP BY 1"
    # caseworkers' aggregates are differentially private (DP replaces k); operators' alone are exact, under k
    caseworker = ask(policy, TPCH, sql, "caseworker")
    assert (caseworker.privacy.mode, caseworker.privacy_rule, caseworker.min_group_size) == (
        "dp",
        "roles.caseworker.privacy",
        1,
    )
    operator = ask(policy, TPCH, sql, "operator", "operations")
    assert (operator.privacy.mode, operator.min_group_size) == ("exact", 3)
    assert ask(policy, TPCH, sql, "operator", "statistics").privacy.mode == "exact"
    assert ask(policy, TPCH, sql, "analyst", "statistics").privacy.mode == "dp"
    # exact only for the internal-statistics purposes: an operator asking without one, or for another, is refused
    assert refusal(policy, TPCH, sql, "operator").code == "POLICY_PURPOSE_REQUIRED"
    assert refusal(policy, TPCH, sql, "operator", "loan-review").code == "POLICY_PURPOSE_NOT_ALLOWED"
    sql = "SELECT COUNT(*) FROM lineitem WHERE l_discount > 0.05"
    assert ask(policy, TPCH, sql, "caseworker").privacy.mode == "dp"
    # the base's classes: sensitive values are filtered and summed by caseworkers, never shown as groups
    sql = "SELECT COUNT(*) FROM lineitem GROUP BY CASE WHEN l_tax > 0 THEN 'taxed' ELSE 'not' END"
    err = refusal(policy, TPCH, sql, "caseworker")
    assert err.code == "POLICY_COLUMN_DENIED" and err.rule == "n: classes.sensitive"
    # operators group by sensitive columns, never filter on their values
    err = refusal(policy, TPCH, "SELECT COUNT(*) FROM lineitem WHERE l_tax > 0", "operator", "operations")
    assert err.code == "POLICY_COLUMN_DENIED" and err.rule == "n: roles.operator.classes.sensitive"
    assert refusal(policy, TPCH, "SELECT COUNT(*) FROM lineitem", "analyst").code == "POLICY_PURPOSE_REQUIRED"
    err = refusal(policy, TPCH, "SELECT COUNT(*) FROM lineitem", "integrator", "loan-review")
    assert (err.code, err.hint) == ("POLICY_TABLE_DENIED", "tables role integrator may query here: none")
    assert refusal(policy, TPCH, "SELECT COUNT(*) FROM lineitem", "auditor").code == "POLICY_ROLE_DENIED"


def test_an_operator_narrows_the_base_with_their_own_tables(tmp_path: Path) -> None:
    """The operators' guide's example: the base, the wildcard removed for analysts, a table granted to banks."""
    node = write(
        tmp_path,
        "node.yaml",
        """\
        version: 1
        extends: hpf:base
        roles:
          analyst:
            tables:
              "*": ~                       # only the tables listed here
              lineitem:
                columns:
                  l_orderkey: []           # unique per order: it singles one out
          integrator:
            tables:
              lineitem:
                purposes: [loan-review]
        """,
    )
    checked = check_policy(node, TPCH)
    # both roles answer with differential privacy, which needs the table's contribution bound: check says so
    assert [p.split(": ")[1] for p in checked.problems] == [
        "roles.analyst.tables.lineitem",
        "roles.integrator.tables.lineitem",
    ]
    assert all("DP_UNBOUNDED" in p for p in checked.problems) and checked.policy is not None
    policy = checked.policy
    assert set(policy.roles["analyst"].tables) == {"lineitem"}
    assert policy.roles["caseworker"].tables.keys() == {WILDCARD}  # untouched
    err = refusal(policy, TPCH, "SELECT COUNT(l_orderkey) FROM lineitem", "analyst", "statistics")
    assert err.code == "POLICY_COLUMN_DENIED" and err.rule == "n: roles.analyst.tables.lineitem.columns.l_orderkey"
    err = refusal(policy, TPCH, "SELECT COUNT(*) FROM lineitem", "integrator", "statistics")
    assert err.code == "POLICY_PURPOSE_NOT_ALLOWED"


def _readme_block(starting: str) -> str:
    """The operators' guide's YAML code block whose first line is ``starting`` (dedented)."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operators.md").read_text(encoding="utf-8")
    for block in guide.split("```yaml\n")[1:]:
        text = textwrap.dedent(block.split("```")[0])
        if text.startswith(starting):
            return text
    raise AssertionError(f"docs/operators.md has no YAML block starting {starting!r}")


def test_the_readmes_own_tables_example_checks_clean(tmp_path: Path) -> None:
    """docs/operators.md, "Federating your own tables": its catalog and the node policy that extends hpf:base
    agree."""
    catalog = write(tmp_path, "federation.yaml", _readme_block("federation: my-federation"))
    policy = write(tmp_path / "policies", "north.yaml", _readme_block("version: 1\nextends: hpf:base"))
    checked = check_policy(policy, load_catalog(catalog))
    assert checked.problems == [] and checked.policy is not None
    mine = load_catalog(catalog)
    assert mine.tables["contributions"].columns["remark"].column_class is None  # its unclassified example
    sql = "SELECT region, SUM(amount_fen) FROM contributions GROUP BY region"
    assert ask(checked.policy, mine, sql, "caseworker").privacy.mode == "dp"
    assert ask(checked.policy, mine, sql, "operator", "statistics").min_group_size == 3
    assert refusal(checked.policy, mine, "SELECT COUNT(remark) FROM contributions", "caseworker").code == (
        "POLICY_COLUMN_UNCLASSIFIED"
    )
    sql = "SELECT SUM(rate) FROM contributions"
    assert refusal(checked.policy, mine, sql, "analyst", "statistics").code == "POLICY_COLUMN_DENIED"
    assert refusal(checked.policy, mine, sql, "integrator", "statistics").code == "POLICY_PURPOSE_NOT_ALLOWED"
    assert ask(checked.policy, mine, sql, "integrator", "loan-review").privacy.mode == "dp"  # no consent: DP
