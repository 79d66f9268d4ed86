"""Attacks on `hpf node backup` / `hpf node restore` (node.backup, node.restore, node.budget_gaps) and on the declared
break they leave in the audit log (federation.audit.restore_record, federation.audit.scan).

Each test states what must hold; a node's state is made with the audit log and ledger themselves (no server).
"""

from __future__ import annotations

import json
import shutil
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.records import utc_now
from hpf.federation.audit.restore_record import RESTORED, DeclaredBreak
from hpf.federation.audit.verify import read_entries, verify_log
from hpf.federation.errors import AuthError, ConfigError, FederationError
from hpf.node.admission import verify_envelope
from hpf.node.backup import MANIFEST, file_digest, iso_of_ms, take_backup
from hpf.node.privacy_budget import PrivacyLedger
from hpf.node.restore import MARKER, complete_restore, restore_backup

NODE = "north"
NOWHERE = "127.0.0.1:1"  # nothing answers there: the node is not running
WINDOW_S = 300  # envelope_window_s's default


def _state(state: Path, entries: int = 3) -> Path:
    log = AuditLog.open(state / "audit", NODE, fsync=False)
    for i in range(entries):
        log.append({"time": utc_now(), "decision": "allowed", "nonce": f"{i:032x}"})
    log.close()
    PrivacyLedger.open(state / "privacy").close()
    return state


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    state = _state(tmp_path / "lost-host-state")
    take_backup(NODE, state, tmp_path / "backup")
    return tmp_path / "backup"


def _edited(backup: Path, target: Path, **fields: object) -> Path:
    """A copy of ``backup`` whose (unsigned) manifest has ``fields`` changed."""
    shutil.copytree(backup, target)
    manifest = json.loads((target / MANIFEST).read_text())
    manifest.update(fields)
    (target / MANIFEST).write_text(json.dumps(manifest))
    return target


def _start(state: Path) -> int:
    """What the node does at its start about a restore; the restore time (ms)."""
    log = AuditLog.open(state / "audit", NODE, fsync=False)
    try:
        with PrivacyLedger.open(state / "privacy") as ledger:
            return complete_restore(state, NODE, log, ledger)
    finally:
        log.close()


@pytest.mark.parametrize(
    "backup_time",
    ["not a time\nforged line", "2999-01-01T00:00:00.000Z", "2020-01-01T00:00:00.000Z"],
    ids=["garbage", "after-the-restore", "not-the-gap-start"],
)
def test_the_backup_time_a_restore_record_signs_is_checked_or_refused(
    backup: Path, tmp_path: Path, backup_time: str
) -> None:
    """The manifest is not signed and its ``backup_time`` (text) is not checked, nor matched to ``backup_time_ms``
    (what the ledger's gap starts at): the node signs whatever it says into its restore record. Either the restore
    refuses such a manifest with a code, or the record the node signs verifies and names the gap it charged."""
    edited = _edited(backup, tmp_path / "edited", backup_time=backup_time)
    state = tmp_path / "new-host-state"
    try:
        restore_backup(NODE, state, NOWHERE, edited)
    except ConfigError as err:
        assert err.code == "BACKUP_MANIFEST_INVALID"
        return
    _start(state)
    report = verify_log(state / "audit", node_id=NODE)
    assert report.ok, f"the restored node's own restore record fails: {report.code} {report.problem}"
    with PrivacyLedger.open(state / "privacy") as ledger:
        (gap_start, _end, _cp) = ledger.gaps()[0]
    assert [b.backup_time for b in report.breaks] == [iso_of_ms(round(gap_start * 1000))]


def test_a_backup_time_in_the_future_is_refused_with_a_code_not_a_crash_at_start(backup: Path, tmp_path: Path) -> None:
    """``backup_time_ms`` after the restore: the ledger's gap would run backwards. The node must not fail to start
    with a bare ValueError (no code) after the restore took the backup."""
    future = int(time.time() * 1000) + 10 * 24 * 3600 * 1000
    edited = _edited(backup, tmp_path / "edited", backup_time_ms=future)
    state = tmp_path / "new-host-state"
    try:
        restore_backup(NODE, state, NOWHERE, edited)
    except FederationError as err:
        assert err.code == "BACKUP_MANIFEST_INVALID"
        return
    try:
        _start(state)
    except FederationError:
        pass  # a coded refusal is fine
    except ValueError as exc:
        pytest.fail(f"the node's start fails without an error code: {type(exc).__name__}: {exc}")


def test_a_restore_record_dated_in_the_future_does_not_excuse_a_rewritten_log(tmp_path: Path) -> None:
    """A restore record whose restore time is later than the checkpoint that covers it (a host clock far ahead, or
    the key's holder) turns every later checkpoint of the restored log itself into "lost in the break": a log
    rewritten after the restore then verifies against a checkpoint saved from it. The restored node's own
    checkpoints (those that cover the record) must never be excused."""
    first = tmp_path / "log"
    log = AuditLog.open(first, NODE, fsync=False)
    for i in range(3):
        log.append({"time": utc_now(), "decision": "allowed", "nonce": f"{i:032x}"})
    far = DeclaredBreak(NODE, 3, log.root(), utc_now(), "2999-01-01T00:00:00.000Z")
    log.append(far.fields(log.sign))
    log.close()
    rewritten = tmp_path / "rewritten"
    shutil.copytree(first, rewritten)
    kept, other = AuditLog.open(first, NODE, fsync=False), AuditLog.open(rewritten, NODE, fsync=False)
    for i in range(3):
        kept.append({"time": utc_now(), "decision": "allowed", "nonce": f"{10 + i:032x}"})
        other.append({"time": utc_now(), "decision": "denied", "nonce": f"{20 + i:032x}"})
    saved = kept.latest_checkpoint()  # an auditor's copy, taken after the restore, covering the record
    kept.close()
    other.close()
    assert saved is not None and saved.size == 7
    report = verify_log(rewritten, other.public_key, older=saved, node_id=NODE)
    assert not report.ok, f"a rewritten log passes: {report.lost}"
    assert report.code in ("AUDIT_INCONSISTENT", "AUDIT_RESTORE_INVALID")


def test_a_question_answered_ahead_of_the_lost_hosts_clock_is_not_answered_again(backup: Path, tmp_path: Path) -> None:
    """The envelope window is two-sided: the lost host answers a question signed up to ``envelope_window_s`` ahead
    of its clock. Restored within that time (the multi-host test measures 3-4 s), the node takes the question as
    signed after the restore, and its nonce is not in the backup's log: it runs twice. The guide asks operators to
    wait a window before starting; nothing enforces it."""
    state = tmp_path / "new-host-state"
    restore_backup(NODE, state, NOWHERE, backup)
    restored_ms = _start(state)
    lost_answered_ms = restored_ms - 5_000  # the lost host's last answer, 5 s before the restored node started
    issued_ms = lost_answered_ms + 200_000  # a client clock 200 s ahead
    assert abs(issued_ms - lost_answered_ms) / 1000 <= WINDOW_S  # the lost host took it: within its window
    assert abs(issued_ms - (restored_ms + 1_000)) / 1000 <= WINDOW_S  # and it is fresh to the restored node
    nonce = bytes(range(16))
    assert nonce.hex() not in {e.get("nonce") for e in read_entries(state / "audit")}  # the replay guard forgot it
    envelope = SimpleNamespace(issued_at_ms=issued_ms, purpose="", consent_ref="", nonce=nonce)
    verified = SimpleNamespace(envelope=envelope, signer=SimpleNamespace(common_name="someone", role="analyst"))
    node = SimpleNamespace(
        verifier=SimpleNamespace(verify=lambda *_a, **_k: verified, window_s=WINDOW_S),
        restored_at_ms=restored_ms,
        policy=SimpleNamespace(purposes={}),
    )
    asked = SimpleNamespace(
        request=SimpleNamespace(envelope=None), trail=SimpleNamespace(operation="query"), describe=lambda _e: "q"
    )
    with pytest.raises(AuthError) as err:
        verify_envelope(node, asked)  # type: ignore[arg-type]
    assert err.value.code == "AUTH_SIGNED_BEFORE_RESTORE"


def test_a_backup_is_not_written_inside_the_state_directory_it_copies(tmp_path: Path) -> None:
    """A backup folder under the state directory copies itself into itself, and every later backup copies it again
    (with the node's private keys) as if it were the node's state."""
    state = _state(tmp_path / "state")
    with pytest.raises(ConfigError):
        take_backup(NODE, state, state / "backups" / "b1")


def test_every_folder_of_a_backup_is_private(backup: Path) -> None:
    """The backup holds the node's private keys: every folder 0700, as the module says, not the umask's."""
    loose = [
        str(p.relative_to(backup))
        for p in [backup, *backup.rglob("*")]
        if p.is_dir() and stat.S_IMODE(p.stat().st_mode) != 0o700
    ]
    assert loose == []


@pytest.mark.parametrize("extra", ["privacy/privacy-budget.sqlite3-wal", "lookup-requests/request.json"])
def test_a_restore_refuses_a_file_a_backup_never_holds(backup: Path, tmp_path: Path, extra: str) -> None:
    """A backup never holds the ledger's WAL (the ledger is copied through SQLite) nor the lookup request folder
    (requests to the running node): a restore copies in whatever the manifest lists, so a WAL applied over the
    ledger that was checked, or a request the node acts on, passes. Allow-list what a backup can hold."""
    edited = tmp_path / "edited"
    shutil.copytree(backup, edited)
    path = edited / "state" / extra
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(b"\x00" * 64)
    manifest = json.loads((edited / MANIFEST).read_text())
    manifest["files"][extra] = file_digest(path)
    (edited / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError):
        restore_backup(NODE, tmp_path / "new-host-state", NOWHERE, edited)


def test_the_restore_time_outlives_the_restore_marker(backup: Path, tmp_path: Path) -> None:
    """The restore time lives only in ``restored.json``; its loss (a cleanup, an edit) makes the node forget it and
    take questions signed before the restore, though its own log holds the signed restore record. The log's last
    restore record must keep it, or the start must refuse."""
    state = tmp_path / "new-host-state"
    restore_backup(NODE, state, NOWHERE, backup)
    restored_ms = _start(state)
    (state / MARKER).unlink()
    assert any(e.get("kind") == RESTORED for e in read_entries(state / "audit"))
    try:
        again = _start(state)
    except ConfigError:
        return  # refusing to start is fine
    assert again >= restored_ms


def test_a_foreign_node_id_in_a_manifest_is_not_echoed_raw(backup: Path, tmp_path: Path) -> None:
    """The manifest's node id is not checked as a node id: a backup error prints it as it is, control characters
    (a forged log line, terminal escapes) included."""
    edited = _edited(backup, tmp_path / "edited", node_id="south\x1b[2J\n2026-12-06 INFO forged line")
    with pytest.raises(ConfigError) as err:
        restore_backup(NODE, tmp_path / "new-host-state", NOWHERE, edited)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)
