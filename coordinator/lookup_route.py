"""A person lookup as the coordinator routes it: the regions it names, each region's own sealed copy of the
identifiers (opaque here), and the layout every region answers in (:mod:`federation.crypto.lookup_codec`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from hpf.federation.crypto import lookup_codec
from hpf.federation.errors import PlanError
from hpf.federation.generated import hpf_federation_pb2 as pb


@dataclass(frozen=True)
class LookupRoute:
    regions: list[str]  # the regions asked, in the lookup's order
    blobs: dict[str, bytes]  # each region's sealed identifiers
    sizes: list[int]  # the layout of the answer: the slots of each ciphertext
    fingerprint: str  # the layout every region's answer must name


def route_lookup(spec: pb.LookupSpec, sealed: Sequence[pb.SealedSubjects], known: Collection[str]) -> LookupRoute:
    """Where a signed lookup goes, and in which layout it is answered; ``LOOKUP_MALFORMED`` for a lookup that names
    nobody, a region twice, no region or one not ``known``, or that does not carry one sealed copy per region."""
    regions = list(spec.regions)
    unknown = [r for r in regions if r not in known]
    if unknown or not regions or len(set(regions)) != len(regions) or spec.subjects < 1:
        raise PlanError(
            "the lookup names nobody, a region twice, none, or one not in this federation",
            code="LOOKUP_MALFORMED",
            hint=f"regions: {', '.join(known)}",
        )
    # counted before anything is built from them: a request may carry millions, and this runs on the event loop
    if len(sealed) != len(regions) or sorted(s.node_id for s in sealed) != sorted(regions):
        raise PlanError(
            "a lookup must carry one sealed copy for each region it names, and no other",
            code="LOOKUP_MALFORMED",
        )
    cells = len(regions) if spec.breakdown else 1
    facts = lookup_codec.facts_asked(spec.facts)
    return LookupRoute(
        regions,
        {s.node_id: s.blob for s in sealed},
        lookup_codec.chunk_sizes(spec.subjects, cells, facts),
        lookup_codec.layout_fingerprint(spec.subjects, cells, facts),
    )
