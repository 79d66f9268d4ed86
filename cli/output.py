"""Printing a federated answer as a table, JSON or CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from federation.client import QueryAnswer


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


def withheld_note(answer: QueryAnswer) -> str | None:
    """One line saying how many groups some region withheld, or None when none was."""
    if not answer.withheld_groups:
        return None
    return (
        f"{answer.withheld_groups} group(s) withheld: fewer rows than the minimum group size at some region; "
        "their aggregates are NULL"
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
    table = Table(show_lines=False)
    for col in answer.columns:
        table.add_column(col, overflow="fold")
    for row in answer.rows:
        table.add_row(*(_cell(v) for v in row))
    out = Console(file=io.StringIO(), width=160, force_terminal=False, color_system=None)
    out.print(table)
    note = withheld_note(answer)
    if note:
        out.print(note)
    regions = f"regions answered: {len(answer.answered)}"
    if answer.missing:
        regions += "; missing: " + ", ".join(f"{m['node_id']} ({m['code']})" for m in answer.missing)
    out.print(regions)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    return text.rstrip("\n")
