"""A plan under DP: per-person bounds from the catalog, the clamped node SQL, the noise's units and sizes."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import numpy as np
import pytest

from federation import skellam
from federation.catalog import Catalog
from federation.dp_plan import dp_plan, dp_terms, suppress_small_groups
from federation.errors import PlanError
from federation.hpf_schema import demo_catalog
from federation.planner import plan_query
from federation.slot_codec import chunks, decode_totals, encode_noisy_partials
from policies.model import Privacy

CATALOG = Catalog.model_validate(demo_catalog({"shanghai": "127.0.0.1:50051"}))


def _catalog(**table: Any) -> Catalog:
    return Catalog.model_validate(
        {
            "federation": "t",
            "nodes": [{"id": "a", "address": "127.0.0.1:1"}],
            "tables": {
                "t": {
                    "columns": {
                        "pid": {"type": "VARCHAR", "class": "identifier"},
                        "g": {"type": "VARCHAR", "domain": {"values": ["x", "y"]}},
                        "v": {"type": "BIGINT", "bounds": [-5, 10]},
                        "w": {"type": "BIGINT"},
                    },
                    **table,
                }
            },
        }
    )


BOUNDED = _catalog(contribution={"person": "pid", "max_rows": 2, "max_regions": 3})


def test_sensitivity_is_rows_times_regions_times_the_widest_value() -> None:
    plan = plan_query("SELECT g, COUNT(*), SUM(v), SUM(2 * v + 1) FROM t GROUP BY g", BOUNDED)
    terms = dp_terms(plan, BOUNDED, 1.0, 1e-6, 0)
    by_kind = {(c.kind, c.arg): n for c, n in zip(plan.components, terms.components, strict=True)}
    assert by_kind[("count", None)].sensitivity == 6  # 2 rows x 3 regions
    assert by_kind[("sum", "v")].sensitivity == 6 * 10  # |v| <= 10
    assert by_kind[("sum", "2 * v + 1")].sensitivity == 6 * 21  # 2 * 10 + 1
    assert by_kind[("withheld", None)].mu == 0.0  # DP never sets the mark: no noise needed there
    # every noisy component carries mu in proportion to its squared sensitivity (one common scale)
    scales = {n.mu / n.sensitivity**2 for n in terms.components if n.sensitivity}
    assert max(scales) / min(scales) < 1.02
    mus = [n.mu for n in terms.components if n.sensitivity]
    comps = [skellam.ComponentNoise(n.sensitivity, n.sensitivity) for n in terms.components if n.sensitivity]
    assert skellam.epsilon_of(mus, comps, 1e-6) <= 1.0


def test_a_large_sum_travels_in_a_coarser_unit_with_exact_sampling() -> None:
    plan = plan_query("SELECT SUM(amount_fen), STDDEV_POP(amount_fen) FROM deposits", CATALOG)
    terms = dp_terms(plan, CATALOG, 1.0, 1e-8, 0)
    assert all(n.mu <= skellam.MAX_MU for n in terms.components)
    units = {c.kind: n.unit for c, n in zip(plan.components, terms.components, strict=True)}
    assert units["count"] == 1 and units["sum"] > 1 and units["sumsq"] > units["sum"]
    for c, n in zip(plan.components, terms.components, strict=True):
        if n.unit > 1:  # rounding a region's cell moves it by one unit at most: P is added to the sensitivity
            per_person = 120 * 4
            assert n.sensitivity > per_person and 10 ** math.floor(math.log10(n.unit)) == n.unit, c


def test_clamped_sql_caps_rows_per_person_and_values() -> None:
    plan = plan_query("SELECT g, COUNT(*), SUM(v) FROM t WHERE w > 0 GROUP BY g", BOUNDED)
    clamped, source = dp_plan(plan, BOUNDED)
    con = duckdb.connect()
    con.execute("CREATE TABLE t (pid VARCHAR, g VARCHAR, v BIGINT, w BIGINT)")
    rows = [("p1", "x", 100, 1), ("p1", "x", -100, 1), ("p1", "x", 3, 1), ("p2", "y", 4, 1), ("p2", "y", 4, 0)]
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    got = sorted(con.execute(clamped.node_sql(source)).fetchall())
    # p1 keeps 2 of its 3 rows (the first two in column order: v = -100 and 3; clamped to -5 and 3); the WHERE
    # applies before the cap, so p2's row with w = 0 never counts
    assert got == [("x", 2, 2, -2), ("y", 1, 1, 4)]  # COUNT(*), COUNT(v), SUM(v)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT SUM(w) FROM t",  # no bounds declared
        "SELECT SUM(v % 3) FROM t",  # modulo: no known range here
        "SELECT SUM(ABS(v)) FROM t",  # a function
    ],
)
def test_unbounded_arguments_are_refused(sql: str) -> None:
    with pytest.raises(PlanError) as info:
        dp_terms(plan_query(sql, BOUNDED), BOUNDED, 1.0, 1e-6, 0)
    assert info.value.code == "DP_UNBOUNDED"


def test_a_table_without_a_contribution_bound_is_refused() -> None:
    unbounded = _catalog()
    with pytest.raises(PlanError) as info:
        dp_terms(plan_query("SELECT COUNT(*) FROM t", unbounded), unbounded, 1.0, 1e-6, 0)
    assert info.value.code == "DP_UNBOUNDED"


def test_noisy_encoding_covers_every_cell_and_decodes_with_suppression() -> None:
    plan = plan_query("SELECT g, COUNT(*), SUM(v) FROM t GROUP BY g", BOUNDED)
    cells, comps = plan.layout.cells, len(plan.components)  # x, y, NULL, other
    noise = np.zeros((cells, comps), dtype=np.int64)
    noise[:, 0] = [1, -2, 3, 0]
    flat = encode_noisy_partials(plan, [("x", 30, 30, 7)], [1] * comps, noise)  # COUNT(*), COUNT(v), SUM(v)
    totals = decode_totals(plan, chunks(flat), regions=1, noisy=True)
    assert sorted(totals) == list(range(cells))  # empty cells are there, with their noise
    assert [totals[c][0] for c in range(cells)] == [31, -2, 3, 0]
    kept, suppressed = suppress_small_groups(plan, totals, threshold=3)
    assert sorted(kept) == [0, 2] and suppressed == 2


def test_privacy_policy_needs_its_terms() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        Privacy.model_validate({"mode": "dp"})
    with pytest.raises(ValueError, match="fit in the budget"):
        Privacy.model_validate({"mode": "dp", "epsilon": 2, "budget": {"epsilon": 1}})
    with pytest.raises(ValueError, match="only to mode: dp"):
        Privacy.model_validate({"mode": "exact", "threshold": 5})


def test_catalog_checks_contribution_and_bounds() -> None:
    with pytest.raises(ValueError, match="identifier column"):
        _catalog(contribution={"person": "g", "max_rows": 1})
    with pytest.raises(ValueError, match="low <= high"):
        Catalog.model_validate(
            {
                "federation": "t",
                "nodes": [{"id": "a", "address": "127.0.0.1:1"}],
                "tables": {"t": {"columns": {"v": {"type": "BIGINT", "bounds": [3, 1]}}}},
            }
        )
