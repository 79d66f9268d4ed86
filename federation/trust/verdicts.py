"""A region's signed verdict on a question it was asked to explain, and the client's check of an explain.

``hpf query --explain`` shows, per region, whether its policy would answer and what an answer would cost (exact or
DP, epsilon, the asker's budget left). The coordinator only relays those verdicts, so each region signs its own
with its audit key (Ed25519, the catalog's ``audit_key``), under a domain tag of its own, so a verdict can pass
neither for an answer statement (:data:`federation.trust.statements.DOMAIN`) nor for an audit checkpoint::

    "hpf-explain-verdict/v1" 0x00 || query id || 0x00 || the NodeVerdict without its signature

The verdict is signed as its deterministic protobuf bytes: the DP figures are IEEE doubles there, the same bits
for every party, never a float's text. A verdict is bound to one question (the query id of the explain's
envelope) and to its region (its ``node_id`` is in the signed bytes, and the key is that region's).

The coordinator cannot sign for a region it got no verdict from (down, late, broken): it says so itself, with one
of its transport codes (:data:`TRANSPORT_CODES`), unsigned. The client accepts an unsigned verdict only as such a
non-answer, never as an acceptance, and shows it as the coordinator's report (:func:`check`).

>>> v = pb.NodeVerdict(node_id="n0", accepted=True, min_group_size=5)
>>> signed_bytes(v, "ab12").startswith(DOMAIN + b"ab12\\x00")
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from google.protobuf.message import Message

from hpf.federation import error_codes
from hpf.federation.audit.keys import load_public_key
from hpf.federation.errors import AuditError, CryptoError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust.statements import pinned_audit_key

DOMAIN = b"hpf-explain-verdict/v1\x00"

# what the coordinator says of a region it got no verdict from; the only verdicts a region does not sign
TRANSPORT_CODES = error_codes.TRANSPORT_CODES
_TRANSPORT_MESSAGES = {code: error_codes.REGISTRY[code].description for code in TRANSPORT_CODES}
UNSIGNED_HINT = "reported by the coordinator: the region signed no verdict"


def signed_message(domain: bytes, query_id: str, message: Message) -> bytes:
    """What a region signs of ``message`` (a protobuf with a ``signature`` field) about the question
    ``query_id``: ``domain``, the query id, 0x00, and the message without its signature, serialized
    deterministically."""
    body = type(message)()
    body.CopyFrom(message)
    body.ClearField("signature")
    return domain + query_id.encode() + b"\x00" + body.SerializeToString(deterministic=True)


def signed_bytes(verdict: pb.NodeVerdict, query_id: str) -> bytes:
    """What a region signs of its verdict on the question ``query_id``."""
    return signed_message(DOMAIN, query_id, verdict)


def sign(verdict: pb.NodeVerdict, query_id: str, signer: Callable[[bytes], bytes]) -> pb.NodeVerdict:
    """``verdict`` signed by ``signer`` (the region's audit key) for the question ``query_id``."""
    verdict.signature = signer(signed_bytes(verdict, query_id))
    return verdict


def is_unsigned_report(verdict: pb.NodeVerdict) -> bool:
    """Whether ``verdict`` is the coordinator's own word that it got no verdict from the region (see :func:`check`).

    >>> is_unsigned_report(pb.NodeVerdict(node_id="n0", code="NODE_UNREACHABLE"))
    True
    >>> is_unsigned_report(pb.NodeVerdict(node_id="n0", code="NODE_UNREACHABLE", signature=b"s" * 64))
    False
    """
    return not verdict.signature


def signed_by(audit_keys: Mapping[str, str | None], region: str, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is region ``region``'s (by its audit key in ``audit_keys``, a pinned catalog's) over
    ``data``; ``ANSWER_STATEMENT_UNVERIFIABLE`` when the catalog has no usable key for the region."""
    key_text = pinned_audit_key(audit_keys, region)
    try:
        key = load_public_key(key_text)
    except AuditError:
        raise CryptoError(
            f"the pinned catalog's audit key for region {region} is not an Ed25519 key",
            code="ANSWER_STATEMENT_UNVERIFIABLE",
        ) from None
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _bad(message: str) -> CryptoError:
    return CryptoError(message, code="ANSWER_STATEMENT_INVALID", hint="the coordinator or a region is misbehaving")


def _corrupt(message: str) -> CryptoError:
    return CryptoError(message, code="ANSWER_CORRUPT", hint="the coordinator is misbehaving")


def check(
    verdicts: Sequence[pb.NodeVerdict],
    *,
    query_id: str,
    regions: Sequence[str],
    audit_keys: Mapping[str, str | None],
    verify_signatures: bool,
) -> list[pb.NodeVerdict]:
    """Exactly one verdict from each of ``regions`` (the catalog's), in their order.

    Each is signed by its region's audit key for ``query_id`` (checked when ``verify_signatures``: a client that
    pins no catalog has no keys of its own and checks the rest), or is the coordinator's unsigned report of a
    region it got no verdict from: not an acceptance, one of :data:`TRANSPORT_CODES`, returned with that code only
    and words of the client's own. ``ANSWER_CORRUPT`` for a region missing, unknown or named twice;
    ``ANSWER_STATEMENT_INVALID`` for a verdict not signed by its region for this question;
    ``ANSWER_STATEMENT_UNVERIFIABLE`` when the pinned catalog has no key for a region.
    """
    counts = Counter(v.node_id for v in verdicts)
    if set(counts) - set(regions) or any(n > 1 for n in counts.values()):
        raise _corrupt("the explain carries a verdict of a region not in the catalog, or a region's twice")
    if missing := [r for r in regions if r not in counts]:
        raise _corrupt(f"the explain carries no verdict of region {missing[0]}")
    by_region = {v.node_id: v for v in verdicts}
    out = []
    for region in regions:
        verdict = by_region[region]
        if is_unsigned_report(verdict):
            if verdict.accepted or verdict.code not in TRANSPORT_CODES:
                raise _bad(f"region {region}'s verdict is not signed by the region")
            out.append(
                pb.NodeVerdict(
                    node_id=region,
                    accepted=False,
                    code=verdict.code,
                    message=_TRANSPORT_MESSAGES[verdict.code],
                    hint=UNSIGNED_HINT,
                )
            )
            continue
        if verify_signatures and not signed_by(audit_keys, region, verdict.signature, signed_bytes(verdict, query_id)):
            raise _bad(f"region {region}'s verdict is not signed by its audit key for this question")
        out.append(verdict)
    return out
