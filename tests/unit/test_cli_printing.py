"""What the CLI prints: never a control or format character, whoever wrote the text it shows; one number format
per column of a table; and, under a DP answer, one line on what its noise hid or made negative."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from rich.text import Text

from hpf.cli.errors import report
from hpf.cli.output import noise_note, render, text_table
from hpf.client.answers import QueryAnswer
from hpf.federation.errors import AuditError

ESCAPES = "\x1b[2A\x1b[1G\x1b[2K│ 20 │ 999999 │\u202e\x07"


def test_an_error_quoting_another_partys_text_is_printed_without_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    """A local error may quote a received field (a checkpoint's time, a region's words): the line shown keeps
    the message's own line breaks and loses every control and format character."""
    code = report(
        AuditError(f"the checkpoint ({ESCAPES}) is not signed\nsecond line", code="AUDIT_CHECKPOINT_SIGNATURE")
    )
    shown = capsys.readouterr().err
    assert code == 7 and "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    assert shown.startswith("error: [AUDIT_CHECKPOINT_SIGNATURE] the checkpoint (?[2A") and "\nsecond line" in shown


def test_a_table_shows_no_escape_in_any_cell_column_or_line() -> None:
    out = text_table(
        [f"col{ESCAPES}"], [[f"value{ESCAPES}"], [Text(f"styled{ESCAPES}")]], before=[ESCAPES], after=[ESCAPES]
    )
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert "value?[2A" in out and "styled?[2A" in out


# --- one number format per column, and what noise did, in one line ------------------------------------------------


def _answer(columns: list[str], rows: list[list[object]], **extra: Any) -> QueryAnswer:
    return QueryAnswer(columns, rows, ["shanghai", "hangzhou", "nanjing"], [], "q", verified=True, **extra)


DP = {
    "mode": "dp",
    "epsilon": 1.0,
    "delta": 1e-8,
    "threshold": 259,
    "runs": 1,
    "max_runs": 1,
    "noise": [{"component": "COUNT(*)", "sd": 86.3}, {"component": "SUM(balance_fen)", "sd": 9876.5}],
}


def test_a_column_of_numbers_has_one_format_and_reads_right_aligned() -> None:
    """DECIMALs whose trailing zeros some rows lost, and integers beside them, all get the column's most digits
    after the point; a column with a number of 100,000 or more groups the thousands of every cell; years do not."""
    answer = _answer(
        ["year", "deposits", "total_yuan", "rate"],
        [
            [2024, 1500, Decimal("1234567.5"), Decimal("0.0325")],
            [2025, 98765, Decimal("12.25"), None],
            [2026, 250000, Decimal("3"), Decimal("0.1")],
        ],
    )
    assert render(answer, "table") == "\n".join(
        [
            "┏━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━┓",
            "┃ year ┃ deposits ┃   total_yuan ┃   rate ┃",
            "┡━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━┩",
            "│ 2024 │    1,500 │ 1,234,567.50 │ 0.0325 │",
            "│ 2025 │   98,765 │        12.25 │   NULL │",
            "│ 2026 │  250,000 │         3.00 │ 0.1000 │",
            "└──────┴──────────┴──────────────┴────────┘",
            "regions answered: 3",
        ]
    )


def test_json_and_csv_keep_every_value_exact() -> None:
    """The one-format rule is the table's: JSON gives DECIMALs as their exact strings, CSV as they are."""
    answer = _answer(["total_yuan", "avg"], [[Decimal("1234567.5"), 2.5], [Decimal("3"), 2.0]])
    assert json.loads(render(answer, "json"))["rows"] == [["1234567.5", 2.5], ["3", 2.0]]
    assert render(answer, "csv") == "total_yuan,avg\n1234567.5,2.5\n3,2.0"


def test_a_dp_answer_says_in_one_line_what_its_noise_hid_and_made_negative() -> None:
    """Noisy AVGs get one number of digits after the point; the suppressed groups and the negative noisy SUM of a
    column whose bounds are not negative are explained in one line under the DP line."""
    answer = _answer(
        ["status", "accounts", "balance_fen", "avg_monthly_fen"],
        [["active", 1204, 2503311, 1534.25], ["sealed", 233, -41207, 2210.0], ["closed", 51, 120, 987.125]],
        privacy=DP,
        suppressed_groups=2,
        never_negative={1: "count", 2: "sum", 3: "avg"},
    )
    assert render(answer, "table") == "\n".join(
        [
            "┏━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓",
            "┃ status ┃ accounts ┃ balance_fen ┃ avg_monthly_fen ┃",
            "┡━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩",
            "│ active │     1204 │   2,503,311 │        1534.250 │",
            "│ sealed │      233 │     -41,207 │        2210.000 │",
            "│ closed │       51 │         120 │         987.125 │",
            "└────────┴──────────┴─────────────┴─────────────────┘",
            "differentially private: epsilon 1 (delta 1e-08) spent of your budget at each region; noise standard "
            "deviation: COUNT(*) ±86.3, SUM(balance_fen) ±9,876.5",
            "2 groups with a noisy count under 259 are not shown; balance_fen is negative in 1 row: noise, the true "
            "sum is ≥ 0",
            "regions answered: 3",
        ]
    )


@pytest.mark.parametrize(
    ("suppressed", "rows", "never_negative", "line"),
    [
        (0, [[5, -1]], {0: "count", 1: "sum"}, "b is negative in 1 row: noise, the true sum is ≥ 0"),
        (1, [[5, 1]], {0: "count", 1: "sum"}, "1 group with a noisy count under 259 is not shown"),
        (
            0,
            [[-5, -1], [-2, 3]],
            {0: "count", 1: "avg"},
            "a is negative in 2 rows and b in 1 row: noise, the true values are ≥ 0",
        ),
        (
            0,
            [[-5, -1], [2, -3]],
            {0: "sum", 1: "sum"},
            "a is negative in 1 row and b in 2 rows: noise, the true sums are ≥ 0",
        ),
        (0, [[5, -1]], {0: "count"}, None),  # b may be negative: its bounds are
        (0, [[5, None]], {0: "count", 1: "sum"}, None),
    ],
)
def test_the_noise_line_names_only_what_happened(
    suppressed: int, rows: list[list[object]], never_negative: dict[int, str], line: str | None
) -> None:
    answer = _answer(["a", "b"], rows, privacy=DP, suppressed_groups=suppressed, never_negative=never_negative)
    assert noise_note(answer) == line
    assert noise_note(_answer(["a", "b"], rows, never_negative=never_negative)) is None  # exact: no noise to explain
