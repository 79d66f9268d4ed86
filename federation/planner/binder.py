"""Type-check queries with DuckDB itself over empty tables shaped like the catalog.

The asker's client and every node bind the same SQL against the same empty schema, so they agree on result
types and decimal scales without seeing a row. Only SQL the allow-list and the totality checks accepted gets
here, and only at a node whose policy admitted the asker; the coordinator binds nothing. Binding runs on a
locked-down engine (federation.engine) under a memory and a time limit of its own.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

import duckdb

from hpf.federation.catalog import Catalog
from hpf.federation.engine import interrupting, locked_connection, public_engine_message
from hpf.federation.errors import PlanError

BIND_MEMORY = "256MB"  # what binding one question may take, in every party
BIND_SECONDS = 5.0


def _aggregate_names() -> frozenset[str]:
    con = locked_connection(memory_limit="64MB")
    try:
        rows = con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'aggregate'"
        ).fetchall()
    finally:
        con.close()
    return frozenset(r[0].lower() for r in rows)


AGGREGATE_NAMES = _aggregate_names()  # the engine's own aggregates, so that unsupported ones get a clear code


class SchemaBinder:
    """An in-memory DuckDB holding one all-NULL row per catalog table, with the catalog's columns and types.

    Running a query over that row (not only binding it) also surfaces errors in its constants, such as a
    date literal that is not a date, before any node sees the query.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._con = locked_connection(memory_limit=BIND_MEMORY)
        for name, table in catalog.tables.items():
            cols = ", ".join(f'"{c}" {col.type}' for c, col in table.columns.items())
            self._con.execute(f'CREATE TABLE "{name}" ({cols})')
            self._con.execute(f'INSERT INTO "{name}" DEFAULT VALUES')
        self._lock = threading.Lock()

    def types(self, sql: str) -> list[str]:
        """Result column types of ``sql``; a PlanError (code PLAN_BIND) if DuckDB cannot bind it, and
        PLAN_TOO_EXPENSIVE if binding and running it over the one all-NULL row outgrows the binder's limits."""
        with self._lock:
            cur = self._con.cursor()
        try:
            with interrupting(cur, BIND_SECONDS) as timed_out:
                try:
                    rows = cur.execute(f"DESCRIBE {sql}").fetchall()
                    cur.execute(sql).fetchall()
                except (duckdb.InterruptException, duckdb.OutOfMemoryException):
                    raise PlanError(
                        "the query takes more than the planner's "
                        + (f"{BIND_SECONDS:g} seconds" if timed_out() else f"{BIND_MEMORY} of memory")
                        + " to check",
                        code="PLAN_TOO_EXPENSIVE",
                        hint="ask a simpler question",
                    ) from None
                except duckdb.Error as err:
                    raise PlanError(
                        f"the query cannot be run: {public_engine_message(err)}",
                        code="PLAN_BIND",
                    ) from None
        finally:
            cur.close()
        return [str(r[1]) for r in rows]


class CatalogKey:
    """Hashes a catalog by identity (catalogs are loaded once per process and never changed), for caches."""

    __slots__ = ("catalog",)

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def __hash__(self) -> int:
        return id(self.catalog)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CatalogKey) and other.catalog is self.catalog


@lru_cache(maxsize=16)
def _binder(key: CatalogKey) -> SchemaBinder:
    return SchemaBinder(key.catalog)


def binder_for(catalog: Catalog) -> SchemaBinder:
    """One binder per catalog object, for the last few catalogs."""
    return _binder(CatalogKey(catalog))


_DECIMAL = re.compile(r"DECIMAL\((\d+),(\d+)\)")  # matched whole
INTEGER_RESULT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER"}


def exact_scale(type_name: str) -> int | None:
    """The decimal scale of an exact numeric type (0 for integers), or None if the type is not exact."""
    t = type_name.upper().replace(" ", "")
    if t in INTEGER_RESULT_TYPES:
        return 0
    m = _DECIMAL.fullmatch(t)
    return int(m.group(2)) if m else None
