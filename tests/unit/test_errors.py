"""Stable codes survive the wire: the remote caller gets the same class, code and hint."""

from __future__ import annotations

import grpc
import pytest

from hpf.federation.errors import (
    CODE_KEY,
    HINT_KEY,
    CryptoError,
    DataError,
    FederationError,
    PlanError,
    RequestTooLarge,
    UnavailableError,
    error_for_code,
    from_rpc_error,
)


class FakeRpcError(grpc.RpcError):
    def __init__(self, status: grpc.StatusCode, details: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._status, self._details, self._metadata = status, details, metadata

    def code(self) -> grpc.StatusCode:
        return self._status

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (PlanError("bad", code="PLAN_NOT_ADDITIVE", hint="use SUM"), grpc.StatusCode.INVALID_ARGUMENT),
        (CryptoError("bad", code="CONTEXT_INVALID"), grpc.StatusCode.INVALID_ARGUMENT),
        (DataError("bad", code="NODE_EXECUTION_FAILED"), grpc.StatusCode.FAILED_PRECONDITION),
        (UnavailableError("none", code="REGIONS_UNAVAILABLE"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_round_trip_keeps_class_code_and_hint(error: FederationError, status: grpc.StatusCode) -> None:
    assert error.status == status
    meta = ((CODE_KEY, error.code),) + (((HINT_KEY, error.hint),) if error.hint else ())
    back = from_rpc_error(FakeRpcError(status, error.message, meta))
    assert type(back) is type(error)
    assert (back.code, back.message, back.hint) == (error.code, error.message, error.hint)


def test_transport_failures_without_a_code_get_stable_ones() -> None:
    assert from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connect failed")).code == "SERVER_UNREACHABLE"
    assert from_rpc_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "")).code == "DEADLINE_EXCEEDED"
    too_big = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max"))
    assert isinstance(too_big, RequestTooLarge) and too_big.code == "REQUEST_TOO_LARGE"
    answer = from_rpc_error(
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Stream removed (CLIENT: Received message larger than max)")
    )
    assert isinstance(answer, RequestTooLarge) and answer.code == "ANSWER_TOO_LARGE" and answer.hint
    busy = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"))
    assert isinstance(busy, UnavailableError) and busy.code == "SERVER_RESOURCE_EXHAUSTED"


def test_error_for_code_by_prefix() -> None:
    assert isinstance(error_for_code("PLAN_SYNTAX", "x"), PlanError)
    assert isinstance(error_for_code("CIPHERTEXT_SHAPE", "x"), CryptoError)
    assert type(error_for_code("SOMETHING_ELSE", "x")) is FederationError
    assert str(PlanError("m", code="PLAN_X", hint="h")) == "[PLAN_X] m (hint: h)"


@pytest.mark.parametrize(
    "text",
    ["\x1b[2J\x1b[H", "line\nbreak", "\u202eevil", "bell\x07", "\x9b31m", "zero\u200bwidth", "sep\u2028arator"],
)
def test_a_remote_error_is_printable_whatever_the_peer_sent(text: str) -> None:
    """Another party's status text, hint, rule and code reach the asker's terminal: no control or format character
    survives, and a code that is not of the stable form is replaced."""
    err = from_rpc_error(
        FakeRpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "refused " + text,
            (("hpf-error-code", "PLAN_X" + text), ("hpf-error-hint", text), ("hpf-error-rule", text)),
        )
    )
    assert err.code == "REMOTE_CODE_INVALID"
    for shown in (err.message, err.hint or "", err.rule or "", str(err)):
        assert all(ch.isprintable() for ch in shown), repr(shown)
    assert err.message.startswith("refused ")


def test_long_remote_text_is_cut() -> None:
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "x" * 100_000, (("hpf-error-code", "NODE_X"),)))
    assert len(err.message) <= 500 and err.code == "NODE_X"


def test_a_stated_wire_format_is_not_echoed_raw() -> None:
    """The format a request states is the sender's text: the refusal quotes it short and without escapes."""
    from hpf.federation.crypto.he import check_he_format
    from hpf.federation.errors import CryptoError

    with pytest.raises(CryptoError) as info:
        check_he_format("\x1b[2J" + "x" * 10_000, "the request")
    assert info.value.code == "HE_FORMAT_MISMATCH"
    assert "\x1b" not in info.value.message and len(info.value.message) < 300
