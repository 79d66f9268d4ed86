"""A plan under DP: per-person bounds from the catalog, the clamped node SQL, the noise's units and sizes."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import numpy as np
import pytest

from hpf.client.finish import finish
from hpf.federation.catalog import Catalog
from hpf.federation.crypto import he, masking
from hpf.federation.crypto.slot_codec import FAILED, chunks, decode_totals, encode_noisy_partials
from hpf.federation.errors import CryptoError, DataError, PlanError
from hpf.federation.hpf_schema import demo_catalog
from hpf.federation.planner import plan_query
from hpf.federation.privacy import skellam
from hpf.federation.privacy.dp_plan import DpTerms, dp_plan, dp_terms, never_negative, suppress_small_groups
from hpf.federation.trust import statements
from hpf.node.executor import Noisy, PartialExecutor
from hpf.policies.model import Privacy

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
    # arithmetic over row values is computed wide (the planner's totality stage)
    assert by_kind[("sum", "2 * CAST(v AS INT128) + 1")].sensitivity == 6 * 21  # 2 * 10 + 1
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


def _capped_answer(catalog: Catalog, sql: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    clamped, source = dp_plan(plan_query(sql, catalog), catalog)
    con = duckdb.connect()
    con.execute("CREATE TABLE t (pid VARCHAR, g VARCHAR, v BIGINT, w BIGINT)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    return sorted(con.execute(clamped.node_sql(source)).fetchall())


def test_clamped_sql_caps_rows_per_person_on_the_table_and_clamps_values() -> None:
    rows = [("p1", "x", 100, 1), ("p1", "x", -100, 1), ("p1", "x", 3, 1)]
    rows += [("p2", "y", 4, 0), ("p2", "y", 5, 0), ("p2", "y", 6, 1)]
    got = _capped_answer(BOUNDED, "SELECT g, COUNT(*), SUM(v) FROM t WHERE w > 0 GROUP BY g", rows)
    # p1 keeps 2 of its 3 rows, the first in the order of all columns (v = -100 and 3, clamped to -5 and 3); the
    # cap is on the table, before the WHERE: p2's kept rows (v = 4, 5) have w = 0, so p2 counts nowhere
    assert got == [("x", 2, 2, -2)]  # COUNT(*), COUNT(v), SUM(v)


def test_prefer_keeps_each_persons_rows_with_the_highest_values() -> None:
    latest = _catalog(contribution={"person": "pid", "max_rows": 2, "max_regions": 1, "prefer": "w"})
    rows = [("p1", "x", 1, 10), ("p1", "x", 2, 30), ("p1", "x", 3, 20), ("p1", "y", 4, 5)]
    got = _capped_answer(latest, "SELECT g, COUNT(*), SUM(v) FROM t GROUP BY g", rows)
    assert got == [("x", 2, 2, 5)]  # w = 30 and 20 are kept: v = 2 + 3


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


def test_nulls_stay_null_under_clamping() -> None:
    rows = [("p1", "x", 4, 1), ("p2", "x", None, 1), ("p3", "x", None, 1)]
    got = _capped_answer(BOUNDED, "SELECT g, COUNT(*), SUM(v) FROM t GROUP BY g", rows)
    assert got == [("x", 3, 1, 4)]  # GREATEST(NULL, -5) would be -5: a NULL is neither summed nor counted


def test_a_cast_that_rounds_widens_the_range_to_its_scale() -> None:
    # clamped, v * 0.15 is at most 1.5 in absolute value, and CAST(1.5 AS DECIMAL(38, 0)) is 2 (the planner
    # accepts only casts that hold every value of the column's type: here DECIMAL(38, 0) and HUGEINT)
    plan = plan_query("SELECT SUM(CAST(v * 0.15 AS DECIMAL(38, 0))), SUM(CAST(v AS HUGEINT)) FROM t", BOUNDED)
    terms = dp_terms(plan, BOUNDED, 1.0, 1e-6, 0)
    sens = {c.arg: n.sensitivity for c, n in zip(plan.components, terms.components, strict=True) if c.kind == "sum"}
    assert sens["CAST(CAST(v AS INT128) * 0.15 AS DECIMAL(38, 0))"] == 6 * 2
    assert sens["CAST(v AS INT128)"] == 6 * 10  # an integer cast is bounded like its argument


def test_too_many_rows_per_person_for_exact_noise_is_refused_not_looped_on() -> None:
    huge = _catalog(contribution={"person": "pid", "max_rows": 1_000_000, "max_regions": 256})
    with pytest.raises(PlanError) as info:
        dp_terms(plan_query("SELECT COUNT(*) FROM t", huge), huge, 0.1, 1e-9, 0)
    assert info.value.code == "DP_UNBOUNDED"


def test_noisy_variances_and_averages_finish_without_false_alarms() -> None:
    plan = plan_query("SELECT g, AVG(v), VAR_POP(v) FROM t GROUP BY g", BOUNDED)
    n, s, ss = (plan.aggregates[0].count, plan.aggregates[0].sum, plan.aggregates[1].sumsq)
    assert s is not None and ss is not None
    cell = [0] * len(plan.components)
    cell[n], cell[s], cell[ss] = 3, 30, 10  # 3 * 10 - 30^2 < 0: noise, not tampering, under DP
    empty = [0] * len(plan.components)
    empty[n] = -2  # a noisy count below zero
    rows = finish(plan, {0: cell, 1: empty}, noisy=True).rows
    assert rows == [["x", 10.0, 0.0], ["y", None, None]]
    with pytest.raises(CryptoError):  # exact totals like these are a corrupt answer
        finish(plan, {0: cell}, noisy=False)


def test_a_region_failing_on_its_rows_under_dp_sends_randomness_not_zeros() -> None:
    class Failing:
        dialect = "duckdb"

        def run(self, sql: str, on_abandon: Any = None, finish_by: float | None = None) -> list[tuple[Any, ...]]:
            raise DataError("overflow", code="NODE_EXECUTION_FAILED")

    plan = plan_query("SELECT g, COUNT(*), SUM(v) FROM t GROUP BY g", BOUNDED)
    clamped, source = dp_plan(plan, BOUNDED)
    noise = np.full((plan.layout.cells, len(plan.components)), 7, dtype=np.int64)
    units = [1] * len(plan.components)
    keys = he.ClientKeys.generate()
    ctx = he.load_public_context(keys.public_context())
    executor = PartialExecutor("a", BOUNDED, Failing())
    result = executor.compute("q", plan, ctx, noisy=Noisy(clamped, source, "unused", units, noise))
    slots = [keys.decrypt(b, n) for b, n in zip(result.ciphertexts, plan.layout.chunk_sizes, strict=True)]
    # the failure mark, and random values everywhere else: not zeros (the others' partials would show in the
    # sum an asker can decrypt anyway), not this region's noise share alone either
    assert all(int(c[-1]) == FAILED for c in slots)
    data = np.concatenate([c[:-1] for c in slots])
    noisy_only = np.concatenate([c[:-1] for c in chunks(encode_noisy_partials(plan, [], units, noise))])
    assert np.count_nonzero(data == noisy_only) <= 1 and int(np.abs(data).max()) > he.HALF_PLAIN // 2


def test_a_run_id_binds_the_privacy_terms() -> None:
    exact = masking.run_id("q", ["a", "b", "c"], statements.canonical_terms(statements.EXACT))
    dp = masking.run_id("q", ["a", "b", "c"], statements.canonical_terms({"mode": "dp", "epsilon": "1.000000000"}))
    looser = masking.run_id("q", ["a", "b", "c"], statements.canonical_terms({"mode": "dp", "epsilon": "2.000000000"}))
    assert len({exact, dp, looser}) == 3  # regions under other terms mask for another run: no sum comes out


def test_calibrated_terms_are_signed_without_a_float_and_read_back_exactly() -> None:
    plan = plan_query("SELECT SUM(amount_fen), STDDEV_POP(amount_fen) FROM deposits", CATALOG)
    for epsilon, delta in ((1.0, 1e-8), (0.1, 1e-10), (0.3, 3e-7)):
        terms = dp_terms(plan, CATALOG, epsilon, delta, 20)
        signed = terms.canonical()
        blob = statements.canonical_terms({"mode": "dp", **signed})
        assert not any(isinstance(v, float) for v in (signed["epsilon"], signed["delta"], signed["threshold"]))
        assert all(type(m) is str for _, _, m in signed["components"]) and b"e-" not in blob
        back = DpTerms.from_canonical(signed)
        assert back == terms and back.canonical() == signed  # what a client derives is what the regions signed
        assert [c.mu for c in back.components] == [c.mu for c in terms.components]  # the noise sampled: identical
        # the signed mu is the calibrated one rounded up: never less noise than epsilon asks for
        mus = [c.mu for c in terms.components if c.sensitivity]
        comps = [skellam.ComponentNoise(c.sensitivity, c.sensitivity) for c in terms.components if c.sensitivity]
        assert skellam.epsilon_of(mus, comps, delta) <= epsilon


def test_a_policy_epsilon_or_delta_finer_than_its_signed_form_is_refused() -> None:
    budget = {"epsilon": 30, "delta": 1e-5, "period": "month"}
    Privacy.model_validate({"mode": "dp", "epsilon": 0.123456789, "delta": 1e-18, "budget": budget})
    for fine in ({"epsilon": 0.1234567891}, {"delta": 1.5e-19}):
        with pytest.raises(ValueError, match="digits after the point"):
            Privacy.model_validate({"mode": "dp", "epsilon": 1, "delta": 1e-8, "budget": budget, **fine})


def test_never_negative_names_the_plain_counts_and_the_sums_and_averages_of_values_never_below_zero() -> None:
    """A COUNT, or a SUM or AVG of an argument whose clamped range starts at 0 or above, has a true value of at least
    0, so a negative noisy value there is noise alone; an expression over an aggregate, or a sum of a column whose
    bounds go below 0, may truly be negative."""
    catalog = _catalog(
        contribution={"person": "pid", "max_rows": 2, "max_regions": 3},
        columns={
            "pid": {"type": "VARCHAR", "class": "identifier"},
            "g": {"type": "VARCHAR", "domain": {"values": ["x", "y"]}},
            "v": {"type": "INTEGER", "bounds": [-5, 10]},
            "u": {"type": "INTEGER", "bounds": [0, 10]},
        },
    )
    sql = (
        "SELECT g, COUNT(*) AS n, COUNT(v), SUM(u) AS total, AVG(u), SUM(v), SUM(u) - 1, SUM(u - 11), "
        "AVG(CASE WHEN g = 'x' THEN u END), SUM(u * v), SUM(u * u) FROM t GROUP BY g"
    )
    plan = plan_query(sql, catalog)
    assert never_negative(plan, catalog) == {1: "count", 2: "count", 3: "sum", 4: "avg", 8: "avg", 10: "sum"}
