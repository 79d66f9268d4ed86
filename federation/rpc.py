"""What every servicer does around its handler: refusals as stable codes, failures without detail, health."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from federation.errors import FederationError, abort
from federation.logsafe import unexpected

T = TypeVar("T")


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


def add_health(server: grpc.Server, service: str) -> health.HealthServicer:
    """The standard gRPC health service, SERVING for the server and for ``service`` (returned, so the server
    may report ``service`` NOT_SERVING while it cannot answer)."""
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return servicer
