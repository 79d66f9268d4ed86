"""Mini-catalog deposits as a node would hold them, and their slot vectors summed in plaintext, for codec tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np

from hpf.federation.crypto.slot_codec import chunks, decode_totals, encode_partials
from hpf.federation.plan import Plan


def deposit(i: int, city: str | None = None, amount: int | None = 1, gender: str | None = None) -> tuple[Any, ...]:
    return (f"p{i}", city, dt.date(2020, 1, 1), amount, None, gender, None)


def oracle(region_rows: Sequence[Sequence[tuple[Any, ...]]], sql: str) -> list[tuple[Any, ...]]:
    """DuckDB over the union of the regions' rows (a table of the mini catalog's shape)."""
    with duckdb.connect(":memory:") as con:
        con.execute(
            "CREATE TABLE deposits (person_id VARCHAR, city_code VARCHAR, month DATE, amount_fen BIGINT, "
            "rate DECIMAL(6,4), gender VARCHAR, score DOUBLE)"
        )
        rows = [r for region in region_rows for r in region]
        if rows:
            con.executemany("INSERT INTO deposits VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return con.execute(sql).fetchall()


def node_rows(plan: Plan, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """What ``plan.node_sql()`` returns on a node holding ``rows``."""
    return oracle([rows], plan.node_sql())


def plain_answer(plan: Plan, region_rows: Sequence[Sequence[tuple[Any, ...]]], k: int) -> dict[int, list[int]]:
    """Decoded totals of the plaintext sum of every region's chunks (canaries included), each encoded with ``k``."""
    per_region = [chunks(encode_partials(plan, node_rows(plan, rows), min_group_size=k)) for rows in region_rows]
    added = [np.sum(pieces, axis=0) for pieces in zip(*per_region, strict=True)]
    return decode_totals(plan, added, len(region_rows))
