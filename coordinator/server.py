"""The coordinator's gRPC server: a thin servicer over :class:`coordinator.fanout.FanOut`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from hpf.coordinator.config import CoordinatorConfig
from hpf.coordinator.event_loop import EventLoopThread
from hpf.coordinator.fanout import FanOut
from hpf.coordinator.metrics import CoordinatorMetrics
from hpf.coordinator.node_channels import NodeChannels
from hpf.coordinator.outcome import FederatedAnswer
from hpf.coordinator.region_health import RegionHealth
from hpf.federation import rpc
from hpf.federation.catalog import CatalogFile
from hpf.federation.catalog_watch import CatalogWatch
from hpf.federation.crypto import he
from hpf.federation.errors import AuthError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.metrics import MetricsServer, serve_metrics
from hpf.federation.trust.callers import require_caller
from hpf.federation.trust.certificates import Identity
from hpf.federation.trust.channels import channel_credentials
from hpf.federation.trust.envelope import EnvelopeVerifier, VerifiedEnvelope
from hpf.federation.trust.servers import add_port, new_aio_server
from hpf.federation.trust.tls import GRPC_OPTIONS, TlsConfig, require_tls, with_options
from hpf.federation.trust.tls_material import check_federation
from hpf.policies.model import RateLimit
from hpf.policies.rate_limit import RateLimiter

log = logging.getLogger("hpf.coordinator")
T = TypeVar("T")

MAX_REQUEST_BYTES = 4 * 1024 * 1024
SERVER_OPTIONS = with_options(GRPC_OPTIONS, max_receive_message_length=MAX_REQUEST_BYTES)


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    """Every method first looks whether the catalog file changed, and takes the change where it is safe.

    The methods are coroutines on the coordinator's event loop: what takes the processor (checking the question's
    signature, planning, checking the answers) runs on the loop's workers, and the wait for the regions holds no
    thread at all, so a stalled region delays only the questions sent to it."""

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

    async def _caller(self, context: grpc.aio.ServicerContext) -> Identity | None:
        """The calling person: not revoked, and within the coordinator's per-person rate limit."""
        # every method starts here: a changed catalog is taken before the request, read on a worker (a catalog may
        # be megabytes of YAML: the loop, and every question waiting on it, must not wait for the reading)
        await asyncio.to_thread(self._catalog.current)
        caller = require_caller(context, ("person",), "the coordinator")
        if caller is not None:
            await asyncio.to_thread(self._admit, caller)
        return caller

    def _admit(self, caller: Identity) -> None:
        self._verifier.revocations.check(caller.serial, "caller's")
        self._limiter.take(caller.common_name, self._rate_limit, party="coordinator", role="", rule="rate_limit")

    async def _question(
        self, context: grpc.aio.ServicerContext, signed: pb.SignedEnvelope, operation: str
    ) -> VerifiedEnvelope:
        """The caller's signed question, checked here too so a bad one is refused before any region sees it.

        The nodes check it again themselves; this check only saves them the work and says why early.
        """
        caller = await self._caller(context)
        question = await asyncio.to_thread(self._verifier.verify, signed, operation=operation)
        if caller is not None and question.signer.serial != caller.serial:
            raise AuthError(
                "the question is signed by someone other than the caller",
                code="AUTH_SIGNER_MISMATCH",
                hint="sign with the certificate you connect with",
            )
        return question

    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.AnswerPart]:
        arrived = time.monotonic()  # the wait for the regions runs from here

        async def handle() -> FederatedAnswer:
            question = await self._question(context, request.envelope, "query")
            he.check_he_format(request.he_format, "the client's context")
            return await self._fanout.query(
                question, request.envelope, request.public_context, request.deadline_ms, arrived
            )

        answer = await rpc.answer_async(context, log, "query", "COORDINATOR_INTERNAL", handle)
        for part in answer_parts(answer):
            yield part

    async def Lookup(
        self, request: pb.LookupRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AnswerPart]:
        arrived = time.monotonic()

        async def handle() -> FederatedAnswer:
            question = await self._question(context, request.envelope, "lookup")
            he.check_he_format(request.he_format, "the client's context")
            return await self._fanout.lookup(
                question,
                request.envelope,
                request.public_context,
                request.sealed,
                request.deadline_ms,
                arrived,
                sealed_consent=request.sealed_consent,
            )

        answer = await rpc.answer_async(context, log, "lookup", "COORDINATOR_INTERNAL", handle)
        for part in answer_parts(answer):
            yield part

    async def Explain(self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        arrived = time.monotonic()

        async def handle() -> pb.ExplainResponse:
            question = await self._question(context, request.envelope, "explain")
            return await self._fanout.explain(question, request.envelope, request.deadline_ms, arrived)

        return await rpc.answer_async(context, log, "explain", "COORDINATOR_INTERNAL", handle)

    async def AuditProof(
        self, request: pb.AuditProofRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuditProofResponse:
        async def handle() -> pb.AuditProofResponse:
            await self._caller(context)
            return await self._fanout.audit_proof(request)

        return await rpc.answer_async(context, log, "audit proof", "COORDINATOR_INTERNAL", handle)

    async def GetCatalog(self, request: pb.CatalogRequest, context: grpc.aio.ServicerContext) -> pb.CatalogResponse:
        async def handle() -> pb.CatalogResponse:
            await self._caller(context)  # a person, not revoked, within the rate limit, like every other method
            in_force = self._catalog.in_force  # the text and the digest of one file
            return pb.CatalogResponse(catalog_yaml=in_force.text, digest=in_force.digest)

        return await rpc.answer_async(context, log, "catalog", "COORDINATOR_INTERNAL", handle)


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
    server: grpc.aio.Server
    port: int
    nodes: NodeChannels
    catalog: CatalogWatch
    health: RegionHealth
    loop: EventLoopThread
    metrics: CoordinatorMetrics
    metrics_server: MetricsServer | None = None  # serving metrics.registry when the config has a metrics section

    @property
    def metrics_port(self) -> int | None:
        """The port the metrics endpoint listens on (None: the coordinator serves no metrics)."""
        return None if self.metrics_server is None else self.metrics_server.port

    @property
    def channels(self) -> list[grpc.aio.Channel]:
        """The channel each region is dialled on now, in the catalog's order (used on the coordinator's loop)."""
        return self.nodes.channels

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the coordinator's event loop (where its channels live), and wait for it."""
        return self.loop.run(coroutine, timeout)

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving (questions still running get ``grace`` seconds), probing and dialling; once is enough."""
        if self.loop.closed:
            return

        async def stopping() -> None:
            await self.server.stop(grace)
            await self.health.stop()
            await self.nodes.close()

        try:
            self.loop.run(stopping())
        finally:
            self.loop.close()
            if self.metrics_server is not None:
                self.metrics_server.stop()


def start_coordinator(
    config: CoordinatorConfig,
    listen: str | None = None,
    addresses: Mapping[str, str] | None = None,
) -> RunningCoordinator:
    """Start the coordinator on the catalog file ``config.catalog``; ``addresses`` overrides the catalog's node
    addresses (tests on port 0). It serves from an event loop on a thread of its own, with ``config.max_workers``
    threads for the work that takes the processor."""
    tls = require_tls(config.tls, config.insecure, source="coordinator")
    watch = CatalogWatch(config.catalog, "coordinator")
    catalog = watch.in_force.catalog
    he.check_catalog_format(catalog.he_format, "the coordinator")
    names = check_federation(tls, catalog.federation, "the coordinator")  # read from the CA once
    credentials = channel_credentials(tls) if tls is not None else None  # checked once for every node channel
    verifier = config.envelope_verifier(tls.ca if tls else None, catalog.federation)
    nodes = NodeChannels(credentials, names, addresses)
    health = RegionHealth(nodes.by_id)
    metrics = CoordinatorMetrics()  # this coordinator's own registry
    metrics.watch_regions(health, lambda: len(watch.in_force.catalog.nodes))
    loop = EventLoopThread(config.max_workers)

    async def starting() -> tuple[grpc.aio.Server, int]:
        fanout = FanOut(catalog, nodes.dial(catalog), config.deadline_ms, config.min_deadline_ms, health)

        loop = asyncio.get_running_loop()

        def take(in_force: CatalogFile, new: CatalogFile) -> None:
            """A changed catalog a running coordinator may take: a region at a new address is dialled there (its
            tables and regions are the same, so the plans are too). The file is read on a worker; the channels are
            made on the loop, where they are used."""
            if [n.address for n in new.catalog.nodes] == [n.address for n in in_force.catalog.nodes]:
                return

            async def dial() -> None:
                fanout.use_stubs(nodes.dial(new.catalog))

            if _running_loop() is loop:
                fanout.use_stubs(nodes.dial(new.catalog))
            else:
                asyncio.run_coroutine_threadsafe(dial(), loop).result(timeout=30)

        watch.on_change(take)
        server = new_aio_server(options=SERVER_OPTIONS)
        servicer = CoordinatorServicer(fanout, verifier, watch, config.rate_limit)
        observe = metrics.requests.observe
        rpc.add_servicer(server, pb_grpc.add_CoordinatorServicer_to_server, servicer, log, observe)
        port = add_port(server, listen or config.listen, tls)
        await rpc.add_health_async(server, "hpf.v1.Coordinator", observe)
        await server.start()
        health.start()
        return server, port

    metrics_server = None
    try:
        metrics_server = _metrics_endpoint(config, tls, metrics, verifier)
        server, port = loop.run(starting())
    except BaseException:
        if metrics_server is not None:
            metrics_server.stop()

        async def closing() -> None:
            await health.stop()
            await nodes.close()

        loop.run(closing())
        loop.close()
        raise
    regions = len(catalog.nodes)
    log.info("coordinator listening on port %d (%s), %d region(s)", port, "mTLS" if tls else "INSECURE", regions)
    return RunningCoordinator(
        server=server,
        port=port,
        nodes=nodes,
        catalog=watch,
        health=health,
        loop=loop,
        metrics=metrics,
        metrics_server=metrics_server,
    )


def _metrics_endpoint(
    config: CoordinatorConfig, tls: TlsConfig | None, metrics: CoordinatorMetrics, verifier: EnvelopeVerifier
) -> MetricsServer | None:
    """The coordinator's metrics endpoint, when its config asks for one."""
    if config.metrics is None:
        return None
    return serve_metrics(config.metrics, tls, metrics.registry, "the coordinator", revocations=verifier.revocations)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@contextlib.contextmanager
def running_coordinator(
    config: CoordinatorConfig, addresses: Mapping[str, str] | None = None, listen: str = "127.0.0.1:0"
) -> Iterator[RunningCoordinator]:
    coordinator = start_coordinator(config, listen, addresses=addresses)
    try:
        yield coordinator
    finally:
        coordinator.stop(0)
