"""When a request reached the coordinator: its wait for the regions runs from then, not from when a worker took it.

gRPC's synchronous server calls its interceptors on the thread that takes each call off the wire, before the
call waits for one of the server's workers; :class:`ArrivalStamp` notes the time there, and the handler reads it
with :func:`arrived_at` on the worker that runs it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

_ARRIVED: contextvars.ContextVar[float | None] = contextvars.ContextVar("hpf_arrived_at", default=None)


def arrived_at() -> float:
    """The ``time.monotonic()`` at which the request this worker runs arrived (now, outside a stamped call)."""
    stamped = _ARRIVED.get()
    return time.monotonic() if stamped is None else stamped


class ArrivalStamp(grpc.ServerInterceptor):
    """Stamps each unary-unary and unary-stream call with its arrival time (the coordinator has no other kind)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        arrived = time.monotonic()
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            def run_unary(request: Any, context: grpc.ServicerContext) -> Any:
                token = _ARRIVED.set(arrived)
                try:
                    return unary(request, context)
                finally:
                    _ARRIVED.reset(token)

            return grpc.unary_unary_rpc_method_handler(
                run_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            def run_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                token = _ARRIVED.set(arrived)
                try:
                    yield from stream(request, context)
                finally:
                    _ARRIVED.reset(token)

            return grpc.unary_stream_rpc_method_handler(
                run_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
