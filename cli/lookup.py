"""`hpf lookup` and `hpf screen`: federation-wide facts about people, their identifiers sealed to each region.

A caseworker looks up one applicant; a bank or housing platform screens a CSV of applicants for housing
loans in two or more cities. Identifiers are checked here before anything is sent, then sealed to each
region separately: the coordinator never sees them. Figures are federation-wide unless every region's policy
allows a per-city answer for the purpose (``--by-city``).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import typer

from hpf.cli.errors import cli_errors
from hpf.cli.output import TableFormat, regions_line, text_table
from hpf.federation.errors import PolicyViolation

if TYPE_CHECKING:
    from hpf.client.answers import LookupAnswer
    from hpf.federation.crypto.lookup_codec import PersonFacts

# the client's LOOKUP_BATCH, written out so that `hpf screen --help` need not load the client (a test keeps the
# two equal)
DEFAULT_BATCH = 4550
TOKEN_COLUMN = "consent_token"  # the column of an applicants file that holds each one's consent token


class ScreenFormat(str, Enum):
    csv = "csv"
    json = "json"


class Check(str, Enum):
    duplicate_loans = "duplicate-loans"
    facts = "facts"


def _yuan(fen: int | None) -> str:
    return "unavailable" if fen is None else f"¥{Decimal(fen).scaleb(-2):,.2f}"


def _count(value: int | None) -> str:
    return "unavailable" if value is None else f"{value:,}"


FACTS_HELP = (
    "Facts to ask for, comma-separated: duplicate_loans, loan_cities, balance, contributions, accounts, loans "
    "(default: what the purpose needs for your role: duplicate_loans,loan_cities for a bank's loan-review, every "
    "fact otherwise). Each region's policy and each consent token must allow every one"
)


def parse_facts(text: str | None) -> list[str] | None:
    """``--facts`` as a list (None: the default for the role and purpose); the client checks the names."""
    return None if text is None else [f.strip() for f in text.split(",") if f.strip()]


def _fact_rows(f: PersonFacts, facts: tuple[str, ...]) -> list[list[str]]:
    """The rows of the facts asked for, and no others."""
    rows = []
    if "accounts" in facts:
        # a city counts once however many accounts it holds: one may hold an active and a sealed account, another
        # only closed ones, so the two lines below need not add up to the first
        rows += [
            ["cities with an account", str(f.cities)],
            ["  with an active account", str(f.cities_active)],
            ["  with a sealed account", str(f.cities_sealed)],
        ]
    if "contributions" in facts:
        rows += [["contribution months", _count(f.contribution_months)], ["contributions", _yuan(f.contribution_fen)]]
    if "balance" in facts:
        rows.append(["balance", _yuan(f.balance_fen)])
    if "loans" in facts:
        rows += [
            ["housing loans", f"{_count(f.active_loans)} active, {_count(f.overdue_loans)} overdue"],
            ["outstanding", _yuan(f.outstanding_fen)],
        ]
    if "loan_cities" in facts:
        rows.append(["cities with an open loan", str(f.loan_cities)])
    if "duplicate_loans" in facts:
        rows.append(["open loans in two or more cities", "YES" if f.duplicate_loans else "no"])
    return rows


# the by-city table's columns: heading, the fact it shows, and how
_CITY_COLUMNS: tuple[tuple[str, str, Callable[[PersonFacts], str]], ...] = (
    ("active/sealed", "accounts", lambda f: f"{f.cities_active}/{f.cities_sealed}"),
    ("months", "contributions", lambda f: _count(f.contribution_months)),
    ("contributions", "contributions", lambda f: _yuan(f.contribution_fen)),
    ("balance", "balance", lambda f: _yuan(f.balance_fen)),
    ("loans a/o", "loans", lambda f: f"{_count(f.active_loans)}/{_count(f.overdue_loans)}"),
    ("outstanding", "loans", lambda f: _yuan(f.outstanding_fen)),
    ("open loan", "loan_cities", lambda f: "yes" if f.loan_cities else "no"),
)


def _regions_line(answer: LookupAnswer) -> str:
    return regions_line(answer.answered, answer.missing, len(answer.regions), " -- the figures leave these regions out")


def _failed_note(facts: PersonFacts) -> str | None:
    if facts.failed_regions:
        return (
            f"{facts.failed_regions} region(s) hold figures too large to add exactly; amounts and counts are "
            "unavailable (ask those centres directly)"
        )
    return None


def render_lookup(answer: LookupAnswer, fmt: str, excluded_home: str | None) -> str:
    facts, asked = answer.facts[0], answer.facts_asked
    if fmt == "json":
        doc: dict[str, Any] = {
            "facts": facts.shown(asked),
            "facts_asked": list(asked),
            "regions": {"asked": answer.regions, "answered": answer.answered, "missing": answer.missing},
            "complete": answer.complete,
        }
        if answer.by_city is not None:
            doc["by_city"] = {r: f.shown(asked) for r, f in answer.by_city[0].items()}
        return json.dumps(doc, ensure_ascii=False)
    scope = "federation-wide" if excluded_home is None else f"every region but {excluded_home}"
    before = [f"Facts about one person, {scope} (sealed lookup; the coordinator did not see the identifier)"]
    after = [_regions_line(answer)]
    note = _failed_note(facts)
    if note:
        after.append(note)
    out = text_table(["fact", "value"], _fact_rows(facts, asked), before=before, after=after)
    if answer.by_city is not None:
        shown = [c for c in _CITY_COLUMNS if c[1] in asked]
        rows = [
            [region, *(show(f) for _, _, show in shown)]
            for region, f in answer.by_city[0].items()
            if region in answer.answered
        ]
        columns = ["region", *(heading for heading, _, _ in shown)]
        out += "\n" + text_table(columns, rows, before=["By city (allowed by every region's policy for this purpose)"])
    return out


@cli_errors
def lookup(
    person_id: str = typer.Argument(..., help="18-character resident identity number"),
    profile: Path = typer.Option(..., "--profile", "-p", help="Client profile (client.yaml); it must pin the catalog"),
    purpose: str | None = typer.Option(None, "--purpose", help="Purpose code, e.g. loan-review (default: profile's)"),
    consent: str | None = typer.Option(None, "--consent", help="Reference of the person's consent record"),
    consent_token: Path | None = typer.Option(
        None, "--consent-token", help="A file holding the person's consent token (from `hpf consent grant`)"
    ),
    exclude_home: bool = typer.Option(False, "--exclude-home", help="Leave your own region out"),
    by_city: bool = typer.Option(
        False, "--by-city", help="Each city's figures, where every region's policy allows it for the purpose"
    ),
    facts: str | None = typer.Option(None, "--facts", help=FACTS_HELP),
    fmt: TableFormat = typer.Option(TableFormat.table, "--format", "-f", help="Output format"),
    timings: bool = typer.Option(False, "--timings", help="Print a per-stage timing breakdown to stderr"),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext without TLS: local development only"),
) -> None:
    """Look one person up across the federation: the facts asked for (accounts, contributions, balance, loans)."""
    from hpf.client.federation_client import FederationClient
    from hpf.client.lookups import check_person_ids
    from hpf.client.profile import load_profile

    if insecure:
        logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    check_person_ids([person_id])  # before anything else: a bad identifier is never sent
    tokens = None if consent_token is None else [_token_file(consent_token)]
    with FederationClient(load_profile(profile, insecure=insecure)) as client:
        answer = client.lookup(
            [person_id],
            purpose=purpose,
            consent=consent,
            exclude_home=exclude_home,
            by_city=by_city,
            tokens=tokens,
            facts=parse_facts(facts),
        )
        home = client.signer.identity.region if exclude_home else None
    typer.echo(render_lookup(answer, fmt.value, home))
    if answer.missing and fmt != TableFormat.table:
        typer.echo(f"warning: {_regions_line(answer)}", err=True)
    if timings:
        typer.echo(" ".join(f"{k}={v:.1f}" for k, v in answer.timings.items()), err=True)


def read_applicants(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The input's columns and rows, each ``person_id`` normalised; it needs a ``person_id`` column. Every
    identifier is checked, and a bad one is named by its line, never by its value."""
    from hpf.federation.person_id import read_people_file

    columns, rows, ids = read_people_file(
        path, code="SCREEN_INPUT_INVALID", unreadable_code="SCREEN_INPUT_UNREADABLE", nothing="nothing was sent"
    )
    for row, person_id in zip(rows, ids, strict=True):
        row["person_id"] = person_id
    return columns, rows


def screen_table(
    columns: list[str], rows: list[dict[str, str]], answer: LookupAnswer, check: Check
) -> list[dict[str, Any]]:
    """One result per applicant: the input's columns, then the check's."""
    out = []
    for place, (row, facts) in enumerate(zip(rows, answer.facts, strict=True)):
        result: dict[str, Any] = {c: row.get(c) for c in columns}
        withheld = answer.withheld.get(place)
        if answer.withheld or withheld:  # a screening with consent tokens says which applicants were not asked about
            result["consent_refused"] = withheld
        if check == Check.duplicate_loans:
            result["duplicate_loans"] = None if withheld else facts.duplicate_loans
        shown = facts.shown(answer.facts_asked)  # the facts asked for, and no others
        result |= {k: None for k in shown} if withheld else shown
        out.append(result)
    return out


def write_screen(results: list[dict[str, Any]], fmt: ScreenFormat, answer: LookupAnswer, out: TextIO) -> None:
    if fmt == ScreenFormat.json:
        json.dump(
            {
                "applicants": results,
                "regions": {"asked": answer.regions, "answered": answer.answered, "missing": answer.missing},
                "complete": answer.complete,
            },
            out,
            ensure_ascii=False,
        )
        out.write("\n")
        return
    writer = csv.DictWriter(out, fieldnames=list(results[0]), lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v) for k, v in r.items()})


def _token_file(path: Path) -> str:
    """The token text in ``path`` (a file `hpf consent grant`'s consent_token cell was saved to)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise PolicyViolation(f"{path}: cannot read a consent token", code="CONSENT_MALFORMED") from None


@cli_errors
def screen(
    input_csv: Path = typer.Option(
        ..., "--input", "-i", help="CSV of applicants with a person_id column (and consent_token, if consented)"
    ),
    check: Check = typer.Option(Check.duplicate_loans, "--check", help="What to screen for"),
    profile: Path = typer.Option(..., "--profile", "-p", help="Client profile; it must pin the catalog"),
    purpose: str | None = typer.Option(None, "--purpose", help="Purpose code, e.g. loan-review (default: profile's)"),
    consent: str | None = typer.Option(None, "--consent", help="Reference of the applicants' consent records"),
    exclude_home: bool = typer.Option(False, "--exclude-home", help="Leave your own region out"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the results here (default: stdout)"),
    fmt: ScreenFormat = typer.Option(ScreenFormat.csv, "--format", "-f", help="Output format"),
    batch: int = typer.Option(DEFAULT_BATCH, "--batch", min=1, help="Applicants per request"),
    facts: str | None = typer.Option(None, "--facts", help=FACTS_HELP),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext without TLS: local development only"),
) -> None:
    """Screen many applicants at once: open housing loans in two or more cities, and each one's facts."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from hpf.client.federation_client import FederationClient
    from hpf.client.profile import load_profile
    from hpf.federation.private_files import open_private_text

    if insecure:
        logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    columns, rows = read_applicants(input_csv)
    ids = [r["person_id"] for r in rows]
    tokens = [r.get("consent_token") or "" for r in rows] if TOKEN_COLUMN in columns else None
    columns = [c for c in columns if c != TOKEN_COLUMN]  # a token is not copied to the results
    started = time.perf_counter()
    stderr = Console(stderr=True)
    with FederationClient(load_profile(profile, insecure=insecure)) as client:
        with Progress(
            TextColumn("screening"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
            disable=not stderr.is_terminal,
        ) as bar:
            task = bar.add_task("screen", total=len(ids))

            def progress(done: int) -> None:
                bar.update(task, completed=done)
                if not stderr.is_terminal and len(ids) > batch:  # a log, not a terminal: one line per request
                    typer.echo(f"screening: {done:,} of {len(ids):,}", err=True)

            answer = client.screen(
                ids,
                batch=batch,
                progress=progress,
                facts=parse_facts(facts),
                purpose=purpose,
                consent=consent,
                exclude_home=exclude_home,
                tokens=tokens,
            )
    results = screen_table(columns, rows, answer, check)
    if output is None:
        write_screen(results, fmt, answer, sys.stdout)
    else:
        with open_private_text(output) as fh:  # mode 0600: results about people
            write_screen(results, fmt, answer, fh)
    flagged = sum(bool(f.duplicate_loans) for i, f in enumerate(answer.facts) if i not in answer.withheld)
    failed = sum(1 for f in answer.facts if f.failed_regions)
    summary = f"screened {len(ids):,} applicant(s) in {time.perf_counter() - started:.1f} s"
    if check == Check.duplicate_loans and "duplicate_loans" in answer.facts_asked:
        summary += f": {flagged:,} with open housing loans in two or more cities"
    typer.echo(summary + f"; {_regions_line(answer)}", err=True)
    if failed:
        typer.echo(f"warning: {failed} applicant(s) have figures some region could not add exactly", err=True)
    if answer.withheld:
        typer.echo(
            f"warning: {len(answer.withheld)} applicant(s) not asked about: their consent token does not hold "
            "(consent_refused names the check)",
            err=True,
        )


def register(app: typer.Typer) -> None:
    app.command("lookup")(lookup)
    app.command("screen")(screen)
