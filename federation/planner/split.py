"""Stage 3: split a resolved SELECT into additive components, domain keys and a finishing query.

Aggregates become additive components every node computes (COUNT, SUM(x), SUM(x*x)); group keys become
domain cells; everything after the sum (AVG, VAR, arithmetic over aggregates, HAVING, ORDER BY, LIMIT)
becomes a query over one row per group that the client runs after decryption.

>>> import sqlglot
>>> tree = sqlglot.parse_one("SELECT SUM(a) FILTER (WHERE b > 1) FROM t", read="duckdb")
>>> unfilter(tree.expressions[0]).sql("duckdb")
'SUM(CASE WHEN b > 1 THEN a END)'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlglot import exp

from hpf.federation.errors import PlanError
from hpf.federation.planner.shape import NOT_ADDITIVE, aggregate_name

SUPPORTED = {
    "count": "count",
    "sum": "sum",
    "avg": "avg",
    "variancepop": "var_pop",
    "variance": "var_samp",
    "stddevpop": "stddev_pop",
    "stddevsamp": "stddev_samp",
    "stddev": "stddev_samp",
}


def unfilter(node: exp.Expression) -> exp.Expression:
    """``AGG(x) FILTER (WHERE c)`` is ``AGG(CASE WHEN c THEN x END)``; COUNT(*) counts ``CASE WHEN c THEN 1 END``."""
    if not isinstance(node, exp.Filter):
        return node
    agg, cond = node.this, node.expression.this
    agg = agg.copy()
    arg = agg.this
    if isinstance(arg, exp.Star) or arg is None:
        arg = exp.Literal.number(1)
    agg.set("this", exp.Case(ifs=[exp.If(this=cond.copy(), true=arg.copy())]))
    if "big_int" in agg.args:
        agg.set("big_int", None)
    return agg


@dataclass
class AggregateCall:
    func: str  # count | sum | avg | var_pop | var_samp | stddev_pop | stddev_samp
    arg: exp.Expression | None  # None for COUNT(*)
    source: exp.Expression  # the (unfiltered) aggregate expression, for type binding

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.func, self.arg.sql("duckdb") if self.arg is not None else None)


@dataclass
class Split:
    calls: list[AggregateCall] = field(default_factory=list)
    keys: list[exp.Expression] = field(default_factory=list)
    finish: exp.Select | None = None
    output_names: list[str] = field(default_factory=list)
    bare_key_outputs: list[int | None] = field(default_factory=list)


def _classify(node: exp.Expression, duckdb_aggs: frozenset[str]) -> AggregateCall | None:
    """An AggregateCall for a supported aggregate, a PlanError for an unsupported one, None otherwise."""
    name = aggregate_name(node, duckdb_aggs)
    if name is None:
        return None
    shown = str(node.this).upper() if isinstance(node, exp.Anonymous) else cast(exp.Func, node).sql_name()
    if name in NOT_ADDITIVE:
        raise PlanError(
            f"{shown} is not supported: it is not additive across regions, so it cannot be computed "
            "from encrypted regional partials without revealing them",
            code="PLAN_NOT_ADDITIVE",
            hint="use COUNT, SUM, AVG, VAR_POP/VAR_SAMP or STDDEV_POP/STDDEV_SAMP",
        )
    func = SUPPORTED.get(name)
    if func is None:
        raise PlanError(
            f"aggregate {shown} is not supported",
            code="PLAN_UNSUPPORTED_AGGREGATE",
            hint="supported: COUNT, SUM, AVG, VAR_POP, VAR_SAMP, STDDEV_POP, STDDEV_SAMP",
        )
    arg = node.this
    if isinstance(arg, exp.Distinct):
        raise PlanError(
            f"{func.upper()}(DISTINCT ...) is not supported: distinct values are not additive across regions "
            "(the same value counted in two regions would be counted twice)",
            code="PLAN_NOT_ADDITIVE",
            hint=f"use {func.upper()}(...) without DISTINCT",
        )
    if node.expressions:
        raise PlanError(f"{func.upper()} takes one argument", code="PLAN_UNSUPPORTED_AGGREGATE")
    if isinstance(arg, exp.Star):
        if func != "count":
            raise PlanError(f"{func.upper()}(*) is not valid SQL", code="PLAN_SYNTAX")
        arg = None
    if arg is not None:
        for inner in arg.walk():
            if inner is not arg and aggregate_name(inner, duckdb_aggs) is not None:
                raise PlanError("aggregates cannot be nested", code="PLAN_NESTED_AGGREGATE")
            if isinstance(inner, exp.Div | exp.IntDiv):
                raise PlanError(
                    f"division inside {func.upper()}(...) is not exact",
                    code="PLAN_INEXACT_ARGUMENT",
                    hint="divide the aggregates instead, e.g. SUM(a) / SUM(b)",
                )
    return AggregateCall(func=func, arg=arg, source=node)


def group_key_expressions(tree: exp.Select, base_columns: set[str]) -> list[exp.Expression]:
    """GROUP BY items as expressions: positions and select aliases resolve to the select item."""
    group = tree.args.get("group")
    if not group:
        return []
    if group.args.get("all") or group.args.get("cube") or group.args.get("rollup") or group.args.get("grouping_sets"):
        raise PlanError("GROUP BY ALL, CUBE, ROLLUP and GROUPING SETS are not supported", code="PLAN_GROUP_BY")
    aliases = {e.alias.lower(): e.this for e in tree.expressions if isinstance(e, exp.Alias)}
    keys: list[exp.Expression] = []
    for item in group.expressions:
        if isinstance(item, exp.Literal) and not item.is_string:
            if not item.this.isdigit():
                raise PlanError("a GROUP BY position is not a whole number", code="PLAN_GROUP_BY")
            pos = int(item.this)
            if not 1 <= pos <= len(tree.expressions):
                raise PlanError(
                    f"a GROUP BY position is out of range (1 to {len(tree.expressions)})", code="PLAN_GROUP_BY"
                )
            item = tree.expressions[pos - 1].unalias()
        elif isinstance(item, exp.Column) and item.name not in base_columns and item.name in aliases:
            item = aliases[item.name]
        if item not in keys:
            keys.append(item.copy())
    return keys


def split_query(tree: exp.Select, base_columns: set[str], duckdb_aggs: frozenset[str]) -> Split:
    """Collect aggregate calls and keys, and build the finishing query over ``__groups``."""
    out = Split(keys=group_key_expressions(tree, base_columns))
    call_index: dict[tuple[str, str | None], int] = {}

    def replace_aggregates(node: exp.Expression) -> exp.Expression:
        node = unfilter(node)
        call = _classify(node, duckdb_aggs)
        if call is None:
            if isinstance(node, exp.Filter):
                raise PlanError("FILTER applies only to aggregates", code="PLAN_SYNTAX")
            return node
        idx = call_index.setdefault(call.key, len(out.calls))
        if idx == len(out.calls):
            out.calls.append(call)
        return exp.column(f"a{idx}")

    key_names = {k: f"k{i}" for i, k in enumerate(out.keys)}

    def replace_keys(node: exp.Expression) -> exp.Expression:
        name = key_names.get(node)
        return exp.column(name) if name else node

    def finish_expr(node: exp.Expression) -> exp.Expression:
        return node.copy().transform(replace_aggregates).transform(replace_keys)

    _refuse_misplaced_aggregates(tree, out.keys, duckdb_aggs)
    items: list[exp.Expression] = []
    bodies: dict[str, exp.Expression] = {}
    for i, item in enumerate(tree.expressions):
        name = item.alias if isinstance(item, exp.Alias) else item.sql("duckdb")
        body = finish_expr(item.unalias())
        out.output_names.append(name)
        bare = body.name if isinstance(body, exp.Column) and body.name in key_names.values() else None
        out.bare_key_outputs.append(int(bare[1:]) if bare else None)
        if isinstance(item, exp.Alias):
            bodies[item.alias.lower()] = body
        items.append(
            cast(
                exp.Expression,
                exp.alias_(body, f"o{i}" if not isinstance(item, exp.Alias) else item.alias, quoted=True),
            )
        )
    having = tree.args.get("having")
    having_expr = finish_expr(having.this) if having is not None else None
    order = tree.args.get("order")
    order_expr = finish_expr(order) if order is not None else None

    if not out.calls and not out.keys:
        raise PlanError(
            "this query returns rows, not aggregates; the federation only returns aggregates",
            code="PLAN_ROW_LEVEL",
            hint="ask for COUNT(*), SUM(col), AVG(col) ..., optionally with GROUP BY",
        )
    _refuse_ungrouped(items, base_columns, set())
    # in HAVING and ORDER BY a select alias wins over a column of the same name, as in DuckDB
    _refuse_ungrouped([having_expr, order_expr], base_columns, set(bodies))
    if having_expr is not None:
        having_expr = _exclude_other_groups(having_expr, bodies, len(out.keys))

    hidden = [exp.column(f"__other{j}") for j in range(len(out.keys))]
    finish = exp.select(*items, *hidden).from_("__groups")
    if having_expr is not None:
        finish = finish.where(having_expr)
    if order_expr is not None:
        finish.set("order", order_expr)
    for arg in ("limit", "offset"):
        if tree.args.get(arg) is not None:
            finish.set(arg, tree.args[arg].copy())
    out.finish = finish
    return out


def _refuse_misplaced_aggregates(tree: exp.Select, keys: list[exp.Expression], duckdb_aggs: frozenset[str]) -> None:
    """No aggregate in WHERE (it filters rows, before any sum) or in a GROUP BY key."""
    where = tree.args.get("where")
    if where is not None:
        for node in where.walk():
            if aggregate_name(node, duckdb_aggs) is not None:
                raise PlanError(
                    "aggregates are not allowed in WHERE", code="PLAN_AGGREGATE_IN_WHERE", hint="use HAVING"
                )
    for key in keys:
        for node in key.walk():
            if aggregate_name(cast(exp.Expression, node), duckdb_aggs) is not None:
                raise PlanError("aggregates are not allowed in GROUP BY", code="PLAN_GROUP_BY")


def _exclude_other_groups(having: exp.Expression, bodies: dict[str, exp.Expression], n_keys: int) -> exp.Expression:
    """A HAVING condition on a key cannot be judged for the "(other)" group, whose key values are unknown.

    So that group never passes it (rather than being taken for NULL).
    """
    referenced: set[int] = set()
    for col in having.find_all(exp.Column):
        targets = [col, *bodies[col.name].find_all(exp.Column)] if col.name in bodies else [col]
        for target in targets:
            name = target.name if isinstance(target, exp.Column) else ""
            if name.startswith("k") and name[1:].isdigit() and int(name[1:]) < n_keys:
                referenced.add(int(name[1:]))
    for j in sorted(referenced):
        having = cast(exp.Expression, exp.and_(exp.paren(having), exp.not_(exp.column(f"__other{j}"))))
    return having


def _refuse_ungrouped(exprs: Sequence[exp.Expression | None], base_columns: set[str], aliases: set[str]) -> None:
    for e in exprs:
        if e is None:
            continue
        for col in e.find_all(exp.Column):
            if col.name in base_columns and col.name not in aliases:
                raise PlanError(
                    f"column {col.name!r} must appear in GROUP BY or inside an aggregate",
                    code="PLAN_NOT_GROUPED",
                    hint=f"add {col.name} to GROUP BY (it needs a declared domain) or aggregate it",
                )
