"""Types for the PostgreSQL rendering: the family of a DuckDB expression, and a DuckDB type as PostgreSQL's.

A rule of :mod:`federation.planner.dialects` asks the family of an operand where the two engines differ by type
(text ordering, text forms, casts to and from BOOLEAN). The family is read from the tree and the table's column
types, without binding; ``unknown`` where neither says.

>>> import sqlglot
>>> family(sqlglot.parse_one("COALESCE(city, 'x')", read="duckdb"), {"city": "VARCHAR"})
'text'
>>> family(sqlglot.parse_one("CAST(amount AS INT128) * 2", read="duckdb"), {})
'number'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from sqlglot import exp

from hpf.federation.errors import PlanError

Family = Literal["text", "number", "float", "bool", "date", "null", "unknown"]

# The characters DuckDB's TRIM, LTRIM and RTRIM remove (Unicode's space separators); PostgreSQL's remove U+0020
# alone unless told
UNICODE_SPACES = "\u0020\u00a0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u202f\u205f\u3000"
TRIMS = {  # DuckDB's trims as PostgreSQL's functions, told the characters
    None: "BTRIM",
    "BOTH": "BTRIM",
    "LEADING": "LTRIM",
    "TRAILING": "RTRIM",
}

_T = exp.DataType.Type
_FLOATS = {_T.DOUBLE, _T.FLOAT}
_EXACT = {_T.TINYINT, _T.SMALLINT, _T.INT, _T.BIGINT, _T.INT128, _T.DECIMAL}
_TEXT_OUT = (exp.Trim, exp.Substring, exp.DPipe, exp.Concat, exp.Lower, exp.Upper)
_NUMBER_OUT: tuple[type[exp.Expression], ...] = (exp.Length, exp.Count, exp.Year, exp.Quarter, exp.Month, exp.Day)
_NUMBER_OUT += (exp.DayOfMonth, exp.DayOfWeek, exp.Extract, exp.Sign, exp.Mod, exp.IntDiv, exp.BitwiseAnd)
_NUMBER_OUT += (exp.BitwiseRightShift, exp.Window)  # the one window: the DP source's ROW_NUMBER
_BOOL_OUT = (exp.Predicate, exp.And, exp.Or, exp.Not, exp.StartsWith, exp.EndsWith, exp.Contains)
_LIKE_FIRST = (exp.Paren, exp.Neg, exp.Abs, exp.Sum, exp.Alias)
_FIRST_KNOWN = (exp.Add, exp.Sub, exp.Mul, exp.Case, exp.If, exp.Coalesce, exp.Nullif, exp.Greatest, exp.Least)
# DuckDB type -> PostgreSQL type, where they hold the same values; anything else has no exact counterpart
_PG_TYPES = {
    _T.TINYINT: "SMALLINT",
    _T.SMALLINT: "SMALLINT",
    _T.INT: "INTEGER",
    _T.BIGINT: "BIGINT",
    _T.INT128: "NUMERIC(39, 0)",
    _T.DOUBLE: "DOUBLE PRECISION",
    _T.BOOLEAN: "BOOLEAN",
    _T.DATE: "DATE",
    _T.VARCHAR: "TEXT",
    _T.TEXT: "TEXT",
}


def type_family(data_type: exp.DataType) -> Family:
    if data_type.is_type(*exp.DataType.TEXT_TYPES):
        return "text"
    if data_type.this in _FLOATS:
        return "float"
    if data_type.this in _EXACT:
        return "number"
    if data_type.this == _T.BOOLEAN:
        return "bool"
    return "date" if data_type.this == _T.DATE else "unknown"


def family(node: exp.Expression, columns: Mapping[str, str]) -> Family:
    """The family of ``node``'s value: from a column's catalog type, a literal, a cast or the function."""
    if isinstance(node, exp.Column):
        declared = columns.get(node.name)
        return "unknown" if declared is None else type_family(exp.DataType.build(declared, dialect="duckdb"))
    if isinstance(node, exp.Literal):
        return "text" if node.is_string else "number"
    if isinstance(node, exp.Null):
        return "null"
    if isinstance(node, exp.Boolean | exp.Is):
        return "bool"
    if isinstance(node, exp.Cast):
        return type_family(node.to)
    if isinstance(node, _TEXT_OUT):
        return "text"
    if isinstance(node, _NUMBER_OUT):
        return "number"
    if isinstance(node, exp.DateFromParts):
        return "date"
    if isinstance(node, _BOOL_OUT):
        return "bool"
    if isinstance(node, _LIKE_FIRST):
        return family(node.this, columns)
    if isinstance(node, _FIRST_KNOWN):
        return _first_known(node, columns)
    return "unknown"


def _first_known(node: exp.Expression, columns: Mapping[str, str]) -> Family:
    """The family of the values of an operator, a CASE or a function of one type family (the typer checks it)."""
    values: list[exp.Expression] = []
    if isinstance(node, exp.Case):
        values = [i.args["true"] for i in node.args.get("ifs", [])] + [node.args.get("default") or exp.Null()]
    elif isinstance(node, exp.If):
        values = [node.args["true"], node.args.get("false") or exp.Null()]
    else:
        values = [v for v in [node.this, node.expression, *node.expressions] if isinstance(v, exp.Expression)]
    found = [f for f in (family(v, columns) for v in values) if f != "null"]
    if "float" in found and isinstance(node, exp.Add | exp.Sub | exp.Mul):
        return "float"
    return found[0] if found and all(f == found[0] for f in found) else ("null" if not found else "unknown")


def pg_type(node: exp.Expression, refuse: Callable[[str], PlanError]) -> exp.Expression:
    """The PostgreSQL type holding exactly the values of the DuckDB type ``node``."""
    assert isinstance(node, exp.DataType)
    if node.this == _T.DECIMAL:
        return exp.DataType(this=_T.DECIMAL, expressions=node.expressions)
    name = _PG_TYPES.get(node.this)
    if name is None:
        raise refuse(f"the type {node.sql('duckdb')}")
    return exp.DataType.build(name, dialect="postgres")
