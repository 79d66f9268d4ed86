"""What a question's fan-out comes to: the federated answer the coordinator relays (:class:`FederatedAnswer`), the
regions missing from it (:class:`MissingRegion`), and the errors that end a question without one: a region
refusing it, regions missing that the others cannot answer without, or no region answering at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hpf.federation.errors import FederationError, UnavailableError, error_for_code
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust.verdicts import TRANSPORT_CODES


@dataclass
class MissingRegion:
    node_id: str
    code: str
    message: str
    rule: str = ""
    hint: str = ""
    consent_refusal: bytes = b""  # the region's signed refusal of applicants for their consent, relayed as it came


@dataclass
class FederatedAnswer:
    query_id: str
    fingerprint: str
    ciphertexts: dict[str, list[bytes]]  # each answering region's ciphertexts, as it signed them
    answered: list[str]
    missing: list[MissingRegion]
    timings: dict[str, float] = field(default_factory=dict)
    receipts: list[pb.AuditReceipt] = field(default_factory=list)
    statements: list[pb.AnswerStatement] = field(default_factory=list)
    runs: int = 1  # more than 1 when regions failed and the survivors were asked again


def refuse_if_any(refusals: list[MissingRegion], what: str) -> None:
    """A region refusing or failing on the question itself fails it, with the first refusal's code, rule and hint:
    an answer (or an explain) silently short of a region would mislead."""
    if refusals:
        first = refusals[0]
        regions = ", ".join(m.node_id for m in refusals)
        error = error_for_code(
            first.code,
            f"region(s) {regions} {what} this query: {first.message}",
            first.hint or None,
            first.rule or None,
        )
        error.consent_refusal = first.consent_refusal  # the client checks it is the region's, for this request
        raise error


def regions_missing(missing: list[MissingRegion], refusals: list[MissingRegion], method: str) -> FederationError:
    """Regions missing from the first run (down, unreachable, unwell, late: a state before the question), and
    the survivors' policy refusing a run without them: the question is not refused, it has no answer while they
    are missing. Says which regions and why, and what the survivors' policy needs (their message and rule)."""
    first = refusals[0]
    gone = ", ".join(f"{m.node_id} ({m.code})" for m in missing)
    names = ", ".join(m.node_id for m in missing)
    what = "lookup" if method == "Lookup" else "query"
    return UnavailableError(
        f"region(s) {gone} missing, and without them this {what} has no answer: region(s) "
        f"{', '.join(m.node_id for m in refusals)} refuse a run without them ({first.code}): {first.message}",
        code="LOOKUP_REGION_MISSING" if method == "Lookup" else "REGIONS_MISSING",
        hint=f"ask again when region(s) {names} are back; this is no refusal of the {what} itself",
        rule=first.rule or None,
    )


def no_region_answered(missing: list[MissingRegion]) -> FederationError:
    codes = {m.code for m in missing}
    if len(codes) == 1 and not codes & TRANSPORT_CODES:
        # every region refused the same way (e.g. a plan the nodes' policy refuses): pass it on
        first = missing[0]
        return error_for_code(
            first.code, f"every region refused the query: {first.message}", first.hint or None, first.rule or None
        )
    detail = ", ".join(f"{m.node_id} ({m.code})" for m in missing)
    return UnavailableError(f"no region answered: {detail}", code="REGIONS_UNAVAILABLE")
