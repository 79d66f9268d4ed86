"""Running one admitted partial plan: scan, encode (withholding small groups), encrypt. No gRPC here.

What may run is decided before this, by :mod:`node.handler` (signature, policy, replay); this module only
computes, under the public context whose digest the asker signed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import tenseal as ts

from hpf.federation import error_codes
from hpf.federation.catalog import Catalog
from hpf.federation.crypto import he
from hpf.federation.crypto.slot_codec import chunks, encode_noisy_partials, encode_partials, failure_chunks
from hpf.federation.engine import Abandon
from hpf.federation.errors import AuthError, CryptoError, DataError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.plan import Plan
from hpf.federation.planner.dialects import Rendered, plan_node_sql

log = logging.getLogger("hpf.node")

DATA_FAILURES = error_codes.MASKED_FAILURES  # failures that depend on the rows, not on the request


class Backend(Protocol):
    dialect: str  # the SQL it runs: "duckdb" or "postgres" (federation.planner.dialects)

    def run(
        self, sql: str, on_abandon: Abandon | None = None, finish_by: float | None = None
    ) -> Sequence[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class PartialResult:
    fingerprint: str
    ciphertexts: list[bytes]
    statement: pb.AnswerStatement | None = None  # the node's signed statement of the run (added by the handler)


@dataclass(frozen=True)
class Noisy:
    """A DP run's computation: the clamped plan over its row-capped source, the units and this node's noise."""

    plan: Plan
    source: str  # ``(capped_sql) AS table``
    capped_sql: str  # the rows of the table that count under DP (dp_plan.capped_table_sql)
    units: Sequence[int]
    noise: np.ndarray


class PartialExecutor:
    def __init__(self, node_id: str, catalog: Catalog, backend: Backend) -> None:
        self.node_id = node_id
        self.catalog = catalog
        self.backend = backend

    @staticmethod
    def public_context(public_context: bytes, signed_digest: str) -> ts.Context:
        """The context the asker signed: the one sent (if its digest matches), else the one this node holds."""
        if not public_context:
            return he.cached_public_context(signed_digest)
        if he.context_digest(public_context) != signed_digest:
            raise AuthError(
                "the public key sent is not the one the asker signed for",
                code="AUTH_CONTEXT_MISMATCH",
                hint="an answer is encrypted only under the key named in the signed question",
            )
        return he.load_public_context(public_context, signed_digest)

    def compute(
        self,
        query_id: str,
        plan: Plan,
        ctx: ts.Context,
        min_group_size: int = 1,
        *,
        noisy: Noisy | None = None,
        mask: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
        on_abandon: Abandon | None = None,
        finish_by: float | None = None,
        rendered: Rendered | None = None,
    ) -> PartialResult:
        """Scan, encode, protect and encrypt one plan. ``noisy`` (DP) replaces the plan's SQL and encoding with
        clamped, noised ones; ``mask`` adds the run's pairwise masks to the slot vectors just before encryption
        (to the encrypted failure mark too, so it stays inside the sum). ``on_abandon`` registers what stops the
        scan if the coordinator gives the question up; ``finish_by`` is when the scan must be over (Backend.run);
        ``rendered`` holds the node queries the question's admission rendered for this node's backend."""
        run = functools.partial(self.backend.run, on_abandon=on_abandon, finish_by=finish_by)
        t_scan = time.perf_counter()
        try:
            if noisy is None:
                rows = run(plan_node_sql(plan, self.catalog, self.backend.dialect, rendered=rendered))
                t_encode = time.perf_counter()
                pieces = chunks(encode_partials(plan, rows, min_group_size=min_group_size))
            else:
                capped = getattr(self.backend, "capped_source", None)  # a backend may keep the capped table ready
                source = noisy.source if capped is None else capped(noisy.plan.table, noisy.capped_sql)
                rows = run(plan_node_sql(noisy.plan, self.catalog, self.backend.dialect, source, rendered))
                t_encode = time.perf_counter()
                pieces = chunks(encode_noisy_partials(noisy.plan, rows, noisy.units, noisy.noise))
        except (DataError, CryptoError) as err:  # PARTIAL_OUT_OF_RANGE is a CryptoError: the limbs would not fit
            if err.code not in DATA_FAILURES:
                raise
            # the failure depends on this region's rows: it travels encrypted, as an answer would, so the
            # coordinator learns nothing from it; only the asker learns that some region failed
            log.warning(
                "query %s failed on this node's rows (%s); sending the encrypted failure mark", query_id[:12], err.code
            )
            t_encode = time.perf_counter()
            # random slots, not zeros: an asker who decrypts the refused sum must not find the others' partials
            pieces = failure_chunks(plan)
        if mask is not None:
            pieces = mask(pieces)
        ciphertexts = [he.encrypt_slots(ctx, chunk) for chunk in pieces]
        done = time.perf_counter()
        # this region's own timings stay here, in its log: they are not sent with the answer
        log.info(
            "query %s answered: plan %s, %d ciphertext(s), scan_ms=%.2f encrypt_ms=%.2f",
            query_id[:12],
            plan.fingerprint[:12],
            len(ciphertexts),
            (t_encode - t_scan) * 1e3,
            (done - t_encode) * 1e3,
        )
        return PartialResult(fingerprint=plan.fingerprint, ciphertexts=ciphertexts)
