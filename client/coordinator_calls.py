"""The client's calls to the coordinator: what they are made on, and the one place a failed call becomes the
project's error.

A client calls the coordinator's methods on a :class:`CoordinatorTransport`: the coordinator's gRPC stub over the
client's own channel, unless one is passed to :class:`client.session.ClientSession` (a benchmark's recording stub,
a test's stand-in). Every call goes through :func:`unary` or :func:`streamed`, which turn a failed call's status and
trailing metadata into the :class:`federation.errors.FederationError` the other side raised
(:func:`federation.errors.from_rpc_error`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from hpf.federation.errors import from_rpc_error
from hpf.federation.generated import hpf_federation_pb2 as pb

Reply = TypeVar("Reply")


class AnswerStream(Protocol):
    """A streamed answer as a call hands it over: its parts in the order sent, and a way to stop it."""

    def __iter__(self) -> Iterator[pb.AnswerPart]: ...

    def cancel(self) -> bool: ...


class CoordinatorTransport(Protocol):
    """The coordinator's methods a client calls, as its gRPC stub (``CoordinatorStub``) has them."""

    def Query(self, request: pb.QueryRequest, timeout: float | None = None) -> AnswerStream: ...

    def Lookup(self, request: pb.LookupRequest, timeout: float | None = None) -> AnswerStream: ...

    def Explain(self, request: pb.ExplainRequest, timeout: float | None = None) -> pb.ExplainResponse: ...

    def GetCatalog(self, request: pb.CatalogRequest, timeout: float | None = None) -> pb.CatalogResponse: ...

    def AuditProof(self, request: pb.AuditProofRequest, timeout: float | None = None) -> pb.AuditProofResponse: ...


def unary(method: Callable[..., Reply], request: Message, timeout_s: float) -> Reply:
    """The reply of one call of ``method`` with ``request``, or the error it failed with."""
    with _remote_errors():
        return method(request, timeout=timeout_s)


def streamed(
    method: Callable[..., AnswerStream], request: Message, timeout_s: float, read: Callable[[AnswerStream], Reply]
) -> Reply:
    """What ``read`` takes from the stream one call of ``method`` with ``request`` answers, or the error it failed
    with; the stream is cancelled once ``read`` returns or fails, so nothing is left streaming."""
    with _remote_errors():
        stream = method(request, timeout=timeout_s)
        try:
            return read(stream)
        finally:
            stream.cancel()


@contextlib.contextmanager
def _remote_errors() -> Iterator[None]:
    """A failed call (``grpc.RpcError``) raised as the FederationError its status and metadata name."""
    try:
        yield
    except grpc.RpcError as err:
        raise from_rpc_error(err) from None
