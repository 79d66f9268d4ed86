"""The SQL a node runs, written for the engine behind it: DuckDB as planned, or PostgreSQL exactly.

The planner writes every node query as DuckDB SQL (:meth:`federation.plan.Plan.node_sql`). A region whose rows
live in PostgreSQL runs the same query rendered by :func:`render_node_sql`: the DuckDB tree is parsed with
sqlglot and rewritten node by node, each kind by a rule of its own, so that PostgreSQL returns the same rows
with values of the same kinds. sqlglot's own translation is not trusted for any of it (it writes ``INT128``,
keeps ``>>`` on numbers PostgreSQL cannot shift, reads ``EXTRACT`` as NUMERIC and drops the collation of text
comparisons). A construct with no exact rule is refused, ``PLAN_BACKEND_UNSUPPORTED`` naming it, never run
approximately. Where a rule needs the type of an operand (text ordering, casts to and from BOOLEAN, text forms
of a value), the table's column types say it; an operand of unknown type there is refused too.

>>> render_node_sql("SELECT YEAR(month) AS k0, COUNT(*) AS c0_0 FROM t GROUP BY k0", "postgres")
'SELECT CAST(EXTRACT(YEAR FROM "month") AS BIGINT) AS "k0", COUNT(*) AS "c0_0" FROM "t" GROUP BY "k0"'
>>> render_node_sql("SELECT SUM((CAST((x) AS HUGEINT) & 4294967295)) AS c FROM t", "postgres")
'SELECT SUM((MOD(MOD(CAST(("x") AS DECIMAL(39, 0)), 4294967296) + 4294967296, 4294967296))) AS "c" FROM "t"'
>>> render_node_sql("SELECT COUNT(*) AS c FROM t WHERE city < '33'", "postgres", {"city": "VARCHAR"})
'SELECT COUNT(*) AS "c" FROM "t" WHERE "city" COLLATE "C" < \\'33\\''
>>> try:
...     render_node_sql("SELECT COUNT(*) AS c FROM t WHERE TRY_CAST(city AS INTEGER) = 1", "postgres")
... except Exception as err:
...     print(err.code, err.message)
PLAN_BACKEND_UNSUPPORTED TRY_CAST(x AS t) cannot run exactly on postgres
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import cast

import sqlglot
from sqlglot import exp

from hpf.federation.catalog import Catalog
from hpf.federation.errors import PlanError
from hpf.federation.plan import Plan
from hpf.federation.planner.pg_types import TRIMS, UNICODE_SPACES, Family, family, pg_type
from hpf.federation.privacy.dp_plan import capped_table_sql, dp_plan

BACKENDS = ("duckdb", "postgres", "spark")  # the engines a region's rows may live in


def unsupported(construct: str, backend: str = "postgres") -> PlanError:
    return PlanError(
        f"{construct} cannot run exactly on {backend}",
        code="PLAN_BACKEND_UNSUPPORTED",
        hint="ask without it, or leave out the regions whose rows live in that engine",
    )


def render_node_sql(
    sql: str, backend: str, columns: Mapping[str, str] | None = None, scales: Mapping[str, int] | None = None
) -> str:
    """``sql`` (a node query as the planner writes it, DuckDB SQL) as ``backend`` runs it, with the same answer.

    ``columns`` maps the table's column names to their catalog types; a rule that needs an operand's type
    refuses the query without them. ``scales`` maps the output columns that are DECIMAL sums to their scale
    (:func:`plan_node_sql` gives them): PostgreSQL keeps each NUMERIC value's own number of decimals, so a sum
    of ``CASE ... THEN 2 ELSE 0.5 END`` over rows that all take 2 comes back as ``6``, where DuckDB's DECIMAL
    gives ``6.0``; a node reads an integer as a sum already in units of its scale, so such a sum gets its scale
    back by adding a zero of that many decimals (exact: a NUMERIC sum's decimals are the most of its operands').

    >>> render_node_sql("SELECT SUM(x) AS c1_0 FROM t", "postgres", {"x": "DECIMAL(12,2)"}, {"c1_0": 2})
    'SELECT SUM("x") + 0.00 AS "c1_0" FROM "t"'
    """
    if backend == "duckdb":
        return sql
    if backend not in BACKENDS:
        raise unsupported("a node query", backend)
    if backend == "spark":
        from hpf.federation.planner.spark_dialect import render_spark  # it builds on unsupported, above

        return render_spark(sql, columns)
    tree = cast(exp.Expression, sqlglot.parse_one(sql, read="duckdb"))
    return _Postgres(dict(columns or {}), dict(scales or {})).render(tree).sql("postgres", identify=True)


Rendered = dict[str, str]  # node queries as a backend runs them, by the planner's (DuckDB) query


def plan_node_sql(
    plan: Plan, catalog: Catalog, backend: str, source: str | None = None, rendered: Rendered | None = None
) -> str:
    """The query a region on ``backend`` runs for ``plan`` (over ``source``, as :meth:`Plan.node_sql`), with the
    column types of the plan's table from ``catalog``; raises ``PLAN_BACKEND_UNSUPPORTED`` where it cannot.

    ``rendered`` keeps what was rendered for one question, so that its admission renders its queries and its
    run finds them there, never parsing and rendering the same query twice.

    >>> from hpf.federation.catalog import Table
    >>> from hpf.federation.plan import Component
    >>> table = Table.model_validate({"columns": {"city": {"type": "VARCHAR", "class": "public"}}})
    >>> catalog = Catalog.model_construct(tables={"t": table})
    >>> plan = Plan("t", "city >= '3'", (), (Component("count", None),), (), "", (), ())
    >>> plan_node_sql(plan, catalog, "postgres")
    'SELECT COUNT(*) AS "c0_0" FROM "t" WHERE "city" COLLATE "C" >= \\'3\\''
    """
    sql = plan.node_sql(source)
    if rendered is not None and sql in rendered:
        return rendered[sql]
    columns = {name: column.type for name, column in catalog.tables[plan.table].columns.items()}
    scales = {f"c{i}_0": c.scale for i, c in enumerate(plan.components) if c.kind == "sum" and c.scale > 0}
    node_sql = render_node_sql(sql, backend, columns, scales)
    if rendered is not None:
        rendered[sql] = node_sql
    return node_sql


def check_backend(
    plan: Plan, catalog: Catalog, backend: str, *, dp: bool = False, rendered: Rendered | None = None
) -> None:
    """Refuse ``plan`` at plan time for a region on ``backend`` (``PLAN_BACKEND_UNSUPPORTED``, naming the
    construct) unless its node query, and for a table that declares a contribution bound its query over the
    row-capped source, render exactly there. Under ``dp`` that query is the clamped plan's, the one a DP answer
    runs (:func:`dp_plan`; the plan's own when the plan cannot be clamped, which its DP terms refuse later).
    What is rendered is kept in ``rendered``, for the question's run."""
    plan_node_sql(plan, catalog, backend, rendered=rendered)
    table = catalog.tables[plan.table]
    if table.contribution is not None:
        capped, source = plan, f"({capped_table_sql(plan.table, table)}) AS {plan.table}"
        if dp:
            with contextlib.suppress(PlanError):  # DP_UNBOUNDED
                capped, source = dp_plan(plan, catalog)
        plan_node_sql(capped, catalog, backend, source, rendered)


def pg_value(text: str) -> int | Decimal:
    """A PostgreSQL NUMERIC's text as the value DuckDB gives for the same column: ``int`` without a fraction
    (HUGEINT sums, integer parts), ``Decimal`` with one (DECIMAL sums keep their scale).

    A node reading PostgreSQL loads NUMERIC with it (a psycopg text loader), so that its rows are DuckDB's.

    >>> pg_value("-170141183460469231731687303715884105728"), pg_value("12.50")
    (-170141183460469231731687303715884105728, Decimal('12.50'))
    """
    if "." in text or not text.lstrip("-").isdigit():
        return Decimal(text)
    return int(text)


_TEXT_ORDERED = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.Greatest, exp.Least)
_SHIFT_MASK = 4294967295  # the low-limb mask of Component.sql_terms
_AS_IS: tuple[type[exp.Expression], ...] = (
    exp.Select, exp.From, exp.Table, exp.TableAlias, exp.Where, exp.Group, exp.Alias, exp.Identifier, exp.Column,
    exp.Literal, exp.Null, exp.Boolean, exp.Paren, exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.NullSafeEQ,
    exp.NullSafeNEQ, exp.In, exp.Is, exp.Add, exp.Sub, exp.Mul, exp.Neg, exp.Mod, exp.Case, exp.If, exp.Count,
    exp.Sum, exp.Star, exp.Abs, exp.Coalesce, exp.Nullif, exp.Length, exp.Trim, exp.DateFromParts,
    exp.StartsWith, exp.Var,
    exp.DataType, exp.DataTypeParam, exp.Anonymous, exp.Extract, exp.Year, exp.Quarter, exp.Month, exp.Day,
    exp.DayOfMonth, exp.DayOfWeek, exp.Cast, exp.Like, exp.Substring, exp.DPipe, exp.Concat, exp.EndsWith,
    exp.Contains, exp.Sign, exp.IntDiv, exp.BitwiseRightShift, exp.BitwiseAnd,
    exp.Subquery, exp.Qualify, exp.Window, exp.RowNumber, exp.Order, exp.Ordered,  # the DP source's row cap
    *_TEXT_ORDERED,
)  # fmt: skip
# the kinds with no exact PostgreSQL form, and why (surface.py's postgres column says the same)
REFUSED: dict[type[exp.Expression], str] = {
    exp.TryCast: "TRY_CAST(x AS t)",
    exp.Div: "/ (PostgreSQL fails on a division by zero, DuckDB gives infinity)",
    exp.Lower: "LOWER (case mapping follows the database's locale)",
    exp.Upper: "UPPER (case mapping follows the database's locale)",
    exp.ILike: "ILIKE (case folding follows the database's locale)",
}
_PARTS: dict[type[exp.Expression], str] = {
    exp.Year: "YEAR",
    exp.Quarter: "QUARTER",
    exp.Month: "MONTH",
    exp.Day: "DAY",
    exp.DayOfMonth: "DAY",
}
_PART_NAMES = {"yyyy": "YEAR", "mon": "MONTH", "dayofmonth": "DAY", "dayofweek": "DOW"}


class _Postgres:
    """One rendering: the rules by node kind, over the table's column types."""

    def __init__(self, columns: dict[str, str], scales: dict[str, int] | None = None) -> None:
        self.columns = columns
        self.scales = scales or {}
        self.rules: dict[type[exp.Expression], Callable[[exp.Expression], exp.Expression]] = {
            exp.Cast: self._cast,
            exp.DataType: self._data_type,
            exp.Extract: self._extract,
            exp.Anonymous: self._anonymous,
            exp.DayOfWeek: lambda n: _part("DOW", n.this),
            exp.BitwiseRightShift: self._shift,
            exp.BitwiseAnd: self._mask,
            exp.Like: self._like,
            exp.Substring: self._substring,
            exp.DPipe: self._concat,
            exp.Concat: self._concat,
            exp.EndsWith: lambda n: exp.EQ(
                this=_fn("RIGHT", n.this, _fn("LENGTH", n.expression)), expression=n.expression
            ),
            exp.Contains: lambda n: exp.GT(this=_fn("STRPOS", n.this, n.expression), expression=exp.Literal.number(0)),
            exp.Sign: self._sign,
            exp.Select: self._select,
            exp.Ordered: self._ordered,
            exp.DateFromParts: lambda n: _fn("MAKE_DATE", n.args["year"], n.args["month"], n.args["day"]),
            exp.IntDiv: lambda n: _fn("DIV", n.this, n.expression),
            exp.Trim: self._trim,
            **{kind: lambda n: _part(_PARTS[type(n)], n.this) for kind in _PARTS},
            **{kind: self._text_ordered for kind in _TEXT_ORDERED},
        }

    def family(self, node: exp.Expression) -> Family:
        return family(node, self.columns)

    def render(self, node: exp.Expression) -> exp.Expression:
        """``node`` with its children rendered first, then its own rule (children first: a rule reads the
        operand types from the DuckDB tree it keeps, see :meth:`_kept`)."""
        kind = type(node)
        if kind in REFUSED:
            raise unsupported(REFUSED[kind])
        if kind not in _AS_IS:
            raise unsupported(kind.__name__.upper())
        rule = self.rules.get(kind)
        original = node
        node = node.copy()
        for key, value in list(original.args.items()):
            if isinstance(value, exp.Expression):
                node.set(key, self.render(value))
            elif isinstance(value, list):
                node.set(key, [self.render(v) if isinstance(v, exp.Expression) else v for v in value])
        if rule is None:
            return node
        node.meta["duckdb"] = original
        return rule(node)

    def _kept(self, node: exp.Expression, key: str) -> exp.Expression:
        """The DuckDB form of ``node``'s argument ``key``, for its type."""
        original = node.meta["duckdb"]
        value = original.args.get(key)
        assert isinstance(value, exp.Expression)
        return value

    def _trim(self, node: exp.Expression) -> exp.Expression:
        """TRIM, LTRIM, RTRIM of the spaces DuckDB removes, Unicode's (TRIM with characters of its own is
        refused by the allow-list)."""
        if node.args.get("expression") is not None or node.args.get("position") not in TRIMS:
            raise unsupported("TRIM(x, characters)")
        return _fn(TRIMS[node.args.get("position")], node.this, exp.Literal.string(UNICODE_SPACES))

    def _data_type(self, node: exp.Expression) -> exp.Expression:
        return pg_type(node, unsupported)

    def _cast(self, node: exp.Expression) -> exp.Expression:
        source = self.family(self._kept(node, "this"))
        target = cast(exp.Cast, node.meta["duckdb"]).to
        if target.is_type(*exp.DataType.TEXT_TYPES):
            if source == "float":
                raise unsupported("a DOUBLE written as text (the two engines print it differently)")
            if source == "unknown":
                raise unsupported("a cast to text of a value of unknown type")
        if target.is_type(*exp.DataType.TEXT_TYPES) and source == "date":
            return _date_text(node.this)
        if target.is_type(exp.DataType.Type.BOOLEAN) and source == "number":
            return exp.Paren(this=exp.NEQ(this=node.this, expression=exp.Literal.number(0)))
        if source == "bool" and not target.is_type(exp.DataType.Type.BOOLEAN, *exp.DataType.TEXT_TYPES):
            return exp.Cast(this=exp.Cast(this=node.this, to=exp.DataType.build("INTEGER")), to=node.args["to"])
        return node

    def _extract(self, node: exp.Expression) -> exp.Expression:
        name = node.this.name.lower()
        return _part(_PART_NAMES.get(name, name.upper()), node.expression)

    def _anonymous(self, node: exp.Expression) -> exp.Expression:
        args = node.expressions
        if str(node.this).lower() == "date_part" and len(args) == 2 and args[0].is_string:
            name = args[0].name.lower()
            return _part(_PART_NAMES.get(name, name.upper()), args[1])
        raise unsupported(f"function {str(node.this).upper()}(...)")

    def _shift(self, node: exp.Expression) -> exp.Expression:
        """``x >> 32`` of Component.sql_terms: the floor of x / 2^32, exact on NUMERIC (DIV truncates)."""
        if node.expression.sql() != "32":
            raise unsupported(">> by anything but 32")
        low = self._mask(exp.BitwiseAnd(this=node.this, expression=exp.Literal.number(_SHIFT_MASK)))
        return _fn("DIV", exp.Sub(this=node.this, expression=low), exp.Literal.number(_SHIFT_MASK + 1))

    def _mask(self, node: exp.Expression) -> exp.Expression:
        """``x & 4294967295``: x modulo 2^32 taken non-negative, as two's complement gives it."""
        if node.expression.sql() != str(_SHIFT_MASK):
            raise unsupported("& by anything but 4294967295")
        m = exp.Literal.number(_SHIFT_MASK + 1)
        return _fn("MOD", exp.Add(this=_fn("MOD", node.this, m), expression=m.copy()), m.copy())

    def _like(self, node: exp.Expression) -> exp.Expression:
        """LIKE without an escape character, as DuckDB reads it (PostgreSQL's default escape is a backslash)."""
        return exp.Escape(this=node, expression=exp.Literal.string(""))

    def _substring(self, node: exp.Expression) -> exp.Expression:
        for key in ("start", "length"):
            bound = node.args.get(key)
            if bound is not None and not (isinstance(bound, exp.Literal) and int(bound.this) >= (key == "start")):
                raise unsupported("SUBSTRING with a start before 1 or a negative length")
        return node

    def _concat(self, node: exp.Expression) -> exp.Expression:
        """Each operand as text first, as DuckDB writes it (PostgreSQL writes a boolean as ``t``)."""
        kept = [self._kept(node, "this"), self._kept(node, "expression")] if isinstance(node, exp.DPipe) else []
        parts = [node.this, node.expression] if kept else node.expressions
        kept = kept or list(node.meta["duckdb"].expressions)
        texts = [self._as_text(part, self.family(k)) for part, k in zip(parts, kept, strict=True)]
        if isinstance(node, exp.DPipe):
            return exp.DPipe(this=texts[0], expression=texts[1], safe=node.args.get("safe"))
        return _fn("CONCAT", *texts)  # PostgreSQL's CONCAT skips NULLs, as DuckDB's (sqlglot would write ||)

    def _as_text(self, part: exp.Expression, fam: Family) -> exp.Expression:
        if fam in ("text", "null"):
            return part
        if fam in ("float", "unknown"):
            raise unsupported(f"a {'DOUBLE' if fam == 'float' else 'value of unknown type'} joined into text")
        return _date_text(part) if fam == "date" else exp.Cast(this=part, to=exp.DataType.build("TEXT"))

    def _sign(self, node: exp.Expression) -> exp.Expression:
        if self.family(self._kept(node, "this")) != "number":
            raise unsupported("SIGN of anything but an exact number")
        x = node.this
        gt, lt = (
            exp.GT(this=x, expression=exp.Literal.number(0)),
            exp.LT(this=x.copy(), expression=exp.Literal.number(0)),
        )
        return exp.Case(
            ifs=[exp.If(this=gt, true=exp.Literal.number(1)), exp.If(this=lt, true=exp.Literal.number(-1))],
            default=exp.Case(
                ifs=[exp.If(this=exp.Is(this=x.copy(), expression=exp.Null()), true=exp.Null())],
                default=exp.Literal.number(0),
            ),
        )

    def _text_ordered(self, node: exp.Expression) -> exp.Expression:
        """An ordering of text compares code points, as DuckDB does: COLLATE "C" on the first operand."""
        fam = self.family(self._kept(node, "this"))
        if fam == "unknown":
            raise unsupported(f"{node.key.upper()} of operands of unknown type")
        if fam == "text":
            node.set("this", _collate_c(node.this))
        return node

    def _ordered(self, node: exp.Expression) -> exp.Expression:
        """An ORDER BY item of the DP source's row cap: text by code point, NULLs last both ways (DuckDB's
        default; PostgreSQL puts them first in a descending order)."""
        fam = self.family(self._kept(node, "this"))
        if fam in ("unknown", "null"):
            raise unsupported("ORDER BY a value of unknown type")
        if fam == "text":
            node.set("this", _collate_c(node.this))
        node.set("nulls_first", False)
        return node

    def _select(self, node: exp.Expression) -> exp.Expression:
        """A SELECT as is; the DP source's ``SELECT * ... QUALIFY ROW_NUMBER() OVER (...) <= n`` as a ranked
        subquery (PostgreSQL has no QUALIFY), its columns named so the rank is not one of them. A DECIMAL sum
        among its columns keeps its scale (see :func:`render_node_sql`)."""
        for item in node.expressions:
            scale = self.scales.get(item.alias) if isinstance(item, exp.Alias) else None
            if scale:
                item.set("this", exp.Add(this=item.this, expression=exp.Literal.number("0." + "0" * scale)))
        qualify = node.args.get("qualify")
        if qualify is None:
            return node
        cap = qualify.this
        if not (isinstance(cap, exp.LTE) and isinstance(cap.this, exp.Window) and self.columns):
            raise unsupported("QUALIFY but for the row cap of a table with known columns")
        rank = exp.to_identifier("__hpf_row", quoted=True)
        inner = node.copy()
        inner.set("qualify", None)
        inner.set("expressions", [exp.Star(), exp.Alias(this=cap.this, alias=rank)])
        ranked = exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier("__hpf_ranked", quoted=True)))
        outer = exp.Select(expressions=[exp.column(c, quoted=True) for c in self.columns])
        outer.set("from_", exp.From(this=ranked))
        return outer.where(exp.LTE(this=exp.column(rank), expression=cap.expression))


def _date_text(date: exp.Expression) -> exp.Expression:
    """A DATE as DuckDB writes it (ISO), whatever the session's DateStyle."""
    return _fn("TO_CHAR", date, exp.Literal.string("YYYY-MM-DD"))


def _collate_c(node: exp.Expression) -> exp.Expression:
    return exp.Collate(this=node, expression=exp.Identifier(this="C", quoted=True))


def _fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _part(part: str, date: exp.Expression) -> exp.Expression:
    """A date part as BIGINT, as DuckDB gives it (PostgreSQL's EXTRACT is NUMERIC)."""
    if part not in ("YEAR", "QUARTER", "MONTH", "DAY", "DOW", "ISODOW"):
        raise unsupported(f"the date part {part}")
    extract = exp.Extract(this=exp.var(part), expression=date)
    return exp.Cast(this=extract, to=exp.DataType.build("BIGINT"))
