"""A lookup's reply as the client reads it: the head checked against the request (every region asked answered or is
named missing, enough of them for federation-wide figures, the layout asked for), then each person's facts read from
the decrypted sum, per city or summed over the cities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hpf.client.session import Checked, missing_regions
from hpf.federation.crypto import lookup_codec
from hpf.federation.crypto.lookup_codec import PersonFacts
from hpf.federation.crypto.lookup_consistency import check_consistent
from hpf.federation.errors import CryptoError, UnavailableError
from hpf.federation.generated import hpf_federation_pb2 as pb


def check_head(reply: pb.QueryResponse, *, query_id: str, regions: Sequence[str], layout: str, by_city: bool) -> None:
    """A lookup reply's head: for the question ``query_id``, naming every region of ``regions`` answered or missing,
    at least two answering unless asked ``by_city``, and answering the ``layout`` (fingerprint) asked for."""
    if reply.query_id != query_id or not reply.answered:
        raise CryptoError("the answer is for another question", code="ANSWER_CORRUPT")
    # regions may answer without some of those asked (a re-run with the survivors): each one left out must be
    # named missing, or an answer short of a region would pass for a complete one
    if sorted([*reply.answered, *(m.node_id for m in reply.missing)]) != sorted(regions):
        raise CryptoError(
            "the answer does not say of every region asked whether it answered or is missing",
            code="ANSWER_CORRUPT",
        )
    if not by_city and len(reply.answered) < min(2, len(regions)):
        gone = ", ".join(f"{m['node_id']} ({m['code']})" for m in missing_regions(reply))
        raise UnavailableError(
            f"only region {reply.answered[0]} answered, region(s) {gone} missing: its figures would be that "
            "city's own, and a lookup without --by-city shows federation-wide ones only",
            code="LOOKUP_TOO_FEW_REGIONS",
            hint="ask again when more regions are reachable",
        )
    if reply.plan_fingerprint != layout:
        raise CryptoError("the answer does not match the lookup's layout", code="CIPHERTEXT_SHAPE")


def read_facts(
    got: Checked, *, people: int, regions: Sequence[str], answered: Sequence[str], by_city: bool, facts: Sequence[str]
) -> list[list[PersonFacts]]:
    """Each person's facts per cell (one cell per region asked ``by_city``, else one), from an exact answer's
    decrypted sum, each cell consistent with the regions that answered."""
    if got.terms.get("mode") != "exact":
        raise CryptoError("a lookup's answer must be exact", code="ANSWER_STATEMENT_INVALID")
    cells = len(regions) if by_city else 1
    grid = lookup_codec.decode_facts(np.concatenate(got.slots), subjects=people, cells=cells, facts=facts)
    check_consistent(grid, answered=[regions.index(r) for r in answered], by_city=by_city)
    return grid


def summed(grid: Sequence[Sequence[PersonFacts]]) -> list[PersonFacts]:
    """Each person's federation-wide facts: their cells summed (None stays None)."""
    return [_total(row) if len(row) > 1 else row[0] for row in grid]


def per_city(
    grid: Sequence[Sequence[PersonFacts]], regions: Sequence[str], answered: Sequence[str]
) -> list[dict[str, PersonFacts]]:
    """Each person's facts by the region that answered them."""
    return [{r: f for r, f in zip(regions, row, strict=True) if r in answered} for row in grid]


def _total(cells: Sequence[PersonFacts]) -> PersonFacts:
    """Per-city facts summed into federation-wide ones (None stays None)."""
    out: dict[str, Any] = {}
    for name in PersonFacts.__dataclass_fields__:
        values = [getattr(c, name) for c in cells]
        out[name] = None if any(v is None for v in values) else sum(values)
    return PersonFacts(**out)
