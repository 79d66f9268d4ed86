"""`hpf audit verify|show|consent|receipts`: check a node's tamper-evident audit log, read it, find under which
consent a person was looked up, and check kept receipts."""

from __future__ import annotations

import datetime as dt
import json
from collections import deque
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from hpf.cli.errors import cli_errors
from hpf.cli.output import text_table
from hpf.federation.errors import AuditError, ConfigError, PolicyViolation

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from hpf.federation.audit.records import Checkpoint, Receipt

# federation.crypto.sealing's SUBJECT_KEY, written out so that `hpf audit show --help` need not load the sealing code (a
# test keeps the two equal)
SUBJECT_KEY = "subject-tag.key"

audit_app = typer.Typer(help="Nodes' audit logs: verify them, read them, check kept receipts.", no_args_is_help=True)

SHOW_COLUMNS = ("index", "time", "identity", "role", "purpose", "operation", "decision", "code", "query")
FINGERPRINT_CHARS = 12


class VerifyFormat(str, Enum):
    text = "text"
    json = "json"


class ShowFormat(str, Enum):
    table = "table"
    json = "json"


class Decision(str, Enum):
    allowed = "allowed"
    refused = "refused"


def _read(path: Path, *, first_line: bool = False) -> bytes:
    """The file's bytes (or only its first line, without the newline); a ConfigError if it cannot be read."""
    try:
        if first_line:
            with path.open("rb") as fh:
                return fh.readline().removesuffix(b"\n")
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", code="CONFIG_NOT_FOUND") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})", code="CONFIG_UNREADABLE") from None


def _json(data: bytes, code: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise AuditError("not JSON", code=code) from None


def _checkpoint(path: Path) -> Checkpoint:
    from hpf.federation.audit.records import Checkpoint

    try:
        return Checkpoint.from_dict(_json(_read(path), "AUDIT_CHECKPOINT_MALFORMED"))
    except AuditError as err:
        raise AuditError(f"{path}: {err.message}", code=err.code) from None


def _receipts(path: Path) -> list[Receipt]:
    from hpf.federation.audit.records import Receipt

    receipts = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if line.strip():
            try:
                receipts.append(Receipt.from_dict(_json(line, "AUDIT_RECEIPT_MALFORMED")))
            except AuditError as err:
                raise AuditError(f"{path}: line {number}: {err.message}", code=err.code) from None
    return receipts


def _catalog_key(catalog_path: Path, node_id: str) -> Ed25519PublicKey:
    """The audit key the catalog lists for ``node_id`` (never for whichever node the log itself names)."""
    from hpf.federation.audit.keys import load_public_key
    from hpf.federation.catalog import load_catalog

    node = next((n for n in load_catalog(catalog_path).nodes if n.id == node_id), None)
    if node is None or node.audit_key is None:
        raise ConfigError(
            f"{catalog_path}: no audit_key for node {node_id!r}",
            code="CONFIG_INVALID",
            hint="add the key the node logs at start as its audit_key, or pass --public-key",
        )
    return load_public_key(node.audit_key)


VERIFY_HELP = (
    "Check that a log was not edited, reordered or cut short since its node signed it. Exit 7 if it was.\n\n"
    "It also fails on entries appended without the node's key (more than one entry after the last checkpoint: "
    "AUDIT_UNSIGNED) and on a last line without its newline (AUDIT_TORN_TAIL: a crash in the middle of a write; "
    "the node cuts it off when it next opens the log). One entry without a checkpoint, what a crash between its "
    "two writes leaves, is only a warning.\n\n"
    "Cutting both files back to the same earlier prefix cannot be detected from the files alone: the log is "
    "consistent with itself. It is caught with an older checkpoint (--checkpoint), a client's receipts "
    "(--receipts, or hpf audit receipts through the coordinator), or a checkpoint of the node held by someone else."
    "\n\n"
    "--node names the node whose log this is: every entry, checkpoint, saved checkpoint and receipt must be that "
    "node's (AUDIT_NODE_MISMATCH otherwise: e.g. another region's intact log put at this path). With --catalog it "
    "is required, and the key is the catalog's audit_key for that node.\n\n"
    "A client's receipts file holds every region's receipts: only this node's (--node, else the node the log's "
    "first checkpoint names) are checked, and the others are counted as skipped."
)


@audit_app.command("verify", help=VERIFY_HELP)
@cli_errors
def verify(
    directory: Path = typer.Argument(..., help="The node's audit log directory"),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="The node's audit public key (PEM or base64) from its operator or the catalog"
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="A checkpoint saved earlier (JSON): the log must still hold what it signed (catches both files cut "
        "back to an earlier prefix)",
    ),
    receipts: Path | None = typer.Option(
        None,
        "--receipts",
        help="A client's receipts file (JSON lines, every region's): each of this node's receipts (--node, else "
        "the node the log names) must still be in the log (catches both files cut back to an earlier prefix); "
        "other nodes' receipts are skipped and counted",
    ),
    catalog: Path | None = typer.Option(
        None, "--catalog", help="Pin the key from the federation catalog's entry for --node (its audit_key)"
    ),
    node: str | None = typer.Option(
        None, "--node", help="The node whose log this is (required with --catalog): everything must be its own"
    ),
    fmt: VerifyFormat = typer.Option(VerifyFormat.text, "--format", "-f", help="Output format"),
) -> None:
    """Check a log directory (the help text is VERIFY_HELP)."""
    from hpf.federation.audit.keys import load_public_key
    from hpf.federation.audit.records import is_node_id
    from hpf.federation.audit.verify import log_node, verify_log

    if public_key is not None and catalog is not None:
        raise ConfigError("give --public-key or --catalog, not both", code="CLI_BAD_OPTION")
    if node is not None and not is_node_id(node):
        raise ConfigError("--node takes a node id from the catalog, e.g. hangzhou", code="CLI_BAD_OPTION")
    key = load_public_key(_read(public_key)) if public_key is not None else None
    if catalog is not None:
        if node is None:
            raise ConfigError(
                "--catalog needs --node: the node whose log this is",
                code="CLI_BAD_OPTION",
                hint="the log's own files cannot say whose log it is: name the node, e.g. --node hangzhou",
            )
        key = _catalog_key(catalog, node)
    older = _checkpoint(checkpoint) if checkpoint is not None else None
    kept = _receipts(receipts) if receipts is not None else []
    # a client keeps every region's receipts in one file: only this node's are checked (--node, else the node
    # the log's first checkpoint names), each against this node's key; the others are counted as skipped
    whose = node or log_node(directory)
    mine = [r for r in kept if whose is None or r.names(whose)]
    skipped = len(kept) - len(mine)
    report = verify_log(directory, key, older, mine, node_id=node)
    if fmt == VerifyFormat.json:
        counts = {"receipts_checked": len(mine), "receipts_skipped": skipped}
        typer.echo(json.dumps({"directory": str(directory), **report.to_dict(), **counts}))
    if not report.key_pinned and report.code != "AUDIT_NOT_FOUND":
        typer.echo(
            "warning: the public key was read from the log directory itself, which whoever can rewrite the log "
            "can replace; pass --public-key to pin the node's key",
            err=True,
        )
    if (error := report.error()) is not None:
        raise error
    if report.unsigned:  # one at most: more is AUDIT_UNSIGNED
        typer.echo(
            f"warning: the last entry ({report.entries - 1}) is not covered by a checkpoint yet: a crash between "
            "its two writes leaves one; the node signs it when it next opens the log",
            err=True,
        )
    if fmt == VerifyFormat.text:
        latest = report.latest
        head = f"root {latest.root.hex()} at size {latest.size} ({latest.time})" if latest else "no checkpoint yet"
        pinned = "key pinned" if report.key_pinned else "key NOT pinned"
        typer.echo(
            f"{directory}: ok: {report.entries} entries, {report.checkpoints} checkpoints, "
            f"node {report.node_id or '?'}, {head}, {pinned}"
        )
        if receipts is not None:
            typer.echo(
                f"{receipts}: {len(mine)} receipt(s) of node {whose or '?'} still in the log, "
                f"{skipped} of other nodes skipped"
            )


def _utc(value: object) -> dt.datetime | None:
    """An RFC 3339 time (UTC when it names no zone), or None when ``value`` is none."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _since(value: str) -> dt.datetime:
    moment = _utc(value)
    if moment is None:
        raise typer.BadParameter(f"{value!r} is not an RFC 3339 time, e.g. 2026-11-28T08:30:00Z")
    return moment


def _cell(entry: dict[str, Any], column: str) -> Text:
    value = entry.get(column)
    text = "" if value is None else str(value)
    if column == "query" and len(text) > FINGERPRINT_CHARS:
        text = text[:FINGERPRINT_CHARS] + "…"
    # values come from the log: no markup, no terminal control characters
    return Text("".join(c if c.isprintable() else "?" for c in text))


@audit_app.command("show")
@cli_errors
def show(
    directory: Path = typer.Argument(..., help="The node's audit log directory"),
    identity: str | None = typer.Option(None, "--identity", help="Only this identity's requests"),
    decision: Decision | None = typer.Option(None, "--decision", help="Only allowed or only refused requests"),
    since: str | None = typer.Option(None, "--since", help="Only from this time on (RFC 3339, e.g. 2026-11-28T08:00Z)"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the last N matching entries"),
    person: str | None = typer.Option(
        None, "--person", help="Only the lookups of this person (resident identity number); needs the subject key"
    ),
    subject_key: Path | None = typer.Option(
        None, "--subject-key", help=f"The node's subject key (default: DIRECTORY/{SUBJECT_KEY})"
    ),
    fmt: ShowFormat = typer.Option(ShowFormat.table, "--format", "-f", help="Output format"),
) -> None:
    """List a log's requests for an auditor (it does not check the log: `hpf audit verify` does).

    A lookup's entry holds, per person asked, only a keyed hash of the identifier; with the node's subject key,
    ``--person`` finds the lookups of one person (who looked them up, when, why)."""
    from hpf.client.lookups import check_person_ids
    from hpf.federation.audit.verify import read_entries
    from hpf.federation.crypto.sealing import read_secret
    from hpf.federation.crypto.subject_tags import looked_up

    start = _since(since) if since is not None else None
    tag_key = None
    if person is not None:
        pid = check_person_ids([person])[0]
        tag_key = read_secret(subject_key or directory / SUBJECT_KEY)
    rows: deque[dict[str, Any]] = deque(maxlen=limit)
    matched = total = 0
    for entry in read_entries(directory):
        total += 1
        if identity is not None and entry.get("identity") != identity:
            continue
        if decision is not None and entry.get("decision") != decision.value:
            continue
        if start is not None and ((moment := _utc(entry.get("time"))) is None or moment < start):
            continue
        if tag_key is not None and not looked_up(entry, tag_key, pid):
            continue
        matched += 1
        rows.append(entry)
    if fmt == ShowFormat.json:
        typer.echo(json.dumps(list(rows), ensure_ascii=False))
        return
    cells = ([_cell(entry, column) for column in SHOW_COLUMNS] for entry in rows)
    typer.echo(text_table(SHOW_COLUMNS, cells, after=[f"{len(rows)} shown, {matched} matching, {total} in the log"]))


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
            reader = csv.DictReader(io.StringIO(_read(tokens).decode("utf-8-sig")))
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


@audit_app.command("consent")
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
    fmt: ShowFormat = typer.Option(ShowFormat.table, "--format", "-f", help="Output format"),
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
    if fmt == ShowFormat.json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    named = sum(1 for row in rows if row["grant"])
    after = [f"{len(rows)} lookup(s), {named} under a named grant, {total} in the log"]
    if rows and not known:
        after.append("name the grants with --tokens FILE or --grant ISSUER:GRANT-ID")
    cells = ([_cell(row, column) for column in CONSENT_COLUMNS] for row in rows)
    typer.echo(text_table(CONSENT_COLUMNS, cells, after=after))


REWRITTEN = "REWRITTEN"
UNPROVEN = "could not be proven (the region or the coordinator)"
NO_KEY = "could not be proven (no audit key pinned)"
NOT_CHECKED = "not checked"


def _status(err: AuditError) -> str:
    """A failed check as a receipt's status: only the region's own signatures can show its log was rewritten
    (see :func:`federation.audit.proto.check_still_logged`); every other failure proves nothing either way."""
    if err.code == "AUDIT_INCONSISTENT":
        return REWRITTEN
    return NO_KEY if err.code == "AUDIT_KEY_MISSING" else UNPROVEN


@audit_app.command("receipts")
@cli_errors
def receipts_command(
    profile: Path = typer.Option(..., "--profile", "-p", help="Client profile (client.yaml) whose receipts to check"),
    fmt: ShowFormat = typer.Option(ShowFormat.table, "--format", "-f", help="Output format"),
) -> None:
    """Ask each region (through the coordinator) to prove every receipt this profile kept is still in its log.

    Each proof is checked against the region's latest signed checkpoint: the entry is still there and the log
    only grew since. The coordinator relays the proofs unsigned, so a proof that does not hold shows the receipt
    could not be proven (the region or the coordinator: `hpf audit verify --receipts` on the region's own log
    tells which); only two logs the region signed for one size show it rewrote its log. Exit 7 if any receipt is
    rewritten or could not be proven. A receipt kept before receipts carried a proof of their own is proven by the
    region's latest log alone."""
    from hpf.client.federation_client import FederationClient
    from hpf.client.profile import load_profile

    rows: list[dict[str, Any]] = []
    stopped: PolicyViolation | None = None
    with FederationClient(load_profile(profile)) as client:
        kept = client.kept_receipts()
        for receipt in kept:
            row: dict[str, Any] = {
                "node": receipt.node_id,
                "index": receipt.index,
                "size": receipt.checkpoint.size,
                "own_proof": receipt.inclusion is not None,
            }
            if stopped is not None:
                row.update(status=NOT_CHECKED, code="", latest_size=None)
            else:
                try:
                    latest = client.check_receipt(receipt)
                    row.update(status="still logged", code="", latest_size=latest.size)
                except AuditError as err:
                    row.update(status=_status(err), code=err.code, latest_size=None, message=err.message)
                except PolicyViolation as err:  # e.g. the coordinator's per-person rate limit
                    stopped = err
                    row.update(status=NOT_CHECKED, code="", latest_size=None)
            rows.append(row)
    rewritten = [r for r in rows if r["status"] == REWRITTEN]
    unproven = [r for r in rows if r["code"] and r["status"] != REWRITTEN]
    unchecked = sum(1 for r in rows if r["status"] == NOT_CHECKED)
    without_proof = sum(1 for r in rows if not r["own_proof"])
    if fmt == ShowFormat.json:
        doc = {
            "receipts": rows,
            "rewritten": len(rewritten),
            "unproven": len(unproven),
            "not_checked": unchecked,
            "kept_without_proof": without_proof,
        }
        typer.echo(json.dumps(doc))
    else:
        cells = ((r["node"], str(r["index"]), str(r["size"]), str(r["latest_size"] or ""), r["status"]) for r in rows)
        proved = sum(1 for r in rows if r["status"] == "still logged")
        footer = [
            f"{proved} of {len(rows)} receipt(s) still logged, each proved against the region's latest signed "
            "checkpoint"
        ]
        if without_proof:
            footer.append(
                f"note: {without_proof} receipt(s) were kept before receipts carried a proof of their entry: each is "
                "proven by the region's latest log alone, and one whose entry was altered before it was kept cannot "
                "be proven"
            )
        if unproven:
            footer.append(
                f"{len(unproven)} receipt(s) could not be proven: a proof relayed by the coordinator does not hold; "
                "that blames the region or the coordinator, and `hpf audit verify --receipts` on the region's own "
                "log tells which"
            )
        typer.echo(text_table(("node", "index", "receipt size", "latest size", "status"), cells, after=footer))
    if rewritten:
        first = rewritten[0]
        raise AuditError(f"region {first['node']}, entry {first['index']}: {first['message']}", code=first["code"])
    if unproven:
        first = unproven[0]
        raise AuditError(
            f"{len(unproven)} receipt(s) could not be proven (the region or the coordinator); the first: region "
            f"{first['node']}, entry {first['index']}: {first['message']}",
            code="AUDIT_RECEIPT_UNPROVEN" if first["status"] == UNPROVEN else first["code"],
            hint="run `hpf audit verify --receipts` on the region's own log to tell which",
        )
    if stopped is not None:
        raise PolicyViolation(
            f"{unchecked} receipt(s) were not checked: {stopped.message}",
            code=stopped.code,
            rule=stopped.rule,
            hint=f"{stopped.hint}; then run this again" if stopped.hint else "run this again later",
        )


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
