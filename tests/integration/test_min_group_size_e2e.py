"""Minimum group size end to end: nodes withhold small groups, the client lists them with NULL aggregates.

Until a node takes k from its policy, the test makes every node encode with ``K`` by wrapping
``hpf.node.executor.encode_partials``; the rest (encryption, the coordinator's sum, decryption, decoding,
finishing) is the real federation. The oracle is :meth:`harness.Federation.oracle_withheld`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

import hpf.node.executor
from hpf.federation.crypto import he
from hpf.federation.crypto.slot_codec import encode_partials

K = 3
CITIES = ["310000", "330100", "320100"]
TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": CITIES}},
            "status": {"type": "INTEGER", "class": "public", "domain": {"range": [1, 3]}},
            "amount_fen": {"type": "BIGINT", "class": "public"},
        }
    }
}


def _rows(spec: dict[tuple[str | None, int], int]) -> list[tuple[Any, ...]]:
    """``count`` rows per (city, status), with amounts 10 * status + 0, 1, 2, ..."""
    return [(city, status, 10 * status + i) for (city, status), count in spec.items() for i in range(count)]


NODE_ROWS = {
    # 310000: 3 + 4 rows (kept); 330100: 2 at n0 (withheld) + 5; 320100: 1 at n1 (withheld); NULL: 3 at n2 (kept)
    "n0": {"deposits": _rows({("310000", 1): 3, ("330100", 1): 2})},
    "n1": {"deposits": _rows({("310000", 2): 4, ("330100", 2): 5, ("320100", 1): 1})},
    "n2": {"deposits": _rows({(None, 3): 3})},
}


@pytest.fixture(scope="module")
def fed() -> Iterator[harness.Federation]:
    with pytest.MonkeyPatch.context() as patch:

        def with_k(plan: Any, rows: Any, min_group_size: int = 1) -> Any:
            return encode_partials(plan, rows, min_group_size=K)

        patch.setattr(hpf.node.executor, "encode_partials", with_k)
        with tempfile.TemporaryDirectory(prefix="hpf-k-") as tmp, harness.federation(Path(tmp), TABLES, NODE_ROWS) as f:
            yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.mark.parametrize(
    "keys_sql, aggregates_sql, where",
    [
        ("city_code", "COUNT(*), SUM(amount_fen), AVG(amount_fen)", ""),
        ("city_code", "COUNT(*), SUM(amount_fen)", " WHERE amount_fen >= 11"),
        ("city_code, status", "COUNT(amount_fen), SUM(amount_fen) * 2", ""),
    ],
    ids=["by_city", "where_makes_groups_smaller", "two_keys"],
)
def test_answer_equals_the_withheld_oracle(
    fed: harness.Federation, keys: he.ClientKeys, keys_sql: str, aggregates_sql: str, where: str
) -> None:
    sql = f"SELECT {keys_sql}, {aggregates_sql} FROM deposits{where} GROUP BY {keys_sql} ORDER BY {keys_sql}"
    withheld = fed.oracle_withheld(f"SELECT {keys_sql}, COUNT(*) FROM deposits{where} GROUP BY {keys_sql}", K)
    n_keys = keys_sql.count(",") + 1
    expected = harness.mask_withheld(fed.oracle(sql), withheld, n_keys=n_keys)
    with fed.client(keys=keys) as client:
        answer = client.query(sql)
    assert answer.missing == []
    assert withheld and answer.withheld_groups == len(withheld)
    assert [tuple(r) for r in answer.rows] == expected
    assert answer.to_json()["withheld_groups"] == len(withheld)


def test_by_city_withholds_exactly_the_small_groups(fed: harness.Federation, keys: he.ClientKeys) -> None:
    with fed.client(keys=keys) as client:
        answer = client.query("SELECT city_code, COUNT(*), SUM(amount_fen) FROM deposits GROUP BY 1 ORDER BY 1")
    kept = [["310000", 7, (10 + 11 + 12) + (20 + 21 + 22 + 23)], [None, 3, 30 + 31 + 32]]
    assert answer.rows == [kept[0], ["320100", None, None], ["330100", None, None], kept[1]]
    assert answer.withheld_groups == 2


def test_having_drops_withheld_groups_but_the_answer_says_so(fed: harness.Federation, keys: he.ClientKeys) -> None:
    sql = "SELECT city_code, COUNT(*) AS n FROM deposits GROUP BY 1 HAVING COUNT(*) >= 1 ORDER BY 1"
    with fed.client(keys=keys) as client:
        answer = client.query(sql)
    assert answer.rows == [["310000", 7], [None, 3]]
    assert answer.withheld_groups == 2


def test_ungrouped_answer_is_null_when_a_region_withheld_it(fed: harness.Federation, keys: he.ClientKeys) -> None:
    with fed.client(keys=keys) as client:
        small = client.query("SELECT COUNT(*), SUM(amount_fen) FROM deposits WHERE city_code = '330100'")
        kept = client.query("SELECT COUNT(*), SUM(amount_fen) FROM deposits WHERE city_code = '310000'")
        none = client.query("SELECT COUNT(*), SUM(amount_fen) FROM deposits WHERE amount_fen > 1000")
    assert small.rows == [[None, None]] and small.withheld_groups == 1
    assert kept.rows == [[7, (10 + 11 + 12) + (20 + 21 + 22 + 23)]] and kept.withheld_groups == 0
    assert none.rows == [[0, None]] and none.withheld_groups == 0
