"""A region's signed refusal of a lookup for some applicants' consent, and the client's check of it.

A screening withholds an applicant that any region refuses for their consent, and asks again without them
(``FederationClient.screen``). Which applicants to withhold must be the refusing region's word, not the
coordinator's: a coordinator that could name them would make the client withhold honest applicants, an answer
changed without a trace. So a region signs its refusal with its audit key (Ed25519, the catalog's ``audit_key``),
under a domain tag of its own (it can pass for no answer statement, explain verdict or checkpoint)::

    "hpf-consent-refusal/v1" 0x00 || query id || 0x00 || the ConsentRefusal without its signature

It names the refused applicants by their place in the request (from 1) with the code of the check each failed,
never by identifier, and is bound to one request (its query id, fresh for every signed request) and to its region.
It travels in the refusal's trailing metadata (``federation.errors.CONSENT_REFUSAL_KEY``); the coordinator
relays the first refusing region's as it came. The client withholds exactly the places a region it asked signed
for that request (:func:`withheld_places`), and takes a consent refusal it cannot check as the coordinator
misbehaving.

>>> r = pb.ConsentRefusal(node_id="n0", query_id="ab12", people=3, places=[2], codes=["CONSENT_REVOKED"])
>>> signed_bytes(r, "ab12").startswith(DOMAIN + b"ab12\\x00")
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from google.protobuf.message import DecodeError

from hpf.federation.consent import tokens as consent
from hpf.federation.errors import CryptoError, error_for_code
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust.verdicts import signed_by, signed_message

DOMAIN = b"hpf-consent-refusal/v1\x00"
# the most applicants one refusal names: the first refused, and up to 30 more (its text stays under a remote
# message's size limit); a refusal naming more is no region's that follows the protocol
MAX_PLACES = 31
# an issuer's unreadable revocation list refuses every consent of that issuer: a fault of the region's, for its
# operator to fix, so a refusal naming it withholds nobody and stands
REGION_FAULT = "CONSENT_REVOCATIONS_INVALID"


def signed_bytes(refusal: pb.ConsentRefusal, query_id: str) -> bytes:
    """What a region signs of its consent refusal of the request ``query_id``."""
    return signed_message(DOMAIN, query_id, refusal)


def sign(
    node_id: str, query_id: str, people: int, refused: Sequence[tuple[int, str]], signer: Callable[[bytes], bytes]
) -> bytes:
    """Region ``node_id``'s refusal of the request ``query_id`` (of ``people`` applicants) for the applicants
    ``refused`` (place from 1, code), signed by ``signer`` (its audit key), serialized for the metadata."""
    refusal = pb.ConsentRefusal(
        node_id=node_id,
        query_id=query_id,
        people=people,
        places=[place for place, _ in refused],
        codes=[code for _, code in refused],
    )
    refusal.signature = signer(signed_bytes(refusal, query_id))
    return refusal.SerializeToString()


def _unsigned(message: str) -> CryptoError:
    return CryptoError(
        f"the lookup was refused for consent, and {message}: no applicant is withheld on the coordinator's word",
        code="ANSWER_STATEMENT_INVALID",
        hint="the coordinator or a region is misbehaving",
    )


def withheld_places(
    evidence: bytes,
    *,
    query_id: str,
    people: int,
    regions: Sequence[str],
    audit_keys: Mapping[str, str | None],
) -> dict[int, str]:
    """The places (from 0) and codes of the applicants a region of ``regions`` refused, signed by its audit key
    (from a pinned catalog: ``audit_keys``) for the request ``query_id`` of ``people`` applicants.

    ``ANSWER_STATEMENT_INVALID`` for a refusal missing, unreadable, for another request or size, by a region not
    asked, naming more than :data:`MAX_PLACES` places, a place twice or out of range or a code that is no consent
    check's, or not signed by its region;
    ``ANSWER_STATEMENT_UNVERIFIABLE`` when the pinned catalog has no key for the region. A region's signed word
    that it cannot read an issuer's revocation list (:data:`REGION_FAULT`) stands as that region's refusal."""
    if not evidence:
        raise _unsigned("the refusal carries no region's signed refusal")
    try:
        refusal = pb.ConsentRefusal.FromString(evidence)
    except DecodeError:
        raise _unsigned("the signed refusal it carries cannot be read") from None
    places = list(refusal.places)
    if (
        refusal.node_id not in regions
        or refusal.query_id != query_id
        or refusal.people != people
        or not 1 <= len(places) <= MAX_PLACES
        or len(places) != len(refusal.codes)
        or len(set(places)) != len(places)
        or not all(1 <= p <= people for p in places)
    ):
        raise _unsigned("the signed refusal is not a refusal of this request by a region it asks")
    if not set(refusal.codes) <= set(consent.CODES):
        raise _unsigned("the signed refusal names a code that is no consent check's")
    if not signed_by(audit_keys, refusal.node_id, refusal.signature, signed_bytes(refusal, query_id)):
        raise _unsigned(f"its refusal is not signed by region {refusal.node_id}'s audit key for this request")
    if REGION_FAULT in refusal.codes:
        message, hint = consent.REFUSALS[REGION_FAULT]
        raise error_for_code(REGION_FAULT, f"region {refusal.node_id}: {message}", hint)
    return {p - 1: code for p, code in zip(places, refusal.codes, strict=True)}
