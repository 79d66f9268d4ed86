"""The coordinator's gRPC server: a thin servicer over :class:`coordinator.fanout.FanOut`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import grpc

from coordinator.arrival import ArrivalStamp, arrived_at
from coordinator.config import CoordinatorConfig
from coordinator.fanout import FanOut, FederatedAnswer
from coordinator.node_channels import NodeChannels
from coordinator.region_health import RegionHealth
from federation import he, rpc
from federation.callers import require_caller
from federation.catalog import CatalogFile
from federation.catalog_watch import CatalogWatch
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
    with_options,
)
from policies.model import RateLimit
from policies.rate_limit import RateLimiter

log = logging.getLogger("hpf.coordinator")

MAX_REQUEST_BYTES = 4 * 1024 * 1024
SERVER_OPTIONS = with_options(GRPC_OPTIONS, max_receive_message_length=MAX_REQUEST_BYTES)


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    """Every method first looks whether the catalog file changed, and takes the change where it is safe."""

    def __init__(
        self,
        fanout: FanOut,
        verifier: EnvelopeVerifier,
        catalog: CatalogWatch,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self._fanout = fanout
        self._verifier = verifier
        self._catalog = catalog
        self._rate_limit = rate_limit
        self._limiter = RateLimiter()

    def _caller(self, context: grpc.ServicerContext) -> Identity | None:
        """The calling person: not revoked, and within the coordinator's per-person rate limit."""
        self._catalog.current()  # every method starts here: a changed catalog is taken before the request
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
            return self._fanout.query(
                question, request.envelope, request.public_context, request.deadline_ms, arrived_at()
            )

        yield from answer_parts(rpc.answer(context, log, "query", "COORDINATOR_INTERNAL", handle))

    def Lookup(self, request: pb.LookupRequest, context: grpc.ServicerContext) -> Iterator[pb.AnswerPart]:
        def handle() -> FederatedAnswer:
            question = self._question(context, request.envelope, "lookup")
            he.check_he_format(request.he_format, "the client's context")
            return self._fanout.lookup(
                question,
                request.envelope,
                request.public_context,
                list(request.sealed),
                request.deadline_ms,
                arrived_at(),
            )

        yield from answer_parts(rpc.answer(context, log, "lookup", "COORDINATOR_INTERNAL", handle))

    def Explain(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> pb.ExplainResponse:
        def handle() -> pb.ExplainResponse:
            question = self._question(context, request.envelope, "explain")
            return self._fanout.explain(question, request.envelope, request.deadline_ms, arrived_at())

        return rpc.answer(context, log, "explain", "COORDINATOR_INTERNAL", handle)

    def AuditProof(self, request: pb.AuditProofRequest, context: grpc.ServicerContext) -> pb.AuditProofResponse:
        def handle() -> pb.AuditProofResponse:
            self._caller(context)
            return self._fanout.audit_proof(request)

        return rpc.answer(context, log, "audit proof", "COORDINATOR_INTERNAL", handle)

    def GetCatalog(self, request: pb.CatalogRequest, context: grpc.ServicerContext) -> pb.CatalogResponse:
        def handle() -> pb.CatalogResponse:
            self._caller(context)  # a person, not revoked, within the rate limit, like every other method
            in_force = self._catalog.in_force  # the text and the digest of one file
            return pb.CatalogResponse(catalog_yaml=in_force.text, digest=in_force.digest)

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
    nodes: NodeChannels
    catalog: CatalogWatch
    health: RegionHealth

    @property
    def channels(self) -> list[grpc.Channel]:
        """The channel each region is dialled on now, in the catalog's order."""
        return self.nodes.channels

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()
        self.health.stop()
        self.nodes.close()


def start_coordinator(
    config: CoordinatorConfig,
    listen: str | None = None,
    addresses: Mapping[str, str] | None = None,
) -> RunningCoordinator:
    """Start the coordinator on the catalog file ``config.catalog``; ``addresses`` overrides the catalog's node
    addresses (tests on port 0)."""
    tls = require_tls(config.tls, config.insecure, source="coordinator")
    watch = CatalogWatch(config.catalog, "coordinator")
    catalog = watch.in_force.catalog
    he.check_catalog_format(catalog.he_format, "the coordinator")
    names = check_federation(tls, catalog.federation, "the coordinator")  # read from the CA once
    credentials = channel_credentials(tls) if tls is not None else None  # checked once for every node channel
    verifier = config.envelope_verifier(tls.ca if tls else None, catalog.federation)
    nodes = NodeChannels(credentials, names, addresses)
    health = RegionHealth(nodes.by_id)
    fanout = FanOut(catalog, nodes.dial(catalog), config.deadline_ms, config.min_deadline_ms, health)

    def take(in_force: CatalogFile, new: CatalogFile) -> None:
        """A changed catalog a running coordinator may take: a region at a new address is dialled there (its
        tables and regions are the same, so the plans are too)."""
        if [n.address for n in new.catalog.nodes] != [n.address for n in in_force.catalog.nodes]:
            fanout.use_stubs(nodes.dial(new.catalog))

    watch.on_change(take)
    try:
        server = new_server(max_workers=config.max_workers, options=SERVER_OPTIONS, interceptors=[ArrivalStamp()])
        servicer = CoordinatorServicer(fanout, verifier, watch, config.rate_limit)
        rpc.add_servicer(server, pb_grpc.add_CoordinatorServicer_to_server, servicer, log)
        port = add_port(server, listen or config.listen, tls)
        rpc.add_health(server, "hpf.v1.Coordinator")
        server.start()
        health.start()
    except BaseException:
        health.stop()
        nodes.close()
        raise
    regions = len(catalog.nodes)
    log.info("coordinator listening on port %d (%s), %d region(s)", port, "mTLS" if tls else "INSECURE", regions)
    return RunningCoordinator(server=server, port=port, nodes=nodes, catalog=watch, health=health)


@contextlib.contextmanager
def running_coordinator(
    config: CoordinatorConfig, addresses: Mapping[str, str] | None = None, listen: str = "127.0.0.1:0"
) -> Iterator[RunningCoordinator]:
    coordinator = start_coordinator(config, listen, addresses=addresses)
    try:
        yield coordinator
    finally:
        coordinator.stop(0)
