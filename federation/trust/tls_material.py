"""A party's certificate files, read and checked before gRPC sees them.

A wrong path, a swapped key, an expired certificate or a certificate from another federation gives a clear
error with a stable code instead of an opaque handshake failure:

=========================  ===========  ==================================================
code                       class        meaning
=========================  ===========  ==================================================
``TLS_FILE_MISSING``       ConfigError  a file does not exist (or is a directory)
``TLS_FILE_UNREADABLE``    ConfigError  a file exists but cannot be read
``TLS_PEM_INVALID``        AuthError    not a (well-formed) PEM certificate / unencrypted PEM key
``TLS_KEY_MISMATCH``       AuthError    the key is not the certificate's key
``TLS_CERT_EXPIRED``       AuthError    a certificate (own or CA) has expired
``TLS_CERT_NOT_YET_VALID`` AuthError    a certificate is not valid yet
``TLS_WRONG_CA``           AuthError    the certificate was not issued by the given CA
``TLS_WRONG_PURPOSE``      AuthError    e.g. a person (client-only) certificate on a server
``TLS_SERVER_UNNAMED``     AuthError    a server certificate lacks its server name (made before names)
``TLS_SERVER_MISNAMED``    AuthError    a server certificate carries another server's name
``PKI_CA_NO_FEDERATION``   ConfigError  the CA names no federation (made before CAs named one)
``TLS_OPTIONS_INCOMPLETE`` ConfigError  only some of ca/cert/key given
``TLS_OPTIONS_CONFLICT``   ConfigError  certificates and --insecure both given
``TLS_REQUIRED``           ConfigError  neither certificates nor --insecure given
=========================  ===========  ==================================================

The last three are the options' (:mod:`federation.trust.tls`). Messages name the file and the fix; they never
contain key material. The CA certificate names the federation, and so its servers' names
(:mod:`federation.trust.server_names`): a server refuses to start with a certificate that lacks its own name.
"""

from __future__ import annotations

import datetime as dt
import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from hpf.federation.errors import AuthError, ConfigError
from hpf.federation.private_files import read_regular
from hpf.federation.trust.certificates import identity_of, key_matches, load_certificates
from hpf.federation.trust.server_names import ServerNames, federation_of
from hpf.federation.trust.tls import TlsConfig

_INIT_HINT = "run `hpf pki init --dir DIR --federation NAME` to create the federation's certificates, or fix the path"
_NEW_CERT_HINT = "issue a new certificate with `hpf pki issue` (or `hpf pki init` for a new federation)"

Purpose = Literal["server", "client"]
T = TypeVar("T")


@dataclass(frozen=True)
class TlsMaterial:
    """Checked PEM bytes, ready for gRPC. The key never appears in a repr."""

    ca: bytes
    cert: bytes
    key: bytes = field(repr=False)


# the most a certificate or key file holds (a CA bundle of a few hundred certificates is far below it)
MAX_PEM_BYTES = 1024 * 1024


def _read(path: Path, what: str) -> bytes:
    """The bytes of a certificate or key file, read as every party reads a file it is given: a path that is no
    regular file (a FIFO no one writes to, a device, a directory) is refused unread (``TLS_FILE_MISSING``), never
    waited on, and a file past :data:`MAX_PEM_BYTES` is never read whole (``TLS_FILE_UNREADABLE``)."""
    try:
        return read_regular(path, MAX_PEM_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found", code="TLS_FILE_MISSING", hint=_INIT_HINT) from None
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EISDIR):  # not a regular file
            raise ConfigError(f"{path}: {what} path is not a file", code="TLS_FILE_MISSING", hint=_INIT_HINT) from None
        if exc.errno == errno.EFBIG:
            raise ConfigError(
                f"{path}: larger than {MAX_PEM_BYTES >> 20} MiB, which no {what} file is",
                code="TLS_FILE_UNREADABLE",
                hint="check the path names the .pem or .key file",
            ) from None
        raise ConfigError(
            f"{path}: cannot read the {what} file ({exc.strerror})",
            code="TLS_FILE_UNREADABLE",
            hint="check the file's owner and permissions",
        ) from None


def _certificates(path: Path, data: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = load_certificates(data)
    except ValueError:
        hint = f"the {what} option takes a .pem certificate file"
        if b"PRIVATE KEY" in data:
            hint += "; this file looks like a private key"
        raise AuthError(f"{path}: not a PEM certificate", code="TLS_PEM_INVALID", hint=hint) from None
    return certs


def _private_key(path: Path, data: bytes) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise AuthError(
            f"{path}: the private key is encrypted; gRPC needs an unencrypted key",
            code="TLS_PEM_INVALID",
            hint="decrypt it (e.g. `openssl pkey -in KEY -out KEY.plain`) and keep it mode 0600",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        hint = "the key option takes the .key file issued with the certificate"
        if b"BEGIN CERTIFICATE" in data:
            hint += "; this file looks like a certificate"
        raise AuthError(f"{path}: not a PEM private key", code="TLS_PEM_INVALID", hint=hint) from None


def _check_dates(path: Path, cert: x509.Certificate, now: dt.datetime, hint: str) -> None:
    if now < cert.not_valid_before_utc:
        raise AuthError(
            f"{path}: certificate is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            code="TLS_CERT_NOT_YET_VALID",
            hint="check this machine's clock, or wait until then",
        )
    if now >= cert.not_valid_after_utc:
        raise AuthError(
            f"{path}: certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            code="TLS_CERT_EXPIRED",
            hint=hint,
        )


def _issued_by(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _federation(path: Path, cas: Sequence[x509.Certificate]) -> str:
    """The federation the CA certificates in ``path`` name (each must name it: PKI_CA_NO_FEDERATION if not)."""
    named = {federation_of(ca, str(path)) for ca in cas if _is_ca(ca)}
    if not named:
        raise AuthError(
            f"{path}: not a CA certificate",
            code="TLS_WRONG_CA",
            hint="the CA option takes the federation's ca.pem, not a node or person certificate",
        )
    if len(named) > 1:
        raise ConfigError(
            f"{path}: the CA certificates name different federations ({', '.join(sorted(named))})",
            code="PKI_FEDERATION_MISMATCH",
            hint="keep only the CA certificate of this federation in the file",
        )
    return named.pop()


def server_names(tls: TlsConfig) -> ServerNames:
    """The names of the federation whose CA ``tls`` trusts (read from the CA certificate file)."""
    return ServerNames(_federation(tls.ca, _certificates(tls.ca, _read(tls.ca, "CA certificate"), "CA (--ca)")))


def check_federation(tls: TlsConfig | None, federation: str, party: str) -> ServerNames | None:
    """The names of the federation the CA in ``tls`` names, which must be the catalog's ``federation``: a party
    would otherwise dial servers under one name and accept questions signed for another (PKI_FEDERATION_MISMATCH).
    None in insecure mode."""
    if tls is None:
        return None
    ca = _read(tls.ca, "CA certificate")
    return same_federation(tls.ca, _certificates(tls.ca, ca, "CA (--ca)"), federation, party)


def same_federation(path: Path, cas: Sequence[x509.Certificate], federation: str, party: str) -> ServerNames:
    """:func:`check_federation` of the CA certificates ``cas`` already read from ``path``."""
    names = ServerNames(_federation(path, cas))
    if names.federation != federation:
        raise ConfigError(
            f"{party}: the catalog is federation {federation!r}, the CA in {path} federation {names.federation!r}",
            code="PKI_FEDERATION_MISMATCH",
            hint="use the catalog and the CA of one federation",
        )
    return names


def _check_server_name(path: Path, leaf: x509.Certificate, names: ServerNames) -> None:
    """A server's certificate carries its own name and no other name of the federation's.

    Clients dial the name, so without it no client could reach this server; with another server's name it
    could pose as that server. The CA issues neither; this names the fix for a certificate issued before
    server names, and refuses one made outside the CA's issue path.
    """
    identity = identity_of(leaf)
    own = names.of(identity.kind, identity.region)
    if own is None:
        raise AuthError(
            f"{path}: a person's certificate may not be used by a server",
            code="TLS_WRONG_PURPOSE",
            hint="servers need a node or coordinator certificate",
        )
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(n).lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    others = sorted(n for n in dns if names.reserved(n) and n != own)
    if others:
        raise AuthError(
            f"{path}: the certificate carries another server's name ({', '.join(others)})",
            code="TLS_SERVER_MISNAMED",
            hint="the federation CA never issues such a certificate; re-issue it with `hpf pki issue`",
        )
    if own not in dns:
        raise AuthError(
            f"{path}: the certificate lacks its server name {own!r}, which clients dial",
            code="TLS_SERVER_UNNAMED",
            hint="re-issue it: `hpf pki init --dir DIR` re-issues certificates made before server names "
            "(or `hpf pki issue`)",
        )


def _check_purpose(path: Path, cert: x509.Certificate, purpose: Purpose) -> None:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    wanted = ExtendedKeyUsageOID.SERVER_AUTH if purpose == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    if wanted not in usages:
        raise AuthError(
            f"{path}: this certificate may not be used by a {purpose}",
            code="TLS_WRONG_PURPOSE",
            hint="servers need a node or coordinator certificate"
            if purpose == "server"
            else "issue a client certificate with `hpf pki issue`",
        )


def load_material(tls: TlsConfig, purpose: Purpose) -> TlsMaterial:
    """Read and check the CA, certificate and key; raise ConfigError/AuthError naming the file and fix (the first
    of :func:`material_problems`)."""
    material, check = _examine(tls, purpose)
    if check.problems:
        raise check.problems[0]
    assert material is not None
    return material


@dataclass(frozen=True)
class MaterialCheck:
    """Every problem of a party's certificate files, and the certificates that could be read and parsed (None
    for a file that could not: its problem is among ``problems``), so a caller need not read them again."""

    problems: list[ConfigError | AuthError]
    cas: list[x509.Certificate] | None
    chain: list[x509.Certificate] | None


def material_problems(tls: TlsConfig, purpose: Purpose) -> list[ConfigError | AuthError]:
    """Every problem of the CA, certificate and key, in the order :func:`load_material` checks them; a check that
    needs a file that cannot be read or parsed is left out (the file's own problem is listed)."""
    return check_material(tls, purpose).problems


def check_material(tls: TlsConfig, purpose: Purpose) -> MaterialCheck:
    """:func:`material_problems`, with the CA's and the certificate file's certificates as read (each file once)."""
    return _examine(tls, purpose)[1]


def _examine(tls: TlsConfig, purpose: Purpose) -> tuple[TlsMaterial | None, MaterialCheck]:
    problems: list[ConfigError | AuthError] = []

    def attempt(check: Callable[[], T]) -> T | None:
        try:
            return check()
        except (ConfigError, AuthError) as err:
            problems.append(err)
            return None

    ca_pem = attempt(lambda: _read(tls.ca, "CA certificate"))
    cert_pem = attempt(lambda: _read(tls.cert, "certificate"))
    key_pem = attempt(lambda: _read(tls.key, "private key"))
    cas = None if ca_pem is None else attempt(lambda: _certificates(tls.ca, ca_pem, "CA (--ca)"))
    chain = None if cert_pem is None else attempt(lambda: _certificates(tls.cert, cert_pem, "certificate (--cert)"))
    key = None if key_pem is None else attempt(lambda: _private_key(tls.key, key_pem))
    leaf = chain[0] if chain else None
    if leaf is not None and key is not None and not key_matches(leaf, key):
        problems.append(
            AuthError(
                f"{tls.key}: this key does not belong to the certificate {tls.cert}",
                code="TLS_KEY_MISMATCH",
                hint="use the .key file issued together with that .pem (same name), or re-issue both",
            )
        )
    now = dt.datetime.now(dt.UTC)
    new_ca = "make a new CA with `hpf pki init --dir DIR --federation NAME --force` (re-issues everything)"
    for ca in cas or []:
        attempt(lambda: _check_dates(tls.ca, ca, now, new_ca))  # noqa: B023 (called at once)
    if leaf is not None:
        attempt(lambda: _check_dates(tls.cert, leaf, now, _NEW_CERT_HINT))
    if cas is not None and not any(_is_ca(ca) for ca in cas):
        problems.append(
            AuthError(
                f"{tls.ca}: not a CA certificate",
                code="TLS_WRONG_CA",
                hint="the CA option takes the federation's ca.pem, not a node or person certificate",
            )
        )
    elif cas is not None and leaf is not None and not _issued_by(leaf, cas):
        problems.append(
            AuthError(
                f"{tls.cert}: certificate was not issued by the CA in {tls.ca}",
                code="TLS_WRONG_CA",
                hint="use the ca.pem of the federation that issued it, or issue a new certificate from this CA "
                "with `hpf pki issue`",
            )
        )
    if leaf is not None:
        attempt(lambda: _check_purpose(tls.cert, leaf, purpose))
        if purpose == "server" and cas is not None and any(_is_ca(ca) for ca in cas):
            attempt(lambda: _check_server_name(tls.cert, leaf, ServerNames(_federation(tls.ca, cas))))
    check = MaterialCheck(problems, cas, chain)
    if problems or ca_pem is None or cert_pem is None or key_pem is None:
        return None, check
    return TlsMaterial(ca=ca_pem, cert=cert_pem, key=key_pem), check
