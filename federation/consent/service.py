"""A centre's consent service over gRPC (``hpf consent serve``), for the centre's own systems.

A counter's or an online service's back end records a person's consent to a bank and asks the centre's consent
service for the token, as ``hpf consent grant`` issues them from a file: one signed Merkle root per request, one
token per person (:mod:`federation.consent.tokens`). The request names the people, so only the centre's own systems may
call: a mutual-TLS connection from a person certificate of the federation CA, of the service's own region, with the
role caseworker or operator (``PARTY_NOT_ALLOWED`` otherwise). Nothing about a person is logged: a refusal logs its
code, a grant its count.

:class:`GrantHandler` knows nothing of gRPC; :class:`ConsentIssuerServicer` is the thin servicer around it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from hpf.federation import rpc
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import MAX_DAYS, Issuer, check_terms, issue_batch
from hpf.federation.errors import PlanError, PolicyViolation, from_rpc_error
from hpf.federation.generated import hpf_consent_pb2 as cpb
from hpf.federation.generated import hpf_consent_pb2_grpc as cpb_grpc
from hpf.federation.person_id import validate_person_id
from hpf.federation.trust.callers import require_caller
from hpf.federation.trust.certificates import Identity
from hpf.federation.trust.channels import secure_channel
from hpf.federation.trust.servers import add_port, new_server
from hpf.federation.trust.tls import TlsConfig

log = logging.getLogger("hpf.consent.service")

CALLER_ROLES = ("caseworker", "operator")  # a centre's own staff and systems; never a bank
MAX_PEOPLE = 100_000  # people in one request: a day's consents of a large centre, far below a message's limit


@dataclass(frozen=True)
class GrantHandler:
    """Grants for one issuer, to the systems of one region (``region``: the service's own centre)."""

    issuer: Issuer
    region: str
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def admit(self, caller: Identity | None) -> None:
        """PolicyViolation ``PARTY_NOT_ALLOWED`` unless the caller is a system of this centre (None: insecure mode,
        local development, where nobody is checked)."""
        if caller is None:
            return
        if caller.kind != "person" or caller.role not in CALLER_ROLES or caller.region != self.region:
            raise PolicyViolation(
                f"the consent service of {self.region} grants only to its own centre's systems (a caseworker or "
                f"operator certificate of {self.region})",
                code="PARTY_NOT_ALLOWED",
                hint="a bank receives its tokens from the centre that recorded the consent, never from this service",
            )

    def grant(self, request: cpb.GrantRequest) -> cpb.GrantResponse:
        people = list(request.person_ids)
        if not 1 <= len(people) <= MAX_PEOPLE:
            raise PlanError(f"a grant names 1 to {MAX_PEOPLE:,} people", code="CONSENT_TERMS_INVALID")
        if not 1 <= request.days <= MAX_DAYS:
            raise PlanError(f"a consent lasts 1 to {MAX_DAYS} days", code="CONSENT_TERMS_INVALID")
        ids = []
        for place, pid in enumerate(people, start=1):
            try:
                ids.append(validate_person_id(pid))
            except PlanError as err:  # its place, never the identifier
                raise PlanError(f"person {place}: {err.message}", code=err.code) from None
        not_after = int((self.now().replace(microsecond=0) + dt.timedelta(days=request.days)).timestamp())
        try:
            check_terms(self.issuer.id, request.grantee, request.purpose, request.facts, not_after)
        except ValueError as err:
            raise PlanError(str(err), code="CONSENT_TERMS_INVALID") from None
        tokens = issue_batch(
            self.issuer.key,
            self.issuer.id,
            ids,
            grantee=request.grantee,
            purpose=request.purpose,
            facts=list(request.facts),
            not_after=not_after,
        )
        log.info("granted %d consent(s) in one batch", len(tokens))
        return cpb.GrantResponse(
            issuer=self.issuer.id,
            tokens=[consent.token_text(t) for t in tokens],
            grant_ids=[t.grant.grant_id for t in tokens],
            not_after=not_after,
        )


class ConsentIssuerServicer(cpb_grpc.ConsentIssuerServicer):
    def __init__(self, handler: GrantHandler) -> None:
        self._handler = handler

    def Grant(self, request: cpb.GrantRequest, context: grpc.ServicerContext) -> cpb.GrantResponse:  # noqa: N802
        def handle() -> cpb.GrantResponse:
            self._handler.admit(require_caller(context, ("person",), "the consent service"))
            return self._handler.grant(request)

        return rpc.answer(context, log, "grant", "CONSENT_SERVICE_FAILED", handle)


@contextlib.contextmanager
def serving(handler: GrantHandler, listen: str, tls: TlsConfig | None) -> Iterator[int]:
    """Serve ``handler`` on ``listen`` (port 0: a free one) while inside; yields the bound port."""
    server = new_server(max_workers=4)
    rpc.add_servicer(server, cpb_grpc.add_ConsentIssuerServicer_to_server, ConsentIssuerServicer(handler), log)
    port = add_port(server, listen, tls)
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


def request_grants(
    address: str,
    tls: TlsConfig | None,
    *,
    server_name: str | None,
    person_ids: list[str],
    grantee: bytes,
    purpose: str,
    facts: list[str],
    days: int,
    timeout_s: float = 60.0,
) -> cpb.GrantResponse:
    """A centre's system asking its consent service for tokens; a refusal is raised as its FederationError."""
    request = cpb.GrantRequest(person_ids=person_ids, grantee=grantee, purpose=purpose, facts=facts, days=days)
    with secure_channel(address, tls, server_name=server_name) as channel:
        try:
            response: cpb.GrantResponse = cpb_grpc.ConsentIssuerStub(channel).Grant(request, timeout=timeout_s)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
    return response
