"""A region's per-person facts, computed once from its own tables and kept in memory for lookups.

A lookup must answer in milliseconds, and a screening of 100,000 applicants at once; scanning a million rows
per question would not. So the node computes every person's facts (:data:`FACTS_SQL`, one row per person, in
the engine that holds the rows) when it starts, and again whenever its data changes (the backend's
:meth:`data_version`: a file replaced or written), and answers a lookup from memory. A database tells nobody when
its rows change, so a node on PostgreSQL computes them again on the operator's schedule and on demand
(:mod:`node.lookup_refresh`). The identifiers stay in this process, as the rows do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hpf.federation.catalog import Catalog
from hpf.federation.crypto.lookup_codec import FACT_COLUMNS, FAILED_BITS, MONEY_MAX, MONEY_MIN
from hpf.federation.errors import PlanError
from hpf.federation.planner.pg_types import UNICODE_SPACES

log = logging.getLogger("hpf.node.lookup")

NEEDS: dict[str, tuple[str, ...]] = {
    "accounts": ("person_id", "status", "balance_fen"),
    "deposits": ("person_id", "amount_fen"),
    "loans": ("person_id", "status", "outstanding_fen"),
}

_IN_RANGE = f"BETWEEN {MONEY_MIN} AND {MONEY_MAX}"

# The characters DuckDB's trim() removes from either end (Unicode's space separators), for PostgreSQL's btrim(),
# which removes only U+0020 unless told: the same identifiers come out of both engines.
SPACE_SEPARATORS = UNICODE_SPACES
# How each engine writes an identifier as a lookup asks for it (the client's strip().upper() of an 18-character
# ASCII identifier): trimmed and upper-cased. PostgreSQL upper-cases ASCII letters alone under "C", DuckDB every
# letter: an identifier a lookup can name has only digits and X, which only x and X upper-case to in either.
# Spark's trim() removes U+0020 alone unless told too; Spark upper-cases as Java does, every letter.
PERSON_KEY = {
    "duckdb": "upper(trim(person_id))",
    "postgres": f"upper(btrim(person_id, '{SPACE_SEPARATORS}') COLLATE \"C\")",
    "spark": f"upper(trim(BOTH '{SPACE_SEPARATORS}' FROM person_id))",
}
# The type each engine sums money in, wide enough for any sum of 64-bit amounts (Spark's BIGINT sum would fail on
# overflow, and with it every person's facts)
WIDE = {"duckdb": "HUGEINT", "postgres": "NUMERIC", "spark": "DECIMAL(38,0)"}


def facts_sql(dialect: str) -> str:
    """The facts query in one engine's SQL (a key of :data:`PERSON_KEY`)."""
    return _FACTS_SQL.replace("$person", PERSON_KEY[dialect]).replace("$wide", WIDE[dialect])


# One row per person with an account, a contribution or a loan in this region. Money is summed wide (WIDE); a
# sum outside the signed 60-bit range the layout carries is sent as failed (one bit per sum: a lookup that does not
# ask for that sum's fact does not learn that it failed), never wrapped.
_FACTS_SQL = f"""
WITH a AS (
    SELECT $person AS pid,
           MAX(CASE WHEN status = 'active' THEN 1 ELSE 0 END) AS cities_active,
           MAX(CASE WHEN status = 'sealed' THEN 1 ELSE 0 END) AS cities_sealed,
           SUM(CAST(balance_fen AS $wide)) AS balance_fen
    FROM accounts WHERE person_id IS NOT NULL GROUP BY pid),
d AS (
    SELECT $person AS pid, COUNT(*) AS months, SUM(CAST(amount_fen AS $wide)) AS contribution_fen
    FROM deposits WHERE person_id IS NOT NULL GROUP BY pid),
l AS (
    SELECT $person AS pid,
           COUNT(*) FILTER (WHERE status = 'active') AS active_loans,
           COUNT(*) FILTER (WHERE status = 'overdue') AS overdue_loans,
           SUM(CAST(outstanding_fen AS $wide)) FILTER (WHERE status IN ('active', 'overdue')) AS outstanding_fen,
           MAX(CASE WHEN status IN ('active', 'overdue') THEN 1 ELSE 0 END) AS loan_cities
    FROM loans WHERE person_id IS NOT NULL GROUP BY pid),
p AS (SELECT pid FROM a UNION SELECT pid FROM d UNION SELECT pid FROM l),
f AS (
    SELECT p.pid,
           CASE WHEN a.pid IS NULL THEN 0 ELSE 1 END AS cities,
           COALESCE(a.cities_active, 0) AS cities_active,
           COALESCE(a.cities_sealed, 0) AS cities_sealed,
           COALESCE(l.loan_cities, 0) AS loan_cities,
           COALESCE(d.months, 0) AS contribution_months,
           COALESCE(l.active_loans, 0) AS active_loans,
           COALESCE(l.overdue_loans, 0) AS overdue_loans,
           COALESCE(d.contribution_fen, 0) AS contribution_fen,
           COALESCE(a.balance_fen, 0) AS balance_fen,
           COALESCE(l.outstanding_fen, 0) AS outstanding_fen
    FROM p LEFT JOIN a ON a.pid = p.pid LEFT JOIN d ON d.pid = p.pid LEFT JOIN l ON l.pid = p.pid)
SELECT pid, cities, cities_active, cities_sealed, loan_cities, contribution_months,
       (CASE WHEN contribution_fen {_IN_RANGE} THEN 0 ELSE {FAILED_BITS["contribution_fen"]} END)
         + (CASE WHEN balance_fen {_IN_RANGE} THEN 0 ELSE {FAILED_BITS["balance_fen"]} END)
         + (CASE WHEN outstanding_fen {_IN_RANGE} THEN 0 ELSE {FAILED_BITS["outstanding_fen"]} END) AS failed,
       active_loans, overdue_loans,
       CASE WHEN contribution_fen {_IN_RANGE} THEN CAST(contribution_fen AS BIGINT) ELSE 0 END AS contribution_fen,
       CASE WHEN balance_fen {_IN_RANGE} THEN CAST(balance_fen AS BIGINT) ELSE 0 END AS balance_fen,
       CASE WHEN outstanding_fen {_IN_RANGE} THEN CAST(outstanding_fen AS BIGINT) ELSE 0 END AS outstanding_fen
FROM f
"""
FACTS_SQL = facts_sql("duckdb")


def as_columns(names: list[str], rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    """Rows of the lookup facts as NumPy columns: the person as text, every fact a 64-bit integer."""
    values = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return {
        name: np.array(column, dtype=object if name == "pid" else np.int64)
        for name, column in zip(names, values, strict=True)
    }


class FactsSource(Protocol):
    dialect: str  # the engine's SQL, a key of PERSON_KEY

    def columns(self, sql: str) -> dict[str, Any]: ...

    def data_version(self) -> object: ...


def check_catalog(catalog: Catalog) -> str | None:
    """Why this catalog cannot answer lookups (None when it can)."""
    for table, columns in NEEDS.items():
        found = catalog.tables.get(table)
        if found is None:
            return f"the catalog has no {table} table"
        missing = [c for c in columns if c not in found.columns]
        if missing:
            return f"the catalog's {table} table lacks {', '.join(missing)}"
    return None


def unclassified_columns(catalog: Catalog) -> list[str]:
    """The columns every lookup reads (:data:`NEEDS`) that the catalog gives no class, as ``table.column``: no
    policy allows a lookup while one is (``POLICY_COLUMN_UNCLASSIFIED``)."""
    return [
        f"{table}.{column}"
        for table, columns in NEEDS.items()
        if table in catalog.tables
        for column in columns
        if column in catalog.tables[table].columns and catalog.tables[table].columns[column].column_class is None
    ]


class LookupIndex:
    """Person id -> this region's facts about them (:data:`FACT_COLUMNS`), rebuilt when the data changes."""

    def __init__(self, source: FactsSource, catalog: Catalog) -> None:
        self._source = source
        self._sql = facts_sql(source.dialect)
        self._unsupported = check_catalog(catalog)
        self._lock = threading.Lock()
        self._version: object = None
        # swapped whole, so a reader always sees ids and facts of one computation
        self._snapshot: tuple[dict[str, int], npt.NDArray[np.int64]] = ({}, np.zeros((0, len(FACT_COLUMNS)), np.int64))

    @property
    def supported(self) -> bool:
        return self._unsupported is None

    def __len__(self) -> int:
        return len(self._snapshot[0])

    def refresh(self, *, force: bool = False) -> int:
        """Recompute the facts if the region's data changed since they were computed, or ``force``: now, as a
        database's rows may have changed unseen (lookups go on reading the facts of the last computation
        meanwhile). Returns how many people the facts in force are about."""
        if self._unsupported is not None:
            raise PlanError(
                f"this region cannot answer person lookups: {self._unsupported}",
                code="LOOKUP_UNSUPPORTED",
            )
        version = self._source.data_version()  # never None, so the first call always computes
        if version == self._version and not force:
            return len(self)
        with self._lock:
            if version == self._version and not force:
                return len(self)
            began = time.perf_counter()
            cols = self._source.columns(self._sql)
            ids = cols["pid"]
            facts = np.stack([np.asarray(cols[c], dtype=np.int64) for c in FACT_COLUMNS], axis=1)
            self._snapshot = ({str(pid): i for i, pid in enumerate(ids.tolist())}, facts)
            self._version = version
            log.info("lookup facts for %d people computed in %.0f ms", len(ids), (time.perf_counter() - began) * 1e3)
            return len(ids)

    def facts(self, person_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """This region's facts for each identifier (zeros for a person it does not know), in order."""
        self.refresh()
        rows, facts = self._snapshot
        positions = np.fromiter((rows.get(pid, -1) for pid in person_ids), dtype=np.int64, count=len(person_ids))
        out = np.zeros((len(person_ids), len(FACT_COLUMNS)), dtype=np.int64)
        known = positions >= 0
        out[known] = facts[positions[known]]
        return out
