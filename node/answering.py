"""What every audited request to a node goes through: the caller, the signed question, its admission by policy,
the rate limits and the nonce, the run it is masked for, the audit entry, and the answer with its signed
statement. The operations themselves are in :mod:`node.handler` and :mod:`node.lookup_answers`; the order of the
checks is documented in :mod:`node.handler`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.proto import receipt_to_proto
from hpf.federation.audit.records import Receipt
from hpf.federation.catalog import Catalog
from hpf.federation.crypto.sealing import AgreementKey
from hpf.federation.errors import AuditError, CryptoError, FederationError, PlanError, UnavailableError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.plan import Plan
from hpf.federation.planner import asked_table, plan_query, sketch_query
from hpf.federation.planner.shape import shape_fingerprint
from hpf.federation.trust import statements
from hpf.federation.trust.certificates import Identity
from hpf.federation.trust.envelope import EnvelopeVerifier, VerifiedEnvelope
from hpf.federation.trust.statements import Statement
from hpf.node.executor import PartialExecutor, PartialResult
from hpf.node.lookup_index import LookupIndex
from hpf.node.privacy import PrivacyAccountant
from hpf.node.privacy_budget import PrivacyLedger
from hpf.node.protection import Protector, Run
from hpf.node.replay import ReplayGuard
from hpf.node.trail import Trail
from hpf.policies.engine import Asker, Decision, check_asker, check_asker_home, check_query
from hpf.policies.model import Policy, RateLimit
from hpf.policies.rate_limit import RateLimiter

T = TypeVar("T")
log = logging.getLogger("hpf.node")

# an audit log that cannot be written, and what its region's operator does about it
UNWRITABLE = {
    "AUDIT_WRITE_FAILED": "the region's operator must free space on its state directory's disk; it answers again then",
    "AUDIT_LOG_BROKEN": "the region's operator must restart the node once its state directory's disk takes writes",
}


@dataclass(frozen=True)
class Admission:
    """A signed question this node's policy admits: the verified envelope, the plan and the decision."""

    verified: VerifiedEnvelope
    plan: Plan
    decision: Decision


class AnsweringNode:
    """The checks and the audit every one of a node's operations shares (see :mod:`node.handler`)."""

    def __init__(
        self,
        node_id: str,
        catalog: Catalog,
        executor: PartialExecutor,
        verifier: EnvelopeVerifier,
        replay: ReplayGuard,
        policy: Policy,
        audit: AuditLog,
        lookups: LookupIndex | None = None,
        agreement: AgreementKey | None = None,
        subject_key: bytes | None = None,
        protector: Protector | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> None:
        self.node_id = node_id
        self.catalog = catalog
        self.executor = executor
        self.verifier = verifier
        self.replay = replay
        self.policy = policy
        self.limiter = RateLimiter()
        self.lookup_limiter = RateLimiter()
        self.audit = audit
        self.lookups = lookups
        self.agreement = agreement
        self.subject_key = subject_key
        self.protector = protector
        self.privacy = PrivacyAccountant(node_id, catalog, ledger)

    def close(self) -> None:
        self.audit.close()
        self.privacy.close()

    # -- the checks -------------------------------------------------------------------------------

    def _check_caller(self, caller: Callable[[], Identity | None], trail: Trail) -> None:
        """Only the coordinator calls a node, and its own certificate must not be revoked either."""
        identity = caller()
        if identity is not None:
            trail.via = identity.common_name
            self.verifier.revocations.check(identity.serial, "coordinator's")

    def _verify(
        self, signed: pb.SignedEnvelope, query_id: str, trail: Trail, describe: Callable[[pb.QueryEnvelope], str]
    ) -> VerifiedEnvelope:
        """The signed question, checked and written into the trail (``describe`` says what it asks, without a
        value), and the query id the coordinator names must be its own."""
        verified = self.verifier.verify(signed, operation=trail.operation)
        envelope, signer = verified.envelope, verified.signer
        trail.identity, trail.role = signer.common_name, signer.role or ""
        # a purpose code this node does not know is free text: it is not written down
        trail.purpose = envelope.purpose if envelope.purpose in self.policy.purposes or not envelope.purpose else "?"
        trail.consent = bool(envelope.consent_ref)
        trail.nonce, trail.query = envelope.nonce.hex(), describe(envelope)
        if query_id != verified.query_id:
            raise PlanError("the query id does not belong to the signed question", code="PLAN_QUERY_ID_MISMATCH")
        return verified

    def _admit(self, request: pb.PartialRequest, trail: Trail) -> Admission:
        verified = self._verify(request.envelope, request.query_id, trail, lambda e: shape_fingerprint(e.sql))
        envelope, signer = verified.envelope, verified.signer
        role = signer.role or ""
        asker = Asker(name=signer.common_name, role=role, region=signer.region)
        # who asks, from where, which table and why come first: a question this node refuses outright binds
        # nothing here
        self.check_home(asker, trail.operation)
        table = asked_table(envelope.sql, self.catalog)
        check_asker(self.policy, table, asker, envelope.purpose, bool(envelope.consent_ref), party=self.node_id)
        # a replay costs no binding either (recorded only once the question is admitted, in _spend)
        self.replay.check(envelope.nonce, request.participants or None, self._max_runs(envelope))
        if request.plan_fingerprint != sketch_query(envelope.sql, self.catalog).fingerprint:
            raise PlanError(
                "the coordinator's plan differs from the plan this node derives from the signed SQL",
                code="PLAN_MISMATCH",
                hint="the coordinator and this node may hold different catalogs",
            )
        plan = plan_query(envelope.sql, self.catalog)
        decision = check_query(
            self.policy,
            self.catalog,
            plan,
            asker,
            envelope.purpose,
            bool(envelope.consent_ref),
            party=self.node_id,
        )
        return Admission(verified=verified, plan=plan, decision=decision)

    def check_home(self, asker: Asker, operation: str) -> None:
        """Whether this node's policy admits the asker to ``operation`` from their home region (POLICY_ASKER_REGION
        if not), placed by this node's catalog."""
        check_asker_home(self.policy, asker, operation, party=self.node_id, region_code=self.catalog.region_code)

    def _max_runs(self, envelope: pb.QueryEnvelope) -> int:
        """How many runs of this question this node answers: its policy's bound, and never more than the asker
        signed (so a coordinator cannot re-run a question, and spend the asker's budget, behind its back)."""
        return min(self.policy.secure_aggregation.max_runs, envelope.max_runs)

    def _spend(self, verified: VerifiedEnvelope, people: int = 0, run: Run | None = None) -> int:
        """Refuse a replay, count the question against the asker's rate limits, remember its nonce.

        A replay is refused before it can use up the asker's rate limit; two copies racing past the first
        check still meet the store's unique nonce. A lookup of ``people`` identifiers also counts each of them
        against the role's lookup limit. A ``run`` may repeat a nonce as a re-run with fewer participants: the
        question was counted when it first ran, so a re-run is not counted again. Returns which run of the
        question this is (1 for the first).
        """
        signer, envelope = verified.signer, verified.envelope
        role = signer.role or ""
        participants = run.participants if run is not None else None
        max_runs = self._max_runs(envelope)
        if self.replay.check(envelope.nonce, participants, max_runs):
            return self.replay.record(
                envelope.nonce, envelope.issued_at_ms / 1000.0, participants=participants, max_runs=max_runs
            )
        role_policy = self.policy.roles.get(role)
        limit = role_policy.rate_limit if role_policy is not None else None
        lookup_limit: RateLimit | None = None
        if people and role_policy is not None and role_policy.lookups is not None:
            lookup_limit = role_policy.lookups.rate_limit
        # the lookup limit first: a refusal there does not use up a request; a refusal by the request limit
        # gives the people back, so a refused request counts against neither
        self.lookup_limiter.take(
            signer.common_name,
            lookup_limit,
            party=self.node_id,
            role=role,
            cost=people,
            rule=f"roles.{role}.lookups.rate_limit",
        )
        try:
            self.limiter.take(signer.common_name, limit, party=self.node_id, role=role)
        except FederationError:
            self.lookup_limiter.give_back(signer.common_name, people)
            raise
        return self.replay.record(
            envelope.nonce, envelope.issued_at_ms / 1000.0, participants=participants, max_runs=max_runs
        )

    # -- the audited operations -------------------------------------------------------------------

    def _log(self, trail: Trail, decision: str, code: str = "", rule: str = "") -> Receipt:
        """Append the request's entry. A log that cannot be written (a full disk) is the region's state, not the
        question's: nothing is answered, the region is reported missing, and the next request tries again."""
        try:
            return self.audit.append(trail.entry(self.node_id, decision, code, rule))
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

    def _give_back(self, charges: Sequence[Callable[[], None]]) -> None:
        """Give back the privacy charges of an answer that did not leave; one that cannot be given back (its
        ledger on the same full disk) stays spent, which costs the asker budget but releases nothing."""
        for give_back in charges:
            try:
                give_back()
            except FederationError as err:
                log.error("node %s kept a privacy charge it could not give back (%s)", self.node_id, err.code)

    def _audited(self, trail: Trail, work: Callable[[], T]) -> tuple[T | None, Receipt, FederationError | None]:
        """Run ``work`` and append its entry, allowed or refused. A refusal comes back (not raised) with the
        receipt of its entry; anything unexpected is logged as refused and raised."""
        try:
            result = work()
        except FederationError as err:
            return None, self._log(trail, "refused", err.code, err.rule or ""), err
        except Exception:
            self._log(trail, "refused", "NODE_INTERNAL")
            raise
        return result, self._log(trail, "allowed"), None

    def _protector(self) -> Protector:
        if self.protector is None:
            raise CryptoError("this region cannot mask its answers (no agreement key)", code="SECAGG_UNSUPPORTED")
        return self.protector

    def _run(self, query_id: str, participants: Sequence[str], trail: Trail, terms: Mapping[str, Any]) -> Run:
        minimum = self.policy.secure_aggregation.min_participants
        run = self._protector().run(query_id, participants, minimum, terms)
        trail.participants = ",".join(run.participants)
        return run

    def _signed(
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

    def _answer(self, trail: Trail, work: Callable[[], PartialResult], started: float) -> pb.PartialResponse:
        """Run an audited ``work`` and send its ciphertexts with the receipt of its entry (or raise its refusal)."""
        result, receipt, refusal = self._audited(trail, work)
        if refusal is not None:
            raise refusal
        assert result is not None
        # no timings in the answer: how long this region took is for its own log, not for the asker
        log.info("%s %s handled in %.2f ms", trail.operation, trail.nonce[:12], (time.perf_counter() - started) * 1e3)
        return pb.PartialResponse(
            node_id=self.node_id,
            plan_fingerprint=result.fingerprint,
            ciphertexts=result.ciphertexts,
            receipt=receipt_to_proto(receipt),
            statement=result.statement,
        )
