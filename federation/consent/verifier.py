"""Checking a consent token: its issuer, its batch's signed root, its terms, its expiry and revocation, its person.

A verifier hashes per applicant and checks one signature per batch: a token's inclusion path climbs to a node
already proven in its batch or to the batch's root, whose signature is checked once and remembered
(:mod:`federation.consent.tokens` has the token's form).

>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> from hpf.federation.consent.issuer import issue_batch, public_raw
>>> from hpf.federation.consent.tokens import parse_token_text, token_text
>>> key = Ed25519PrivateKey.generate()
>>> bank = bytes(32)
>>> tokens = issue_batch(key, "sh-consent", ["11010519491231002X", "110105194912310038"], grantee=bank,
...                      purpose="loan-review", facts=["duplicate_loans"], not_after=4102444800)
>>> verifier = ConsentVerifier({"sh-consent": public_raw(key)}, now=lambda: 1767225600)
>>> text = token_text(tokens[0])
>>> verifier.check(parse_token_text(text), "11010519491231002x", grantee=bank, purpose="loan-review",
...                facts=["duplicate_loans"]) is None
True
>>> verifier.check(tokens[0], "110105194912310038", grantee=bank, purpose="loan-review", facts=["duplicate_loans"])
'CONSENT_PERSON_MISMATCH'
>>> verifier.check(tokens[1], "110105194912310038", grantee=bank, purpose="loan-review", facts=["balance"])
'CONSENT_FACTS_NOT_GRANTED'
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hpf.federation.consent.tokens import Token, commitment, fact_bits, parse_or_none, root_statement
from hpf.federation.lru import Lru


class Revocations(Protocol):
    """What a verifier asks about one issuer's revoked grants (see :mod:`federation.consent.revocations`)."""

    def revoked(self, grant_id: bytes) -> bool | None:
        """Whether the grant is revoked; None when the list in force cannot be used (refuse everything)."""


_REMEMBER_FROM_STEP = 3  # proven nodes 4 levels or more above the leaves are remembered: ~1/8 node per grant
# memory: at most 2**14 proven nodes per batch (enough for a batch of 2**17 grants), about 1.5 MB, for at most
# ``cache_size`` batches (64 by default: a region's verifier stays under about 100 MB whatever it is sent)
_MAX_KNOWN_NODES = 1 << 14
_sha256 = hashlib.sha256


@dataclass
class _Batch:
    """A batch whose root signature a verifier has checked, and the nodes it has proven in it since."""

    root: bytes
    valid: bool
    nodes: set[bytes]


class ConsentVerifier:
    """Checks tokens against the issuers a policy accepts (id -> raw Ed25519 public key), their revocation lists
    and the clock. Thread-safe; each batch root's signature is checked once and remembered."""

    def __init__(
        self,
        issuers: Mapping[str, bytes],
        revocations: Mapping[str, Revocations] | None = None,
        *,
        now: Callable[[], float] = time.time,
        cache_size: int = 64,
        lists_required: bool = False,
    ) -> None:
        self._keys = {name: Ed25519PublicKey.from_public_bytes(raw) for name, raw in issuers.items()}
        self._revocations = dict(revocations or {})
        self._now = now
        # a region accepts an issuer's consents only with that issuer's revocation list: without one, a revoked
        # grant would pass (a client checking tokens itself holds no lists, and says nothing of revocation)
        self._lists_required = lists_required
        self._batches = Lru[tuple[str, int, bytes], _Batch](cache_size)

    def _proven(self, token: Token, leaf: bytes) -> bool:
        """Whether ``leaf`` is in a batch its issuer signed: its path climbs to a node already proven in that batch
        or to the root, whose signature is checked once per batch. A forged path climbs to neither."""
        if not 0 <= token.index < token.batch_size:
            return False
        key = (token.issuer, token.batch_size, token.signature)
        batch = self._batches.get(key)
        known: set[bytes] = batch.nodes if batch is not None and batch.valid else set()
        acc, climbed = leaf, list[bytes]()
        fn, sn = token.index, token.batch_size - 1  # RFC 9162 §2.1.3.2, stopping at a node already proven
        for step, sibling in enumerate(token.path):
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                acc = _sha256(b"\x01" + sibling + acc).digest()
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
            else:
                acc = _sha256(b"\x01" + acc + sibling).digest()
            fn >>= 1
            sn >>= 1
            if acc in known:  # every node climbed through is proven too
                if len(known) < _MAX_KNOWN_NODES:
                    known.update(climbed)
                return True
            if step >= _REMEMBER_FROM_STEP:
                climbed.append(acc)
        if sn != 0:
            return False
        if batch is None:
            try:
                self._keys[token.issuer].verify(token.signature, root_statement(token.issuer, token.batch_size, acc))
                batch = _Batch(acc, True, set())
            except InvalidSignature:
                batch = _Batch(acc, False, set())
            self._batches.put(key, batch)
        elif batch.root != acc:  # the batch's signature with another root: checked
            try:
                self._keys[token.issuer].verify(token.signature, root_statement(token.issuer, token.batch_size, acc))
            except InvalidSignature:
                return False
            if batch.valid:  # pragma: no cover - two roots under one Ed25519 signature: never remembered
                return True
            # a forgery came first and was remembered as invalid: the signed root replaces it, or every honest
            # token of the batch would pay a signature check
            batch = _Batch(acc, True, set())
            self._batches.put(key, batch)
        if batch.valid and len(batch.nodes) < _MAX_KNOWN_NODES:
            batch.nodes.update(climbed)
        return batch.valid

    def check(
        self,
        token: Token | bytes | None,
        person_id: str,
        *,
        grantee: bytes,
        purpose: str,
        facts: Iterable[str],
        at: float | None = None,
    ) -> str | None:
        """None when ``token`` lets ``grantee`` learn ``facts`` about ``person_id`` for ``purpose`` at time ``at``
        (seconds; default now), else the code of the first check that fails (in :data:`REFUSALS` order). A region
        judges expiry at the time the asker signed the request, which it holds to its own clock within the
        replay window: a request held back in transit cannot outlive the consents it carries. Never raises for a
        bad token."""
        if not isinstance(token, Token):
            token = None if token is None else parse_or_none(token)
            if token is None:
                return "CONSENT_MALFORMED"
        if token.issuer not in self._keys:
            return "CONSENT_ISSUER_UNKNOWN"
        grant = token.grant
        leaf = grant.leaf()
        if not self._proven(token, leaf):
            return "CONSENT_SIGNATURE_INVALID"
        if not hmac.compare_digest(grant.grantee, grantee):
            return "CONSENT_GRANTEE_MISMATCH"
        if grant.purpose != purpose:
            return "CONSENT_PURPOSE_MISMATCH"
        try:
            wanted = fact_bits(facts)
        except ValueError:
            return "CONSENT_FACTS_NOT_GRANTED"
        if wanted & ~grant.facts:
            return "CONSENT_FACTS_NOT_GRANTED"
        if (self._now() if at is None else at) > grant.not_after:
            return "CONSENT_EXPIRED"
        revocations = self._revocations.get(token.issuer)
        if revocations is None and self._lists_required:
            return "CONSENT_REVOCATIONS_INVALID"
        if revocations is not None:
            revoked = revocations.revoked(grant.grant_id)
            if revoked is None:
                return "CONSENT_REVOCATIONS_INVALID"
            if revoked:
                return "CONSENT_REVOKED"
        person = person_id.strip().upper() if isinstance(person_id, str) else ""
        if not hmac.compare_digest(commitment(token.salt, person), grant.commitment):
            return "CONSENT_PERSON_MISMATCH"
        return None
