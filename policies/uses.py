"""How a plan uses each column of its table: ``filter``, ``group``, ``output``, ``aggregate``; judged fail-closed.

The policy engine (:mod:`policies.engine`) compares these uses with what a role may do. A plan's uses never
change, so they (and which aggregate arguments are k-countable) are worked out once per plan fingerprint.

>>> from federation.catalog import Catalog
>>> from federation.planner import plan_query
>>> catalog = Catalog.model_validate({"federation": "f", "nodes": [{"id": "a", "address": "h:1"}],
...     "tables": {"t": {"columns": {"g": {"type": "VARCHAR", "domain": {"values": ["x", "y"]}},
...                                  "v": {"type": "BIGINT", "class": "sensitive"}}}}})
>>> uses = column_uses(plan_query("SELECT g, SUM(v) FILTER (WHERE v > 0) FROM t GROUP BY g", catalog))
>>> {column: sorted(u) for column, u in sorted(uses.items())}
{'g': ['group', 'output'], 'v': ['aggregate', 'filter']}
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp

from federation.lru import Lru
from federation.plan import Plan


@lru_cache(maxsize=1024)
def parse_snippet(sql: str) -> exp.Expression:
    """A plan's own SQL snippet (DuckDB dialect, made by the planner); cached, never mutated."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(tree, exp.Expression)
    return tree


# The value whitelist. A column keeps its own value (an ``aggregate`` use inside an aggregate's argument, a
# ``group`` use in a key) only through these; a CASE/IF condition makes it a ``filter`` use; anything else
# (a comparison, NOT/AND/OR, IN, BETWEEN, LIKE, IS, NULLIF, COALESCE, GREATEST/LEAST, SIGN, ABS, any other
# function, a cast to BOOLEAN or VARCHAR, TRY_CAST, division ...) can turn a value into a condition, so it is
# a ``filter`` use as well. Fail closed: a node type not named here is "anything else".
_ARITHMETIC = (exp.Paren, exp.Add, exp.Sub, exp.Mul, exp.Neg)
_NUMERIC_TYPES = frozenset(exp.DataType.NUMERIC_TYPES - {exp.DataType.Type.BIT})
# date parts the planner gives a domain (keys only): the date is their operand, the part a constant
_DATE_PART_FUNCS = (
    exp.Year,
    exp.Quarter,
    exp.Month,
    exp.Day,
    exp.DayOfMonth,
    exp.DayOfWeek,
)
_DATE_PART_NAMES = frozenset({"date_part", "datepart"})

_VALUE, _CONDITION, _OTHER = "value", "condition", "other"


Types = Mapping[str, str] | None  # the table's column types (catalog), when known

_WIDE_TYPES = frozenset({exp.DataType.Type.INT128, exp.DataType.Type.DOUBLE})  # HUGEINT is INT128
_MAX_FACTOR = 1_000  # a literal factor beyond this could make a product overflow on a particular row
_MAX_TERM = 10**9  # likewise for a literal added or subtracted
_NUMERIC_COLUMN = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "DOUBLE", "DECIMAL")


def _numeric_cast(node: exp.Expr, types: Types = None) -> bool:
    """``CAST(x AS HUGEINT | DOUBLE | DECIMAL(38, s))`` of a number: keeps x's value and cannot fail on it.

    A narrower cast fails on values outside its range, and that failure is a signal about the rows
    (``CAST(x - 5000000 AS UTINYINT)`` fails unless x is in 5000000..5000255); a cast of a BOOLEAN or VARCHAR
    turns a condition or a text into a number. TRY_CAST is no such cast either: it makes out-of-range values
    NULL, which filters on them.
    """
    to = node.args.get("to")
    if type(node) is not exp.Cast or not isinstance(to, exp.DataType) or to.this not in _NUMERIC_TYPES:
        return False
    if to.this == exp.DataType.Type.DECIMAL:
        precision = to.expressions[0] if to.expressions else None
        if not (isinstance(precision, exp.DataTypeParam) and precision.name == "38"):
            return False
    elif to.this not in _WIDE_TYPES:
        return False
    if types is not None:
        for col in node.this.find_all(exp.Column):
            if not types.get(col.name, "").startswith(_NUMERIC_COLUMN):
                return False
    return True


def _literal_beyond(node: exp.Expr, limit: int) -> bool:
    """Whether an operand of ``node`` is a number literal larger than ``limit`` in magnitude."""
    for operand in (node.args.get("this"), node.args.get("expression")):
        if isinstance(operand, exp.Literal) and not operand.is_string:
            try:
                if abs(float(operand.this)) > limit:
                    return True
            except ValueError:
                return True
    return False


def _safe_arithmetic(node: exp.Expr) -> bool:
    """``+ - *`` that cannot overflow on one particular row: no product of two values that depend on the rows,
    no huge literal factor or term (an overflow that happens only for some values is a filter on them)."""
    if isinstance(node, exp.Mul):
        both = all(any(True for _ in side.find_all(exp.Column)) for side in (node.this, node.expression))
        return not both and not _literal_beyond(node, _MAX_FACTOR)
    if isinstance(node, exp.Add | exp.Sub):
        return not _literal_beyond(node, _MAX_TERM)
    return True


def _date_part(child: exp.Expr, parent: exp.Expr) -> bool:
    """Whether ``parent`` takes a date part (year, quarter, month, ...) of ``child``."""
    if isinstance(parent, exp.Extract):
        return parent.args.get("expression") is child
    if isinstance(parent, _DATE_PART_FUNCS):
        return parent.args.get("this") is child
    if isinstance(parent, exp.Anonymous) and str(parent.this).lower() in _DATE_PART_NAMES:
        args = parent.expressions
        return len(args) == 2 and args[1] is child and isinstance(args[0], exp.Literal) and args[0].is_string
    return False


def _edge(child: exp.Expr, parent: exp.Expr, *, date_parts: bool, types: Types = None) -> str:
    """How ``parent`` uses ``child``: keeps its value, tests it as a CASE/IF condition, or anything else."""
    if isinstance(parent, exp.If):  # a WHEN of a CASE, or IF(cond, a, b)
        return _CONDITION if parent.args.get("this") is child else _VALUE
    if isinstance(parent, exp.Case):  # CASE x WHEN ...: x is compared; else a WHEN (its If decides) or ELSE
        return _CONDITION if parent.args.get("this") is child else _VALUE
    if isinstance(parent, _ARITHMETIC):
        return _VALUE if _safe_arithmetic(parent) else _OTHER
    if _numeric_cast(parent, types) and parent.args.get("this") is child:
        return _VALUE
    if date_parts and _date_part(child, parent):
        return _VALUE
    return _OTHER


def _occurrence(col: exp.Column, root: exp.Expr, *, date_parts: bool, types: Types = None) -> tuple[bool, bool]:
    """(in a condition, computed) for one column occurrence under ``root``.

    ``in a condition``: a CASE/IF condition is on its path. ``computed``: a node off the value whitelist is on
    its path, above the outermost condition if there is one (below it, comparisons are what conditions are).
    """
    in_condition = computed = False
    node: exp.Expr = col
    while node is not root and node.parent is not None:
        parent = node.parent
        edge = _edge(node, parent, date_parts=date_parts, types=types)
        if edge == _CONDITION:
            in_condition, computed = True, False
        elif edge == _OTHER:
            computed = True
        node = parent
    return in_condition, computed


def _columns(sql: str) -> list[exp.Column]:
    return list(parse_snippet(sql).find_all(exp.Column))


@dataclass(frozen=True)
class PlanUses:
    uses: dict[str, frozenset[str]]
    computed: frozenset[str]  # columns that are a filter use only because something computes on them
    uncountable: frozenset[int]  # components whose argument is not k-countable (see k_countable)


_USES: Lru[tuple[str, bool], PlanUses] = Lru(1024)  # by plan fingerprint: a plan's uses never change


def column_uses(plan: Plan, types: Types = None) -> dict[str, set[str]]:
    """``{column: uses}`` of the plan's table: ``filter``, ``group``, ``output``, ``aggregate``.

    Fail closed, by a whitelist of nodes that keep a column's value: ``+ - *`` that cannot overflow on one row
    (no product of two row values, no literal factor beyond 1000 or term beyond 10^9), unary minus,
    parentheses, a CAST of a number to HUGEINT, DOUBLE or DECIMAL(38, s), and the value (THEN / ELSE) of a
    CASE/IF. ``types`` (the table's column types) lets a cast of a BOOLEAN or VARCHAR count as computing.

    - WHERE: ``filter``.
    - An aggregate's argument: a column reached only through the whitelist is an ``aggregate`` use; one in a
      CASE/IF condition a ``filter`` use (an aggregate's FILTER clause arrives as ``CASE WHEN cond THEN x
      END``); one reached through anything else (a comparison, NULLIF, GREATEST, SIGN, a cast to BOOLEAN,
      any other function ...) both ``filter`` and ``aggregate``: ``SUM(CAST(x > 100 AS INTEGER))`` counts
      the rows with x > 100.
    - A GROUP BY key: ``group`` and ``output`` always (the slot layout is public and the asker decrypts
      every cell, so a key's values reach the asker whether or not the query returns them); ``filter`` as
      well when the column is in the key's CASE condition or under anything but the whitelist and a date
      part (``EXTRACT(YEAR FROM d)``, ``YEAR(d)``, ``date_part('month', d)``).
    """
    return {column: set(u) for column, u in analyse(plan, types).uses.items()}


def analyse(plan: Plan, types: Types = None) -> PlanUses:
    key = (plan.fingerprint, types is not None)  # a plan fixes its catalog, and so its table's types
    cached = _USES.get(key) if plan.fingerprint else None
    if cached is None:
        cached = _column_uses(plan, types)
        if plan.fingerprint:
            _USES.put(key, cached)
    return cached


def _column_uses(plan: Plan, types: Types) -> PlanUses:
    uses: dict[str, set[str]] = defaultdict(set)
    explicit: set[str] = set()  # columns filtered on in WHERE or a condition
    computed: set[str] = set()
    uncountable: set[int] = set()
    if plan.where:
        for col in _columns(plan.where):
            uses[col.name].add("filter")
            explicit.add(col.name)
    for key in plan.keys:
        root = parse_snippet(key.expr)
        for col in root.find_all(exp.Column):
            uses[col.name] |= {"group", "output"}
            in_condition, off = _occurrence(col, root, date_parts=True, types=types)
            if in_condition or off:
                uses[col.name].add("filter")
                (explicit if in_condition else computed).add(col.name)
    for index, component in enumerate(plan.components):
        if component.arg is None:
            continue
        root = parse_snippet(component.arg)
        if not k_countable(root, types):
            uncountable.add(index)
        for col in root.find_all(exp.Column):
            in_condition, off = _occurrence(col, root, date_parts=False, types=types)
            if in_condition:
                uses[col.name].add("filter")
                explicit.add(col.name)
            if off:
                uses[col.name].add("filter")
                if not in_condition:
                    computed.add(col.name)
            if off or not in_condition:
                uses[col.name].add("aggregate")
    return PlanUses({c: frozenset(u) for c, u in uses.items()}, frozenset(computed - explicit), frozenset(uncountable))


def k_countable(node: exp.Expr, types: Types = None) -> bool:
    """Whether an aggregate argument is NULL exactly on the rows it does not cover, and a value (never a
    condition) on the rows it does; so its own count of non-NULL values is the number of rows it covers.

    Columns and literals; ``+ - *``, unary minus, parentheses, a CAST to a number (all NULL when an operand
    is); a CASE/IF with no ELSE (or ELSE NULL) whose WHENs all return the same value. ``CASE WHEN c THEN 1
    ELSE 0 END`` counts every row while its sum reveals how many match c; so do ``CAST(c AS INTEGER)`` and
    ``CASE WHEN c THEN 1 WHEN NOT c THEN 0 END``.
    """
    if isinstance(node, exp.Column | exp.Literal | exp.Null):
        return True
    if isinstance(node, exp.Paren | exp.Neg):
        return k_countable(node.this, types)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul):
        return _safe_arithmetic(node) and k_countable(node.this, types) and k_countable(node.expression, types)
    if _numeric_cast(node, types):
        return k_countable(node.this, types)
    if isinstance(node, exp.Case | exp.If):
        branches = node.args.get("ifs", []) if isinstance(node, exp.Case) else [node]
        otherwise = node.args.get("default" if isinstance(node, exp.Case) else "false")
        if otherwise is not None and not isinstance(otherwise, exp.Null):
            return False
        values = [b.args.get("true") for b in branches if isinstance(b, exp.If)]
        if len(values) != len(branches) or any(v is None for v in values):
            return False
        returned = {v.sql("duckdb") for v in values if v is not None and not isinstance(v, exp.Null)}
        return len(returned) <= 1 and all(k_countable(v, types) for v in values if v is not None)
    return False
