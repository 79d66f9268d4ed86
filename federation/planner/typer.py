"""The kind of every expression of a query, node by node (:data:`KIND_RULES`), and what that proves.

A :class:`Typer` walks an expression and gives its :class:`~federation.planner.kinds.Kind`, refusing what could
fail on some row (the rules are listed in :mod:`federation.planner.totality`). On the way it widens exact
arithmetic over row values (its operands cast to HUGEINT or DECIMAL(38, s) in the tree), collects every
constant it computes (evaluated at plan time), and keeps the range of every summed argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from typing import Any

from sqlglot import exp

from hpf.federation.catalog import Table
from hpf.federation.errors import PlanError
from hpf.federation.planner.allow_list import AGGREGATES
from hpf.federation.planner.kinds import (
    EXACT,
    NUMERIC,
    Kind,
    arithmetic_kind,
    cast_kind,
    checked,
    fits_decimal,
    not_total,
    type_kind,
)
from hpf.federation.planner.split import unfilter
from hpf.federation.planner.surface import conjuncts


class Typer:
    """Gives the kind of the expressions of one query over ``table``, keeping what that proves on the way."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.ranges: dict[str, Kind] = {}
        self.row_level = False  # inside WHERE or an aggregate's argument: only catalog columns
        self.constants: list[exp.Expression] = []  # every computed constant, and every quoted date

    # -- helpers -------------------------------------------------------------------------------------

    def condition(self, node: exp.Expression | None, where: str) -> None:
        if node is None:
            return
        kind = self.kind(node)
        if kind.family not in ("bool", "null", "agg", "alias"):
            raise not_total(f"{where} that is not a boolean", "PLAN_TYPE_MIX")

    def unify(self, nodes: list[exp.Expression], what: str) -> Kind:
        """The common kind of values compared or chosen between (refused if DuckDB's conversion could fail)."""
        kinds = [self.kind(n) for n in nodes]
        if any(k.family == "agg" for k in kinds) and any(k.family == "text" and k.constant for k in kinds):
            raise not_total(f"{what} of a quoted constant with an aggregate", "PLAN_TYPE_MIX")
        known = [k for k in kinds if k.family not in ("null", "agg", "alias")]
        if not known:
            return Kind("null", constant=all(k.constant for k in kinds))
        constant = all(k.constant for k in kinds)
        families = {k.family for k in known}
        if families <= set(NUMERIC):
            if "double" in families:
                return Kind("double", constant=constant)
            scale = max(k.scale for k in known)
            if "dec" in families and not all(fits_decimal(k, scale) for k in known):
                raise not_total(f"{what} (numbers converted to DECIMAL(38, {scale}))", "PLAN_MAY_OVERFLOW")
            lo = min(k.lo for k in known if k.lo is not None)
            hi = max(k.hi for k in known if k.hi is not None)
            return Kind("dec" if "dec" in families else "int", scale, lo, hi, constant=constant)
        # one non-numeric family. A quoted constant meets a date only: converted once, here, at plan time (never
        # left for the engine to convert where a row condition guards it); with a number or a boolean it is refused
        quoted = [n for n, k in zip(nodes, kinds, strict=True) if k.family == "text" and k.constant]
        others = {k.family for k in known if not (k.family == "text" and k.constant)}
        if quoted and others - {"text"}:
            if others != {"date"}:
                raise not_total(
                    f"{what} of a quoted constant with a {' or '.join(sorted(others))}",
                    "PLAN_TYPE_MIX",
                    "write numbers and TRUE/FALSE without quotes",
                )
            self.constants.extend(exp.Cast(this=n.copy(), to=exp.DataType.build("DATE")) for n in quoted)
        if len(others) > 1:
            raise not_total(what, "PLAN_TYPE_MIX")
        family = others.pop() if others else "text"
        return Kind(family, constant=constant)

    def widen(self, node: exp.Expression, kind: Kind) -> exp.Expression:
        """``node`` as HUGEINT or DECIMAL(38, s) (wrapped in a cast unless it already is, or is a constant)."""
        if kind.constant or kind.wide or kind.family not in EXACT:
            return node
        target = "INT128" if kind.family == "int" else f"DECIMAL(38, {kind.scale})"
        if kind.family == "dec" and not fits_decimal(kind, kind.scale):
            raise not_total("a decimal value", "PLAN_MAY_OVERFLOW")
        wrapped = exp.Cast(this=node.copy(), to=exp.DataType.build(target, dialect="duckdb"))
        node.replace(wrapped)
        return wrapped

    def aggregate(self, node: exp.Expression) -> None:
        """An aggregate's argument (and FILTER condition) are row values: typed here, and their range kept."""
        outer, self.row_level = self.row_level, True
        try:
            filtered = node
            if isinstance(node, exp.Filter):
                self.condition(node.expression.this, "a FILTER condition")
                node = node.this
            arg = node.this
            if arg is None or isinstance(arg, exp.Star):
                return
            kind = self.kind(arg)
            self.ranges[node.this.sql("duckdb")] = kind
            unfiltered = unfilter(filtered).this  # the argument the split stage makes of it
            if unfiltered is not None:
                self.ranges[unfiltered.sql("duckdb")] = kind if kind.family != "null" else kind
        finally:
            self.row_level = outer

    # -- the kinds -----------------------------------------------------------------------------------

    def kind(self, node: exp.Expression) -> Kind:
        rule = _rule_for(type(node))
        if rule is None:
            raise PlanError(f"{node.key.upper()} has no known type", code="PLAN_EXPRESSION_NOT_ALLOWED")
        found = rule(self, node)
        if found.constant and next(node.find_all(exp.Column), None) is not None:
            found = replace(
                found, constant=False
            )  # a CASE over a column's condition is no constant, whatever it yields
        if found.constant and not isinstance(node, exp.Literal | exp.Null | exp.Boolean | exp.Paren):
            self.constants.append(node)  # evaluated at plan time: a constant must not fail only where rows reach it
        return found

    def _paren(self, node: exp.Paren) -> Kind:
        return self.kind(node.this)

    def _column(self, node: exp.Column) -> Kind:
        column = self.table.columns.get(node.name)
        if column is None and self.row_level:
            raise PlanError(
                f"{node.name!r} is not a column of the table: a select alias cannot be used inside WHERE or an "
                "aggregate",
                code="PLAN_EXPRESSION_NOT_ALLOWED",
                hint="repeat the expression instead of its alias",
            )
        return Kind("alias") if column is None else type_kind(column.type)

    def _literal(self, node: exp.Literal) -> Kind:
        if node.is_string:
            return Kind("text", constant=True)
        value = Fraction(node.this)
        scale = len(node.this.split(".")[1]) if "." in node.this else 0
        return Kind("dec" if scale else "int", scale, value, value, constant=True)

    def _null(self, node: exp.Null) -> Kind:
        return Kind("null", constant=True)

    def _boolean(self, node: exp.Boolean) -> Kind:
        return Kind("bool", constant=True)

    def _aggregate(self, node: exp.Expression) -> Kind:
        self.aggregate(node)
        return Kind("agg")

    # numbers

    def _negation(self, node: exp.Neg | exp.Abs) -> Kind:
        inner = self.kind(node.this)
        if inner.family in ("agg", "alias"):
            return Kind("agg")
        if inner.family not in NUMERIC and inner.family != "null":
            raise not_total(f"{node.key.upper()} of a non-number", "PLAN_TYPE_MIX")
        if inner.family not in EXACT:
            return inner  # DOUBLE (never fails) or NULL
        self.widen(node.this, inner)
        lo, hi = -inner.hi, -inner.lo  # type: ignore[operator]
        if isinstance(node, exp.Abs):
            lo, hi = Fraction(0), inner.magnitude
        return checked(replace(inner, lo=lo, hi=hi, wide=not inner.constant), "a negation or ABS")

    def _arithmetic(self, node: exp.Binary) -> Kind:
        left, right = self.kind(node.this), self.kind(node.expression)
        if "agg" in (left.family, right.family) or "alias" in (left.family, right.family):
            return Kind("agg")  # over aggregates: finished by the asker, after decryption
        for k in (left, right):
            if k.family not in (*NUMERIC, "null"):
                raise not_total(f"arithmetic on a {k.family} value", "PLAN_TYPE_MIX")
        if "null" in (left.family, right.family):
            return Kind("null", constant=left.constant and right.constant)
        if "double" in (left.family, right.family):
            return Kind("double", constant=left.constant and right.constant)
        self.widen(node.this, left)
        self.widen(node.expression, right)
        return arithmetic_kind(node, left, right)

    def _division(self, node: exp.Div) -> Kind:
        for side in (node.this, node.expression):
            if self.kind(side).family not in (*NUMERIC, "null", "agg", "alias"):
                raise not_total("a division of a non-number", "PLAN_TYPE_MIX")
        return Kind("double", constant=False)

    def _remainder(self, node: exp.Mod | exp.IntDiv) -> Kind:
        left = self.kind(node.this)
        if left.family in ("agg", "alias"):
            return Kind("agg")
        if left.family not in ("int", "null"):
            raise not_total("% or // of anything but an integer", "PLAN_TYPE_MIX")
        divisor = Fraction(int(node.expression.this))
        if left.lo is None:
            return left
        if isinstance(node, exp.Mod):
            return Kind("int", 0, -(divisor - 1), divisor - 1, constant=left.constant)
        return Kind("int", 0, left.lo / divisor - 1, left.hi / divisor + 1, constant=left.constant)  # type: ignore[operator]

    def _sign(self, node: exp.Sign) -> Kind:
        inner = self.kind(node.this)
        if inner.family not in (*NUMERIC, "null", "agg", "alias"):
            raise not_total("SIGN of a non-number", "PLAN_TYPE_MIX")
        return Kind("int", 0, Fraction(-1), Fraction(1), constant=inner.constant)

    # conditions

    def _and_or(self, node: exp.And | exp.Or) -> Kind:
        for operand in conjuncts(node):  # a long chain of conditions, walked as a list
            self.condition(operand, "AND/OR over a value")
        return Kind("bool")

    def _not(self, node: exp.Not) -> Kind:
        self.condition(node.this, "NOT of a value")
        return Kind("bool")

    def _comparison(self, node: exp.Binary) -> Kind:
        self.unify([node.this, node.expression], "a comparison")
        return Kind("bool")

    def _between(self, node: exp.Between) -> Kind:
        self.unify([node.this, node.args["low"], node.args["high"]], "BETWEEN")
        return Kind("bool")

    def _in(self, node: exp.In) -> Kind:
        self.unify([node.this, *node.expressions], "IN")
        return Kind("bool")

    def _is(self, node: exp.Is) -> Kind:  # IS NULL of anything; IS TRUE/FALSE of a boolean only (else a cast per row)
        inner = self.kind(node.this)
        if isinstance(node.expression, exp.Boolean) and inner.family not in ("bool", "null"):
            raise not_total(f"IS TRUE/FALSE of a {inner.family} value", "PLAN_TYPE_MIX")
        return Kind("bool")

    def _like(self, node: exp.Like | exp.ILike) -> Kind:
        if self.kind(node.this).family not in ("text", "null", "alias"):
            raise not_total("LIKE over a non-text value", "PLAN_TYPE_MIX")
        return Kind("bool")

    def _text_test(self, node: exp.StartsWith | exp.EndsWith | exp.Contains) -> Kind:
        for side in (node.this, node.expression):
            if self.kind(side).family not in ("text", "null", "alias"):
                raise not_total(f"{node.sql_name()} of a non-text value", "PLAN_TYPE_MIX")
        return Kind("bool")

    # choices

    def _case(self, node: exp.Case) -> Kind:
        case_operand: exp.Expression | None = node.args.get("this")
        values = []
        for branch in node.args.get("ifs") or []:
            if case_operand is not None:
                self.unify([case_operand, branch.this], "CASE x WHEN ...")
            else:
                self.condition(branch.this, "a WHEN condition")
            values.append(branch.args["true"])
        if node.args.get("default") is not None:
            values.append(node.args["default"])
        return self.unify(values, "the values of a CASE")

    def _if(self, node: exp.If) -> Kind:
        self.condition(node.this, "an IF condition")
        values = [v for v in (node.args.get("true"), node.args.get("false")) if v is not None]
        return self.unify(values, "the values of an IF")

    def _first_of(self, node: exp.Coalesce | exp.Greatest | exp.Least) -> Kind:
        return self.unify([node.this, *node.expressions], node.sql_name())

    def _nullif(self, node: exp.Nullif) -> Kind:  # compares both, and keeps the first's type (DuckDB's rule)
        self.unify([node.this, node.expression], "NULLIF")
        return self.kind(node.this)

    # casts

    def _try_cast(self, node: exp.TryCast) -> Kind:
        self.kind(node.this)
        target = type_kind(node.to.sql("duckdb"))
        return replace(target, constant=False)

    def _cast(self, node: exp.Cast) -> Kind:
        source = self.kind(node.this)
        to_sql = node.to.sql("duckdb")
        return cast_kind(source, type_kind(to_sql), to_sql)

    # dates and text

    def _date_part(self, date: exp.Expression) -> Kind:
        inner = self.kind(date)
        if inner.family not in ("date", "null", "alias"):
            raise not_total("a date part of a non-date", "PLAN_TYPE_MIX")
        return Kind("int", 0, Fraction(-(10**7)), Fraction(10**7), constant=inner.constant)

    def _date_function(self, node: exp.Func) -> Kind:
        return self._date_part(node.expression if isinstance(node, exp.Extract) else node.this)

    def _anonymous(self, node: exp.Anonymous) -> Kind:  # DATE_PART('part', d): the only anonymous function allowed
        return self._date_part(node.expressions[1])

    def _date_from_parts(self, node: exp.DateFromParts) -> Kind:
        return Kind("date", constant=True)  # constants only (the surface stage): fails at plan time if at all

    def _text_function(self, node: exp.Length | exp.Lower | exp.Upper | exp.Trim | exp.Substring) -> Kind:
        inner = self.kind(node.this)
        if inner.family not in ("text", "null", "alias"):
            raise not_total(f"{node.sql_name()} of a non-text value", "PLAN_TYPE_MIX")
        if isinstance(node, exp.Length):
            return Kind("int", 0, Fraction(0), Fraction(2**32), constant=inner.constant)
        return Kind("text", constant=inner.constant)

    def _concatenation(self, node: exp.DPipe | exp.Concat) -> Kind:
        parts = [node.this, node.expression] if isinstance(node, exp.DPipe) else list(node.expressions)
        kinds = [self.kind(p) for p in parts if p is not None]
        return Kind("text", constant=all(k.constant for k in kinds))


Rule = Callable[[Typer, Any], Kind]


def _rules(rule: Rule, *node_types: type[exp.Expression]) -> dict[type[exp.Expression], Rule]:
    return dict.fromkeys(node_types, rule)


# the kind of each allowed node type, by the most specific class a node is an instance of; any other has none
KIND_RULES: dict[type[exp.Expression], Rule] = {
    exp.Paren: Typer._paren,
    exp.Column: Typer._column,
    exp.Literal: Typer._literal,
    exp.Null: Typer._null,
    exp.Boolean: Typer._boolean,
    **_rules(Typer._aggregate, *AGGREGATES, exp.Filter),
    **_rules(Typer._negation, exp.Neg, exp.Abs),
    **_rules(Typer._arithmetic, exp.Add, exp.Sub, exp.Mul),
    exp.Div: Typer._division,
    **_rules(Typer._remainder, exp.Mod, exp.IntDiv),
    **_rules(Typer._and_or, exp.And, exp.Or),
    exp.Not: Typer._not,
    **_rules(Typer._comparison, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ),
    exp.Between: Typer._between,
    exp.In: Typer._in,
    exp.Is: Typer._is,
    **_rules(Typer._like, exp.Like, exp.ILike),
    exp.Case: Typer._case,
    exp.If: Typer._if,
    **_rules(Typer._first_of, exp.Coalesce, exp.Greatest, exp.Least),
    exp.Nullif: Typer._nullif,
    exp.TryCast: Typer._try_cast,
    exp.Cast: Typer._cast,
    **_rules(
        Typer._date_function, exp.Extract, exp.Year, exp.Quarter, exp.Month, exp.Day, exp.DayOfMonth, exp.DayOfWeek
    ),
    exp.Anonymous: Typer._anonymous,
    exp.DateFromParts: Typer._date_from_parts,
    exp.Sign: Typer._sign,
    **_rules(Typer._text_function, exp.Length, exp.Lower, exp.Upper, exp.Trim, exp.Substring),
    **_rules(Typer._concatenation, exp.DPipe, exp.Concat),
    **_rules(Typer._text_test, exp.StartsWith, exp.EndsWith, exp.Contains),
}


def _rule_for(node_type: type[exp.Expression]) -> Rule | None:
    return next((KIND_RULES[cls] for cls in node_type.__mro__ if cls in KIND_RULES), None)
