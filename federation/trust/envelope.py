"""Signed query envelopes: what a person asks, signed with their certificate's key, verified by every node.

The client serializes a :class:`QueryEnvelope` once and signs those exact bytes (ECDSA P-256, SHA-256, over a
domain-separation prefix). The coordinator forwards the bytes untouched; every node verifies, before it runs
anything, that

- the signer's certificate was issued by the federation CA, is valid now, is not revoked, and is a person's;
- the signature covers the envelope, so the SQL, purpose, consent reference, time, nonce and the digest of the
  public HE context cannot be altered (a coordinator that swapped in its own key would fail here);
- the envelope belongs to this federation and this operation (an "explain" envelope never runs a query);
- it was issued within the time window (replays of an old envelope fail; the nonce store catches the rest);
- it bounds how many runs of the question the regions may answer and charge (``max_runs``): a coordinator
  cannot re-run it more often behind the asker's back.

The query id is derived from the signed bytes, so the client, the coordinator and every node agree on it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from hpf.federation.config_files import resolve_path
from hpf.federation.errors import AuthError, ConfigError, PlanError, quoted
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.lru import Lru
from hpf.federation.trust import certificates
from hpf.federation.trust.revocation import RevocationList

log = logging.getLogger("hpf.trust")

VERSION = 1
OPERATIONS = ("query", "explain", "lookup")
SIGNING_PREFIX = b"hpf-query-envelope/v1\x00"
NONCE_BYTES = 16
DEFAULT_WINDOW_S = 300  # how far an envelope's time may be from a node's clock, either way
MAX_ENVELOPE_BYTES = 1024 * 1024
MAX_PURPOSE_CHARS = 64
MAX_CONSENT_CHARS = 128
MAX_RUNS = 16  # the most runs of one question an asker may allow (QueryEnvelope.max_runs)
DEFAULT_MAX_RUNS = 2  # the first run, and one re-run with the survivors when a region fails


def query_id(signed: pb.SignedEnvelope) -> str:
    """The query's id: the first 128 bits of SHA-256 over the signed envelope bytes, hex."""
    return hashlib.sha256(signed.envelope).hexdigest()[:32]


class Signer:
    """A person's certificate and key, used to sign envelopes."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        try:
            cert = certificates.load_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise AuthError("the signing certificate or key is not readable PEM", code="AUTH_SIGNER_INVALID") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not certificates.key_matches(cert, key):
            raise AuthError("the signing key does not belong to the certificate", code="AUTH_SIGNER_INVALID")
        self.identity = certificates.identity_of(cert)
        if self.identity.kind != "person":
            raise AuthError("only a person's certificate signs questions", code="AUTH_NOT_A_PERSON")
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self._key = key
        self.certificate = cert

    @classmethod
    def from_files(cls, cert: Path, key: Path) -> Signer:
        try:
            return cls(cert.read_bytes(), key.read_bytes())
        except OSError as exc:
            what = f"cannot read the signing certificate or key ({exc.strerror})"
            raise AuthError(what, code="AUTH_SIGNER_INVALID") from None

    def sign(
        self,
        *,
        sql: str,
        context_digest: str,
        federation: str,
        operation: str = "query",
        purpose: str = "",
        consent_ref: str = "",
        now_ms: int | None = None,
        nonce: bytes | None = None,
        lookup: pb.LookupSpec | None = None,
        max_runs: int = DEFAULT_MAX_RUNS,
    ) -> pb.SignedEnvelope:
        if not 1 <= max_runs <= MAX_RUNS:
            raise ConfigError(f"max_runs must be 1 to {MAX_RUNS}", code="CONFIG_INVALID")
        for text, field in ((sql, "SQL"), (purpose, "purpose"), (consent_ref, "consent reference")):
            require_text(text, field)
        envelope = pb.QueryEnvelope(
            version=VERSION,
            operation=operation,
            sql=sql,
            purpose=purpose,
            consent_ref=consent_ref,
            issued_at_ms=int(time.time() * 1000) if now_ms is None else now_ms,
            nonce=os.urandom(NONCE_BYTES) if nonce is None else nonce,
            context_digest=context_digest,
            federation=federation,
            lookup=lookup,
            max_runs=max_runs,
        )
        data = envelope.SerializeToString(deterministic=True)
        signature = self._key.sign(SIGNING_PREFIX + data, ec.ECDSA(hashes.SHA256()))
        return pb.SignedEnvelope(envelope=data, signature=signature, signer_certificate=self._cert_der)


def require_text(text: str, field: str) -> None:
    """Refuse ``text`` that is not Unicode text (a lone surrogate: what Python makes of a byte of a command-line
    argument that is no UTF-8), which no protobuf string can hold; the message names the field, never the text.

    >>> require_text("loan-review", "purpose")
    >>> require_text("loan\\udc80", "purpose")
    Traceback (most recent call last):
    hpf.federation.errors.PlanError: [INPUT_NOT_TEXT] the purpose is not valid text ... (hint: give it as UTF-8 text)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PlanError(
            f"the {field} is not valid text (it holds a character no UTF-8 can encode)",
            code="INPUT_NOT_TEXT",
            hint="give it as UTF-8 text",
        ) from None


@dataclass(frozen=True)
class VerifiedEnvelope:
    """An envelope whose signature, signer and time have been checked."""

    envelope: pb.QueryEnvelope
    signer: certificates.Identity
    query_id: str


def _refuse(message: str, code: str, hint: str | None = None) -> AuthError:
    return AuthError(message, code=code, hint=hint)


class EnvelopeVerifier:
    """Checks signed envelopes against the federation CA, its revocation list and this party's clock."""

    def __init__(
        self,
        ca_cert: x509.Certificate,
        federation: str,
        revocations: RevocationList | None = None,
        window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        self._ca = ca_cert
        self.federation = federation
        self.revocations = revocations or RevocationList(None, ca_cert)
        self.window_s = window_s
        self._known: Lru[bytes, tuple[x509.Certificate, certificates.Identity, ec.EllipticCurvePublicKey]] = Lru(1024)

    @classmethod
    def from_files(
        cls,
        ca: Path,
        federation: str,
        revocations: Path | None,
        window_s: float = DEFAULT_WINDOW_S,
        revocation_state: Path | None = None,
    ) -> EnvelopeVerifier:
        try:
            ca_cert = certificates.load_certificate(ca.read_bytes())
        except OSError as exc:
            what = f"{ca}: cannot read the federation CA ({exc.strerror})"
            raise ConfigError(what, code="TLS_FILE_MISSING") from None
        except ValueError:
            raise AuthError(f"{ca}: not a PEM certificate", code="TLS_PEM_INVALID") from None
        return cls(ca_cert, federation, RevocationList(revocations, ca_cert, revocation_state), window_s)

    def _certificate(self, der: bytes) -> tuple[x509.Certificate, certificates.Identity, ec.EllipticCurvePublicKey]:
        """Parse a signer's certificate, check it was issued by the CA and read its identity (cached per
        certificate: these never change; its dates and revocation are checked on every request)."""
        known = self._known.get(der)
        if known is not None:
            return known
        try:  # every field parsed now: a malformed one (an invalid version, say) is this refusal, not a crash later
            cert = certificates.load_certificate(der, der=True)
        except ValueError:
            raise _refuse("the signer's certificate is not a valid certificate", "AUTH_CERT_INVALID") from None
        try:
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            raise _refuse(
                "the signer's certificate was not issued by this federation's CA",
                "AUTH_WRONG_CA",
                "use a certificate issued by this federation (`hpf pki issue`)",
            ) from None
        identity = certificates.identity_of(cert)
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise _refuse("the signer's key is not an ECDSA key", "AUTH_CERT_INVALID")
        known = (cert, identity, public_key)
        self._known.put(der, known)
        return known

    def signer(self, signed: pb.SignedEnvelope) -> certificates.Identity:
        """The signer's identity once its certificate is from the CA, valid now, not revoked, a person's."""
        if not signed.signer_certificate or not signed.signature or not signed.envelope:
            raise _refuse(
                "the question is not signed",
                "AUTH_UNSIGNED",
                "every question must be signed with the asker's certificate key (the hpf client does this)",
            )
        cert, identity, public_key = self._certificate(signed.signer_certificate)
        now = dt.datetime.now(dt.UTC)
        if now < cert.not_valid_before_utc:
            raise _refuse("the signer's certificate is not valid yet", "AUTH_CERT_NOT_YET_VALID")
        if now >= cert.not_valid_after_utc:
            raise _refuse(
                "the signer's certificate has expired",
                "AUTH_CERT_EXPIRED",
                "ask the federation operator for a new certificate",
            )
        if identity.kind != "person":
            raise _refuse(f"a {identity.kind} certificate cannot sign a question", "AUTH_NOT_A_PERSON")
        self.revocations.check(identity.serial, "signer's")
        try:
            public_key.verify(signed.signature, SIGNING_PREFIX + signed.envelope, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise _refuse(
                "the question's signature does not verify: it was forged or altered on the way",
                "AUTH_SIGNATURE_INVALID",
            ) from None
        return identity

    def verify(self, signed: pb.SignedEnvelope, *, operation: str, now_ms: int | None = None) -> VerifiedEnvelope:
        """The verified envelope, or AuthError with a stable code saying what is wrong."""
        if len(signed.envelope) > MAX_ENVELOPE_BYTES:
            raise _refuse("the signed question is too large", "AUTH_ENVELOPE_MALFORMED")
        identity = self.signer(signed)
        envelope = pb.QueryEnvelope()
        try:
            envelope.ParseFromString(signed.envelope)
        except DecodeError:
            raise _refuse("the signed question cannot be read", "AUTH_ENVELOPE_MALFORMED") from None
        if envelope.version != VERSION:
            raise _refuse(f"envelope version {envelope.version} is not supported", "AUTH_ENVELOPE_MALFORMED")
        if envelope.operation != operation:
            raise _refuse(
                f"the question was signed for {quoted(envelope.operation)}, not '{operation}'",
                "AUTH_ENVELOPE_OPERATION",
            )
        if envelope.federation != self.federation:
            raise _refuse("the question was signed for another federation", "AUTH_ENVELOPE_FEDERATION")
        if len(envelope.nonce) != NONCE_BYTES:
            raise _refuse("the question's nonce is malformed", "AUTH_ENVELOPE_MALFORMED")
        if not 1 <= envelope.max_runs <= MAX_RUNS:
            raise _refuse(
                f"the question must bound its runs from 1 to {MAX_RUNS} (max_runs)",
                "AUTH_ENVELOPE_MALFORMED",
                "sign max_runs into the envelope (the hpf client does this)",
            )
        if len(envelope.purpose) > MAX_PURPOSE_CHARS or len(envelope.consent_ref) > MAX_CONSENT_CHARS:
            raise _refuse("the purpose or consent reference is too long", "AUTH_ENVELOPE_MALFORMED")
        if envelope.HasField("lookup") != (operation == "lookup") or (
            envelope.HasField("lookup") and len(envelope.lookup.seal_public_key) != 32
        ):
            raise _refuse("a lookup, and only a lookup, carries a lookup specification", "AUTH_ENVELOPE_MALFORMED")
        now = int(time.time() * 1000) if now_ms is None else now_ms
        skew_s = abs(now - envelope.issued_at_ms) / 1000.0
        if skew_s > self.window_s:
            raise _refuse(
                f"the question was signed {skew_s:.0f} s away from this party's clock (window {self.window_s:.0f} s)",
                "AUTH_ENVELOPE_STALE",
                "sign a new question; check the clocks if this repeats",
            )
        return VerifiedEnvelope(envelope=envelope, signer=identity, query_id=query_id(signed))


class TrustSettings(BaseModel):
    """The config fields of a party that verifies signed questions (nodes and the coordinator)."""

    federation_ca: Path | None = Field(
        default=None, description="CA that signs people's certificates (default: the TLS CA)"
    )
    revocations: Path | None = Field(default=None, description="the federation's CRL (`hpf pki revoke` writes it)")
    revocation_state: Path | None = Field(
        default=None,
        description="where the number of the newest revocation list accepted is kept across restarts "
        "(a node's default: <state_dir>/revocation-state.json)",
    )
    envelope_window_s: int = Field(default=DEFAULT_WINDOW_S, ge=10, le=3600)

    @field_validator("federation_ca", "revocations", "revocation_state")
    @classmethod
    def _paths(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else resolve_path(v, info)

    def envelope_verifier(self, tls_ca: Path | None, federation: str) -> EnvelopeVerifier:
        ca = self.federation_ca or tls_ca
        if ca is None:
            raise ConfigError(
                "no federation CA to verify signed questions with",
                code="CONFIG_INVALID",
                hint="give 'federation_ca: pki/ca.pem' (needed in insecure mode, where there is no TLS CA)",
            )
        if self.revocations is None:
            log.warning("no revocation list configured ('revocations:'): a revoked certificate would be accepted")
        return EnvelopeVerifier.from_files(
            ca, federation, self.revocations, self.envelope_window_s, self.revocation_state
        )
