"""A node's answer to a person lookup: the identifiers sealed to it opened, judged by policy, answered from the
facts index, masked for the run and encrypted under the asker's key."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import numpy as np

from hpf.federation.consent import refusals as consent_refusals
from hpf.federation.consent.tokens import parse_or_none
from hpf.federation.crypto import he
from hpf.federation.crypto.lookup_codec import chunk_sizes, encode_facts, facts_asked, layout_fingerprint
from hpf.federation.crypto.subject_tags import consent_tags, subject_tags
from hpf.federation.errors import FederationError, PlanError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust import statements
from hpf.federation.trust.certificates import Identity
from hpf.federation.trust.envelope import VerifiedEnvelope
from hpf.node.answering import AnsweringNode
from hpf.node.consent_gate import ConsentGate
from hpf.node.executor import PartialResult
from hpf.node.lookup_index import unclassified_columns
from hpf.node.privacy import signed_terms
from hpf.node.trail import Trail
from hpf.policies.engine import Asker, check_lookup

log = logging.getLogger("hpf.node")


def _lookup_layout(envelope: pb.QueryEnvelope) -> str:
    """What an audit entry says a lookup asks: its answer's layout (how many people, how many cells, which
    facts); a lookup naming facts no layout has is logged as such, then refused."""
    spec = envelope.lookup
    try:
        facts = facts_asked(spec.facts)
    except FederationError:
        return "lookup/malformed-facts"
    return layout_fingerprint(spec.subjects, len(spec.regions) if spec.breakdown else 1, facts)


class LookupAnswering(AnsweringNode):
    """Person lookups: the identifiers sealed to this region, answered as facts on the aggregate path."""

    def _admit_lookup(
        self, request: pb.NodeLookupRequest, trail: Trail
    ) -> tuple[VerifiedEnvelope, list[str], int, int, tuple[str, ...]]:
        """Verify a lookup, open the identifiers sealed to this node and judge it by policy.

        Returns the verified envelope, the identifiers, the answer's cells, this node's cell and the facts asked
        for. The identifiers' keyed hashes go into the trail as soon as they are opened, so a refused lookup is on
        record too.
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
        facts = facts_asked(spec.facts)
        cells = len(regions) if spec.breakdown else 1
        chunk_sizes(spec.subjects, cells, facts)  # refuses a layout too large before any work
        if self.lookups is None or self.agreement is None or self.subject_key is None:
            raise PlanError("this region does not answer person lookups", code="LOOKUP_UNSUPPORTED")
        ids, tokens = self.agreement.open_with_tokens(
            request.sealed,
            spec.seal_public_key,
            verified.query_id,
            self.node_id,
            spec.subjects,
            spec.subjects_commitment,
            request.sealed_consent,
        )
        key = self.subject_key
        trail.subjects = " ".join(subject_tags(key, trail.nonce, ids))
        grants = None if tokens is None else [parse_or_none(t) for t in tokens]  # read once, for the log and checks
        if grants is not None:
            trail.consents = " ".join(consent_tags(key, trail.nonce, grants))
        asker = Asker(name=signer.common_name, role=signer.role or "", region=signer.region)
        self.check_home(asker, "lookup")
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
            unclassified=unclassified_columns(self.catalog),
            facts=facts,
        )
        lookups = self.policy.roles[asker.role].lookups
        assert lookups is not None  # check_lookup allowed it
        rule = f"{self.node_id}: roles.{asker.role}.lookups.consent"
        signer_der = request.envelope.signer_certificate
        self.consent_gate.check(
            self.catalog,
            lookups,
            rule,
            signer_der,
            envelope.purpose,
            ids,
            grants,
            facts,
            lambda refused, people: consent_refusals.sign(
                self.node_id, verified.query_id, people, refused, self.audit.sign
            ),
            at=envelope.issued_at_ms / 1000,
        )
        return verified, ids, cells, regions.index(self.node_id) if spec.breakdown else 0, facts

    @functools.cached_property
    def consent_gate(self) -> ConsentGate:
        return ConsentGate()

    def lookup(self, request: pb.NodeLookupRequest, caller: Callable[[], Identity | None]) -> pb.PartialResponse:
        """This region's facts about the people sealed to it, encrypted under the asker's key."""
        started = time.perf_counter()
        trail = Trail(operation="lookup")

        def work() -> PartialResult:
            self._check_caller(caller, trail)
            verified, ids, cells, cell, facts = self._admit_lookup(request, trail)
            he.check_he_format(request.he_format, "the client's context")
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
                        unclassified=unclassified_columns(self.catalog),
                        facts=facts,
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
            slots = encode_facts(self.lookups.facts(ids), cells=cells, cell=cell, facts=facts)
            t_encode = time.perf_counter()
            sizes = chunk_sizes(len(ids), cells, facts)
            pieces = self._protector().mask(run, np.split(slots, np.cumsum(sizes)[:-1]))
            ciphertexts = [he.encrypt_slots(ctx, piece) for piece in pieces]
            done = time.perf_counter()
            trail.ciphertext = statements.ciphertexts_digest(ciphertexts)
            log.info(  # this region's own timings stay in its log
                "lookup %s answered: %d ciphertext(s), scan_ms=%.2f encrypt_ms=%.2f",
                request.query_id[:12],
                len(ciphertexts),
                (t_encode - t_scan) * 1e3,
                (done - t_encode) * 1e3,
            )
            result = PartialResult(fingerprint=trail.query, ciphertexts=ciphertexts)
            context = verified.envelope.context_digest
            return self._signed(result, run, context, trail.ciphertext, signed_terms(None), runs)

        return self._answer(trail, work, started)
