"""`hpf node restore`: a node's state brought back from a backup (:mod:`node.backup`) on a new host, and what the
node does at its next start.

The restore runs while the node does not (``RESTORE_NODE_RUNNING`` if its port answers or its audit log is
locked), into an empty or absent state directory (``RESTORE_STATE_NOT_EMPTY``; ``--force`` moves the one there
aside), after checking the backup whole: its manifest (``BACKUP_MANIFEST_INVALID``), that it is this node's
(``BACKUP_NODE_MISMATCH``), that it holds only files a backup writes (``BACKUP_FILE_UNEXPECTED``), every file's
digest and no file more (``BACKUP_DIGEST_MISMATCH``), and its audit log against its checkpoint
(``BACKUP_AUDIT_INVALID``). It copies the state in and leaves ``restored.json``: a restore
is pending.

What happened on the lost host between the backup and the restore is unknown to the restored node. So at its
next start (:func:`complete_restore`), before it serves, the node:

- counts every budget period that overlaps the gap (backup time to restore time) as spent in full by every
  identity (:meth:`node.privacy_budget.PrivacyLedger.add_gap`);
- appends a signed restore record to its audit log, a declared break (:mod:`federation.audit.restore_record`),
  and signs a checkpoint for it;
- keeps the restore time in ``restored.json`` for good (and in the restore record: at every start the node takes
  the later of the two, so the marker's loss does not make it forget): every envelope signed before the restore
  time and one envelope window (``envelope_window_s``) after it is refused (``AUTH_SIGNED_BEFORE_RESTORE``), for
  its nonce may have been spent on the lost host, which took questions signed up to a window ahead of its clock;
  until that time has passed the node reports NOT_SERVING (:func:`questions_from_ms`).

The manifest is not signed: :func:`read_manifest` allows only its fields in their forms (a node id, one backup
time in text and milliseconds, not after the restore) and quotes none of them in its refusals; a backup time after
the host's clock at the node's start is ``RESTORE_CLOCK_BEHIND``.

Each step is safe to repeat: a start cut short by a crash does them again without doing any twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.merkle import EMPTY_ROOT
from hpf.federation.audit.records import ENTRIES, Checkpoint
from hpf.federation.audit.restore_record import RESTORED, DeclaredBreak
from hpf.federation.errors import ConfigError
from hpf.federation.health_check import listening, local_address
from hpf.federation.private_files import PRIVATE, read_regular, sync_dir, write_file
from hpf.node.backup import (
    BACKUP_DIRS,
    BACKUP_FILES,
    MARKER,
    PRIVATE_DIR,
    STATE,
    check_audit_copy,
    file_digest,
)
from hpf.node.backup_manifest import MAX_TIME_MS, iso_of_ms, ms_of_iso, read_manifest
from hpf.node.config import NodeConfig
from hpf.node.keys import AUDIT_DIR
from hpf.node.privacy_budget import PRIVACY_DIR, PrivacyLedger

log = logging.getLogger("hpf.node")


@dataclass(frozen=True)
class Restored:
    node_id: str
    checkpoint: int
    backup_time: str
    moved_aside: Path | None


def check_backup(source: Path, node_id: str, state: Path | None = None) -> dict[str, Any]:
    """The backup's manifest, once the backup is whole, this node's, and its audit log verifies; ``state`` is
    where its state directory's copy is checked (default: the backup's own)."""
    manifest = read_manifest(source)
    checkpoint: Checkpoint | None = manifest["checkpoint"]
    if manifest["node_id"] != node_id or (checkpoint is not None and checkpoint.node_id != node_id):
        raise ConfigError(
            f"{source} is a backup of node {manifest['node_id']}, not of {node_id}",
            code="BACKUP_NODE_MISMATCH",
            hint="restore each node from its own backup, with its own node.yaml",
        )
    state = source / STATE if state is None else state
    present: set[str] = set()
    for path in state.rglob("*") if state.is_dir() else ():
        rel = path.relative_to(state).as_posix()
        if path.is_dir() and not path.is_symlink():
            if rel not in BACKUP_DIRS:
                raise _unexpected(source, f"folder {rel!r}")
        else:
            present.add(rel)
    listed: dict[str, str] = manifest["files"]
    for rel in sorted(present | set(listed)):
        if rel not in BACKUP_FILES:  # whatever the manifest says: a backup never holds it
            raise _unexpected(source, f"file {rel!r}")
        path = state / rel
        if rel not in listed or rel not in present or path.is_symlink():
            what = "is not in the manifest" if rel not in listed else "is missing"
            raise ConfigError(
                f"{source}: file {rel} {what}", code="BACKUP_DIGEST_MISMATCH", hint="take or fetch the backup again"
            )
        if file_digest(path) != listed[rel]:
            raise ConfigError(
                f"{source}: file {rel} is not the one the manifest lists (its sha256 differs)",
                code="BACKUP_DIGEST_MISMATCH",
                hint="the backup was altered or damaged: take or fetch it again",
            )
    check_audit_copy(state / AUDIT_DIR, node_id, manifest["checkpoint"])
    return manifest


def _unexpected(source: Path, what: str) -> ConfigError:
    return ConfigError(
        f"{source}: {what} is not one a backup holds",
        code="BACKUP_FILE_UNEXPECTED",
        hint="a backup holds the node's audit log, privacy ledger, keys and state files only "
        "(its WAL, lookup requests and other files never): take or fetch the backup again",
    )


def refuse_if_running(state_dir: Path, listen: str) -> None:
    """``RESTORE_NODE_RUNNING`` if something answers on the node's port or holds its audit log's lock."""
    if listening(local_address(listen), timeout=0.5):
        raise ConfigError(
            f"something answers on {listen}, the node's port: stop the node before restoring it",
            code="RESTORE_NODE_RUNNING",
        )
    entries = state_dir / AUDIT_DIR / ENTRIES
    if entries.is_file():
        fd = os.open(entries, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{state_dir}: a running node holds its audit log: stop the node before restoring it",
                code="RESTORE_NODE_RUNNING",
            ) from None
        finally:
            os.close(fd)


def restore_backup(node_id: str, state_dir: Path, listen: str, source: Path, *, force: bool = False) -> Restored:
    """Check the backup in ``source`` and copy it in as ``state_dir`` of node ``node_id`` (which must not run),
    with the restore marker the node completes at its next start."""
    refuse_if_running(state_dir, listen)
    read = read_manifest(source)  # a folder that is no backup is refused before anything is copied
    if read["node_id"] != node_id:
        check_backup(source, node_id)  # BACKUP_NODE_MISMATCH
    occupied = state_dir.exists() and (not state_dir.is_dir() or any(state_dir.iterdir()))
    if occupied and not force:
        raise ConfigError(
            f"{state_dir} holds state already: restoring over it would mix two nodes' histories",
            code="RESTORE_STATE_NOT_EMPTY",
            hint="restore into an empty state directory, or pass --force to move this one aside first",
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    staging = state_dir.with_name(f".{state_dir.name}.restoring-{stamp}")
    aside = state_dir.with_name(f"{state_dir.name}.before-restore-{stamp}") if occupied else None
    try:
        shutil.copytree(source / STATE, staging, symlinks=True)  # a link stays one, and is refused
        for root, _dirs, files in os.walk(staging):
            os.chmod(root, PRIVATE_DIR)
            for name in files:
                if not (Path(root) / name).is_symlink():
                    os.chmod(Path(root) / name, PRIVATE)
        try:  # the copy is what is checked: what the node starts on is what verified
            manifest = check_backup(source, node_id, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        checkpoint: Checkpoint | None = manifest["checkpoint"]
        marker = {
            "pending": True,
            "checkpoint": 0 if checkpoint is None else checkpoint.size,
            "root": (EMPTY_ROOT if checkpoint is None else checkpoint.root).hex(),
            "backup_time": manifest["backup_time"],
            "backup_time_ms": manifest["backup_time_ms"],
        }
        write_file(staging / MARKER, json.dumps(marker).encode(), PRIVATE)
        if aside is not None:
            state_dir.rename(aside)
        elif state_dir.is_dir():
            state_dir.rmdir()  # empty
        staging.rename(state_dir)
        sync_dir(state_dir.parent)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(
            f"cannot restore into {state_dir} ({exc.strerror or type(exc).__name__})",
            code="BACKUP_FAILED",
            hint="give the node's user a state directory it can create and write",
        ) from None
    return Restored(node_id, 0 if checkpoint is None else checkpoint.size, manifest["backup_time"], aside)


def _marker(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / MARKER
    if not path.exists():
        return None
    try:
        doc = json.loads(read_regular(path, 4096))
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("pending"), bool):
        raise ConfigError(
            f"{path} cannot be read: whether a restore is pending is unknown",
            code="RESTORE_STATE_MISMATCH",
            hint="restore the node from its backup again",
        )
    return doc


def restored_at_ms(state_dir: Path) -> int:
    """When this node was last restored, as its restore marker says (Unix milliseconds; 0: never, or the restore
    is still pending). At its start the node takes the later of this and its audit log's last restore record."""
    doc = _marker(state_dir)
    return int(doc.get("restored_at_ms", 0)) if doc is not None and not doc["pending"] else 0


def questions_from_ms(restored_ms: int, window_s: float) -> int:
    """From when a node restored at ``restored_ms`` takes questions (Unix milliseconds; 0: never restored): a
    question signed earlier may have run on the lost host, which took questions signed up to its envelope window
    (``window_s``) ahead of its clock, and was lost before the restore.

    >>> questions_from_ms(1_000_000, 300), questions_from_ms(0, 300)
    (1300000, 0)
    """
    return restored_ms + int(window_s * 1000) if restored_ms else 0


def open_after_restore(
    config: NodeConfig, audit: AuditLog, on_refusal: Callable[[], None]
) -> tuple[PrivacyLedger, int]:
    """At a node's start, its audit log open: its privacy ledger, once a pending restore is completed, and when
    the node was last restored (Unix milliseconds; 0: never). The log is closed if this fails."""
    try:
        ledger = PrivacyLedger.open(config.state_dir / PRIVACY_DIR, on_refusal=on_refusal)
        try:
            restored_ms = complete_restore(config.state_dir, config.node_id, audit, ledger)
        except BaseException:
            ledger.close()
            raise
    except BaseException:
        audit.close()
        raise
    if restored_ms:
        taken_from = questions_from_ms(restored_ms, config.envelope_window_s)
        log.info(
            "node %s: restored from a backup at %s; questions signed before %s (a window of %d s after it) are "
            "refused, and the node reports NOT_SERVING until then",
            config.node_id,
            iso_of_ms(restored_ms),
            iso_of_ms(taken_from),
            config.envelope_window_s,
        )
    return ledger, restored_ms


def logged_restore_ms(audit: AuditLog) -> int:
    """The restore time of the last restore record in ``audit`` (Unix milliseconds; 0: none)."""
    return max((ms_of_iso(b.restore_time) for b in audit.breaks), default=0)


def complete_restore(state_dir: Path, node_id: str, audit: AuditLog, ledger: PrivacyLedger) -> int:
    """At a node's start: finish a pending restore (see the module) and return when this node was last restored
    (Unix milliseconds; 0: never): the later of the restore marker's time and the audit log's last restore
    record's, so a marker lost or edited does not make the node forget its restore."""
    doc = _marker(state_dir)
    logged_ms = logged_restore_ms(audit)
    if doc is None:
        return logged_ms
    if not doc["pending"]:
        marked = doc.get("restored_at_ms", 0)
        return max(marked if type(marked) is int else 0, logged_ms)
    size, root, backup_ms, backup_time = (doc.get(k) for k in ("checkpoint", "root", "backup_time_ms", "backup_time"))
    if (
        type(size) is not int
        or not isinstance(root, str)
        or type(backup_ms) is not int
        or not isinstance(backup_time, str)
        or not 0 <= backup_ms <= MAX_TIME_MS
        or backup_time != iso_of_ms(backup_ms)
    ):
        raise ConfigError(f"{state_dir / MARKER} is not a restore marker", code="RESTORE_STATE_MISMATCH")
    restored_ms = doc.get("restored_at_ms")
    if type(restored_ms) is not int:  # the first try: fix the restore time, durably, before anything uses it
        restored_ms = int(time.time() * 1000)
        if backup_ms > restored_ms:  # the ledger's gap would run backwards
            raise ConfigError(
                f"{state_dir / MARKER}: the backup was taken at {backup_time}, after this host's clock "
                f"({iso_of_ms(restored_ms)})",
                code="RESTORE_CLOCK_BEHIND",
                hint="set this host's clock right, then start the node again",
            )
        doc["restored_at_ms"] = restored_ms
        write_file(state_dir / MARKER, json.dumps(doc).encode(), PRIVATE)
    elif backup_ms > restored_ms:
        raise ConfigError(f"{state_dir / MARKER} is not a restore marker", code="RESTORE_STATE_MISMATCH")
    ledger.add_gap(backup_ms / 1000.0, restored_ms / 1000.0, size)
    declared = DeclaredBreak(node_id, size, bytes.fromhex(root), backup_time, iso_of_ms(restored_ms))
    if audit.size == size and audit.root() == declared.root:
        audit.append(declared.fields(audit.sign))
        audit.breaks = (*audit.breaks, declared)  # the log declared it when opened had it been there then
    elif not (audit.size == size + 1 and json.loads(audit.entry(size)).get("kind") == RESTORED):
        raise ConfigError(
            f"{state_dir}: the audit log holds {audit.size} entries, not the {size} of the backup it was restored from",
            code="RESTORE_STATE_MISMATCH",
            hint="restore the node from its backup again",
        )
    write_file(state_dir / MARKER, json.dumps({**doc, "pending": False}).encode(), PRIVATE)
    return max(restored_ms, logged_ms)
