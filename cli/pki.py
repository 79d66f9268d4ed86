"""`hpf pki`: make the federation CA and issue node, coordinator and person certificates.

The CA names the federation (``hpf pki init --federation NAME``, the catalog's name), and every server
certificate it issues carries that server's name under it: ``coordinator.NAME``, ``<node id>.node.NAME``.
Parties dial servers by those names, so a certificate answers only for the server it was issued to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, cast

import typer

from hpf.federation.errors import AuthError, ConfigError, FederationError

pki_app = typer.Typer(
    name="pki",
    help="Create the federation CA and issue certificates (mutual TLS identities).",
    no_args_is_help=True,
)


@contextmanager
def _errors() -> Iterator[None]:
    """Print a FederationError as one line on stderr and exit 2."""
    try:
        yield
    except FederationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def parse_person(text: str) -> tuple[str, str, str | None]:
    """``NAME:ROLE[:REGION]`` -> ``(name, role, region)``."""
    from hpf.federation.trust import certificates

    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(
            f"--person {text!r}: expected NAME:ROLE or NAME:ROLE:REGION",
            code="CLI_BAD_OPTION",
            hint=f"roles: {', '.join(certificates.ROLES)}; e.g. --person alice:analyst:hangzhou",
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def parse_nodes(text: str) -> list[str]:
    """``a,b,c`` -> ``["a", "b", "c"]`` (blanks ignored, order kept, duplicates dropped)."""
    return list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


@pki_app.command("init")
def init_command(
    directory: Annotated[Path, typer.Option("--dir", help="Folder for the CA and all certificates.")],
    federation: Annotated[
        str | None,
        typer.Option(
            "--federation",
            help="The federation's name, as the catalog's `federation:` (needed for a new CA; servers are named "
            "coordinator.NAME and NODE.node.NAME).",
        ),
    ] = None,
    nodes: Annotated[str, typer.Option("--nodes", help="Comma-separated node ids: shanghai,hangzhou.")] = "",
    person: Annotated[
        list[str] | None,
        typer.Option("--person", help="NAME:ROLE[:REGION], repeatable (default caseworker:caseworker)."),
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host", help="Server host name or IP, repeatable (default localhost, 127.0.0.1), besides its name."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the CA and re-issue everything.")] = False,
) -> None:
    """Create (or complete) a federation: CA, coordinator, one certificate per node, and people."""
    from hpf.federation.trust import pki, server_names

    with _errors():
        clients = [parse_person(p) for p in person] if person else pki.DEFAULT_CLIENTS
        hosts = tuple(host) if host else server_names.DEFAULT_HOSTS
        result = pki.init_federation(
            directory, parse_nodes(nodes), federation=federation, clients=clients, hosts=hosts, force=force
        )
        created = set(result["created"])
        fed = result["federation"]
        typer.echo(f"federation {fed} (servers are named coordinator.{fed} and <node id>.node.{fed})")

        def line(label: str, path: Path) -> None:
            typer.echo(f"{'new ' if path in created else 'kept'}  {label:<28} {path}")

        line("CA", result["ca"].cert)
        line("coordinator", result["coordinator"].cert)
        for node_id, files in result["nodes"].items():
            line(f"node {node_id}", files.cert)
        for name, files in result["people"].items():
            line(f"person {name}", files.cert)
        typer.echo(f"{len(created)} certificate(s) written; keys are mode 0600 next to each .pem")


@pki_app.command("issue")
def issue_command(
    ca_dir: Annotated[Path, typer.Option("--ca-dir", help="Folder holding ca.pem and ca.key.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write NAME.pem and NAME.key into.")],
    name: Annotated[str, typer.Option("--name", help="Common name, also the file name.")],
    kind: Annotated[str, typer.Option("--kind", help="node, coordinator or person.")],
    role: Annotated[str | None, typer.Option("--role", help="Person role.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="Home region.")] = None,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Host name or IP for a node/coordinator, repeatable, besides its name."),
    ] = None,
    valid_days: Annotated[int, typer.Option("--valid-days", help="Validity in days.")] = 825,
) -> None:
    """Issue one certificate from an existing CA (a node's --region is its node id, which names it)."""
    from hpf.federation.trust import certificates, pki

    with _errors():
        if kind not in certificates.KINDS:
            raise ConfigError(f"--kind {kind!r}: use one of {', '.join(certificates.KINDS)}", code="PKI_BAD_KIND")
        files = pki.issue_certificate(
            ca_dir,
            out,
            name,
            cast(certificates.Kind, kind),
            hosts=host or (),
            role=role,
            region=region,
            valid_days=valid_days,
        )
        typer.echo(f"certificate: {files.cert}")
        typer.echo(f"key:         {files.key} (mode 0600)")
        typer.echo(f"ca:          {files.ca}")


def describe(cert_pem: bytes, now: dt.datetime | None = None) -> list[tuple[str, str]]:
    """Label/value lines describing a certificate's identity and validity (no key material)."""
    from cryptography import x509

    from hpf.federation.trust import certificates, server_names

    try:
        cert = certificates.load_certificate(cert_pem)
    except ValueError:
        raise AuthError("not a PEM certificate", code="TLS_PEM_INVALID") from None
    now = now or dt.datetime.now(dt.UTC)
    rows: list[tuple[str, str]] = [("subject", cert.subject.rfc4514_string())]
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        rows.append(("kind", "CA"))
        try:
            rows.append(("federation", server_names.federation_of(cert)))
        except FederationError as exc:
            rows.append(("federation", f"{exc.message} [{exc.code}]"))
    else:
        try:
            ident = certificates.read_identity(cert_pem)
            rows += [
                ("common name", ident.common_name),
                ("kind", ident.kind),
                ("role", ident.role or "-"),
                ("region", ident.region or "-"),
            ]
        except AuthError as exc:
            rows.append(("identity", f"{exc.message} [{exc.code}]"))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        rows.append(("hosts", ", ".join(str(n.value) for n in san)))
    except x509.ExtensionNotFound:
        pass
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        status = "NOT YET VALID"
    elif now >= end:
        status = "EXPIRED"
    else:
        status = f"valid ({(end - now).days} days left)"
    rows += [
        ("issuer", cert.issuer.rfc4514_string()),
        ("serial", f"{cert.serial_number:x}"),
        ("valid from", f"{start:%Y-%m-%d %H:%M} UTC"),
        ("valid until", f"{end:%Y-%m-%d %H:%M} UTC"),
        ("status", status),
    ]
    return rows


@pki_app.command("show")
def show_command(file: Annotated[Path, typer.Argument(help="A .pem certificate file.")]) -> None:
    """Print a certificate's identity and validity."""
    with _errors():
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read ({exc.strerror})", code="TLS_FILE_MISSING") from None
        if b"PRIVATE KEY" in data and b"CERTIFICATE" not in data:
            raise AuthError(
                f"{file}: this is a private key, not a certificate",
                code="TLS_PEM_INVALID",
                hint="show the .pem file next to it",
            )
        try:
            rows = describe(data)
        except AuthError as exc:
            raise AuthError(f"{file}: {exc.message}", code=exc.code) from None
        for label, value in rows:
            typer.echo(f"{label + ':':<13}{value}")


def _number(crl: Path) -> int | None:
    """The number of the list just written (parties refuse any list numbered below the newest they accepted)."""
    from cryptography import x509

    from hpf.federation.trust import revocation

    return revocation.crl_number(x509.load_pem_x509_crl(crl.read_bytes()))


REASONS = ("unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation")


@pki_app.command("revoke")
def revoke_command(
    ca_dir: Annotated[Path, typer.Option("--ca-dir", help="Folder holding ca.pem and ca.key (and crl.pem).")],
    cert: Annotated[Path, typer.Argument(help="The certificate (.pem) to revoke.")],
    reason: Annotated[str, typer.Option("--reason", help=f"One of: {', '.join(REASONS)}.")] = "unspecified",
) -> None:
    """Add a certificate to the federation's revocation list (crl.pem); parties re-read it when it changes."""
    from cryptography import x509

    from hpf.federation.trust import certificates, revocation

    with _errors():
        if reason not in REASONS:
            raise ConfigError(f"--reason {reason!r}: use one of {', '.join(REASONS)}", code="CLI_BAD_OPTION")
        try:
            data = cert.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{cert}: cannot read ({exc.strerror})", code="TLS_FILE_MISSING") from None
        identity = certificates.read_identity(data)
        path = revocation.revoke(ca_dir, data, reason=x509.ReasonFlags(reason))
        typer.echo(f"revoked:     {identity.common_name} (serial {identity.serial:x})")
        typer.echo(f"list:        {path} (number {_number(path)})")
        typer.echo("             name it as `revocations:` in node and coordinator configs")


@pki_app.command("crl")
def crl_command(
    ca_dir: Annotated[Path, typer.Option("--ca-dir", help="Folder holding ca.pem and ca.key (and crl.pem).")],
) -> None:
    """Sign the next revocation list from the CA's own record: the same revocations, the next number, a next update
    30 days ahead. An older list copied over crl.pem is replaced, never re-signed."""
    from hpf.federation.trust import revocation

    with _errors():
        newest = revocation.newest_crl_in_place(ca_dir)
        path = revocation.refresh(ca_dir)
        typer.echo(f"list:        {path} (re-signed as number {_number(path)}; parties re-read it when it changes)")
        if not newest:
            typer.echo(
                "note:        crl.pem was not the newest list this CA signed (an older one put back?); the new list "
                "holds every certificate the CA's record says it revoked",
                err=True,
            )


def register(app: typer.Typer) -> None:
    """Add the `pki` group to the root `hpf` app."""
    app.add_typer(pki_app, name="pki")
