"""A region's signed statement of one answer: which run it was masked for and what noise it carries.

The coordinator sums masked ciphertexts it cannot read, so the client cannot check the ciphertexts themselves;
what it can check is that every region in the participant set really answered *this* run (the masks cancel
only then), for *its* key, under the privacy terms it is about to print. Each region signs::

    {"node", "query_id", "run", "participants", "context", "ciphertexts", "privacy", "runs"}

with its audit key (Ed25519, published in the catalog as ``audit_key``), under a domain tag of its own so a
statement can never pass for an audit checkpoint. ``ciphertexts`` is the SHA-256 over each ciphertext's
SHA-256, as in the region's audit entry; ``privacy`` is ``{"mode": "exact"}`` or the DP terms
(:meth:`federation.privacy.dp_plan.DpTerms.canonical`); ``runs`` is which run of the question this is at the region (a
re-run with survivors is a new release, charged again).

The signed bytes are canonical: JSON with sorted keys and no spaces, and no float anywhere (a float has no one
text form across languages): integers, and fixed decimal strings for epsilon, delta and the noise
(:mod:`federation.privacy.fixed_decimal`). A reader refuses a statement with a float in it, privacy terms in any other
form, or bytes that are not the canonical encoding of what they say (``ANSWER_STATEMENT_INVALID``). The run id
every region masks for hashes the same canonical terms (:func:`canonical_terms`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hpf.federation.errors import CryptoError, PlanError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.privacy.dp_plan import DpTerms

DOMAIN = b"hpf-answer-statement/v1\x00"
EXACT: dict[str, Any] = {"mode": "exact"}


@dataclass(frozen=True)
class Statement:
    """What one region signs of its answer (see above)."""

    node: str  # the region that answered, whose audit key signs
    query_id: str  # the question, as its signed envelope names it
    run: str  # the run id the region masked for
    participants: tuple[str, ...]  # the regions whose masks cancel in this run's sum
    context: str  # the digest of the asker's public HE context the ciphertexts are under
    ciphertexts: str  # SHA-256 over each ciphertext's SHA-256 (:func:`ciphertexts_digest`)
    privacy: dict[str, Any]  # ``{"mode": "exact"}`` or the canonical DP terms
    runs: int = 1  # which run of the question this is at the region (each DP run is charged)

    def encode(self) -> bytes:
        body = {
            "node": self.node,
            "query_id": self.query_id,
            "run": self.run,
            "participants": list(self.participants),
            "context": self.context,
            "ciphertexts": self.ciphertexts,
            "privacy": self.privacy,
            "runs": self.runs,
        }
        return _canonical(body)


def _floatless(value: object) -> bool:
    """Whether no float hides anywhere in ``value`` (JSON-like: dicts, lists, scalars)."""
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(_floatless(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_floatless(v) for v in value)
    return True


def _canonical(obj: Mapping[str, Any]) -> bytes:
    if not _floatless(obj):  # Python's float text is not every party's: sign integers and fixed decimals only
        raise ValueError("a float has no canonical form in signed bytes")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def ciphertexts_digest(ciphertexts: Sequence[bytes]) -> str:
    """What a region signs of the ciphertexts it sends (and writes in its audit entry): SHA-256 over each
    one's SHA-256, in slot order. The client checks each region's ciphertexts against it before adding them."""
    digest = hashlib.sha256()
    for blob in ciphertexts:
        digest.update(hashlib.sha256(blob).digest())
    return digest.hexdigest()


def canonical_terms(privacy: Mapping[str, Any]) -> bytes:
    """Privacy terms as bytes every region derives alike (what a run id binds: see masking.run_id)."""
    return _canonical(privacy)


def check_terms(privacy: Mapping[str, Any]) -> None:
    """ValueError unless ``privacy`` is ``{"mode": "exact"}`` or ``{"mode": "dp"}`` with canonical DP terms."""
    if privacy == EXACT:
        return
    if privacy.get("mode") != "dp":
        raise ValueError("the privacy terms are exact or dp")
    DpTerms.from_canonical({k: v for k, v in privacy.items() if k != "mode"})


def _no_float(text: str) -> float:
    raise ValueError("a float in a signed statement")


def sign(statement: Statement, signer: Callable[[bytes], bytes]) -> pb.AnswerStatement:
    blob = statement.encode()
    return pb.AnswerStatement(node_id=statement.node, statement=blob, signature=signer(DOMAIN + blob))


def _bad(message: str) -> CryptoError:
    return CryptoError(message, code="ANSWER_STATEMENT_INVALID", hint="the coordinator or a region is misbehaving")


def parse(signed: pb.AnswerStatement) -> Statement:
    """The statement a region signed, refused (``ANSWER_STATEMENT_INVALID``) unless its bytes are the canonical
    form of what they say: no float, privacy terms exact or canonical DP terms."""
    try:
        body = json.loads(signed.statement, parse_float=_no_float, parse_constant=_no_float)
        if type(body) is not dict or type(body.get("runs")) is not int or type(body.get("privacy")) is not dict:
            raise ValueError("not a statement")
        check_terms(body["privacy"])
        statement = Statement(
            node=str(body["node"]),
            query_id=str(body["query_id"]),
            run=str(body["run"]),
            participants=tuple(str(p) for p in body["participants"]),
            context=str(body["context"]),
            ciphertexts=str(body["ciphertexts"]),
            privacy=dict(body["privacy"]),
            runs=int(body["runs"]),
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        raise _bad("a region's answer statement is not in its canonical form") from None
    if statement.node != signed.node_id or statement.encode() != bytes(signed.statement):
        raise _bad("a region's answer statement is not in its canonical form")
    return statement


def pinned_audit_key(audit_keys: Mapping[str, str | None], region: str) -> str:
    """Region ``region``'s audit key as the pinned catalog (``audit_keys``) lists it;
    ``ANSWER_STATEMENT_UNVERIFIABLE`` when it lists none, so nothing the region signed can be checked."""
    key_text = audit_keys.get(region)
    if not key_text:
        raise CryptoError(
            f"the pinned catalog has no audit key for region {region}",
            code="ANSWER_STATEMENT_UNVERIFIABLE",
            hint="pin a catalog that lists every region's audit_key",
        )
    return key_text


def verify(
    signed: Sequence[pb.AnswerStatement],
    audit_keys: Mapping[str, str | None],
    *,
    query_id: str,
    context: str,
    answered: Sequence[str],
    check_signatures: bool = True,
) -> list[Statement]:
    """Every answering region's statement, each signed by its catalog key, all for one run of ``query_id``
    under ``context`` whose participants are exactly ``answered``, all under the same privacy terms.

    ``check_signatures=False`` (a client that pins no catalog, so has no keys of its own to trust) checks
    everything but the signatures."""
    by_node = {s.node_id: s for s in signed}
    if sorted(by_node) != sorted(answered) or len(signed) != len(answered):
        raise _bad("the answer does not carry exactly one statement from each region summed")
    out = []
    for node_id in answered:
        if not check_signatures:
            out.append(parse(by_node[node_id]))
            continue
        key_text = pinned_audit_key(audit_keys, node_id)
        s = by_node[node_id]
        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(key_text)).verify(s.signature, DOMAIN + s.statement)
        except (InvalidSignature, ValueError):
            raise _bad(f"region {node_id}'s answer statement is not signed by its audit key") from None
        out.append(parse(s))
    asked = {(st.query_id, st.participants, st.context) for st in out}
    if len(asked) != 1 or out[0].query_id != query_id or out[0].context != context:
        raise _bad("the regions' statements are not all for this question, one participant set and this key")
    if sorted(out[0].participants) != sorted(answered):
        raise _bad("the sum does not hold exactly the run's participants: their masks would not cancel")
    # before the run ids, which bind the terms: regions under different policies are a configuration to fix,
    # not a sign of tampering (their masks do not cancel, so no sum came out of it either way)
    privacy = {canonical_terms(st.privacy) for st in out}
    if len(privacy) != 1:
        raise PlanError(
            "the regions answered under different privacy terms (exact or DP, epsilon, noise, threshold)",
            code="DP_TERMS_DIFFER",
            hint="the regions' policies must agree on the privacy of this role and table",
        )
    if len({st.run for st in out}) != 1:
        raise _bad("the regions' statements are not all for one run")
    return out
