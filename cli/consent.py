"""`hpf consent`: a consent service's commands (its key, granting a list of people, revoking grants).

    hpf consent keys --issuer shanghai-consent            # prints the catalog's `issuers:` entry
    hpf consent grant --input people.csv --to pki/people/bank.pem --purpose loan-review \\
        --facts duplicate_loans,loan_cities --days 30 --out tokens.csv
    hpf consent revoke GRANT-ID --list revocations.json   # regions re-read the list when it changes
    hpf consent serve --region shanghai --listen 127.0.0.1:50070 --ca ... --cert ... --key ...
                                                          # grants over gRPC, for the centre's own systems

See :mod:`federation.consent.tokens` for what a token holds, and :mod:`federation.consent.verifier` for how a region
checks it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from hpf.cli.errors import cli_errors

consent_app = typer.Typer(
    help="A consent service: its issuer key, grants to a bank for a purpose, and revocations.",
    no_args_is_help=True,
)

ISSUER_DIR = typer.Option(Path("consent-issuer"), "--dir", "-d", help="The issuer's folder (issuer.key, issuer.yaml)")


@consent_app.command("keys")
@cli_errors
def keys(
    issuer: str | None = typer.Option(None, "--issuer", help="The issuer's id, for a new key (e.g. shanghai-consent)"),
    folder: Path = ISSUER_DIR,
) -> None:
    """Make the issuer's Ed25519 key if missing, and print its entry for the catalog's `issuers:` section."""
    from hpf.federation.consent.issuer import make_issuer

    made, new = make_issuer(folder, issuer)
    typer.echo(f"# consent issuer {made.id}: add this entry under `issuers:` in the catalog")
    typer.echo(made.catalog_entry(), nl=False)
    typer.echo(f"issuer {made.id}: key {'made' if new else 'kept'} in {folder.resolve()}", err=True)


@consent_app.command("grant")
@cli_errors
def grant(
    input_csv: Path = typer.Option(..., "--input", "-i", help="CSV of people with a person_id column"),
    to: str = typer.Option(..., "--to", help="The grantee: its certificate (PEM) or sha256:HEX of its public key"),
    purpose: str = typer.Option(..., "--purpose", help="The purpose consented to, e.g. loan-review"),
    facts: str = typer.Option(..., "--facts", help="Comma-separated facts: duplicate_loans, loan_cities, ..."),
    days: int = typer.Option(..., "--days", help="Days the consent holds"),
    out: Path = typer.Option(..., "--out", "-o", help="Write row, other columns, grant_id and consent_token here"),
    folder: Path = ISSUER_DIR,
) -> None:
    """One signed consent token per person of the input, for one grantee, purpose and set of facts."""
    from hpf.federation.consent.issuer import grant_csv, grantee_from, grantee_text, load_issuer

    issuer = load_issuer(folder)
    grantee = grantee_from(to)
    wanted = [f.strip() for f in facts.split(",") if f.strip()]
    done = grant_csv(issuer, input_csv, out, grantee=grantee, purpose=purpose, facts=wanted, days=days)
    typer.echo(f"granted: {done.count} consent(s) in {done.batches} signed batch(es) by {issuer.id}")
    typer.echo(f"grantee: {grantee_text(grantee)}")
    typer.echo(f"terms:   {purpose}: {', '.join(wanted)} until {done.not_after.isoformat()}")
    typer.echo(f"tokens:  {out}")


@consent_app.command("revoke")
@cli_errors
def revoke(
    grants: list[str] = typer.Argument(..., help="Grant ids (32 hex digits) or consent tokens"),
    list_path: Path = typer.Option(..., "--list", help="The issuer's revocation list (made if missing)"),
    folder: Path = ISSUER_DIR,
) -> None:
    """Add grants to the issuer's signed revocation list, under the next number; regions re-read it."""
    from hpf.federation.consent.issuer import grant_ids_from, load_issuer
    from hpf.federation.consent.revocations import revoke as revoke_grants

    issuer = load_issuer(folder)
    ids = grant_ids_from(grants)
    listed = revoke_grants(list_path, issuer.key, issuer.id, ids)
    typer.echo(f"revoked: {len(set(ids))} grant(s); {len(listed.revoked)} in all")
    typer.echo(f"list:    {list_path} (number {listed.number})")


@consent_app.command("serve")
@cli_errors
def serve(
    region: str = typer.Option(..., "--region", help="The centre whose systems may ask (their certificates' region)"),
    listen: str = typer.Option("127.0.0.1:50070", "--listen", help="Address to serve on (host:port)"),
    ca: Path | None = typer.Option(None, "--ca", help="The federation CA certificate"),
    cert: Path | None = typer.Option(None, "--cert", help="This service's certificate (a server certificate)"),
    key: Path | None = typer.Option(None, "--key", help="Its private key"),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext without TLS: local development only"),
    folder: Path = ISSUER_DIR,
) -> None:
    """Grant over gRPC (hpf.consent.v1.ConsentIssuer/Grant) to the centre's own systems, until stopped."""
    import logging
    import signal
    import threading

    from hpf.federation.consent.issuer import load_issuer
    from hpf.federation.consent.service import GrantHandler, serving
    from hpf.federation.trust.tls import tls_from_options

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tls = tls_from_options(ca, cert, key, insecure)
    issuer = load_issuer(folder)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with serving(GrantHandler(issuer, region), listen, tls) as port:
        typer.echo(f"consent service {issuer.id} serving {region}'s systems on port {port}", err=True)
        stop.wait()


def register(app: typer.Typer) -> None:
    """Add the `consent` group to the root `hpf` app."""
    app.add_typer(consent_app, name="consent")
