"""Serving over mutual TLS: a server's credentials, its gRPC server and port, and who is calling it.

A server requires and verifies a client certificate from the federation CA; its own certificate must carry its
server name (:func:`federation.trust.tls_material.load_material`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent import futures
from functools import lru_cache
from typing import Any

import grpc

from hpf.federation.errors import ConfigError
from hpf.federation.trust.certificates import Identity, read_identity
from hpf.federation.trust.tls import GRPC_OPTIONS, TlsConfig
from hpf.federation.trust.tls_material import load_material


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate from the federation CA."""
    m = load_material(tls, "server")
    return grpc.ssl_server_credentials([(m.key, m.cert)], root_certificates=m.ca, require_client_auth=True)


def peer_identity(context: grpc.ServicerContext) -> Identity | None:
    """The verified client certificate's identity, or None on a connection without one (insecure).

    Raises AuthError (``IDENTITY_MISSING`` / ``IDENTITY_INVALID`` / ``IDENTITY_INCONSISTENT``) when the
    certificate carries no usable hpf identity.
    """
    pems = list(context.auth_context().get("x509_pem_cert") or ())
    if not pems:
        return None
    return _identity_of(bytes(pems[0]))


@lru_cache(maxsize=256)
def _identity_of(pem: bytes) -> Identity:
    """A peer's identity, parsed once per certificate (a party sees the same few peers on every call)."""
    return read_identity(pem)


def new_server(
    *,
    max_workers: int = 16,
    options: Sequence[tuple[str, Any]] = GRPC_OPTIONS,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> grpc.Server:
    """A gRPC server with the federation's message-size limits."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), options=list(options), interceptors=list(interceptors)
    )


def new_aio_server(
    *, options: Sequence[tuple[str, Any]] = GRPC_OPTIONS, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
) -> grpc.aio.Server:
    """An asyncio gRPC server with the federation's message-size limits (created on the loop it serves from)."""
    return grpc.aio.server(options=list(options), interceptors=list(interceptors))


def add_port(server: grpc.Server | grpc.aio.Server, address: str, tls: TlsConfig | None) -> int:
    """Bind ``address`` (port 0 picks a free one) with mutual TLS, or plaintext if ``tls`` is None."""
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(tls))
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(
            f"cannot listen on {address}",
            code="SERVER_BIND_FAILED",
            hint="check the address (host:port) and that no other process holds the port",
        )
    return port
