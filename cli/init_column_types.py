"""The column types `hpf init` declares in a catalog: from the types the regions' files carry, the widest that
holds two regions' values, and the bounds it suggests for a column's values."""

from __future__ import annotations

import re
from decimal import Decimal

from hpf.federation.catalog import INTEGER_BITS, INTEGER_DIGITS, INTEGER_TYPES

DECIMAL_TYPE = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")
# a file type the catalog has no type for, read as the narrowest catalog type that holds every value
_WIDER = {
    "UTINYINT": "SMALLINT",
    "USMALLINT": "INTEGER",
    "UINTEGER": "BIGINT",
    "UBIGINT": "DECIMAL(20,0)",
    "HUGEINT": "DECIMAL(38,0)",
    "FLOAT": "DOUBLE",
}
_SAME = (*INTEGER_TYPES, "VARCHAR", "DATE", "BOOLEAN", "DOUBLE")


def catalog_type(file_type: str) -> str | None:
    """The catalog type a file column is declared as: its own where the catalog has it, else the narrowest that
    holds every value; None for a type the catalog cannot hold (timestamps, lists, ...).

    >>> [catalog_type(t) for t in ("INTEGER", "DECIMAL(15,2)", "UBIGINT", "FLOAT", "TIMESTAMP")]
    ['INTEGER', 'DECIMAL(15,2)', 'DECIMAL(20,0)', 'DOUBLE', None]
    """
    t = file_type.upper().replace(" ", "")
    if t in _SAME or DECIMAL_TYPE.fullmatch(t):
        return t
    return _WIDER.get(t)


def widest(a: str, b: str) -> str | None:
    """A catalog type holding every value of both ``a`` and ``b`` exactly, or None.

    >>> widest("INTEGER", "BIGINT"), widest("DECIMAL(15,2)", "DECIMAL(12,4)"), widest("INTEGER", "DECIMAL(9,2)")
    ('BIGINT', 'DECIMAL(17,4)', 'DECIMAL(12,2)')
    >>> widest("VARCHAR", "INTEGER") is None
    True
    """
    if a == b:
        return a
    if a in INTEGER_TYPES and b in INTEGER_TYPES:
        return max(a, b, key=INTEGER_TYPES.index)

    def shape(t: str) -> tuple[int, int] | None:  # (digits before the point, digits after)
        if t in INTEGER_DIGITS:
            return INTEGER_DIGITS[t], 0
        m = DECIMAL_TYPE.fullmatch(t)
        return (int(m.group(1)) - int(m.group(2)), int(m.group(2))) if m else None

    sa, sb = shape(a), shape(b)
    if sa is None or sb is None:
        return None
    whole, scale = max(sa[0], sb[0]), max(sa[1], sb[1])
    return f"DECIMAL({whole + scale},{scale})" if whole + scale <= 38 else None


def suggested_bounds(extremes: tuple[Decimal, Decimal], type_: str) -> tuple[Decimal, Decimal]:
    """Bounds round enough to say little about the files' extremes: each a power of ten past the farthest value
    on its side (0 on a side no value reaches), within what ``type_`` holds.

    >>> suggested_bounds((Decimal("0.00"), Decimal("104949.50")), "DECIMAL(15,2)")
    (Decimal('0'), Decimal('1000000'))
    >>> suggested_bounds((Decimal("-3"), Decimal("0.07")), "DECIMAL(3,2)")
    (Decimal('-9.99'), Decimal('0.1'))
    >>> suggested_bounds((Decimal("1"), Decimal("12000")), "SMALLINT")
    (Decimal('0'), Decimal('32767'))
    """
    decimal = DECIMAL_TYPE.fullmatch(type_)
    if decimal is not None:
        precision, scale = int(decimal.group(1)), int(decimal.group(2))
        top = Decimal(10) ** (precision - scale) - Decimal(10) ** -scale
    else:
        scale, top = 0, Decimal(2 ** (INTEGER_BITS[type_] - 1) - 1)

    def past(value: Decimal) -> Decimal:
        if value <= 0:
            return Decimal(0)
        power = Decimal(10) ** -scale
        while power < value:
            power *= 10
        return Decimal(format(min(power, top).normalize(), "f"))

    return (-past(-extremes[0]) if extremes[0] < 0 else Decimal(0), past(extremes[1]))
