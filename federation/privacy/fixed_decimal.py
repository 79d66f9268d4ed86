"""Non-integer numbers in what a party signs: decimal strings with a fixed number of digits after the point.

A float has no one text form (Python writes ``1e-08`` and ``1.0``, other languages ``1E-8``, ``0.00000001`` and
``1``), so no float goes into a signed statement, a run id's hash or an audit entry. An integer stays a JSON
integer; a non-integer quantity is a JSON string holding a plain decimal: digits, a point and exactly ``places``
digits after it, no sign, no exponent, no leading zero (``"1.000000000"``, ``"0.000000010000000000"``). Which
places a quantity has is fixed by what it is, in the units the privacy budget ledger counts:

- epsilon: 9 places (nano-epsilon);
- delta: 18 places (atto-delta);
- a Skellam noise parameter mu: 9 places, rounded up from its calibration (more noise, never less).

A number is held as its integer count of units (``units``); its float, where arithmetic needs one, is that count
divided by ``10**places`` correctly rounded, the same double in every language. A reader refuses every other
text form (:func:`units_from_text`).
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

EPSILON_PLACES = 9
# the most epsilon a privacy budget grants per period: above it a budget protects nothing, and a ledger's sums of
# nano-epsilon (EPSILON_PLACES) stay within a signed 64-bit integer; a policy check refuses what a node would
MAX_BUDGET_EPSILON = 1e6
DELTA_PLACES = 18
MU_PLACES = 9

_TEXT = re.compile(r"(0|[1-9][0-9]*)\.([0-9]+)")


def units_text(units: int, places: int) -> str:
    """The one text form of ``units / 10**places`` (``units`` a non-negative integer).

    >>> units_text(1_000_000_000, 9), units_text(10_000_000_000, 18), units_text(5, 3)
    ('1.000000000', '0.000000010000000000', '0.005')
    """
    if type(units) is not int or units < 0:
        raise ValueError("a fixed decimal is a non-negative integer count of units")
    whole, frac = divmod(units, 10**places)
    return f"{whole}.{frac:0{places}d}"


def units_from_text(text: object, places: int) -> int:
    """The integer count of units a text form holds; ValueError for anything but the one form.

    >>> units_from_text("1.000000000", 9)
    1000000000
    >>> for bad in ("1.0", "1e-08", "01.000000000", "-1.000000000", "1.000000000 ", 1.0):
    ...     try:
    ...         units_from_text(bad, 9)
    ...     except ValueError:
    ...         pass
    ...     else:
    ...         print("accepted", bad)
    """
    m = _TEXT.fullmatch(text) if type(text) is str and text.isascii() else None
    if m is None or len(m.group(2)) != places:
        raise ValueError(f"not a decimal with exactly {places} digits after the point")
    return int(m.group(1)) * 10**places + int(m.group(2))


def units_of(value: float, places: int) -> int:
    """``value`` as a count of ``10**-places`` units, when it is a decimal with at most ``places`` places (what a
    policy file says, read as a float); ValueError when it is finer, negative or not finite.

    >>> units_of(0.1, 9), units_of(1e-08, 18)
    (100000000, 10000000000)
    >>> units_of(0.1234567891, 9)
    Traceback (most recent call last):
    ...
    ValueError: 0.1234567891 has more than 9 digits after the point
    """
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("a fixed decimal is finite and not negative")
    units = int((Decimal(value) * 10**places).to_integral_value(ROUND_HALF_EVEN))
    if value_of(units, places) != value:
        raise ValueError(f"{value!r} has more than {places} digits after the point")
    return units


def units_above(value: float, places: int) -> int:
    """The fewest ``10**-places`` units at or above ``value`` (a noise parameter rounds up: never less noise).

    >>> units_above(0.1, 9), units_above(2.0000000001, 9)
    (100000001, 2000000001)
    """
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("a fixed decimal is finite and not negative")
    return math.ceil(Fraction(value) * 10**places)


def value_of(units: int, places: int) -> float:
    """``units / 10**places`` as the nearest double (Python's int division is correctly rounded); ValueError for
    a value no double holds (a region's statement may say anything)."""
    try:
        return units / 10**places
    except OverflowError:
        raise ValueError("a fixed decimal too large for a double") from None
