"""The node SQL rendered for Spark SQL, exactly: the same rows, values of the same kinds, or a refusal.

The planner writes every node query as DuckDB SQL. A region whose rows live behind Spark runs it rendered by
:func:`render_spark`: the DuckDB tree is parsed with sqlglot and rewritten node by node, each kind by a rule of
its own, and an allow-list of kinds refuses the rest (``PLAN_BACKEND_UNSUPPORTED`` naming the construct). Where a
rule needs the type of an operand, DuckDB itself says it: the operands are described (``DESCRIBE``) over an empty
table of the catalog's column types, so no type is guessed. sqlglot's own translation is trusted for nothing
semantic; it only prints the rewritten tree.

What differs, and how each is kept exact (under :data:`SPARK_SESSION_CONF`):

- 128 bits: Spark has no HUGEINT; it becomes DECIMAL(38,0), whose arithmetic is exact and fails (ANSI mode)
  past 38 digits where DuckDB would go on to 39: a failure, never a different answer. ``x >> 32`` and
  ``x & 4294967295`` (the limbs of a sum of squares) are floor division and a non-negative remainder (PMOD).
- SUM: Spark sums an integer in BIGINT (failing past 2^63) and a DECIMAL(p,s) in DECIMAL(p+10,s); DuckDB in
  HUGEINT and DECIMAL(38,s). Each SUM's argument is cast to DECIMAL(38,s) first; a reader turns a DECIMAL of
  scale 0 back into ``int`` (:func:`~federation.planner.spark_types.spark_value`), so an answer holding
  DuckDB's own DECIMAL(p,0) is refused.
- casts: Spark truncates a DECIMAL cast to an integer, DuckDB rounds half away from zero: through DECIMAL(38,0)
  (which rounds as DuckDB). Text is cast to a number or a date only as a literal of a plain form; a DOUBLE is
  never cast to an exact type or to text, nor a DECIMAL or HUGEINT to DOUBLE (rounded differently).
- ``a // b`` is ``a DIV b`` (both truncate); ``/`` of integers is a division of DOUBLEs with DuckDB's infinities
  and NaN for a zero divisor (Spark fails or gives NULL); ``/`` of anything else is refused.
- LIKE: Spark's default escape is a backslash, DuckDB has none: an explicit ESCAPE of a character the (constant)
  pattern does not hold. LOWER, UPPER and ILIKE are refused (Java maps ß to SS, DuckDB keeps one character).
- dates: DAYOFWEEK/``dow`` is Spark's DAYOFWEEK - 1 (Spark counts Sunday as 1), ``isodow`` WEEKDAY + 1; every
  part is cast to BIGINT, DuckDB's type for it.
- CONCAT skips NULLs in DuckDB and gives NULL in Spark: CONCAT_WS(''); each operand is cast to text first.
- TRIM: DuckDB strips every Unicode space separator, Spark only U+0020: TRIM(BOTH <them all> FROM x).
- SIGN is DOUBLE in Spark: a CASE. SUBSTRING only from a start of at least 1 (DuckDB counts 0 differently).
- the DP row cap's QUALIFY becomes a ranked subquery; its ORDER BY puts NULLs last both ways, as DuckDB.
- text is compared by code point in both (Spark's UTF8_BINARY collation, set for the session).

>>> render_spark("SELECT YEAR(month) AS k0, COUNT(*) AS c0_0 FROM t GROUP BY k0", {"month": "DATE"})
'SELECT CAST(YEAR(`month`) AS BIGINT) AS `k0`, COUNT(*) AS `c0_0` FROM `t` GROUP BY `k0`'
>>> render_spark("SELECT SUM(x) AS c FROM t", {"x": "BIGINT"})
'SELECT SUM(CAST(`x` AS DECIMAL(38, 0))) AS `c` FROM `t`'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import cast

import sqlglot
from sqlglot import exp

from hpf.federation.errors import PlanError
from hpf.federation.planner.dialects import unsupported
from hpf.federation.planner.spark_types import DuckTypes, duckdb_types, spark_type

# what the rendering assumes of the Spark session; a Spark backend applies every one before its first query
SPARK_SESSION_CONF: dict[str, str] = {
    "spark.sql.ansi.enabled": "true",  # overflow and invalid casts fail, never wrap or give NULL
    "spark.sql.ansi.enforceReservedKeywords": "true",  # else FROM t WHERE (c) reads WHERE as t's alias
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.decimalOperations.allowPrecisionLoss": "true",  # the default; exact for scales up to 6
    "spark.sql.session.collation.default": "UTF8_BINARY",  # text ordered by code point, as DuckDB
    "spark.sql.parser.escapedStringLiterals": "false",  # a backslash escapes in a literal (sqlglot writes it so)
}
_MAX_SCALE = 6  # Spark keeps a DECIMAL result's scale exactly up to 6 digits (allowPrecisionLoss)


def _unsupported(construct: str) -> PlanError:
    return unsupported(construct, "spark")


def render_spark(sql: str, columns: Mapping[str, str] | None = None) -> str:
    """``sql`` (a node query as the planner writes it, DuckDB SQL) as Spark SQL with the same answer, read
    through :func:`~federation.planner.spark_types.spark_value`; ``columns`` maps the table's column names to
    their catalog types."""
    tree = cast(exp.Expression, sqlglot.parse_one(sql, read="duckdb"))
    types = duckdb_types(tree, dict(columns or {}), _unsupported)
    for name, kind in types.answer:
        if kind.this == exp.DataType.Type.DECIMAL and _scale(kind) == 0:
            raise _unsupported(f"a DECIMAL of scale 0 in the answer ({name})")
    return _Spark(dict(columns or {}), types).render(tree).sql("spark", identify=True)


_T = exp.DataType.Type
_INTEGERS = {_T.TINYINT, _T.SMALLINT, _T.INT, _T.BIGINT, _T.INT128}
_SMALL_INTEGERS = _INTEGERS - {_T.INT128}
_DECIMAL_TEXT = re.compile(r"-?[0-9]{1,38}(\.[0-9]{1,38})?")
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SHIFT_MASK = 4294967295  # the low-limb mask of Component.sql_terms
_ESCAPES = "!#~^|@&$"  # a LIKE's ESCAPE character: the first its pattern does not hold
_TEXT_ORDERED = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.Greatest, exp.Least)
AS_IS: tuple[type[exp.Expression], ...] = (
    exp.Select, exp.From, exp.Table, exp.TableAlias, exp.Where, exp.Group, exp.Alias, exp.Identifier, exp.Column,
    exp.Literal, exp.Null, exp.Boolean, exp.Paren, exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.NullSafeEQ,
    exp.NullSafeNEQ, exp.In, exp.Is, exp.Add, exp.Sub, exp.Mul, exp.Neg, exp.Mod, exp.Case, exp.If, exp.Count,
    exp.Sum, exp.Star, exp.Abs, exp.Coalesce, exp.Nullif, exp.Length, exp.Trim, exp.DateFromParts,
    exp.StartsWith, exp.Var, exp.Div,
    exp.DataType, exp.DataTypeParam, exp.Anonymous, exp.Extract, exp.Year, exp.Quarter, exp.Month, exp.Day,
    exp.DayOfMonth, exp.DayOfWeek, exp.Cast, exp.Like, exp.Substring, exp.DPipe, exp.Concat, exp.EndsWith,
    exp.Contains, exp.Sign, exp.IntDiv, exp.BitwiseRightShift, exp.BitwiseAnd,
    exp.Subquery, exp.Qualify, exp.Window, exp.RowNumber, exp.Order, exp.Ordered,  # the DP source's row cap
    *_TEXT_ORDERED,
)  # fmt: skip
# the kinds with no exact Spark form, and why (the allow-list's spark column says the same)
REFUSED: dict[type[exp.Expression], str] = {
    exp.TryCast: "TRY_CAST(x AS t)",
    exp.Lower: "LOWER (Spark maps case by Java's rules, DuckDB by its own)",
    exp.Upper: "UPPER (Spark maps case by Java's rules, DuckDB by its own)",
    exp.ILike: "ILIKE (Spark folds case by Java's rules, DuckDB by its own)",
}
_PARTS: dict[type[exp.Expression], str] = {
    exp.Year: "YEAR",
    exp.Quarter: "QUARTER",
    exp.Month: "MONTH",
    exp.Day: "DAY",
    exp.DayOfMonth: "DAY",
}
_PART_NAMES = {"yyyy": "YEAR", "mon": "MONTH", "dayofmonth": "DAY", "dayofweek": "DOW"}


def _scale(kind: exp.DataType) -> int:
    params = kind.expressions
    return int(params[1].name) if len(params) > 1 else 0


class _Spark:
    """One rendering: the rules by node kind, over DuckDB's types of the operands they need."""

    def __init__(self, columns: dict[str, str], types: DuckTypes) -> None:
        self.columns = columns
        self.types = types
        self.rules: dict[type[exp.Expression], Callable[[exp.Expression], exp.Expression]] = {
            exp.Cast: self._cast,
            exp.DataType: lambda n: spark_type(n, _unsupported),
            exp.Extract: lambda n: _part(n.this.name, n.expression),
            exp.Anonymous: self._anonymous,
            exp.DayOfWeek: lambda n: _part("DOW", n.this),
            exp.BitwiseRightShift: self._shift,
            exp.BitwiseAnd: self._mask,
            exp.Like: self._like,
            exp.Substring: self._substring,
            exp.DPipe: self._concat,
            exp.Concat: self._concat,
            exp.StartsWith: lambda n: _fn("STARTSWITH", n.this, n.expression),
            exp.EndsWith: lambda n: _fn("ENDSWITH", n.this, n.expression),
            exp.Contains: lambda n: _fn("CONTAINS", n.this, n.expression),
            exp.Sign: self._sign,
            exp.Trim: _trim,
            exp.Sum: self._sum,
            exp.Add: self._decimal_scale,
            exp.Sub: self._decimal_scale,
            exp.Mul: self._decimal_scale,
            exp.Div: self._divide,
            exp.IntDiv: self._int_divide,
            exp.Select: self._select,
            exp.Ordered: self._ordered,
            exp.DateFromParts: lambda n: _fn("MAKE_DATE", n.args["year"], n.args["month"], n.args["day"]),
            **{kind: lambda n: _part(_PARTS[type(n)], n.this) for kind in _PARTS},
        }

    def render(self, node: exp.Expression) -> exp.Expression:
        """``node`` with its children rendered first, then its own rule (which reads DuckDB's types of the
        original operands, kept in ``meta``)."""
        kind = type(node)
        if kind in REFUSED:
            raise _unsupported(REFUSED[kind])
        if kind not in AS_IS:
            raise _unsupported(kind.__name__.upper())
        original = node
        node = node.copy()
        for key, value in list(original.args.items()):
            if isinstance(value, exp.Expression):
                node.set(key, self.render(value))
            elif isinstance(value, list):
                node.set(key, [self.render(v) if isinstance(v, exp.Expression) else v for v in value])
        rule = self.rules.get(kind)
        if rule is None:
            return node
        node.meta["duckdb"] = original
        return rule(node)

    def type_of(self, node: exp.Expression, key: str = "this") -> exp.DataType:
        """DuckDB's type of the original operand ``key`` of the rendered ``node`` (or of the node itself)."""
        original = node.meta["duckdb"]
        operand = original if key == "" else original.args.get(key)
        assert isinstance(operand, exp.Expression)
        return self.types.of(operand)

    def _cast(self, node: exp.Expression) -> exp.Expression:
        source, target = self.type_of(node), cast(exp.Cast, node.meta["duckdb"]).to
        x, to = node.this, node.args["to"]
        if source.this == _T.NULL or source == target:
            return node
        if source.this == _T.BOOLEAN and target.this not in (_T.BOOLEAN, *exp.DataType.TEXT_TYPES):
            return exp.Cast(this=exp.Cast(this=x, to=exp.DataType.build("INT")), to=to)
        if source.is_type(*exp.DataType.TEXT_TYPES):
            return self._cast_text(node, target)
        if source.this in (_T.DOUBLE, _T.FLOAT):
            raise _unsupported("a cast of a DOUBLE but to DOUBLE (rounded differently)")
        if target.is_type(*exp.DataType.TEXT_TYPES) or target.this == _T.DATE and source.this == _T.DATE:
            return node
        if target.this == _T.BOOLEAN and source.this in (*_INTEGERS, _T.DECIMAL):
            return exp.Paren(this=exp.NEQ(this=x, expression=exp.Literal.number(0)))
        if target.this == _T.DOUBLE and source.this in _SMALL_INTEGERS:
            return node
        if target.this in _INTEGERS and source.this == _T.DECIMAL:  # round half away from zero, as DuckDB
            return exp.Cast(this=exp.Cast(this=x, to=exp.DataType.build("DECIMAL(38, 0)")), to=to)
        if target.this in (*_INTEGERS, _T.DECIMAL) and source.this in (*_INTEGERS, _T.DECIMAL):
            return node
        raise _unsupported(f"a cast from {source.this.name} to {target.this.name}")

    def _cast_text(self, node: exp.Expression, target: exp.DataType) -> exp.Expression:
        """Text to another type: only a literal of the plain form both engines read alike."""
        literal = node.this
        text = literal.name if isinstance(literal, exp.Literal) and literal.is_string else None
        if target.is_type(*exp.DataType.TEXT_TYPES):
            return node
        if text is not None and target.this == _T.DATE and _DATE_TEXT.fullmatch(text):
            return node
        plain = text is not None and _DECIMAL_TEXT.fullmatch(text) is not None
        if plain and (target.this == _T.DECIMAL or target.this in _INTEGERS and "." not in str(text)):
            return node
        raise _unsupported(f"a cast of text to {target.this.name} but of a plain literal")

    def _anonymous(self, node: exp.Expression) -> exp.Expression:
        args = node.expressions
        if str(node.this).lower() == "date_part" and len(args) == 2 and args[0].is_string:
            return _part(args[0].name, args[1])
        raise _unsupported(f"function {str(node.this).upper()}(...)")

    def _shift(self, node: exp.Expression) -> exp.Expression:
        """``x >> 32`` of Component.sql_terms: (x - PMOD(x, 2^32)) / 2^32, an exact quotient of DECIMALs."""
        if node.expression.sql() != "32":
            raise _unsupported(">> by anything but 32")
        x = _wide(node.this)
        m = exp.Literal.number(_SHIFT_MASK + 1)
        whole = exp.Sub(this=x, expression=_fn("PMOD", x.copy(), m))
        return _wide(exp.Div(this=exp.Paren(this=whole), expression=m.copy()))

    def _mask(self, node: exp.Expression) -> exp.Expression:
        """``x & 4294967295``: x modulo 2^32 taken non-negative, as two's complement gives it."""
        if node.expression.sql() != str(_SHIFT_MASK):
            raise _unsupported("& by anything but 4294967295")
        return _wide(_fn("PMOD", _wide(node.this), exp.Literal.number(_SHIFT_MASK + 1)))

    def _like(self, node: exp.Expression) -> exp.Expression:
        """LIKE without an escape character, as DuckDB reads it: ESCAPE a character the pattern lacks."""
        pattern = node.expression
        if not (isinstance(pattern, exp.Literal) and pattern.is_string):
            raise _unsupported("LIKE but with a constant pattern")
        escape = next((c for c in _ESCAPES if c not in pattern.name), None)
        if escape is None:
            raise _unsupported("LIKE with a pattern holding every escape character")
        return exp.Escape(this=node, expression=exp.Literal.string(escape))

    def _substring(self, node: exp.Expression) -> exp.Expression:
        for key in ("start", "length"):
            bound = node.args.get(key)
            if bound is not None and not (isinstance(bound, exp.Literal) and int(bound.this) >= (key == "start")):
                raise _unsupported("SUBSTRING with a start before 1 or a negative length")
        return node

    def _concat(self, node: exp.Expression) -> exp.Expression:
        """Each operand as text first, as DuckDB writes it; CONCAT skipping NULLs (CONCAT_WS)."""
        original = node.meta["duckdb"]
        pairs = (
            [(node.this, original.this), (node.expression, original.expression)]
            if isinstance(node, exp.DPipe)
            else list(zip(node.expressions, original.expressions, strict=True))
        )
        texts = [self._as_text(part, self.types.of(kept)) for part, kept in pairs]
        if isinstance(node, exp.DPipe):
            return exp.DPipe(this=texts[0], expression=texts[1])
        return _fn("CONCAT_WS", exp.Literal.string(""), *texts)

    def _as_text(self, part: exp.Expression, kind: exp.DataType) -> exp.Expression:
        if kind.is_type(*exp.DataType.TEXT_TYPES) or kind.this == _T.NULL:
            return part
        if kind.this in (_T.DOUBLE, _T.FLOAT):
            raise _unsupported("a DOUBLE joined into text")
        return exp.Cast(this=part, to=exp.DataType.build("STRING", dialect="spark"))

    def _sign(self, node: exp.Expression) -> exp.Expression:
        if self.type_of(node).this not in (*_INTEGERS, _T.DECIMAL):
            raise _unsupported("SIGN of anything but an exact number")
        x = node.this
        when = [
            exp.If(this=exp.GT(this=x, expression=exp.Literal.number(0)), true=exp.Literal.number(1)),
            exp.If(this=exp.LT(this=x.copy(), expression=exp.Literal.number(0)), true=exp.Literal.number(-1)),
            exp.If(this=exp.EQ(this=x.copy(), expression=exp.Literal.number(0)), true=exp.Literal.number(0)),
        ]
        return exp.Case(ifs=when)

    def _sum(self, node: exp.Expression) -> exp.Expression:
        """SUM in DuckDB's result type: HUGEINT as DECIMAL(38,0), a DECIMAL(p,s) as DECIMAL(38,s)."""
        kind = self.type_of(node)
        if kind.this in _INTEGERS:
            return exp.Sum(this=_wide(node.this))
        if kind.this == _T.DECIMAL:
            return exp.Sum(this=exp.Cast(this=node.this, to=exp.DataType.build(f"DECIMAL(38, {_scale(kind)})")))
        raise _unsupported(f"SUM of a {kind.this.name} (rounded in the order of the rows)")

    def _decimal_scale(self, node: exp.Expression) -> exp.Expression:
        kind = self.type_of(node, "")
        if kind.this == _T.DECIMAL and _scale(kind) > _MAX_SCALE:
            raise _unsupported(f"arithmetic on DECIMALs of more than {_MAX_SCALE} digits of fraction")
        return node

    def _divide(self, node: exp.Expression) -> exp.Expression:
        """``/`` of integers: DOUBLEs divided, a zero divisor giving DuckDB's infinities and NaN."""
        if not all(self.type_of(node, k).this in _SMALL_INTEGERS for k in ("this", "expression")):
            raise _unsupported("/ but of integers (DuckDB divides DOUBLEs and DECIMALs its own way)")
        a, b = (exp.Cast(this=v, to=exp.DataType.build("DOUBLE")) for v in (node.this, node.expression))
        special = exp.Case(
            ifs=[
                exp.If(this=exp.GT(this=a.copy(), expression=exp.Literal.number(0)), true=_double("Infinity")),
                exp.If(this=exp.LT(this=a.copy(), expression=exp.Literal.number(0)), true=_double("-Infinity")),
                exp.If(this=exp.EQ(this=a.copy(), expression=exp.Literal.number(0)), true=_double("NaN")),
            ]
        )
        zero = exp.EQ(this=b.copy(), expression=exp.Literal.number(0))
        return exp.Case(ifs=[exp.If(this=zero, true=special)], default=exp.Div(this=a, expression=b))

    def _int_divide(self, node: exp.Expression) -> exp.Expression:
        if not all(self.type_of(node, k).this in _SMALL_INTEGERS for k in ("this", "expression")):
            raise _unsupported("// but of integers of at most 64 bits")
        return node  # printed a DIV b: truncating, as DuckDB

    def _ordered(self, node: exp.Expression) -> exp.Expression:
        """An ORDER BY item of the DP source's row cap: NULLs last both ways (DuckDB's default; Spark puts
        them first in an ascending order). Both put NaN above every DOUBLE and -0.0 level with 0.0."""
        if self.type_of(node).this == _T.NULL:
            raise _unsupported("ORDER BY a NULL")
        node.set("nulls_first", False)
        return node

    def _select(self, node: exp.Expression) -> exp.Expression:
        """A SELECT as is; the DP source's ``SELECT * ... QUALIFY ROW_NUMBER() OVER (...) <= n`` as a ranked
        subquery, its columns named so the rank is not one of them."""
        qualify = node.args.get("qualify")
        if qualify is None:
            return node
        cap = qualify.this
        if not (isinstance(cap, exp.LTE) and isinstance(cap.this, exp.Window) and self.columns):
            raise _unsupported("QUALIFY but for the row cap of a table with known columns")
        rank = exp.to_identifier("__hpf_row")
        inner = node.copy()
        inner.set("qualify", None)
        inner.set("expressions", [exp.Star(), exp.Alias(this=cap.this, alias=rank)])
        ranked = exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier("__hpf_ranked")))
        outer = exp.Select(expressions=[exp.column(c) for c in self.columns])
        outer.set("from_", exp.From(this=ranked))
        return outer.where(exp.LTE(this=exp.column(rank), expression=cap.expression))


# what DuckDB's TRIM strips: the Unicode space separators (Zs); Spark's TRIM strips only U+0020
_SPACES = " \u00a0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u202f\u205f\u3000"


def _trim(node: exp.Expression) -> exp.Expression:
    """TRIM(x) stripping what DuckDB strips."""
    if any(node.args.get(k) is not None for k in ("expression", "position", "collation")):
        raise _unsupported("TRIM but of spaces from both ends")
    return exp.Trim(this=node.this, expression=exp.Literal.string(_SPACES), position="BOTH")


def _fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _wide(x: exp.Expression) -> exp.Expression:
    """``x`` as DECIMAL(38,0) (Spark's widest integer), once."""
    inner = x.unnest()
    if isinstance(inner, exp.Cast) and inner.to.sql("spark") == "DECIMAL(38, 0)":
        return inner
    return exp.Cast(this=x, to=exp.DataType.build("DECIMAL(38, 0)"))


def _double(text: str) -> exp.Expression:
    return exp.Cast(this=exp.Literal.string(text), to=exp.DataType.build("DOUBLE"))


def _part(name: str, date: exp.Expression) -> exp.Expression:
    """A date part as BIGINT, as DuckDB gives it; the day of the week counted as DuckDB counts it."""
    part = _PART_NAMES.get(name.lower(), name.upper())
    functions = {"YEAR": "YEAR", "QUARTER": "QUARTER", "MONTH": "MONTH", "DAY": "DAYOFMONTH"}
    if part in functions:
        value = _fn(functions[part], date)
    elif part == "DOW":  # Spark: Sunday 1 .. Saturday 7; DuckDB: Sunday 0 .. Saturday 6
        value = exp.Sub(this=_fn("DAYOFWEEK", date), expression=exp.Literal.number(1))
    elif part == "ISODOW":  # Spark's WEEKDAY: Monday 0 .. Sunday 6; DuckDB: Monday 1 .. Sunday 7
        value = exp.Add(this=_fn("WEEKDAY", date), expression=exp.Literal.number(1))
    else:
        raise _unsupported(f"the date part {part}")
    return exp.Cast(this=value, to=exp.DataType.build("BIGINT"))
