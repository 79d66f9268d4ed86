"""The coordinator's handler: plan, fan out to every node with a deadline, gather the answers. No gRPC server here.

The coordinator holds the catalog and the node directory, nothing secret: it sees SQL text, ciphertexts,
which nodes answered and how long they took, never a value. It checks that each region's ciphertexts are well
formed and are the ones the region signed, and relays them; the client adds them itself, so a coordinator that
altered, added or left out a ciphertext would be caught there.

Every method is a coroutine on the coordinator's event loop (:mod:`coordinator.event_loop`): waiting for the
regions holds no thread, and the work that takes the processor goes to the loop's workers.

What a fan-out comes to (the answer, the regions missing from it, the errors that end a question) is
:mod:`coordinator.outcome`; where a person lookup goes, and in which layout, :mod:`coordinator.lookup_route`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from hpf.coordinator.lookup_route import route_lookup
from hpf.coordinator.outcome import FederatedAnswer, MissingRegion, no_region_answered, refuse_if_any, regions_missing
from hpf.coordinator.region_health import UNWELL_MESSAGE, RegionHealth
from hpf.federation import error_codes
from hpf.federation.catalog import Catalog
from hpf.federation.crypto import he
from hpf.federation.errors import (
    AuthError,
    FederationError,
    PlanError,
    UnavailableError,
    error_for_code,
    from_rpc_error,
    quoted,
)
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.lru import Lru
from hpf.federation.planner import sketch_query
from hpf.federation.trust import statements
from hpf.federation.trust.envelope import VerifiedEnvelope
from hpf.federation.trust.verdicts import TRANSPORT_CODES

log = logging.getLogger("hpf.coordinator")

MAX_RUNS = 3  # runs of one question: the first, then re-runs with the survivors; never more than the asker signed
MAX_DEADLINE_MS = 600_000  # a client may shorten the wait for the regions, not hold the coordinator forever
# A region that refuses or fails on *this query* fails the whole query: an answer silently short of a region
# would mislead. A region that is down, late or broken is only reported missing. A region refusing an applicant's
# consent fails the lookup too, never a re-run without it: the others' figures for that applicant must not reach
# the asker (the client asks again without the applicant). Which codes do is declared in federation.error_codes
# (a code no declaration names only marks its region missing).
QUERY_FAILURES = error_codes.FAILS_QUESTION
# What the survivors of a run refuse only because regions are left out of it: the question had an answer with
# them, so the refusal says that they are missing (and what the policy needs without them), not that the
# question was refused.
NEEDS_THE_MISSING = error_codes.NEEDS_THE_MISSING


class FanOut:
    def __init__(
        self,
        catalog: Catalog,
        stubs: Mapping[str, pb_grpc.NodeStub],
        deadline_ms: int,
        min_deadline_ms: int = 0,
        health: RegionHealth | None = None,
    ) -> None:
        self.catalog = catalog
        self.health = health  # regions known unwell are left out of a question at its admission
        self._stubs = dict(stubs)
        self.deadline_ms = deadline_ms
        self.min_deadline_ms = min_deadline_ms
        # (node, context digest) pairs the node has been sent, so later requests carry only the digest
        self._held: Lru[tuple[str, str], bool] = Lru(64 * max(1, len(self._stubs)))

    def use_stubs(self, stubs: Mapping[str, pb_grpc.NodeStub]) -> None:
        """Call the same regions through ``stubs`` from now on (a region moved); a question already running keeps
        the stubs it started with where it has them."""
        self._stubs = dict(stubs)

    async def _resend_if_context_lost(
        self, node_id: str, method: str, call: Any, request: Any, full_context: bytes, deadline: float
    ) -> Any:
        """The node's answer; a node that no longer holds the context (restart, eviction) is sent it again."""
        try:
            return await call
        except grpc.RpcError as err:
            if request.public_context or from_rpc_error(err).code != "CONTEXT_UNKNOWN":
                raise
        resend = type(request)()
        resend.CopyFrom(request)
        resend.public_context = full_context
        return await getattr(self._stubs[node_id], method)(resend, timeout=max(deadline - time.monotonic(), 0.001))

    def _deadline(self, deadline_ms: int, since: float | None = None) -> float:
        """The wait is the server's: an asker may lengthen it, never shorten it below the floor. It runs from
        ``since`` (the request's arrival; else now), so a request that queued for a worker waits that much less;
        but every region is always given the floor from now (a question queued behind others, as an asker may
        arrange, must not time out a region that is slow only on the rows it looks for)."""
        wait = min(max(deadline_ms or self.deadline_ms, self.min_deadline_ms), MAX_DEADLINE_MS) / 1000.0
        now = time.monotonic()
        return max((now if since is None else since) + wait, now + self.min_deadline_ms / 1000.0)

    def _unwell(self, node_ids: Sequence[str]) -> list[str]:
        """Those of ``node_ids`` known unwell now, at the question's admission."""
        known = self.health.unwell() if self.health is not None else frozenset()
        return [n for n in node_ids if n in known]

    def _note_missed(self, missing: Sequence[MissingRegion]) -> None:
        if self.health is not None:
            for m in missing:
                # a stalled region, or one that says its own files cannot be served, or that it was restored from
                # a backup and refuses questions for a window after it (its health says so too): once a probe
                # confirms it, later questions are admitted without it, not run again without it at every other
                # region; one that refuses connections costs no wait
                if m.code in ("NODE_TIMEOUT", "NODE_UNWELL", "AUTH_SIGNED_BEFORE_RESTORE"):
                    self.health.note_missed(m.node_id)

    async def audit_proof(self, request: pb.AuditProofRequest) -> pb.AuditProofResponse:
        """Relay a request for audit proofs to the one region it names."""
        stub = self._stubs.get(request.node_id)
        if stub is None:
            raise PlanError(f"no region {quoted(request.node_id)} in this federation", code="PLAN_UNKNOWN_REGION")
        try:
            return await stub.AuditProof(request, timeout=self.deadline_ms / 1000.0)
        except grpc.RpcError as err:
            missing = _missing(request.node_id, err)
            raise error_for_code(missing.code, missing.message, missing.hint or None, missing.rule or None) from None

    async def explain(
        self,
        question: VerifiedEnvelope,
        signed: pb.SignedEnvelope,
        deadline_ms: int = 0,
        arrived_at: float | None = None,
    ) -> pb.ExplainResponse:
        """Ask every region whether its policy accepts the question; nothing runs (nor is bound here).

        Each region signs its verdict (the client checks it); for a region down, late or broken this coordinator
        can only say so, unsigned, with a transport code. A region that refuses the request itself (e.g. a
        replayed or revoked signature) fails the explain, as it would fail the question."""
        plan = await asyncio.to_thread(sketch_query, question.envelope.sql, self.catalog)
        deadline = self._deadline(deadline_ms, arrived_at)
        request = pb.PartialRequest(query_id=question.query_id, plan_fingerprint=plan.fingerprint, envelope=signed)
        unwell = self._unwell(list(self._stubs))
        calls = {
            n: stub.Explain(request, timeout=max(deadline - time.monotonic(), 0.001))
            for n, stub in self._stubs.items()
            if n not in unwell
        }
        verdicts = [
            pb.NodeVerdict(node_id=n, accepted=False, code="NODE_UNWELL", message=UNWELL_MESSAGE) for n in unwell
        ]
        refusals = []
        for node_id, call in calls.items():
            try:
                verdict = await call
            except grpc.RpcError as err:
                m = _missing(node_id, err)
                self._note_missed([m])
                if m.code in QUERY_FAILURES:
                    refusals.append(m)
                    continue
                code = m.code if m.code in TRANSPORT_CODES else "NODE_BAD_ANSWER"
                verdicts.append(pb.NodeVerdict(node_id=node_id, accepted=False, code=code, message=m.message))
                continue
            if verdict.node_id != node_id or not verdict.signature:
                verdict = pb.NodeVerdict(
                    node_id=node_id, accepted=False, code="NODE_BAD_ANSWER", message="the node's verdict is not its own"
                )
            verdicts.append(verdict)
        refuse_if_any(refusals, "refused to explain")
        order = list(self._stubs)
        verdicts.sort(key=lambda v: order.index(v.node_id))
        return pb.ExplainResponse(query_id=question.query_id, plan_fingerprint=plan.fingerprint, verdicts=verdicts)

    async def query(
        self,
        question: VerifiedEnvelope,
        signed: pb.SignedEnvelope,
        public_context: bytes,
        deadline_ms: int = 0,
        arrived_at: float | None = None,
    ) -> FederatedAnswer:
        t0 = time.perf_counter()
        # every check that binds nothing: the coordinator never binds an asker's SQL (the regions do, once their
        # policies admitted the asker), and the sketch already fixes the layout and the fingerprint
        plan = await asyncio.to_thread(sketch_query, question.envelope.sql, self.catalog)

        def request(node_id: str, context: bytes) -> pb.PartialRequest:
            return pb.PartialRequest(
                query_id=question.query_id,
                public_context=context,
                plan_fingerprint=plan.fingerprint,
                envelope=signed,
                he_format=he.HE_FORMAT,  # the client's: the coordinator refused any other
            )

        return await self._gather(
            question,
            public_context,
            deadline_ms,
            t0,
            list(self._stubs),
            "ComputePartial",
            request,
            plan.fingerprint,
            plan.layout.chunk_sizes,
            arrived_at,
        )

    async def lookup(
        self,
        question: VerifiedEnvelope,
        signed: pb.SignedEnvelope,
        public_context: bytes,
        sealed: Sequence[pb.SealedSubjects],
        deadline_ms: int = 0,
        arrived_at: float | None = None,
        *,
        sealed_consent: bytes = b"",
    ) -> FederatedAnswer:
        """Route each region its sealed identifiers and every region the sealed consent tokens (opaque here), and
        gather the regions' encrypted facts."""
        t0 = time.perf_counter()
        route = route_lookup(question.envelope.lookup, sealed, self._stubs)

        def request(node_id: str, context: bytes) -> pb.NodeLookupRequest:
            return pb.NodeLookupRequest(
                query_id=question.query_id,
                public_context=context,
                envelope=signed,
                sealed=route.blobs[node_id],
                he_format=he.HE_FORMAT,  # the client's: the coordinator refused any other
                sealed_consent=sealed_consent,
            )

        return await self._gather(
            question,
            public_context,
            deadline_ms,
            t0,
            route.regions,
            "Lookup",
            request,
            route.fingerprint,
            route.sizes,
            arrived_at,
        )

    async def _gather(
        self,
        question: VerifiedEnvelope,
        public_context: bytes,
        deadline_ms: int,
        t0: float,
        node_ids: list[str],
        method: str,
        make_request: Callable[[str, bytes], Any],
        fingerprint: str,
        sizes: Sequence[int],
        arrived_at: float | None = None,
    ) -> FederatedAnswer:
        """Send ``method`` to every region in ``node_ids`` as one run, and gather the answers of the layout ``sizes``.

        Every region masks its answer for exactly the run's participant set, so the sum is only meaningful
        when all of them answer. When some are down, late or broken, the survivors are asked again as a new
        run (a smaller set, so a new run id: new masks, new noise), as often as the asker's signed bound on runs
        allows; a region that refuses fails the question. A region known unwell at admission is left out of the
        first run (named missing, ``NODE_UNWELL``); the first run's wait runs from the request's arrival.
        """
        digest = he.context_digest(public_context)
        if digest != question.envelope.context_digest:
            raise AuthError(
                "the public key sent is not the one the question was signed for",
                code="AUTH_CONTEXT_MISMATCH",
                hint="sign the question with the digest of the public context you send",
            )
        ctx = await asyncio.to_thread(he.load_public_context, public_context, digest)
        t_plan = time.perf_counter()
        query_id = question.query_id
        unwell = self._unwell(node_ids)  # fixed here, at admission: what is learnt later changes only later questions
        participants = [n for n in node_ids if n not in unwell]
        missing = [MissingRegion(n, "NODE_UNWELL", UNWELL_MESSAGE) for n in unwell]
        if not participants:
            raise no_region_answered(missing)
        stats = {"fanout_ms": 0.0}  # the regions' own timings stay in their logs
        runs = 0
        max_runs = min(MAX_RUNS, question.envelope.max_runs)  # every node refuses a run past the signed bound too
        while True:
            runs += 1
            # the first run's wait runs from the arrival; a re-run follows a region's timeout, and waits as long
            deadline = self._deadline(deadline_ms, arrived_at if runs == 1 else None)
            t_run = time.perf_counter()
            answers, lost = await self._run(
                participants, method, make_request, public_context, digest, deadline, fingerprint, ctx, sizes
            )
            stats["fanout_ms"] += (time.perf_counter() - t_run) * 1e3
            self._note_missed(lost)
            for m in lost:
                log.warning("query %s: region %s missing (%s)", query_id, m.node_id, m.code)
            refusals = [m for m in lost if m.code in QUERY_FAILURES]
            if missing and refusals and all(m.code in NEEDS_THE_MISSING for m in refusals):
                raise regions_missing([*missing, *(m for m in lost if m not in refusals)], refusals, method)
            refuse_if_any(refusals, "could not answer")
            missing.extend(lost)
            if not lost:
                break
            if not answers or runs >= max_runs:
                raise no_region_answered(missing)
            participants = [n for n in participants if n in answers]  # the survivors, as a new run
        log.info(
            "query %s: plan %s, %d region(s) answered, %d missing, %d run(s)",
            query_id,
            fingerprint[:12],
            len(participants),
            len(missing),
            runs,
        )
        return FederatedAnswer(
            query_id=query_id,
            fingerprint=fingerprint,
            ciphertexts={n: list(answers[n].ciphertexts) for n in participants},
            answered=participants,
            missing=missing,
            receipts=[answers[n].receipt for n in participants],
            statements=[answers[n].statement for n in participants],
            runs=runs,
            timings={"plan_ms": (t_plan - t0) * 1e3, **stats},
        )

    async def _run(
        self,
        participants: list[str],
        method: str,
        make_request: Callable[[str, bytes], Any],
        public_context: bytes,
        digest: str,
        deadline: float,
        fingerprint: str,
        ctx: Any,
        sizes: Sequence[int],
    ) -> tuple[dict[str, Any], list[MissingRegion]]:
        """One run: every participant asked with the set; the well-formed answers, and who failed."""
        calls = {}
        for node_id in participants:
            request = make_request(node_id, b"" if self._held.get((node_id, digest)) else public_context)
            request.participants.extend(participants)
            timeout = max(deadline - time.monotonic(), 0.001)
            calls[node_id] = (getattr(self._stubs[node_id], method)(request, timeout=timeout), request)
        answers: dict[str, Any] = {}
        lost: list[MissingRegion] = []
        for node_id, (call, request) in calls.items():  # every call is under way: the waits overlap
            try:
                response = await self._resend_if_context_lost(node_id, method, call, request, public_context, deadline)
            except grpc.RpcError as err:
                lost.append(_missing(node_id, err))
                continue
            self._held.put((node_id, digest), True)
            if response.node_id != node_id or response.plan_fingerprint != fingerprint:
                lost.append(MissingRegion(node_id, "NODE_BAD_ANSWER", "the node answered a different plan"))
                continue
            try:
                await asyncio.to_thread(_check_answer, ctx, response, sizes)
            except FederationError as err:
                lost.append(MissingRegion(node_id, "NODE_BAD_ANSWER", err.message))
                continue
            answers[node_id] = response
        return answers, lost


def _check_answer(ctx: Any, response: Any, sizes: Sequence[int]) -> None:
    """A region's answer is relayed only when its ciphertexts parse with the plan's shape and are the ones its
    statement signs (the client checks the signature; a region that broke its own answer is named here)."""
    he.check_ciphertexts(ctx, response.ciphertexts, sizes)
    signed = statements.parse(response.statement)
    if signed.ciphertexts != statements.ciphertexts_digest(response.ciphertexts):
        raise UnavailableError("the region's ciphertexts are not the ones its statement signs", code="NODE_BAD_ANSWER")


def _missing(node_id: str, err: grpc.RpcError) -> MissingRegion:
    code = err.code() if hasattr(err, "code") else None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return MissingRegion(node_id, "NODE_TIMEOUT", "the region did not answer before the deadline")
    remote = from_rpc_error(err)
    if remote.code in ("SERVER_UNREACHABLE", "DEADLINE_EXCEEDED"):
        return MissingRegion(node_id, "NODE_UNREACHABLE", "the region cannot be reached")
    return MissingRegion(
        node_id, remote.code, remote.message, remote.rule or "", remote.hint or "", remote.consent_refusal
    )
