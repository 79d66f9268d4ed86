"""The demo's check of every answer: DuckDB over the pooled files, with the minimum group size k applied.

A region withholds a group it holds 1 to k-1 rows of (or whose aggregates cover, or leave out, 1 to k-1 of
them); the client lists such a group with NULL aggregates.
So the check predicts the withheld groups from each region's own files, requires exactly those (where they
are shown) to be NULL, and requires every other row to equal DuckDB over all regions' files pooled, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import duckdb

from federation.catalog import Catalog
from federation.client import QueryAnswer
from federation.hpf_schema import TABLE_NAMES
from federation.lookup_codec import PersonFacts
from federation.plan import Plan

Files = Callable[[str, str], list[str]]  # (table, node or "*") -> parquet files


def pooled(catalog: Catalog, files: Files, node: str, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` in DuckDB over the files of ``node`` ("*": every node's files pooled)."""
    con = duckdb.connect(":memory:")
    try:
        for table in TABLE_NAMES:
            listed = ", ".join(f"'{f}'" for f in files(table, node))
            con.execute(catalog.tables[table].view_sql(table, f"read_parquet([{listed}])"))
        return con.execute(sql).fetchall()
    finally:
        con.close()


def withheld_groups(catalog: Catalog, files: Files, nodes: Sequence[str], plan: Plan, k: int) -> set[tuple[Any, ...]]:
    """Groups some region withholds under k: it holds 1 to k-1 rows of the group, or an aggregate of the query
    covers 1 to k-1 of them, or two of its counts (COUNT(*) and each aggregate's COUNT of its argument) differ
    by 1 to k-1."""
    if k <= 1:
        return set()
    keys = [key.expr for key in plan.keys]
    counts = ["COUNT(*)", *(f"COUNT({c.arg})" for c in plan.components if c.kind == "count" and c.arg)]
    sql = f"SELECT {', '.join([*keys, *counts])} FROM {plan.table}"
    if plan.where:
        sql += f" WHERE {plan.where}"
    if keys:
        sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(keys)))

    def small(values: Sequence[int]) -> bool:
        return any(1 <= v < k for v in values) or any(1 <= abs(a - b) < k for a in values for b in values)

    found = set()
    for node in nodes:
        for row in pooled(catalog, files, node, sql):
            if small(row[len(keys) :]):
                found.add(tuple(row[: len(keys)]))
    return found


def _same_row(a_row: Sequence[Any], b_row: Sequence[Any]) -> bool:
    for a, b in zip(a_row, b_row, strict=True):
        if isinstance(a, float) and isinstance(b, float):
            if abs(a - b) > 1e-9 * max(abs(a), abs(b), 1.0):
                return False
        elif a != b:
            return False
    return True


def matches(answer: QueryAnswer, oracle: list[tuple[Any, ...]], plan: Plan, withheld: set[tuple[Any, ...]]) -> bool:
    """True when the released rows equal the oracle's rows for the same groups, in order, and every withheld
    group shown has only NULL aggregates. Needs every group key among the output columns (the demo's are)."""
    positions = [plan.bare_key_outputs.index(i) for i in range(len(plan.keys))]

    def key(row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(row[p] for p in positions)

    released = [r for r in answer.rows if key(r) not in withheld]
    expected = [r for r in oracle if key(r) not in withheld]
    shown_withheld = [r for r in answer.rows if key(r) in withheld]
    if any(v is not None for r in shown_withheld for i, v in enumerate(r) if i not in positions):
        return False
    if len(shown_withheld) > answer.withheld_groups or answer.withheld_groups > len(withheld):
        return False
    return len(released) == len(expected) and all(_same_row(a, b) for a, b in zip(released, expected, strict=True))


# Per person, from the pooled files: each city's facts first, then their sum. Written apart from the nodes' own
# facts query (node/lookup_index.py), so the demo checks one against the other.
PERSON_FACTS_SQL = """
WITH ids AS (SELECT UNNEST($ids) AS pid),
per_city AS (
    SELECT ids.pid, c.city,
           MAX(CASE WHEN c.src = 'a' THEN 1 ELSE 0 END) AS has_account,
           MAX(CASE WHEN c.src = 'a' AND c.status = 'active' THEN 1 ELSE 0 END) AS active,
           MAX(CASE WHEN c.src = 'a' AND c.status = 'sealed' THEN 1 ELSE 0 END) AS sealed,
           MAX(CASE WHEN c.src = 'l' AND c.status IN ('active', 'overdue') THEN 1 ELSE 0 END) AS open_loan,
           COUNT(*) FILTER (WHERE c.src = 'd') AS months,
           COALESCE(SUM(c.amount) FILTER (WHERE c.src = 'd'), 0) AS contributed,
           COALESCE(SUM(c.amount) FILTER (WHERE c.src = 'a'), 0) AS balance,
           COUNT(*) FILTER (WHERE c.src = 'l' AND c.status = 'active') AS active_loans,
           COUNT(*) FILTER (WHERE c.src = 'l' AND c.status = 'overdue') AS overdue_loans,
           COALESCE(SUM(c.amount) FILTER (WHERE c.src = 'l' AND c.status IN ('active', 'overdue')), 0) AS outstanding
    FROM ids JOIN (
        SELECT person_id, city_code AS city, 'a' AS src, status, balance_fen AS amount FROM accounts
        UNION ALL SELECT person_id, city_code, 'd', NULL, amount_fen FROM deposits
        UNION ALL SELECT person_id, city_code, 'l', status, outstanding_fen FROM loans
    ) c ON c.person_id = ids.pid
    GROUP BY ids.pid, c.city)
SELECT ids.pid, COALESCE(SUM(has_account), 0), COALESCE(SUM(active), 0), COALESCE(SUM(sealed), 0),
       COALESCE(SUM(months), 0), COALESCE(SUM(contributed), 0), COALESCE(SUM(balance), 0),
       COALESCE(SUM(active_loans), 0), COALESCE(SUM(overdue_loans), 0), COALESCE(SUM(outstanding), 0),
       COALESCE(SUM(open_loan), 0)
FROM ids LEFT JOIN per_city USING (pid) GROUP BY ids.pid
"""
# the SQL's columns after the identifier, in the order of the facts a lookup answers (all but failed_regions)
PERSON_FACT_NAMES = tuple(name for name in PersonFacts.__dataclass_fields__ if name != "failed_regions")


def pooled_person_facts(catalog: Catalog, files: Files, person_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Each person's federation-wide facts from DuckDB over the pooled files (zeros for someone absent)."""
    con = duckdb.connect(":memory:")
    try:
        for table in TABLE_NAMES:
            listed = ", ".join(f"'{f}'" for f in files(table, "*"))
            con.execute(catalog.tables[table].view_sql(table, f"read_parquet([{listed}])"))
        rows = con.execute(PERSON_FACTS_SQL, {"ids": list(person_ids)}).fetchall()
    finally:
        con.close()
    return {row[0]: dict(zip(PERSON_FACT_NAMES, map(int, row[1:]), strict=True)) for row in rows}
