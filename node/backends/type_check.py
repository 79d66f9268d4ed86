"""Does every file column convert to its catalog type without loss?

A node reads its files through views that cast each column to its catalog type. A cast that narrows (a
DECIMAL(15,2) file column read as INTEGER, a BIGINT as INTEGER, a timestamp as a DATE) rounds or truncates
silently, and every answer over the column is wrong. So before a file is served each column's own type, as
the node's reader sees it, is compared with the catalog's:

- a lossless widening (INTEGER to BIGINT, DECIMAL(9,2) to DECIMAL(18,2), the same type) passes unread;
- any other conversion passes only if every value in the file converts exactly, checked with one aggregate
  query per file: a value that does not convert, or converts to a different value, refuses the file.

The refusal (``DATA_TYPE_MISMATCH``) names the table, the column and both types, never a value.
"""

from __future__ import annotations

import re

import duckdb

from hpf.federation.catalog import Table
from hpf.federation.engine import public_engine_message
from hpf.federation.errors import DataError

_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")
# the values each integer type holds, as an inclusive range
INTEGER_RANGE = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
    "HUGEINT": (-(2**127), 2**127 - 1),
    "UTINYINT": (0, 2**8 - 1),
    "USMALLINT": (0, 2**16 - 1),
    "UINTEGER": (0, 2**32 - 1),
    "UBIGINT": (0, 2**64 - 1),
    "UHUGEINT": (0, 2**128 - 1),
}
_TEXT_NUMBER = "DECIMAL(38,18)"  # a text's own number, compared with what the catalog type makes of it


def _decimal(type_: str) -> tuple[int, int] | None:
    m = _DECIMAL.fullmatch(type_)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _range(type_: str) -> tuple[int, int] | None:
    """The values an integer or DECIMAL type holds, in units of its last digit (DECIMAL) or whole (integers)."""
    if type_ in INTEGER_RANGE:
        return INTEGER_RANGE[type_]
    dec = _decimal(type_)
    if dec is not None:
        top = 10 ** dec[0] - 1
        return (-top, top)
    return None


def lossless(file_type: str, catalog_type: str) -> bool:
    """Whether every value of ``file_type`` converts to ``catalog_type`` exactly, whatever the values.

    >>> lossless("INTEGER", "BIGINT"), lossless("DECIMAL(9,2)", "DECIMAL(18,2)"), lossless("DATE", "DATE")
    (True, True, True)
    >>> lossless("BIGINT", "INTEGER"), lossless("DECIMAL(15,2)", "INTEGER"), lossless("DECIMAL(15,2)", "DECIMAL(15,1)")
    (False, False, False)
    >>> lossless("INTEGER", "DECIMAL(10,0)"), lossless("INTEGER", "DECIMAL(10,1)"), lossless("UINTEGER", "BIGINT")
    (True, False, True)
    >>> lossless("DOUBLE", "DECIMAL(38,10)"), lossless("FLOAT", "DOUBLE"), lossless("VARCHAR", "DATE")
    (False, True, False)
    """
    if file_type == catalog_type:
        return True
    if (file_type, catalog_type) == ("FLOAT", "DOUBLE"):
        return True
    src, dst = _decimal(file_type), _decimal(catalog_type)
    if src is not None and dst is not None:  # no digit lost on either side of the point
        return dst[1] >= src[1] and dst[0] - dst[1] >= src[0] - src[1]
    if file_type in INTEGER_RANGE:
        lo, hi = INTEGER_RANGE[file_type]
        if catalog_type in INTEGER_RANGE:
            c_lo, c_hi = INTEGER_RANGE[catalog_type]
            return c_lo <= lo and hi <= c_hi
        if dst is not None:
            return max(-lo, hi) < 10 ** (dst[0] - dst[1])
        if catalog_type == "DOUBLE":
            return max(-lo, hi) <= 2**53
    return False


def inexact_sql(column: str, file_type: str, catalog_type: str) -> str:
    """A SQL condition true for a non-NULL value of ``column`` (of ``file_type``) that ``catalog_type`` cannot
    hold exactly: it does not convert, or converting it back does not give the same value.

    >>> bad = inexact_sql("x", "DECIMAL(15,2)", "INTEGER")
    >>> duckdb.sql(f"SELECT x, {bad} FROM (SELECT unnest([1, 0.05, NULL]::DECIMAL(15,2)[]) AS x)").fetchall()
    [(Decimal('1.00'), False), (Decimal('0.05'), True), (None, False)]
    """
    col = f'"{column}"'
    made = f"TRY_CAST({col} AS {catalog_type})"
    if file_type == "VARCHAR":
        # text has no type of its own to go back to: compare with the number (or instant) the text spells
        if catalog_type in INTEGER_RANGE or _decimal(catalog_type) is not None:
            spelled = f"TRY_CAST({col} AS {_TEXT_NUMBER})"
            differs = f"{spelled} IS NULL OR {made} IS DISTINCT FROM {spelled}"
        elif catalog_type == "DATE":
            differs = f"TRY_CAST({col} AS TIMESTAMP) IS DISTINCT FROM CAST({made} AS TIMESTAMP)"
        else:  # DOUBLE (the nearest double is what a text number means), BOOLEAN
            differs = "false"
        return f"{col} IS NOT NULL AND ({made} IS NULL OR {differs})"
    back = f"TRY_CAST({made} AS {file_type})"
    return f"{col} IS NOT NULL AND ({made} IS NULL OR {back} IS DISTINCT FROM {col})"


# a type as DuckDB names a file column's, when it is a scalar type: a name and at most (precision, scale). Any other
# (STRUCT, MAP, ENUM, UNION, lists...) spells its fields' names or values, text of the file's, in its name
_SCALAR_TYPE = re.compile(r"[A-Z][A-Z0-9_ ]*(\(\d+(,\s*\d+)?\))?")


def _refuse(table: str, column: str, file_type: str, catalog_type: str, why: str) -> DataError:
    return DataError(
        f"table {table!r}: column {column!r} is {file_type} in the file but {catalog_type} in the catalog, and {why}",
        code="DATA_TYPE_MISMATCH",
        hint=f"declare {column!r} with a type that holds the file's values (e.g. {file_type}), "
        "or rewrite the file with the catalog's type",
    )


def check_types(con: duckdb.DuckDBPyConnection, name: str, reader: str, table: Table) -> None:
    """Refuse (``DATA_TYPE_MISMATCH``) a file behind ``reader`` whose columns do not all convert exactly to
    ``table``'s catalog types. Lossless widenings are passed from the types alone; the others in one scan."""
    described = {r[0]: str(r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
    if missing := [c for c in table.columns if c not in described]:  # a file replaced by one without a column
        raise DataError(
            f"table {name!r}: the file has no column {missing[0]!r} the catalog declares",
            code="NODE_TABLE_SCHEMA",
            hint="give the file every column the catalog declares for the table",
        )
    narrowed = {c: described[c] for c, col in table.columns.items() if not lossless(described[c], col.type)}
    if not narrowed:
        return
    for c, t in narrowed.items():  # never written into SQL, nor a message, in full: it holds the file's own text
        if not _SCALAR_TYPE.fullmatch(t):
            kind = re.match(r"[A-Za-z]*", t)
            raise _refuse(
                name, c, (kind.group(0) if kind else "") or "a nested type", table.columns[c].type, "is not a scalar"
            )
    counts = ", ".join(
        f"count(*) FILTER (WHERE {inexact_sql(c, t, table.columns[c].type)})" for c, t in narrowed.items()
    )
    try:
        row = con.execute(f"SELECT {counts} FROM {reader}").fetchone()
    except duckdb.Error:
        row = None
    for i, (c, t) in enumerate(narrowed.items()):
        if row is not None:
            bad = bool(row[i])
        else:  # one column's conversion the engine cannot even express (a list read as an INTEGER, ...): which
            try:
                one = f"SELECT count(*) FILTER (WHERE {inexact_sql(c, t, table.columns[c].type)}) FROM {reader}"
                found = con.execute(one).fetchone()
                bad = found is None or bool(found[0])
            except duckdb.OutOfMemoryException:
                raise  # the engine's memory, not the file: no verdict on the file (see DuckDBBackend.check_sources)
            except duckdb.Error as err:
                raise _refuse(
                    name, c, t, table.columns[c].type, f"cannot be checked ({public_engine_message(err)})"
                ) from None
        if bad:
            raise _refuse(name, c, t, table.columns[c].type, "some of its values do not convert without loss")
