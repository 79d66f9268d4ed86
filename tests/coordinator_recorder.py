"""A recording of everything the coordinator receives, for the secrecy tests (test_secrecy, test_lookup_secrecy).

:func:`recording` patches the coordinator module so a federation started inside it records, on the
coordinator's server, every request a client sends it, and on its channels to the nodes, every answer (or
error status) a node sends back; it also keeps what the coordinator sends on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest

import hpf.coordinator.node_channels
import hpf.coordinator.server
from hpf.federation.trust.channels import secure_aio_channel


@dataclasses.dataclass
class Received:
    """One thing the coordinator received: a message (or a failed call's status) and who sent it."""

    source: str  # "client" or "node"
    method: str  # the gRPC method, e.g. /hpf.v1.Coordinator/Query or /hpf.v1.Node/ComputePartial
    message: Any  # the parsed message; None for a node's error status
    wire: bytes  # the message's bytes (as received from the client; re-serialized for a node's answer)
    text: str = ""  # a node's error: status details and trailing metadata


class CoordinatorRecorder(grpc.aio.ServerInterceptor, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Records every message the coordinator receives: requests on its server, answers on its node channels.

    It also keeps what the coordinator sends (its replies to the client, its requests to nodes) so the test can
    check the recording is complete and that the coordinator forwards the signed question untouched.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[Any] = []  # what the coordinator answered the client (each part of a streamed answer)
        self.node_requests: list[tuple[str, Any]] = []  # what the coordinator asked nodes
        self.health_probes: list[Any] = []  # the coordinator's health checks of the regions (a service name each)
        self._lock = threading.Lock()

    # -- the coordinator's server: everything a client sends it, byte for byte
    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or (handler.unary_unary is None and handler.unary_stream is None):
            return handler
        method, parse = details.method, handler.request_deserializer

        def deserialize(data: bytes) -> Any:
            message = parse(data) if parse is not None else data
            with self._lock:
                self.received.append(Received("client", method, message, bytes(data)))
            return message

        if handler.unary_stream is not None:
            streamed = handler.unary_stream
            if not inspect.isasyncgenfunction(streamed):  # health's Watch writes on its context: nothing to keep

                async def writes(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    return await streamed(request, context)

                return grpc.unary_stream_rpc_method_handler(
                    writes, request_deserializer=deserialize, response_serializer=handler.response_serializer
                )

            async def parts(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async for part in streamed(request, context):  # a streamed answer: every part it sends is kept
                    with self._lock:
                        self.replies.append(part)
                    yield part

            return grpc.unary_stream_rpc_method_handler(
                parts, request_deserializer=deserialize, response_serializer=handler.response_serializer
            )
        inner = handler.unary_unary

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            reply = await inner(request, context)
            with self._lock:
                self.replies.append(reply)
            return reply

        return grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )

    @property
    def heads(self) -> list[Any]:
        """The heads of the streamed answers the coordinator sent (who answered, statements, timings)."""
        with self._lock:
            return [r.head for r in self.replies if hasattr(r, "head") and r.HasField("head")]

    # -- the coordinator's channels to the nodes: every answer (or error status) a node sends back
    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method.startswith("/grpc.health.v1.Health/"):  # the coordinator's probes: no question, no answer
            with self._lock:
                self.health_probes.append(request)
            return await continuation(details, request)
        with self._lock:
            self.node_requests.append((method, request))
        call = await continuation(details, request)
        try:
            reply = await call
        except grpc.aio.AioRpcError as err:
            metadata = " ".join(f"{k}={v}" for k, v in (err.trailing_metadata() or ()))
            text = f"{err.code()} {err.details()} {metadata}"
            got = Received("node", method, None, text.encode(), text)
        else:
            got = Received("node", method, reply, reply.SerializeToString())
        with self._lock:
            self.received.append(got)
        return call  # awaited again by the coordinator: the same reply, or the same error

    def from_nodes(self, expected: int, timeout_s: float = 10.0) -> list[Received]:
        """The nodes' answers, once all ``expected`` of them are recorded (done callbacks may lag the call)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                got = [r for r in self.received if r.source == "node"]
            if len(got) >= expected or time.monotonic() > deadline:
                return got
            time.sleep(0.01)

    def from_client(self, method_suffix: str) -> list[Any]:
        """The requests clients sent the coordinator on the method ending with ``method_suffix`` (e.g. "/Lookup")."""
        with self._lock:
            return [r.message for r in self.received if r.source == "client" and r.method.endswith(method_suffix)]


@contextlib.contextmanager
def recording(patch: pytest.MonkeyPatch) -> Iterator[CoordinatorRecorder]:
    """A recorder for the coordinator of every federation started while ``patch`` is active."""
    recorder = CoordinatorRecorder()

    def recording_channel(address: str, tls: Any, **kwargs: Any) -> grpc.aio.Channel:
        return secure_aio_channel(address, tls, interceptors=[recorder], **kwargs)

    def recording_server(*, options: Any = (), interceptors: Any = ()) -> grpc.aio.Server:
        return grpc.aio.server(options=list(options), interceptors=[*interceptors, recorder])

    patch.setattr(hpf.coordinator.node_channels, "secure_aio_channel", recording_channel)
    patch.setattr(hpf.coordinator.server, "new_aio_server", recording_server)
    yield recorder
