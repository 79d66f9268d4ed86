"""The names a federation's servers are reached by, and the host names a server certificate may carry.

The CA names its federation: the identity extension (:data:`federation.trust.certificates.IDENTITY_OID`) on the
CA certificate holds ``{"federation": <name>, "kind": "ca", "v": 1}``. Every party already holds the CA
certificate (it is in its TLS config), so it knows the federation's server names before it connects, catalog
or not:

- the coordinator is ``coordinator.<federation>``;
- node ``<id>`` is ``<id>.node.<federation>``.

The CA writes each name only into the certificate of that kind and id, and refuses any other name under the
federation's (``<federation>`` itself or anything ending in ``.<federation>``) as a host or common name.
Every party dials a server with its name as the TLS target (:func:`federation.trust.channels.coordinator_target`,
:func:`federation.trust.channels.node_target`), so the handshake itself refuses any other certificate of the
federation: a node's certificate cannot pose as the coordinator, nor as another node. Server certificates also
carry the operator's own host names and addresses (``hosts``, default localhost and 127.0.0.1) for other tools;
the federation's parties never check those. Federation names and node ids are DNS names: lower-case letters,
digits and ``-`` (and ``.`` between a federation name's labels).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from cryptography import x509

from hpf.federation.errors import AuthError, ConfigError
from hpf.federation.trust.certificates import IDENTITY_OID, check_whole, parse_der_utf8

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")

# Every name is matched whole (re.fullmatch): "$" would also match before a trailing newline.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # one DNS label (RFC 1123), lower case
_NODE_ID = re.compile(_LABEL)
_FEDERATION = re.compile(rf"(?=.{{1,128}}\Z){_LABEL}(?:\.{_LABEL})*")  # leaves room for "<node id>.node."
_HOST = re.compile(r"[A-Za-z0-9*._-]+")

_NO_FEDERATION_HINT = (
    "this CA was made before CAs named their federation; make a new one with "
    "`hpf pki init --dir DIR --federation NAME --force` (NAME: the catalog's `federation:`), "
    "which re-issues every certificate, and hand the new ones out"
)


def check_federation_name(name: str) -> str:
    """``name`` if it can name a federation's servers (DNS labels joined by dots), else PKI_BAD_FEDERATION."""
    return check_whole(
        name,
        _FEDERATION,
        what="federation name",
        rule="lower-case letters, digits and '-', labels joined by '.', at most 128 characters (e.g. 'yrd-demo')",
        code="PKI_BAD_FEDERATION",
        hint="it is the catalog's `federation:`; the servers' names end in it",
    )


def check_node_id(node_id: str) -> str:
    """``node_id`` if it is a DNS label (it becomes ``<id>.node.<federation>``), else PKI_BAD_NODE_ID."""
    return check_whole(
        node_id,
        _NODE_ID,
        what="node id",
        rule="lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit "
        "(e.g. 'taizhou-js')",
        code="PKI_BAD_NODE_ID",
    )


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
        fields = json.loads(parse_der_utf8(cast(x509.UnrecognizedExtension, ext).value))
        if fields["kind"] != "ca":
            raise ValueError("not a CA's identity")
        return check_federation_name(fields["federation"])
    except (ValueError, KeyError, TypeError, ConfigError):
        raise AuthError(f"{where}: its federation name is malformed", code="IDENTITY_INVALID") from None


def server_hosts(names: ServerNames, kind: str, region: str | None, hosts: Sequence[str]) -> list[str]:
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


def san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([_host_name(host) for host in dict.fromkeys(hosts)])
