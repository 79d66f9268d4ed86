"""The demo's person lookups: a caseworker's lookups, a bank's screening and an auditor's question, each checked.

Every figure is compared with DuckDB over the pooled files (:func:`demo.oracle.pooled_person_facts`), and
the screening's flagged applicants with the people the generator planted with loans in two cities. The bank
screens only under each applicant's consent token, granted by the demo's consent service
(:func:`demo.launcher.consent_service`) and written in the applicants file's ``consent_token`` column.
"""

from __future__ import annotations

import csv
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import typer

from hpf.client.answers import LookupAnswer
from hpf.client.federation_client import FederationClient
from hpf.client.profile import load_profile
from hpf.demo.launcher import DemoLayout
from hpf.demo.oracle import pooled_person_facts
from hpf.demo.renderers import Renderers
from hpf.demo.synth.generator import planted_duplicate_loans
from hpf.federation.audit.verify import read_entries
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import issue_batch, load_issuer
from hpf.federation.consent.revocations import RECHECK_S
from hpf.federation.consent.revocations import revoke as revoke_grants
from hpf.federation.crypto.lookup_codec import fields_of
from hpf.federation.crypto.sealing import SUBJECT_KEY, read_secret
from hpf.federation.crypto.subject_tags import looked_up
from hpf.federation.errors import FederationError
from hpf.federation.person_id import check_char
from hpf.federation.trust import certificates

CONSENT = "DEMO-CONSENT-0001"  # a caseworker's free-text reference, from the form the person signed at the counter
CONSENT_DAYS = 30  # how long the demo's applicants' consents hold
SCREEN_SIZE = 5_000
ABSENT_ID = "11010519491231021" + check_char("11010519491231021")  # valid, and in no demo region
MISTYPED_ID = ABSENT_ID[:-1] + ("1" if ABSENT_ID[-1] != "1" else "2")  # its check character is wrong


def _equal(answer: LookupAnswer, expected: dict[str, dict[str, int]], ids: list[str]) -> bool:
    return all(
        {name: getattr(facts, name) for name in expected[pid]} == expected[pid]
        for pid, facts in zip(ids, answer.facts, strict=True)
    )


def _sql(sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(":memory:")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _movers(layout: DemoLayout, limit: int) -> list[str]:
    listed = ", ".join(f"'{f}'" for f in layout.files("accounts", "*"))
    rows = _sql(
        f"SELECT person_id FROM read_parquet([{listed}]) GROUP BY person_id HAVING COUNT(DISTINCT city_code) >= 2 "
        f"ORDER BY person_id LIMIT {int(limit)}"
    )
    return [r[0] for r in rows]


def _applicants(layout: DemoLayout, planted: list[str], size: int) -> list[str]:
    """A bank's applicants: some of the planted people, many others, and a few people no region knows."""
    listed = ", ".join(f"'{f}'" for f in layout.files("accounts", "*"))
    others = [
        r[0]
        for r in _sql(
            f"SELECT DISTINCT person_id FROM read_parquet([{listed}]) ORDER BY hash(person_id) LIMIT {int(size)}"
        )
    ]
    chosen = list(dict.fromkeys(planted[: max(1, len(planted) // 2)] + others))[: size - 1]
    return sorted(chosen) + [ABSENT_ID]


def grant_applicants(layout: DemoLayout, applicants: list[str], purpose: str = "loan-review") -> list[str]:
    """Each applicant's consent token from the demo's consent service, granted to the bank's certificate for
    ``purpose`` and the facts a lookup answers (what `hpf consent grant` writes in its consent_token column)."""
    issuer = load_issuer(layout.consent_issuer)
    bank = certificates.load_certificate((layout.pki / "people" / "bank.pem").read_bytes())
    not_after = int(time.time()) + CONSENT_DAYS * 86_400
    granted = issue_batch(
        issuer.key,
        issuer.id,
        applicants,
        grantee=consent.grantee_of(bank),
        purpose=purpose,
        facts=consent.FACTS,
        not_after=not_after,
    )
    return [consent.token_text(t) for t in granted]


def write_applicants(layout: DemoLayout, path: Path, reference: str, applicants: list[str]) -> list[str]:
    """The bank's applicants file: a reference, the identifier and the consent token of each; the tokens."""
    tokens = grant_applicants(layout, applicants)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([reference, "person_id", "consent_token"])
        writer.writerows(
            [f"A{i:06d}", pid, token] for i, (pid, token) in enumerate(zip(applicants, tokens, strict=True), 1)
        )
    return tokens


def run_lookups(layout: DemoLayout, rows: int, seed: int, renderers: Renderers, audit: bool = True) -> bool:
    """Run and print the lookup examples; True when every answer equals the pooled-files oracle. With ``audit``,
    an auditor holding the first region's subject key then finds the lookups in its log (which it reads)."""
    catalog = load_catalog(layout.catalog)
    planted = [p.person_id for p in planted_duplicate_loans(seed, rows, layout.node_ids)]
    caseworker = FederationClient(load_profile(layout.profile_of("caseworker")))
    bank = FederationClient(load_profile(layout.profile_of("bank")))
    try:
        person = planted[0] if planted else _movers(layout, 1)[0]
        ok = _caseworker_lookups(layout, caseworker, catalog, person, renderers)
        applicants = _applicants(layout, planted, SCREEN_SIZE)
        ok &= _screening(layout, bank, catalog, planted, applicants)
        if audit:
            ok &= _who_looked_up(layout, person, applicants)
    finally:
        caseworker.close()
        bank.close()
    return ok


def _caseworker_lookups(
    layout: DemoLayout, caseworker: FederationClient, catalog: Catalog, person: str, renderers: Renderers
) -> bool:
    """A caseworker looks up ``person``, someone no region knows and (per city) someone who moved, each checked
    against the pooled files; then a mistyped identifier, refused before it is sent."""
    ok = True
    profile = layout.profile_of("caseworker")
    examples = [
        ("A loan applicant with housing loans in two cities", person, "loan-review", False),
        ("Someone no region knows: every figure is zero", ABSENT_ID, "loan-review", False),
    ]
    movers = _movers(layout, 1)
    if movers:
        examples.append(
            ("An account transfer: per city, as every policy allows it", movers[0], "account-transfer", True)
        )
    for title, pid, purpose, by_city in examples:
        flags = f" --purpose {purpose} --consent {CONSENT}" + (" --by-city" if by_city else "")
        typer.echo(f"\n## Lookup: {title} (caseworker)\n$ hpf lookup --profile {profile}{flags} {pid}")
        started = time.perf_counter()
        answer = caseworker.lookup([pid], purpose=purpose, consent=CONSENT, by_city=by_city)
        elapsed = (time.perf_counter() - started) * 1e3
        equal = _equal(answer, pooled_person_facts(catalog, layout.files, [pid]), [pid])
        ok &= equal and answer.complete
        typer.echo(renderers.lookup(answer))
        typer.echo(f"({elapsed:.0f} ms; {'equals' if equal else 'DIFFERS FROM'} DuckDB over the pooled files)")
    typer.echo(f"\n## Lookup: a mistyped identifier is refused before anything is sent\n$ hpf lookup ... {MISTYPED_ID}")
    try:
        caseworker.lookup([MISTYPED_ID], purpose="loan-review", consent=CONSENT)
        ok = False
    except FederationError as err:
        typer.echo(f"error: {err}")
    return ok


def _screening(
    layout: DemoLayout,
    bank: FederationClient,
    catalog: Catalog,
    planted: list[str],
    applicants: list[str],
) -> bool:
    """A bank screens ``applicants`` under their consent tokens (refused without them): True when it flags exactly
    the planted ones, a sample's facts equal the pooled files', and a revoked consent withholds its applicant."""
    input_csv = layout.data / "applicants.csv"
    tokens = write_applicants(layout, input_csv, "application", applicants)
    typer.echo(
        f"\n## Screening {len(applicants):,} applicants for loans in two or more cities (a bank, under each "
        f"applicant's consent token from {consent.parse_token_text(tokens[0]).issuer})\n"
        f"$ hpf screen --profile {layout.profile_of('bank')} --input {input_csv} --check duplicate-loans "
        f"--purpose loan-review --output {layout.data / 'screened.csv'}"
    )
    try:  # without the tokens, a bank is refused: a free-text reference vouches for no one
        bank.screen(applicants[:2], purpose="loan-review", consent="BANK-BATCH-0001")
        ok = False
        typer.echo("(without tokens: ANSWERED, though the policy takes tokens)")
    except FederationError as err:
        typer.echo(f"(without tokens: refused, {err.code})")
        ok = err.code == "POLICY_CONSENT_REQUIRED"
    started = time.perf_counter()
    screened = bank.screen(applicants, purpose="loan-review", tokens=tokens)
    elapsed = time.perf_counter() - started
    flagged = {pid for pid, f in zip(applicants, screened.facts, strict=True) if f.duplicate_loans}
    expected = set(planted) & set(applicants)
    ok &= flagged == expected and screened.complete and not screened.withheld
    typer.echo(
        f"{len(applicants):,} screened in {elapsed:.1f} s: {len(flagged)} with open loans in two or more cities; "
        f"{'exactly' if flagged == expected else 'NOT'} the {len(expected)} planted among them"
    )
    sample = applicants[:: max(1, len(applicants) // 50)]
    by_id = dict(zip(applicants, screened.facts, strict=True))
    kept = fields_of(screened.facts_asked)  # a bank is answered the facts a loan review needs, no others
    sample_ok = all(
        {k: getattr(by_id[p], k) for k in v if k in kept} == {k: x for k, x in v.items() if k in kept}
        for p, v in pooled_person_facts(catalog, layout.files, sample).items()
    ) and all(by_id[p].balance_fen is None for p in sample)
    ok &= sample_ok
    typer.echo(f"(facts of {len(sample)} sampled applicants {'equal' if sample_ok else 'DIFFER FROM'} DuckDB)")
    return ok & _revocation_example(layout, bank, applicants[1:3], tokens[1:3])


def _who_looked_up(layout: DemoLayout, person: str, applicants: list[str]) -> bool:
    """An auditor holding the first region's subject key finds who looked ``person`` up, and that the log holds no
    identifier; True when the lookup is found."""
    home = layout.node_ids[0]
    audit_dir = layout.state(home) / "audit"
    key = read_secret(audit_dir / SUBJECT_KEY)
    who = [e for e in read_entries(audit_dir) if looked_up(e, key, person)]
    typer.echo(
        f"\n## Audit: who looked this person up? (an auditor holding {home}'s subject key)\n"
        f"$ hpf audit show {audit_dir} --person {person}\n"
        + "\n".join(
            f"  {e['time']}  {e['identity']} ({e['role']}), purpose {e['purpose']}: {e['decision']}" for e in who
        )
        + f"\n(the log holds keyed hashes only: {_no_identifier(audit_dir, applicants + [person])})"
    )
    return len(who) >= 1


def _revocation_example(layout: DemoLayout, bank: FederationClient, ids: list[str], tokens: list[str]) -> bool:
    """The consent service revokes the first applicant's grant; every region re-reads its list and refuses it, so
    the screening withholds that applicant (a region never answers about a person another region refuses) and
    answers the other. True when exactly the revoked one is withheld, for its revocation."""
    issuer = load_issuer(layout.consent_issuer)
    grant = consent.parse_token_text(tokens[0]).grant.grant_id
    listed = revoke_grants(layout.consent_revocations, issuer.key, issuer.id, [grant])
    typer.echo(
        f"\n## The applicant withdraws their consent: the consent service revokes the grant (list {listed.number})\n"
        f"$ hpf consent revoke {grant.hex()} --dir {layout.consent_issuer} --list {layout.consent_revocations}"
    )
    time.sleep(RECHECK_S + 0.2)  # a region looks at the list at most once a second
    try:
        answer = bank.screen(ids, purpose="loan-review", tokens=tokens)
    except FederationError as err:
        typer.echo(f"screening it with another applicant: refused whole, {err.code}")
        return False
    if answer.withheld == {0: "CONSENT_REVOKED"} and len(answer.facts) == len(ids):
        typer.echo(
            f"screening it with another applicant: applicant 1 withheld by every region (CONSENT_REVOKED), "
            f"the other {len(ids) - 1} answered"
        )
        return True
    typer.echo(f"screening it with another applicant: withheld {answer.withheld or 'nobody'}, not the revoked one")
    return False


def _no_identifier(audit_dir: Path, ids: list[str]) -> str:
    text = (audit_dir / "entries.jsonl").read_text(encoding="utf-8")
    found = sum(pid in text for pid in ids)
    return "no identifier appears in it" if not found else f"{found} IDENTIFIERS FOUND"


def hpf_command() -> str:
    """How to run ``hpf`` from another terminal: its name when it is on PATH, else the full path of this
    installation's (a fresh virtualenv is not on PATH until it is activated)."""
    if shutil.which("hpf") is not None:
        return "hpf"
    beside = Path(sys.executable).parent / "hpf"
    return shlex.quote(str(beside)) if beside.exists() else f"{shlex.quote(sys.executable)} -m cli"


def ready_lines(layout: DemoLayout, rows: int, seed: int, example_sql: str) -> list[str]:
    """Commands to paste into another terminal while the demo serves: a query, a lookup of a real person of the
    demo's data (one with loans in two cities), and a bank's screening of an applicants file written here."""
    hpf = hpf_command()
    planted = [p.person_id for p in planted_duplicate_loans(seed, rows, layout.node_ids)]
    person = planted[0] if planted else _movers(layout, 1)[0]
    applicants = layout.data / "applicants.csv"
    write_applicants(layout, applicants, "ref", _applicants(layout, planted, 200))  # each with its consent token
    client, bank = layout.client_profile, layout.profile_of("bank")
    return [
        f"ready: {hpf} query --profile {shlex.quote(str(client))} {shlex.quote(example_sql)}",
        f"       {hpf} lookup --profile {shlex.quote(str(client))} --purpose loan-review --consent C1 {person}",
        f"       {hpf} screen --profile {shlex.quote(str(bank))} --input {shlex.quote(str(applicants))} "
        "--purpose loan-review",
    ]
