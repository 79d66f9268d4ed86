"""Minimum group size: a node withholds its small groups, the client lists them with NULL aggregates.

Nodes here are DuckDB tables of the mini catalog's shape; their slot vectors are summed in plaintext (the
codec tests) or encrypted, summed and decrypted with BFV (the in-process federation), then decoded and
finished as the client does. The oracle is :func:`group_size_oracle.withheld_oracle` over per-node DuckDB counts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from examples import budget
from group_size_oracle import mask_withheld, withheld_oracle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slot_helpers import deposit, node_rows, oracle, plain_answer

from hpf.cli.output import render
from hpf.client.answers import QueryAnswer
from hpf.client.finish import FinishedAnswer, finish
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.crypto import he
from hpf.federation.crypto.slot_codec import CANARY, chunks, decode_totals, encode_partials
from hpf.federation.errors import CryptoError
from hpf.federation.plan import WITHHELD, Plan
from hpf.federation.planner import plan_query, sketch_query

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CITIES = ("310000", "330100", "320100")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(FIXTURES / "mini_catalog.yaml")


def grid(plan: Plan, flat: np.ndarray) -> np.ndarray:
    return flat.reshape(plan.layout.cells, plan.layout.width)


# ------------------------------------------------------------------------------------- the plan's layout

PLANS = [
    "SELECT COUNT(*) FROM deposits",
    "SELECT gender, SUM(amount_fen), VAR_POP(rate) FROM deposits GROUP BY gender",
    "SELECT city_code, month, AVG(amount_fen) FROM deposits WHERE amount_fen > 0 GROUP BY 1, 2",
]


@pytest.mark.parametrize("sql", PLANS)
def test_every_plan_lays_out_one_withheld_mark_without_sql(catalog: Catalog, sql: str) -> None:
    plan = plan_query(sql, catalog)
    kinds = [c.kind for c in plan.components]
    assert kinds.count(WITHHELD) == 1 and kinds[-1] == WITHHELD and kinds[0] == "count"
    mark = plan.components[plan.withheld_index]
    assert mark.arg is None and mark.limbs == 1 and mark.sql_terms() == [] and not mark.from_sql
    assert plan.layout.width == sum(c.limbs for c in plan.components)
    assert f"c{plan.withheld_index}_" not in plan.node_sql()
    canonical = sketch_query(sql, catalog).canonical()  # what the fingerprint is the SHA-256 of
    assert ["withheld", None, 0, 2] in canonical["components"]
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(blob.encode()).hexdigest() == plan.fingerprint
    canonical["components"] = canonical["components"][:-1]
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(blob.encode()).hexdigest() != plan.fingerprint  # every party must agree on the mark too


# ------------------------------------------------------------------------------- encoding at one node


def test_cells_below_k_are_blanked_and_marked(catalog: Catalog) -> None:
    """k = 3: a cell of 2 rows is withheld, cells of 3 and 4 rows are not, an empty cell stays empty."""
    plan = plan_query("SELECT city_code, COUNT(*), SUM(amount_fen) FROM deposits GROUP BY city_code", catalog)
    rows = [deposit(i, "310000", 10) for i in range(2)]  # k - 1
    rows += [deposit(10 + i, "330100", 20) for i in range(3)]  # k
    rows += [deposit(20 + i, None, 30) for i in range(4)]  # k + 1 (the NULL cell); 320100 and "other": empty
    g = grid(plan, encode_partials(plan, node_rows(plan, rows), min_group_size=3))
    mark = plan.layout.offsets[plan.withheld_index]
    cells = {"310000": 0, "330100": 1, "320100": 2, None: 3, "(other)": 4}
    assert g[cells["310000"]].tolist() == [0] * mark + [1]
    assert g[cells["330100"], :3].tolist() == [3, 0, 0] and g[cells["330100"], mark] == 0
    assert g[cells[None], :3].tolist() == [4, 0, 0] and g[cells[None], mark] == 0
    assert not g[cells["320100"]].any() and not g[cells["(other)"]].any()


def test_null_and_other_cells_are_withheld_like_any_other(catalog: Catalog) -> None:
    """Out-of-domain values share the "other" cell: k applies to the cell's count, not to each value."""
    plan = plan_query("SELECT city_code, COUNT(*) FROM deposits GROUP BY city_code", catalog)
    rows = [deposit(0, None), deposit(1, "999999"), deposit(2, "888888"), deposit(3, "777777")]
    g = grid(plan, encode_partials(plan, node_rows(plan, rows), min_group_size=2))
    mark = plan.layout.offsets[plan.withheld_index]
    assert g[3, mark] == 1 and not g[3, :mark].any()  # one NULL row: withheld
    assert g[4, mark] == 0 and g[4, 0] == 3  # three "other" rows (three distinct values): kept


@pytest.mark.parametrize("k", [-5, 0, 1])
def test_k_of_one_or_less_withholds_nothing(catalog: Catalog, k: int) -> None:
    plan = plan_query("SELECT gender, SUM(amount_fen) FROM deposits GROUP BY gender", catalog)
    rows = node_rows(plan, [deposit(0, gender="F"), deposit(1, gender=None, amount=-3)])
    assert encode_partials(plan, rows, min_group_size=k).tolist() == encode_partials(plan, rows).tolist()
    assert not grid(plan, encode_partials(plan, rows))[:, plan.layout.offsets[plan.withheld_index]].any()


def test_ungrouped_query_is_withheld_below_k_but_not_when_empty(catalog: Catalog) -> None:
    plan = plan_query("SELECT COUNT(*), SUM(amount_fen) FROM deposits WHERE amount_fen > 0", catalog)
    mark = plan.layout.offsets[plan.withheld_index]
    small = encode_partials(plan, node_rows(plan, [deposit(0, amount=5)]), min_group_size=2)
    assert small.tolist() == [0] * mark + [1]
    empty = encode_partials(plan, node_rows(plan, [deposit(0, amount=-5)]), min_group_size=2)
    assert not empty.any()


def test_withheld_cells_keep_range_checks(catalog: Catalog) -> None:
    """Blanking a small cell does not switch off the range check of the kept ones."""
    plan = plan_query("SELECT gender, SUM(amount_fen) FROM deposits GROUP BY gender", catalog)
    rows = [("F", 1, 1, 5), ("M", 9, 9, 1 << 100)]  # k0, COUNT(*), COUNT(amount_fen), SUM(amount_fen)
    with pytest.raises(CryptoError) as info:
        encode_partials(plan, rows, min_group_size=2)
    assert info.value.code == "PARTIAL_OUT_OF_RANGE"
    encode_partials(plan, [("F", 1, 1, 5), ("M", 1, 1, 1 << 100)], min_group_size=2)  # both withheld


# ---------------------------------------------------------------------------------- decoding the sum


def test_decoded_totals_count_the_regions_that_withheld(catalog: Catalog) -> None:
    plan = plan_query("SELECT gender, COUNT(*), SUM(amount_fen) FROM deposits GROUP BY gender", catalog)
    regions = [
        [deposit(0, gender="F", amount=7)],  # F withheld
        [deposit(1, gender="F", amount=1), deposit(2, gender="F", amount=2), deposit(3, gender="M", amount=4)],
        [deposit(4, gender="M", amount=8), deposit(5, gender="M", amount=16)],
    ]
    totals = plain_answer(plan, regions, k=2)
    mark = plan.withheld_index
    # F: region 0 withheld (its 7 is not in the sum); M: region 1 withheld, region 2 kept; NULL and other: empty
    assert {cell: (t[0], t[mark]) for cell, t in totals.items()} == {0: (2, 1), 1: (2, 1)}
    assert totals[0][2] == 3 and totals[1][2] == 24


def test_a_cell_only_withheld_is_still_present(catalog: Catalog) -> None:
    plan = plan_query("SELECT gender, COUNT(*) FROM deposits GROUP BY gender", catalog)
    regions = [[deposit(0, gender="M")], [deposit(1, gender="M")], []]
    totals = plain_answer(plan, regions, k=2)
    assert totals == {1: [0, 2]}  # COUNT(*) 0, withheld by two regions


def test_multi_chunk_layouts_withhold_in_every_chunk(catalog: Catalog) -> None:
    plan = plan_query("SELECT city_code, month, COUNT(*), SUM(amount_fen) FROM deposits GROUP BY 1, 2", catalog)
    assert len(plan.layout.chunk_sizes) >= 3
    days = [dt.date(2015, 1, 2), dt.date(2019, 6, 1), dt.date(2024, 12, 31)]  # early, middle, last cells
    rows = [(f"p{i}", "320100", d, 5, None, "F", None) for i, d in enumerate(days)]
    rows += [(f"q{i}", "320100", days[-1], 6, None, "F", None) for i in range(3)]
    totals = plain_answer(plan, [rows], k=2)
    assert len({cell * plan.layout.width // (he.SLOTS - 1) for cell in totals}) == 3  # three ciphertexts
    mark = plan.withheld_index
    assert [(t[0], t[mark]) for _, t in sorted(totals.items())] == [(0, 1), (0, 1), (4, 0)]


def _corrupt(plan: Plan, flat: np.ndarray, cell: int, value: int, regions: int) -> list[np.ndarray]:
    flat = flat.copy()
    flat[cell * plan.layout.width + plan.layout.offsets[plan.withheld_index]] = value
    out = chunks(flat)
    for c in out:
        c[-1] = regions * CANARY
    return out


@pytest.mark.parametrize("value", [-1, 3, 4, he.HALF_PLAIN - 1], ids=["negative", "regions+1", "regions+2", "huge"])
def test_withheld_counts_outside_zero_to_regions_are_refused(catalog: Catalog, value: int) -> None:
    plan = plan_query("SELECT gender, COUNT(*) FROM deposits GROUP BY gender", catalog)
    flat = encode_partials(plan, node_rows(plan, [deposit(0, gender="F")]))
    decode_totals(plan, _corrupt(plan, flat, cell=1, value=2, regions=2), regions=2)  # in range: accepted
    with pytest.raises(CryptoError) as info:
        decode_totals(plan, _corrupt(plan, flat, cell=1, value=value, regions=2), regions=2)
    assert info.value.code == "ANSWER_CORRUPT"


def test_a_cell_every_region_withheld_must_be_all_zero(catalog: Catalog) -> None:
    plan = plan_query("SELECT gender, COUNT(*) FROM deposits GROUP BY gender", catalog)
    flat = encode_partials(plan, node_rows(plan, [deposit(0, gender="F")]))  # F: count 1, not withheld
    with pytest.raises(CryptoError) as info:
        decode_totals(plan, _corrupt(plan, flat, cell=0, value=1, regions=1), regions=1)
    assert info.value.code == "ANSWER_CORRUPT"


def test_canary_and_limb_checks_still_hold(catalog: Catalog) -> None:
    plan = plan_query("SELECT gender, COUNT(*) FROM deposits GROUP BY gender", catalog)
    flat = encode_partials(plan, node_rows(plan, [deposit(0, gender="F")]), min_group_size=2)
    with pytest.raises(CryptoError) as info:
        decode_totals(plan, chunks(flat), regions=2)  # one canary for two regions
    assert info.value.code == "ANSWER_CORRUPT"
    bad = chunks(flat)
    bad[0][0] = -1  # a low count limb below 0
    with pytest.raises(CryptoError):
        decode_totals(plan, bad, regions=1)


# ------------------------------------------------------------------------------------------- finishing


def finished(plan: Plan, region_rows: Sequence[Sequence[tuple[Any, ...]]], k: int) -> FinishedAnswer:
    return finish(plan, plain_answer(plan, region_rows, k))


REGIONS = [
    [deposit(0, "310000", 5), deposit(1, "310000", 6), deposit(2, "330100", 100)],  # 330100: 1 row
    [deposit(3, "310000", 7), deposit(7, "310000", 2), deposit(4, "330100", 1), deposit(5, "330100", 2)]
    + [deposit(6, None, 9)],  # NULL: 1 row
]


def test_withheld_groups_are_listed_with_null_aggregates(catalog: Catalog) -> None:
    sql = "SELECT city_code, COUNT(*), SUM(amount_fen), AVG(amount_fen) FROM deposits GROUP BY 1 ORDER BY 1"
    answer = finished(plan_query(sql, catalog), REGIONS, k=2)
    assert answer.rows == [["310000", 4, 20, 5.0], ["330100", None, None, None], [None, None, None, None]]
    assert answer.withheld_groups == 2
    assert finished(plan_query(sql, catalog), REGIONS, k=1).withheld_groups == 0


def test_having_drops_withheld_groups_as_duckdb_drops_nulls(catalog: Catalog) -> None:
    sql = "SELECT city_code, COUNT(*) AS n FROM deposits GROUP BY 1 HAVING COUNT(*) >= 1 ORDER BY 1"
    answer = finished(plan_query(sql, catalog), REGIONS, k=2)
    assert answer.rows == [["310000", 4]]
    assert answer.withheld_groups == 2  # the answer is incomplete: say so even though no NULL is shown
    keys_only = "SELECT city_code, COUNT(*) FROM deposits GROUP BY 1 HAVING city_code IS NULL"
    assert finished(plan_query(keys_only, catalog), REGIONS, k=2).rows == [[None, None]]


def test_ungrouped_answer_is_null_when_any_region_withheld(catalog: Catalog) -> None:
    sql = "SELECT COUNT(*), SUM(amount_fen) * 2 FROM deposits WHERE city_code = '330100'"
    answer = finished(plan_query(sql, catalog), REGIONS, k=2)
    assert answer.rows == [[None, None]] and answer.withheld_groups == 1
    assert finished(plan_query(sql, catalog), REGIONS, k=1).rows == [[3, 206]]
    nothing = finished(plan_query(sql.replace("330100", "320100"), catalog), REGIONS, k=5)
    assert nothing.rows == [[0, None]] and nothing.withheld_groups == 0


# ------------------------------------------------------------------- against the oracle, with real BFV

GROUP_SQL = "SELECT gender, city_code, COUNT(*) FROM deposits WHERE amount_fen > -50 GROUP BY gender, city_code"
QUERY_SQL = (
    "SELECT gender, city_code, COUNT(*), SUM(amount_fen), VAR_POP(amount_fen) FROM deposits "
    "WHERE amount_fen > -50 GROUP BY gender, city_code"
)

REGION_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["F", "M", None]),
        st.sampled_from([*CITIES, None]),
        st.one_of(st.none(), st.integers(-100, 100)),
    ),
    max_size=12,
)


def regional_rows(region: list[tuple[Any, Any, Any]]) -> list[tuple[Any, ...]]:
    return [(f"p{i}", city, None, amount, None, gender, None) for i, (gender, city, amount) in enumerate(region)]


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@settings(max_examples=budget(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(regions=st.lists(REGION_ROWS, min_size=1, max_size=4), k=st.integers(0, 4))
def test_encrypted_federation_equals_the_withheld_oracle(
    catalog: Catalog, keys: he.ClientKeys, regions: list[list[tuple[Any, Any, Any]]], k: int
) -> None:
    """Each region encodes with k and encrypts; the BFV sum decodes and finishes to the masked oracle."""
    plan = plan_query(QUERY_SQL, catalog)
    region_rows = [regional_rows(r) for r in regions]
    ctx = he.load_public_context(keys.public_context())
    running = he.CiphertextSum(ctx, plan.layout.chunk_sizes)
    for rows in region_rows:
        flat = encode_partials(plan, node_rows(plan, rows), min_group_size=k)
        running.add([he.encrypt_slots(ctx, c) for c in chunks(flat)])
    decrypted = [keys.decrypt(blob, n) for blob, n in zip(running.result(), plan.layout.chunk_sizes, strict=True)]
    answer = finish(plan, decode_totals(plan, decrypted, len(region_rows)))

    per_node = {
        f"n{i}": {tuple(r[:-1]): r[-1] for r in oracle([rows], GROUP_SQL)} for i, rows in enumerate(region_rows)
    }
    withheld = withheld_oracle(per_node, k)
    expected = mask_withheld(oracle(region_rows, QUERY_SQL), withheld, n_keys=2)
    assert answer.withheld_groups == len(withheld)
    got = sorted(answer.rows, key=lambda r: repr(r[:2]))
    want = sorted(expected, key=lambda r: repr(r[:2]))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[:4] == list(w[:4])  # keys, COUNT(*) and SUM exactly, NULL where withheld
        assert (g[4] is None and w[4] is None) or math.isclose(g[4], w[4], rel_tol=1e-9, abs_tol=1e-9)


# ------------------------------------------------------------------------------------------ the client


def _answer(withheld: int) -> QueryAnswer:
    return QueryAnswer(
        columns=["city_code", "n"],
        rows=[["310000", 3], ["330100", None]],
        answered=["a", "b"],
        missing=[],
        query_id="q",
        withheld_groups=withheld,
    )


def test_table_output_notes_withheld_groups() -> None:
    text = render(_answer(1), "table")
    assert "1 group(s) withheld: fewer rows than the minimum group size at some region" in text
    assert text.index("withheld") > text.index("330100")  # under the table
    assert "withheld" not in render(_answer(0), "table")


def test_json_output_carries_withheld_groups() -> None:
    assert json.loads(render(_answer(2), "json"))["withheld_groups"] == 2
    assert json.loads(render(_answer(0), "json"))["withheld_groups"] == 0
    assert "withheld" not in render(_answer(2), "csv")  # CSV stays data only; `hpf query` warns on stderr
