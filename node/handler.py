"""The node's handler for one signed question: verify, admit by policy, run, encrypt, audit. No gRPC here.

A node never trusts the coordinator. For every request, in this order:

1. the signed envelope: CA, validity, revocation, signature, federation, operation, time window;
2. the query id the coordinator names must be the envelope's own;
3. the plan, derived here from the signed SQL and compared with the coordinator's fingerprint;
4. this node's policy: where the asker asks from (askers), role, table, purpose, consent, aggregates, column
   uses; it fixes k;
5. the public context must be in this node's HE wire format (``he_format``, checked before the context is
   parsed: HE_FORMAT_MISMATCH) and the one the asker signed;
5a. the run's participant set (see :mod:`node.protection`): regions of the catalog, this one among them, at
   least the policy's minimum, and every region of the catalog for an exact answer unless the policy allows
   fewer (``secure_aggregation.exact_subsets``);
6. the asker's rate limit: each question this node runs or explains counts once;
7. the nonce must be new (a replay is refused; a request refused earlier does not use up its nonce, so the
   coordinator may resend it, e.g. with the public context a restarted node no longer holds), unless this is a
   re-run of it with fewer participants (see :mod:`node.replay`);
8. under DP, the asker's privacy budget is charged (after the nonce: a question refused for its budget is used
   up, like one the node answered).

Every request, allowed or refused, is appended to the node's audit log before the answer leaves; if the
log cannot be written, nothing is answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hpf.federation import error_codes
from hpf.federation.audit.proto import checkpoint_to_proto, receipt_to_proto
from hpf.federation.crypto import he
from hpf.federation.engine import Abandon
from hpf.federation.errors import AuditError, UnavailableError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust import statements, verdicts
from hpf.federation.trust.certificates import Identity
from hpf.federation.trust.envelope import query_id
from hpf.node.answering import Admission
from hpf.node.executor import PartialResult
from hpf.node.lookup_answers import LookupAnswering
from hpf.node.privacy import signed_terms
from hpf.node.trail import Trail

# an explain refused for the question itself (its policy, its plan, its privacy terms) is a signed verdict
VERDICT_REFUSALS = error_codes.VERDICT_REFUSALS


class NodeHandler(LookupAnswering):
    """A region's answers to the coordinator's requests: partial plans, lookups, explains and audit proofs."""

    def partial(
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
            self._check_caller(caller, trail)
            admission = self._admit(request, trail)
            verified, plan, decision = admission.verified, admission.plan, admission.decision
            he.check_he_format(request.he_format, "the client's context")
            ctx = self.executor.public_context(request.public_context, verified.envelope.context_digest)
            terms = self.privacy.terms(plan, decision)
            signed = signed_terms(terms)  # no float: fixed decimals, in the audit entry as in what is signed
            trail.privacy = "exact" if terms is None else f"dp epsilon={signed['epsilon']} delta={signed['delta']}"
            run = self._run(verified.query_id, request.participants, trail, signed)
            if terms is None:
                self._protector().check_exact_over_everyone(run, self.policy.secure_aggregation.exact_subsets)
            runs = self._spend(verified, run=run)
            charged = None if terms is None else self.privacy.charge(verified.signer.common_name, decision)
            try:
                noisy = None if terms is None else self.privacy.noisy(plan, run, terms, self._protector())
                result = self.executor.compute(
                    verified.query_id,
                    plan,
                    ctx,
                    decision.min_group_size,
                    noisy=noisy,
                    mask=lambda pieces: self._protector().mask(run, pieces),
                    on_abandon=on_abandon,
                    finish_by=finish_by,
                )
            except BaseException:
                if charged is not None:
                    charged()
                raise
            if charged is not None:
                charges.append(charged)
            trail.ciphertext = statements.ciphertexts_digest(result.ciphertexts)
            return self._signed(result, run, verified.envelope.context_digest, trail.ciphertext, signed, runs)

        try:
            return self._answer(trail, work, started)
        except UnavailableError as err:
            if err.code == "NODE_STATE_UNWRITABLE":  # its entry could not be written: the answer does not leave
                self._give_back(charges)
            raise

    def audit_proof(
        self, request: pb.AuditProofRequest, caller: Callable[[], Identity | None]
    ) -> pb.AuditProofResponse:
        """Proofs that entry ``index`` and the tree of ``old_size`` entries are in this node's latest checkpoint.

        Hashes only: no entry leaves the node this way. The request itself is logged like any other.
        """
        trail = Trail(operation="proof")

        def work() -> pb.AuditProofResponse:
            self._check_caller(caller, trail)
            latest = self.audit.latest_checkpoint()
            if latest is None or request.index >= latest.size or not 0 < request.old_size <= latest.size:
                raise AuditError(
                    "this node's log has no such entry or checkpoint size",
                    code="AUDIT_PROOF_RANGE",
                    hint="ask with the index and checkpoint size of a receipt this node gave",
                )
            return pb.AuditProofResponse(
                checkpoint=checkpoint_to_proto(latest),
                inclusion=self.audit.inclusion_proof(request.index, latest.size),
                consistency=self.audit.consistency_proof(request.old_size, latest.size),
            )

        response, _, refusal = self._audited(trail, work)
        if refusal is not None:
            raise refusal
        assert response is not None
        return response

    def explain(self, request: pb.PartialRequest, caller: Callable[[], Identity | None]) -> pb.NodeVerdict:
        """Whether this node would run the question, signed by this node's audit key for the envelope's query id
        (:mod:`federation.trust.verdicts`), so the coordinator can relay it but not alter it. A refusal of the question
        itself (its policy, plan or privacy terms) is a signed verdict; a refusal of the request (who calls, the
        signature, a replay) is an error, as for a question."""
        trail = Trail(operation="explain")

        def work() -> tuple[Admission, pb.PrivacyVerdict]:
            self._check_caller(caller, trail)
            admission = self._admit(request, trail)
            # DP_UNBOUNDED is this question's refusal too
            privacy = self.privacy.verdict(admission.plan, admission.verified.signer.common_name, admission.decision)
            self._spend(admission.verified)
            return admission, privacy

        done, receipt, refusal = self._audited(trail, work)
        if refusal is not None:
            if refusal.code not in VERDICT_REFUSALS:
                raise refusal
            verdict = pb.NodeVerdict(
                node_id=self.node_id,
                accepted=False,
                code=refusal.code,
                message=refusal.message,
                rule=refusal.rule or "",
                hint=refusal.hint or "",
                receipt=receipt_to_proto(receipt),
            )
        else:
            assert done is not None
            admission, privacy = done
            verdict = pb.NodeVerdict(
                node_id=self.node_id,
                accepted=True,
                min_group_size=admission.decision.min_group_size,
                receipt=receipt_to_proto(receipt),
                privacy=privacy,
                min_participants=self.policy.secure_aggregation.min_participants,
            )
        # the envelope verified (a refusal before that is an AUTH_ error): its own id, whatever the coordinator named
        return verdicts.sign(verdict, query_id(request.envelope), self.audit.sign)
