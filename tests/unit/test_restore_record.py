"""A restore's declared break in the audit log (federation.audit.restore_record), and the node's start that
completes a pending restore once, however often it is repeated (node.restore.complete_restore)."""

from __future__ import annotations

import json
from pathlib import Path

from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.restore_record import DeclaredBreak
from hpf.federation.audit.verify import verify_log
from hpf.node.privacy_budget import PrivacyLedger
from hpf.node.restore import MARKER, complete_restore


def _log(directory: Path, entries: int) -> AuditLog:
    log = AuditLog.open(directory, "north", fsync=False)
    for i in range(entries):
        log.append({"time": "2026-12-06T10:00:00.000Z", "decision": "allowed", "nonce": f"{i:032x}"})
    return log


def _pending(state: Path, log: AuditLog) -> dict[str, object]:
    marker = {
        "pending": True,
        "checkpoint": log.size,
        "root": log.root().hex(),
        "backup_time": "2026-12-06T10:00:01.000Z",
        "backup_time_ms": 1_796_551_201_000,
    }
    (state / MARKER).write_text(json.dumps(marker))
    return marker


def test_a_pending_restore_is_completed_once_even_when_a_start_is_cut_short(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit", 3)
    _pending(tmp_path, log)
    with PrivacyLedger.open(tmp_path / "privacy") as ledger:
        restored_ms = complete_restore(tmp_path, "north", log, ledger)
        assert log.size == 4 and restored_ms > 0
        # a crash after the record but before the marker said so: the next start finds the record, adds nothing
        done = json.loads((tmp_path / MARKER).read_text())
        (tmp_path / MARKER).write_text(json.dumps({**done, "pending": True}))
        assert complete_restore(tmp_path, "north", log, ledger) == restored_ms
        assert log.size == 4 and len(ledger.gaps()) == 1
        assert complete_restore(tmp_path, "north", log, ledger) == restored_ms
    log.close()
    report = verify_log(tmp_path / "audit", log.public_key, node_id="north")
    assert report.ok and [b.checkpoint for b in report.breaks] == [3]


def test_a_restore_record_naming_another_prefix_fails_though_signed(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit", 3)
    wrong = DeclaredBreak("north", 3, bytes(32), "2026-12-06T10:00:01.000Z", "2026-12-06T10:05:00.000Z")
    log.append(wrong.fields(log.sign))
    log.close()
    report = verify_log(tmp_path / "audit", log.public_key, node_id="north")
    assert not report.ok and report.code == "AUDIT_RESTORE_INVALID" and report.first_bad == 3
    assert "root" in (report.problem or "")


def test_a_restore_record_at_another_index_than_it_names_fails(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit", 3)
    elsewhere = DeclaredBreak("north", 2, log.root(2), "2026-12-06T10:00:01.000Z", "2026-12-06T10:05:00.000Z")
    log.append(elsewhere.fields(log.sign))
    log.close()
    report = verify_log(tmp_path / "audit", log.public_key, node_id="north")
    assert not report.ok and report.code == "AUDIT_RESTORE_INVALID"
