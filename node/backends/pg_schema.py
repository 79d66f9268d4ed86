"""Does every PostgreSQL column fit its catalog type, and the views a question reads the tables through.

The rule is the files' (:mod:`node.backends.type_check`): each column's database type, as the catalog names
types, is compared with the catalog's:

- a lossless widening (a PostgreSQL ``integer`` under a catalog BIGINT, ``numeric(9,2)`` under DECIMAL(18,2), the
  same type) passes unread;
- a narrowing that keeps every digit after the point (``bigint`` under INTEGER, ``numeric(18,2)`` under
  DECIMAL(12,2)) passes only if every value is in the catalog type's range, checked with one aggregate query in
  the database; a value written later that does not fit makes PostgreSQL's cast fail (it never rounds these);
- any other (digits after the point lost, ``numeric`` without a scale, a timestamp under DATE, ``character(n)``,
  floating point under an exact type) is refused: PostgreSQL's cast would round values written later silently.

The refusal (``DATA_TYPE_MISMATCH``) names the table, the column and both types, never a value.

Each catalog table is read through a temporary view of the node's own session, named as the catalog names the
table, casting every column to the catalog's type (:func:`view_sql`): the plan's SQL names its tables as the
catalog does, and PostgreSQL looks a name up in the session's temporary schema first.

>>> pg_type("numeric(12,2)"), pg_type("character varying(20)"), pg_type("bigint"), pg_type("numeric")
('DECIMAL(12,2)', 'VARCHAR', 'BIGINT', 'NUMERIC')
>>> checked_range("BIGINT", "INTEGER"), checked_range("DECIMAL(15,2)", "INTEGER"), checked_range("DOUBLE", "BIGINT")
((-2147483648, 2147483647), None, None)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from psycopg import Cursor, sql

from hpf.federation.catalog import Table
from hpf.federation.errors import DataError
from hpf.node.backends.type_check import INTEGER_RANGE, lossless
from hpf.node.config import PostgresTable

# format_type's names of the PostgreSQL types a catalog type can sit on, as the catalog names types
_PG_TYPES = {
    "smallint": "SMALLINT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "real": "FLOAT",
    "double precision": "DOUBLE",
    "date": "DATE",
    "boolean": "BOOLEAN",
    "text": "VARCHAR",
    "character varying": "VARCHAR",
    "numeric": "NUMERIC",  # no scale of its own: any value
}
# what a view casts a column of each catalog type to
_CASTS = {
    "TINYINT": "smallint",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "VARCHAR": "text",
    "DATE": "date",
    "BOOLEAN": "boolean",
    "DOUBLE": "double precision",
}
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_CATALOG_DECIMAL = re.compile(r"DECIMAL\((\d+),(\d+)\)")

DESCRIBE_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY a.attnum
"""


def pg_type(formatted: str) -> str:
    """A PostgreSQL type (as ``format_type`` spells it) as the catalog names types; an unknown one as ``OTHER``."""
    m = _NUMERIC.fullmatch(formatted.replace(" ", ""))
    if m:
        return f"DECIMAL({m.group(1)},{m.group(2)})"
    return _PG_TYPES.get(re.sub(r"\(\d+\)$", "", formatted), "OTHER")


def _scale(type_: str) -> int | None:
    if type_ in INTEGER_RANGE:
        return 0
    m = _CATALOG_DECIMAL.fullmatch(type_)
    return int(m.group(2)) if m else None


def checked_range(db_type: str, catalog_type: str) -> tuple[Any, Any] | None:
    """The inclusive range of values ``catalog_type`` holds, when every value of ``db_type`` inside it converts
    exactly (no digit after the point lost); None when the conversion is not such a narrowing."""
    db_scale, cat_scale = _scale(db_type), _scale(catalog_type)
    if db_scale is None or cat_scale is None or db_scale > cat_scale:
        return None
    if catalog_type in INTEGER_RANGE:
        return INTEGER_RANGE[catalog_type]
    m = _CATALOG_DECIMAL.fullmatch(catalog_type)
    assert m is not None
    precision, scale = int(m.group(1)), int(m.group(2))
    top = (Decimal(10) ** precision - 1).scaleb(-scale)
    return (-top, top)


def cast_type(catalog_type: str) -> str:
    """The PostgreSQL type a view casts a column of ``catalog_type`` to.

    >>> cast_type("DECIMAL(12,2)"), cast_type("VARCHAR")
    ('numeric(12,2)', 'text')
    """
    m = _CATALOG_DECIMAL.fullmatch(catalog_type)
    return f"numeric({m.group(1)},{m.group(2)})" if m else _CASTS[catalog_type]


def _refuse(table: str, column: str, db_type: str, catalog_type: str, why: str) -> DataError:
    shown = "another type" if db_type == "OTHER" else db_type
    return DataError(
        f"table {table!r}: column {column!r} is {shown} in the database but {catalog_type} in the catalog, and {why}",
        code="DATA_TYPE_MISMATCH",
        hint=f"declare {column!r} with a type that holds the database's values, or give the node a view that "
        "casts the column to the catalog's type",
    )


def check_table(
    cur: Cursor[Any], name: str, source: PostgresTable, table: Table, verified: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Refuse a database table or view that is missing (``NODE_TABLE_UNREADABLE``), lacks a catalog column
    (``NODE_TABLE_SCHEMA``) or has one that does not fit its catalog type (``DATA_TYPE_MISMATCH``); its columns'
    types. The values of narrowed columns are read unless the types are ``verified`` (checked before, unchanged)."""
    described = {str(c): pg_type(str(t)) for c, t in cur.execute(DESCRIBE_SQL, (source.db_schema, source.table))}
    if not described:
        raise DataError(
            f"table {name!r}: the database has no table or view the node may read where the node config says",
            code="NODE_TABLE_UNREADABLE",
            hint="check 'schema' and 'table' in the node config, and grant the node's database user SELECT on it",
        )
    if missing := [c for c in table.columns if c not in described]:
        folded = {c.lower() for c in described}
        other_case = (
            " (names are matched exactly: its name in other letter case is another column; a view can rename it)"
        )
        raise DataError(
            f"table {name!r}: the database table has no column {missing[0]!r} the catalog declares",
            code="NODE_TABLE_SCHEMA",
            hint="give the table (or a view over it) every column the catalog declares"
            + (other_case if missing[0] in folded else ""),
        )
    ranges: dict[str, tuple[Any, Any]] = {}
    for column, col in table.columns.items():
        db_type = described[column]
        if lossless(db_type, col.type):
            continue
        bounds = checked_range(db_type, col.type)
        if bounds is None:
            raise _refuse(name, column, db_type, col.type, "values written later would be converted with loss")
        ranges[column] = bounds
    if ranges and described != verified:
        _check_values(cur, name, source, table, ranges, described)
    return described


def _check_values(
    cur: Cursor[Any],
    name: str,
    source: PostgresTable,
    table: Table,
    ranges: Mapping[str, tuple[Any, Any]],
    described: Mapping[str, str],
) -> None:
    """One scan: for each narrowed column, are there values outside its catalog type's range?"""
    counts = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {c}::numeric NOT BETWEEN {lo} AND {hi})").format(
            c=sql.Identifier(c), lo=sql.Literal(lo), hi=sql.Literal(hi)
        )
        for c, (lo, hi) in ranges.items()
    )
    query = sql.SQL("SELECT {counts} FROM {t}").format(counts=counts, t=sql.Identifier(source.db_schema, source.table))
    row = cur.execute(query).fetchone()
    for i, column in enumerate(ranges):
        if row is None or row[i]:
            raise _refuse(
                name, column, described[column], table.columns[column].type, "some of its values do not fit it"
            )


def view_sql(name: str, source: PostgresTable, table: Table) -> sql.Composed:
    """The temporary view a question reads ``name`` through: every catalog column cast to its catalog type."""
    columns = sql.SQL(", ").join(
        sql.SQL("CAST({c} AS {t}) AS {c}").format(c=sql.Identifier(c), t=sql.SQL(cast_type(col.type)))
        for c, col in table.columns.items()
    )
    return sql.SQL("CREATE OR REPLACE TEMPORARY VIEW {v} AS SELECT {cols} FROM {t}").format(
        v=sql.Identifier(name), cols=columns, t=sql.Identifier(source.db_schema, source.table)
    )
