"""The client's last step: from exact federation-wide component totals to the printed result.

AVG, VAR and STDDEV are computed exactly (fractions) from COUNT, SUM(x) and SUM(x*x); then the query's
own expressions over aggregates, HAVING, ORDER BY and LIMIT run in DuckDB over one row per group, so they
behave exactly as the same SQL on the pooled data would.

A group that some region withheld (fewer rows there than its minimum group size) is still listed, with its
key values, but every aggregate of it is NULL: its totals lack that region's rows, so no value of it is right.
HAVING, ORDER BY and expressions then treat those NULLs as DuckDB does.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import duckdb

from hpf.federation.crypto.slot_codec import cell_coordinates
from hpf.federation.engine import interrupting, locked_connection, public_engine_message
from hpf.federation.errors import CryptoError, PlanError
from hpf.federation.plan import OTHER, Aggregate, Plan, finish_table_ddl

_ENGINE = locked_connection()
FINISH_SECONDS = 10.0
_ENGINE_LOCK = threading.Lock()


def aggregate_value(agg: Aggregate, totals: list[int], noisy: bool = False) -> Any:
    """One aggregate's value from its group's component totals (None where SQL gives NULL).

    ``noisy`` (a DP answer): a noisy count may be 0 or less (then AVG and the variances are NULL) and a noisy
    variance may come out below 0 (then it is 0): both are what noise does, not a sign of tampering.
    """
    n = totals[agg.count]
    if agg.func == "count":
        return n
    if n == 0 or (noisy and n < 0):
        return None
    assert agg.sum is not None
    s = totals[agg.sum]
    unit = 10**agg.scale
    if agg.func == "sum":
        return Decimal(s).scaleb(-agg.scale) if agg.scale else s
    if agg.func == "avg":
        return float(Fraction(s, n * unit))
    assert agg.sumsq is not None
    ss = totals[agg.sumsq]
    spread = Fraction(n * ss - s * s, unit * unit)  # n * sum((x - mean)^2), exactly
    if agg.func in ("var_pop", "stddev_pop"):
        var = spread / (n * n)
    else:
        if n < 2:
            return None
        var = spread / (n * (n - 1))
    if var < 0:
        if not noisy:  # impossible for honest exact totals
            raise CryptoError("the decrypted totals are inconsistent", code="ANSWER_CORRUPT")
        var = Fraction(0)
    return float(var) if agg.func.startswith("var") else math.sqrt(float(var))


@dataclass(frozen=True)
class FinishedAnswer:
    """The federated answer's columns and rows, and how many of its groups some region withheld.

    ``withheld_groups`` counts the groups before HAVING and LIMIT: a withheld group HAVING drops (its
    aggregates are NULL) might have qualified, so the answer is incomplete even if no NULL is printed.
    """

    columns: list[str]
    rows: list[list[Any]]
    withheld_groups: int


def group_rows(plan: Plan, totals: dict[int, list[int]], noisy: bool = False) -> list[tuple[Any, ...]]:
    """One ``__groups`` row per occupied cell: key values, aggregate values (NULL if withheld), "other" flags."""
    mark = plan.withheld_index
    rows = []
    for cell, comp_totals in sorted(totals.items()):
        coords = cell_coordinates(plan.keys, cell)
        keys, flags = [], []
        for key, pos in zip(plan.keys, coords, strict=True):
            keys.append(key.values[pos] if pos < len(key.values) else None)
            flags.append(pos == key.other_cell)
        if comp_totals[mark]:  # never a partial sum
            aggs: list[Any] = [None] * len(plan.aggregates)
        else:
            aggs = [aggregate_value(a, comp_totals, noisy) for a in plan.aggregates]
        rows.append((*keys, *aggs, *flags))
    return rows


def finish(plan: Plan, totals: dict[int, list[int]], noisy: bool = False) -> FinishedAnswer:
    """Columns and rows of the federated answer from :func:`federation.crypto.slot_codec.decode_totals`' totals
    (``noisy``: of a DP answer, see :func:`aggregate_value`)."""
    rows = group_rows(plan, totals, noisy)
    with _ENGINE_LOCK:
        con = _ENGINE.cursor()  # a cursor is its own connection: its temp table is private
    try:
        con.execute(finish_table_ddl(plan))
        if rows:  # one statement for all rows: executemany costs a round trip per row
            marks = "(" + ", ".join("?" for _ in rows[0]) + ")"
            params = [v for row in rows for v in row]
            con.execute(f"INSERT INTO __groups VALUES {', '.join(marks for _ in rows)}", params)
        with interrupting(con, FINISH_SECONDS):  # the asker's own engine, under a limit of its own
            result = con.execute(plan.finish_sql).fetchall()
    except duckdb.Error as err:
        raise PlanError(f"the result cannot be finished: {public_engine_message(err)}", code="FINISH_FAILED") from None
    finally:
        con.close()
    n_out = len(plan.output_names)
    out_rows = []
    for row in result:
        values, flags = list(row[:n_out]), row[n_out:]
        for i, key_index in enumerate(plan.bare_key_outputs):
            if key_index is not None and flags[key_index]:
                values[i] = OTHER
        out_rows.append(values)
    withheld = sum(1 for comp_totals in totals.values() if comp_totals[plan.withheld_index])
    return FinishedAnswer(list(plan.output_names), out_rows, withheld)
