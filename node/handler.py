"""The node's handler for one signed question: verify, admit by policy, run, encrypt, audit. No gRPC here.

A node never trusts the coordinator. For every request, in this order:

1. the signed envelope: CA, validity, revocation, signature, federation, operation, time window;
2. the query id the coordinator names must be the envelope's own;
3. the plan, derived here from the signed SQL and compared with the coordinator's fingerprint;
4. this node's policy: role, table, purpose, consent, aggregates, column uses; it fixes k;
5. the public context must be the one the asker signed;
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

import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from federation import he, statements
from federation.audit_log import AuditLog
from federation.audit_proto import checkpoint_to_proto, receipt_to_proto
from federation.audit_records import Receipt
from federation.catalog import Catalog
from federation.envelope import EnvelopeVerifier, VerifiedEnvelope
from federation.errors import AuditError, FederationError, PlanError
from federation.generated import hpf_federation_pb2 as pb
from federation.lookup_codec import chunk_sizes, encode_facts, layout_fingerprint
from federation.pki import Identity
from federation.plan import Plan
from federation.planner import plan_query
from federation.planner.shape import shape_fingerprint
from federation.sealing import AgreementKey, subject_tags
from federation.statements import Statement
from node.executor import PartialExecutor, PartialResult
from node.lookup_index import LookupIndex
from node.privacy import PrivacyAccountant, signed_terms
from node.privacy_budget import PrivacyLedger
from node.protection import Protector, Run
from node.replay import ReplayGuard
from policies.engine import Asker, Decision, check_lookup, check_query
from policies.model import Policy, RateLimit
from policies.rate_limit import RateLimiter

log = logging.getLogger("hpf.node")

T = TypeVar("T")


@dataclass
class Trail:
    """What the audit entry says about one request; filled in as the checks pass."""

    operation: str
    via: str = ""
    identity: str = ""
    role: str = ""
    purpose: str = ""
    consent: bool = False
    query: str = ""
    nonce: str = ""
    ciphertext: str = ""
    subjects: str | None = None  # lookups: keyed hashes of the identifiers (sealing.subject_tag), space-separated
    participants: str | None = None  # the run's participant set, comma-separated (masks cancel over exactly it)
    privacy: str | None = None  # "exact", or "dp epsilon=E delta=D" charged to the asker

    def entry(self, node_id: str, decision: str, code: str, rule: str) -> dict[str, str | int | bool | None]:
        now = dt.datetime.now(dt.UTC)
        entry: dict[str, str | int | bool | None] = {
            "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "node": node_id,
            "via": self.via,
            "identity": self.identity,
            "role": self.role,
            "purpose": self.purpose,
            "consent": self.consent,
            "operation": self.operation,
            "query": self.query,
            "nonce": self.nonce,
            "decision": decision,
            "code": code,
            "rule": rule,
            "ciphertext": self.ciphertext,
        }
        for name, value in (
            ("subjects", self.subjects),
            ("participants", self.participants),
            ("privacy", self.privacy),
        ):
            if value is not None:
                entry[name] = value
        return entry


@dataclass(frozen=True)
class Admission:
    verified: VerifiedEnvelope
    plan: Plan
    decision: Decision


def _lookup_layout(envelope: pb.QueryEnvelope) -> str:
    """What an audit entry says a lookup asks: its answer's layout (how many people, how many cells)."""
    spec = envelope.lookup
    return layout_fingerprint(spec.subjects, len(spec.regions) if spec.breakdown else 1)


def _ciphertexts_digest(ciphertexts: list[bytes]) -> str:
    """What the audit entry says of the ciphertexts sent: SHA-256 over each one's SHA-256."""
    digest = hashlib.sha256()
    for blob in ciphertexts:
        digest.update(hashlib.sha256(blob).digest())
    return digest.hexdigest()


class NodeHandler:
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
        plan = plan_query(envelope.sql, self.catalog)
        if request.plan_fingerprint != plan.fingerprint:
            raise PlanError(
                "the coordinator's plan differs from the plan this node derives from the signed SQL",
                code="PLAN_MISMATCH",
                hint="the coordinator and this node may hold different catalogs",
            )
        asker = Asker(name=signer.common_name, role=role, region=signer.region)
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
        max_runs = self.policy.secure_aggregation.max_runs
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
        return self.audit.append(trail.entry(self.node_id, decision, code, rule))

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

    def partial(self, request: pb.PartialRequest, caller: Callable[[], Identity | None]) -> pb.PartialResponse:
        """Answer one partial plan; ``caller`` checks and names the calling party (raises if not allowed)."""
        started = time.perf_counter()
        trail = Trail(operation="query")

        def work() -> PartialResult:
            self._check_caller(caller, trail)
            admission = self._admit(request, trail)
            verified, plan, decision = admission.verified, admission.plan, admission.decision
            ctx = self.executor.public_context(request.public_context, verified.envelope.context_digest)
            terms = self.privacy.terms(plan, decision)
            trail.privacy = "exact" if terms is None else f"dp epsilon={terms.epsilon:g} delta={terms.delta:g}"
            signed = signed_terms(terms)
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
                )
            except BaseException:
                if charged is not None:
                    charged()
                raise
            trail.ciphertext = _ciphertexts_digest(result.ciphertexts)
            return self._signed(result, run, verified.envelope.context_digest, trail.ciphertext, signed, runs)

        return self._answer(trail, work, started)

    def _protector(self) -> Protector:
        if self.protector is None:
            raise PlanError("this region cannot mask its answers (no agreement key)", code="SECAGG_UNSUPPORTED")
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
        return pb.PartialResponse(
            node_id=self.node_id,
            plan_fingerprint=result.fingerprint,
            ciphertexts=result.ciphertexts,
            scan_ms=result.scan_ms,
            encrypt_ms=result.encrypt_ms,
            total_ms=(time.perf_counter() - started) * 1e3,
            receipt=receipt_to_proto(receipt),
            statement=result.statement,
        )

    def _admit_lookup(
        self, request: pb.NodeLookupRequest, trail: Trail
    ) -> tuple[VerifiedEnvelope, list[str], int, int]:
        """Verify a lookup, open the identifiers sealed to this node and judge it by policy.

        Returns the verified envelope, the identifiers, the answer's cells and this node's cell. The identifiers'
        keyed hashes go into the trail as soon as they are opened, so a refused lookup is on record too.
        """
        verified = self._verify(request.envelope, request.query_id, trail, _lookup_layout)
        envelope, signer = verified.envelope, verified.signer
        spec = envelope.lookup
        regions = list(spec.regions)
        everyone = {n.id for n in self.catalog.nodes}
        if (
            spec.subjects < 1
            or len(set(regions)) != len(regions)
            or self.node_id not in regions
            or not set(regions) <= everyone
        ):
            raise PlanError(
                "the signed lookup does not name this region, names a region twice or one not in the catalog, "
                "or nobody",
                code="LOOKUP_MALFORMED",
            )
        cells = len(regions) if spec.breakdown else 1
        chunk_sizes(spec.subjects, cells)  # refuses a layout too large before any work
        if self.lookups is None or self.agreement is None or self.subject_key is None:
            raise PlanError("this region does not answer person lookups", code="LOOKUP_UNSUPPORTED")
        ids = self.agreement.open(
            request.sealed,
            spec.seal_public_key,
            verified.query_id,
            self.node_id,
            spec.subjects,
            spec.subjects_commitment,
        )
        key = self.subject_key
        trail.subjects = " ".join(subject_tags(key, trail.nonce, ids))
        asker = Asker(name=signer.common_name, role=signer.role or "", region=signer.region)
        check_lookup(
            self.policy,
            asker,
            envelope.purpose,
            bool(envelope.consent_ref),
            spec.subjects,
            spec.breakdown,
            party=self.node_id,
            asked=regions,
            everyone=everyone,
        )
        return verified, ids, cells, regions.index(self.node_id) if spec.breakdown else 0

    def lookup(self, request: pb.NodeLookupRequest, caller: Callable[[], Identity | None]) -> pb.PartialResponse:
        """This region's facts about the people sealed to it, encrypted under the asker's key."""
        started = time.perf_counter()
        trail = Trail(operation="lookup")

        def work() -> PartialResult:
            self._check_caller(caller, trail)
            verified, ids, cells, cell = self._admit_lookup(request, trail)
            ctx = self.executor.public_context(request.public_context, verified.envelope.context_digest)
            run = self._run(verified.query_id, request.participants, trail, signed_terms(None))
            envelope, asked = verified.envelope, set(verified.envelope.lookup.regions)
            if not set(run.participants) <= asked:
                raise PlanError("a lookup's participants are regions it asks", code="SECAGG_PARTICIPANTS_INVALID")
            if len(run.participants) < len(asked):
                # the survivors of a failed run: set against a run with every region asked (a coordinator and the
                # asker together may hold both sums), this sum shows the regions left out by difference. So it is
                # answered only where the asker may ask exactly these regions: the policy judges the set again.
                signer = verified.signer
                try:
                    check_lookup(
                        self.policy,
                        Asker(name=signer.common_name, role=signer.role or "", region=signer.region),
                        envelope.purpose,
                        bool(envelope.consent_ref),
                        envelope.lookup.subjects,
                        envelope.lookup.breakdown,
                        party=self.node_id,
                        asked=run.participants,
                        everyone={n.id for n in self.catalog.nodes},
                    )
                except FederationError as err:
                    left_out = ", ".join(sorted(asked - set(run.participants)))
                    raise type(err)(
                        f"a run without region(s) {left_out} of those the lookup asks would show their own figures "
                        f"by difference: {err.message}",
                        code=err.code,
                        rule=err.rule,
                        hint="ask again when every region the lookup asks is up",
                    ) from None
            runs = self._spend(verified, people=len(ids), run=run)
            assert self.lookups is not None
            t_scan = time.perf_counter()
            slots = encode_facts(self.lookups.facts(ids), cells=cells, cell=cell)
            t_encode = time.perf_counter()
            sizes = chunk_sizes(len(ids), cells)
            pieces = self._protector().mask(run, np.split(slots, np.cumsum(sizes)[:-1]))
            ciphertexts = [he.encrypt_slots(ctx, piece) for piece in pieces]
            done = time.perf_counter()
            trail.ciphertext = _ciphertexts_digest(ciphertexts)
            log.info("lookup %s answered: %d ciphertext(s)", request.query_id[:12], len(ciphertexts))
            result = PartialResult(
                fingerprint=trail.query,
                ciphertexts=ciphertexts,
                scan_ms=(t_encode - t_scan) * 1e3,
                encrypt_ms=(done - t_encode) * 1e3,
            )
            context = verified.envelope.context_digest
            return self._signed(result, run, context, trail.ciphertext, signed_terms(None), runs)

        return self._answer(trail, work, started)

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
        """Whether this node would run the question; a policy refusal is a verdict, not an error."""
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
            if not refusal.code.startswith("POLICY_"):
                raise refusal
            return pb.NodeVerdict(
                node_id=self.node_id,
                accepted=False,
                code=refusal.code,
                message=refusal.message,
                rule=refusal.rule or "",
                hint=refusal.hint or "",
                receipt=receipt_to_proto(receipt),
            )
        assert done is not None
        admission, privacy = done
        return pb.NodeVerdict(
            node_id=self.node_id,
            accepted=True,
            min_group_size=admission.decision.min_group_size,
            receipt=receipt_to_proto(receipt),
            privacy=privacy,
            min_participants=self.policy.secure_aggregation.min_participants,
        )
