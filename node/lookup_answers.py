"""A node's answer to a person lookup: the identifiers sealed to it opened, judged by policy (the stages of
:data:`LOOKUP`), answered from the facts index, masked for the run and encrypted under the asker's key."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hpf.federation.consent import refusals as consent_refusals
from hpf.federation.consent.tokens import Token, parse_or_none
from hpf.federation.crypto import he
from hpf.federation.crypto.lookup_codec import chunk_sizes, encode_facts, facts_asked, layout_fingerprint
from hpf.federation.crypto.subject_tags import consent_tags, subject_tags
from hpf.federation.errors import FederationError, PlanError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust import statements
from hpf.federation.trust.certificates import Identity
from hpf.node.admission import (
    Admission,
    Asked,
    check_caller,
    check_he_format,
    check_home,
    check_query_id,
    fix_run,
    spend,
    take_public_context,
    verify_envelope,
)
from hpf.node.auditor import Auditor
from hpf.node.executor import PartialResult
from hpf.node.lookup_index import unclassified_columns
from hpf.node.trail import Trail
from hpf.policies.engine import check_lookup

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


@dataclass
class LookupAsked(Asked):
    """A person lookup on its way through :data:`LOOKUP`."""

    request: pb.NodeLookupRequest
    regions: list[str] = field(default_factory=list)  # the regions it asks, in the signed order
    everyone: set[str] = field(default_factory=set)  # the regions of the catalog
    facts: tuple[str, ...] = ()
    cells: int = 1  # the answer's cells: one per region asked for a breakdown
    ids: list[str] = field(default_factory=list)
    grants: list[Token | None] | None = None  # the consent tokens sealed with the identifiers, each read once

    def describe(self, envelope: pb.QueryEnvelope) -> str:
        return _lookup_layout(envelope)


def check_lookup_shape(node: Admission, asked: LookupAsked) -> None:
    """The signed lookup must name somebody, and this region, and no region twice or outside the catalog."""
    spec = asked.verified.envelope.lookup
    regions = list(spec.regions)
    everyone = {n.id for n in node.catalog.nodes}
    if (
        spec.subjects < 1
        or len(set(regions)) != len(regions)
        or node.node_id not in regions
        or not set(regions) <= everyone
    ):
        raise PlanError(
            "the signed lookup does not name this region, names a region twice or one not in the catalog, or nobody",
            code="LOOKUP_MALFORMED",
        )
    asked.regions, asked.everyone = regions, everyone


def check_layout(node: Admission, asked: LookupAsked) -> None:
    """The facts asked for must be known, and the answer's layout not too large, before any work."""
    spec = asked.verified.envelope.lookup
    asked.facts = facts_asked(spec.facts)
    asked.cells = len(asked.regions) if spec.breakdown else 1
    chunk_sizes(spec.subjects, asked.cells, asked.facts)


def open_identifiers(node: Admission, asked: LookupAsked) -> None:
    """The identifiers (and consent tokens) sealed to this node, opened, and their keyed hashes put in the trail."""
    # in the trail at once: a lookup refused after this is on record with the people it asked about
    spec, trail = asked.verified.envelope.lookup, asked.trail
    ids, tokens = node.agreement.open_with_tokens(
        asked.request.sealed,
        spec.seal_public_key,
        asked.verified.query_id,
        node.node_id,
        spec.subjects,
        spec.subjects_commitment,
        asked.request.sealed_consent,
    )
    trail.subjects = " ".join(subject_tags(node.subject_key, trail.nonce, ids))
    asked.grants = None if tokens is None else [parse_or_none(t) for t in tokens]  # for the log and the checks
    if asked.grants is not None:
        trail.consents = " ".join(consent_tags(node.subject_key, trail.nonce, asked.grants))
    asked.ids, asked.people = ids, len(ids)


def check_lookup_policy(node: Admission, asked: LookupAsked) -> None:
    """This node's policy must admit the asker's lookup of these regions, these people and these facts."""
    _check_lookup(node, asked, asked.regions)


def check_consent(node: Admission, asked: LookupAsked) -> None:
    """Each applicant's consent, as the role's lookups ask for it (a refusal is signed for the client)."""
    envelope, query_id = asked.verified.envelope, asked.verified.query_id
    lookups = node.policy.roles[asked.asker.role].lookups
    assert lookups is not None  # check_lookup allowed it
    node.consent_gate.check(
        node.catalog,
        lookups,
        f"{node.node_id}: roles.{asked.asker.role}.lookups.consent",
        asked.request.envelope.signer_certificate,
        envelope.purpose,
        asked.ids,
        asked.grants,
        asked.facts,
        lambda refused, people: consent_refusals.sign(node.node_id, query_id, people, refused, node.sign),
        at=envelope.issued_at_ms / 1000,
    )


def check_participants(node: Admission, asked: LookupAsked) -> None:
    """A lookup's participants are regions it asks, and a run without some of them must be one the policy allows."""
    assert asked.run is not None  # fix_run came first
    participants, regions = asked.run.participants, set(asked.regions)
    if not set(participants) <= regions:
        raise PlanError("a lookup's participants are regions it asks", code="SECAGG_PARTICIPANTS_INVALID")
    if len(participants) < len(regions):
        # the survivors of a failed run: set against a run with every region asked (a coordinator and the asker
        # together may hold both sums), this sum shows the regions left out by difference. So it is answered only
        # where the asker may ask exactly these regions: the policy judges the set again.
        try:
            _check_lookup(node, asked, participants)
        except FederationError as err:
            left_out = ", ".join(sorted(regions - set(participants)))
            raise type(err)(
                f"a run without region(s) {left_out} of those the lookup asks would show their own figures "
                f"by difference: {err.message}",
                code=err.code,
                rule=err.rule,
                hint="ask again when every region the lookup asks is up",
            ) from None


def _check_lookup(node: Admission, asked: LookupAsked, regions: Sequence[str]) -> None:
    """The policy's judgement of the lookup as if it asked ``regions``."""
    envelope = asked.verified.envelope
    check_lookup(
        node.policy,
        asked.asker,
        envelope.purpose,
        bool(envelope.consent_ref),
        envelope.lookup.subjects,
        envelope.lookup.breakdown,
        party=node.node_id,
        asked=regions,
        everyone=asked.everyone,
        unclassified=unclassified_columns(node.catalog),
        facts=asked.facts,
    )


# a person lookup's admission, in order
LOOKUP: tuple[Callable[[Admission, LookupAsked], None], ...] = (
    check_caller,
    verify_envelope,
    check_query_id,
    check_lookup_shape,
    check_layout,
    open_identifiers,
    check_home,
    check_lookup_policy,
    check_consent,
    check_he_format,
    take_public_context,
    fix_run,
    check_participants,
    spend,
)


class Lookup:
    """Person lookups: the identifiers sealed to this region, answered as facts on the aggregate path."""

    def __init__(self, admission: Admission, auditor: Auditor) -> None:
        self.admission, self.auditor = admission, auditor

    def answer(self, request: pb.NodeLookupRequest, caller: Callable[[], Identity | None]) -> pb.PartialResponse:
        """This region's facts about the people sealed to it, encrypted under the asker's key."""
        started = time.perf_counter()
        trail = Trail(operation="lookup")

        def work() -> PartialResult:
            node = self.admission
            asked = node.run(LOOKUP, LookupAsked(request, caller, trail))
            assert asked.run is not None  # fixed by its stage
            breakdown = asked.verified.envelope.lookup.breakdown
            cell = asked.regions.index(node.node_id) if breakdown else 0
            t_scan = time.perf_counter()
            slots = encode_facts(node.lookups.facts(asked.ids), cells=asked.cells, cell=cell, facts=asked.facts)
            t_encode = time.perf_counter()
            sizes = chunk_sizes(len(asked.ids), asked.cells, asked.facts)
            pieces = asked.protector.mask(asked.run, np.split(slots, np.cumsum(sizes)[:-1]))
            ciphertexts = [he.encrypt_slots(asked.context, piece) for piece in pieces]
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
            context = asked.verified.envelope.context_digest
            return self.auditor.signed(result, asked.run, context, trail.ciphertext, asked.signed, asked.runs)

        return self.auditor.answer(trail, work, started)
