"""`hpf audit verify|show`: check a node's tamper-evident audit log and read it; the group's other commands find
under which consent a person was looked up (:mod:`cli.audit_consent`) and check kept receipts
(:mod:`cli.audit_receipts`)."""

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
from hpf.cli.output import TableFormat, text_table
from hpf.federation.errors import AuditError, ConfigError

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


def read_file(path: Path) -> bytes:
    """The file's bytes; a ConfigError if it cannot be read."""
    try:
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
        return Checkpoint.from_dict(_json(read_file(path), "AUDIT_CHECKPOINT_MALFORMED"))
    except AuditError as err:
        raise AuditError(f"{path}: {err.message}", code=err.code) from None


def _receipts(path: Path) -> list[Receipt]:
    from hpf.federation.audit.records import Receipt

    receipts = []
    for number, line in enumerate(read_file(path).splitlines(), start=1):
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
    "A node restored from a backup (hpf node restore) appends a signed restore record: a declared break. The log "
    "before and after it is verified as ever; a saved checkpoint or a receipt of the lost host (signed before the "
    "restore, past the backup's checkpoint) is reported as lost in the break, not as tampering. A restore record "
    "that is not signed by the node's key or names another prefix fails (AUDIT_RESTORE_INVALID).\n\n"
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
    from hpf.federation.audit.verify import log_node, verify_log

    key = _verify_key(public_key, catalog, node)
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
        for declared in report.breaks:
            typer.echo(declared.describe())
        for lost in report.lost:
            typer.echo(f"{lost}: not tampering")
        if receipts is not None:
            lost_receipts = sum(1 for lost in report.lost if lost.startswith("receipt "))
            lost_text = f"{lost_receipts} lost in a declared break, " if lost_receipts else ""
            typer.echo(
                f"{receipts}: {len(mine) - lost_receipts} receipt(s) of node {whose or '?'} still in the log, "
                f"{lost_text}{skipped} of other nodes skipped"
            )


def _verify_key(public_key: Path | None, catalog: Path | None, node: str | None) -> Ed25519PublicKey | None:
    """The key to check the log with: --public-key's, the catalog's for --node, or None (the log's own)."""
    from hpf.federation.audit.keys import load_public_key
    from hpf.federation.audit.records import is_node_id

    if public_key is not None and catalog is not None:
        raise ConfigError("give --public-key or --catalog, not both", code="CLI_BAD_OPTION")
    if node is not None and not is_node_id(node):
        raise ConfigError("--node takes a node id from the catalog, e.g. hangzhou", code="CLI_BAD_OPTION")
    key = load_public_key(read_file(public_key)) if public_key is not None else None
    if catalog is not None:
        if node is None:
            raise ConfigError(
                "--catalog needs --node: the node whose log this is",
                code="CLI_BAD_OPTION",
                hint="the log's own files cannot say whose log it is: name the node, e.g. --node hangzhou",
            )
        key = _catalog_key(catalog, node)
    return key


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


def log_cell(entry: dict[str, Any], column: str) -> Text:
    value = entry.get(column)
    text = "" if value is None else str(value)
    if column == "query" and len(text) > FINGERPRINT_CHARS:
        text = text[:FINGERPRINT_CHARS] + "…"
    # values come from the log: no markup, no terminal control characters
    return Text("".join(c if c.isprintable() else "?" for c in text))


class Decision(str, Enum):
    allowed = "allowed"
    refused = "refused"


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
    fmt: TableFormat = typer.Option(TableFormat.table, "--format", "-f", help="Output format"),
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
    if fmt == TableFormat.json:
        typer.echo(json.dumps(list(rows), ensure_ascii=False))
        return
    cells = ([log_cell(entry, column) for column in SHOW_COLUMNS] for entry in rows)
    typer.echo(text_table(SHOW_COLUMNS, cells, after=[f"{len(rows)} shown, {matched} matching, {total} in the log"]))


def register(app: typer.Typer) -> None:
    from hpf.cli.audit_consent import consent_command
    from hpf.cli.audit_receipts import receipts_command

    audit_app.command("consent")(consent_command)
    audit_app.command("receipts")(receipts_command)
    app.add_typer(audit_app, name="audit")
