"""The client library (the `hpf query` CLI and integrators use it): plan, ask, decrypt, finish.

The BFV secret key stays in this process and the profile's key file; only the public context is sent.
The client derives the plan itself from the catalog and checks that the coordinator answered that plan.
"""

from __future__ import annotations

import time
from typing import Any

from hpf.client.answers import ExplainAnswer, QueryAnswer
from hpf.client.coordinator_calls import unary
from hpf.client.plan_cache import derive
from hpf.client.screening import ScreeningClient
from hpf.client.session import Checked, missing_regions
from hpf.federation.audit.records import Receipt
from hpf.federation.crypto import he
from hpf.federation.crypto.slot_codec import decode_totals
from hpf.federation.errors import CryptoError, PlanError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.plan import Plan
from hpf.federation.privacy.dp_plan import DpTerms, component_label, dp_terms, never_negative, suppress_small_groups
from hpf.federation.trust import verdicts
from hpf.federation.trust.envelope import query_id, require_text


def _dp_terms(plan: Plan, signed: dict[str, Any]) -> DpTerms:
    """The DP terms the regions signed, which must be the ones this client derives from the plan and catalog
    for the epsilon, delta and threshold they name: then the noise it states is the noise the answer carries.
    Only their canonical form is read (integers and fixed decimal strings, never a float)."""
    try:
        return DpTerms.from_canonical({k: v for k, v in signed.items() if k != "mode"})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise CryptoError("the regions' DP terms are not canonical", code="ANSWER_STATEMENT_INVALID") from None


class FederationClient(ScreeningClient):
    """The client library: aggregate queries and their explain here, screening from
    :class:`client.screening.ScreeningClient`, lookups from :class:`client.lookups.LookupClient`, the connection
    and the answer checks from :class:`client.session.ClientSession`."""

    def explain(
        self, sql: str, *, purpose: str | None = None, consent: str | None = None
    ) -> tuple[Plan, ExplainAnswer]:
        """The partial plan and every region's verdict on the question, without running it: one verdict per
        region of the catalog, each signed by that region for this question (checked against its key from a
        pinned catalog), or the coordinator's unsigned word that it got none
        (:func:`federation.trust.verdicts.check`)."""
        plan = self.plan(sql)
        signed = self.sign(sql, operation="explain", purpose=purpose, consent=consent)
        reply = unary(self._stub.Explain, pb.ExplainRequest(envelope=signed), self.profile.timeout_s)
        qid = query_id(signed)
        if reply.query_id != qid:
            raise CryptoError("the explain is for another question", code="ANSWER_CORRUPT")
        if reply.plan_fingerprint != plan.fingerprint:
            raise PlanError(
                "the coordinator derived a different plan than this client",
                code="PLAN_MISMATCH",
                hint="the client's catalog may differ from the coordinator's",
            )
        audit_keys = self._audit_keys()
        checked = verdicts.check(
            reply.verdicts,
            query_id=qid,
            regions=self.catalog.node_ids,
            audit_keys=audit_keys,
            verify_signatures=bool(audit_keys),
        )
        return plan, ExplainAnswer(query_id=qid, verdicts=checked, verified=bool(audit_keys))

    def plan(self, sql: str) -> Plan:
        """The partial plan of ``sql`` over the catalog: kept from before in the profile's plan cache, else
        derived here (a plan error is raised before anything is sent)."""
        require_text(sql, "SQL")
        if self._plans is not None:
            return self._plans.plan(sql, self.catalog)
        return derive(sql, self.catalog)

    def query(
        self, sql: str, deadline_ms: int | None = None, *, purpose: str | None = None, consent: str | None = None
    ) -> QueryAnswer:
        """The answer to ``sql``: planned here, signed, asked of every region through the coordinator, checked,
        summed and decrypted here, then finished (DuckDB runs the plan's finishing SQL)."""
        t0 = time.perf_counter()
        plan = self.plan(sql)  # clear errors before anything is sent
        keys = self.keys
        signed = self.sign(sql, purpose=purpose, consent=consent)
        t_plan = time.perf_counter()
        request = pb.QueryRequest(
            envelope=signed,
            public_context=keys.public_context(),
            he_format=he.HE_FORMAT,
            deadline_ms=self.profile.deadline_ms if deadline_ms is None else deadline_ms,
        )
        sizes = plan.layout.chunk_sizes
        streamed = self._streamed(self._stub.Query, request, len(sizes), self.catalog.node_ids, signed)
        reply = streamed.head
        t_rpc = time.perf_counter()
        receipts, verified = self._checked_head(reply, plan, signed)
        got = self._checked(keys, streamed, signed, sizes)
        max_runs = pb.QueryEnvelope.FromString(signed.envelope).max_runs
        t_dec = time.perf_counter()
        noisy = got.terms.get("mode") == "dp"
        totals = decode_totals(plan, got.slots, len(reply.answered), noisy=noisy)
        privacy: dict[str, Any] = {"mode": "exact"}
        suppressed = 0
        if noisy:
            totals, suppressed, privacy = self._noisy_totals(plan, totals, got, max_runs)
        from hpf.client.finish import finish  # DuckDB runs the finishing SQL: only an aggregate's answer needs it

        finished = finish(plan, totals, noisy=noisy)
        self._keep(receipts)
        t_fin = time.perf_counter()
        server = reply.timings
        timings = {
            "client_plan_ms": (t_plan - t0) * 1e3,
            "round_trip_ms": (t_rpc - t_plan) * 1e3,
            "decrypt_ms": (t_dec - t_rpc) * 1e3,
            "finish_ms": (t_fin - t_dec) * 1e3,
            "coordinator_plan_ms": server.plan_ms,
            "fanout_ms": server.fanout_ms,
            "runs": float(server.runs),
            "total_ms": (t_fin - t0) * 1e3,
            **got.timings,
        }
        return QueryAnswer(
            columns=finished.columns,
            rows=finished.rows,
            answered=list(reply.answered),
            missing=missing_regions(reply),
            query_id=reply.query_id,
            timings=timings,
            withheld_groups=finished.withheld_groups - (1 if suppressed and not plan.keys else 0),
            receipts=receipts,
            receipts_verified=verified,
            privacy=privacy,
            suppressed_groups=suppressed,
            never_negative=never_negative(plan, self.catalog) if noisy else {},
            statements_verified=len(reply.statements) if got.verified else 0,
            verified=got.verified,
            max_runs=max_runs,
        )

    def _checked_head(
        self, reply: pb.QueryResponse, plan: Plan, signed: pb.SignedEnvelope
    ) -> tuple[list[Receipt], int]:
        """An answer's head checked: for this question and this client's plan, accounting for every region of the
        catalog once (answered or named missing); its receipts checked (:meth:`_receipts`), and how many of them
        were verified."""
        if reply.query_id != query_id(signed):
            raise CryptoError("the answer is for another question", code="ANSWER_CORRUPT")
        receipts, verified = self._receipts(reply, signed)
        if reply.plan_fingerprint != plan.fingerprint:
            raise PlanError(
                "the coordinator answered a different plan than this client derived",
                code="PLAN_MISMATCH",
                hint="the client's catalog may differ from the coordinator's",
            )
        if not reply.answered:
            raise CryptoError("the answer names no region", code="ANSWER_CORRUPT")
        accounted = sorted([*reply.answered, *(m.node_id for m in reply.missing)])
        if accounted != sorted(self.catalog.node_ids):  # a region silently left out of the sum would mislead
            raise CryptoError("the answer does not account for every region once", code="ANSWER_CORRUPT")
        return receipts, verified

    def _noisy_totals(
        self, plan: Plan, totals: dict[int, list[int]], got: Checked, max_runs: int
    ) -> tuple[dict[int, list[int]], int, dict[str, Any]]:
        """A DP answer's totals with the groups under the regions' threshold suppressed, how many were, and the
        privacy terms to show; the terms the regions signed must be the ones this client derives."""
        terms = _dp_terms(plan, got.terms)
        derived = dp_terms(plan, self.catalog, terms.epsilon, terms.delta, terms.threshold)
        if derived != terms:  # else the noise stated would not be the noise the regions added
            raise PlanError(
                "the regions' DP noise is not what this client derives from the plan and its catalog",
                code="DP_TERMS_DIFFER",
                hint="the client's catalog may differ from the regions' (contribution, bounds)",
            )
        totals, suppressed = suppress_small_groups(plan, totals, terms.threshold)
        privacy = {
            "mode": "dp",
            "epsilon": terms.epsilon,
            "delta": terms.delta,
            "threshold": terms.threshold,
            "runs": got.runs,  # which run of the question this answer is, as the regions signed it
            "max_runs": max_runs,  # the signed bound: at most this many runs charged at each
            "verified": got.verified,  # the terms were checked against the regions' keys
            "noise": [
                {"component": component_label(comp), "sd": noise.sd / 10**comp.scale}
                for comp, noise in zip(plan.components, terms.components, strict=True)
                if noise.mu > 0
            ],
        }
        return totals, suppressed, privacy
