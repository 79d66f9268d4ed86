"""Dialling a server of the federation: by its name, over mutual TLS (or plaintext in insecure mode).

Servers are reached by name, not by address: the coordinator is ``coordinator.<federation>`` and node ``<id>``
is ``<id>.node.<federation>``, names the CA writes only into that server's certificate
(:mod:`federation.trust.server_names`). A party takes the federation's name from the CA certificate in its own
TLS config, so it knows whom it dials before any byte is sent, and opens every channel with
:func:`coordinator_target` or :func:`node_target` as the TLS target name: the handshake refuses any other
certificate of the federation, e.g. a node's certificate on a server posing as the coordinator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from hpf.federation.trust.tls import GRPC_OPTIONS, TlsConfig
from hpf.federation.trust.tls_material import load_material, server_names


def coordinator_target(tls: TlsConfig | None) -> str | None:
    """The TLS target name for dialling the coordinator (None in insecure mode: nothing to check)."""
    return server_names(tls).coordinator if tls is not None else None


def node_target(tls: TlsConfig | None, node_id: str) -> str | None:
    """The TLS target name for dialling node ``node_id`` (None in insecure mode: nothing to check)."""
    return server_names(tls).node(node_id) if tls is not None else None


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    """Channel credentials presenting our certificate and trusting only the federation CA."""
    m = load_material(tls, "client")
    return grpc.ssl_channel_credentials(root_certificates=m.ca, private_key=m.key, certificate_chain=m.cert)


def secure_channel(
    address: str,
    tls: TlsConfig | grpc.ChannelCredentials | None,
    *,
    options: Sequence[tuple[str, Any]] = GRPC_OPTIONS,
    server_name: str | None = None,
) -> grpc.Channel:
    """A channel to ``address``: mutual TLS, or plaintext when ``tls`` is None (insecure mode).

    ``tls`` may be credentials already built by :func:`channel_credentials`, so a party opening many channels
    reads and checks its certificate files once. ``server_name`` is the name the server's certificate must
    carry in place of the address's host: the federation's parties always pass the server's name
    (:func:`coordinator_target`, :func:`node_target`), so only that server's certificate is accepted.
    """
    credentials, opts = _dialling(tls, options, server_name)
    if credentials is None:
        return grpc.insecure_channel(address, options=opts)
    return grpc.secure_channel(address, credentials, options=opts)


def secure_aio_channel(
    address: str,
    tls: TlsConfig | grpc.ChannelCredentials | None,
    *,
    options: Sequence[tuple[str, Any]] = GRPC_OPTIONS,
    server_name: str | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """:func:`secure_channel` for asyncio: created on the event loop it is used from."""
    credentials, opts = _dialling(tls, options, server_name)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=opts, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=opts, interceptors=interceptors)


def _dialling(
    tls: TlsConfig | grpc.ChannelCredentials | None, options: Sequence[tuple[str, Any]], server_name: str | None
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, Any]]]:
    """The credentials (None: plaintext) and options a channel is dialled with."""
    opts = list(options)
    if tls is None:
        return None, opts
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return (channel_credentials(tls) if isinstance(tls, TlsConfig) else tls), opts
