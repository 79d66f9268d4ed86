"""What every servicer does around its handler: refusals as stable codes, failures without detail, health."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hpf.federation.error_codes import REGISTRY
from hpf.federation.errors import CODE_KEY, FederationError, PlanError, abort, trailing_metadata
from hpf.federation.logsafe import unexpected
from hpf.federation.metrics import Observe

T = TypeVar("T")
_log = logging.getLogger("hpf.rpc")


def answer(
    context: grpc.ServicerContext, log: logging.Logger, what: str, internal_code: str, handler: Callable[[], T]
) -> T:
    """Run ``handler``; a FederationError goes to the caller as its status and code, anything else as
    ``internal_code`` with the log holding only the type and place of the failure."""
    try:
        return handler()
    except FederationError as err:
        log.info("%s refused: %s", what, err.code)
        abort(context, err)
        raise  # unreachable: abort raises
    except Exception as exc:  # noqa: BLE001 - the log gets type and place only, the caller a stable code
        log.error("%s failed unexpectedly: %s", what, unexpected(exc))
        abort(context, FederationError("the server failed to answer", code=internal_code))
        raise


async def abort_async(context: grpc.aio.ServicerContext, error: FederationError) -> NoReturn:
    """:func:`federation.errors.abort` on an asynchronous server."""
    await context.abort(error.status, error.message, trailing_metadata(error))
    raise AssertionError("unreachable: abort raises")


async def answer_async(
    context: grpc.aio.ServicerContext,
    log: logging.Logger,
    what: str,
    internal_code: str,
    handler: Callable[[], Awaitable[T]],
) -> T:
    """:func:`answer` on an asynchronous server: ``handler`` is awaited."""
    try:
        return await handler()
    except FederationError as err:
        log.info("%s refused: %s", what, err.code)
        await abort_async(context, err)
    except Exception as exc:  # noqa: BLE001 - the log gets type and place only, the caller a stable code
        log.error("%s failed unexpectedly: %s", what, unexpected(exc))
        await abort_async(context, FederationError("the server failed to answer", code=internal_code))


UNKNOWN_SERVICE = FederationError(
    "this server reports no health for that service", code="HEALTH_SERVICE_UNKNOWN", hint="ask for the server ('')"
)


class _Health(health.HealthServicer):
    """The standard health service, refusing a service it does not know with NOT_FOUND and a stable code (the
    standard one sets NOT_FOUND alone, which a caller cannot tell from a method that does not exist)."""

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Any:
        if request.service not in self._server_status:
            context.set_trailing_metadata(trailing_metadata(UNKNOWN_SERVICE))
            context.abort(grpc.StatusCode.NOT_FOUND, UNKNOWN_SERVICE.message)
        return super().Check(request, context)


class _AsyncHealth(health.aio.HealthServicer):
    """:class:`_Health` on an asynchronous server."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.service not in self._server_status:
            await context.abort(grpc.StatusCode.NOT_FOUND, UNKNOWN_SERVICE.message, trailing_metadata(UNKNOWN_SERVICE))
        return await super().Check(request, context)


async def add_health_async(
    server: grpc.aio.Server, service: str, observe: Observe | None = None
) -> health.aio.HealthServicer:
    """:func:`add_health` on an asynchronous server."""
    servicer = _AsyncHealth()
    add_servicer(server, health_pb2_grpc.add_HealthServicer_to_server, servicer, _log, observe)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def add_health(server: grpc.Server, service: str, observe: Observe | None = None) -> health.HealthServicer:
    """The standard gRPC health service, SERVING for the server and for ``service`` (returned, so the server
    may report ``service`` NOT_SERVING while it cannot answer)."""
    servicer = _Health()
    add_servicer(server, health_pb2_grpc.add_HealthServicer_to_server, servicer, _log, observe)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return servicer


class _Malformed:
    """What a request that is no message of its type deserializes to, so its method refuses it with a code."""


MALFORMED = _Malformed()


class _Recorder:
    """Stands in for a server to the generated ``add_*Servicer_to_server``: keeps the handlers it registers."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        pass  # the same handlers come by add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self.service = service
        self.handlers = dict(handlers)


def _reading(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def read(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:  # gRPC would answer INTERNAL, and the caller learn nothing it can act on
            return MALFORMED

    return read


def _guarded(handler: Any, log: logging.Logger, name: str, observe: Observe | None) -> grpc.RpcMethodHandler:
    """``handler`` with a request that is no message refused as RPC_MALFORMED (INVALID_ARGUMENT), and each call
    counted by ``observe`` (if given) with the code its caller got; the handler's behaviour may be a function or
    generator, or (on an asynchronous server) a coroutine or asynchronous generator."""
    if handler.request_streaming:  # every method of the federation takes one request
        raise TypeError(f"{name}: a streaming request is not guarded")
    read = _reading(handler.request_deserializer)
    behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
    make = grpc.unary_stream_rpc_method_handler if handler.response_streaming else grpc.unary_unary_rpc_method_handler
    guarded = _refusing(behavior, log, name)
    if observe is not None:
        guarded = _measured(guarded, name, observe)
    return make(guarded, request_deserializer=read, response_serializer=handler.response_serializer)


def code_of(context: grpc.ServicerContext | grpc.aio.ServicerContext, failure: BaseException | None) -> str:
    """The code a call's caller got: ``OK`` for an answer, else the stable code its refusal carries (a code no
    declaration names is ``UNREGISTERED``), ``CANCELLED`` for a call that ended early, ``INTERNAL`` for a failure
    that carries none. Never anything of the request: this is what a metric's label may hold."""
    if failure is None:
        return "OK"
    for key, value in context.trailing_metadata() or ():
        if key == CODE_KEY:
            return value if isinstance(value, str) and value in REGISTRY else "UNREGISTERED"
    if isinstance(failure, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"
    return "INTERNAL"


def _measured(behavior: Callable[..., Any], name: str, observe: Observe) -> Callable[..., Any]:
    """``behavior``, of the same kind, telling ``observe`` of each call: the method's name, the code its caller
    got, and how long it took (for a stream, until its last part)."""

    def done(context: Any, started: float, failure: BaseException | None) -> None:
        try:
            observe(name, code_of(context, failure), time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a metric never fails an answer
            _log.error("counting a call of %s failed: %s", name, unexpected(exc))

    if inspect.isasyncgenfunction(behavior):

        async def parts_async(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started, failure = time.perf_counter(), None
            try:
                async for part in behavior(request, context):
                    yield part
            except BaseException as exc:
                failure = exc
                raise
            finally:
                done(context, started, failure)

        return parts_async
    if inspect.iscoroutinefunction(behavior):

        async def one_async(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, failure = time.perf_counter(), None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                done(context, started, failure)

        return one_async
    if inspect.isgeneratorfunction(behavior):

        def parts(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started, failure = time.perf_counter(), None
            try:
                yield from behavior(request, context)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                done(context, started, failure)

        return parts

    def one(request: Any, context: grpc.ServicerContext) -> Any:
        started, failure = time.perf_counter(), None
        try:
            return behavior(request, context)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            done(context, started, failure)

    return one


def _refusing(behavior: Callable[..., Any], log: logging.Logger, name: str) -> Callable[..., Any]:
    """``behavior``, of the same kind (function, generator, coroutine, asynchronous generator), refusing MALFORMED."""

    def refusal() -> PlanError:
        error = PlanError(
            "the request cannot be read as a message of this method's type",
            code="RPC_MALFORMED",
            hint="send the request as the federation's .proto defines it (the hpf client does)",
        )
        log.info("%s refused: %s", name, error.code)
        return error

    if inspect.isasyncgenfunction(behavior):

        async def parts_async(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if request is MALFORMED:
                await abort_async(context, refusal())
            async for part in behavior(request, context):
                yield part

        return parts_async
    if inspect.iscoroutinefunction(behavior):

        async def one_async(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request is MALFORMED:
                await abort_async(context, refusal())
            return await behavior(request, context)

        return one_async
    if inspect.isgeneratorfunction(behavior):

        def parts(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if request is MALFORMED:
                abort(context, refusal())
            yield from behavior(request, context)

        return parts

    def one(request: Any, context: grpc.ServicerContext) -> Any:
        if request is MALFORMED:
            abort(context, refusal())
        return behavior(request, context)

    return one


def add_servicer(
    server: grpc.Server,
    add: Callable[[Any, Any], None],
    servicer: object,
    log: logging.Logger,
    observe: Observe | None = None,
) -> None:
    """Register ``servicer`` as the generated ``add`` would, each method refusing a request that cannot be read
    (bytes that are no message of its type, a string that is no UTF-8) with RPC_MALFORMED, not gRPC's INTERNAL.

    This is where every call of every method passes: ``observe`` (a server's
    :meth:`federation.metrics.RequestMetrics.observe`) is told of each, by the method's name and its caller's code.
    """
    recorder = _Recorder()
    add(servicer, recorder)
    if not recorder.handlers:  # generated code that registers otherwise: fail here, not serve nothing
        raise TypeError(f"{add.__name__} registered no method handlers")
    handlers = {name: _guarded(h, log, name, observe) for name, h in recorder.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(recorder.service, handlers),))
    server.add_registered_method_handlers(recorder.service, handlers)
