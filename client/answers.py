"""What the client library returns: an aggregate's answer, a lookup's and an explain's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpf.federation.audit.records import Receipt
from hpf.federation.crypto import lookup_codec
from hpf.federation.crypto.lookup_codec import PersonFacts
from hpf.federation.generated import hpf_federation_pb2 as pb


@dataclass
class QueryAnswer:
    """A federated answer. ``withheld_groups``: groups some region withheld (below its minimum group size),
    listed with NULL aggregates, or dropped by a HAVING over those NULLs."""

    columns: list[str]
    rows: list[list[Any]]
    answered: list[str]
    missing: list[dict[str, str]]
    query_id: str
    timings: dict[str, float] = field(default_factory=dict)
    withheld_groups: int = 0
    receipts: list[Receipt] = field(default_factory=list)  # each answering region's audit receipt
    # how many of them were checked against the region's audit key, each with its entry proven in the log the
    # checkpoint signs (an answer whose receipt does not prove its entry is refused)
    receipts_verified: int = 0
    # what the regions signed the answer carries: {"mode": "exact"}, or DP's epsilon, delta, threshold and
    # "noise": [{"component": "SUM(x)", "sd": ...}] in the components' own units (decimal scale applied)
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    suppressed_groups: int = 0  # DP: groups whose noisy row count was below the threshold, not shown
    # DP: output column position -> its aggregate (count, sum, avg) where the true value is never below 0 (a plain
    # COUNT, or a SUM or AVG of values clamped into non-negative bounds), so a negative value shown is noise alone
    never_negative: dict[int, str] = field(default_factory=dict)
    statements_verified: int = 0  # answer statements checked against the regions' audit keys
    # the sum decrypted is the client's own of exactly what the regions signed, checked against the regions' keys
    # from a pinned catalog; False without one (every check but the signatures is still made)
    verified: bool = False
    max_runs: int = 1  # the bound on runs signed into the question: at most this many runs charged at each region

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "rows": self.rows,
            "regions": {"answered": self.answered, "missing": [m["node_id"] for m in self.missing]},
            "withheld_groups": self.withheld_groups,
            "privacy": self.privacy,
            "suppressed_groups": self.suppressed_groups,
            "statements_verified": self.statements_verified,
            "verified": self.verified,
            "max_runs": self.max_runs,
        }


@dataclass
class LookupAnswer:
    """Federation-wide facts per person asked, in the order asked; ``by_city`` only for a per-city answer
    (``{region: facts}`` per person). ``missing`` regions are not in the figures."""

    facts: list[PersonFacts]
    regions: list[str]  # the regions asked
    answered: list[str]
    missing: list[dict[str, str]]
    query_ids: list[str]
    by_city: list[dict[str, PersonFacts]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    receipts: list[Receipt] = field(default_factory=list)
    receipts_verified: int = 0
    verified: bool = False  # as QueryAnswer.verified (a screening: every one of its requests)
    # applicants (by place in the order asked) withheld for their consent, with the code of the check: those whose
    # token fails a check the client makes itself (federation.consent.verifier: issuer, signature, grantee, purpose,
    # facts, expiry, person), and those some region refused (an issuer it does not accept, a revocation), for whom the
    # request was asked again without them; their facts are placeholders, never figures
    withheld: dict[int, str] = field(default_factory=dict)
    facts_asked: tuple[str, ...] = lookup_codec.FACTS  # the facts the lookup asked for: the others are None

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class ExplainAnswer:
    """Every region's verdict on a question, in the catalog's order: signed by the region, or the coordinator's
    unsigned report that it got none (``signature`` empty: never an acceptance)."""

    query_id: str
    verdicts: list[pb.NodeVerdict]
    # each region's signature was checked against its key from a pinned catalog; False without one (every check
    # but the signatures is still made, so what the verdicts say is the coordinator's word)
    verified: bool = False
