"""The federation's small PKI: one CA, and certificates for nodes, the coordinator and people.

All keys are ECDSA P-256, written unencrypted as PKCS#8 PEM with file mode 0600 (gRPC reads them as is).

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
and no SubjectAlternativeName.

Server names
------------
The CA names its federation: the same extension on the CA certificate holds
``{"federation": <name>, "kind": "ca", "v": 1}``. Every party already holds the CA certificate (it is in its
TLS config), so it knows the federation's server names before it connects, catalog or not:

- the coordinator is ``coordinator.<federation>``;
- node ``<id>`` is ``<id>.node.<federation>``.

The CA writes each name only into the certificate of that kind and id, and refuses any other name under the
federation's (``<federation>`` itself or anything ending in ``.<federation>``) as a host or common name.
Every party dials a server with its name as the TLS target (:func:`federation.trust.tls.coordinator_target`,
:func:`federation.trust.tls.node_target`), so the handshake itself refuses any other certificate of the federation:
a node's certificate cannot pose as the coordinator, nor as another node. Server certificates also carry the
operator's own host names and addresses (``hosts``, default localhost and 127.0.0.1) for other tools; the
federation's parties never check those. Federation names and node ids are DNS names: lower-case letters,
digits and ``-`` (and ``.`` between a federation name's labels).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes as PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hpf.federation.errors import AuthError, ConfigError
from hpf.federation.private_files import write_file
from hpf.federation.trust import ca_record

Kind = Literal["node", "coordinator", "person"]
KINDS: tuple[str, ...] = ("node", "coordinator", "person")
ROLES: tuple[str, ...] = ("caseworker", "analyst", "auditor", "operator", "integrator")
ORGANIZATION = "hpf federation"
IDENTITY_OID = x509.ObjectIdentifier("2.25.130601171717024278545724079553644645860")
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
COORDINATOR_NAME = "coordinator"

# Every name is matched whole (re.fullmatch): "$" would also match before a trailing newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # one DNS label (RFC 1123), lower case
_NODE_ID = re.compile(_LABEL)
_FEDERATION = re.compile(rf"(?=.{{1,128}}\Z){_LABEL}(?:\.{_LABEL})*")  # leaves room for "<node id>.node."
_HOST = re.compile(r"[A-Za-z0-9*._-]+")
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between parties


@dataclass(frozen=True)
class CaFiles:
    """Where a CA's certificate and key live."""

    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path | str) -> CaFiles:
        return cls(cert=Path(directory) / "ca.pem", key=Path(directory) / "ca.key")


@dataclass(frozen=True)
class CertFiles:
    """A leaf certificate, its key, and the CA certificate that verifies it."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is."""

    common_name: str
    kind: str
    role: str | None
    region: str | None
    serial: int
    not_after: dt.datetime


class FederationFiles(TypedDict):
    """What :func:`init_federation` made or kept."""

    federation: str  # the name the CA gives the federation; its servers' names end in it
    ca: CaFiles
    coordinator: CertFiles
    nodes: dict[str, CertFiles]
    people: dict[str, CertFiles]
    created: list[Path]  # the .pem files written by this call (their keys sit next to them)


DEFAULT_CLIENTS: tuple[tuple[str, str, str | None], ...] = (("caseworker", "caseworker", None),)


def _write_pair(files: CaFiles | CertFiles, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    write_file(files.key, key.private_bytes(pem, pkcs8, serialization.NoEncryption()), 0o600)
    write_file(files.cert, cert.public_bytes(pem), 0o644)


def _der_utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    n, width = len(raw), (len(raw).bit_length() + 7) // 8
    length = bytes([n]) if n < 0x80 else bytes([0x80 | width]) + n.to_bytes(width, "big")
    return b"\x0c" + length + raw


def _parse_der_utf8(data: bytes) -> str:
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


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        rule = "letters, digits, '.', '_' or '-', at most 64, starting with a letter or digit"
        raise ConfigError(f"invalid {what} {value!r}: use {rule}", code="PKI_BAD_NAME")


def _check_identity(kind: str, role: str | None, region: str | None) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}", code="PKI_BAD_KIND")
    if kind == "person" and role not in ROLES:
        raise ConfigError(f"a person needs a role: {', '.join(ROLES)} (got {role!r})", code="PKI_BAD_ROLE")
    if kind != "person" and role is not None:
        raise ConfigError(f"a {kind} certificate carries no role (got {role!r})", code="PKI_BAD_ROLE")
    if region is not None and (not isinstance(region, str) or not _REGION.fullmatch(region)):
        raise ConfigError(f"invalid region {region!r}: use a node id, e.g. 'hangzhou'", code="PKI_BAD_REGION")


_NO_FEDERATION_HINT = (
    "this CA was made before CAs named their federation; make a new one with "
    "`hpf pki init --dir DIR --federation NAME --force` (NAME: the catalog's `federation:`), "
    "which re-issues every certificate, and hand the new ones out"
)


def check_federation_name(name: str) -> str:
    """``name`` if it can name a federation's servers (DNS labels joined by dots), else PKI_BAD_FEDERATION."""
    if not isinstance(name, str) or not _FEDERATION.fullmatch(name):
        raise ConfigError(
            f"invalid federation name {name!r}: use lower-case letters, digits and '-', labels joined by '.', "
            "at most 128 characters (e.g. 'yrd-demo')",
            code="PKI_BAD_FEDERATION",
            hint="it is the catalog's `federation:`; the servers' names end in it",
        )
    return name


def check_node_id(node_id: str) -> str:
    """``node_id`` if it is a DNS label (it becomes ``<id>.node.<federation>``), else PKI_BAD_NODE_ID."""
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
        raise ConfigError(
            f"invalid node id {node_id!r}: use lower-case letters, digits and '-', at most 63, "
            "starting and ending with a letter or digit (e.g. 'taizhou-js')",
            code="PKI_BAD_NODE_ID",
        )
    return node_id


@dataclass(frozen=True)
class ServerNames:
    """The names a federation's servers are reached by (see "Server names" above).

    >>> names = ServerNames("yrd-demo")
    >>> names.coordinator, names.node("hangzhou")
    ('coordinator.yrd-demo', 'hangzhou.node.yrd-demo')
    >>> names.reserved("Coordinator.YRD-demo."), names.reserved("*.node.yrd-demo"), names.reserved("yrd-demo.org")
    (True, True, False)
    """

    federation: str

    def __post_init__(self) -> None:
        check_federation_name(self.federation)

    @property
    def coordinator(self) -> str:
        return f"coordinator.{self.federation}"

    def node(self, node_id: str) -> str:
        return f"{check_node_id(node_id)}.node.{self.federation}"

    def of(self, kind: str, node_id: str | None) -> str | None:
        """The one name a certificate of ``kind`` carries (a node's id is its region); None for a person."""
        if kind == "coordinator":
            return self.coordinator
        if kind == "node":
            if node_id is None:
                raise ConfigError(
                    "a node certificate names its node id as its region",
                    code="PKI_BAD_NODE_ID",
                    hint="give --region NODE_ID (the id in the catalog)",
                )
            return self.node(node_id)
        return None

    def reserved(self, name: str) -> bool:
        """True when ``name`` (any case, a wildcard too) falls under the federation's names, which TLS would match
        case-insensitively: the federation's own name or anything ending in ``.<federation>``."""
        name = name.lower().rstrip(".")
        return name == self.federation or name.endswith("." + self.federation)


def federation_of(ca: x509.Certificate, where: str = "the federation CA") -> str:
    """The federation a CA certificate names; PKI_CA_NO_FEDERATION for a CA made before CAs named one."""
    try:
        ext = ca.extensions.get_extension_for_oid(IDENTITY_OID).value
    except x509.ExtensionNotFound:
        raise ConfigError(
            f"{where} names no federation, so its servers have no names to check",
            code="PKI_CA_NO_FEDERATION",
            hint=_NO_FEDERATION_HINT,
        ) from None
    try:
        fields = json.loads(_parse_der_utf8(cast(x509.UnrecognizedExtension, ext).value))
        if fields["kind"] != "ca":
            raise ValueError("not a CA's identity")
        return check_federation_name(fields["federation"])
    except (ValueError, KeyError, TypeError, ConfigError):
        raise AuthError(f"{where}: its federation name is malformed", code="IDENTITY_INVALID") from None


def _server_hosts(names: ServerNames, kind: str, region: str | None, hosts: Sequence[str]) -> list[str]:
    """A server certificate's SubjectAlternativeNames: its own name first, then the operator's ``hosts``
    (default localhost and 127.0.0.1).

    The CA hands out a name under the federation's only to the kind and id it names: any other is refused, so
    no certificate can answer to another server's name.
    """
    own = names.of(kind, region)
    assert own is not None  # servers only
    hosts = list(hosts) or list(DEFAULT_HOSTS)
    for host in hosts:
        _host_name(host)  # whole names only: "coordinator.<federation>\n" is no way around the check below
        if names.reserved(host) and host.lower().rstrip(".") != own:
            raise ConfigError(
                f"host {host!r} is a name under federation {names.federation!r}, which only the CA hands out",
                code="PKI_RESERVED_NAME",
                hint=f"a {kind} certificate carries {own!r} already; give the machine's own host names or addresses",
            )
    return [own, *(h for h in hosts if h.lower().rstrip(".") != own)]


def _host_name(host: str) -> x509.GeneralName:
    """``host`` as a SubjectAlternativeName: an IP address (without a zone), or a host name of letters, digits,
    ``.``, ``_``, ``-`` and ``*`` matched whole; PKI_BAD_HOST otherwise."""
    if not isinstance(host, str):
        raise ConfigError(f"invalid host name {host!r}", code="PKI_BAD_HOST")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and getattr(address, "scope_id", None) is None:  # "fe80::1%<anything>" has a zone
        return x509.IPAddress(address)
    if not _HOST.fullmatch(host):
        raise ConfigError(f"invalid host name {host!r}", code="PKI_BAD_HOST")
    return x509.DNSName(host)


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([_host_name(host) for host in dict.fromkeys(hosts)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    off = dict.fromkeys(
        (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, **off)


def create_ca(
    out_dir: Path | str,
    name: str = "hpf federation CA",
    valid_days: int = 3650,
    *,
    federation: str,
    force: bool = False,
) -> CaFiles:
    """Make the CA of ``federation`` in ``out_dir`` (``ca.pem``, ``ca.key`` mode 0600); never replaces one
    unless ``force``. The certificate names the federation (see "Server names" above)."""
    check_federation_name(federation)
    files = CaFiles.in_dir(out_dir)
    if not force and (files.cert.exists() or files.key.exists()):
        hint = "replacing it invalidates every certificate it issued; pass --force if you mean that"
        raise ConfigError(f"{files.cert.parent}: a CA already exists there", code="PKI_CA_EXISTS", hint=hint)
    if valid_days <= 0:
        raise ConfigError("a CA needs a positive validity in days", code="PKI_BAD_VALIDITY")
    key = ec.generate_private_key(ec.SECP256R1())
    org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)
    subject = x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = dt.datetime.now(dt.UTC) - _BACKDATE
    payload = json.dumps({"federation": federation, "kind": "ca", "v": 1}, sort_keys=True)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.UnrecognizedExtension(IDENTITY_OID, _der_utf8(payload)), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(files, cert, key)
    ca_record.save(files.cert.parent / ca_record.RECORD_FILE, ca_record.fresh(cert))  # no list signed yet
    return files


def load_ca(ca_dir_or_files: Path | str | CaFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Read a CA's certificate and key, with errors that say how to make one."""
    files = ca_dir_or_files if isinstance(ca_dir_or_files, CaFiles) else CaFiles.in_dir(ca_dir_or_files)
    for path in (files.cert, files.key):
        if not path.is_file():
            hint = f"run `hpf pki init --dir {files.cert.parent} --federation NAME` to create the federation CA"
            raise ConfigError(f"{path}: CA file not found", code="PKI_CA_NOT_FOUND", hint=hint)
    try:
        cert = load_certificate(files.cert.read_bytes())
    except ValueError:
        raise AuthError(f"{files.cert}: not a PEM certificate", code="TLS_PEM_INVALID") from None
    try:
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AuthError(f"{files.key}: not an unencrypted PEM ECDSA key", code="TLS_PEM_INVALID")
    if not key_matches(cert, key):
        raise AuthError(f"{files.key}: key does not match {files.cert}", code="TLS_KEY_MISMATCH")
    return cert, key


def issue_certificate(
    ca_dir_or_files: Path | str | CaFiles,
    out_dir: Path | str,
    common_name: str,
    kind: Kind,
    *,
    hosts: Sequence[str] = (),
    role: str | None = None,
    region: str | None = None,
    valid_days: int = 825,
    not_before: dt.datetime | None = None,
) -> CertFiles:
    """Issue ``<out_dir>/<common_name>.pem`` and ``.key`` (mode 0600) from the CA.

    A node or coordinator certificate carries its server name (a node's id is its ``region``) and ``hosts``,
    which default to localhost and 127.0.0.1 and may not fall under the federation's names. Validity runs from
    ``not_before`` (default: now less 5 minutes) for ``valid_days`` (negative: already expired).
    """
    _check_name(common_name, "certificate name")
    _check_identity(kind, role, region)
    if kind == "person" and hosts:
        raise ConfigError("person certificates carry no host names", code="PKI_BAD_HOST")
    ca_files = ca_dir_or_files if isinstance(ca_dir_or_files, CaFiles) else CaFiles.in_dir(ca_dir_or_files)
    ca_cert, ca_key = load_ca(ca_files)
    names = ServerNames(federation_of(ca_cert, str(ca_files.cert)))
    if names.reserved(common_name):  # gRPC matches a certificate without SubjectAlternativeName by its CN
        raise ConfigError(
            f"certificate name {common_name!r} is a name under federation {names.federation!r}",
            code="PKI_RESERVED_NAME",
            hint="name the holder (a person, a node id, 'coordinator'); the CA writes server names itself",
        )
    san = _server_hosts(names, kind, region, hosts) if kind != "person" else None
    key = ec.generate_private_key(ec.SECP256R1())
    parts = [
        (NameOID.ORGANIZATION_NAME, ORGANIZATION),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, role or kind),
        (NameOID.LOCALITY_NAME, region),
        (NameOID.COMMON_NAME, common_name),
    ]
    subject = x509.Name([x509.NameAttribute(oid, value) for oid, value in parts if value is not None])
    start = not_before if not_before is not None else dt.datetime.now(dt.UTC) - _BACKDATE
    end = start + dt.timedelta(days=valid_days)
    if end <= start:
        start = end - dt.timedelta(days=1)
    payload = json.dumps({"kind": kind, "region": region, "role": role, "v": 1}, sort_keys=True)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind != "person":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .add_extension(x509.UnrecognizedExtension(IDENTITY_OID, _der_utf8(payload)), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(_san(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out = Path(out_dir)
    files = CertFiles(cert=out / f"{common_name}.pem", key=out / f"{common_name}.key", ca=ca_files.cert)
    _write_pair(files, cert, key)
    return files


CRL_FILE = "crl.pem"
CRL_VALID_DAYS = 30


_NO_CRL_NUMBER: tuple[type[Exception], ...] = (x509.ExtensionNotFound, *MALFORMED_CERTIFICATE)
_NO_OWN_CRL: tuple[type[Exception], ...] = (OSError, *MALFORMED_CERTIFICATE)


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    """The list's CRLNumber extension (RFC 5280 5.2.3), or None when it carries none (or a malformed one)."""
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except _NO_CRL_NUMBER:
        return None


def _own_crl(path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList | None:
    """The list at ``path`` when this CA signed it, every entry parsed (None when there is none, or it is
    unreadable or another's)."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        ours = crl.issuer == ca_cert.subject and crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
        if ours:
            _ = (crl.extensions, [(e.serial_number, e.revocation_date_utc, e.extensions) for e in crl])
    except _NO_OWN_CRL:
        return None
    return crl if ours else None


def _ca_record(files: CaFiles, ca_cert: x509.Certificate) -> tuple[Path, ca_record.CaRecord]:
    """Where the CA's record of its lists is, and what it holds (see :mod:`federation.trust.ca_record`).

    A CA made before CAs kept a record gets one here, once, from its newest list as ``crl.pem`` holds it: that
    list's number (0 for a list from before lists were numbered) and its entries, or nothing revoked when there
    is no ``crl.pem``. From then on the CA trusts only the record. A ``crl.pem`` that cannot be read or that
    this CA did not sign is no starting point (``PKI_CRL_INVALID``): the CA could not tell what it revoked.
    """
    path = files.cert.parent / ca_record.RECORD_FILE
    record = ca_record.load(path, ca_cert)
    if record is None:
        crl_path = files.cert.parent / CRL_FILE
        crl = _own_crl(crl_path, ca_cert)
        if crl is None and crl_path.exists():
            raise ConfigError(
                f"{crl_path}: not a revocation list this CA signed, and the CA keeps no record of what it revoked "
                "to sign the next list from",
                code="PKI_CRL_INVALID",
                hint="put back the newest crl.pem this CA signed; the CA starts its record from it",
            )
        record = ca_record.from_list(ca_cert, crl, crl_number(crl) if crl is not None else None)
        ca_record.save(path, record)
    return path, record


def newest_crl_in_place(ca_dir_or_files: Path | str | CaFiles) -> bool:
    """True when ``crl.pem`` is the newest list the CA signed: its own, numbered as its record's highest number
    and listing every certificate the record holds as revoked."""
    files = ca_dir_or_files if isinstance(ca_dir_or_files, CaFiles) else CaFiles.in_dir(ca_dir_or_files)
    ca_cert, _ = load_ca(files)
    _, record = _ca_record(files, ca_cert)
    crl = _own_crl(files.cert.parent / CRL_FILE, ca_cert)
    return (
        crl is not None
        and crl_number(crl) == record.number
        and {entry.serial_number for entry in crl} == record.serials
    )


def write_crl(ca_dir_or_files: Path | str | CaFiles, revoked: Sequence[ca_record.Revoked] = ()) -> Path:
    """Sign the CA's next revocation list from its own record, with ``revoked`` added, and write it as
    ``crl.pem`` next to ``ca.pem``.

    The list carries the record's next number (CRLNumber; 1 for the first) and every certificate the record
    holds as revoked. The record is written first (atomically, mode 0600, next to ``ca.key``), so the CA never
    signs two lists under one number. ``crl.pem`` is never the basis of the next list: it is read only to bring
    a record put back from an older copy up to a newer list this CA signed (number and revoked certificates,
    never down), so neither an older list copied over it nor an older record un-revokes a certificate; a party
    that has accepted list ``n`` refuses any list numbered below ``n``
    (:class:`federation.trust.revocation.RevocationList`).
    """
    files = ca_dir_or_files if isinstance(ca_dir_or_files, CaFiles) else CaFiles.in_dir(ca_dir_or_files)
    ca_cert, ca_key = load_ca(files)
    record_path, record = _ca_record(files, ca_cert)
    published = _own_crl(files.cert.parent / CRL_FILE, ca_cert)
    if published is not None and (crl_number(published) or 0) > record.number:
        # the record was put back from an older copy: it is brought up to the newer list this CA signed (never
        # down), so the next list neither reuses a number parties hold nor drops what the CA revoked since
        record = dataclasses.replace(
            record.revoking(ca_record.Revoked.of(entry) for entry in published), number=crl_number(published) or 0
        )
    record = record.revoking(revoked).signed()
    ca_record.save(record_path, record)
    now = dt.datetime.now(dt.UTC)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(now)
    builder = builder.next_update(now + dt.timedelta(days=CRL_VALID_DAYS))
    builder = builder.add_extension(x509.CRLNumber(record.number), critical=False)
    for entry in record.revoked:
        builder = builder.add_revoked_certificate(entry.entry())
    path = files.cert.parent / CRL_FILE
    write_file(path, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), 0o644)
    return path


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
        fields = json.loads(_parse_der_utf8(cast(x509.UnrecognizedExtension, ext).value))
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
        _check_identity(kind, role, region)
    except ConfigError as exc:
        raise AuthError(f"invalid hpf identity: {exc.message}", code="IDENTITY_INVALID") from None
    if (
        not common_name
        or subject(NameOID.ORGANIZATIONAL_UNIT_NAME) != (role if kind == "person" else kind)
        or subject(NameOID.LOCALITY_NAME) != region
    ):
        raise AuthError("the subject disagrees with the hpf identity", code="IDENTITY_INCONSISTENT")
    return Identity(common_name, kind, role, region, cert.serial_number, cert.not_valid_after_utc)


# Reasons an existing certificate/key pair cannot be reused as is.
_UNUSABLE: tuple[type[Exception], ...] = (
    OSError,
    *MALFORMED_CERTIFICATE,
    InvalidSignature,
    AuthError,
    x509.ExtensionNotFound,
)


def _still_good(
    files: CertFiles,
    ca_cert: x509.Certificate,
    want: tuple[str, str | None, str | None],
    hosts: Sequence[str],
    names: ServerNames,
) -> bool:
    """True when a leaf is from this CA, has its key, ``(kind, role, region)``, server name and hosts, 30+ days
    left (a server certificate made before server names lacks its name, so it is re-issued)."""
    kind, region = want[0], want[2]
    want_san = set() if kind == "person" else set(_san(_server_hosts(names, kind, region, hosts)))
    now = dt.datetime.now(dt.UTC)
    try:
        cert = load_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
        ident = identity_of(cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value if want_san else ()
    except _UNUSABLE:
        return False
    return (
        key_matches(cert, key)
        and (ident.kind, ident.role, ident.region) == want
        and cert.not_valid_before_utc <= now < cert.not_valid_after_utc - dt.timedelta(days=30)
        and set(san) == want_san
    )


def init_federation(
    out_dir: Path | str,
    node_ids: Sequence[str],
    *,
    federation: str | None = None,
    clients: Sequence[tuple[str, str, str | None]] = DEFAULT_CLIENTS,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    force: bool = False,
) -> FederationFiles:
    """Make (or complete) the certificates of ``federation`` (the catalog's name) under ``out_dir``.

    Layout: ``ca.pem``/``.key``, ``ca-revocations.json`` (the CA's record of its revocation lists, mode 0600),
    ``crl.pem`` (the newest revocation list, signed from that record), ``coordinator.pem``/``.key``,
    ``nodes/<id>.pem``/``.key``, ``people/<name>.pem``/``.key``. Servers carry their server name and
    ``hosts``. Idempotent: an existing CA is kept unless ``force`` (``federation`` may then be omitted, and if
    given must be the CA's); a leaf is kept while it fits (same CA, identity, server name and hosts, 30+ days
    left), else re-issued; ``crl.pem`` is kept while it is the newest list the CA signed, else the next list is
    signed from the CA's record. A new CA needs ``federation``; a CA that names none is refused (PKI_CA_NO_FEDERATION).
    """
    out = Path(out_dir)
    if federation is not None:
        check_federation_name(federation)
    for node_id in node_ids:
        _check_name(node_id, "node id")
        check_node_id(node_id)
        _check_identity("node", None, node_id)
    for name, role, region in clients:
        _check_name(name, "person name")
        _check_identity("person", role, region)
    ca_files = CaFiles.in_dir(out)
    created: list[Path] = []
    if not force and ca_files.cert.exists() != ca_files.key.exists():
        missing = ca_files.key if ca_files.cert.exists() else ca_files.cert
        hint = "restore the file, or pass --force to make a new CA and re-issue every certificate"
        raise ConfigError(f"{missing}: the CA is incomplete", code="PKI_CA_INCOMPLETE", hint=hint)
    if force or not ca_files.cert.exists():
        if federation is None:
            raise ConfigError(
                "a new federation CA needs the federation's name",
                code="PKI_FEDERATION_REQUIRED",
                hint="give --federation NAME, the catalog's `federation:` (servers are named under it)",
            )
        create_ca(out, federation=federation, force=True)
        created.append(ca_files.cert)
    ca_cert, _ = load_ca(ca_files)
    names = ServerNames(federation_of(ca_cert, str(ca_files.cert)))
    if federation is not None and federation != names.federation:
        raise ConfigError(
            f"{ca_files.cert}: this CA is federation {names.federation!r}, not {federation!r}",
            code="PKI_FEDERATION_MISMATCH",
            hint=f"give --federation {names.federation}, or pass --force to make a new CA for {federation!r} "
            "(it re-issues every certificate)",
        )
    if not newest_crl_in_place(ca_files):  # none yet (an empty one, for parties to name), or not the newest
        write_crl(ca_files)

    def ensure(sub: Path, name: str, want: tuple[Kind, str | None, str | None], h: Sequence[str]) -> CertFiles:
        files = CertFiles(cert=sub / f"{name}.pem", key=sub / f"{name}.key", ca=ca_files.cert)
        if not force and _still_good(files, ca_cert, want, h, names):
            return files
        created.append(files.cert)
        return issue_certificate(ca_files, sub, name, want[0], hosts=h, role=want[1], region=want[2])

    coordinator = ensure(out, COORDINATOR_NAME, ("coordinator", None, None), hosts)
    nodes = {n: ensure(out / "nodes", n, ("node", None, n), hosts) for n in node_ids}
    people = {name: ensure(out / "people", name, ("person", r, reg), ()) for name, r, reg in clients}
    return FederationFiles(
        federation=names.federation, ca=ca_files, coordinator=coordinator, nodes=nodes, people=people, created=created
    )
