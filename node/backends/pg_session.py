"""A node's connections to its PostgreSQL database: the session settings its SQL is read under, and what a log
may say of the database's errors.

A database or role may carry settings (``ALTER DATABASE ... SET``) that change how the node's SQL is read or its
values written: backslashes in string literals (``standard_conforming_strings``), the encoding of the bytes it
sends, ``= NULL`` read as ``IS NULL``. Every connection the node opens sets them back to what the planner's SQL
means (:data:`PINNED`) before it reads anything, and the database must store text as UTF-8: in another encoding
the order of text by its bytes is not the order of its code points, and a legacy SQL_ASCII database hands text
over as bytes (``NODE_DATABASE_ENCODING``).
"""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np
import psycopg
from psycopg.adapt import Loader

from hpf.federation.errors import DataError
from hpf.federation.planner.dialects import pg_value
from hpf.node.lookup_index import as_columns

_UNITS = {"KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
_UNITS["TIB"] = 1024**4
MAX_WORK_MEM_KB = 2_147_483_647  # PostgreSQL's ceiling
CANCEL_TIMEOUT_S = 3.0  # how long a cancel may take to reach the database
# the session settings the node's SQL is written for, whatever the database's or role's defaults
PINNED = {
    "standard_conforming_strings": "on",
    "client_encoding": "UTF8",
    "transform_null_equals": "off",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "array_nulls": "on",
    "backslash_quote": "safe_encoding",
}


def sqlstate_class(err: BaseException) -> str:
    """The SQLSTATE class of a database error (two characters), the only part of it a log may carry.

    >>> from psycopg import errors as pg_errors
    >>> from psycopg_pool import PoolTimeout
    >>> sqlstate_class(pg_errors.QueryCanceled()), sqlstate_class(PoolTimeout())
    ('57', 'none')
    """
    state = getattr(err, "sqlstate", None)
    return state[:2] if isinstance(state, str) and state else "none"


def work_mem_kb(memory: str) -> int:
    """The node's memory limit (``2GB``, ``512MiB``) as PostgreSQL's ``work_mem`` in kB.

    >>> work_mem_kb("2GB"), work_mem_kb("64 MiB")
    (1953125, 65536)
    """
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B)", memory.strip(), re.IGNORECASE)
    if m is None:
        raise ValueError(f"not a memory size: {memory!r}")
    return max(64, min(MAX_WORK_MEM_KB, int(float(m.group(1)) * _UNITS[m.group(2).upper()]) // 1024))


class NumericAsDuckDB(Loader):
    """A NUMERIC as DuckDB's value for it: ``int`` without a fraction, ``Decimal`` with one (pg_value)."""

    def load(self, data: bytes | bytearray | memoryview) -> object:
        return pg_value(bytes(data).decode())


def read_facts(conn: psycopg.Connection[Any], sql: str, work_mem_kb: int, seconds: float, batch: int) -> dict[str, Any]:
    """The lookup facts (the node's own ``sql``, one row per person) in a read-only transaction, each step within
    ``seconds``, as NumPy columns, read ``batch`` rows at a time through a cursor in the database (never every
    row as Python tuples at once)."""
    parts: list[dict[str, Any]] = []
    with conn.transaction():
        conn.execute(f"SET LOCAL statement_timeout = {int(seconds * 1000)}")
        conn.execute(f"SET LOCAL work_mem = '{work_mem_kb}kB'")
        conn.execute("SET LOCAL search_path = pg_catalog")
        with conn.cursor(name="hpf_lookup_facts") as cur:
            cur.execute(sql.encode())
            names = [column.name for column in cur.description or ()]
            while rows := cur.fetchmany(batch):
                parts.append(as_columns(names, rows))
    if not parts:
        return as_columns(names, [])
    return {name: np.concatenate([part[name] for part in parts]) for name in names}


def pin(conn: psycopg.Connection[Any]) -> None:
    """Set :data:`PINNED` on ``conn`` for its session, and refuse a database that does not store text as UTF-8."""
    for name, value in PINNED.items():
        conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))
    row = conn.execute("SELECT pg_catalog.current_setting('server_encoding')").fetchone()
    if row is None or row[0] != "UTF8":
        raise DataError(
            "the node's database does not store text as UTF-8",
            code="NODE_DATABASE_ENCODING",
            hint="serve the region's tables from a UTF-8 database (CREATE DATABASE ... ENCODING 'UTF8')",
        )


def unreachable() -> DataError:
    return DataError(
        "the node cannot reach its database, or the database refuses the node's credentials",
        code="NODE_DATABASE_UNREACHABLE",
        hint="the region's operator must bring the database back or fix the node's connection string; "
        "the node serves it again by itself once it can",
    )


class Question:
    """One question's hold on its pooled connection: who may cancel it, and whether the connection must be closed
    when the question lets it go (a cancel was sent, which must not reach the next question on it; or the node
    stopped waiting for a database that hangs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self.cancelled = False  # the coordinator gave the question up
        self._dropped = False

    def begin(self, conn: psycopg.Connection[Any]) -> bool:
        """The question runs on ``conn`` now; False when it was given up already."""
        with self._lock:
            self._conn = conn
            return not self.cancelled

    def cancel(self) -> None:
        """Give the question up: cancel its statement in the database if one runs."""
        with self._lock:
            self.cancelled, conn = True, self._conn
        if conn is not None:
            try:
                conn.cancel_safe(timeout=CANCEL_TIMEOUT_S)
            except psycopg.Error:
                pass  # the question ended meanwhile: its connection is closed, not handed on

    def drop(self) -> None:
        """The node answered without waiting for the database any longer."""
        with self._lock:
            self._dropped = True

    def end(self) -> bool:
        """The question lets its connection go: whether it must be closed rather than pooled again."""
        with self._lock:
            self._conn = None
            return self.cancelled or self._dropped
