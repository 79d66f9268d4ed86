"""The node's handler for one partial plan: re-derive, re-check, run, encode, encrypt. No gRPC here.

A node never trusts the coordinator: it plans the SQL text itself against its own copy of the catalog and
refuses when its plan differs from the one the coordinator says it made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from federation import he
from federation.catalog import Catalog
from federation.errors import CryptoError, PlanError
from federation.planner import plan_query
from federation.slot_codec import chunks, encode_partials

log = logging.getLogger("hpf.node")


class Backend(Protocol):
    def run(self, sql: str) -> Sequence[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class PartialResult:
    fingerprint: str
    ciphertexts: list[bytes]
    scan_ms: float
    encrypt_ms: float
    total_ms: float


class PartialExecutor:
    def __init__(self, node_id: str, catalog: Catalog, backend: Backend) -> None:
        self.node_id = node_id
        self.catalog = catalog
        self.backend = backend

    def compute(
        self, query_id: str, sql: str, public_context: bytes, expected_fingerprint: str, context_digest: str = ""
    ) -> PartialResult:
        started = time.perf_counter()
        plan = plan_query(sql, self.catalog)
        if expected_fingerprint and expected_fingerprint != plan.fingerprint:
            raise PlanError(
                "the coordinator's plan differs from the plan this node derives from the same SQL",
                code="PLAN_MISMATCH",
                hint="the coordinator and this node may hold different catalogs",
            )
        if public_context:
            digest = he.context_digest(public_context)
            if context_digest and context_digest != digest:
                raise CryptoError("the public context does not match its digest", code="CONTEXT_DIGEST_MISMATCH")
            ctx = he.load_public_context(public_context, digest)
        else:
            ctx = he.cached_public_context(context_digest)
        t_scan = time.perf_counter()
        rows = self.backend.run(plan.node_sql())
        t_encode = time.perf_counter()
        flat = encode_partials(plan, rows)
        ciphertexts = [he.encrypt_slots(ctx, chunk) for chunk in chunks(flat)]
        done = time.perf_counter()
        log.info("query %s answered: plan %s, %d ciphertext(s)", query_id, plan.fingerprint[:12], len(ciphertexts))
        return PartialResult(
            fingerprint=plan.fingerprint,
            ciphertexts=ciphertexts,
            scan_ms=(t_encode - t_scan) * 1e3,
            encrypt_ms=(done - t_encode) * 1e3,
            total_ms=(done - started) * 1e3,
        )
