"""Which kind of party may call which service: a node answers only the coordinator; people ask the coordinator.

Checked from the verified client certificate of the mutual-TLS connection. In explicit insecure mode
(local development) there is no certificate and nothing to check.
"""

from __future__ import annotations

import grpc

from hpf.federation.errors import PolicyViolation
from hpf.federation.trust.certificates import Identity
from hpf.federation.trust.servers import peer_identity


def require_caller(context: grpc.ServicerContext, kinds: tuple[str, ...], service: str) -> Identity | None:
    """The caller's identity if its certificate kind is one of ``kinds``; else PolicyViolation."""
    identity = peer_identity(context)
    if identity is None:
        return None
    if identity.kind not in kinds:
        raise PolicyViolation(
            f"{service} answers only {' or '.join(kinds)} certificates, not a {identity.kind} certificate",
            code="PARTY_NOT_ALLOWED",
            hint="people ask through the coordinator" if "coordinator" in kinds else None,
        )
    return identity
