"""Printing a federated answer as a table, JSON or CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from federation.errors import printable

if TYPE_CHECKING:
    from federation.client import QueryAnswer


def text_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str | Text]],
    *,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
) -> str:
    """Lines, a table and more lines as plain text: 160 columns, no colour, no trailing newline.

    Every string is printed as it is, never read as rich markup: names and values come from queries and logs.
    Nor is any control or format character printed (a terminal escape in a value another party sent would
    redraw the screen): each becomes ``?``.
    """
    out = Console(file=io.StringIO(), width=160, force_terminal=False, color_system=None)
    for line in before:
        out.print(_shown(line), highlight=False, markup=False)
    table = Table(show_lines=False)
    for column in columns:
        table.add_column(Text(_shown(column)), overflow="fold")
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


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e-3 or abs(value) >= 1e15 else f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 100_000 else str(value)
    return str(value)


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
    """What a DP answer carries: epsilon spent, the noise's standard deviation, the groups suppressed."""
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
    if answer.suppressed_groups:
        line += f"; {answer.suppressed_groups} group(s) with a noisy count under {p['threshold']} not shown"
    return line


def verification_note(answer: QueryAnswer) -> str | None:
    """One line when the answer could not be checked against the regions' own keys."""
    if answer.verified:
        return None
    return (
        "unverified: this profile pins no catalog, so the regions' signatures on the answer were not checked "
        "(name the federation catalog in the profile: 'catalog: federation.yaml')"
    )


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
    notes = [n for n in (withheld_note(answer), privacy_note(answer), verification_note(answer)) if n]
    regions = regions_line(answer.answered, answer.missing)
    rows = ([_cell(v) for v in row] for row in answer.rows)
    return text_table(answer.columns, rows, after=[*notes, regions])
