"""`hpf lookup` and `hpf screen`: federation-wide facts about people, their identifiers sealed to each region.

A caseworker looks up one applicant; a bank or housing platform screens a CSV of applicants for housing
loans in two or more cities. Identifiers are checked here before anything is sent, then sealed to each
region separately: the coordinator never sees them. Figures are federation-wide unless every region's policy
allows a per-city answer for the purpose (``--by-city``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import typer

from cli.errors import cli_errors
from cli.output import regions_line, text_table
from federation.errors import ConfigError, PlanError

if TYPE_CHECKING:
    from federation.client import LookupAnswer
    from federation.lookup_codec import PersonFacts

MAX_INPUT_ERRORS = 10
# the client's LOOKUP_BATCH, written out so that `hpf screen --help` need not load the client (a test keeps the
# two equal)
DEFAULT_BATCH = 4550
TOKEN_COLUMN = "consent_token"  # the column of an applicants file that holds each one's consent token


class Format(str, Enum):
    table = "table"
    json = "json"


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


def _fact_rows(f: PersonFacts) -> list[list[str]]:
    return [
        # a city counts once however many accounts it holds: one may hold an active and a sealed account, another
        # only closed ones, so the two lines below need not add up to the first
        ["cities with an account", str(f.cities)],
        ["  with an active account", str(f.cities_active)],
        ["  with a sealed account", str(f.cities_sealed)],
        ["contribution months", _count(f.contribution_months)],
        ["contributions", _yuan(f.contribution_fen)],
        ["balance", _yuan(f.balance_fen)],
        ["housing loans", f"{_count(f.active_loans)} active, {_count(f.overdue_loans)} overdue"],
        ["outstanding", _yuan(f.outstanding_fen)],
        ["cities with an open loan", str(f.loan_cities)],
        ["open loans in two or more cities", "YES" if f.duplicate_loans else "no"],
    ]


def _regions_line(answer: LookupAnswer) -> str:
    return regions_line(answer.answered, answer.missing, len(answer.regions), " -- the figures leave these regions out")


def _failed_note(facts: PersonFacts) -> str | None:
    if not facts.failed_regions:
        return None
    return (
        f"{facts.failed_regions} region(s) hold figures too large to add exactly; amounts and counts are "
        "unavailable (ask those centres directly)"
    )


def render_lookup(answer: LookupAnswer, fmt: str, excluded_home: str | None) -> str:
    facts = answer.facts[0]
    if fmt == "json":
        doc: dict[str, Any] = {
            "facts": facts.as_dict() | {"duplicate_loans": facts.duplicate_loans},
            "regions": {"asked": answer.regions, "answered": answer.answered, "missing": answer.missing},
            "complete": answer.complete,
        }
        if answer.by_city is not None:
            doc["by_city"] = {r: f.as_dict() for r, f in answer.by_city[0].items()}
        return json.dumps(doc, ensure_ascii=False)
    scope = "federation-wide" if excluded_home is None else f"every region but {excluded_home}"
    before = [f"Facts about one person, {scope} (sealed lookup; the coordinator did not see the identifier)"]
    after = [_regions_line(answer)]
    note = _failed_note(facts)
    if note:
        after.append(note)
    out = text_table(["fact", "value"], _fact_rows(facts), before=before, after=after)
    if answer.by_city is not None:
        rows = [
            [
                region,
                str(f.cities_active) + "/" + str(f.cities_sealed),
                _count(f.contribution_months),
                _yuan(f.contribution_fen),
                _yuan(f.balance_fen),
                f"{_count(f.active_loans)}/{_count(f.overdue_loans)}",
                _yuan(f.outstanding_fen),
            ]
            for region, f in answer.by_city[0].items()
            if region in answer.answered
        ]
        columns = ["region", "active/sealed", "months", "contributions", "balance", "loans a/o", "outstanding"]
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
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format"),
    timings: bool = typer.Option(False, "--timings", help="Print a per-stage timing breakdown to stderr"),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext without TLS: local development only"),
) -> None:
    """Look one person up across the federation: accounts, contributions, balance and housing loans."""
    from federation.client import FederationClient, check_person_ids
    from federation.profile import load_profile

    if insecure:
        logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    check_person_ids([person_id])  # before anything else: a bad identifier is never sent
    tokens = None if consent_token is None else [_token_file(consent_token)]
    with FederationClient(load_profile(profile, insecure=insecure)) as client:
        answer = client.lookup(
            [person_id], purpose=purpose, consent=consent, exclude_home=exclude_home, by_city=by_city, tokens=tokens
        )
        home = client.signer.identity.region if exclude_home else None
    typer.echo(render_lookup(answer, fmt.value, home))
    if answer.missing and fmt != Format.table:
        typer.echo(f"warning: {_regions_line(answer)}", err=True)
    if timings:
        typer.echo(" ".join(f"{k}={v:.1f}" for k, v in answer.timings.items()), err=True)


def read_applicants(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The input's columns and rows; it needs a ``person_id`` column. Every identifier is checked, and a bad
    one is named by its line, never by its value."""
    from federation.client import check_person_ids

    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})", code="SCREEN_INPUT_UNREADABLE") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", code="SCREEN_INPUT_INVALID") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = list(reader.fieldnames or [])
    if "person_id" not in columns:
        raise ConfigError(
            f"{path}: no person_id column", code="SCREEN_INPUT_INVALID", hint="the first line names the columns"
        )
    rows, problems = [], []
    for row in reader:
        line = reader.line_num
        try:
            row["person_id"] = check_person_ids([row.get("person_id") or ""])[0]
        except PlanError as err:
            problems.append(f"line {line}: {err.message}")
        rows.append(row)
    if problems:
        shown = problems[:MAX_INPUT_ERRORS]
        more = len(problems) - len(shown)
        raise PlanError(
            f"{path}: {len(problems)} invalid identifier(s), nothing was sent:\n  "
            + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more else ""),
            code="PERSON_ID_INVALID",
            hint="an 18-character resident identity number: 17 digits, then a check digit or X",
        )
    if not rows:
        raise ConfigError(f"{path}: no applicants", code="SCREEN_INPUT_INVALID")
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
        result |= {k: None for k in facts.as_dict()} if withheld else facts.as_dict()
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


@cli_errors
def _token_file(path: Path) -> str:
    """The token text in ``path`` (a file `hpf consent grant`'s consent_token cell was saved to)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"{path}: cannot read a consent token", code="CONSENT_MALFORMED") from None


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
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext without TLS: local development only"),
) -> None:
    """Screen many applicants at once: open housing loans in two or more cities, and each one's facts."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from federation.client import FederationClient
    from federation.private_files import open_private_text
    from federation.profile import load_profile

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
                purpose=purpose,
                consent=consent,
                exclude_home=exclude_home,
                batch=batch,
                progress=progress,
                tokens=tokens,
            )
    results = screen_table(columns, rows, answer, check)
    if output is None:
        write_screen(results, fmt, answer, sys.stdout)
    else:
        with open_private_text(output) as fh:  # mode 0600: results about people
            write_screen(results, fmt, answer, fh)
    flagged = sum(f.duplicate_loans for i, f in enumerate(answer.facts) if i not in answer.withheld)
    failed = sum(1 for f in answer.facts if f.failed_regions)
    summary = f"screened {len(ids):,} applicant(s) in {time.perf_counter() - started:.1f} s"
    if check == Check.duplicate_loans:
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
