"""How a plan uses each column of its table: ``filter``, ``group``, ``output``, ``aggregate``; judged fail-closed.

The policy engine (:mod:`policies.engine`) compares these uses with what a role may do. A plan's uses never
change, so they (and which aggregate arguments are k-countable) are worked out once per plan fingerprint.

>>> from hpf.federation.catalog import Catalog
>>> from hpf.federation.planner import plan_query
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
from dataclasses import dataclass, field
from functools import lru_cache

import sqlglot
from sqlglot import exp

from hpf.federation.catalog import Column
from hpf.federation.lru import Lru
from hpf.federation.plan import Plan
from hpf.policies.products import ColumnFacts, Facts, ProductProblem, numeric_cast, product_problem, square_problem


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

_MAX_FACTOR = 1_000  # a literal factor beyond this could make a product overflow on a particular row
_MAX_TERM = 10**9  # likewise for a literal added or subtracted


def facts_of(types: Types = None, columns: Mapping[str, Column] | None = None) -> Facts | None:
    """What the judgement of values reads of the table's columns: the catalog's columns (types, bounds and
    domains), else their types alone (no column is then a measured quantity), else nothing."""
    if columns is not None:
        return {n: ColumnFacts(c.type, c.bounds, c.domain is not None) for n, c in columns.items()}
    if types is not None:
        return {n: ColumnFacts(t) for n, t in types.items()}
    return None


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


def _safe_arithmetic(node: exp.Expr, facts: Facts | None) -> bool:
    """``+ - *`` that keeps its operands' values: no huge literal factor or term, and a product of two row values
    only where it is a value (:func:`policies.products.product_problem`)."""
    if isinstance(node, exp.Mul):
        return not _literal_beyond(node, _MAX_FACTOR) and product_problem(node, facts) is None
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


def _edge(child: exp.Expr, parent: exp.Expr, *, date_parts: bool, facts: Facts | None = None) -> str:
    """How ``parent`` uses ``child``: keeps its value, tests it as a CASE/IF condition, or anything else."""
    if isinstance(parent, exp.If):  # a WHEN of a CASE, or IF(cond, a, b)
        return _CONDITION if parent.args.get("this") is child else _VALUE
    if isinstance(parent, exp.Case):  # CASE x WHEN ...: x is compared; else a WHEN (its If decides) or ELSE
        return _CONDITION if parent.args.get("this") is child else _VALUE
    if isinstance(parent, _ARITHMETIC):
        return _VALUE if _safe_arithmetic(parent, facts) else _OTHER
    if numeric_cast(parent, facts) and parent.args.get("this") is child:
        return _VALUE
    if date_parts and _date_part(child, parent):
        return _VALUE
    return _OTHER


def _occurrence(col: exp.Column, root: exp.Expr, *, date_parts: bool, facts: Facts | None = None) -> tuple[bool, bool]:
    """(in a condition, computed) for one column occurrence under ``root``.

    ``in a condition``: a CASE/IF condition is on its path. ``computed``: a node off the value whitelist is on
    its path, above the outermost condition if there is one (below it, comparisons are what conditions are).
    """
    in_condition = computed = False
    node: exp.Expr = col
    while node is not root and node.parent is not None:
        parent = node.parent
        edge = _edge(node, parent, date_parts=date_parts, facts=facts)
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
    # a component that is not k-countable because of a product of row values: why (policies.products)
    products: dict[int, ProductProblem] = field(default_factory=dict)
    # a column that is a filter use because it is a factor of such a product: that product's problem
    factors: dict[str, ProductProblem] = field(default_factory=dict)


# by plan fingerprint and what the judgement reads of the catalog (which the fingerprint need not fix: bounds)
_USES: Lru[tuple[str, object], PlanUses] = Lru(1024)


def column_uses(plan: Plan, types: Types = None, columns: Mapping[str, Column] | None = None) -> dict[str, set[str]]:
    """``{column: uses}`` of the plan's table: ``filter``, ``group``, ``output``, ``aggregate``.

    Fail closed, by a whitelist of nodes that keep a column's value: ``+ - *`` with no literal factor beyond
    1000 or term beyond 10^9, unary minus, parentheses, a CAST of a number to HUGEINT, DOUBLE or DECIMAL(38, s),
    the value (THEN / ELSE) of a CASE/IF, and a product of two row values only where it is a value: plain
    values of measured quantities (:mod:`policies.products`). ``types`` (the table's column types) lets a cast
    of a BOOLEAN or VARCHAR count as computing; ``columns`` (the catalog's columns) also gives the bounds and
    domains a product's columns are judged by (without them, no product of two row values is a value).

    - WHERE: ``filter``.
    - An aggregate's argument: a column reached only through the whitelist is an ``aggregate`` use; one in a
      CASE/IF condition a ``filter`` use (an aggregate's FILTER clause arrives as ``CASE WHEN cond THEN x
      END``); one reached through anything else (a comparison, NULLIF, GREATEST, SIGN, a cast to BOOLEAN,
      a product that weighs by a condition, any other function ...) both ``filter`` and ``aggregate``:
      ``SUM(CAST(x > 100 AS INTEGER))`` counts the rows with x > 100.
    - A GROUP BY key: ``group`` and ``output`` always (the slot layout is public and the asker decrypts
      every cell, so a key's values reach the asker whether or not the query returns them); ``filter`` as
      well when the column is in the key's CASE condition or under anything but the whitelist and a date
      part (``EXTRACT(YEAR FROM d)``, ``YEAR(d)``, ``date_part('month', d)``).
    """
    return {column: set(u) for column, u in analyse(plan, types, columns).uses.items()}


def analyse(plan: Plan, types: Types = None, columns: Mapping[str, Column] | None = None) -> PlanUses:
    """The plan's column uses, which components are not k-countable, and why where a product is the reason."""
    facts = facts_of(types, columns)
    key = (plan.fingerprint, None if facts is None else tuple(sorted(facts.items())))
    cached = _USES.get(key) if plan.fingerprint else None
    if cached is None:
        cached = _column_uses(plan, facts)
        if plan.fingerprint:
            _USES.put(key, cached)
    return cached


def _column_uses(plan: Plan, facts: Facts | None) -> PlanUses:
    uses: dict[str, set[str]] = defaultdict(set)
    explicit: set[str] = set()  # columns filtered on in WHERE or a condition
    computed: set[str] = set()
    uncountable: set[int] = set()
    products: dict[int, ProductProblem] = {}
    factors: dict[str, ProductProblem] = {}
    if plan.where:
        for col in _columns(plan.where):
            uses[col.name].add("filter")
            explicit.add(col.name)
    for key in plan.keys:
        root = parse_snippet(key.expr)
        for col in root.find_all(exp.Column):
            uses[col.name] |= {"group", "output"}
            in_condition, off = _occurrence(col, root, date_parts=True, facts=facts)
            if in_condition or off:
                uses[col.name].add("filter")
                (explicit if in_condition else computed).add(col.name)
    for index, component in enumerate(plan.components):
        if component.arg is None:
            continue
        root = parse_snippet(component.arg)
        failure = _count_failure(root, facts)
        if failure is None and component.kind == "sumsq":  # a variance's square multiplies its columns together
            failure = square_problem(root, facts)
            if failure is not None:
                for col in root.find_all(exp.Column):
                    if not _occurrence(col, root, date_parts=False, facts=facts)[0]:
                        uses[col.name].add("filter")
                        computed.add(col.name)
                        factors.setdefault(col.name, failure)
        if failure is not None:
            uncountable.add(index)
            if isinstance(failure, ProductProblem):
                products[index] = failure
        for product in root.find_all(exp.Mul):
            problem = product_problem(product, facts)
            if problem is not None:
                for col in product.find_all(exp.Column):
                    factors.setdefault(col.name, problem)
        for col in root.find_all(exp.Column):
            in_condition, off = _occurrence(col, root, date_parts=False, facts=facts)
            if in_condition:
                uses[col.name].add("filter")
                explicit.add(col.name)
            if off:
                uses[col.name].add("filter")
                if not in_condition:
                    computed.add(col.name)
            if off or not in_condition:
                uses[col.name].add("aggregate")
    computed -= explicit
    return PlanUses(
        {c: frozenset(u) for c, u in uses.items()},
        frozenset(computed),
        frozenset(uncountable),
        products,
        {c: p for c, p in factors.items() if c in computed},
    )


def k_countable(node: exp.Expr, types: Types = None, columns: Mapping[str, Column] | None = None) -> bool:
    """Whether an aggregate argument is NULL exactly on the rows it does not cover, and a value (never a
    condition) on the rows it does; so its own count of non-NULL values is the number of rows it covers.

    Columns and literals; ``+ - *``, unary minus, parentheses, a CAST to a number (all NULL when an operand
    is); a CASE/IF with no ELSE (or ELSE NULL) whose WHENs all return the same value. ``CASE WHEN c THEN 1
    ELSE 0 END`` counts every row while its sum reveals how many match c; so do ``CAST(c AS INTEGER)`` and
    ``CASE WHEN c THEN 1 WHEN NOT c THEN 0 END``. A product of two row values only where it is a value
    (:mod:`policies.products`): ``SUM(x * flag)`` of a 0/1 column is the flagged rows' sum.
    """
    return _count_failure(node, facts_of(types, columns)) is None


_SHAPE = "shape"  # not k-countable, for a reason other than a product


def _count_failure(node: exp.Expr, facts: Facts | None) -> ProductProblem | str | None:
    """None if ``node`` is k-countable (see :func:`k_countable`); else the product that is not a value, where
    one is the first reason met, or ``_SHAPE``."""
    if isinstance(node, exp.Column | exp.Literal | exp.Null):
        return None
    if isinstance(node, exp.Paren | exp.Neg):
        return _count_failure(node.this, facts)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul):
        problem = product_problem(node, facts)
        if problem is not None:
            return problem
        if not _safe_arithmetic(node, facts):
            return _SHAPE
        return _count_failure(node.this, facts) or _count_failure(node.expression, facts)
    if numeric_cast(node, facts):
        return _count_failure(node.this, facts)
    if isinstance(node, exp.Case | exp.If):
        branches = node.args.get("ifs", []) if isinstance(node, exp.Case) else [node]
        otherwise = node.args.get("default" if isinstance(node, exp.Case) else "false")
        if otherwise is not None and not isinstance(otherwise, exp.Null):
            return _SHAPE
        values = [b.args.get("true") for b in branches if isinstance(b, exp.If)]
        if len(values) != len(branches) or any(v is None for v in values):
            return _SHAPE
        returned = {v.sql("duckdb") for v in values if v is not None and not isinstance(v, exp.Null)}
        if len(returned) > 1:
            return _SHAPE
        for value in values:
            failure = _count_failure(value, facts) if value is not None else None
            if failure is not None:
                return failure
        return None
    return _SHAPE
