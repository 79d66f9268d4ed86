"""Mutual TLS for every gRPC server and channel in the federation.

Secure by default: a party needs a CA certificate, its own certificate and its key. ``--insecure`` is
the only way to run without them, and it logs a warning. Half-given certificate options are an error.

Certificate files are checked before gRPC sees them, so a wrong path, a swapped key, an expired
certificate or a certificate from another federation gives a clear error with a stable code instead of
an opaque handshake failure:

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

Messages name the file and the fix; they never contain key material.

Servers are reached by name, not by address: the coordinator is ``coordinator.<federation>`` and node ``<id>``
is ``<id>.node.<federation>``, names the CA writes only into that server's certificate (:mod:`federation.trust.pki`).
A party takes the federation's name from the CA certificate in its own TLS config, so it knows whom it dials
before any byte is sent, and opens every channel with :func:`coordinator_target` or :func:`node_target` as the
TLS target name: the handshake refuses any other certificate of the federation, e.g. a node's certificate on a
server posing as the coordinator. A server refuses to start with a certificate that lacks its own name.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from hpf.federation.config_files import resolve_path
from hpf.federation.errors import AuthError, ConfigError
from hpf.federation.trust import pki

log = logging.getLogger("hpf.tls")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GRPC_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)

_INIT_HINT = "run `hpf pki init --dir DIR --federation NAME` to create the federation's certificates, or fix the path"
_NEW_CERT_HINT = "issue a new certificate with `hpf pki issue` (or `hpf pki init` for a new federation)"

Purpose = Literal["server", "client"]


class TlsConfig(BaseModel):
    """Where a party's CA certificate, own certificate and key live (relative paths: from the YAML file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca: Path
    cert: Path
    key: Path

    @field_validator("ca", "cert", "key")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)


class PartySettings(BaseModel):
    """The part of every party's config that says how it talks: mutual TLS, or explicitly insecure."""

    model_config = ConfigDict(extra="forbid")

    tls: TlsConfig | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> PartySettings:
        if self.tls is None and not self.insecure:
            raise ValueError(
                "give 'tls: {ca, cert, key}' (run `hpf pki init`), or 'insecure: true' for local development"
            )
        if self.tls is not None and self.insecure:
            raise ValueError("'tls' and 'insecure: true' are both given; drop one")
        return self


@dataclass(frozen=True)
class TlsMaterial:
    """Checked PEM bytes, ready for gRPC. The key never appears in a repr."""

    ca: bytes
    cert: bytes
    key: bytes = field(repr=False)


def require_tls(tls: TlsConfig | None, insecure: bool, *, source: str = "the options") -> TlsConfig | None:
    """Enforce "TLS unless explicitly insecure" for an owning config; warns when insecure."""
    if tls is not None and insecure:
        raise ConfigError(
            f"{source}: certificates and insecure mode are both given",
            code="TLS_OPTIONS_CONFLICT",
            hint="drop --insecure (or `insecure: true`) to use the certificates",
        )
    if tls is None and not insecure:
        raise ConfigError(
            f"{source}: no TLS certificates given",
            code="TLS_REQUIRED",
            hint="give --ca, --cert and --key (run `hpf pki init --dir DIR --federation NAME` to make them), "
            "or --insecure for local development only",
        )
    if insecure:
        log.warning(
            "TLS is off (insecure mode): gRPC traffic is unencrypted and unauthenticated; "
            "use this for local development only"
        )
    return tls


def tls_from_options(
    ca: Path | str | None, cert: Path | str | None, key: Path | str | None, insecure: bool = False
) -> TlsConfig | None:
    """Turn command-line ``--ca/--cert/--key/--insecure`` into a TlsConfig, or None when insecure."""
    given = {"--ca": ca, "--cert": cert, "--key": key}
    missing = [name for name, value in given.items() if value is None]
    if missing and len(missing) < len(given):
        raise ConfigError(
            f"incomplete certificate options: {', '.join(missing)} missing",
            code="TLS_OPTIONS_INCOMPLETE",
            hint="give all of --ca, --cert and --key (or none of them, with --insecure)",
        )
    tls = None if missing else TlsConfig(ca=Path(str(ca)), cert=Path(str(cert)), key=Path(str(key)))
    return require_tls(tls, insecure)


def _read(path: Path, what: str) -> bytes:
    if not path.exists():
        raise ConfigError(f"{path}: {what} file not found", code="TLS_FILE_MISSING", hint=_INIT_HINT)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} path is not a file", code="TLS_FILE_MISSING", hint=_INIT_HINT)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the {what} file ({exc.strerror})",
            code="TLS_FILE_UNREADABLE",
            hint="check the file's owner and permissions",
        ) from None


def _certificates(path: Path, data: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = pki.load_certificates(data)
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
    named = {pki.federation_of(ca, str(path)) for ca in cas if _is_ca(ca)}
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


def server_names(tls: TlsConfig) -> pki.ServerNames:
    """The names of the federation whose CA ``tls`` trusts (read from the CA certificate file)."""
    return pki.ServerNames(_federation(tls.ca, _certificates(tls.ca, _read(tls.ca, "CA certificate"), "CA (--ca)")))


def check_federation(tls: TlsConfig | None, federation: str, party: str) -> pki.ServerNames | None:
    """The names of the federation the CA in ``tls`` names, which must be the catalog's ``federation``: a party
    would otherwise dial servers under one name and accept questions signed for another (PKI_FEDERATION_MISMATCH).
    None in insecure mode."""
    if tls is None:
        return None
    names = server_names(tls)
    if names.federation != federation:
        raise ConfigError(
            f"{party}: the catalog is federation {federation!r}, the CA in {tls.ca} federation {names.federation!r}",
            code="PKI_FEDERATION_MISMATCH",
            hint="use the catalog and the CA of one federation",
        )
    return names


def coordinator_target(tls: TlsConfig | None) -> str | None:
    """The TLS target name for dialling the coordinator (None in insecure mode: nothing to check)."""
    return server_names(tls).coordinator if tls is not None else None


def node_target(tls: TlsConfig | None, node_id: str) -> str | None:
    """The TLS target name for dialling node ``node_id`` (None in insecure mode: nothing to check)."""
    return server_names(tls).node(node_id) if tls is not None else None


def _check_server_name(path: Path, leaf: x509.Certificate, names: pki.ServerNames) -> None:
    """A server's certificate carries its own name and no other name of the federation's.

    Clients dial the name, so without it no client could reach this server; with another server's name it
    could pose as that server. The CA issues neither; this names the fix for a certificate issued before
    server names, and refuses one made outside the CA's issue path.
    """
    identity = pki.identity_of(leaf)
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
    """Read and check the CA, certificate and key; raise ConfigError/AuthError naming the file and fix."""
    ca_pem = _read(tls.ca, "CA certificate")
    cert_pem = _read(tls.cert, "certificate")
    key_pem = _read(tls.key, "private key")
    cas = _certificates(tls.ca, ca_pem, "CA (--ca)")
    chain = _certificates(tls.cert, cert_pem, "certificate (--cert)")
    key = _private_key(tls.key, key_pem)
    leaf = chain[0]
    if not pki.key_matches(leaf, key):
        raise AuthError(
            f"{tls.key}: this key does not belong to the certificate {tls.cert}",
            code="TLS_KEY_MISMATCH",
            hint="use the .key file issued together with that .pem (same name), or re-issue both",
        )
    now = dt.datetime.now(dt.UTC)
    for ca in cas:
        _check_dates(
            tls.ca,
            ca,
            now,
            "make a new CA with `hpf pki init --dir DIR --federation NAME --force` (re-issues everything)",
        )
    _check_dates(tls.cert, leaf, now, _NEW_CERT_HINT)
    if not any(_is_ca(ca) for ca in cas):
        raise AuthError(
            f"{tls.ca}: not a CA certificate",
            code="TLS_WRONG_CA",
            hint="the CA option takes the federation's ca.pem, not a node or person certificate",
        )
    if not _issued_by(leaf, cas):
        raise AuthError(
            f"{tls.cert}: certificate was not issued by the CA in {tls.ca}",
            code="TLS_WRONG_CA",
            hint="use the ca.pem of the federation that issued it, or issue a new certificate from this CA "
            "with `hpf pki issue`",
        )
    _check_purpose(tls.cert, leaf, purpose)
    if purpose == "server":
        _check_server_name(tls.cert, leaf, pki.ServerNames(_federation(tls.ca, cas)))
    return TlsMaterial(ca=ca_pem, cert=cert_pem, key=key_pem)


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate from the federation CA."""
    m = load_material(tls, "server")
    return grpc.ssl_server_credentials([(m.key, m.cert)], root_certificates=m.ca, require_client_auth=True)


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    """Channel credentials presenting our certificate and trusting only the federation CA."""
    m = load_material(tls, "client")
    return grpc.ssl_channel_credentials(root_certificates=m.ca, private_key=m.key, certificate_chain=m.cert)


def peer_identity(context: grpc.ServicerContext) -> pki.Identity | None:
    """The verified client certificate's identity, or None on a connection without one (insecure).

    Raises AuthError (``IDENTITY_MISSING`` / ``IDENTITY_INVALID`` / ``IDENTITY_INCONSISTENT``) when the
    certificate carries no usable hpf identity.
    """
    pems = list(context.auth_context().get("x509_pem_cert") or ())
    if not pems:
        return None
    return _identity_of(bytes(pems[0]))


@lru_cache(maxsize=256)
def _identity_of(pem: bytes) -> pki.Identity:
    """A peer's identity, parsed once per certificate (a party sees the same few peers on every call)."""
    return pki.read_identity(pem)


def secure_channel(
    address: str,
    tls: TlsConfig | grpc.ChannelCredentials | None,
    *,
    options: Sequence[tuple[str, Any]] = GRPC_OPTIONS,
    server_name: str | None = None,
) -> grpc.Channel:
    """A channel to ``address``: mutual TLS, or plaintext when ``tls`` is None (insecure mode).

    ``tls`` may be credentials already built by :func:`channel_credentials`, so a party opening many channels
    reads and checks its certificate files once. ``server_name`` is the name the server's certificate must
    carry in place of the address's host: the federation's parties always pass the server's name
    (:func:`coordinator_target`, :func:`node_target`), so only that server's certificate is accepted.
    """
    credentials, opts = _dialling(tls, options, server_name)
    if credentials is None:
        return grpc.insecure_channel(address, options=opts)
    return grpc.secure_channel(address, credentials, options=opts)


def secure_aio_channel(
    address: str,
    tls: TlsConfig | grpc.ChannelCredentials | None,
    *,
    options: Sequence[tuple[str, Any]] = GRPC_OPTIONS,
    server_name: str | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """:func:`secure_channel` for asyncio: created on the event loop it is used from."""
    credentials, opts = _dialling(tls, options, server_name)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=opts, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=opts, interceptors=interceptors)


def _dialling(
    tls: TlsConfig | grpc.ChannelCredentials | None, options: Sequence[tuple[str, Any]], server_name: str | None
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, Any]]]:
    """The credentials (None: plaintext) and options a channel is dialled with."""
    opts = list(options)
    if tls is None:
        return None, opts
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return (channel_credentials(tls) if isinstance(tls, TlsConfig) else tls), opts


def with_options(base: Sequence[tuple[str, Any]], **overrides: Any) -> tuple[tuple[str, Any], ...]:
    """``base`` with some options replaced (gRPC takes the first value of a repeated option).

    Keyword names are option names without the ``grpc.`` prefix, e.g. ``max_receive_message_length=4 << 20``.
    """
    replaced = {f"grpc.{k}": v for k, v in overrides.items()}
    kept = tuple((k, v) for k, v in base if k not in replaced)
    return kept + tuple(replaced.items())


def new_server(
    *,
    max_workers: int = 16,
    options: Sequence[tuple[str, Any]] = GRPC_OPTIONS,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> grpc.Server:
    """A gRPC server with the federation's message-size limits."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), options=list(options), interceptors=list(interceptors)
    )


def new_aio_server(
    *, options: Sequence[tuple[str, Any]] = GRPC_OPTIONS, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
) -> grpc.aio.Server:
    """An asyncio gRPC server with the federation's message-size limits (created on the loop it serves from)."""
    return grpc.aio.server(options=list(options), interceptors=list(interceptors))


def add_port(server: grpc.Server | grpc.aio.Server, address: str, tls: TlsConfig | None) -> int:
    """Bind ``address`` (port 0 picks a free one) with mutual TLS, or plaintext if ``tls`` is None."""
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(tls))
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(
            f"cannot listen on {address}",
            code="SERVER_BIND_FAILED",
            hint="check the address (host:port) and that no other process holds the port",
        )
    return port
