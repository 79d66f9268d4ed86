"""Verifiable consent: a person's grant to one grantee, for one purpose and some facts, until an expiry.

A **grant** says: the person committed to by ``commitment`` lets ``grantee`` learn ``facts`` for ``purpose``
until ``not_after``. It never carries the identifier: ``commitment`` is
``SHA-256("hpf-consent-person-v1" 0x00 || salt || person id)`` over a random 32-byte salt and the normalised
identifier (:func:`federation.person_id.validate_person_id`), so only a party that already holds the identifier
can tell whose grant it is, and two grants of one person do not look alike.

The **grantee** is the SHA-256 of the DER SubjectPublicKeyInfo of the grantee's certificate
(:func:`grantee_of`), not its common name: the CA may issue a certificate under the same name to another key
(a new branch, a re-issue after a compromise), and a grant follows the key the person's bank held, which is the
key a region sees in the TLS handshake. A bank that renews its key asks again; grants are short-lived anyway.

An **issuer** (a centre's consent service) holds an Ed25519 key whose public half the catalog publishes
(``issuers:``). It grants in batches: the grants are the leaves of one RFC 6962 Merkle tree (leaf data
domain-separated by ``hpf-consent-grant-v1``), and it signs the batch's root once. A **token** carries its grant,
the salt that opens the commitment, the leaf's index, the batch size, the root's signature and the inclusion
path, so a verifier hashes per applicant and checks one signature per batch (verified roots are cached).

A token opens to its person for whoever holds the identifier; it travels sealed with the identifier, like it.

Binary form (big-endian), at most :data:`MAX_TOKEN_BYTES`::

    version 0x01 | issuer (u8 length, ASCII) | batch size u32 | leaf index u32 | root signature (64)
    | grant: grant id (16) | grantee (32) | purpose (u8 length, ASCII) | facts u16 bit set | not_after u64
             | commitment (32)
    | salt (32) | path (u8 count, 32 bytes each)

and as text, its base64url without padding. :func:`parse_token` is total: any bytes give a token or a
:class:`ConsentError` with code ``CONSENT_MALFORMED``.

An issuer grants with :func:`federation.consent.issuer.issue_batch`; a region or a client checks a token with
:class:`federation.consent.verifier.ConsentVerifier`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from hpf.federation.audit import merkle
from hpf.federation.errors import FederationError, PolicyViolation, error_for_code

VERSION = 1
# the facts a grant may name and a lookup may ask for, in the order of their bits in a token: append only, never
# reorder or reuse a bit. What each one releases is federation.crypto.lookup_codec.FACT_FIELDS.
FACTS: tuple[str, ...] = ("duplicate_loans", "loan_cities", "balance", "contributions", "accounts", "loans")
_FACT_BIT = {name: 1 << i for i, name in enumerate(FACTS)}
_ALL_FACT_BITS = (1 << len(FACTS)) - 1

MAX_BATCH = 1 << 20  # grants under one signed root: a path of at most 20 hashes
MAX_PATH = 20
MAX_ISSUER_CHARS = 63
MAX_PURPOSE_CHARS = 64
GRANT_ID_BYTES = 16
SALT_BYTES = 32
SIGNATURE_BYTES = 64
MAX_TOKEN_BYTES = (
    1 + (1 + MAX_ISSUER_CHARS) + 4 + 4 + SIGNATURE_BYTES
    + GRANT_ID_BYTES + 32 + (1 + MAX_PURPOSE_CHARS) + 2 + 8 + 32
    + SALT_BYTES + 1 + MAX_PATH * merkle.HASH_SIZE
)  # fmt: skip
MAX_TOKEN_TEXT = (MAX_TOKEN_BYTES * 4 + 2) // 3

_PERSON_TAG = b"hpf-consent-person-v1\x00"
_GRANT_TAG = b"hpf-consent-grant-v1\x00"
_ROOT_TAG = b"hpf-consent-batch-v1\x00"
ISSUER_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # one DNS label, like a node id
PURPOSE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # a policy's purpose code
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

# every refusal, in the order the checks run: the code, its public message and how to ask instead
REFUSALS: dict[str, tuple[str, str]] = {
    "CONSENT_MALFORMED": ("the consent token cannot be read", "give the token exactly as the consent service wrote it"),
    "CONSENT_ISSUER_UNKNOWN": (
        "the consent token's issuer is not one this region accepts",
        "ask for consent through a consent service the region's policy names",
    ),
    "CONSENT_SIGNATURE_INVALID": (
        "the consent token is not signed by its issuer (forged or altered)",
        "give the token exactly as the consent service wrote it",
    ),
    "CONSENT_GRANTEE_MISMATCH": (
        "the consent was granted to another party, not to the asker",
        "only the grantee named in the consent may use it",
    ),
    "CONSENT_PURPOSE_MISMATCH": (
        "the consent was granted for another purpose",
        "ask with the purpose the person consented to, or ask for a new consent",
    ),
    "CONSENT_FACTS_NOT_GRANTED": (
        "the consent does not cover every fact asked for",
        "ask only for the facts the person consented to",
    ),
    "CONSENT_EXPIRED": ("the consent has expired", "ask the person for a new consent"),
    "CONSENT_REVOKED": ("the consent has been revoked", "ask the person for a new consent"),
    "CONSENT_PERSON_MISMATCH": (
        "the consent is not the consent of this person",
        "give each person's own token with their identifier",
    ),
    "CONSENT_REVOCATIONS_INVALID": (
        "the region holds no readable revocation list of the consent issuer; none of its consents is accepted "
        "until it does",
        "the region's operator names the issuer's newest signed revocation list (consent_revocations:)",
    ),
}
CODES = tuple(REFUSALS)


class ConsentError(PolicyViolation):
    """A consent token that cannot be read, or a refused one (``code`` names the check)."""

    default_code = "CONSENT_MALFORMED"


def refusal(code: str, rule: str | None = None) -> FederationError:
    """The error for a refusal code of :data:`REFUSALS` (of the class its code maps to, wherever it is rebuilt).

    >>> str(refusal("CONSENT_EXPIRED"))
    '[CONSENT_EXPIRED] the consent has expired (hint: ask the person for a new consent)'
    >>> refusal("CONSENT_REVOKED").status.name, refusal("CONSENT_REVOCATIONS_INVALID").status.name
    ('PERMISSION_DENIED', 'FAILED_PRECONDITION')
    """
    message, hint = REFUSALS[code]
    return error_for_code(code, message, hint, rule)


# --- grants ------------------------------------------------------------------------------------------------------


def commitment(salt: bytes, person_id: str) -> bytes:
    """The commitment to a normalised identifier under ``salt``; the identifier cannot be read back from it
    without guessing it.

    >>> commitment(bytes(32), "11010519491231002X").hex()[:16]
    '5121eacc2947d65f'
    """
    return hashlib.sha256(_PERSON_TAG + salt + person_id.encode("ascii", "replace")).digest()


def fact_bits(facts: Iterable[str]) -> int:
    """The bit set of allow-listed fact names; ValueError naming the first unknown one.

    >>> fact_bits(["balance", "duplicate_loans"]), fact_names(5)
    (5, ('duplicate_loans', 'balance'))
    """
    bits = 0
    for name in facts:
        if name not in _FACT_BIT:
            raise ValueError(f"unknown fact {name[:40]!r}: facts are {', '.join(FACTS)}")
        bits |= _FACT_BIT[name]
    return bits


def fact_names(bits: int) -> tuple[str, ...]:
    """The fact names of a bit set, in :data:`FACTS` order."""
    return tuple(name for name, bit in _FACT_BIT.items() if bits & bit)


def grantee_of(cert: object) -> bytes:
    """A grantee's identity: SHA-256 of its certificate's DER SubjectPublicKeyInfo."""
    from cryptography import x509

    if not isinstance(cert, x509.Certificate):
        raise TypeError("a grantee is named by its X.509 certificate")
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


@dataclass(frozen=True)
class Grant:
    """One person's consent: the leaf a batch's root covers."""

    grant_id: bytes
    grantee: bytes
    purpose: str
    facts: int  # bit set over FACTS
    not_after: int  # Unix seconds: the consent holds up to and including this second
    commitment: bytes

    def encode(self) -> bytes:
        purpose = self.purpose.encode("ascii")
        return b"".join(
            (
                self.grant_id,
                self.grantee,
                bytes([len(purpose)]),
                purpose,
                struct.pack(">HQ", self.facts, self.not_after),
                self.commitment,
            )
        )

    def leaf(self) -> bytes:
        """The Merkle leaf hash of this grant (domain-separated from every other tree of the federation)."""
        return merkle.leaf_hash(_GRANT_TAG + self.encode())


@dataclass(frozen=True)
class Token:
    """What the grantee holds for one person: the grant, its opening and its proof of being in a signed batch."""

    issuer: str
    batch_size: int
    index: int
    signature: bytes
    grant: Grant
    salt: bytes
    path: tuple[bytes, ...]

    def encode(self) -> bytes:
        issuer = self.issuer.encode("ascii")
        return b"".join(
            (
                bytes([VERSION, len(issuer)]),
                issuer,
                struct.pack(">II", self.batch_size, self.index),
                self.signature,
                self.grant.encode(),
                self.salt,
                bytes([len(self.path)]),
                *self.path,
            )
        )


def root_statement(issuer: str, batch_size: int, root: bytes) -> bytes:
    """The bytes an issuer signs for a batch: its id, the number of grants and their Merkle root."""
    name = issuer.encode("ascii")
    return _ROOT_TAG + bytes([len(name)]) + name + struct.pack(">I", batch_size) + root


def token_text(token: Token) -> str:
    """A token as text: base64url of its binary form, without padding."""
    return base64.urlsafe_b64encode(token.encode()).rstrip(b"=").decode("ascii")


# --- reading a token (total: a Token or CONSENT_MALFORMED) -------------------------------------------------------


def _malformed(what: str) -> ConsentError:
    return ConsentError(f"the consent token is malformed: {what}", code="CONSENT_MALFORMED")


_II = struct.Struct(">II")
_HQ = struct.Struct(">HQ")
_BEFORE_PURPOSE = 8 + SIGNATURE_BYTES + GRANT_ID_BYTES + 32 + 1  # sizes, signature, grant id, grantee, length
_AFTER_PURPOSE = 10 + 32 + SALT_BYTES + 1  # facts and expiry, commitment, salt, path count


_NAMES: dict[tuple[bytes, re.Pattern[str]], str] = {}  # issuers and purposes read so far (a batch repeats them)
_MAX_NAMES = 1024


def _name(raw: bytes, pattern: re.Pattern[str]) -> str:
    known = _NAMES.get((raw, pattern))
    if known is not None:
        return known
    if not raw.isascii() or not pattern.fullmatch(text := raw.decode("ascii")):
        raise _malformed("a malformed issuer or purpose")
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[(raw, pattern)] = text
    return text


def parse_token(data: bytes) -> Token:
    """A token from its binary form; any other input is refused with ``CONSENT_MALFORMED``.

    >>> parse_token(b"\\x02\\x00")
    Traceback (most recent call last):
    ...
    hpf.federation.consent.tokens.ConsentError: [CONSENT_MALFORMED] the consent token is malformed: unknown version
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise _malformed("not bytes")
        data = bytes(data)
    if not 2 <= len(data) <= MAX_TOKEN_BYTES:
        raise _malformed("too short or too long")
    if data[0] != VERSION:
        raise _malformed("unknown version")
    n = data[1]
    pos = 2 + n
    if not 1 <= n <= MAX_ISSUER_CHARS or len(data) < pos + _BEFORE_PURPOSE:
        raise _malformed("cut short")
    issuer = _name(data[2:pos], ISSUER_ID)
    size, index = _II.unpack_from(data, pos)
    if not (1 <= size <= MAX_BATCH and index < size):
        raise _malformed("leaf index or batch size out of range")
    signature = data[pos + 8 : pos + 72]
    grant_id, grantee = data[pos + 72 : pos + 88], data[pos + 88 : pos + 120]
    m = data[pos + 120]
    pos += _BEFORE_PURPOSE
    if not 1 <= m <= MAX_PURPOSE_CHARS or len(data) < pos + m + _AFTER_PURPOSE:
        raise _malformed("cut short")
    purpose = _name(data[pos : pos + m], PURPOSE)
    pos += m
    facts, not_after = _HQ.unpack_from(data, pos)
    if facts == 0 or facts & ~_ALL_FACT_BITS:
        raise _malformed("no fact, or a fact this version does not know")
    commit, salt, count = data[pos + 10 : pos + 42], data[pos + 42 : pos + 74], data[pos + 74]
    pos += _AFTER_PURPOSE
    if count > MAX_PATH:
        raise _malformed("inclusion path too long")
    if len(data) != pos + merkle.HASH_SIZE * count:
        raise _malformed("cut short, or trailing bytes")
    step = merkle.HASH_SIZE
    path = tuple([data[i : i + step] for i in range(pos, len(data), step)])
    grant = Grant(grant_id, grantee, purpose, facts, not_after, commit)
    return Token(issuer, size, index, signature, grant, salt, path)


def parse_or_none(data: bytes) -> Token | None:
    """:func:`parse_token`, or None for bytes that are not a token (a verifier refuses None as malformed)."""
    try:
        return parse_token(data)
    except ConsentError:
        return None


def parse_token_text(text: str) -> Token:
    """A token from its text form (base64url, padding optional); anything else is ``CONSENT_MALFORMED``."""
    return parse_token(token_bytes(text))


def token_bytes(text: str) -> bytes:
    """The binary form of a token's text (base64url, padding optional), not yet parsed (:func:`parse_token` or a
    verifier's check reads it); text that is not base64url, or too long for a token, is ``CONSENT_MALFORMED``."""
    if not isinstance(text, str) or len(text) > MAX_TOKEN_TEXT + 2:
        raise _malformed("not a token's text, or too long")
    body = text.strip().rstrip("=")
    if not body.isascii() or not _B64URL.fullmatch(body) or len(body) % 4 == 1:
        raise _malformed("not base64url text")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise _malformed("not base64url text") from None
