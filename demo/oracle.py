"""The demo's check of every answer: DuckDB over the pooled files, with the minimum group size k applied.

A region withholds a group it holds 1 to k-1 rows of (or whose aggregates cover, or leave out, 1 to k-1 of
them); the client lists such a group with NULL aggregates.
So the check predicts the withheld groups from each region's own files, requires exactly those (where they
are shown) to be NULL, and requires every other row to equal DuckDB over all regions' files pooled, in order.

A differentially private answer cannot equal anything: each shown COUNT and SUM is checked against the
CLAMPED oracle (each region's own files with at most the catalog's ``max_rows`` rows per person after the WHERE
and every summed column clamped into its ``bounds``, the regions' results summed), and must lie within a few
standard deviations of the noise the answer states (plus the regions' rounding to the component's unit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb

from hpf.client.answers import QueryAnswer
from hpf.federation.catalog import Catalog
from hpf.federation.crypto.lookup_codec import PersonFacts
from hpf.federation.crypto.slot_codec import cell_of
from hpf.federation.hpf_schema import TABLE_NAMES
from hpf.federation.plan import Plan
from hpf.federation.privacy.dp_plan import component_label, dp_plan, dp_terms, plain_outputs

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


def _scaled(value: Any, scale: int) -> int:
    """A node query's value as the integer its component travels as (units of 10**-scale)."""
    if value is None:
        return 0
    if isinstance(value, Decimal):
        return int(value.scaleb(scale))
    return int(value)


def clamped_totals(catalog: Catalog, files: Files, nodes: Sequence[str], plan: Plan) -> dict[int, list[int]]:
    """Per group cell, every component summed over the regions as each computes it under DP before its noise:
    over its own files, at most ``max_rows`` rows per person after the WHERE, summed columns clamped into their
    bounds (:func:`federation.privacy.dp_plan.dp_plan`'s SQL, run here in DuckDB over each region's files)."""
    clamped, source = dp_plan(plan, catalog)
    sql = clamped.node_sql(source)
    n_keys = len(plan.keys)
    indexes = [{v: i for i, v in enumerate(key.values)} for key in plan.keys]
    totals: dict[int, list[int]] = {}
    for node in nodes:
        for row in pooled(catalog, files, node, sql):
            acc = totals.setdefault(cell_of(plan.keys, indexes, row[:n_keys]), [0] * len(plan.components))
            pos = n_keys
            for j, comp in enumerate(clamped.components):
                width = len(comp.sql_terms())
                if width:
                    acc[j] += comp.combine([_scaled(v, comp.scale) for v in row[pos : pos + width]])
                    pos += width
    return totals


@dataclass(frozen=True)
class NoisyCell:
    """One shown COUNT or SUM of a DP answer beside the clamped oracle's value, in the component's units."""

    group: tuple[Any, ...]
    column: str
    answer: int | Decimal
    oracle: int | Decimal
    sd: float  # the noise's standard deviation the answer states
    rounding: float  # the most the regions' rounding to the component's unit can move the sum

    @property
    def off_sd(self) -> float:
        """How many stated standard deviations the answer is from the oracle (rounding discounted)."""
        off = max(abs(float(self.answer - self.oracle)) - self.rounding, 0.0)
        return off / self.sd if self.sd else (0.0 if off == 0 else math.inf)


def noisy_cells(
    answer: QueryAnswer, plan: Plan, catalog: Catalog, oracle: dict[int, list[int]]
) -> tuple[list[NoisyCell], bool]:
    """Every shown COUNT and SUM of a DP answer with the clamped oracle's value and the noise the answer states;
    and whether the stated noise is the noise the plan and catalog imply for the answer's epsilon and delta."""
    p = answer.privacy
    terms = dp_terms(plan, catalog, float(p["epsilon"]), float(p["delta"]), int(p["threshold"]))
    implied = {
        component_label(c): n.sd / 10**c.scale
        for c, n in zip(plan.components, terms.components, strict=True)
        if n.mu > 0
    }
    stated = {n["component"]: float(n["sd"]) for n in p["noise"]}
    honest = stated.keys() == implied.keys() and all(math.isclose(stated[k], implied[k], rel_tol=1e-9) for k in stated)
    positions = [plan.bare_key_outputs.index(i) for i in range(len(plan.keys))]
    indexes = [{v: i for i, v in enumerate(key.values)} for key in plan.keys]
    regions = len(answer.answered)
    cells = []
    for row in answer.rows:
        group = tuple(row[pos] for pos in positions)
        totals = oracle.get(cell_of(plan.keys, indexes, group), [0] * len(plan.components))
        for i, agg in plain_outputs(plan).items():
            if agg.func not in ("count", "sum"):
                continue
            value = row[i]
            if value is None:  # a suppressed ungrouped answer, or a SUM whose noisy count is 0
                continue
            j = agg.count if agg.func == "count" else agg.sum
            assert j is not None
            comp, noise = plan.components[j], terms.components[j]
            unit = Decimal(1).scaleb(-comp.scale)
            cells.append(
                NoisyCell(
                    group=group,
                    column=plan.output_names[i],
                    answer=value,
                    oracle=totals[j] * unit if comp.scale else totals[j],
                    sd=stated.get(component_label(comp), 0.0),
                    rounding=float(regions * (noise.unit // 2) * unit),
                )
            )
    return cells, honest


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
