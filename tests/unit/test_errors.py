"""Stable codes survive the wire: the remote caller gets the same class, code and hint."""

from __future__ import annotations

import grpc
import pytest

from federation.errors import (
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


def test_error_for_code_by_prefix() -> None:
    assert isinstance(error_for_code("PLAN_SYNTAX", "x"), PlanError)
    assert isinstance(error_for_code("CIPHERTEXT_SHAPE", "x"), CryptoError)
    assert type(error_for_code("SOMETHING_ELSE", "x")) is FederationError
    assert str(PlanError("m", code="PLAN_X", hint="h")) == "[PLAN_X] m (hint: h)"
