"""How a node admits a request: small stages, each one check, run in the order of a tuple by :meth:`Admission.run`.

A node never trusts the coordinator. The order of a question's checks is :data:`QUERY` (an explain's is
:data:`EXPLAIN`, a person lookup's :data:`node.lookup_answers.LOOKUP`):

- the caller, then the signed envelope (CA, validity, revocation, signature, federation, operation, time window),
  and the query id the coordinator names must be the envelope's own;
- who asks, from where, which table and why come first: a question this node refuses outright binds nothing here;
  a replay costs no binding either (its nonce is recorded only once the question is admitted);
- the plan, derived here from the signed SQL and compared with the coordinator's fingerprint, then this node's
  policy over it (aggregates, column uses), which fixes k;
- the public context, in this node's HE wire format (checked before it is parsed) and the one the asker signed;
- the run's participant set (see :mod:`node.protection`): regions of the catalog, this one among them, at least the
  policy's minimum, and every region of the catalog for an exact answer unless the policy allows fewer;
- the rate limits and the nonce (:meth:`Admission.spend`): a request refused earlier does not use up its nonce, so
  the coordinator may resend it (e.g. with the public context a restarted node no longer holds), unless this is a
  re-run of it with fewer participants (see :mod:`node.replay`);
- under DP, the asker's privacy budget is charged last (after the nonce: a question refused for its budget is used
  up, like one the node answered).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenseal as ts

from hpf.federation.catalog import Catalog
from hpf.federation.crypto import he
from hpf.federation.crypto.sealing import AgreementKey
from hpf.federation.errors import AuthError, CryptoError, FederationError, PlanError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.plan import Plan
from hpf.federation.planner import asked_table, plan_query, sketch_query
from hpf.federation.planner.dialects import Rendered, check_backend
from hpf.federation.planner.shape import shape_fingerprint
from hpf.federation.privacy.dp_plan import DpTerms
from hpf.federation.trust.certificates import Identity
from hpf.federation.trust.envelope import EnvelopeVerifier, VerifiedEnvelope
from hpf.node.consent_gate import ConsentGate
from hpf.node.executor import PartialExecutor
from hpf.node.lookup_index import LookupIndex
from hpf.node.privacy import PrivacyAccountant, signed_terms
from hpf.node.protection import Protector, Run
from hpf.node.replay import ReplayGuard
from hpf.node.restore import iso_of_ms, questions_from_ms
from hpf.node.trail import Trail
from hpf.policies.engine import Asker, Decision, check_asker, check_asker_home, check_query
from hpf.policies.model import Policy, RateLimit
from hpf.policies.rate_limit import RateLimiter

A = TypeVar("A", bound="Asked")


@dataclass
class Asked(ABC):
    """One request on its way through its stages: what it asks, and what each stage found for the stages after it."""

    request: pb.PartialRequest | pb.NodeLookupRequest
    caller: Callable[[], Identity | None]
    trail: Trail
    verified: VerifiedEnvelope = field(init=False)
    context: ts.Context = field(init=False)
    protector: Protector = field(init=False)
    signed: dict[str, Any] = field(default_factory=lambda: signed_terms(None))  # the privacy terms as signed
    run: Run | None = None
    runs: int = 0  # which run of the question this is (1 for the first), once it is spent
    people: int = 0  # identifiers a lookup counts against the role's lookup limit

    @abstractmethod
    def describe(self, envelope: pb.QueryEnvelope) -> str:
        """What the audit entry says the request asks, without a value."""

    @property
    def asker(self) -> Asker:
        """Who signed the request, as the policy knows them."""
        signer = self.verified.signer
        return Asker(name=signer.common_name, role=signer.role or "", region=signer.region)


@dataclass
class Question(Asked):
    """A question (a query or an explain) on its way through :data:`QUERY` or :data:`EXPLAIN`."""

    request: pb.PartialRequest
    plan: Plan = field(init=False)
    decision: Decision = field(init=False)
    terms: DpTerms | None = None
    charged: Callable[[], None] | None = None  # what gives the DP charge back if the answer cannot leave
    privacy: pb.PrivacyVerdict | None = None  # an explain's verdict on the privacy terms
    rendered: Rendered = field(default_factory=dict)  # its node queries as this node's backend runs them

    def describe(self, envelope: pb.QueryEnvelope) -> str:
        return shape_fingerprint(envelope.sql)


@dataclass
class Admission:
    """Everything a request is checked against before this node works on it: :meth:`run` takes it through a tuple
    of stages."""

    node_id: str
    catalog: Catalog
    policy: Policy
    verifier: EnvelopeVerifier
    replay: ReplayGuard
    executor: PartialExecutor
    privacy: PrivacyAccountant
    sign: Callable[[bytes], bytes]  # this node's audit key, for the refusals it signs (of consents)
    lookups: LookupIndex
    agreement: AgreementKey
    subject_key: bytes  # what the identifiers' keyed hashes in the audit log are keyed with
    limiter: RateLimiter = field(default_factory=RateLimiter)
    lookup_limiter: RateLimiter = field(default_factory=RateLimiter)
    protector: Protector | None = None
    consent_gate: ConsentGate = field(default_factory=ConsentGate)
    restored_at_ms: int = 0  # when this node was last restored from a backup (0: never; see node.backup)

    def run(self, stages: Sequence[Callable[[Admission, A], None]], asked: A) -> A:
        """Take ``asked`` through ``stages`` in order; the first refusal raises."""
        for stage in stages:
            stage(self, asked)
        return asked

    def check_caller(self, caller: Callable[[], Identity | None], trail: Trail) -> None:
        """Only the coordinator calls a node (``caller`` checks and names it), and its own certificate must not be
        revoked either."""
        identity = caller()
        if identity is not None:
            trail.via = identity.common_name
            self.verifier.revocations.check(identity.serial, "coordinator's")

    def protection(self) -> Protector:
        """What masks this node's answers (SECAGG_UNSUPPORTED without an agreement key)."""
        if self.protector is None:
            raise CryptoError("this region cannot mask its answers (no agreement key)", code="SECAGG_UNSUPPORTED")
        return self.protector

    def check_home(self, asker: Asker, operation: str) -> None:
        """Whether this node's policy admits the asker to ``operation`` from their home region (POLICY_ASKER_REGION
        if not), placed by this node's catalog."""
        check_asker_home(self.policy, asker, operation, party=self.node_id, region_code=self.catalog.region_code)

    def max_runs(self, envelope: pb.QueryEnvelope) -> int:
        """How many runs of this question this node answers: its policy's bound, and never more than the asker
        signed (so a coordinator cannot re-run a question, and spend the asker's budget, behind its back)."""
        return min(self.policy.secure_aggregation.max_runs, envelope.max_runs)

    def spend(self, verified: VerifiedEnvelope, people: int = 0, run: Run | None = None) -> int:
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
        max_runs = self.max_runs(envelope)
        if not self.replay.check(envelope.nonce, participants, max_runs):
            self._take_rate_limits(signer.common_name, role, people)
        return self.replay.record(
            envelope.nonce, envelope.issued_at_ms / 1000.0, participants=participants, max_runs=max_runs
        )

    def _take_rate_limits(self, name: str, role: str, people: int) -> None:
        """The lookup limit first: a refusal there does not use up a request; a refusal by the request limit gives
        the people back, so a refused request counts against neither."""
        role_policy = self.policy.roles.get(role)
        limit = role_policy.rate_limit if role_policy is not None else None
        lookup_limit: RateLimit | None = None
        if people and role_policy is not None and role_policy.lookups is not None:
            lookup_limit = role_policy.lookups.rate_limit
        rule = f"roles.{role}.lookups.rate_limit"
        self.lookup_limiter.take(name, lookup_limit, party=self.node_id, role=role, cost=people, rule=rule)
        try:
            self.limiter.take(name, limit, party=self.node_id, role=role)
        except FederationError:
            self.lookup_limiter.give_back(name, people)
            raise


# -- the stages every request passes ----------------------------------------------------------------------------


def check_caller(node: Admission, asked: Asked) -> None:
    """Only the coordinator calls a node, and its own certificate must not be revoked either."""
    node.check_caller(asked.caller, asked.trail)


def verify_envelope(node: Admission, asked: Asked) -> None:
    """The signed envelope, checked and written into the trail (what it asks, without a value)."""
    verified = node.verifier.verify(asked.request.envelope, operation=asked.trail.operation)
    envelope, signer, trail = verified.envelope, verified.signer, asked.trail
    taken_from = questions_from_ms(node.restored_at_ms, node.verifier.window_s)
    if envelope.issued_at_ms < taken_from:
        # its nonce may have been spent on the host this node's state was lost with: after the backup, that host
        # took questions signed up to a window ahead of its clock
        raise AuthError(
            "the question was signed before this region was restored from a backup, or within its envelope window "
            f"after the restore: it may have run already; the region takes questions signed from "
            f"{iso_of_ms(taken_from)}",
            code="AUTH_SIGNED_BEFORE_RESTORE",
            hint=f"sign the question again from {iso_of_ms(taken_from)} on (the hpf client signs each one afresh)",
        )
    trail.identity, trail.role = signer.common_name, signer.role or ""
    # a purpose code this node does not know is free text: it is not written down
    trail.purpose = envelope.purpose if envelope.purpose in node.policy.purposes or not envelope.purpose else "?"
    trail.consent = bool(envelope.consent_ref)
    trail.nonce, trail.query = envelope.nonce.hex(), asked.describe(envelope)
    asked.verified = verified


def check_query_id(node: Admission, asked: Asked) -> None:
    """The query id the coordinator names must be the signed question's own (PLAN_QUERY_ID_MISMATCH)."""
    if asked.request.query_id != asked.verified.query_id:
        raise PlanError("the query id does not belong to the signed question", code="PLAN_QUERY_ID_MISMATCH")


def check_home(node: Admission, asked: Asked) -> None:
    """The asker's home region must be one this node's policy admits to the operation."""
    node.check_home(asked.asker, asked.trail.operation)


def check_he_format(node: Admission, asked: Asked) -> None:
    """The public context must be in this node's HE wire format, checked before it is parsed (HE_FORMAT_MISMATCH)."""
    he.check_he_format(asked.request.he_format, "the client's context")


def take_public_context(node: Admission, asked: Asked) -> None:
    """The public context must be the one the asker signed (sent, or held here from before)."""
    asked.context = node.executor.public_context(asked.request.public_context, asked.verified.envelope.context_digest)


def spend(node: Admission, asked: Asked) -> None:
    """The nonce must be new (or a re-run's), and the question counts against the asker's rate limits."""
    asked.runs = node.spend(asked.verified, people=asked.people, run=asked.run)


# -- a question's own stages ------------------------------------------------------------------------------------


def check_role_table(node: Admission, asked: Question) -> None:
    """The asker's role, the table, the purpose and the consent must be ones this node's policy admits."""
    envelope = asked.verified.envelope
    table = asked_table(envelope.sql, node.catalog)
    check_asker(node.policy, table, asked.asker, envelope.purpose, bool(envelope.consent_ref), party=node.node_id)


def check_not_replayed(node: Admission, asked: Question) -> None:
    """A replay is refused before anything is bound (its nonce is recorded only once it is spent)."""
    envelope = asked.verified.envelope
    node.replay.check(envelope.nonce, asked.request.participants or None, node.max_runs(envelope))


def check_plan(node: Admission, asked: Question) -> None:
    """The coordinator's plan fingerprint must be the one this node derives from the signed SQL (PLAN_MISMATCH)."""
    if asked.request.plan_fingerprint != sketch_query(asked.verified.envelope.sql, node.catalog).fingerprint:
        raise PlanError(
            "the coordinator's plan differs from the plan this node derives from the signed SQL",
            code="PLAN_MISMATCH",
            hint="the coordinator and this node may hold different catalogs",
        )


def check_policy(node: Admission, asked: Question) -> None:
    """This node's policy over the plan (aggregates, column uses) decides, and fixes k."""
    envelope = asked.verified.envelope
    asked.plan = plan_query(envelope.sql, node.catalog)
    consent = bool(envelope.consent_ref)
    asked.decision = check_query(
        node.policy, node.catalog, asked.plan, asked.asker, envelope.purpose, consent, party=node.node_id
    )


def check_backend_runs(node: Admission, asked: Question) -> None:
    """This node's database runs the plan's query exactly, or the plan is refused here (PLAN_BACKEND_UNSUPPORTED).
    The queries rendered for it are kept with the question: its run does not render them again."""
    dp = asked.decision.privacy.mode == "dp"
    check_backend(asked.plan, node.catalog, node.executor.backend.dialect, dp=dp, rendered=asked.rendered)


def fix_terms(node: Admission, asked: Question) -> None:
    """The answer's privacy terms, exact or DP, written into the trail as they are signed (fixed decimals)."""
    asked.terms = node.privacy.terms(asked.plan, asked.decision)
    signed = asked.signed = signed_terms(asked.terms)
    asked.trail.privacy = "exact" if asked.terms is None else f"dp epsilon={signed['epsilon']} delta={signed['delta']}"


def fix_run(node: Admission, asked: Asked) -> None:
    """The run's participant set: regions of the catalog, this one among them, at least the policy's minimum."""
    protector = node.protection()
    minimum = node.policy.secure_aggregation.min_participants
    asked.run = protector.run(asked.verified.query_id, asked.request.participants, minimum, asked.signed)
    asked.trail.participants = ",".join(asked.run.participants)
    asked.protector = protector


def check_exact_over_everyone(node: Admission, asked: Question) -> None:
    """An exact answer runs over every region of the catalog, unless the policy allows fewer."""
    if asked.terms is None:
        assert asked.run is not None  # fix_run came first
        asked.protector.check_exact_over_everyone(asked.run, node.policy.secure_aggregation.exact_subsets)


def charge_budget(node: Admission, asked: Question) -> None:
    """Under DP, the asker's privacy budget is charged (after the nonce)."""
    if asked.terms is not None:
        asked.charged = node.privacy.charge(asked.verified.signer.common_name, asked.decision)


def judge_privacy(node: Admission, asked: Question) -> None:
    """An explain's verdict on the privacy terms (DP_UNBOUNDED is this question's refusal too)."""
    asked.privacy = node.privacy.verdict(asked.plan, asked.verified.signer.common_name, asked.decision)


# a question's admission, the part a query and an explain share
ADMIT_QUESTION: tuple[Callable[[Admission, Question], None], ...] = (
    check_caller,
    verify_envelope,
    check_query_id,
    check_home,
    check_role_table,
    check_not_replayed,
    check_plan,
    check_policy,
    check_backend_runs,
)
QUERY: tuple[Callable[[Admission, Question], None], ...] = (
    *ADMIT_QUESTION,
    check_he_format,
    take_public_context,
    fix_terms,
    fix_run,
    check_exact_over_everyone,
    spend,
    charge_budget,
)
EXPLAIN: tuple[Callable[[Admission, Question], None], ...] = (*ADMIT_QUESTION, judge_privacy, spend)
