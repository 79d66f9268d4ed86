"""One health check of a party's running server, as the party itself would dial it: over mutual TLS with the
party's own certificate, checking the server's certificate against the party's own server name.

``hpf node health`` and ``hpf coordinator health`` (a container's HEALTHCHECK) and ``hpf node doctor`` dial
through here. A server's health service answers any certificate of the federation (:func:`federation.rpc.
add_health`), so a party checks itself with its own. What a check finds:

- ``SERVING``: the server answers, and says it can serve its service;
- ``NOT_SERVING``: it answers, and says it cannot now (a node whose data cannot be read: ``NODE_UNWELL``);
- ``NOT_RUNNING``: nothing listens on the port;
- ``UNREACHABLE``: something listens there but gives no health answer over mutual TLS in time (another
  program, a server of another federation, or one that hangs).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hpf.federation.trust.channels import secure_channel
from hpf.federation.trust.tls import TlsConfig

State = Literal["SERVING", "NOT_SERVING", "NOT_RUNNING", "UNREACHABLE"]
DEFAULT_TIMEOUT_S = 3.0
NODE_SERVICE = "hpf.v1.Node"  # the service whose health a node reports (NOT_SERVING while its data cannot be read)
COORDINATOR_SERVICE = "hpf.v1.Coordinator"
_ANY_HOST = {"", "0.0.0.0", "::", "[::]", "*"}


@dataclass(frozen=True)
class Health:
    """What one check found at ``address``; ``detail`` says why, for a state other than SERVING (no secret)."""

    state: State
    address: str
    detail: str = ""

    @property
    def serving(self) -> bool:
        return self.state == "SERVING"

    def line(self) -> str:
        """One line: the state, where, and why.

        >>> Health("NOT_RUNNING", "127.0.0.1:50051", "nothing listens there").line()
        'NOT_RUNNING 127.0.0.1:50051: nothing listens there'
        """
        return f"{self.state} {self.address}" + (f": {self.detail}" if self.detail else "")


def local_address(listen: str) -> str:
    """Where a server listening on ``listen`` is dialled from its own host (a wildcard host is this host).

    >>> local_address("0.0.0.0:50051"), local_address("[::]:7"), local_address("10.0.0.5:50051")
    ('127.0.0.1:50051', '127.0.0.1:7', '10.0.0.5:50051')
    """
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in _ANY_HOST else listen


def listening(address: str, timeout: float) -> bool:
    """Whether something accepts a TCP connection at ``address`` (host:port) within ``timeout`` seconds."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def check_health(
    address: str,
    tls: TlsConfig | None,
    server_name: str | None,
    service: str,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Health:
    """Ask the server at ``address`` for the health of ``service``, over mutual TLS with ``tls`` (the caller's
    own files; None: plaintext) and expecting ``server_name`` on the server's certificate. When something listens
    there, the certificate files are read: a ``ConfigError`` or ``AuthError`` says what is wrong with them."""
    if not listening(address, timeout):
        return Health("NOT_RUNNING", address, "nothing listens there")
    channel = secure_channel(address, tls, server_name=server_name)  # reads and checks the files first
    try:
        stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                why = f"no health answer within {timeout:g} s"
            elif code == grpc.StatusCode.UNAVAILABLE:
                why = "it listens but gives no health answer over mutual TLS (another program, or another federation)"
            else:
                why = f"its health check failed ({code.name if code else 'unknown'})"
            return Health("UNREACHABLE", address, why)
        if answer.status == health_pb2.HealthCheckResponse.SERVING:
            return Health("SERVING", address)
        return Health("NOT_SERVING", address, "the server says it cannot serve now: see its log")
    finally:
        channel.close()
