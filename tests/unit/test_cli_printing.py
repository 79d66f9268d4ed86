"""What the CLI prints never holds a control or format character, whoever wrote the text it shows."""

from __future__ import annotations

import pytest
from rich.text import Text

from cli.errors import report
from cli.output import text_table
from federation.errors import AuditError

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
