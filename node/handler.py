"""The node's handler for the coordinator's requests: one small class per operation, each taking its request through
its admission stages (:mod:`node.admission`), then running it, and writing its audit entry (:mod:`node.auditor`).
No gRPC here.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence

from hpf.federation import error_codes
from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.proto import checkpoint_to_proto, receipt_to_proto
from hpf.federation.audit.restore_proof import restores_to_proto
from hpf.federation.engine import Abandon
from hpf.federation.errors import AuditError, FederationError, UnavailableError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust import statements, verdicts
from hpf.federation.trust.certificates import Identity
from hpf.federation.trust.envelope import query_id
from hpf.node.admission import EXPLAIN, QUERY, Admission, Question
from hpf.node.auditor import Auditor
from hpf.node.executor import PartialResult
from hpf.node.lookup_answers import Lookup
from hpf.node.trail import Trail

log = logging.getLogger("hpf.node")


class Query:
    """A partial plan: admitted by :data:`node.admission.QUERY`, scanned, masked for its run and encrypted."""

    def __init__(self, admission: Admission, auditor: Auditor) -> None:
        self.admission, self.auditor = admission, auditor

    def answer(
        self,
        request: pb.PartialRequest,
        caller: Callable[[], Identity | None],
        on_abandon: Abandon | None = None,
        finish_by: float | None = None,
    ) -> pb.PartialResponse:
        """Answer one partial plan; ``caller`` checks and names the calling party (raises if not allowed);
        ``on_abandon`` registers what stops the scan when the coordinator gives the question up, and
        ``finish_by`` is when the scan must be over for the answer to be on time."""
        started = time.perf_counter()
        trail = Trail(operation="query")
        charges: list[Callable[[], None]] = []  # what gives a DP charge back if the answer cannot leave

        def work() -> PartialResult:
            node = self.admission
            asked = node.run(QUERY, Question(request, caller, trail))
            run, protector = asked.run, asked.protector
            assert run is not None  # fixed by its stage
            try:
                noisy = None if asked.terms is None else node.privacy.noisy(asked.plan, run, asked.terms, protector)
                result = node.executor.compute(
                    asked.verified.query_id,
                    asked.plan,
                    asked.context,
                    asked.decision.min_group_size,
                    noisy=noisy,
                    mask=lambda pieces: protector.mask(run, pieces),
                    on_abandon=on_abandon,
                    finish_by=finish_by,
                    rendered=asked.rendered,
                )
            except BaseException:
                if asked.charged is not None:
                    asked.charged()
                raise
            if asked.charged is not None:
                charges.append(asked.charged)
            trail.ciphertext = statements.ciphertexts_digest(result.ciphertexts)
            context = asked.verified.envelope.context_digest
            return self.auditor.signed(result, run, context, trail.ciphertext, asked.signed, asked.runs)

        try:
            return self.auditor.answer(trail, work, started)
        except UnavailableError as err:
            if err.code == "NODE_STATE_UNWRITABLE":  # its entry could not be written: the answer does not leave
                self._give_back(charges)
            raise

    def _give_back(self, charges: Sequence[Callable[[], None]]) -> None:
        """Give back the privacy charges of an answer that did not leave; one that cannot be given back (its
        ledger on the same full disk) stays spent, which costs the asker budget but releases nothing."""
        for give_back in charges:
            try:
                give_back()
            except FederationError as err:
                log.error("node %s kept a privacy charge it could not give back (%s)", self.admission.node_id, err.code)


class Explain:
    """Whether this node would run a question: :data:`node.admission.EXPLAIN`, as a signed verdict."""

    def __init__(self, admission: Admission, auditor: Auditor) -> None:
        self.admission, self.auditor = admission, auditor

    def answer(self, request: pb.PartialRequest, caller: Callable[[], Identity | None]) -> pb.NodeVerdict:
        """Whether this node would run the question, signed by this node's audit key for the envelope's query id
        (:mod:`federation.trust.verdicts`), so the coordinator can relay it but not alter it. A refusal of the question
        itself (its policy, plan or privacy terms) is a signed verdict; a refusal of the request (who calls, the
        signature, a replay) is an error, as for a question."""
        trail = Trail(operation="explain")
        node = self.admission
        work = functools.partial(node.run, EXPLAIN, Question(request, caller, trail))
        asked, receipt, refusal = self.auditor.audited(trail, work)
        if refusal is not None:
            # an explain refused for the question itself (its policy, its plan, its privacy terms) is a signed verdict
            if refusal.code not in error_codes.VERDICT_REFUSALS:
                raise refusal
            verdict = pb.NodeVerdict(
                node_id=node.node_id,
                accepted=False,
                code=refusal.code,
                message=refusal.message,
                rule=refusal.rule or "",
                hint=refusal.hint or "",
                receipt=receipt_to_proto(receipt),
            )
        else:
            assert asked is not None
            verdict = pb.NodeVerdict(
                node_id=node.node_id,
                accepted=True,
                min_group_size=asked.decision.min_group_size,
                receipt=receipt_to_proto(receipt),
                privacy=asked.privacy,
                min_participants=node.policy.secure_aggregation.min_participants,
            )
        # the envelope verified (a refusal before that is an AUTH_ error): its own id, whatever the coordinator named
        return verdicts.sign(verdict, query_id(request.envelope), self.auditor.audit.sign)


class AuditProof:
    """Proofs from this node's audit log: hashes only, no entry leaves the node this way."""

    def __init__(self, admission: Admission, auditor: Auditor) -> None:
        self.admission, self.auditor = admission, auditor

    def answer(self, request: pb.AuditProofRequest, caller: Callable[[], Identity | None]) -> pb.AuditProofResponse:
        """Proofs that entry ``index`` and the tree of ``old_size`` entries are in this node's latest checkpoint.
        The request itself is logged like any other."""
        trail = Trail(operation="proof")
        audit = self.auditor.audit

        def work() -> pb.AuditProofResponse:
            self.admission.check_caller(caller, trail)
            latest = audit.latest_checkpoint()
            if latest is None or request.index >= latest.size or not 0 < request.old_size <= latest.size:
                restores = [] if latest is None else restores_to_proto(audit, latest.size)
                if latest is not None and restores:  # past this log, but a host was lost: its breaks, to check
                    return pb.AuditProofResponse(checkpoint=checkpoint_to_proto(latest), restores=restores)
                raise AuditError(
                    "this node's log has no such entry or checkpoint size",
                    code="AUDIT_PROOF_RANGE",
                    hint="ask with the index and checkpoint size of a receipt this node gave",
                )
            return pb.AuditProofResponse(
                checkpoint=checkpoint_to_proto(latest),
                inclusion=audit.inclusion_proof(request.index, latest.size),
                consistency=audit.consistency_proof(request.old_size, latest.size),
                restores=restores_to_proto(audit, latest.size),
            )

        return self.auditor.answered(trail, work)[0]


class NodeHandler:
    """A region's answers to the coordinator's requests, one object per operation, over one admission and one
    auditor."""

    def __init__(self, admission: Admission, audit: AuditLog, on_append: Callable[[], None] | None = None) -> None:
        self.admission, self.auditor = admission, Auditor(admission.node_id, audit, on_append)
        self.query, self.explain = Query(admission, self.auditor), Explain(admission, self.auditor)
        self.lookup, self.audit_proof = Lookup(admission, self.auditor), AuditProof(admission, self.auditor)
        # what a node's operator looks at: its keys, its engine, its ledger, its lookup counts
        self.audit, self.agreement, self.executor = audit, admission.agreement, admission.executor
        self.privacy, self.lookup_limiter = admission.privacy, admission.lookup_limiter

    def close(self) -> None:
        self.audit.close()
        self.privacy.close()
