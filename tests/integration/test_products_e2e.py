"""TPC-H Q1's and Q6's sums of products, asked of three regions by a caseworker whose answers are exact under k.

Every node runs the packaged base policy with caseworkers made exact again (the test policy
tests/fixtures/policies/base-exact-caseworkers.yaml: ``extends: hpf:base``, k = 5 for caseworkers; hpf:base
itself makes their answers differentially private, where k does not apply) over a TPC-H-like lineitem table
(tests/fixtures/tpch_catalog.yaml: narrow exact types, bounds on the measured quantities). The answers must equal
DuckDB over the union of the regions' files exactly, every group kept (each region holds far more than k rows of
each); a product that weighs by a 0/1 column is refused by every region.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import harness
import pytest
import yaml

from hpf.federation.crypto import he
from hpf.federation.errors import PolicyViolation

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TABLES: dict[str, Any] = yaml.safe_load((FIXTURES / "tpch_catalog.yaml").read_text())["tables"]
NODES = ("north", "south", "east")
K = 5  # hpf:base's caseworkers, where their answers are exact

Q1 = (
    "SELECT l_returnflag, l_linestatus, SUM(l_quantity) AS sum_qty, SUM(l_extendedprice) AS sum_base_price, "
    "SUM(l_extendedprice * (1 - l_discount)) AS sum_disc_price, "
    "SUM(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge, AVG(l_quantity) AS avg_qty, "
    "AVG(l_extendedprice) AS avg_price, AVG(l_discount) AS avg_disc, COUNT(*) AS count_order FROM lineitem "
    "WHERE l_shipdate <= DATE '1998-09-02' GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus"
)
Q6 = (
    "SELECT SUM(l_extendedprice * l_discount) AS revenue FROM lineitem WHERE l_shipdate >= DATE '1994-01-01' "
    "AND l_shipdate < DATE '1997-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"
)


def _rows(seed: int, n: int) -> list[tuple[Any, ...]]:
    """``n`` lineitem rows in TPC-H's ranges, in the catalog's column order."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        quantity = Decimal(rng.randint(1, 50))
        price = (quantity * Decimal(rng.randint(90000, 209900)) / 100).quantize(Decimal("0.01"))
        rows.append(
            (
                seed * 100_000 + i,  # l_orderkey
                rng.choice("ANR"),
                rng.choice("FO"),
                quantity,
                price,
                Decimal(rng.randint(0, 10)) / 100,  # l_discount
                Decimal(rng.randint(0, 8)) / 100,  # l_tax
                dt.date(1992, 1, 1) + dt.timedelta(days=rng.randrange(2526)),
                rng.randint(1, 7),
                rng.randint(0, 1),  # l_late
                rng.randint(1, 5),
                rng.random() < 0.5,
                "x",
            )
        )
    return rows


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("tpch")
    policy = FIXTURES / "policies" / "base-exact-caseworkers.yaml"  # hpf:base, caseworkers exact
    node_rows = {n: {"lineitem": _rows(seed, 700)} for seed, n in enumerate(NODES, 1)}
    with harness.federation(root, TABLES, node_rows, policy=policy) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.mark.parametrize(
    ("sql", "groups"), [(Q1, "SELECT l_returnflag, l_linestatus, COUNT(*)"), (Q6, "SELECT COUNT(*)")], ids=["Q1", "Q6"]
)
def test_tpch_sums_of_products_are_answered_exactly_under_k(
    fed: harness.Federation, keys: he.ClientKeys, sql: str, groups: str
) -> None:
    where = sql[sql.index(" WHERE ") :].split(" GROUP BY ")[0]
    group_by = " GROUP BY l_returnflag, l_linestatus" if "GROUP BY" in sql else ""
    for node in NODES:  # each region holds at least k rows of every group: nothing is withheld, so exact
        counts = fed.node_oracle(node, f"{groups} FROM lineitem{where}{group_by}")
        assert counts and all(row[-1] >= K for row in counts), (node, counts)
    with fed.client(keys=keys) as client:
        answer = client.query(sql)
    assert answer.missing == [] and answer.withheld_groups == 0
    expected = fed.oracle(sql)
    assert [tuple(row) for row in answer.rows] == expected
    assert len(expected) == (6 if group_by else 1) and all(value is not None for row in expected for value in row)


def test_a_product_that_weighs_by_a_flag_is_refused_by_every_region(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    with fed.client(keys=keys) as client, pytest.raises(PolicyViolation) as info:
        client.query("SELECT l_linestatus, SUM(l_extendedprice * (1 - l_late)) FROM lineitem GROUP BY 1")
    err = info.value
    assert err.code == "POLICY_AGGREGATE_PRODUCT"
    assert "column l_late, whose declared bounds allow only two values" in err.message
    assert (err.rule or "").endswith(": roles.caseworker.min_group_size")
