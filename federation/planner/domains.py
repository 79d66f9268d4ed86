"""Finite domains of GROUP BY keys: declared columns, date parts of declared dates, CASE over literals.

>>> from hpf.federation.catalog import Table
>>> t = Table.model_validate({"columns": {"d": {"type": "DATE", "domain": {"range": ["2020-01-01", "2021-12-31"]}}}})
>>> import sqlglot
>>> key_domain(sqlglot.parse_one("EXTRACT(YEAR FROM d)", read="duckdb"), t)
[2020, 2021]
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlglot import exp

from hpf.federation.catalog import Table

_PART_NAMES = {
    "year": "year",
    "yyyy": "year",
    "quarter": "quarter",
    "month": "month",
    "mon": "month",
    "day": "day",
    "dayofmonth": "day",
    "dow": "dow",
    "dayofweek": "dow",
    "isodow": "isodow",
}
_PART_FUNCS: dict[type[exp.Expression], str] = {
    exp.Year: "year",
    exp.Quarter: "quarter",
    exp.Month: "month",
    exp.Day: "day",
    exp.DayOfMonth: "day",
    exp.DayOfWeek: "dow",
}
_FIXED = {
    "quarter": list(range(1, 5)),
    "month": list(range(1, 13)),
    "day": list(range(1, 32)),
    "dow": list(range(0, 7)),
    "isodow": list(range(1, 8)),
}


def _date_column_bounds(node: exp.Expression, table: Table) -> tuple[dt.date, dt.date] | list[dt.date] | None:
    if not isinstance(node, exp.Column):
        return None
    col = table.columns.get(node.name)
    if col is None or col.type != "DATE" or col.domain is None:
        return None
    if col.domain.range is not None:
        lo, hi = col.domain.range
        return (lo, hi)
    return list(col.domain.values or [])


def _date_part(part: str, node: exp.Expression, table: Table) -> list[Any] | None:
    bounds = _date_column_bounds(node, table)
    if bounds is None:
        return None
    if part == "year":
        if isinstance(bounds, tuple):
            return list(range(bounds[0].year, bounds[1].year + 1))
        return sorted({d.year for d in bounds})
    return list(_FIXED[part])


def _part_name(node: exp.Expression) -> str | None:
    name = node.name if isinstance(node, exp.Var | exp.Literal) else node.sql()
    return _PART_NAMES.get(name.lower().strip("'\""))


def key_domain(node: exp.Expression, table: Table) -> list[Any] | None:
    """The finite value list of a group key expression, or None if it has no declared domain."""
    if isinstance(node, exp.Paren):
        return key_domain(node.this, table)
    if isinstance(node, exp.Column):
        col = table.columns.get(node.name)
        return col.domain_values() if col is not None else None
    if isinstance(node, exp.Extract):
        part = _part_name(node.this)
        return _date_part(part, node.expression, table) if part else None
    for cls, part in _PART_FUNCS.items():
        if type(node) is cls:
            return _date_part(part, node.this, table)
    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "date_part" and len(node.expressions) == 2:
        part = _part_name(node.expressions[0])
        return _date_part(part, node.expressions[1], table) if part else None
    if isinstance(node, exp.Case):
        outcomes = [ifs.args.get("true") for ifs in node.args.get("ifs", [])]
        default = node.args.get("default")
        if default is not None:
            outcomes.append(default)
        values: list[Any] = []
        for out in outcomes:
            if isinstance(out, exp.Null):
                continue
            lit = out
            negative = False
            if isinstance(lit, exp.Neg):
                lit, negative = lit.this, True
            if not isinstance(lit, exp.Literal):
                return None
            if lit.is_string:
                value: Any = lit.this
            else:
                try:
                    value = int(lit.this)
                except ValueError:
                    return None
                value = -value if negative else value
            if value not in values:
                values.append(value)
        return values or None
    return None


def coerce_to_type(values: list[Any], type_name: str) -> tuple[Any, ...] | None:
    """Domain values as the Python values DuckDB returns for ``type_name`` (None if they cannot be)."""
    t = type_name.upper()
    out: list[Any] = []
    try:
        for v in values:
            if t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"):
                out.append(int(v))
            elif t == "VARCHAR":
                out.append(str(v))
            elif t == "DATE":
                out.append(v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)))
            elif t == "BOOLEAN":
                if not isinstance(v, bool):
                    return None
                out.append(v)
            else:
                return None
    except (TypeError, ValueError):
        return None
    return tuple(out)
