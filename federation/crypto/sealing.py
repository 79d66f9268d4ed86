"""Identifiers sealed to one region: X25519, HKDF-SHA256 and ChaCha20-Poly1305, bound to the query id.

A person lookup must reach every region without the coordinator learning whom it is about. The client
makes a one-time X25519 key pair per lookup and signs its public half inside the envelope (so the query id
covers it). For each region it derives

    key = HKDF-SHA256(X25519(one-time secret, region's agreement key),
                      salt="hpf-lookup-seal/v1", info=query id || region || both public keys)

and encrypts the identifiers (18 ASCII characters each, concatenated) with ChaCha20-Poly1305 under that key,
with the query id and region as associated data. Each key seals exactly one message, so the nonce is fixed.
What is sealed is a random 32-byte salt and the identifiers; the signed envelope carries their SHA-256
(:meth:`OneTimeKey.commitment`), so every region checks it was asked about the same people as every other
(a client could otherwise ask each region about someone else and read one city's figures as the "total"),
while the coordinator, without the salt, cannot test a guess against it.
Only the client and that region can derive the key: the coordinator routes an opaque blob it cannot read,
cannot move to another region or query, and cannot forge (it knows neither secret).

A region's agreement key is an X25519 key kept in its state directory (``agreement.key``, mode 0600); its
public half is published in the catalog as ``agreement_key`` (32 bytes, base64). A client seals only to keys
from a catalog it pins, never to keys the coordinator sends.

Who looked a person up is answered from the audit log by keyed hashes (:mod:`federation.crypto.subject_tags`)
under a secret only the region (and the auditors it trusts) hold: the subject key kept here beside its other keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hpf.federation.consent.tokens import MAX_TOKEN_BYTES
from hpf.federation.errors import ConfigError, CryptoError
from hpf.federation.person_id import packed_ids_valid
from hpf.federation.private_files import create_file, read_regular, write_file

ID_CHARS = 18
KEY_BYTES = 32
AGREEMENT_KEY = "agreement.key"
AGREEMENT_PUBLIC = "agreement.pub"
MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM key is a few hundred bytes: a file past this is not one
SUBJECT_KEY = "subject-tag.key"  # beside the audit log: the key of its keyed hashes

_SALT = b"hpf-lookup-seal/v1"
_AAD = b"hpf-lookup-seal/v1\x00"
_NONCE = b"\x00" * 12  # each derived key seals one message only
_CONSENT_AAD = b"hpf-lookup-consent-seal/v1\x00"
_COMMIT_DOMAIN = b"hpf-lookup-ids/v1\x00"
SALT_BYTES = 32
# the sealed consent tokens are padded with zeros to a whole number of this many bytes, at least one: a token's
# length follows its issuer's name, its purpose and its batch's size, so for a lookup of a few people the
# coordinator would otherwise read which centre granted the consent (and so, likely, the person's home city)
CONSENT_PAD_BYTES = 4096


def _commitment(salt: bytes, packed_ids: bytes) -> bytes:
    return hashlib.sha256(_COMMIT_DOMAIN + salt + packed_ids).digest()


def _packed(person_ids: Sequence[str], tokens: Sequence[bytes] | None) -> bytes:
    """The identifiers (18 ASCII characters each), then, when there are tokens, one per identifier, each after
    its length (2 bytes, big-endian; 0: none)."""
    packed = "".join(person_ids).encode("ascii")
    if tokens is None:
        return packed
    if len(tokens) != len(person_ids) or any(len(t) > MAX_TOKEN_BYTES for t in tokens):
        raise ValueError("one consent token (or b'') per identifier, each at most MAX_TOKEN_BYTES")
    return packed + b"".join(len(t).to_bytes(2, "big") + t for t in tokens)


def _padded(section: bytes) -> bytes:
    """``section`` with zeros after it, to a whole number of :data:`CONSENT_PAD_BYTES` (at least one)."""
    return section + bytes(
        max(CONSENT_PAD_BYTES, -(-len(section) // CONSENT_PAD_BYTES) * CONSENT_PAD_BYTES) - len(section)
    )


def _tokens(section: bytes, subjects: int) -> tuple[list[bytes], int] | None:
    """The tokens of a sealed message's token section, one per subject, and where they end (the rest is padding:
    zeros, fewer than :data:`CONSENT_PAD_BYTES`), or None when it is malformed."""
    tokens, pos = [], 0
    for _ in range(subjects):
        if pos + 2 > len(section):
            return None
        n = int.from_bytes(section[pos : pos + 2], "big")
        if n > MAX_TOKEN_BYTES or pos + 2 + n > len(section):
            return None
        tokens.append(section[pos + 2 : pos + 2 + n])
        pos += 2 + n
    rest = section[pos:]
    return (tokens, pos) if len(rest) < CONSENT_PAD_BYTES and rest == bytes(len(rest)) else None


def raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: X25519PrivateKey) -> str:
    """The catalog form of a region's agreement public key."""
    return base64.b64encode(raw_public(key.public_key())).decode("ascii")


def load_public_b64(text: str) -> bytes:
    """Raw 32 bytes of an agreement public key written in base64 (the catalog form)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigError("an agreement key must be 32 bytes in base64", code="CONFIG_INVALID")
    return raw


def _derive(shared: bytes, query_id: str, node_id: str, one_time: bytes, region_key: bytes) -> ChaCha20Poly1305:
    info = query_id.encode("ascii") + b"\x00" + node_id.encode("ascii") + b"\x00" + one_time + region_key
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(shared)
    return ChaCha20Poly1305(key)


def _aad(query_id: str, node_id: str) -> bytes:
    return _AAD + query_id.encode("ascii") + b"\x00" + node_id.encode("ascii")


class OneTimeKey:
    """The client's X25519 key pair for one lookup; its public half goes into the signed envelope."""

    def __init__(self) -> None:
        self._key = X25519PrivateKey.generate()
        self.public = raw_public(self._key.public_key())
        self._salt = os.urandom(SALT_BYTES)
        self._consent_key = os.urandom(KEY_BYTES)  # the tokens travel once, under this key, which each blob holds

    def commitment(self, person_ids: Sequence[str], tokens: Sequence[bytes] | None = None) -> bytes:
        """What the envelope signs about the identifiers (and their consent tokens, when given): SHA-256 over
        this lookup's salt and them, so every region checks the same people under the same tokens."""
        return _commitment(self._salt, _packed(person_ids, tokens))

    def seal(
        self,
        person_ids: Sequence[str],
        region_key: bytes,
        query_id: str,
        node_id: str,
        tokens: Sequence[bytes] | None = None,
    ) -> bytes:
        """The salt and ``person_ids`` (already validated) sealed to one region, and, when the lookup carries
        consent ``tokens``, the key of :meth:`seal_consent` (the tokens themselves travel once, not per region)."""
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(region_key))
        except ValueError:
            raise CryptoError(f"region {node_id}'s agreement key is not usable", code="LOOKUP_KEY_INVALID") from None
        plain = self._salt + _packed(person_ids, None) + (b"" if tokens is None else self._consent_key)
        return _derive(shared, query_id, node_id, self.public, region_key).encrypt(
            _NONCE, plain, _aad(query_id, node_id)
        )

    def seal_consent(self, tokens: Sequence[bytes], query_id: str) -> bytes:
        """Every person's consent token (one per identifier, in order; ``b""`` for none), encrypted once under
        this lookup's consent key, for every region the lookup asks: only a region whose blob holds the key opens
        it, and the signed commitment covers the tokens. Once per lookup (the key seals one message)."""
        section = b"".join(len(t).to_bytes(2, "big") + t for t in tokens)
        if any(len(t) > MAX_TOKEN_BYTES for t in tokens):
            raise ValueError("a consent token is at most MAX_TOKEN_BYTES")
        return ChaCha20Poly1305(self._consent_key).encrypt(
            _NONCE, _padded(section), _CONSENT_AAD + query_id.encode("ascii")
        )

    def __repr__(self) -> str:
        return "OneTimeKey(...)"


class AgreementKey:
    """A region's static X25519 agreement key, which opens what clients sealed to it."""

    _MAX_PEERS = 1024  # the pinned catalog's regions; a bound, not a working size

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        self.public = raw_public(key.public_key())
        self._shared: dict[bytes, bytes] = {}
        self._shared_lock = threading.Lock()

    @classmethod
    def load_or_create(cls, directory: Path) -> AgreementKey:
        """The key in ``directory``, made (with its public half) on first use."""
        path = directory / AGREEMENT_KEY
        if not path.exists():
            key = X25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            if create_file(path, pem, 0o600):  # else another maker wrote one first: that one is read below
                write_file(directory / AGREEMENT_PUBLIC, (public_key_b64(key) + "\n").encode(), 0o644)
                return cls(key)
        return cls.load(directory)

    @classmethod
    def load(cls, directory: Path) -> AgreementKey:
        """The key in ``directory``, read and never made: ``KEY_FILE_UNREADABLE`` for one that is missing, no
        regular file (a FIFO is never waited on) or too large to be a key, ``KEY_FILE_INVALID`` for another key."""
        path = directory / AGREEMENT_KEY
        try:
            loaded = serialization.load_pem_private_key(read_regular(path, MAX_KEY_FILE_BYTES), password=None)
        except OSError as exc:
            raise CryptoError(f"{path}: cannot read ({exc.strerror})", code="KEY_FILE_UNREADABLE") from None
        except (ValueError, TypeError, UnsupportedAlgorithm):
            loaded = None
        if not isinstance(loaded, X25519PrivateKey):
            raise CryptoError(f"{path}: not an unencrypted PEM X25519 key", code="KEY_FILE_INVALID")
        return cls(loaded)

    def public_b64(self) -> str:
        return base64.b64encode(self.public).decode("ascii")

    def exchange(self, peer_public: bytes) -> bytes:
        """The X25519 shared secret with another region's raw 32-byte agreement key (for secure aggregation).

        Both keys are static, so the secret is too: it is computed once per peer and kept, since every masked
        answer needs one per other participant. SECAGG_PEER_KEY_INVALID if the key is not 32 bytes or is a
        low-order point (X25519 would yield the all-zero secret, which anyone can compute).
        """
        with self._shared_lock:
            cached = self._shared.get(peer_public)
        if cached is not None:
            return cached
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except (ValueError, TypeError):
            raise CryptoError("a peer region's agreement key is not usable", code="SECAGG_PEER_KEY_INVALID") from None
        with self._shared_lock:
            if len(self._shared) >= self._MAX_PEERS:
                self._shared.clear()
            self._shared[bytes(peer_public)] = shared
        return shared

    def open(
        self, blob: bytes, one_time: bytes, query_id: str, node_id: str, subjects: int, commitment: bytes
    ) -> list[str]:
        """The identifiers sealed to this region for ``query_id``, which must be the ones the asker committed to
        in the signed envelope, each once; LOOKUP_SEAL_INVALID if they are not (or carry consent tokens)."""
        ids, tokens = self.open_with_tokens(blob, one_time, query_id, node_id, subjects, commitment)
        if tokens is not None:
            raise CryptoError("the sealed identifiers carry consent tokens", code="LOOKUP_SEAL_INVALID")
        return ids

    def open_with_tokens(
        self,
        blob: bytes,
        one_time: bytes,
        query_id: str,
        node_id: str,
        subjects: int,
        commitment: bytes,
        sealed_consent: bytes = b"",
    ) -> tuple[list[str], list[bytes] | None]:
        """The identifiers sealed to this region for ``query_id`` and their consent tokens (None when the asker
        sealed none; ``b""`` for an identifier without one) from ``sealed_consent``, whose key the blob holds; all
        of which the asker committed to in the signed envelope, each identifier once; LOOKUP_SEAL_INVALID if not."""
        refused = CryptoError(
            "the sealed identifiers cannot be opened by this region for this question",
            code="LOOKUP_SEAL_INVALID",
            hint="seal to the region's agreement key from the pinned catalog, for this query id",
        )
        bare = SALT_BYTES + subjects * ID_CHARS + 16
        keyed = bool(sealed_consent)
        if len(blob) != bare + (KEY_BYTES if keyed else 0) or len(one_time) != KEY_BYTES:
            raise refused
        if len(sealed_consent) > subjects * (2 + MAX_TOKEN_BYTES) + CONSENT_PAD_BYTES + 16:
            raise refused
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(one_time))
            plain = _derive(shared, query_id, node_id, one_time, self.public).decrypt(
                _NONCE, blob, _aad(query_id, node_id)
            )
            section = b""
            if keyed:
                section = ChaCha20Poly1305(plain[-KEY_BYTES:]).decrypt(
                    _NONCE, sealed_consent, _CONSENT_AAD + query_id.encode("ascii")
                )
        except (ValueError, InvalidTag):
            raise refused from None
        salt, packed = plain[:SALT_BYTES], plain[SALT_BYTES : SALT_BYTES + subjects * ID_CHARS]
        tokens = None
        if keyed:
            opened = _tokens(section, subjects)
            if opened is None:
                raise refused
            tokens, end = opened
            section = section[:end]
        if not hmac.compare_digest(_commitment(salt, packed + section), commitment):
            raise CryptoError(
                "the identifiers sealed to this region are not the ones the asker signed for",
                code="LOOKUP_SEAL_INVALID",
            )
        if not packed_ids_valid(packed):
            raise CryptoError(
                "the sealed identifiers are not valid resident identity numbers", code="LOOKUP_SEAL_INVALID"
            )
        text = packed.decode("ascii")
        ids = [text[i : i + ID_CHARS] for i in range(0, len(text), ID_CHARS)]
        if len(set(ids)) != len(ids):
            raise CryptoError("the sealed identifiers name a person twice", code="LOOKUP_SEAL_INVALID")
        return ids, tokens

    def __repr__(self) -> str:
        return "AgreementKey(...)"


def load_or_create_subject_key(directory: Path) -> bytes:
    """The region's secret for keyed hashes of looked-up identifiers (``subject-tag.key``, mode 0600)."""
    return load_or_create_secret(directory / SUBJECT_KEY)


def load_or_create_secret(path: Path) -> bytes:
    """A region's 32-byte secret kept at ``path`` (base64, mode 0600), made on first use."""
    if not path.exists():
        key = os.urandom(KEY_BYTES)
        write_file(path, base64.b64encode(key) + b"\n", 0o600)
        return key
    return read_secret(path)


def read_secret(path: Path) -> bytes:
    """A 32-byte secret written by :func:`load_or_create_secret` (e.g. an auditor's copy of a subject key)."""
    try:
        raw = base64.b64decode(path.read_bytes().strip(), validate=True)
    except OSError as exc:
        raise CryptoError(f"{path}: cannot read ({exc.strerror})", code="KEY_FILE_UNREADABLE") from None
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise CryptoError(f"{path}: not a 32-byte key in base64", code="KEY_FILE_INVALID")
    return raw
