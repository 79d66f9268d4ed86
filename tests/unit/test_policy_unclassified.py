"""A column the catalog gives no class is refused by every policy, whatever it says, until an operator classifies it.

The catalog accepts such a column (``hpf init`` writes every column without one), so a federation can be described
and started before anyone has decided; but no class means no use: not in a filter, a group key or an aggregate,
not even where a policy's own column entry, a role's classes or a wildcard table would allow everything.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hpf.federation.catalog import Catalog, Column, ColumnClass
from hpf.federation.errors import PolicyViolation
from hpf.federation.planner import plan_query
from hpf.policies.engine import Asker, check_query
from hpf.policies.loader import load_policy
from hpf.policies.model import Policy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

CATALOG = Catalog.model_validate(
    {
        "federation": "t",
        "nodes": [{"id": "hangzhou", "address": "127.0.0.1:1"}],
        "tables": {
            "orders": {
                "columns": {
                    "region": {"type": "VARCHAR", "class": "public", "domain": {"values": ["n", "s"]}},
                    "amount": {"type": "BIGINT", "class": "public", "bounds": [0, 1000]},
                    # as `hpf init` writes a column nobody has classified yet: no class at all
                    "kind": {"type": "VARCHAR", "domain": {"values": ["a", "b"]}},
                    "qty": {"type": "INTEGER", "bounds": [0, 100]},
                    "note": {"type": "VARCHAR", "class": None},  # `class: ~` is the same
                }
            }
        },
    }
)
UNCLASSIFIED = ("kind", "qty", "note")

# the most a policy can grant: every class every use, a wildcard table, and a column entry for each of them
GRANT_EVERYTHING = """
version: 1
purposes: {statistics: reporting, operations: running it}
classes:
  identifier: [output, filter, group, aggregate]
  public: [output, filter, group, aggregate]
  sensitive: [output, filter, group, aggregate]
  commercial: [output, filter, group, aggregate]
roles:
  caseworker:
    aggregates: [count, sum, avg, var_pop]
    min_group_size: 1
    classes: {public: [output, filter, group, aggregate]}
    tables:
      orders:
        columns:
          kind: [output, filter, group, aggregate]
          qty: [output, filter, group, aggregate]
          note: [output, filter, group, aggregate]
      "*": {}
"""


def test_a_column_without_a_class_is_unclassified_and_a_class_must_be_one_of_four() -> None:
    columns = CATALOG.tables["orders"].columns
    assert [name for name, c in columns.items() if c.column_class is None] == list(UNCLASSIFIED)
    assert columns["amount"].column_class == ColumnClass.public
    with pytest.raises(ValidationError, match="'identifier', 'public', 'sensitive' or 'commercial'"):
        Column.model_validate({"type": "BIGINT", "class": "TODO"})  # no magic marker: leave it out


def _policies(tmp_path: Path) -> dict[str, Policy]:
    granting = tmp_path / "everything.yaml"
    granting.write_text(GRANT_EVERYTHING)
    extending = tmp_path / "mine.yaml"
    extending.write_text("version: 1\nextends: hpf:base\n")
    return {
        "grants everything": load_policy(granting),
        "hpf:base": load_policy("hpf:base"),
        "extends hpf:base": load_policy(extending),
        "open test policy": load_policy(FIXTURES / "policies" / "open.yaml"),
    }


QUERIES = [
    "SELECT COUNT(*) FROM orders WHERE {c} IS NOT NULL",
    "SELECT COUNT({c}) FROM orders",
    "SELECT SUM(amount) FILTER (WHERE {c} IS NULL) FROM orders",
    "SELECT SUM(CASE WHEN {c} IS NULL THEN amount END) FROM orders",
]


@pytest.mark.parametrize("role", ["caseworker", "analyst", "operator"])
def test_every_policy_refuses_every_use_of_an_unclassified_column(tmp_path: Path, role: str) -> None:
    for name, policy in _policies(tmp_path).items():
        if role not in policy.roles:
            continue
        for column in UNCLASSIFIED:
            sqls = [q.format(c=column) for q in QUERIES]
            if column == "kind":
                sqls.append("SELECT kind, COUNT(*) FROM orders GROUP BY kind")
            if column == "qty":
                sqls += ["SELECT SUM(qty) FROM orders", "SELECT AVG(qty * 2 + amount) FROM orders"]
            for sql in sqls:
                plan = plan_query(sql, CATALOG)
                with pytest.raises(PolicyViolation) as info:
                    check_query(policy, CATALOG, plan, Asker("x", role, None), "statistics", False, party="hangzhou")
                err = info.value
                assert err.code == "POLICY_COLUMN_UNCLASSIFIED", (name, sql, err.code)
                assert err.message == (
                    f"column {column} of orders has no class in this node's catalog, so no policy allows it"
                )
                assert err.rule == "hangzhou: classes"
                assert err.hint == (
                    "an operator must classify it first: set class: (one of identifier, public, sensitive, "
                    f"commercial) for tables.orders.columns.{column} in the catalog every party holds"
                )


def test_the_classified_columns_of_the_same_table_stay_usable(tmp_path: Path) -> None:
    """The refusal is about the column, not the table: COUNT(*) and the classified columns are answered."""
    for name, policy in _policies(tmp_path).items():
        for sql in (
            "SELECT COUNT(*) FROM orders",
            "SELECT region, COUNT(*), SUM(amount) FROM orders WHERE amount > 10 GROUP BY region",
        ):
            plan = plan_query(sql, CATALOG)
            role = "operator" if "operator" in policy.roles else "caseworker"
            decision = check_query(policy, CATALOG, plan, Asker("x", role, None), "operations", False, party="h")
            assert decision.role == role, name


def test_classifying_the_column_is_what_opens_it(tmp_path: Path) -> None:
    doc = CATALOG.model_dump(by_alias=True, mode="json")
    doc["tables"]["orders"]["columns"]["qty"]["class"] = "public"
    classified = Catalog.model_validate(doc)
    sql = "SELECT SUM(qty) FROM orders"
    policy = load_policy("hpf:base")
    decision = check_query(
        policy, classified, plan_query(sql, classified), Asker("x", "operator", None), "operations", False, party="h"
    )
    assert decision.min_group_size == 3
    with pytest.raises(PolicyViolation) as info:  # the same question on the catalog that leaves it unclassified
        check_query(
            policy, CATALOG, plan_query(sql, CATALOG), Asker("x", "operator", None), "operations", False, party="h"
        )
    assert info.value.code == "POLICY_COLUMN_UNCLASSIFIED"


def test_catalog_check_accepts_unclassified_columns_and_names_them(tmp_path: Path) -> None:
    import typer
    import yaml
    from typer.testing import CliRunner

    from hpf.cli.catalog import register

    app = typer.Typer()
    register(app)
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(CATALOG.model_dump(by_alias=True, mode="json", exclude_none=True), sort_keys=False))
    result = CliRunner().invoke(app, ["catalog", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        "note: 3 column(s) have no class yet (orders.kind, orders.qty, orders.note): every node's policy refuses "
        "them (POLICY_COLUMN_UNCLASSIFIED) until an operator sets their class: (identifier, public, sensitive or "
        "commercial)"
    )
    doc = yaml.safe_load(path.read_text())
    for column in doc["tables"]["orders"]["columns"].values():
        column.setdefault("class", "public")
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["catalog", "check", str(path)])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1, result.output
