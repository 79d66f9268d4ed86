"""`hpf audit receipts`: ask each region, through the coordinator, to prove the receipts a client kept are still
in its log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from hpf.cli.errors import cli_errors
from hpf.cli.output import TableFormat, text_table
from hpf.federation.errors import AuditError, PolicyViolation

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


@cli_errors
def receipts_command(
    profile: Path = typer.Option(..., "--profile", "-p", help="Client profile (client.yaml) whose receipts to check"),
    fmt: TableFormat = typer.Option(TableFormat.table, "--format", "-f", help="Output format"),
) -> None:
    """Ask each region (through the coordinator) to prove every receipt this profile kept is still in its log.

    Each proof is checked against the region's latest signed checkpoint: the entry is still there and the log
    only grew since. The coordinator relays the proofs unsigned, so a proof that does not hold shows the receipt
    could not be proven (the region or the coordinator: `hpf audit verify --receipts` on the region's own log
    tells which); only two logs the region signed for one size show it rewrote its log. A receipt of an entry the
    region's lost host logged after the backup it was restored from is lost in the declared break: shown so, not
    counted as rewritten or unproven, when the region's signed restore record proves it. Exit 7 if any receipt is
    rewritten or could not be proven. A receipt kept before receipts carried a proof of their own is proven by the
    region's latest log alone."""
    rows, stopped = _check_receipts(profile)
    _echo_receipts(rows, fmt)
    _raise_failures(rows, stopped)


def _check_receipts(profile: Path) -> tuple[list[dict[str, Any]], PolicyViolation | None]:
    """A row per receipt the profile kept, with its status; and the refusal that stopped the checks, if one did
    (the receipts after it are not checked)."""
    from hpf.client.federation_client import FederationClient
    from hpf.client.profile import load_profile
    from hpf.federation.audit.restore_proof import LostInBreak

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
                    if isinstance(latest, LostInBreak):  # a host lost after the region's backup: not tampering
                        row.update(status=latest.describe(), code="", latest_size=latest.latest.size, lost=True)
                    else:
                        row.update(status="still logged", code="", latest_size=latest.size)
                except AuditError as err:
                    row.update(status=_status(err), code=err.code, latest_size=None, message=err.message)
                except PolicyViolation as err:  # e.g. the coordinator's per-person rate limit
                    stopped = err
                    row.update(status=NOT_CHECKED, code="", latest_size=None)
            rows.append(row)
    return rows, stopped


def _rewritten(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == REWRITTEN]


def _unproven(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["code"] and r["status"] != REWRITTEN]


def _lost(rows: list[dict[str, Any]]) -> int:
    return sum(1 for r in rows if r.get("lost"))


def _unchecked(rows: list[dict[str, Any]]) -> int:
    return sum(1 for r in rows if r["status"] == NOT_CHECKED)


def _echo_receipts(rows: list[dict[str, Any]], fmt: TableFormat) -> None:
    """The rows as JSON, or as a table with what the counts mean under it."""
    without_proof = sum(1 for r in rows if not r["own_proof"])
    unproven = _unproven(rows)
    if fmt == TableFormat.json:
        doc = {
            "receipts": rows,
            "rewritten": len(_rewritten(rows)),
            "unproven": len(unproven),
            "not_checked": _unchecked(rows),
            "lost": _lost(rows),
            "kept_without_proof": without_proof,
        }
        typer.echo(json.dumps(doc))
        return
    cells = ((r["node"], str(r["index"]), str(r["size"]), str(r["latest_size"] or ""), r["status"]) for r in rows)
    proved = sum(1 for r in rows if r["status"] == "still logged")
    footer = [
        f"{proved} of {len(rows)} receipt(s) still logged, each proved against the region's latest signed checkpoint"
    ]
    if without_proof:
        footer.append(
            f"note: {without_proof} receipt(s) were kept before receipts carried a proof of their entry: each is "
            "proven by the region's latest log alone, and one whose entry was altered before it was kept cannot "
            "be proven"
        )
    if lost := _lost(rows):
        footer.append(
            f"{lost} receipt(s) were lost in a break the region declared: it was restored from a backup and what "
            "its lost host logged after the backup's checkpoint is gone (not a rewritten log)"
        )
    if unproven:
        footer.append(
            f"{len(unproven)} receipt(s) could not be proven: a proof relayed by the coordinator does not hold; "
            "that blames the region or the coordinator, and `hpf audit verify --receipts` on the region's own "
            "log tells which"
        )
    typer.echo(text_table(("node", "index", "receipt size", "latest size", "status"), cells, after=footer))


def _raise_failures(rows: list[dict[str, Any]], stopped: PolicyViolation | None) -> None:
    """Exit 7 on the first rewritten receipt, else on the receipts that could not be proven; else the refusal
    that stopped the checks."""
    rewritten, unproven = _rewritten(rows), _unproven(rows)
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
            f"{_unchecked(rows)} receipt(s) were not checked: {stopped.message}",
            code=stopped.code,
            rule=stopped.rule,
            hint=f"{stopped.hint}; then run this again" if stopped.hint else "run this again later",
        )
