"""The codec's answers to two review findings: k counts the rows each aggregate covers, and a region whose rows
make the plan fail says so only inside the ciphertext (the coordinator cannot tell a failure from an answer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from slot_helpers import deposit, node_rows, plain_answer

from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.crypto.he import HALF_PLAIN
from hpf.federation.crypto.slot_codec import CANARY, FAILED, chunks, decode_totals, encode_partials, failure_chunks
from hpf.federation.errors import CryptoError, DataError
from hpf.federation.planner import plan_query

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(FIXTURES / "mini_catalog.yaml")


def test_k_applies_to_the_rows_a_filtered_aggregate_covers(catalog: Catalog) -> None:
    """30 rows in the group, but the FILTER covers 1: the node withholds the group, not just that sum."""
    plan = plan_query("SELECT COUNT(*), SUM(amount_fen) FILTER (WHERE gender = 'F') FROM deposits", catalog)
    rows: list[tuple[Any, ...]] = [deposit(i, "310000", 10, "M") for i in range(29)] + [deposit(99, "310000", 7, "F")]
    totals = plain_answer(plan, [rows], k=5)
    (cell,) = totals.values()
    assert cell[plan.withheld_index] == 1 and not any(v for j, v in enumerate(cell) if j != plan.withheld_index)
    rows += [deposit(100 + i, "310000", 1, "F") for i in range(4)]  # now 5 rows covered: released
    (cell,) = plain_answer(plan, [rows], k=5).values()
    assert cell[plan.withheld_index] == 0 and cell[0] == 34


def test_k_applies_to_the_rows_an_aggregate_leaves_out(catalog: Catalog) -> None:
    """COUNT(*) less COUNT(*) FILTER (WHERE NOT c) would count the 2 rows where c holds: withheld too."""
    plan = plan_query("SELECT COUNT(*), COUNT(*) FILTER (WHERE gender <> 'F') FROM deposits", catalog)
    rows: list[tuple[Any, ...]] = [deposit(i, "310000", 10, "M") for i in range(30)]
    rows += [deposit(100 + i, "310000", 7, "F") for i in range(2)]
    (cell,) = plain_answer(plan, [rows], k=5).values()
    assert cell[plan.withheld_index] == 1 and cell[0] == 0
    rows += [deposit(200 + i, "310000", 7, "F") for i in range(3)]  # 5 rows left out: released
    (cell,) = plain_answer(plan, [rows], k=5).values()
    assert cell[plan.withheld_index] == 0 and cell[0] == 35


def test_k_applies_to_the_rows_between_two_filtered_aggregates(catalog: Catalog) -> None:
    """Two filters one row apart would single that row out by their difference: withheld."""
    plan = plan_query(
        "SELECT COUNT(*), SUM(amount_fen) FILTER (WHERE amount_fen >= 5), SUM(amount_fen) FILTER (WHERE amount_fen > 5)"
        " FROM deposits",
        catalog,
    )
    rows: list[tuple[Any, ...]] = [deposit(i, "310000", 10 + i, "M") for i in range(30)] + [deposit(99, "310000", 5)]
    (cell,) = plain_answer(plan, [rows], k=5).values()
    assert cell[plan.withheld_index] == 1 and cell[0] == 0


def test_a_region_failing_on_its_rows_is_counted_inside_the_answer(catalog: Catalog) -> None:
    plan = plan_query("SELECT city_code, SUM(amount_fen) FROM deposits GROUP BY city_code", catalog)
    good = chunks(encode_partials(plan, node_rows(plan, [deposit(1, "310000", 5)])))
    failed = failure_chunks(plan)
    assert all(int(c[-1]) == FAILED for c in failed)  # the mark in every canary
    # and fresh randomness in every other slot (not zeros: an asker who decrypted the refused sum anyway would
    # hold the other regions' partials): anywhere in the plain range, and different each time
    data = np.concatenate([c[:-1] for c in failed])
    assert data.size == plan.layout.total and np.count_nonzero(data) >= data.size - 1
    again = np.concatenate([c[:-1] for c in failure_chunks(plan)])
    assert int(np.abs(data).max()) > HALF_PLAIN // 2 and np.count_nonzero(data == again) <= 1
    added = [a + b + b for a, b in zip(good, failed, strict=True)]
    with pytest.raises(DataError) as err:
        decode_totals(plan, added, regions=3)
    assert err.value.code == "NODE_EXECUTION_FAILED" and "2 region(s)" in err.value.message
    assert decode_totals(plan, good, regions=1)  # an answer without failures decodes


@pytest.mark.parametrize("canary", [0, 2 * CANARY + 1, 3 * FAILED + 1])
def test_canaries_that_no_honest_regions_add_up_to_are_refused(catalog: Catalog, canary: int) -> None:
    plan = plan_query("SELECT COUNT(*) FROM deposits", catalog)
    pieces = [c.copy() for c in chunks(np.zeros(plan.layout.total, dtype=np.int64))]
    pieces[0][-1] = canary
    with pytest.raises(CryptoError) as err:
        decode_totals(plan, pieces, regions=2)
    assert err.value.code == "ANSWER_CORRUPT"
