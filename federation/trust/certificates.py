"""Reading a federation certificate: parsed whole, its key checked, and the identity it carries.

Identity encoding
-----------------
Every leaf certificate says who it is in two places:

- the subject: ``CN=<common name>``, ``O=hpf federation``, ``OU=<role>`` for a person or ``OU=<kind>``
  (``node`` / ``coordinator``) otherwise, and ``L=<region>`` when there is a home region (a node's region is
  its node id);
- a non-critical private extension, OID :data:`IDENTITY_OID` (``2.25.<uuid>``, an OID that needs no
  registration), whose value is a DER ``UTF8String`` holding JSON (sorted keys)
  ``{"kind": ..., "region": ... | null, "role": ... | null, "v": 1}``.

The extension is authoritative; :func:`read_identity` also checks the subject agrees with it and refuses the
certificate (``IDENTITY_INCONSISTENT``) if not. The extension is non-critical because TLS stacks refuse
certificates carrying a critical extension they do not know.

Node and coordinator certificates carry serverAuth and clientAuth; person certificates carry clientAuth only
and no SubjectAlternativeName. The CA writes them (:mod:`federation.trust.pki`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Literal, cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes as PrivateKey
from cryptography.x509.oid import NameOID

from hpf.federation.errors import AuthError, ConfigError

Kind = Literal["node", "coordinator", "person"]
KINDS: tuple[str, ...] = ("node", "coordinator", "person")
ROLES: tuple[str, ...] = ("caseworker", "analyst", "auditor", "operator", "integrator")
ORGANIZATION = "hpf federation"
IDENTITY_OID = x509.ObjectIdentifier("2.25.130601171717024278545724079553644645860")

# Every name is matched whole (re.fullmatch): "$" would also match before a trailing newline.
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is."""

    common_name: str
    kind: str
    role: str | None
    region: str | None
    serial: int
    not_after: dt.datetime


def der_utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    n, width = len(raw), (len(raw).bit_length() + 7) // 8
    length = bytes([n]) if n < 0x80 else bytes([0x80 | width]) + n.to_bytes(width, "big")
    return b"\x0c" + length + raw


def parse_der_utf8(data: bytes) -> str:
    if len(data) < 2 or data[0] != 0x0C:
        raise ValueError("not a UTF8String")
    n, offset = data[1], 2
    if n & 0x80:
        width = n & 0x7F
        n, offset = int.from_bytes(data[2 : 2 + width], "big"), 2 + width
    if offset + n != len(data):
        raise ValueError("bad UTF8String length")
    return data[offset:].decode("utf-8")


# What reading a malformed certificate can raise: cryptography's InvalidVersion, DuplicateExtension and
# UnsupportedGeneralNameType are not ValueErrors, and a bad key is an UnsupportedAlgorithm or a ValueError.
MALFORMED_CERTIFICATE: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def _parsed(cert: x509.Certificate) -> x509.Certificate:
    """``cert`` once every field the federation reads has been parsed (some are parsed only when first read)."""
    _ = (cert.version, cert.serial_number, cert.subject, cert.issuer, cert.extensions, cert.public_key())
    _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_algorithm_oid)
    return cert


def load_certificate(data: bytes, *, der: bool = False) -> x509.Certificate:
    """A certificate from PEM (the first in ``data``) or DER, every field the federation reads already parsed.

    Anything malformed (not a certificate, an invalid version, duplicate or broken extensions, names or key)
    raises ValueError, so each caller maps one exception to its own stable code and nothing else escapes later.
    """
    try:
        return _parsed(x509.load_der_x509_certificate(data) if der else x509.load_pem_x509_certificate(data))
    except MALFORMED_CERTIFICATE:
        raise ValueError("not a well-formed certificate") from None


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every PEM certificate in ``data`` (a CA bundle, a chain), each parsed whole; ValueError as above."""
    try:
        return [_parsed(cert) for cert in x509.load_pem_x509_certificates(data)]
    except MALFORMED_CERTIFICATE:
        raise ValueError("not well-formed certificates") from None


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki))


def check_whole(
    value: str, pattern: re.Pattern[str], *, what: str, rule: str, code: str, hint: str | None = None
) -> str:
    """``value`` when ``pattern`` matches all of it, else ConfigError ``code``: "invalid <what> ...: use <rule>".

    >>> check_whole("hangzhou", _REGION, what="region", rule="a node id", code="PKI_BAD_REGION")
    'hangzhou'
    """
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(f"invalid {what} {value!r}: use {rule}", code=code, hint=hint)
    return value


def check_identity(kind: str, role: str | None, region: str | None) -> None:
    """ConfigError unless a certificate of ``kind`` may carry ``role`` and ``region``."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}", code="PKI_BAD_KIND")
    if kind == "person" and role not in ROLES:
        raise ConfigError(f"a person needs a role: {', '.join(ROLES)} (got {role!r})", code="PKI_BAD_ROLE")
    if kind != "person" and role is not None:
        raise ConfigError(f"a {kind} certificate carries no role (got {role!r})", code="PKI_BAD_ROLE")
    if region is not None:
        check_whole(region, _REGION, what="region", rule="a node id, e.g. 'hangzhou'", code="PKI_BAD_REGION")


def read_identity(cert_pem: bytes | str) -> Identity:
    """The identity a (first) PEM certificate carries; AuthError if it carries none or an inconsistent one."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    try:
        cert = load_certificate(data)
    except ValueError:
        raise AuthError("not a PEM certificate", code="TLS_PEM_INVALID") from None
    return identity_of(cert)


def identity_of(cert: x509.Certificate) -> Identity:
    """The identity a parsed certificate carries; AuthError if it carries none or an inconsistent one."""
    try:
        return _identity_of(cert)
    except MALFORMED_CERTIFICATE:  # a certificate not read by load_certificate, with a field that does not parse
        raise AuthError("the certificate is malformed", code="IDENTITY_INVALID") from None


def _identity_of(cert: x509.Certificate) -> Identity:
    try:
        ext = cert.extensions.get_extension_for_oid(IDENTITY_OID).value
        fields = json.loads(parse_der_utf8(cast(x509.UnrecognizedExtension, ext).value))
        kind, role, region = fields["kind"], fields.get("role"), fields.get("region")
    except x509.ExtensionNotFound:
        raise AuthError(
            "the certificate carries no hpf identity",
            code="IDENTITY_MISSING",
            hint="issue it with `hpf pki issue` or `hpf pki init`",
        ) from None
    except (ValueError, KeyError, TypeError):
        raise AuthError("the certificate's hpf identity is malformed", code="IDENTITY_INVALID") from None
    if kind == "ca":
        raise AuthError(
            "this is the federation CA's certificate, not a party's",
            code="IDENTITY_MISSING",
            hint="use a certificate the CA issued (`hpf pki issue` or `hpf pki init`)",
        )

    def subject(oid: x509.ObjectIdentifier) -> str | None:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else None

    common_name = subject(NameOID.COMMON_NAME)
    try:
        check_identity(kind, role, region)
    except ConfigError as exc:
        raise AuthError(f"invalid hpf identity: {exc.message}", code="IDENTITY_INVALID") from None
    if (
        not common_name
        or subject(NameOID.ORGANIZATIONAL_UNIT_NAME) != (role if kind == "person" else kind)
        or subject(NameOID.LOCALITY_NAME) != region
    ):
        raise AuthError("the subject disagrees with the hpf identity", code="IDENTITY_INCONSISTENT")
    return Identity(common_name, kind, role, region, cert.serial_number, cert.not_valid_after_utc)
