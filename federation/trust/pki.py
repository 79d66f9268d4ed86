"""The federation's small PKI: one CA, and certificates for nodes, the coordinator and people.

The CA names its federation, and writes each server's name into that server's certificate only
(:mod:`federation.trust.server_names`); every certificate carries its holder's identity
(:mod:`federation.trust.certificates`); keys and certificates are written where :mod:`federation.trust.key_files`
says; the CA's revocation lists are signed from its own record (:mod:`federation.trust.revocation`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hpf.federation.errors import AuthError, ConfigError
from hpf.federation.trust import ca_record, server_names
from hpf.federation.trust.certificates import (
    IDENTITY_OID,
    MALFORMED_CERTIFICATE,
    ORGANIZATION,
    Kind,
    check_identity,
    check_whole,
    der_utf8,
    identity_of,
    key_matches,
    load_certificate,
)
from hpf.federation.trust.key_files import CaFiles, CertFiles, load_ca, write_pair
from hpf.federation.trust.revocation import newest_crl_in_place, write_crl
from hpf.federation.trust.server_names import (
    DEFAULT_HOSTS,
    ServerNames,
    check_federation_name,
    check_node_id,
    federation_of,
)

COORDINATOR_NAME = "coordinator"

# Every name is matched whole (re.fullmatch): "$" would also match before a trailing newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between parties


class FederationFiles(TypedDict):
    """What :func:`init_federation` made or kept."""

    federation: str  # the name the CA gives the federation; its servers' names end in it
    ca: CaFiles
    coordinator: CertFiles
    nodes: dict[str, CertFiles]
    people: dict[str, CertFiles]
    created: list[Path]  # the .pem files written by this call (their keys sit next to them)


DEFAULT_CLIENTS: tuple[tuple[str, str, str | None], ...] = (("caseworker", "caseworker", None),)


def _check_name(value: str, what: str) -> None:
    rule = "letters, digits, '.', '_' or '-', at most 64, starting with a letter or digit"
    check_whole(value, _NAME, what=what, rule=rule, code="PKI_BAD_NAME")


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
        .add_extension(x509.UnrecognizedExtension(IDENTITY_OID, der_utf8(payload)), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_pair(files, cert, key)
    ca_record.save(files.cert.parent / ca_record.RECORD_FILE, ca_record.fresh(cert))  # no list signed yet
    return files


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
    check_identity(kind, role, region)
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
    san = server_names.server_hosts(names, kind, region, hosts) if kind != "person" else None
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
        .add_extension(x509.UnrecognizedExtension(IDENTITY_OID, der_utf8(payload)), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(server_names.san(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out = Path(out_dir)
    files = CertFiles(cert=out / f"{common_name}.pem", key=out / f"{common_name}.key", ca=ca_files.cert)
    write_pair(files, cert, key)
    return files


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
    want_san = (
        set() if kind == "person" else set(server_names.san(server_names.server_hosts(names, kind, region, hosts)))
    )
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
        check_identity("node", None, node_id)
    for name, role, region in clients:
        _check_name(name, "person name")
        check_identity("person", role, region)
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
