"""A node's audit of its requests: every request, allowed or refused, is appended to the node's audit log before the
answer leaves; if the log cannot be written, nothing is answered. Answers carry the receipt of their entry and this
node's signed statement of what it answered under."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.proto import receipt_to_proto
from hpf.federation.audit.records import Receipt
from hpf.federation.errors import AuditError, FederationError, UnavailableError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust import statements
from hpf.federation.trust.statements import Statement
from hpf.node.executor import PartialResult
from hpf.node.protection import Run
from hpf.node.trail import Trail

T = TypeVar("T")
log = logging.getLogger("hpf.node")

# an audit log that cannot be written, and what its region's operator does about it
UNWRITABLE = {
    "AUDIT_WRITE_FAILED": "the region's operator must free space on its state directory's disk; it answers again then",
    "AUDIT_LOG_BROKEN": "the region's operator must restart the node once its state directory's disk takes writes",
}


class Auditor:
    """Appends each request's entry to this node's audit log and signs what the node answers."""

    def __init__(self, node_id: str, audit: AuditLog, on_append: Callable[[], None] | None = None) -> None:
        self.node_id = node_id
        self.audit = audit
        self._on_append = on_append  # told of each entry appended (the node's metrics count them)

    def log(self, trail: Trail, decision: str, code: str = "", rule: str = "") -> Receipt:
        """Append the request's entry. A log that cannot be written (a full disk) is the region's state, not the
        question's: nothing is answered, the region is reported missing, and the next request tries again."""
        try:
            receipt = self.audit.append(trail.entry(self.node_id, decision, code, rule))
        except AuditError as err:
            if err.code not in UNWRITABLE:
                raise
            log.error("node %s cannot write its audit log, so it answers nothing: %s", self.node_id, err)
            hint = UNWRITABLE[err.code]
            raise UnavailableError(
                "the region cannot write its audit log now, so it answers nothing",
                code="NODE_STATE_UNWRITABLE",
                hint=hint,
            ) from None
        if self._on_append is not None:
            self._on_append()
        return receipt

    def audited(self, trail: Trail, work: Callable[[], T]) -> tuple[T | None, Receipt, FederationError | None]:
        """Run ``work`` and append its entry, allowed or refused. A refusal comes back (not raised) with the
        receipt of its entry; anything unexpected is logged as refused and raised."""
        try:
            result = work()
        except FederationError as err:
            return None, self.log(trail, "refused", err.code, err.rule or ""), err
        except Exception:
            self.log(trail, "refused", "NODE_INTERNAL")
            raise
        return result, self.log(trail, "allowed"), None

    def answered(self, trail: Trail, work: Callable[[], T]) -> tuple[T, Receipt]:
        """Run an audited ``work``: its result and the receipt of its entry, or its refusal raised."""
        result, receipt, refusal = self.audited(trail, work)
        if refusal is not None:
            raise refusal
        assert result is not None
        return result, receipt

    def signed(
        self, result: PartialResult, run: Run, context: str, ciphertexts: str, privacy: dict[str, Any], runs: int
    ) -> PartialResult:
        """``result`` with this node's signed statement of the run, key and privacy terms it answered under, and
        how many runs of the question it has answered (each DP run is charged)."""
        statement = Statement(
            node=self.node_id,
            query_id=run.query_id,
            run=run.id,
            participants=run.participants,
            context=context,
            ciphertexts=ciphertexts,
            privacy=privacy,
            runs=runs,
        )
        return dataclasses.replace(result, statement=statements.sign(statement, self.audit.sign))

    def answer(self, trail: Trail, work: Callable[[], PartialResult], started: float) -> pb.PartialResponse:
        """Run an audited ``work`` and send its ciphertexts with the receipt of its entry (or raise its refusal)."""
        result, receipt = self.answered(trail, work)
        # no timings in the answer: how long this region took is for its own log, not for the asker
        log.info("%s %s handled in %.2f ms", trail.operation, trail.nonce[:12], (time.perf_counter() - started) * 1e3)
        return pb.PartialResponse(
            node_id=self.node_id,
            plan_fingerprint=result.fingerprint,
            ciphertexts=result.ciphertexts,
            receipt=receipt_to_proto(receipt),
            statement=result.statement,
        )
