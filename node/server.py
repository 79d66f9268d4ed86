"""The node's gRPC server: a thin servicer over :class:`node.handler.NodeHandler`, and the node's start."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

from hpf.federation import __version__, rpc
from hpf.federation.audit.log import AuditLog
from hpf.federation.catalog import Catalog, CatalogFile
from hpf.federation.catalog_parties import NodeEntry, NodeKeys
from hpf.federation.catalog_watch import CatalogWatch
from hpf.federation.consent import revocations as consent_revocations
from hpf.federation.crypto import he
from hpf.federation.crypto.sealing import AgreementKey, load_or_create_secret, load_or_create_subject_key
from hpf.federation.engine import Abandon
from hpf.federation.errors import ConfigError, FederationError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.metrics import MetricsServer, serve_metrics
from hpf.federation.trust.callers import require_caller
from hpf.federation.trust.certificates import Identity
from hpf.federation.trust.revocation import RevocationList
from hpf.federation.trust.servers import add_port, new_server
from hpf.federation.trust.tls import GRPC_OPTIONS, TlsConfig, require_tls, with_options
from hpf.federation.trust.tls_material import check_federation
from hpf.node.admission import Admission
from hpf.node.backends.duckdb_backend import DuckDBBackend
from hpf.node.backends.postgres_backend import PostgresBackend
from hpf.node.backends.spark_backend import SparkBackend
from hpf.node.config import NodeConfig
from hpf.node.consent_gate import ConsentGate, consent_gate_for, unlisted_issuers
from hpf.node.executor import PartialExecutor
from hpf.node.handler import NodeHandler
from hpf.node.keys import AUDIT_DIR, check_published
from hpf.node.lookup_index import LookupIndex
from hpf.node.lookup_refresh import FactsRefresher, refresher_for
from hpf.node.metrics import NodeMetrics
from hpf.node.privacy import PrivacyAccountant
from hpf.node.privacy_budget import PRIVACY_DIR
from hpf.node.protection import NOISE_KEY, Protector
from hpf.node.replay import ReplayGuard
from hpf.node.restore import open_after_restore, questions_from_ms
from hpf.node.source_watch import SOURCE_CHECK_SECONDS, SourceWatch
from hpf.node.state_dir import require_writable
from hpf.policies import DEFAULT_POLICY
from hpf.policies.loader import check_against_catalog, load_policy
from hpf.policies.model import Policy

Backend = DuckDBBackend | PostgresBackend | SparkBackend  # the engine a node's tables are read with
log = logging.getLogger("hpf.node")

MAX_REQUEST_BYTES = 8 * 1024 * 1024
SERVER_OPTIONS = with_options(GRPC_OPTIONS, max_receive_message_length=MAX_REQUEST_BYTES)
# what an answer needs after its scan (encode, encrypt, sign, log, send): a scan ends this long before the wait does
ANSWER_MARGIN_S = 0.25
# server threads per scan slot (``max_workers``): a question waiting for a slot holds a thread, and health checks,
# explains and descriptions must still find one at once
THREADS_PER_SCAN = 4


def _abandon(context: grpc.ServicerContext) -> Abandon:
    """Registers a callback for the end of the call (a cancelled or timed-out call ends early)."""

    def register(stop: Callable[[], None]) -> None:
        context.add_callback(stop)

    return register


def _finish_by(context: grpc.ServicerContext) -> float | None:
    """When a scan must be over for the answer to reach the coordinator within its wait (None: it set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining - ANSWER_MARGIN_S


def _coordinator(context: grpc.ServicerContext) -> Callable[[], Identity | None]:
    """The check a handler runs first: only the coordinator calls a node."""
    return functools.partial(require_caller, context, ("coordinator",), "a node")


Response = TypeVar("Response")  # what a servicer method answers


class NodeServicer(pb_grpc.NodeServicer):
    """Every method first looks whether the catalog file changed, and takes the change where it is safe."""

    def __init__(self, handler: NodeHandler, catalog: CatalogWatch) -> None:
        self._handler = handler
        self._catalog = catalog

    def _answer(
        self,
        context: grpc.ServicerContext,
        what: str,
        bind: Callable[[Callable[[], Identity | None]], Callable[[], Response]],
    ) -> Response:
        """Take a changed catalog, then run the handler ``bind`` gives for the caller's check; its refusal goes to
        the caller as its status and code."""
        self._catalog.current()
        work = bind(_coordinator(context))
        return rpc.answer(context, log, what, "NODE_INTERNAL", work)

    def ComputePartial(self, request: pb.PartialRequest, context: grpc.ServicerContext) -> pb.PartialResponse:
        query = self._handler.query
        return self._answer(
            context,
            f"query {request.query_id[:12]}",
            # finish_by is taken before the checks: the wait ends the same, however long they take
            lambda caller: functools.partial(query.answer, request, caller, _abandon(context), _finish_by(context)),
        )

    def Explain(self, request: pb.PartialRequest, context: grpc.ServicerContext) -> pb.NodeVerdict:
        explain = self._handler.explain
        what = f"explain {request.query_id[:12]}"
        return self._answer(context, what, lambda caller: functools.partial(explain.answer, request, caller))

    def AuditProof(self, request: pb.AuditProofRequest, context: grpc.ServicerContext) -> pb.AuditProofResponse:
        proof = self._handler.audit_proof
        return self._answer(context, "audit proof", lambda caller: functools.partial(proof.answer, request, caller))

    def Lookup(self, request: pb.NodeLookupRequest, context: grpc.ServicerContext) -> pb.PartialResponse:
        lookup = self._handler.lookup
        what = f"lookup {request.query_id[:12]}"
        return self._answer(context, what, lambda caller: functools.partial(lookup.answer, request, caller))

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        in_force = self._catalog.current()
        rpc.answer(context, log, "describe", "NODE_INTERNAL", _coordinator(context))
        node = self._handler.admission
        return pb.DescribeResponse(
            node_id=node.node_id,
            catalog_digest=in_force.digest,
            tables=sorted(node.catalog.tables),
            version=__version__,
            audit_public_key=self._handler.audit.public_key_raw(),
            agreement_public_key=node.agreement.public,
        )


@dataclass
class RunningNode:
    server: grpc.Server
    port: int
    node_id: str
    handler: NodeHandler
    catalog: CatalogWatch
    sources: SourceWatch
    backend: Backend
    facts: FactsRefresher
    metrics: NodeMetrics
    metrics_server: MetricsServer | None = None  # serving metrics.registry when the config has a metrics section

    @property
    def metrics_port(self) -> int | None:
        """The port the metrics endpoint listens on (None: the node serves no metrics)."""
        return None if self.metrics_server is None else self.metrics_server.port

    def stop(self, grace: float | None = 1.0) -> None:
        self.sources.stop()
        self.facts.stop()
        self.server.stop(grace).wait()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.handler.close()
        self.backend.close()  # a database's connections too, once no question runs


def start_node(config: NodeConfig, listen: str | None = None) -> RunningNode:
    """Build and start a node server on the catalog file ``config.catalog``; returns once it listens (``listen``
    may use port 0)."""
    tls = require_tls(config.tls, config.insecure, source=f"node {config.node_id}")
    watch = _watch_catalog(config, tls)
    catalog = watch.in_force.catalog
    require_writable(config.state_dir)
    require_writable(config.state_dir / AUDIT_DIR)
    require_writable(config.state_dir / PRIVACY_DIR, mode=0o700)  # as the ledger makes it
    verifier = config.envelope_verifier(tls.ca if tls else None, catalog.federation)
    policy = load_node_policy(config, catalog)
    backend = _backend(config, catalog)
    agreement = AgreementKey.load_or_create(config.state_dir)
    consent_gate = _consent_gate(config, catalog, policy)
    lookups = _lookup_index(config, catalog, backend)
    metrics = NodeMetrics()  # this node's own registry: several nodes may run in one process
    audit, own = _open_audit(config, catalog, agreement)
    ledger, restored_at_ms = open_after_restore(config, audit, metrics.budget_refusals.inc)
    protector = _protector(config, catalog, agreement, own, watch)
    admission = Admission(
        node_id=config.node_id,
        catalog=catalog,
        policy=policy,
        verifier=verifier,
        replay=ReplayGuard.from_audit(audit, config.envelope_window_s),  # the log makes the nonces durable
        executor=PartialExecutor(config.node_id, catalog, backend),
        privacy=PrivacyAccountant(config.node_id, catalog, ledger),
        sign=audit.sign,
        protector=protector,
        lookups=lookups,
        agreement=agreement,
        subject_key=load_or_create_subject_key(config.state_dir / AUDIT_DIR),
        consent_gate=consent_gate,
        restored_at_ms=restored_at_ms,
    )
    handler = NodeHandler(admission, audit, on_append=metrics.audit_appends.inc)
    serving_from = questions_from_ms(restored_at_ms, verifier.window_s) / 1000.0
    return _serve(config, listen, tls, handler, watch, backend, own, metrics, verifier.revocations, serving_from)


def _lookup_index(config: NodeConfig, catalog: Catalog, backend: Backend) -> LookupIndex:
    """The lookup facts, computed now so the first lookup does not wait for them (a database that cannot be
    reached now is an unwell region: its facts are computed once it can be)."""
    lookups = LookupIndex(backend, catalog)
    if lookups.supported:
        try:
            lookups.refresh()
        except FederationError as err:
            if config.on_files:
                raise
            log.warning("node %s: its lookup facts could not be computed at start (%s)", config.node_id, err.code)
    return lookups


def _backend(config: NodeConfig, catalog: Catalog) -> Backend:
    """The engine the node's tables are read with: DuckDB over its files, or its PostgreSQL database."""
    memory, seconds, scans = config.limits.memory, config.limits.query_ms / 1000.0, config.max_workers
    if config.on_postgres:
        return PostgresBackend(catalog, config.on_postgres, memory_limit=memory, query_seconds=seconds, scans=scans)
    if config.on_spark:
        return SparkBackend(catalog, config.on_spark, config.spark, query_seconds=seconds, scans=scans)
    return DuckDBBackend(
        catalog,
        config.on_files,
        threads=config.duckdb_threads,
        memory_limit=memory,
        query_seconds=seconds,
        scans=scans,
    )


def _watch_catalog(config: NodeConfig, tls: TlsConfig | None) -> CatalogWatch:
    """The catalog file, watched: in this node's HE wire format, listing this node, of the federation its
    certificates name."""
    watch = CatalogWatch(config.catalog, f"node {config.node_id}")
    catalog = watch.in_force.catalog
    he.check_catalog_format(catalog.he_format, f"node {config.node_id}")
    if config.node_id not in catalog.node_ids:
        raise ConfigError(
            f"node id {config.node_id!r} is not listed in the catalog {config.catalog}",
            code="CONFIG_INVALID",
            hint=f"catalog nodes: {', '.join(catalog.node_ids)}",
        )
    check_federation(tls, catalog.federation, f"node {config.node_id}")
    return watch


def load_node_policy(config: NodeConfig, catalog: Catalog) -> Policy:
    """The node's policy, which must name only the catalog's tables and columns (`hpf node doctor` checks it so too)."""
    policy = load_policy(config.policy or DEFAULT_POLICY)
    problems = check_against_catalog(policy, catalog)
    if problems:  # a misspelt column would silently fall back to its class's looser defaults
        hint = "fix the policy or the catalog"
        if config.policy is None:
            hint = (
                "this node names no policy, so it uses the packaged default, written for the Yangtze River Delta "
                "tables: write one for yours that says 'extends: hpf:base' and name it as 'policy:'"
            )
        raise ConfigError("\n".join(problems), code="POLICY_FILE_INVALID", hint=hint)
    return policy


def _consent_gate(config: NodeConfig, catalog: Catalog, policy: Policy) -> ConsentGate:
    """The consent checks, with the revocation lists the configuration names (a warning for each issuer without
    one)."""
    consent_gate = consent_gate_for(
        config.consent_revocations, catalog, config.state_dir / consent_revocations.STATE_FILE
    )
    for issuer in unlisted_issuers(policy, config.consent_revocations):
        log.warning(
            "node %s: the policy accepts consent issuer %s, and consent_revocations names no list of it: none of "
            "its consents is accepted (CONSENT_REVOCATIONS_INVALID) until one is named",
            config.node_id,
            issuer,
        )
    return consent_gate


def _open_audit(config: NodeConfig, catalog: Catalog, agreement: AgreementKey) -> tuple[AuditLog, NodeKeys]:
    """The audit log, and this node's own keys, which must be the ones the catalog publishes for it."""
    audit = AuditLog.open(
        config.state_dir / AUDIT_DIR, config.node_id, fsync=config.audit_fsync, check_all_signatures=False
    )
    own = NodeKeys(node=config.node_id, audit_key=audit.public_key_b64(), agreement_key=agreement.public_b64())
    try:  # receipts, statements and masks are checked against the published keys: they must be this node's
        check_published(config, _entry(catalog, config.node_id), own)
    except BaseException:
        audit.close()
        raise
    return audit, own


def _protector(
    config: NodeConfig, catalog: Catalog, agreement: AgreementKey, own: NodeKeys, watch: CatalogWatch
) -> Protector:
    """What masks this node's answers; it takes its peers' agreement keys from every changed catalog."""
    protector = Protector(config.node_id, catalog, agreement, load_or_create_secret(config.state_dir / NOISE_KEY))

    def take(in_force: CatalogFile, new: CatalogFile) -> None:
        """A changed catalog a running node may take: this node's own keys checked as at start, then its peers'
        agreement keys taken (tables and regions are the same: what was built from them stays)."""
        check_published(config, _entry(new.catalog, config.node_id), own)
        protector.publish(new.catalog)

    watch.on_change(take)
    return protector


def _serve(
    config: NodeConfig,
    listen: str | None,
    tls: TlsConfig | None,
    handler: NodeHandler,
    watch: CatalogWatch,
    backend: Backend,
    own: NodeKeys,
    metrics: NodeMetrics,
    revocations: RevocationList,
    serving_from: float = 0.0,
) -> RunningNode:
    """Start the gRPC server over ``handler``, with its health following the data files (and NOT_SERVING before
    ``serving_from``, Unix seconds: a restore's window), and its metrics endpoint if the config has one (over TLS,
    refusing what ``revocations``, the service's own list, revokes)."""
    metrics_server = None
    try:
        server = new_server(max_workers=THREADS_PER_SCAN * config.max_workers + 4, options=SERVER_OPTIONS)
        observe = metrics.requests.observe
        rpc.add_servicer(server, pb_grpc.add_NodeServicer_to_server, NodeServicer(handler, watch), log, observe)
        port = add_port(server, listen or config.listen, tls)
        health = rpc.add_health(server, "hpf.v1.Node", observe)
        if config.metrics is not None:
            source = f"node {config.node_id}"
            metrics_server = serve_metrics(config.metrics, tls, metrics.registry, source, revocations=revocations)
        server.start()
        sources = SourceWatch(backend, health, "hpf.v1.Node", SOURCE_CHECK_SECONDS, serving_from)
        every = None if config.on_files else config.lookup_facts.refresh_s  # files: computed when they change
        facts = refresher_for(handler.lookup.admission.lookups, config.state_dir, every)
        log.info("node %s audit key: %s", config.node_id, own.audit_key)
        log.info("node %s agreement key: %s", config.node_id, own.agreement_key)
        log.info("node %s listening on port %d (%s)", config.node_id, port, "mTLS" if tls else "INSECURE")
    except BaseException:
        if metrics_server is not None:
            metrics_server.stop()
        handler.close()
        raise
    return RunningNode(
        server=server,
        port=port,
        node_id=config.node_id,
        handler=handler,
        catalog=watch,
        sources=sources,
        backend=backend,
        facts=facts,
        metrics=metrics,
        metrics_server=metrics_server,
    )


def _entry(catalog: Catalog, node_id: str) -> NodeEntry:
    return next(n for n in catalog.nodes if n.id == node_id)


@contextlib.contextmanager
def running_node(config: NodeConfig, listen: str = "127.0.0.1:0") -> Iterator[RunningNode]:
    node = start_node(config, listen)
    try:
        yield node
    finally:
        node.stop(0)
