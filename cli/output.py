"""Printing a federated answer as a table, JSON or CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Collection, Iterable, Sequence
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hpf.federation.errors import printable

if TYPE_CHECKING:
    from hpf.client.answers import QueryAnswer


class TableFormat(str, Enum):
    """A command's --format when it prints a table or JSON."""

    table = "table"
    json = "json"


def text_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str | Text]],
    *,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    right_aligned: Collection[int] = (),
) -> str:
    """Lines, a table and more lines as plain text: 160 columns, no colour, no trailing newline. The columns at
    the positions ``right_aligned`` are (numbers), the others left-aligned.

    Every string is printed as it is, never read as rich markup: names and values come from queries and logs.
    Nor is any control or format character printed (a terminal escape in a value another party sent would
    redraw the screen): each becomes ``?``.
    """
    out = Console(file=io.StringIO(), width=160, force_terminal=False, color_system=None)
    for line in before:
        out.print(_shown(line), highlight=False, markup=False)
    table = Table(show_lines=False)
    for i, column in enumerate(columns):
        table.add_column(Text(_shown(column)), overflow="fold", justify="right" if i in right_aligned else "left")
    for row in rows:
        table.add_row(*(Text(_shown(cell)) if isinstance(cell, str) else _shown_text(cell) for cell in row))
    out.print(table)
    for line in after:
        out.print(_shown(line), highlight=False, markup=False)
    return out.file.getvalue().rstrip("\n")  # type: ignore[attr-defined]


def _shown(text: str) -> str:
    return printable(text, limit=1 << 20)


def _shown_text(text: Text) -> Text:
    shown = text.copy()
    shown.plain = _shown(text.plain)
    return shown


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: a float would round it
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


FLOAT_PLACES = 4  # the most digits after the point a float (AVG, VAR, STDDEV) is shown with
GROUPED_FROM = 100_000  # a column with a number this large groups its thousands (years and codes stay 2026)


def _cell(value: Any) -> str:
    """One value as a table shows it on its own (a column of numbers is shown by :func:`number_column`)."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return _float_alone(value)
    if _is_number(value):
        return f"{value:,}" if abs(value) >= GROUPED_FROM else str(value)
    return str(value)


def _float_alone(value: float) -> str:
    if not math.isfinite(value) or _scientific(value):
        return f"{value:.6g}"
    return f"{value:,.{FLOAT_PLACES}f}".rstrip("0").rstrip(".")


def _scientific(value: float) -> bool:
    return value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e15)


def _is_number(value: Any) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite()
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _places(value: int | float | Decimal) -> int:
    """The digits after the point ``value`` needs: a DECIMAL's own scale, a float's up to FLOAT_PLACES."""
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        return -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if isinstance(value, float):
        return len(f"{value:.{FLOAT_PLACES}f}".rstrip("0").partition(".")[2])
    return 0


def number_column(values: Sequence[Any]) -> list[str] | None:
    """A column's cells in one number format, or None when it is not a column of numbers (NULLs aside).

    Every number gets as many digits after the point as the most any cell needs (a DECIMAL its scale, a float up
    to FLOAT_PLACES), so 12.5 beside 3 and 0.25 reads 12.50, 3.00 and 0.25; thousands are grouped in every cell
    when any reaches GROUPED_FROM. A column of floats some of which are too small or large for that is shown
    in scientific notation throughout.

    >>> number_column([3, 12.5, None, Decimal("0.25")])
    ['3.00', '12.50', 'NULL', '0.25']
    >>> number_column([2020, 2021]), number_column([1, 250000]), number_column([1.5e-5, 2.0])
    (['2020', '2021'], ['1', '250,000'], ['1.5e-05', '2'])
    >>> number_column(["310000", 1]) is None
    True
    """
    numbers = [v for v in values if v is not None]
    if not numbers or not all(_is_number(v) for v in numbers):
        return None
    if any(isinstance(v, float) and _scientific(v) for v in numbers):
        if not all(isinstance(v, float) for v in numbers):
            return [_cell(v) for v in values]  # no one format fits both: each number as it reads best alone
        return ["NULL" if v is None else f"{v:.6g}" for v in values]
    places = max(_places(v) for v in numbers)
    spec = f"{',' if any(abs(v) >= GROUPED_FROM for v in numbers) else ''}.{places}f"
    # ints and DECIMALs through Decimal: exact at any size (a float conversion would round a large sum)
    return ["NULL" if v is None else format(v if isinstance(v, float) else Decimal(v), spec) for v in values]


def regions_line(
    answered: Sequence[str], missing: Sequence[dict[str, str]], asked: int | None = None, note: str = ""
) -> str:
    """Which regions answered, out of ``asked``, and which are missing (with ``note`` after them)."""
    line = f"regions answered: {len(answered)}" + (f" of {asked}" if asked is not None else "")
    if missing:
        line += "; missing: " + ", ".join(f"{m['node_id']} ({m['code']})" for m in missing) + note
    return line


def withheld_note(answer: QueryAnswer) -> str | None:
    """One line saying how many groups some region withheld, or None when none was."""
    if not answer.withheld_groups:
        return None
    return (
        f"{answer.withheld_groups} group(s) withheld: fewer rows than the minimum group size at some region; "
        "their aggregates are NULL"
    )


def privacy_note(answer: QueryAnswer) -> str | None:
    """What a DP answer carries: epsilon spent, the noise's standard deviation, the runs it may be charged."""
    p = answer.privacy
    if p.get("mode") != "dp":
        return None
    noise = ", ".join(f"{n['component']} ±{n['sd']:,.1f}" for n in p["noise"])
    runs, bound = int(p.get("runs", 1)), int(p.get("max_runs", 1))
    spent = f"epsilon {p['epsilon'] * runs:g} (delta {p['delta'] * runs:g}) spent of your budget at each region"
    if runs > 1:
        spent += f" ({runs} runs after a region failed)"
    line = f"differentially private: {spent}; noise standard deviation: {noise}"
    if bound > runs:  # from the question as signed, not from the coordinator: no region answers a run beyond it
        line += f"; at most {bound} runs (epsilon {p['epsilon'] * bound:g}) can be charged, the bound you signed"
    return line


def _counted(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 's'}"


TRUE_VALUE = {"count": "count", "sum": "sum", "avg": "average"}


def noise_note(answer: QueryAnswer) -> str | None:
    """One line on what the noise of a DP answer did where the eye would stop: groups not shown because their
    noisy count fell under the threshold, and negative values in columns whose true value cannot be negative
    (a COUNT, or a SUM or AVG of values whose bounds are not negative). None when there are neither.

    >>> from hpf.client.federation_client import QueryAnswer
    >>> a = QueryAnswer(["status", "n", "owed"], [["a", 40, -12], ["b", 25, -3], ["c", 31, 7]], [], [], "q",
    ...     privacy={"mode": "dp", "threshold": 20}, suppressed_groups=2, never_negative={1: "count", 2: "sum"})
    >>> noise_note(a)
    '2 groups with a noisy count under 20 are not shown; owed is negative in 2 rows: noise, the true sum is ≥ 0'
    """
    if answer.privacy.get("mode") != "dp":
        return None
    parts = []
    if answer.suppressed_groups:
        shown = "is" if answer.suppressed_groups == 1 else "are"
        groups = _counted(answer.suppressed_groups, "group")
        parts.append(f"{groups} with a noisy count under {answer.privacy['threshold']:,} {shown} not shown")
    negative = []
    for i, func in sorted(answer.never_negative.items()):
        rows = sum(1 for row in answer.rows if _is_number(row[i]) and row[i] < 0)
        if rows:
            negative.append((answer.columns[i], func, rows))
    if negative:
        where = [f"{name} is negative in {_counted(rows, 'row')}" for name, _, rows in negative[:1]]
        where += [f"{name} in {_counted(rows, 'row')}" for name, _, rows in negative[1:]]
        funcs = {func for _, func, _ in negative}
        if len(negative) == 1:
            truth = f"the true {TRUE_VALUE[negative[0][1]]} is"
        else:
            truth = f"the true {TRUE_VALUE[funcs.pop()] + 's' if len(funcs) == 1 else 'values'} are"
        parts.append(f"{', '.join(where[:-1])}{' and ' if len(where) > 1 else ''}{where[-1]}: noise, {truth} ≥ 0")
    return "; ".join(parts) or None


def verification_note(answer: QueryAnswer) -> str | None:
    """One line when the answer could not be checked against the regions' own keys."""
    if answer.verified:
        return None
    return (
        "unverified: this profile pins no catalog, so the regions' signatures on the answer were not checked "
        "(name the federation catalog in the profile: 'catalog: federation.yaml')"
    )


def answer_notes(answer: QueryAnswer) -> list[str]:
    """The lines a table prints under an answer's rows (and CSV output to stderr), in that order."""
    notes = (withheld_note(answer), privacy_note(answer), noise_note(answer), verification_note(answer))
    return [n for n in notes if n]


def render(answer: QueryAnswer, fmt: str) -> str:
    """The answer in ``fmt`` (table | json | csv) as text."""
    if fmt == "json":
        return json.dumps(answer.to_json(), default=_json_default, ensure_ascii=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(answer.columns)
        for row in answer.rows:
            writer.writerow(
                ["" if v is None else _json_default(v) if isinstance(v, Decimal | dt.date) else v for v in row]
            )
        return buf.getvalue().rstrip("\n")
    regions = regions_line(answer.answered, answer.missing)
    columns: list[list[str]] = []
    numeric = []
    for i in range(len(answer.columns)):
        values = [row[i] for row in answer.rows]
        cells = number_column(values)
        if cells is not None:
            numeric.append(i)
        columns.append(cells if cells is not None else [_cell(v) for v in values])
    rows = [list(row) for row in zip(*columns, strict=True)] if columns else []
    return text_table(answer.columns, rows, after=[*answer_notes(answer), regions], right_aligned=numeric)
