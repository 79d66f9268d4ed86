"""The coordinator's gRPC server: a thin servicer over :class:`coordinator.fanout.FanOut`."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import grpc

from coordinator.config import CoordinatorConfig
from coordinator.fanout import FanOut, FederatedAnswer
from federation import he, rpc
from federation.callers import require_caller
from federation.catalog import Catalog, load_catalog
from federation.envelope import EnvelopeVerifier, VerifiedEnvelope
from federation.errors import AuthError
from federation.generated import hpf_federation_pb2 as pb
from federation.generated import hpf_federation_pb2_grpc as pb_grpc
from federation.pki import Identity
from federation.tls import (
    GRPC_OPTIONS,
    add_port,
    channel_credentials,
    check_federation,
    new_server,
    require_tls,
    secure_channel,
    with_options,
)
from policies.model import RateLimit
from policies.rate_limit import RateLimiter

log = logging.getLogger("hpf.coordinator")

MAX_REQUEST_BYTES = 4 * 1024 * 1024
SERVER_OPTIONS = with_options(GRPC_OPTIONS, max_receive_message_length=MAX_REQUEST_BYTES)
# A region back after a restart is tried again within seconds, not after gRPC's default backoff (up to 120 s):
# exact answers wait for every region, so a region wrongly thought down fails them. gRPC's "min reconnect backoff"
# is also the least time a connection attempt is given (20 s by default): left at its default, so that a TLS
# handshake with a busy region (41 at once, at a coordinator's start) is not cut off and the region taken as down.
NODE_CHANNEL_OPTIONS = with_options(GRPC_OPTIONS, initial_reconnect_backoff_ms=200, max_reconnect_backoff_ms=2000)


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(
        self, fanout: FanOut, verifier: EnvelopeVerifier, catalog_text: str, rate_limit: RateLimit | None = None
    ) -> None:
        self._fanout = fanout
        self._verifier = verifier
        self._catalog = pb.CatalogResponse(
            catalog_yaml=catalog_text, digest=hashlib.sha256(catalog_text.encode()).hexdigest()
        )
        self._rate_limit = rate_limit
        self._limiter = RateLimiter()

    def _caller(self, context: grpc.ServicerContext) -> Identity | None:
        """The calling person: not revoked, and within the coordinator's per-person rate limit."""
        caller = require_caller(context, ("person",), "the coordinator")
        if caller is not None:
            self._verifier.revocations.check(caller.serial, "caller's")
            self._limiter.take(caller.common_name, self._rate_limit, party="coordinator", role="", rule="rate_limit")
        return caller

    def _question(self, context: grpc.ServicerContext, signed: pb.SignedEnvelope, operation: str) -> VerifiedEnvelope:
        """The caller's signed question, checked here too so a bad one is refused before any region sees it.

        The nodes check it again themselves; this check only saves them the work and says why early.
        """
        caller = self._caller(context)
        question = self._verifier.verify(signed, operation=operation)
        if caller is not None and question.signer.serial != caller.serial:
            raise AuthError(
                "the question is signed by someone other than the caller",
                code="AUTH_SIGNER_MISMATCH",
                hint="sign with the certificate you connect with",
            )
        return question

    def Query(self, request: pb.QueryRequest, context: grpc.ServicerContext) -> Iterator[pb.AnswerPart]:
        def handle() -> FederatedAnswer:
            question = self._question(context, request.envelope, "query")
            he.check_he_format(request.he_format, "the client's context")
            return self._fanout.query(question, request.envelope, request.public_context, request.deadline_ms)

        yield from answer_parts(rpc.answer(context, log, "query", "COORDINATOR_INTERNAL", handle))

    def Lookup(self, request: pb.LookupRequest, context: grpc.ServicerContext) -> Iterator[pb.AnswerPart]:
        def handle() -> FederatedAnswer:
            question = self._question(context, request.envelope, "lookup")
            he.check_he_format(request.he_format, "the client's context")
            return self._fanout.lookup(
                question, request.envelope, request.public_context, list(request.sealed), request.deadline_ms
            )

        yield from answer_parts(rpc.answer(context, log, "lookup", "COORDINATOR_INTERNAL", handle))

    def Explain(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> pb.ExplainResponse:
        def handle() -> pb.ExplainResponse:
            question = self._question(context, request.envelope, "explain")
            return self._fanout.explain(question, request.envelope, request.deadline_ms)

        return rpc.answer(context, log, "explain", "COORDINATOR_INTERNAL", handle)

    def AuditProof(self, request: pb.AuditProofRequest, context: grpc.ServicerContext) -> pb.AuditProofResponse:
        def handle() -> pb.AuditProofResponse:
            self._caller(context)
            return self._fanout.audit_proof(request)

        return rpc.answer(context, log, "audit proof", "COORDINATOR_INTERNAL", handle)

    def GetCatalog(self, request: pb.CatalogRequest, context: grpc.ServicerContext) -> pb.CatalogResponse:
        def handle() -> pb.CatalogResponse:
            self._caller(context)  # a person, not revoked, within the rate limit, like every other method
            return self._catalog

        return rpc.answer(context, log, "catalog", "COORDINATOR_INTERNAL", handle)


def answer_parts(answer: FederatedAnswer) -> Iterator[pb.AnswerPart]:
    """The answer as the client reads it: the head, then each region's ciphertexts, one per message."""
    head = pb.QueryResponse(
        query_id=answer.query_id,
        plan_fingerprint=answer.fingerprint,
        answered=answer.answered,
        missing=[
            pb.RegionStatus(node_id=m.node_id, code=m.code, message=m.message, rule=m.rule, hint=m.hint)
            for m in answer.missing
        ],
        timings=pb.StageTimings(**answer.timings, runs=answer.runs),
        receipts=answer.receipts,
        statements=answer.statements,
    )
    yield pb.AnswerPart(head=head)
    for node_id in answer.answered:
        for chunk, blob in enumerate(answer.ciphertexts[node_id]):
            yield pb.AnswerPart(ciphertext=pb.RegionCiphertext(node_id=node_id, chunk=chunk, ciphertext=blob))


@dataclass
class RunningCoordinator:
    server: grpc.Server
    port: int
    channels: list[grpc.Channel]

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()
        for ch in self.channels:
            ch.close()


def start_coordinator(
    config: CoordinatorConfig,
    listen: str | None = None,
    catalog: Catalog | None = None,
    addresses: Mapping[str, str] | None = None,
) -> RunningCoordinator:
    """Start the coordinator; ``addresses`` overrides the catalog's node addresses (tests on port 0)."""
    tls = require_tls(config.tls, config.insecure, source="coordinator")
    catalog = catalog or load_catalog(config.catalog)
    he.check_catalog_format(catalog.he_format, "the coordinator")
    catalog_text = config.catalog.read_text(encoding="utf-8")
    names = check_federation(tls, catalog.federation, "the coordinator")  # read from the CA once
    credentials = channel_credentials(tls) if tls is not None else None  # checked once for every node channel
    channels, stubs = [], {}
    for node in catalog.nodes:
        address = (addresses or {}).get(node.id, node.address)
        # each node is dialled by its own name, so only that node's certificate is accepted
        channel = secure_channel(
            address, credentials, options=NODE_CHANNEL_OPTIONS, server_name=names.node(node.id) if names else None
        )
        channels.append(channel)
        stubs[node.id] = pb_grpc.NodeStub(channel)
    fanout = FanOut(catalog, stubs, config.deadline_ms, config.min_deadline_ms)
    verifier = config.envelope_verifier(tls.ca if tls else None, catalog.federation)
    server = new_server(max_workers=config.max_workers, options=SERVER_OPTIONS)
    pb_grpc.add_CoordinatorServicer_to_server(
        CoordinatorServicer(fanout, verifier, catalog_text, config.rate_limit), server
    )
    port = add_port(server, listen or config.listen, tls)
    rpc.add_health(server, "hpf.v1.Coordinator")
    server.start()
    log.info("coordinator listening on port %d (%s), %d region(s)", port, "mTLS" if tls else "INSECURE", len(stubs))
    return RunningCoordinator(server=server, port=port, channels=channels)


@contextlib.contextmanager
def running_coordinator(
    config: CoordinatorConfig, addresses: Mapping[str, str] | None = None, listen: str = "127.0.0.1:0"
) -> Iterator[RunningCoordinator]:
    coordinator = start_coordinator(config, listen, addresses=addresses)
    try:
        yield coordinator
    finally:
        coordinator.stop(0)
