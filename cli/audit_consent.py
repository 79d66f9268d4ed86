"""`hpf audit consent`: under which consent a person was looked up, from a node's audit log and the grants an
auditor names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from hpf.cli.audit import SUBJECT_KEY, log_cell, read_file
from hpf.cli.errors import cli_errors
from hpf.cli.output import TableFormat, text_table
from hpf.federation.errors import ConfigError

CONSENT_COLUMNS = ("index", "time", "identity", "role", "purpose", "decision", "code", "consent", "grant")
NO_TOKEN = "none (free-text consent)"


def _known_grants(tokens: Path | None, grants: list[str]) -> list[tuple[str, bytes]]:
    """The grants an auditor names: ``ISSUER:GRANT-ID`` words and the consent_token column of a CSV."""
    import csv
    import io

    from hpf.federation.consent import tokens as consent

    known: list[tuple[str, bytes]] = []
    for word in grants:
        issuer, _, grant_hex = word.partition(":")
        try:
            grant_id = bytes.fromhex(grant_hex)
        except ValueError:
            grant_id = b""
        if not consent.ISSUER_ID.fullmatch(issuer) or len(grant_id) != consent.GRANT_ID_BYTES:
            raise typer.BadParameter(f"{word!r}: give ISSUER:GRANT-ID (the grant id is 32 hex digits)")
        known.append((issuer, grant_id))
    if tokens is not None:
        try:
            reader = csv.DictReader(io.StringIO(read_file(tokens).decode("utf-8-sig")))
        except UnicodeDecodeError:
            raise ConfigError(f"{tokens}: not UTF-8 text", code="CONFIG_UNREADABLE") from None
        if "consent_token" not in (reader.fieldnames or []):
            raise ConfigError(
                f"{tokens}: no consent_token column",
                code="CONFIG_INVALID",
                hint="give the file `hpf consent grant` wrote, or a screening file with a consent_token column",
            )
        for row in reader:
            try:
                token = consent.parse_token_text((row.get("consent_token") or "").strip())
            except consent.ConsentError:
                continue  # a row without a readable token names no grant
            known.append((token.issuer, token.grant.grant_id))
    return known


@cli_errors
def consent_command(
    directory: Path = typer.Argument(..., help="The node's audit log directory"),
    person: str = typer.Option(..., "--person", help="The person (resident identity number) looked up"),
    subject_key: Path | None = typer.Option(
        None, "--subject-key", help=f"The node's subject key (default: DIRECTORY/{SUBJECT_KEY})"
    ),
    tokens: Path | None = typer.Option(
        None, "--tokens", help="A CSV with a consent_token column (what `hpf consent grant` wrote): name its grants"
    ),
    grants: list[str] = typer.Option([], "--grant", help="A grant to name, as ISSUER:GRANT-ID (repeatable)"),
    fmt: TableFormat = typer.Option(TableFormat.table, "--format", "-f", help="Output format"),
) -> None:
    """Under which consent was this person looked up? Every lookup of the person in the log, with the keyed
    digest of the consent it carried for them.

    The digests are keyed with the node's subject key and the request's nonce, so they name no grant by
    themselves: given the issuer's grants (``--tokens`` or ``--grant``), each is named. The person's identifier
    is never printed."""
    from hpf.client.lookups import check_person_ids
    from hpf.federation.audit.verify import read_entries
    from hpf.federation.crypto.sealing import read_secret
    from hpf.federation.crypto.subject_tags import consents_of, grant_tag

    pid = check_person_ids([person])[0]
    tag_key = read_secret(subject_key or directory / SUBJECT_KEY)
    known = _known_grants(tokens, grants)
    rows: list[dict[str, Any]] = []
    total = 0
    for entry in read_entries(directory):
        total += 1
        found = consents_of(entry, tag_key, pid)
        if found is None:
            continue
        nonce = str(entry.get("nonce"))
        by_tag = {grant_tag(tag_key, nonce, issuer, gid): f"{issuer}:{gid.hex()}" for issuer, gid in known}
        places: list[str | None] = list(found) or [None]
        for digest in places:
            row = {c: entry.get(c) for c in CONSENT_COLUMNS[:7]}
            if digest is None:
                row["consent"], row["grant"] = NO_TOKEN, None
            elif digest == "-":
                row["consent"], row["grant"] = "unreadable token", None
            else:
                row["consent"], row["grant"] = digest, by_tag.get(digest)
            rows.append(row)
    if fmt == TableFormat.json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    named = sum(1 for row in rows if row["grant"])
    after = [f"{len(rows)} lookup(s), {named} under a named grant, {total} in the log"]
    if rows and not known:
        after.append("name the grants with --tokens FILE or --grant ISSUER:GRANT-ID")
    cells = ([log_cell(row, column) for column in CONSENT_COLUMNS] for row in rows)
    typer.echo(text_table(CONSENT_COLUMNS, cells, after=after))
