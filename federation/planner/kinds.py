"""What an expression yields, from the catalog's types alone: a :class:`Kind` (type family, decimal scale, exact
range), and the rules of kinds that :mod:`federation.planner.totality` proves a query total by.

>>> type_kind("DECIMAL(4, 2)").hi, type_kind("INTEGER").wide, type_kind("HUGEINT").wide
(Fraction(9999, 100), False, True)
>>> cast_kind(type_kind("INTEGER"), type_kind("BIGINT"), "BIGINT").family
'int'
>>> try:
...     cast_kind(type_kind("BIGINT"), type_kind("INTEGER"), "INTEGER")
... except Exception as err:
...     print(err.code)
PLAN_CAST_NOT_TOTAL
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fractions import Fraction

from sqlglot import exp

from hpf.federation.errors import PlanError

HUGEINT = 2**127
MAX_SCALE = 38
NUMERIC = ("int", "dec", "double")
EXACT = ("int", "dec")

_INT_RANGES = {"TINYINT": 7, "SMALLINT": 15, "INTEGER": 31, "INT": 31, "BIGINT": 63, "HUGEINT": 127, "INT128": 127}
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")  # matched whole


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


def type_kind(type_name: str) -> Kind:
    """The kind of every value of a type the federation's SQL knows; PlanError for any other."""
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


def not_total(what: str, code: str, hint: str | None = None) -> PlanError:
    """The refusal of ``what``, which could fail on some row: ``PLAN_MAY_OVERFLOW``, ``PLAN_CAST_NOT_TOTAL`` or
    ``PLAN_TYPE_MIX``."""
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


def fits_decimal(kind: Kind, scale: int, precision: int = MAX_SCALE) -> bool:
    return kind.magnitude < Fraction(10 ** (precision - scale))


def checked(kind: Kind, what: str) -> Kind:
    """``kind``, refused if its range could leave HUGEINT or DECIMAL(38, s) (a constant's fails at plan time)."""
    if kind.constant:
        return kind
    if kind.family == "int" and kind.magnitude >= HUGEINT:
        raise not_total(what, "PLAN_MAY_OVERFLOW")
    if kind.family == "dec" and not fits_decimal(kind, kind.scale):
        raise not_total(what, "PLAN_MAY_OVERFLOW")
    return kind


def arithmetic_kind(node: exp.Binary, left: Kind, right: Kind) -> Kind:
    """The kind of ``+``, ``-`` or ``*`` of two exact numbers, computed wide: its range from its operands'."""
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
            raise not_total("a product of decimals", "PLAN_MAY_OVERFLOW")
        for k in (left, right):  # the smaller scale is raised to the result's first
            if not k.constant and not fits_decimal(k, scale):
                raise not_total("arithmetic on decimals", "PLAN_MAY_OVERFLOW")
    constant = left.constant and right.constant
    return checked(Kind(family, scale, lo, hi, constant=constant, wide=not constant), "arithmetic")


def cast_kind(source: Kind, target: Kind, to_sql: str) -> Kind:
    """The kind of a CAST of ``source`` to ``target`` (written ``to_sql``), refused unless every value of
    ``source`` converts."""
    if source.family in ("agg", "alias"):  # over aggregates, on the asker's side: into DOUBLE or text only
        if target.family not in ("double", "text"):
            raise not_total(f"a CAST of an aggregate to {to_sql}", "PLAN_CAST_NOT_TOTAL")
        return Kind("agg")
    if source.constant:  # converted once, at plan time: a value that does not convert fails there
        if target.family in EXACT and source.lo is not None:
            return replace(target, lo=source.lo, hi=source.hi, constant=True)
        return replace(target, constant=True)
    what = f"a CAST from {source.family} to {to_sql}"
    family = target.family
    total = (
        source.family == "null"
        or family == "text"  # every value has a text form
        or (family == "double" and source.family in (*NUMERIC, "bool"))  # not text, not a date
        or (family == source.family and family in ("date", "bool"))
        or (family in EXACT and source.family == "bool" and target.hi is not None and target.hi >= 1)
        or (family == "bool" and source.family == "int")  # zero is false, anything else true
    )
    if family in EXACT and source.family in EXACT:
        assert target.lo is not None and target.hi is not None and source.lo is not None
        step = Fraction(1, 10**target.scale)  # rounding to the target's scale widens the range by a step
        total = target.lo <= source.lo - step and source.hi + step <= target.hi  # type: ignore[operator]
        if total:
            return replace(target, lo=source.lo - step, hi=source.hi + step)  # type: ignore[operator]
    if not total:
        raise not_total(what, "PLAN_CAST_NOT_TOTAL")
    if family == "bool" and source.family == "bool":
        return Kind("bool")
    if family in EXACT:
        return replace(target, lo=Fraction(0), hi=Fraction(1))
    return replace(target, lo=None, hi=None)
