"""A message above a party's size limit is refused by gRPC itself (RESOURCE_EXHAUSTED), before any servicer can
attach a code: the client names it, with a stable code, which side refused what, and what to do, and the CLI
prints that as one line with a non-zero exit. A request above the coordinator's limit is ``REQUEST_TOO_LARGE``;
an answer above the client's own limit is ``ANSWER_TOO_LARGE``.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import harness
import pytest
from typer.testing import CliRunner

import hpf.client.session
import hpf.coordinator.server
from hpf.cli.app import _register, app
from hpf.federation.errors import FederationError, RequestTooLarge
from hpf.federation.trust.tls import GRPC_OPTIONS, with_options

_register()

SQL = "SELECT COUNT(*), SUM(amount_fen) FROM deposits"
ROWS = {"n0": {"deposits": [("p1", "Acme Co", "310000", dt.date(2021, 3, 1), 7, Decimal("1.25"), 0.5)]}}
LIMIT = 20_000  # bytes: well under what a question (its public key) takes, well over what a gRPC header takes


@pytest.fixture
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hpf-sizes-") as name:
        yield Path(name)


def _one_line_refusal(fed: harness.Federation, code: str) -> str:
    result = CliRunner().invoke(app, ["query", SQL, "--profile", str(fed.profile_path)])
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception  # no traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: [{code}] "), result.output
    return lines[0]


def _plain(err: FederationError) -> None:
    """The message is the product's own sentence, not gRPC's (``SERVER: Received message larger than max``)."""
    assert "SERVER:" not in err.message and "CLIENT:" not in err.message and "Stream removed" not in err.message
    assert err.hint


def test_a_request_above_the_coordinators_limit_is_request_too_large(
    monkeypatch: pytest.MonkeyPatch, tmp: Path
) -> None:
    monkeypatch.setattr(
        hpf.coordinator.server, "SERVER_OPTIONS", with_options(GRPC_OPTIONS, max_receive_message_length=LIMIT)
    )
    with harness.federation(tmp, harness.DEPOSIT_TABLES, ROWS) as fed, fed.client() as client:
        with pytest.raises(FederationError) as info:
            client.query(SQL)
        err = info.value
        assert isinstance(err, RequestTooLarge) and err.code == "REQUEST_TOO_LARGE", repr(err)
        assert "request" in err.message and f"{LIMIT} bytes" in err.message, err.message
        _plain(err)
        line = _one_line_refusal(fed, "REQUEST_TOO_LARGE")
        assert f"{LIMIT} bytes" in line


def test_an_answer_above_the_clients_limit_is_answer_too_large(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    monkeypatch.setattr(
        hpf.client.session,
        "CLIENT_CHANNEL_OPTIONS",
        with_options(GRPC_OPTIONS, max_receive_message_length=LIMIT),
    )
    with harness.federation(tmp, harness.DEPOSIT_TABLES, ROWS) as fed, fed.client() as client:
        with pytest.raises(FederationError) as info:
            client.query(SQL)
        err = info.value
        assert isinstance(err, RequestTooLarge) and err.code == "ANSWER_TOO_LARGE", repr(err)
        assert "answer" in err.message and f"{LIMIT} bytes" in err.message, err.message
        _plain(err)
        _one_line_refusal(fed, "ANSWER_TOO_LARGE")
