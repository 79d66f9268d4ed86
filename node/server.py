"""The node's gRPC server: a thin servicer over :class:`node.executor.PartialExecutor`."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from federation import __version__, he, rpc
from federation.audit_keys import KEY as AUDIT_KEY
from federation.audit_log import AuditLog
from federation.callers import require_caller
from federation.catalog import Catalog, load_catalog
from federation.engine import Abandon
from federation.errors import ConfigError
from federation.generated import hpf_federation_pb2 as pb
from federation.generated import hpf_federation_pb2_grpc as pb_grpc
from federation.pki import Identity
from federation.sealing import AGREEMENT_KEY, AgreementKey, load_or_create_secret, load_or_create_subject_key
from federation.tls import GRPC_OPTIONS, add_port, check_federation, new_server, require_tls, with_options
from node.backends.duckdb_backend import DuckDBBackend
from node.config import NodeConfig
from node.executor import PartialExecutor
from node.handler import NodeHandler
from node.lookup_index import LookupIndex
from node.privacy_budget import PrivacyLedger
from node.protection import NOISE_KEY, Protector
from node.replay import ReplayGuard
from policies import DEFAULT_POLICY
from policies.loader import check_against_catalog, load_policy

log = logging.getLogger("hpf.node")

MAX_REQUEST_BYTES = 8 * 1024 * 1024
SERVER_OPTIONS = with_options(GRPC_OPTIONS, max_receive_message_length=MAX_REQUEST_BYTES)


def _abandon(context: grpc.ServicerContext) -> Abandon:
    """Registers a callback for the end of the call (a cancelled or timed-out call ends early)."""

    def register(stop: Callable[[], None]) -> None:
        context.add_callback(stop)

    return register


def _coordinator(context: grpc.ServicerContext) -> Callable[[], Identity | None]:
    """The check a handler runs first: only the coordinator calls a node."""
    return functools.partial(require_caller, context, ("coordinator",), "a node")


class NodeServicer(pb_grpc.NodeServicer):
    def __init__(self, handler: NodeHandler, catalog_digest: str) -> None:
        self._handler = handler
        self._catalog_digest = catalog_digest

    def ComputePartial(self, request: pb.PartialRequest, context: grpc.ServicerContext) -> pb.PartialResponse:
        caller = _coordinator(context)
        what = f"query {request.query_id[:12]}"
        return rpc.answer(
            context, log, what, "NODE_INTERNAL", lambda: self._handler.partial(request, caller, _abandon(context))
        )

    def Explain(self, request: pb.PartialRequest, context: grpc.ServicerContext) -> pb.NodeVerdict:
        caller = _coordinator(context)
        what = f"explain {request.query_id[:12]}"
        return rpc.answer(context, log, what, "NODE_INTERNAL", lambda: self._handler.explain(request, caller))

    def AuditProof(self, request: pb.AuditProofRequest, context: grpc.ServicerContext) -> pb.AuditProofResponse:
        caller = _coordinator(context)
        return rpc.answer(
            context, log, "audit proof", "NODE_INTERNAL", lambda: self._handler.audit_proof(request, caller)
        )

    def Lookup(self, request: pb.NodeLookupRequest, context: grpc.ServicerContext) -> pb.PartialResponse:
        caller = _coordinator(context)
        what = f"lookup {request.query_id[:12]}"
        return rpc.answer(context, log, what, "NODE_INTERNAL", lambda: self._handler.lookup(request, caller))

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        rpc.answer(context, log, "describe", "NODE_INTERNAL", _coordinator(context))
        handler = self._handler
        return pb.DescribeResponse(
            node_id=handler.node_id,
            catalog_digest=self._catalog_digest,
            tables=sorted(handler.catalog.tables),
            version=__version__,
            audit_public_key=handler.audit.public_key_raw(),
            agreement_public_key=handler.agreement.public if handler.agreement else b"",
        )


@dataclass
class RunningNode:
    server: grpc.Server
    port: int
    node_id: str
    handler: NodeHandler

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()
        self.handler.close()


def catalog_digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _check_published(config: NodeConfig, field: str, published: str | None, own: bytes, path: Path) -> None:
    """NODE_KEY_MISMATCH unless the catalog publishes no key for this node yet (a first start: the node logs
    the key to publish) or publishes this node's own ``own`` (raw public key, kept at ``path``)."""
    if published is None or base64.b64decode(published) == own:
        return
    mine = base64.b64encode(own).decode("ascii")
    raise ConfigError(
        f"the catalog's {field} for node {config.node_id} is not this node's key ({path})",
        code="NODE_KEY_MISMATCH",
        hint=f"restore the key file this node had when its key was published, or publish this node's key in the "
        f"catalog ({field}: {mine}) if the old one is lost: what the old key signed or sealed stays the old key's",
    )


def start_node(config: NodeConfig, listen: str | None = None, catalog: Catalog | None = None) -> RunningNode:
    """Build and start a node server; returns once it listens (``listen`` may use port 0)."""
    tls = require_tls(config.tls, config.insecure, source=f"node {config.node_id}")
    catalog = catalog or load_catalog(config.catalog)
    he.check_catalog_format(catalog.he_format, f"node {config.node_id}")
    if config.node_id not in catalog.node_ids:
        raise ConfigError(
            f"node id {config.node_id!r} is not listed in the catalog {config.catalog}",
            code="CONFIG_INVALID",
            hint=f"catalog nodes: {', '.join(catalog.node_ids)}",
        )
    check_federation(tls, catalog.federation, f"node {config.node_id}")
    verifier = config.envelope_verifier(tls.ca if tls else None, catalog.federation)
    policy = load_policy(config.policy or DEFAULT_POLICY)
    problems = check_against_catalog(policy, catalog)
    if problems:  # a misspelt column would silently fall back to its class's looser defaults
        hint = "fix the policy or the catalog"
        if config.policy is None:
            hint = (
                "this node names no policy, so it uses the packaged default, written for the Yangtze River Delta "
                "tables: write one for your tables (start from policies/default.yaml) and name it as 'policy:'"
            )
        raise ConfigError("\n".join(problems), code="POLICY_FILE_INVALID", hint=hint)
    backend = DuckDBBackend(
        catalog,
        config.tables,
        threads=config.duckdb_threads,
        memory_limit=config.limits.memory,
        query_seconds=config.limits.query_ms / 1000.0,
    )
    agreement = AgreementKey.load_or_create(config.state_dir)
    entry = next(n for n in catalog.nodes if n.id == config.node_id)
    _check_published(config, "agreement_key", entry.agreement_key, agreement.public, config.state_dir / AGREEMENT_KEY)
    lookups = LookupIndex(backend, catalog)
    if lookups.supported:
        lookups.refresh()  # the first lookup should not wait for it
    audit = AuditLog.open(
        config.state_dir / "audit", config.node_id, fsync=config.audit_fsync, check_all_signatures=False
    )
    try:  # receipts and answer statements are checked against the published key: it must be this node's
        _check_published(config, "audit_key", entry.audit_key, audit.public_key_raw(), audit.directory / AUDIT_KEY)
    except BaseException:
        audit.close()
        raise
    handler = NodeHandler(
        config.node_id,
        catalog,
        PartialExecutor(config.node_id, catalog, backend),
        verifier,
        ReplayGuard.from_audit(audit, config.envelope_window_s),  # the log makes the nonces durable
        policy,
        audit,
        lookups=lookups,
        agreement=agreement,
        subject_key=load_or_create_subject_key(config.state_dir / "audit"),
        protector=Protector(config.node_id, catalog, agreement, load_or_create_secret(config.state_dir / NOISE_KEY)),
        ledger=PrivacyLedger.open(config.state_dir / "privacy"),
    )
    try:
        server = new_server(max_workers=config.max_workers, options=SERVER_OPTIONS)
        pb_grpc.add_NodeServicer_to_server(NodeServicer(handler, catalog_digest(str(config.catalog))), server)
        port = add_port(server, listen or config.listen, tls)
        rpc.add_health(server, "hpf.v1.Node")
        server.start()
        log.info("node %s audit key: %s", config.node_id, handler.audit.public_key_b64())
        log.info("node %s agreement key: %s", config.node_id, agreement.public_b64())
        log.info("node %s listening on port %d (%s)", config.node_id, port, "mTLS" if tls else "INSECURE")
    except BaseException:
        handler.close()
        raise
    return RunningNode(server=server, port=port, node_id=config.node_id, handler=handler)


@contextlib.contextmanager
def running_node(config: NodeConfig, listen: str = "127.0.0.1:0") -> Iterator[RunningNode]:
    node = start_node(config, listen)
    try:
        yield node
    finally:
        node.stop(0)
