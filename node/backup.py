"""`hpf node backup`: a consistent copy of a node's state, taken while it runs or not.

A backup is a folder (mode 0700; every file 0600: it holds the node's private keys) with ``manifest.json``
and ``state/``, the node's state directory as of the backup:

- the audit log up to its last signed checkpoint: the log is append-only and each entry is on disk before its
  checkpoint, so the first ``N`` lines of ``entries.jsonl`` and the checkpoint lines up to the one of size ``N``
  are a whole log, whatever the node appends meanwhile; the backup verifies it before it is done;
- the privacy ledger through SQLite's online backup, which takes the database's lock for a moment and copies a
  committed state (a ledger copied after checkpoint ``N`` holds charges made after it: a restore errs on the
  conservative side);
- the keys, the revocation states and the restore marker as they are: keys never change, and the node writes its
  state files whole and atomically.

A backup holds these files (:data:`BACKUP_FILES`, the one list the backup copies from and the restore accepts)
and nothing else: not the ledger's ``-wal``/``-shm`` (the ledger is copied through SQLite), not the lookup-facts
request folder (requests to the running node), not a file in progress, and never a backup kept in the state
directory (a target inside it is refused, ``BACKUP_TARGET_INSIDE_STATE``). Every folder is 0700 and every file
0600, whatever the umask. The TLS key and certificate and ``node.yaml`` live outside the state directory: they are
the operator's to keep.

``manifest.json`` names the node, the backup time (taken before anything is copied: the start of the gap a
restore charges), the checkpoint (size, root, time, signature) and each file's sha256. The restore
(:mod:`node.restore`) checks all of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hpf.federation.audit.keys import KEY as AUDIT_KEY
from hpf.federation.audit.keys import PUBLIC_KEY as AUDIT_PUBLIC_KEY
from hpf.federation.audit.keys import read_signing_public_key
from hpf.federation.audit.records import CHECKPOINTS, ENTRIES, Checkpoint, parse_checkpoint_line
from hpf.federation.audit.verify import verify_log
from hpf.federation.consent.revocations import STATE_FILE as CONSENT_REVOCATION_STATE
from hpf.federation.crypto.sealing import AGREEMENT_KEY, AGREEMENT_PUBLIC, SUBJECT_KEY
from hpf.federation.errors import AuditError, ConfigError
from hpf.federation.private_files import PRIVATE, sync_dir, write_file
from hpf.node.config import REVOCATION_STATE
from hpf.node.keys import AUDIT_DIR
from hpf.node.privacy_budget import LEDGER_FILE, PRIVACY_DIR
from hpf.node.protection import NOISE_KEY

MANIFEST = "manifest.json"
STATE = "state"  # the copy of the state directory, inside a backup
MARKER = "restored.json"  # in the state directory: a pending restore, then the last restore's time (node.restore)
FORMAT = 1
PRIVATE_DIR = 0o700
_CHUNK = 1 << 20

# What a backup holds, as paths relative to the state directory: the one list `take_backup` copies from and a
# restore accepts (any other file is refused, BACKUP_FILE_UNEXPECTED). The log's two files and the ledger are
# copied each in their own way (below); every other file as it is.
AUDIT_LOG_FILES = (f"{AUDIT_DIR}/{CHECKPOINTS}", f"{AUDIT_DIR}/{ENTRIES}")
LEDGER = f"{PRIVACY_DIR}/{LEDGER_FILE}"  # never its -wal or -shm: the copy is one SQLite file
COPIED_AS_IS = (
    f"{AUDIT_DIR}/{AUDIT_KEY}",
    f"{AUDIT_DIR}/{AUDIT_PUBLIC_KEY}",
    f"{AUDIT_DIR}/{SUBJECT_KEY}",
    AGREEMENT_KEY,
    AGREEMENT_PUBLIC,
    NOISE_KEY,
    REVOCATION_STATE,
    CONSENT_REVOCATION_STATE,
    MARKER,
)
BACKUP_FILES = frozenset((*AUDIT_LOG_FILES, LEDGER, *COPIED_AS_IS))
BACKUP_DIRS = frozenset(str(PurePosixPath(rel).parent) for rel in BACKUP_FILES) - {"."}


@dataclass(frozen=True)
class BackupDone:
    node_id: str
    directory: Path
    checkpoint: int
    ms: float


def iso_of_ms(ms: int) -> str:
    """Unix milliseconds as RFC 3339 UTC with milliseconds, exactly (no float), as the audit log writes times.

    >>> iso_of_ms(1_700_000_000_123), iso_of_ms(0)
    ('2023-11-14T22:13:20.123Z', '1970-01-01T00:00:00.000Z')
    """
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _failed(what: str, exc: OSError | sqlite3.Error) -> ConfigError:
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return ConfigError(f"backup: {what} ({why})", code="BACKUP_FAILED", hint="see that the paths are readable/writable")


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or under it, both resolved (symbolic links followed)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError as exc:
        raise _failed(f"cannot resolve {path}", exc) from None
    except RuntimeError:  # a loop of symbolic links (before Python 3.13)
        raise ConfigError(f"cannot resolve {path}: a loop of symbolic links", code="BACKUP_FAILED") from None


def private_dirs(top: Path, rel: PurePosixPath | Path) -> None:
    """Make ``top/rel`` and every folder between them, each 0700 whatever the umask (``top`` exists)."""
    path = top
    for part in rel.parts:
        path = path / part
        path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        os.chmod(path, PRIVATE_DIR)


def prepare_target(target: Path, state_dir: Path | None = None) -> None:
    """Make ``target`` (mode 0700); a folder already there must be empty (``BACKUP_TARGET_NOT_EMPTY``) and not in
    the node's ``state_dir`` (``BACKUP_TARGET_INSIDE_STATE``: it would copy itself, keys and all, into every later
    backup)."""
    if state_dir is not None and _inside(target, state_dir):
        raise ConfigError(
            f"{target} is inside the node's state directory {state_dir}: a backup is written outside it",
            code="BACKUP_TARGET_INSIDE_STATE",
            hint="name a folder outside the state directory, e.g. /backups/<node>/<time>",
        )
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(
            f"{target} is not an empty folder: a backup is written only into a new or empty one",
            code="BACKUP_TARGET_NOT_EMPTY",
            hint="name a new folder, e.g. one per backup time",
        )
    try:
        target.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        os.chmod(target, PRIVATE_DIR)
    except OSError as exc:
        raise _failed(f"cannot make {target}", exc) from None


def _last_checkpoint(path: Path) -> tuple[Checkpoint | None, int]:
    """The last whole checkpoint line of ``path`` (at this moment) and where its line ends."""
    with path.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        start = max(0, end - 8192)  # a checkpoint line is about 230 bytes
        fh.seek(start)
        tail = fh.read(end - start)
    cut = tail.rfind(b"\n")
    line_start = tail.rfind(b"\n", 0, max(cut, 0)) + 1
    if cut < 0 or (line_start == 0 and start > 0):
        return None, 0
    checkpoint = parse_checkpoint_line(tail[line_start:cut])
    return (checkpoint if isinstance(checkpoint, Checkpoint) else None), start + cut + 1


def _copy_prefix(source: Path, target: Path, *, lines: int | None = None, size: int | None = None) -> str:
    """Copy the first ``lines`` lines (or ``size`` bytes) of ``source`` to ``target`` (0600); its sha256."""
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), PRIVATE)
    with source.open("rb") as src, os.fdopen(fd, "wb") as out:
        left_lines, left_bytes = lines, size
        while left_lines != 0 and left_bytes != 0:
            chunk = src.read(_CHUNK if left_bytes is None else min(_CHUNK, left_bytes))
            if not chunk:
                break
            if left_lines is not None:
                count = chunk.count(b"\n")
                if count >= left_lines:
                    cut = -1
                    for _ in range(left_lines):
                        cut = chunk.index(b"\n", cut + 1)
                    chunk, count = chunk[: cut + 1], left_lines
                left_lines -= count
            if left_bytes is not None:
                left_bytes -= len(chunk)
            digest.update(chunk)
            out.write(chunk)
        if (left_lines or 0) > 0 or (left_bytes or 0) > 0:
            raise ConfigError(f"backup: {source} ended early", code="BACKUP_FAILED")
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _copy_ledger(source: Path, target: Path) -> str:
    """The privacy ledger through SQLite's online backup (a committed state, even while the node charges)."""
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), PRIVATE))
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30.0)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one file: no WAL beside it
        finally:
            dst.close()
    finally:
        src.close()
    return file_digest(target)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def take_backup(node_id: str, state_dir: Path, target: Path) -> BackupDone:
    """Back up the state of node ``node_id`` in ``state_dir`` into ``target`` (new or empty), running or not."""
    started = time.monotonic()
    backup_ms = int(time.time() * 1000)  # before anything is read: the gap a restore charges starts here
    prepare_target(target, state_dir)
    out = target / STATE
    audit_in = state_dir / AUDIT_DIR
    if not (audit_in / CHECKPOINTS).is_file() or not (audit_in / AUDIT_KEY).is_file():
        raise ConfigError(
            f"{state_dir} holds no audit log with a checkpoint: nothing to back up",
            code="BACKUP_FAILED",
            hint="back up a node that has started at least once (hpf node keys makes its keys)",
        )
    files: dict[str, str] = {}
    try:
        private_dirs(target, PurePosixPath(STATE, AUDIT_DIR))
        checkpoint, cut = _last_checkpoint(audit_in / CHECKPOINTS)
        if checkpoint is None and (audit_in / CHECKPOINTS).stat().st_size > 0:
            raise ConfigError(f"{audit_in}: its last checkpoint cannot be read", code="BACKUP_FAILED")
        # a node that has logged nothing yet has no checkpoint: its log is empty, and so is the backup's
        checkpoints, entries = AUDIT_LOG_FILES
        files[checkpoints] = _copy_prefix(state_dir / checkpoints, out / checkpoints, size=cut)
        files[entries] = _copy_prefix(
            state_dir / entries, out / entries, lines=0 if checkpoint is None else checkpoint.size
        )
        if (state_dir / LEDGER).is_file():
            private_dirs(out, PurePosixPath(LEDGER).parent)
            files[LEDGER] = _copy_ledger(state_dir / LEDGER, out / LEDGER)
        for rel in COPIED_AS_IS:  # a file absent (a node that never wrote it) or a link is left out
            if (state_dir / rel).is_file() and not (state_dir / rel).is_symlink():
                private_dirs(out, PurePosixPath(rel).parent)
                files[rel] = _copy_prefix(state_dir / rel, out / rel)
    except (OSError, sqlite3.Error) as exc:
        raise _failed(f"cannot copy {state_dir} into {target}", exc) from None
    check_audit_copy(out / AUDIT_DIR, node_id, checkpoint)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "node_id": node_id,
        "backup_time": iso_of_ms(backup_ms),
        "backup_time_ms": backup_ms,
        "checkpoint": None if checkpoint is None else checkpoint.to_dict(),
        "files": dict(sorted(files.items())),
    }
    write_file(target / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n", PRIVATE)
    sync_dir(target)
    return BackupDone(
        node_id, target, 0 if checkpoint is None else checkpoint.size, (time.monotonic() - started) * 1000
    )


def check_audit_copy(audit_dir: Path, node_id: str, checkpoint: Checkpoint | None) -> None:
    """The copied log must verify (every root, the latest signature, with the backup's own audit key) and end at
    ``checkpoint`` (None: a log with no entry yet): ``BACKUP_AUDIT_INVALID`` otherwise."""
    try:
        key = Ed25519PublicKey.from_public_bytes(read_signing_public_key(audit_dir))
    except AuditError as err:
        raise ConfigError(f"{audit_dir}: {err.message}", code="BACKUP_AUDIT_INVALID") from None
    report = verify_log(audit_dir, key, node_id=node_id, check_all_signatures=False)
    size = 0 if checkpoint is None else checkpoint.size
    if not report.ok or report.unsigned or report.latest != checkpoint or report.entries != size:
        why = report.message if not report.ok else f"it does not end at the checkpoint of size {size}"
        raise ConfigError(
            f"{audit_dir}: the audit log does not verify against its checkpoint: {why}",
            code="BACKUP_AUDIT_INVALID",
            hint="take the backup again from the node's state directory",
        )
