"""A node's tamper-evident audit log: an RFC 6962 Merkle log of requests with Ed25519-signed checkpoints.

Every request a node sees, allowed or refused, is one entry. On disk, in the log's directory:

- ``entries.jsonl``: one entry per line, the exact bytes of :func:`~federation.audit.records.canonical_json`
  (sorted keys, no spaces, UTF-8); entry ``i`` carries ``"index": i`` and ``"node"``, the node's id, so an
  entry (and a receipt of it) is bound to the node's log, as each checkpoint is by the node id it signs. A leaf
  of the Merkle tree is ``leaf_hash(line)``.
- ``checkpoints.jsonl``: after every append, one signed checkpoint ``(node_id, size, root, time)`` for the
  new size: the node's signed statement that its first ``size`` entries have tree head ``root``.
- ``audit.key``: the node's Ed25519 signing key (PKCS#8 PEM, mode 0600), made on first open;
  ``audit.pub``: its public half (SubjectPublicKeyInfo PEM) (:mod:`federation.audit.keys`). An auditor pins the
  key they got from the node's operator or the catalog (:meth:`AuditLog.public_key_b64`), never the copy beside
  the log.

Each answer the node returns carries a :class:`~federation.audit.records.Receipt` (the entry, the checkpoint that
covers it and the entry's inclusion proof in that checkpoint's tree), so a client or an auditor holding a receipt
or an older checkpoint detects a log that was later rewritten or cut short
(:func:`federation.audit.verify.verify_log`), even by someone holding the node's key. Without an outside
checkpoint, the log's own checkpoints detect any edit, deletion or reordering of entries, entries cut without
their checkpoints, and entries appended by someone without the key (more than one entry after the last
checkpoint); they cannot show that both files were cut back to the same earlier prefix (see
:mod:`federation.audit.verify`).

A crash can interrupt an append in three places, each repaired when the node next opens the log
(:mod:`federation.audit.repair`): in the middle of the entry line or of the checkpoint line (a last line without
its newline: it is cut off, its bytes kept in ``entries.jsonl.torn-<UTC time>`` or
``checkpoints.jsonl.torn-<UTC time>`` beside it), or between the two writes (one entry without a checkpoint: the
node signs it).

This module is the node's side: :class:`AuditLog` opens (checking all of it), appends and proves.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import logging
import os
import threading
from array import array
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hpf.federation.audit import merkle
from hpf.federation.audit.keys import load_or_create_signing_key, public_key_raw
from hpf.federation.audit.records import (
    CHECKPOINTS,
    ENTRIES,
    Checkpoint,
    Receipt,
    Scalar,
    canonical_json,
    checkpoint_line,
    is_node_id,
    utc_now,
)
from hpf.federation.audit.repair import cut_torn_tail
from hpf.federation.audit.restore_record import DeclaredBreak
from hpf.federation.audit.scan import LogScan
from hpf.federation.errors import AuditError

_log = logging.getLogger("hpf.audit")
_T = TypeVar("_T")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_sync = getattr(os, "fdatasync", os.fsync)


class AuditLog:
    """One node's append-only log; one process appends (an exclusive lock on ``entries.jsonl`` enforces it).

    Use :meth:`open`; :meth:`append` is thread-safe. Close it (or use ``with``) to release the lock.
    """

    def __init__(
        self,
        directory: Path,
        node_id: str,
        key: Ed25519PrivateKey,
        entries_fd: int,
        checkpoints_fd: int,
        fsync: bool,
    ) -> None:
        self.directory = directory
        self.node_id = node_id
        self._key = key
        self._public = key.public_key()
        self._entries_fd = entries_fd
        self._checkpoints_fd = checkpoints_fd
        self._reader = os.open(directory / ENTRIES, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._fsync = fsync
        self._lock = threading.Lock()
        self._tree = merkle.MerkleTree()
        self._range = merkle.CompactRange()
        self._offsets = array("Q")  # where each entry's line starts in entries.jsonl
        self._end = 0
        self._latest: Checkpoint | None = None
        self._broken: str | None = None
        self.breaks: tuple[DeclaredBreak, ...] = ()  # the restores the log declared when it was opened

    @classmethod
    def open(cls, directory: Path, node_id: str, *, fsync: bool = True, check_all_signatures: bool = True) -> AuditLog:
        """Open (or create) the log in ``directory`` for ``node_id`` after checking all of it.

        A damaged log (edited, cut short, a checkpoint that does not verify, more than one entry after the last
        checkpoint) is refused with ``AUDIT_LOG_CORRUPT`` naming the first bad entry, and left as it is: a node
        must not append onto a broken log. What a crash in the middle of an append leaves is repaired, with a
        warning: a last line without its newline is cut off (its bytes kept in ``<file>.torn-<UTC time>``
        beside it), and a single last entry without a checkpoint is signed.
        ``check_all_signatures=False`` checks every root but only the latest checkpoint's signature, for a fast
        restart of a large log; :func:`~federation.audit.verify.verify_log` always checks them all.
        """
        directory = Path(directory)
        if not is_node_id(node_id):
            raise AuditError(f"invalid node id {node_id!r} for an audit log", code="AUDIT_FIELD_INVALID")
        directory.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        entries_fd = os.open(directory / ENTRIES, flags, 0o600)
        checkpoints_fd = -1
        try:
            try:
                fcntl.flock(entries_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditError(
                    f"{directory}: the audit log is open in another process (or another AuditLog)",
                    code="AUDIT_LOG_LOCKED",
                ) from None
            checkpoints_fd = os.open(directory / CHECKPOINTS, flags, 0o600)
            key = load_or_create_signing_key(directory, os.fstat(entries_fd).st_size > 0)
            log = cls(directory, node_id, key, entries_fd, checkpoints_fd, fsync)
            try:
                log._load(check_all_signatures)
            except BaseException:
                os.close(log._reader)
                raise
        except BaseException:
            os.close(entries_fd)
            if checkpoints_fd >= 0:
                os.close(checkpoints_fd)
            raise
        return log

    @staticmethod
    def signing_public_key(directory: Path) -> bytes:
        """The raw public half of the signing key of the log in ``directory``, the key made as :meth:`open` makes
        it when there is none, without opening the log (a node serving on it holds it): what the node's operator
        publishes before, or while, the node runs. Refused as :meth:`open` refuses it (``AUDIT_KEY_MISSING`` for
        a log with entries, ``AUDIT_KEY_INVALID``, ``AUDIT_KEY_MISMATCH``)."""
        entries = Path(directory) / ENTRIES
        has_entries = entries.exists() and entries.stat().st_size > 0
        return public_key_raw(load_or_create_signing_key(Path(directory), has_entries).public_key())

    def _load(self, all_signatures: bool) -> None:
        tree_append, offsets = self._tree.append, self._offsets

        def sink(leaf: bytes, length: int) -> None:
            tree_append(leaf)
            offsets.append(self._end)
            self._end += length

        scan = LogScan(
            self.directory,
            self._public,
            node_id=self.node_id,
            sink=sink,
            compact=self._range,
            all_signatures=all_signatures,
            torn_tails=False,  # checked as if already cut off: they are, below, once the rest is known good
            restore_times=False,  # a restore record dated too late excuses nothing (see LogScan): no reason to stop
        )
        report = scan.run()
        if not report.ok:
            if report.code == "AUDIT_NODE_MISMATCH":
                raise AuditError(f"{self.directory}: {report.problem}", code="AUDIT_NODE_MISMATCH")
            where = f"at entry {report.first_bad}" if report.first_bad is not None else ""
            raise AuditError(
                f"{self.directory}: the audit log is damaged {where}: [{report.code}] {report.problem}; "
                "refusing to append to it",
                code="AUDIT_LOG_CORRUPT",
                hint="run `hpf audit verify` on it, keep it as evidence, and start a new log directory",
            )
        self._latest = report.latest
        self.breaks = report.breaks
        try:
            if scan.torn_entry is not None:
                cut_torn_tail(self.directory, ENTRIES, self._entries_fd, fsync=self._fsync, expected=self._end)
            if scan.torn_checkpoint is not None:
                cut_torn_tail(self.directory, CHECKPOINTS, self._checkpoints_fd, fsync=self._fsync)
            if report.unsigned:  # one entry (the scan refuses more), written just before a crash, before its checkpoint
                _log.warning(
                    "%s: entry %d had no checkpoint (a crash between its two writes): signing it now",
                    self.directory,
                    self._tree.size - 1,
                )
                self._latest = self._checkpoint(self._tree.size)
        except OSError as err:
            raise AuditError(
                f"{self.directory}: cannot repair what a crash left in the audit log ({err.strerror})",
                code="AUDIT_LOG_BROKEN",
            ) from None

    # -- reading ------------------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._tree.size

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def public_key_raw(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return public_key_raw(self._public)

    def public_key_b64(self) -> str:
        """The raw 32-byte public key in base64, as the catalog lists it."""
        return base64.b64encode(public_key_raw(self._public)).decode("ascii")

    def sign(self, message: bytes) -> bytes:
        """This node's Ed25519 signature over ``message`` with its audit key; callers prefix a domain tag of their
        own (e.g. :data:`federation.trust.statements.DOMAIN`), so nothing signed here can pass for a checkpoint."""
        return self._key.sign(message)

    def latest_checkpoint(self) -> Checkpoint | None:
        return self._latest

    def _from_tree(self, read: Callable[..., _T], *args: int | None) -> _T:
        """``read(*args)`` on the tree under the lock; a size or index outside it is ``AUDIT_PROOF_RANGE``."""
        with self._lock:
            try:
                return read(*args)
            except ValueError as err:
                raise AuditError(str(err), code="AUDIT_PROOF_RANGE") from None

    def root(self, size: int | None = None) -> bytes:
        """The tree head of the first ``size`` entries (default: all)."""
        return self._from_tree(self._tree.root, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Proof that entry ``index`` is in the tree of the first ``size`` entries (default: all)."""
        return self._from_tree(self._tree.inclusion_proof, index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Proof that the tree of ``old_size`` entries is a prefix of the tree of ``new_size`` (default: all)."""
        return self._from_tree(self._tree.consistency_proof, old_size, new_size)

    def entry(self, index: int) -> bytes:
        """The exact line (canonical JSON, no newline) of entry ``index``."""
        with self._lock:
            if not 0 <= index < self._tree.size:
                raise AuditError(f"there is no entry {index}", code="AUDIT_PROOF_RANGE")
            start = self._offsets[index]
            end = self._offsets[index + 1] if index + 1 < len(self._offsets) else self._end
            return os.pread(self._reader, end - start - 1, start)

    def receipt(self, index: int) -> Receipt:
        """A receipt for an earlier entry, under the latest checkpoint, with its inclusion proof there."""
        line = self.entry(index)
        latest = self._latest
        if latest is None or latest.size <= index:  # only while a crash-interrupted append is re-signed
            raise AuditError(f"entry {index} has no checkpoint yet", code="AUDIT_PROOF_RANGE")
        return Receipt(self.node_id, index, line, latest, tuple(self.inclusion_proof(index, latest.size)))

    def entries(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """The entries from ``start`` as dicts (those present when called)."""
        with self._lock:
            if start >= len(self._offsets):
                return
            offset, end = self._offsets[max(start, 0)], self._end
        with (self.directory / ENTRIES).open("rb") as fh:
            fh.seek(offset)
            remaining = end - offset
            for line in fh:
                if remaining <= 0:
                    break
                remaining -= len(line)
                yield json.loads(line)

    # -- writing ------------------------------------------------------------------------------------------------

    def _checkpoint(self, size: int, compact: merkle.CompactRange | None = None) -> Checkpoint:
        """Sign and persist a checkpoint for the first ``size`` entries, whose head is ``compact``'s (the log's own
        by default; call with the lock held or alone)."""
        head = (self._range if compact is None else compact).root()
        unsigned = Checkpoint(self.node_id, size, head, utc_now(), b"")
        cp = dataclasses.replace(unsigned, signature=self._key.sign(unsigned.signed_message()))
        _write_all(self._checkpoints_fd, checkpoint_line(cp))
        if self._fsync:
            _sync(self._checkpoints_fd)
        return cp

    def append(self, fields: Mapping[str, Scalar]) -> Receipt:
        """Log one request; ``"index"`` and ``"node"`` (this log's node) are added. Returns the receipt under
        the new size's checkpoint, with the entry's inclusion proof in it (the entry is that tree's last leaf, so
        the proof is the log's frontier before the append: O(log n) hashes, none computed).

        The entry is on disk (synced, unless ``fsync=False``) before its checkpoint is written, and the
        checkpoint before the receipt is returned. A write that fails (a full disk) is undone, both files cut
        back to where they ended, and raises ``AUDIT_WRITE_FAILED``: the log stays whole, and the next append
        tries again. Only when the undoing fails too does the log refuse further appends (``AUDIT_LOG_BROKEN``:
        reopening it repairs what is left).
        """
        if "index" in fields:
            raise AuditError("the audit log sets the index itself", code="AUDIT_FIELD_INVALID")
        if fields.get("node", self.node_id) != self.node_id:
            raise AuditError("an entry names another node than the log's", code="AUDIT_FIELD_INVALID")
        with self._lock:
            if self._broken is not None:
                raise AuditError(f"{self.directory}: {self._broken}", code="AUDIT_LOG_BROKEN")
            index = self._tree.size
            line = canonical_json({**fields, "node": self.node_id, "index": index})
            leaf = merkle.leaf_hash(line)
            proof = tuple(self._range.next_leaf_proof())  # the new entry is the last leaf of the new tree
            grown = self._range.copy()
            grown.append(leaf)
            checkpoints_end = os.fstat(self._checkpoints_fd).st_size
            try:
                _write_all(self._entries_fd, line + b"\n")
                if self._fsync:
                    _sync(self._entries_fd)
                cp = self._checkpoint(index + 1, grown)
            except OSError as err:
                raise self._undo(err, checkpoints_end) from None
            self._tree.append(leaf)
            self._range = grown
            self._offsets.append(self._end)
            self._end += len(line) + 1
            self._latest = cp
        return Receipt(self.node_id, index, line, cp, proof)

    def _undo(self, err: OSError, checkpoints_end: int) -> AuditError:
        """Cut both files back to where they ended before a failed append (call with the lock held): no part of an
        entry no receipt acknowledges stays. The error to raise: the write's, or a broken log if this fails too."""
        try:
            os.ftruncate(self._entries_fd, self._end)
            os.ftruncate(self._checkpoints_fd, checkpoints_end)
            if self._fsync:
                _sync(self._entries_fd)
                _sync(self._checkpoints_fd)
        except OSError as undo:
            self._broken = f"an audit write failed ({undo.strerror}) and could not be undone; reopen the log"
            return AuditError(f"{self.directory}: {self._broken}", code="AUDIT_LOG_BROKEN")
        return AuditError(
            f"{self.directory}: an audit write failed ({err.strerror}); nothing of the entry was kept",
            code="AUDIT_WRITE_FAILED",
        )

    def close(self) -> None:
        with self._lock:
            if self._entries_fd >= 0:
                os.close(self._reader)
                os.close(self._checkpoints_fd)
                os.close(self._entries_fd)  # releases the lock
                self._entries_fd = self._checkpoints_fd = -1
                self._broken = "the log is closed"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
