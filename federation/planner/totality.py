"""Stage 3: every expression a node evaluates is total. No value of any row can make it fail.

Worked out from the catalog's column types alone (a node's view casts every column to its catalog type), before
anything is bound:

- **Arithmetic is typed wide.** Every ``+ - * ABS`` and unary minus over row values is computed as HUGEINT
  (integers) or DECIMAL(38, s) (decimals): its operands are cast to those first. The exact range of every
  such expression is derived from the operands' types; one that could leave the wide type is refused
  (``PLAN_MAY_OVERFLOW``), never left to fail on a particular row.
- **Casts must be total.** A cast of row values is accepted only where every value of its source type
  converts: a number into a type whose range holds the number's range, anything into VARCHAR or DOUBLE, a
  BOOLEAN into a number. A cast that could fail on a value (text into a number or a date, DOUBLE into an
  integer, a narrowing) is refused (``PLAN_CAST_NOT_TOTAL``); a constant's cast fails at plan time, if at
  all. ``TRY_CAST`` is total by definition (NULL where a value does not convert) and the policies count it as
  a filter. No CAST is silently turned into a TRY_CAST: that would change an exact answer.
- **Implicit casts must be total.** DuckDB casts a VARCHAR compared with a number, a date or a boolean to
  that type, row by row, and fails on text that does not convert. So the operands of a comparison, IN,
  BETWEEN, CASE, COALESCE, NULLIF, GREATEST and LEAST must be of one type family (numbers, text, dates,
  booleans; a string constant converts at plan time), and a decimal compared with an integer must fit the
  common DECIMAL(38, s). A condition (WHERE, WHEN, AND, OR, NOT, FILTER) must be a boolean.
- **Sums cannot outgrow their slots.** The range of every summed argument gives its component's width in
  bits, for at most ``2**ROW_BITS`` rows per region, so a region's partial always fits its limbs.

>>> import sqlglot
>>> from federation.catalog import Table
>>> t = Table.model_validate({"columns": {"a": {"type": "INTEGER"}, "v": {"type": "VARCHAR"}}})
>>> tree = sqlglot.parse_one("SELECT SUM(a * 2) FROM t WHERE -a > 1", read="duckdb")
>>> make_total(tree, t).tree.sql("duckdb")
'SELECT SUM(CAST(a AS INT128) * 2) FROM t WHERE -CAST(a AS INT128) > 1'
>>> try:
...     make_total(sqlglot.parse_one("SELECT COUNT(*) FROM t WHERE v = 5", read="duckdb"), t)
... except Exception as err:
...     print(err.code)
PLAN_TYPE_MIX
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from fractions import Fraction

from sqlglot import exp

from hpf.federation.catalog import Table
from hpf.federation.errors import PlanError
from hpf.federation.planner.engine_tree import evaluate_constants
from hpf.federation.planner.split import unfilter
from hpf.federation.planner.surface import AGGREGATES, conjuncts

ROW_BITS = 26  # a region's partial is sized for at most 2**26 rows of a table at the full range of a value
HUGEINT = 2**127
MAX_SCALE = 38

_INT_RANGES = {"TINYINT": 7, "SMALLINT": 15, "INTEGER": 31, "INT": 31, "BIGINT": 63, "HUGEINT": 127, "INT128": 127}
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")  # matched whole
_NUMERIC = ("int", "dec", "double")
_EXACT = ("int", "dec")


@dataclass(frozen=True)
class Kind:
    """What an expression yields: its type family, decimal scale, exact range (for exact numbers), and whether
    it is a constant (no column inside), already wide (HUGEINT or DECIMAL(38, s)), or an aggregate's result."""

    family: str  # int | dec | double | text | date | bool | null | agg | alias
    scale: int = 0
    lo: Fraction | None = None
    hi: Fraction | None = None
    constant: bool = False
    wide: bool = False

    @property
    def magnitude(self) -> Fraction:
        assert self.lo is not None and self.hi is not None
        return max(abs(self.lo), abs(self.hi))


def _type_kind(type_name: str) -> Kind:
    t = type_name.upper().replace(" ", "")
    if t in _INT_RANGES:
        bits = _INT_RANGES[t]
        return Kind("int", 0, Fraction(-(2**bits)), Fraction(2**bits - 1), wide=bits == 127)
    m = _DECIMAL.fullmatch(t)
    if m and len(m.group(1)) <= 2 and len(m.group(2)) <= 2 and 1 <= int(m.group(1)) <= 38 >= int(m.group(2)):
        p, s = int(m.group(1)), int(m.group(2))
        if s > p:
            raise PlanError(f"{type_name} has a scale above its precision", code="PLAN_EXPRESSION_NOT_ALLOWED")
        top = Fraction(10**p - 1, 10**s)
        return Kind("dec", s, -top, top, wide=p == 38)
    if t == "DOUBLE":  # FLOAT and REAL are narrower than DOUBLE: a cast into them can overflow
        return Kind("double")
    if t in ("VARCHAR", "TEXT", "STRING"):
        return Kind("text")
    if t == "DATE":
        return Kind("date")
    if t in ("BOOLEAN", "BOOL"):
        return Kind("bool")
    raise PlanError(
        f"a cast to {type_name} is not part of the federation's SQL",
        code="PLAN_EXPRESSION_NOT_ALLOWED",
        hint="cast to TINYINT, SMALLINT, INTEGER, BIGINT, HUGEINT, DECIMAL(p, s), DOUBLE, VARCHAR, DATE or BOOLEAN",
    )


def _not_total(what: str, code: str, hint: str | None = None) -> PlanError:
    messages = {
        "PLAN_MAY_OVERFLOW": f"{what} could overflow on some values of its columns",
        "PLAN_CAST_NOT_TOTAL": f"{what} could fail on some values of its column",
        "PLAN_TYPE_MIX": f"{what} mixes types that DuckDB would convert row by row, which can fail on some values",
    }
    hints = {
        "PLAN_MAY_OVERFLOW": "declare narrower column types in the catalog, or compute less in one expression",
        "PLAN_CAST_NOT_TOTAL": "cast only into a type that holds every value (HUGEINT, DECIMAL(38, s), DOUBLE, "
        "VARCHAR), or use TRY_CAST, which gives NULL where a value does not convert",
        "PLAN_TYPE_MIX": "compare values of one type family; CAST a number to VARCHAR to compare it with text",
    }
    return PlanError(messages[code], code=code, hint=hint or hints[code])


def _fits_decimal(kind: Kind, scale: int, precision: int = MAX_SCALE) -> bool:
    return kind.magnitude < Fraction(10 ** (precision - scale))


@dataclass
class Totality:
    """The query made total, and the range of every summed argument (by its DuckDB SQL)."""

    tree: exp.Expression
    ranges: dict[str, Kind] = field(default_factory=dict)

    def sum_bits(self, arg_sql: str, scale: int, squares: bool = False) -> int | None:
        """Signed bits a region's SUM (or sum of squares) of ``arg_sql`` at ``scale`` needs; None if unknown."""
        kind = self.ranges.get(arg_sql)
        if kind is None or kind.lo is None:
            return None
        units = kind.magnitude * 10**scale
        top = int(units) + (units.denominator != 1)
        if squares:  # summed as 32-bit halves in HUGEINT (Component.sql_terms): the high half's square must fit
            # and Component.sql_terms scales it as DECIMAL(38, scale) first: x * 10**scale within 10**(38 - scale)
            if top >= 2**82 or units >= 10 ** max(MAX_SCALE - scale, 0):
                raise _not_total(
                    "a variance's argument (its square is summed)",
                    "PLAN_MAY_OVERFLOW",
                    "the argument of VAR and STDDEV must stay within 2**82 at its scale",
                )
            top = top * top
        need = (top << ROW_BITS).bit_length() + 1
        if need > 126 and not squares:  # DuckDB sums in HUGEINT
            raise _not_total("a summed argument", "PLAN_MAY_OVERFLOW")
        return need


class _Typer:
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
            raise _not_total(f"{where} that is not a boolean", "PLAN_TYPE_MIX")

    def unify(self, nodes: list[exp.Expression], what: str) -> Kind:
        """The common kind of values compared or chosen between (refused if DuckDB's conversion could fail)."""
        kinds = [self.kind(n) for n in nodes]
        if any(k.family == "agg" for k in kinds) and any(k.family == "text" and k.constant for k in kinds):
            raise _not_total(f"{what} of a quoted constant with an aggregate", "PLAN_TYPE_MIX")
        known = [k for k in kinds if k.family not in ("null", "agg", "alias")]
        if not known:
            return Kind("null", constant=all(k.constant for k in kinds))
        constant = all(k.constant for k in kinds)
        families = {k.family for k in known}
        if families <= set(_NUMERIC):
            if "double" in families:
                return Kind("double", constant=constant)
            scale = max(k.scale for k in known)
            if "dec" in families and not all(_fits_decimal(k, scale) for k in known):
                raise _not_total(f"{what} (numbers converted to DECIMAL(38, {scale}))", "PLAN_MAY_OVERFLOW")
            lo = min(k.lo for k in known if k.lo is not None)
            hi = max(k.hi for k in known if k.hi is not None)
            return Kind("dec" if "dec" in families else "int", scale, lo, hi, constant=constant)
        # one non-numeric family. A quoted constant meets a date only: converted once, here, at plan time (never
        # left for the engine to convert where a row condition guards it); with a number or a boolean it is refused
        quoted = [n for n, k in zip(nodes, kinds, strict=True) if k.family == "text" and k.constant]
        others = {k.family for k in known if not (k.family == "text" and k.constant)}
        if quoted and others - {"text"}:
            if others != {"date"}:
                raise _not_total(
                    f"{what} of a quoted constant with a {' or '.join(sorted(others))}",
                    "PLAN_TYPE_MIX",
                    "write numbers and TRUE/FALSE without quotes",
                )
            self.constants.extend(exp.Cast(this=n.copy(), to=exp.DataType.build("DATE")) for n in quoted)
        if len(others) > 1:
            raise _not_total(what, "PLAN_TYPE_MIX")
        family = others.pop() if others else "text"
        return Kind(family, constant=constant)

    def widen(self, node: exp.Expression, kind: Kind) -> exp.Expression:
        """``node`` as HUGEINT or DECIMAL(38, s) (wrapped in a cast unless it already is, or is a constant)."""
        if kind.constant or kind.wide or kind.family not in _EXACT:
            return node
        target = "INT128" if kind.family == "int" else f"DECIMAL(38, {kind.scale})"
        if kind.family == "dec" and not _fits_decimal(kind, kind.scale):
            raise _not_total("a decimal value", "PLAN_MAY_OVERFLOW")
        wrapped = exp.Cast(this=node.copy(), to=exp.DataType.build(target, dialect="duckdb"))
        node.replace(wrapped)
        return wrapped

    # -- the kinds -----------------------------------------------------------------------------------

    def kind(self, node: exp.Expression) -> Kind:
        found = self._kind(node)
        if found.constant and next(node.find_all(exp.Column), None) is not None:
            found = replace(
                found, constant=False
            )  # a CASE over a column's condition is no constant, whatever it yields
        if found.constant and not isinstance(node, exp.Literal | exp.Null | exp.Boolean | exp.Paren):
            self.constants.append(node)  # evaluated at plan time: a constant must not fail only where rows reach it
        return found

    def _kind(self, node: exp.Expression) -> Kind:  # noqa: C901 - one branch per allowed node kind
        if isinstance(node, exp.Paren):
            return self.kind(node.this)
        if isinstance(node, exp.Column):
            column = self.table.columns.get(node.name)
            if column is None and self.row_level:
                raise PlanError(
                    f"{node.name!r} is not a column of the table: a select alias cannot be used inside WHERE or an "
                    "aggregate",
                    code="PLAN_EXPRESSION_NOT_ALLOWED",
                    hint="repeat the expression instead of its alias",
                )
            return Kind("alias") if column is None else _type_kind(column.type)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return Kind("text", constant=True)
            value = Fraction(node.this)
            scale = len(node.this.split(".")[1]) if "." in node.this else 0
            return Kind("dec" if scale else "int", scale, value, value, constant=True)
        if isinstance(node, exp.Null):
            return Kind("null", constant=True)
        if isinstance(node, exp.Boolean):
            return Kind("bool", constant=True)
        if type(node) in AGGREGATES or isinstance(node, exp.Filter):
            self.aggregate(node)
            return Kind("agg")
        if isinstance(node, exp.Neg | exp.Abs):
            inner = self.kind(node.this)
            if inner.family in ("agg", "alias"):
                return Kind("agg")
            if inner.family not in _NUMERIC and inner.family != "null":
                raise _not_total(f"{node.key.upper()} of a non-number", "PLAN_TYPE_MIX")
            if inner.family not in _EXACT:
                return inner  # DOUBLE (never fails) or NULL
            self.widen(node.this, inner)
            lo, hi = -inner.hi, -inner.lo  # type: ignore[operator]
            if isinstance(node, exp.Abs):
                lo, hi = Fraction(0), inner.magnitude
            return self.checked(replace(inner, lo=lo, hi=hi, wide=not inner.constant), "a negation or ABS")
        if isinstance(node, exp.Add | exp.Sub | exp.Mul):
            return self.arithmetic(node)
        if isinstance(node, exp.Div):
            for side in (node.this, node.expression):
                if self.kind(side).family not in (*_NUMERIC, "null", "agg", "alias"):
                    raise _not_total("a division of a non-number", "PLAN_TYPE_MIX")
            return Kind("double", constant=False)
        if isinstance(node, exp.Mod | exp.IntDiv):
            left = self.kind(node.this)
            if left.family in ("agg", "alias"):
                return Kind("agg")
            if left.family not in ("int", "null"):
                raise _not_total("% or // of anything but an integer", "PLAN_TYPE_MIX")
            divisor = Fraction(int(node.expression.this))
            if left.lo is None:
                return left
            if isinstance(node, exp.Mod):
                return Kind("int", 0, -(divisor - 1), divisor - 1, constant=left.constant)
            return Kind("int", 0, left.lo / divisor - 1, left.hi / divisor + 1, constant=left.constant)  # type: ignore[operator]
        if isinstance(node, exp.And | exp.Or):
            for operand in conjuncts(node):  # a long chain of conditions, walked as a list
                self.condition(operand, "AND/OR over a value")
            return Kind("bool")
        if isinstance(node, exp.Not):
            self.condition(node.this, "NOT of a value")
            return Kind("bool")
        if isinstance(node, exp.EQ | exp.NEQ | exp.GT | exp.GTE | exp.LT | exp.LTE | exp.NullSafeEQ | exp.NullSafeNEQ):
            self.unify([node.this, node.expression], "a comparison")
            return Kind("bool")
        if isinstance(node, exp.Between):
            self.unify([node.this, node.args["low"], node.args["high"]], "BETWEEN")
            return Kind("bool")
        if isinstance(node, exp.In):
            self.unify([node.this, *node.expressions], "IN")
            return Kind("bool")
        if isinstance(node, exp.Is):  # IS NULL of anything; IS TRUE/FALSE of a boolean only (else a cast per row)
            inner = self.kind(node.this)
            if isinstance(node.expression, exp.Boolean) and inner.family not in ("bool", "null"):
                raise _not_total(f"IS TRUE/FALSE of a {inner.family} value", "PLAN_TYPE_MIX")
            return Kind("bool")
        if isinstance(node, exp.Like | exp.ILike):
            if self.kind(node.this).family not in ("text", "null", "alias"):
                raise _not_total("LIKE over a non-text value", "PLAN_TYPE_MIX")
            return Kind("bool")
        if isinstance(node, exp.Case):
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
        if isinstance(node, exp.If):
            self.condition(node.this, "an IF condition")
            values = [v for v in (node.args.get("true"), node.args.get("false")) if v is not None]
            return self.unify(values, "the values of an IF")
        if isinstance(node, exp.Coalesce | exp.Greatest | exp.Least):
            return self.unify([node.this, *node.expressions], node.sql_name())
        if isinstance(node, exp.Nullif):  # compares both, and keeps the first's type (DuckDB's rule)
            self.unify([node.this, node.expression], "NULLIF")
            return self.kind(node.this)
        if isinstance(node, exp.TryCast):
            self.kind(node.this)
            target = _type_kind(node.to.sql("duckdb"))
            return replace(target, constant=False)
        if isinstance(node, exp.Cast):
            return self.cast(node)
        if isinstance(
            node, exp.Extract | exp.Year | exp.Quarter | exp.Month | exp.Day | exp.DayOfMonth | exp.DayOfWeek
        ):
            date = node.expression if isinstance(node, exp.Extract) else node.this
            return self.date_part(date)
        if isinstance(node, exp.Anonymous):  # DATE_PART('part', d): the only anonymous function allowed
            return self.date_part(node.expressions[1])
        if isinstance(node, exp.DateFromParts):  # constants only (the surface stage): fails at plan time if at all
            return Kind("date", constant=True)
        if isinstance(node, exp.Sign):
            inner = self.kind(node.this)
            if inner.family not in (*_NUMERIC, "null", "agg", "alias"):
                raise _not_total("SIGN of a non-number", "PLAN_TYPE_MIX")
            return Kind("int", 0, Fraction(-1), Fraction(1), constant=inner.constant)
        if isinstance(node, exp.Length | exp.Lower | exp.Upper | exp.Trim | exp.Substring):
            inner = self.kind(node.this)
            if inner.family not in ("text", "null", "alias"):
                raise _not_total(f"{node.sql_name()} of a non-text value", "PLAN_TYPE_MIX")
            if isinstance(node, exp.Length):
                return Kind("int", 0, Fraction(0), Fraction(2**32), constant=inner.constant)
            return Kind("text", constant=inner.constant)
        if isinstance(node, exp.DPipe | exp.Concat):
            parts = [node.this, node.expression] if isinstance(node, exp.DPipe) else list(node.expressions)
            kinds = [self.kind(p) for p in parts if p is not None]
            return Kind("text", constant=all(k.constant for k in kinds))
        if isinstance(node, exp.StartsWith | exp.EndsWith | exp.Contains):
            for side in (node.this, node.expression):
                if self.kind(side).family not in ("text", "null", "alias"):
                    raise _not_total(f"{node.sql_name()} of a non-text value", "PLAN_TYPE_MIX")
            return Kind("bool")
        raise PlanError(f"{node.key.upper()} has no known type", code="PLAN_EXPRESSION_NOT_ALLOWED")

    def date_part(self, date: exp.Expression) -> Kind:
        inner = self.kind(date)
        if inner.family not in ("date", "null", "alias"):
            raise _not_total("a date part of a non-date", "PLAN_TYPE_MIX")
        return Kind("int", 0, Fraction(-(10**7)), Fraction(10**7), constant=inner.constant)

    def arithmetic(self, node: exp.Binary) -> Kind:
        left, right = self.kind(node.this), self.kind(node.expression)
        if "agg" in (left.family, right.family) or "alias" in (left.family, right.family):
            return Kind("agg")  # over aggregates: finished by the asker, after decryption
        for k in (left, right):
            if k.family not in (*_NUMERIC, "null"):
                raise _not_total(f"arithmetic on a {k.family} value", "PLAN_TYPE_MIX")
        if "null" in (left.family, right.family):
            return Kind("null", constant=left.constant and right.constant)
        if "double" in (left.family, right.family):
            return Kind("double", constant=left.constant and right.constant)
        self.widen(node.this, left)
        self.widen(node.expression, right)
        a, b = (left.lo, left.hi), (right.lo, right.hi)
        if isinstance(node, exp.Add):
            lo, hi = a[0] + b[0], a[1] + b[1]  # type: ignore[operator]
        elif isinstance(node, exp.Sub):
            lo, hi = a[0] - b[1], a[1] - b[0]  # type: ignore[operator]
        else:
            products = [x * y for x in a for y in b]  # type: ignore[operator]
            lo, hi = min(products), max(products)
        family = "dec" if "dec" in (left.family, right.family) else "int"
        scale = left.scale + right.scale if isinstance(node, exp.Mul) else max(left.scale, right.scale)
        if family == "dec":
            if scale > MAX_SCALE:
                raise _not_total("a product of decimals", "PLAN_MAY_OVERFLOW")
            for k in (left, right):  # the smaller scale is raised to the result's first
                if not k.constant and not _fits_decimal(k, scale):
                    raise _not_total("arithmetic on decimals", "PLAN_MAY_OVERFLOW")
        constant = left.constant and right.constant
        return self.checked(Kind(family, scale, lo, hi, constant=constant, wide=not constant), "arithmetic")

    def checked(self, kind: Kind, what: str) -> Kind:
        if kind.constant:
            return kind
        if kind.family == "int" and kind.magnitude >= HUGEINT:
            raise _not_total(what, "PLAN_MAY_OVERFLOW")
        if kind.family == "dec" and not _fits_decimal(kind, kind.scale):
            raise _not_total(what, "PLAN_MAY_OVERFLOW")
        return kind

    def cast(self, node: exp.Cast) -> Kind:
        source = self.kind(node.this)
        to_sql = node.to.sql("duckdb")
        target = _type_kind(to_sql)
        if source.family in ("agg", "alias"):  # over aggregates, on the asker's side: into DOUBLE or text only
            if target.family not in ("double", "text"):
                raise _not_total(f"a CAST of an aggregate to {to_sql}", "PLAN_CAST_NOT_TOTAL")
            return Kind("agg")
        if source.constant:  # converted once, at plan time: a value that does not convert fails there
            if target.family in _EXACT and source.lo is not None:
                return replace(target, lo=source.lo, hi=source.hi, constant=True)
            return replace(target, constant=True)
        what = f"a CAST from {source.family} to {to_sql}"
        family = target.family
        total = (
            source.family == "null"
            or family == "text"  # every value has a text form
            or (family == "double" and source.family in (*_NUMERIC, "bool"))  # not text, not a date
            or (family == source.family and family in ("date", "bool"))
            or (family in _EXACT and source.family == "bool" and target.hi is not None and target.hi >= 1)
            or (family == "bool" and source.family == "int")  # zero is false, anything else true
        )
        if family in _EXACT and source.family in _EXACT:
            assert target.lo is not None and target.hi is not None and source.lo is not None
            step = Fraction(1, 10**target.scale)  # rounding to the target's scale widens the range by a step
            total = target.lo <= source.lo - step and source.hi + step <= target.hi  # type: ignore[operator]
            if total:
                return replace(target, lo=source.lo - step, hi=source.hi + step)  # type: ignore[operator]
        if not total:
            raise _not_total(what, "PLAN_CAST_NOT_TOTAL")
        if family == "bool" and source.family == "bool":
            return Kind("bool")
        if family in _EXACT:
            return replace(target, lo=Fraction(0), hi=Fraction(1))
        return replace(target, lo=None, hi=None)

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


def make_total(tree: exp.Expression, table: Table) -> Totality:
    """The query with wide arithmetic, checked total (see the module); raises PlanError otherwise."""
    tree = tree.copy()
    typer = _Typer(table)
    where = tree.args.get("where")
    if where is not None:
        typer.row_level = True
        typer.condition(where.this, "a WHERE clause")
        typer.row_level = False
    for item in tree.expressions:
        typer.kind(item.unalias())
    group = tree.args.get("group")
    for key in group.expressions if group else []:
        typer.kind(key)
    having = tree.args.get("having")
    if having is not None:
        typer.kind(having.this)
    order = tree.args.get("order")
    for ordered in order.expressions if order else []:
        typer.kind(ordered.this)
    for limit in ("limit", "offset"):
        clause = tree.args.get(limit)
        value = clause.expression if clause is not None else None
        if value is not None and not (isinstance(value, exp.Literal) and value.this.isdigit()):
            raise PlanError(f"{limit.upper()} takes a whole-number constant", code="PLAN_EXPRESSION_NOT_ALLOWED")
    evaluate_constants([c.sql("duckdb") for c in typer.constants])
    return Totality(tree=tree, ranges=typer.ranges)
