"""`hpf query`: one federated aggregate query, answered encrypted and decrypted only here."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

import typer

from hpf.cli.errors import cli_errors
from hpf.cli.output import answer_notes, render


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


@cli_errors
def query(
    sql: str = typer.Argument(..., help='Federated SQL, e.g. "SELECT city_code, COUNT(*) FROM accounts GROUP BY 1"'),
    profile: Path = typer.Option(..., "--profile", "-p", help="Client profile (client.yaml)"),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format"),
    deadline_ms: int = typer.Option(0, "--deadline-ms", help="How long the regions may take (0: the profile's)"),
    timings: bool = typer.Option(False, "--timings", help="Print a per-stage timing breakdown to stderr"),
    purpose: str | None = typer.Option(None, "--purpose", help="Purpose code, e.g. loan-review (default: profile's)"),
    consent: str | None = typer.Option(None, "--consent", help="Reference of the applicant's consent record"),
    explain: bool = typer.Option(
        False, "--explain", help="Show the partial plan and each region's policy verdict; run nothing"
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext without TLS: local development only"),
) -> None:
    """Run one federated aggregate query and print the federation-wide answer."""
    from hpf.client.federation_client import FederationClient
    from hpf.client.profile import load_profile

    if insecure:
        logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    with FederationClient(load_profile(profile, insecure=insecure)) as client:
        if explain:
            from hpf.cli.explain_output import render_explain

            plan, reply = client.explain(sql, purpose=purpose, consent=consent)
            typer.echo(render_explain(plan, reply, fmt.value))
            if not all(v.accepted for v in reply.verdicts):
                raise typer.Exit(4)
            return
        answer = client.query(sql, deadline_ms=deadline_ms or None, purpose=purpose, consent=consent)
    typer.echo(render(answer, fmt.value))
    if answer.missing and fmt != Format.table:
        for m in answer.missing:
            typer.echo(f"warning: region {m['node_id']} is not in the answer ({m['code']})", err=True)
    if fmt == Format.csv:  # a table prints these under the rows; JSON carries withheld_groups, privacy, verified
        for note in answer_notes(answer):
            typer.echo(f"warning: {note}", err=True)
    if timings:
        typer.echo(" ".join(f"{k}={v:.1f}" for k, v in answer.timings.items()), err=True)


def register(app: typer.Typer) -> None:
    app.command("query")(query)
