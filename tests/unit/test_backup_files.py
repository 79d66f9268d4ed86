"""What a backup holds and where it may be written (node.backup), and what a restore accepts (node.restore)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.records import utc_now
from hpf.federation.errors import ConfigError
from hpf.node.backup import BACKUP_FILES, MANIFEST, STATE, file_digest, take_backup
from hpf.node.privacy_budget import PrivacyLedger
from hpf.node.restore import restore_backup

NODE = "north"
NOWHERE = "127.0.0.1:1"


def _state(state: Path) -> Path:
    log = AuditLog.open(state / "audit", NODE, fsync=False)
    log.append({"time": utc_now(), "decision": "allowed", "nonce": f"{1:032x}"})
    log.close()
    PrivacyLedger.open(state / "privacy").close()
    return state


def test_a_target_reached_through_a_link_into_the_state_directory_is_refused(tmp_path: Path) -> None:
    state = _state(tmp_path / "state")
    (state / "kept").mkdir()
    (tmp_path / "backups").symlink_to(state / "kept")
    with pytest.raises(ConfigError) as err:
        take_backup(NODE, state, tmp_path / "backups" / "b1")
    assert err.value.code == "BACKUP_TARGET_INSIDE_STATE"
    assert not (state / "kept" / "b1").exists()  # refused before anything is made
    with pytest.raises(ConfigError) as err:
        take_backup(NODE, state, state)
    assert err.value.code == "BACKUP_TARGET_INSIDE_STATE"


def test_only_the_files_a_backup_holds_are_copied_and_a_restore_takes_them(tmp_path: Path) -> None:
    state = _state(tmp_path / "state")
    earlier = state / "backups" / "b0" / STATE  # a backup someone kept in the state directory, by hand
    shutil.copytree(state, earlier)
    (state / "notes.txt").write_text("the operator's")
    (state / "lookup-facts").mkdir()
    (state / "lookup-facts" / "request.json").write_text("{}")
    old_umask = os.umask(0o002)
    try:
        take_backup(NODE, state, tmp_path / "backup")
    finally:
        os.umask(old_umask)
    backup = tmp_path / "backup"
    held = {p.relative_to(backup / STATE).as_posix() for p in (backup / STATE).rglob("*") if p.is_file()}
    manifest = json.loads((backup / MANIFEST).read_text())
    assert held == set(manifest["files"]) and held <= BACKUP_FILES
    assert {"audit/entries.jsonl", "audit/audit.key", "privacy/privacy-budget.sqlite3"} <= held
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in [backup, *backup.rglob("*")] if p.is_dir())
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in backup.rglob("*") if p.is_file())
    restored = restore_backup(NODE, tmp_path / "new-state", NOWHERE, backup)
    assert restored.checkpoint == 1


def test_a_restore_refuses_a_folder_a_backup_never_makes(tmp_path: Path) -> None:
    state = _state(tmp_path / "state")
    take_backup(NODE, state, tmp_path / "backup")
    (tmp_path / "backup" / STATE / "lookup-facts").mkdir()  # empty: no file for the manifest to list
    with pytest.raises(ConfigError) as err:
        restore_backup(NODE, tmp_path / "new-state", NOWHERE, tmp_path / "backup")
    assert err.value.code == "BACKUP_FILE_UNEXPECTED"
    assert not (tmp_path / "new-state").exists()


def test_a_file_a_backup_never_holds_is_refused_with_its_code_and_its_name_escaped(tmp_path: Path) -> None:
    state = _state(tmp_path / "state")
    take_backup(NODE, state, tmp_path / "backup")
    name = "x\x1b[2J\nforged"
    extra = tmp_path / "backup" / STATE / name
    extra.write_bytes(b"\x00")
    manifest = json.loads((tmp_path / "backup" / MANIFEST).read_text())
    manifest["files"][name] = file_digest(extra)
    (tmp_path / "backup" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError) as err:
        restore_backup(NODE, tmp_path / "new-state", NOWHERE, tmp_path / "backup")
    assert err.value.code == "BACKUP_FILE_UNEXPECTED"
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)
