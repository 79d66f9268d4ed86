"""A Spark table against the catalog: its columns' types, the values of narrowed ones, and the view a question
reads it through.

The rule is the files' rule (:mod:`node.backends.type_check`): a lossless widening (``int`` under ``BIGINT``,
``decimal(9,2)`` under ``DECIMAL(18,2)``) passes from the types alone; any other conversion passes only when
one scan finds every value converting exactly; a type with no catalog name (maps, structs, binary ...) is
refused. The refusal (``DATA_TYPE_MISMATCH``) names the table, the column and both types, never a value.
"""

from __future__ import annotations

import re
from typing import Any

from hpf.federation.catalog import Table
from hpf.federation.errors import DataError
from hpf.node.backends.type_check import INTEGER_RANGE, lossless

# Spark's simple type names as the catalog names types
_SPARK_TYPES = {
    "bigint": "BIGINT",
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "tinyint": "TINYINT",
    "string": "VARCHAR",
    "date": "DATE",
    "double": "DOUBLE",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "timestamp_ntz": "TIMESTAMP",
}
_CASTS = {v: k.upper() for k, v in _SPARK_TYPES.items()} | {"VARCHAR": "STRING", "INTEGER": "INT"}
_SPARK_DECIMAL = re.compile(r"decimal\((\d+),(\d+)\)")
_CATALOG_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")
_VARCHAR = re.compile(r"(var)?char\(\d+\)")
_TEXT_NUMBER = "DECIMAL(38,18)"  # a text's own number, compared with what the catalog type makes of it


def catalog_type(spark_type: str) -> str:
    """A Spark column type (``simpleString``) as the catalog names types; ``OTHER`` for one it has no name for.

    >>> catalog_type("bigint"), catalog_type("decimal(12,2)"), catalog_type("varchar(20)"), catalog_type("map<int,int>")
    ('BIGINT', 'DECIMAL(12,2)', 'VARCHAR', 'OTHER')
    """
    m = _SPARK_DECIMAL.fullmatch(spark_type)
    if m:
        return f"DECIMAL({m.group(1)},{m.group(2)})"
    if _VARCHAR.fullmatch(spark_type):
        return "VARCHAR"
    return _SPARK_TYPES.get(spark_type, "OTHER")


def cast_type(type_: str) -> str | None:
    """The Spark type a view casts a column of catalog ``type_`` to; None when Spark has none that holds it.

    >>> cast_type("DECIMAL(12,2)"), cast_type("VARCHAR"), cast_type("HUGEINT"), cast_type("DECIMAL(39,0)")
    ('DECIMAL(12,2)', 'STRING', None, None)
    """
    m = _CATALOG_DECIMAL.fullmatch(type_)
    if m:
        return f"DECIMAL({m.group(1)},{m.group(2)})" if int(m.group(1)) <= 38 else None
    return _CASTS.get(type_)


def quoted(name: str) -> str:
    """A Spark identifier, quoted.

    >>> quoted("a`b")
    '`a``b`'
    """
    return "`" + name.replace("`", "``") + "`"


def _refuse(table: str, column: str, spark_type: str, type_: str, why: str) -> DataError:
    shown = "another type" if spark_type == "OTHER" else spark_type
    return DataError(
        f"table {table!r}: column {column!r} is {shown} in Spark but {type_} in the catalog, and {why}",
        code="DATA_TYPE_MISMATCH",
        hint=f"declare {column!r} with a type that holds Spark's values, or give the node a view that casts the "
        "column to the catalog's type",
    )


def narrowed(name: str, described: dict[str, str], table: Table) -> dict[str, str]:
    """The columns of ``table`` whose Spark type (``described``, as the catalog names types) converts to the
    catalog's with loss for some values, whose values must be read; refuses a column missing or of no
    convertible type at all."""
    if missing := [c for c in table.columns if c not in described]:
        raise DataError(
            f"table {name!r}: Spark's table has no column {missing[0]!r} the catalog declares",
            code="NODE_TABLE_SCHEMA",
            hint="give the table (or a view over it) every column the catalog declares",
        )
    checked: dict[str, str] = {}
    for column, col in table.columns.items():
        found = described[column]
        if cast_type(col.type) is None:
            raise _refuse(name, column, found, col.type, "Spark has no type that holds it")
        if lossless(found, col.type):
            continue
        if found == "OTHER" or _numeric(col.type) and not (_numeric(found) or found == "VARCHAR"):
            raise _refuse(name, column, found, col.type, "its values do not convert to it")
        checked[column] = found
    return checked


def _numeric(type_: str) -> bool:
    return type_ in INTEGER_RANGE or _CATALOG_DECIMAL.fullmatch(type_) is not None


def inexact_sql(column: str, found: str, type_: str) -> str:
    """A Spark SQL condition true for a non-NULL value of ``column`` (Spark type ``found``, as the catalog names
    it) that the catalog's ``type_`` cannot hold exactly: it does not convert, or back it is another value."""
    col = quoted(column)
    target = cast_type(type_)
    made = f"TRY_CAST({col} AS {target})"
    if found == "VARCHAR":
        if _numeric(type_):
            spelled = f"TRY_CAST({col} AS {_TEXT_NUMBER})"
            differs = f"{spelled} IS NULL OR NOT ({made} <=> {spelled})"
        elif type_ == "DATE":
            differs = f"NOT (TRY_CAST({col} AS TIMESTAMP_NTZ) <=> CAST({made} AS TIMESTAMP_NTZ))"
        else:
            differs = "false"
        return f"{col} IS NOT NULL AND ({made} IS NULL OR {differs})"
    back = f"TRY_CAST({made} AS {cast_type(found) or 'STRING'})"
    return f"{col} IS NOT NULL AND ({made} IS NULL OR NOT ({back} <=> {col}))"


def check_values(run: Any, name: str, source: str, checked: dict[str, str], table: Table) -> None:
    """One scan of ``source`` (a Spark relation's SQL name): does any value of a narrowed column not convert?
    ``run(sql)`` gives the rows."""
    counts = ", ".join(f"count_if({inexact_sql(c, found, table.columns[c].type)})" for c, found in checked.items())
    row = run(f"SELECT {counts} FROM {source}")[0]
    for i, column in enumerate(checked):
        if row[i]:
            raise _refuse(name, column, checked[column], table.columns[column].type, "some of its values do not fit it")


def view_sql(name: str, source: str, table: Table) -> str:
    """The temporary view a question reads ``name`` through: every catalog column cast to its catalog type."""
    columns = ", ".join(
        f"CAST({quoted(c)} AS {cast_type(col.type)}) AS {quoted(c)}" for c, col in table.columns.items()
    )
    return f"CREATE OR REPLACE TEMPORARY VIEW {quoted(name)} AS SELECT {columns} FROM {source}"
