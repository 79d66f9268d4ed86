"""The node's gRPC server: a thin servicer over :class:`node.executor.PartialExecutor`."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from federation import __version__, rpc
from federation.callers import require_caller
from federation.catalog import Catalog, load_catalog
from federation.errors import ConfigError
from federation.generated import hpf_federation_pb2 as pb
from federation.generated import hpf_federation_pb2_grpc as pb_grpc
from federation.tls import GRPC_OPTIONS, add_port, new_server, require_tls, with_options
from node.backends.duckdb_backend import DuckDBBackend
from node.config import NodeConfig
from node.executor import PartialExecutor, PartialResult

log = logging.getLogger("hpf.node")

MAX_REQUEST_BYTES = 8 * 1024 * 1024
SERVER_OPTIONS = with_options(GRPC_OPTIONS, max_receive_message_length=MAX_REQUEST_BYTES)


class NodeServicer(pb_grpc.NodeServicer):
    def __init__(self, executor: PartialExecutor, catalog_digest: str) -> None:
        self._executor = executor
        self._catalog_digest = catalog_digest

    def ComputePartial(self, request: pb.PartialRequest, context: grpc.ServicerContext) -> pb.PartialResponse:
        def handle() -> PartialResult:
            require_caller(context, ("coordinator",), "a node")
            return self._executor.compute(
                request.query_id, request.sql, request.public_context, request.plan_fingerprint, request.context_digest
            )

        result = rpc.answer(context, log, f"query {request.query_id}", "NODE_INTERNAL", handle)
        return pb.PartialResponse(
            node_id=self._executor.node_id,
            plan_fingerprint=result.fingerprint,
            ciphertexts=result.ciphertexts,
            scan_ms=result.scan_ms,
            encrypt_ms=result.encrypt_ms,
            total_ms=result.total_ms,
        )

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        rpc.answer(
            context, log, "describe", "NODE_INTERNAL", lambda: require_caller(context, ("coordinator",), "a node")
        )
        return pb.DescribeResponse(
            node_id=self._executor.node_id,
            catalog_digest=self._catalog_digest,
            tables=sorted(self._executor.catalog.tables),
            version=__version__,
        )


@dataclass
class RunningNode:
    server: grpc.Server
    port: int
    node_id: str

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()


def catalog_digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def start_node(config: NodeConfig, listen: str | None = None, catalog: Catalog | None = None) -> RunningNode:
    """Build and start a node server; returns once it listens (``listen`` may use port 0)."""
    tls = require_tls(config.tls, config.insecure, source=f"node {config.node_id}")
    catalog = catalog or load_catalog(config.catalog)
    if config.node_id not in catalog.node_ids:
        raise ConfigError(
            f"node id {config.node_id!r} is not listed in the catalog {config.catalog}",
            code="CONFIG_INVALID",
            hint=f"catalog nodes: {', '.join(catalog.node_ids)}",
        )
    backend = DuckDBBackend(catalog, config.tables, threads=config.duckdb_threads)
    executor = PartialExecutor(config.node_id, catalog, backend)
    server = new_server(max_workers=config.max_workers, options=SERVER_OPTIONS)
    pb_grpc.add_NodeServicer_to_server(NodeServicer(executor, catalog_digest(str(config.catalog))), server)
    port = add_port(server, listen or config.listen, tls)
    rpc.add_health(server, "hpf.v1.Node")
    server.start()
    log.info("node %s listening on port %d (%s)", config.node_id, port, "mTLS" if tls else "INSECURE")
    return RunningNode(server=server, port=port, node_id=config.node_id)


@contextlib.contextmanager
def running_node(config: NodeConfig, listen: str = "127.0.0.1:0") -> Iterator[RunningNode]:
    node = start_node(config, listen)
    try:
        yield node
    finally:
        node.stop(0)
