"""Many caseworkers at once: concurrent queries through one coordinator all equal the oracle."""

from __future__ import annotations

import datetime as dt
import random
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness

from hpf.federation.crypto.he import ClientKeys

TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": ["310000", "330100", "320100"]}},
            "month": {"type": "DATE", "class": "public", "domain": {"range": ["2015-01-01", "2024-12-31"]}},
            "amount_fen": {"type": "BIGINT", "class": "public"},
        }
    }
}
QUERIES = [
    "SELECT COUNT(*), SUM(amount_fen) FROM deposits",
    "SELECT city_code, AVG(amount_fen) FROM deposits GROUP BY city_code ORDER BY city_code",
    "SELECT EXTRACT(YEAR FROM month) AS y, COUNT(*) FROM deposits WHERE amount_fen > 0 GROUP BY y ORDER BY y",
    "SELECT city_code, VAR_SAMP(amount_fen) FROM deposits GROUP BY 1 HAVING COUNT(*) > 3 ORDER BY 1",
]


def _rows(seed: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    return [
        (
            rng.choice(["310000", "330100", "320100"]),
            dt.date(rng.randrange(2015, 2025), 1, 1),
            rng.randrange(-999, 10**6),
        )
        for _ in range(60)
    ]


def _same(got: list[list[Any]], want: list[tuple[Any, ...]]) -> bool:
    if len(got) != len(want):
        return False
    for g_row, w_row in zip(got, want, strict=True):
        for g, w in zip(g_row, w_row, strict=True):
            if isinstance(w, float):
                if g is None or abs(g - w) > 1e-9 * max(abs(w), 1.0):
                    return False
            elif g != w:
                return False
    return True


def test_concurrent_clients_with_their_own_keys_all_get_exact_answers() -> None:
    rows = {f"n{i}": {"deposits": _rows(i)} for i in range(3)}
    with tempfile.TemporaryDirectory() as tmp, harness.federation(Path(tmp), TABLES, rows) as fed:
        expected = {sql: fed.oracle(sql) for sql in QUERIES}
        keys = [ClientKeys.generate() for _ in range(4)]

        def caseworker(i: int) -> list[bool]:
            with fed.client(keys[i % len(keys)]) as client:  # several people, several key pairs
                return [_same(client.query(sql).rows, expected[sql]) for sql in QUERIES * 3]

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(caseworker, range(8)))
    assert all(all(r) for r in results) and sum(len(r) for r in results) == 8 * 3 * len(QUERIES)
