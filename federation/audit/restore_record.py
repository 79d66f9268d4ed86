"""The audit record a node restored from a backup appends first: a declared break in its log.

A backup (:mod:`node.backup`) holds a node's audit log up to a signed checkpoint of size ``N``. What the lost
host logged after it is gone, and the restored node's log goes on from entry ``N``, so entries ``N`` and later
of the lost host (and its checkpoints past ``N``, and the receipts of them that clients kept) differ from the
restored log's. The restored node says so at its first start, before anything else: entry ``N`` is a
*restore record* naming the checkpoint it was restored from, that checkpoint's root, the backup time and the
restore time, signed with the node's audit key under a domain of its own (so nothing else it signs can pass
for one) and covered by the log's next checkpoint like every entry.

A verifier (:class:`federation.audit.scan.LogScan`) accepts such a record as a declared break when its
signature verifies and the log's first ``N`` entries have the root it names; a checkpoint kept from before the
restore time, and before the log's first checkpoint past the record, that covers more than ``N`` entries, or a
receipt of entry ``N`` or later under such a checkpoint, is then reported as lost in the break, not as a
rewritten log (:meth:`DeclaredBreak.loses`: a restore time dated later than the checkpoint that covers the
record never excuses the restored node's own checkpoints). A record that does not hold is
``AUDIT_RESTORE_INVALID``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hpf.federation.audit.records import _TIME, Checkpoint, Scalar

RESTORE_DOMAIN = b"hpf-audit-restore/v1\n"
RESTORED = "restored"  # the record's "kind"
MARKER = b'"kind":"restored"'  # how a scan finds a restore record without parsing every line


@dataclass(frozen=True)
class DeclaredBreak:
    """A restore record: the node's log was restored from its checkpoint of size ``checkpoint`` (root ``root``),
    backed up at ``backup_time`` and restored at ``restore_time`` (RFC 3339 UTC with milliseconds); what the lost
    host logged after entry ``checkpoint - 1`` and before ``restore_time`` is lost."""

    node_id: str
    checkpoint: int
    root: bytes
    backup_time: str
    restore_time: str

    def signed_message(self) -> bytes:
        return (
            RESTORE_DOMAIN
            + (
                f"{self.node_id}\n{self.checkpoint}\n{self.root.hex()}\n{self.backup_time}\n{self.restore_time}\n"
            ).encode()
        )

    def fields(self, sign: Callable[[bytes], bytes]) -> dict[str, Scalar]:
        """The record's fields, signed by ``sign`` (the node's audit key: :meth:`AuditLog.sign`); the log adds
        ``index``, which must be ``checkpoint``, and ``node``."""
        return {
            "kind": RESTORED,
            "operation": "restore",
            "time": self.restore_time,
            "restored_from": self.checkpoint,
            "checkpoint_root": self.root.hex(),
            "backup_time": self.backup_time,
            "restore_time": self.restore_time,
            "restore_signature": base64.b64encode(sign(self.signed_message())).decode("ascii"),
        }

    def loses(self, size: int, time: str, covered_at: str | None) -> bool:
        """Whether a checkpoint of ``size`` entries signed at ``time`` falls in this break (the lost host's).

        ``covered_at`` is when the log's first checkpoint past the record was signed (None: none covers it yet,
        and nothing falls in the break). The restored node signs it after the record, so the host was lost before
        then, whatever restore time the record states: a checkpoint signed at that time or later is the restored
        node's own, never excused, though the record be dated later (a clock far ahead, or the key's holder).

        >>> b = DeclaredBreak("x", 3, bytes(32), "2026-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z")
        >>> b.loses(5, "2026-01-02T00:00:00.000Z", "2026-01-03T00:00:00.000Z")
        True
        >>> b.loses(5, "2026-01-03T00:00:00.000Z", "2026-01-03T00:00:00.000Z"), b.loses(3, "2026", "2027")
        (False, False)
        """
        return covered_at is not None and size > self.checkpoint and time < min(self.restore_time, covered_at)

    def describe(self) -> str:
        return (
            f"declared break: restored from checkpoint {self.checkpoint} at {self.restore_time}; entries after "
            f"{self.checkpoint} up to {self.restore_time} are lost (backed up at {self.backup_time})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "root": self.root.hex(),
            "backup_time": self.backup_time,
            "restore_time": self.restore_time,
        }


def lost_note(
    breaks: Sequence[DeclaredBreak], covered: Mapping[int, str], size: int, checkpoint: Checkpoint, what: str
) -> str | None:
    """What to report of a checkpoint kept outside the log (``what``: a saved one, a receipt's), covering ``size``
    entries, that falls in one of ``breaks`` (``covered``: when the log's first checkpoint past each break's was
    signed, by the break's checkpoint); None when it falls in none (it must then match the log)."""
    declared = next((b for b in breaks if b.loses(size, checkpoint.time, covered.get(b.checkpoint))), None)
    if declared is None:
        return None
    return (
        f"{what} (size {checkpoint.size}, {checkpoint.time}) is lost in the declared break at checkpoint "
        f"{declared.checkpoint}"
    )


def restore_in(
    line: bytes, index: int, node_id: str | None, prefix_root: bytes, key: Ed25519PublicKey
) -> DeclaredBreak | str | None:
    """The break entry ``index`` (its ``line``) declares, None if it is no restore record, or why it does not
    hold (see :func:`read_restore_record`)."""
    try:
        fields = json.loads(line)
    except ValueError:
        return None  # not JSON: the entry's own check says so
    if not isinstance(fields, dict) or fields.get("kind") != RESTORED:
        return None
    return read_restore_record(fields, index, node_id, prefix_root, key)


def read_restore_record(
    fields: dict[str, Any], index: int, node_id: str | None, prefix_root: bytes, key: Ed25519PublicKey
) -> DeclaredBreak | str:
    """The declared break entry ``index`` (``fields``, a restore record) states, or why it does not hold:
    malformed, not at the index it names, naming another root than the first ``index`` entries' (``prefix_root``),
    or not signed by ``key``."""
    node, root, sig = fields.get("node"), fields.get("checkpoint_root"), fields.get("restore_signature")
    backup_time, restore_time = fields.get("backup_time"), fields.get("restore_time")
    if fields.get("restored_from") != index:
        return f"the restore record names checkpoint {fields.get('restored_from')!r} but is entry {index}"
    if not (
        isinstance(node, str)
        and (node_id is None or node == node_id)
        and isinstance(root, str)
        and len(root) == 64
        and isinstance(backup_time, str)
        and _TIME.fullmatch(backup_time)
        and isinstance(restore_time, str)
        and _TIME.fullmatch(restore_time)
        and fields.get("time") == restore_time
        and backup_time <= restore_time
        and isinstance(sig, str)
    ):
        return "the restore record is malformed"
    try:
        declared = DeclaredBreak(node, index, bytes.fromhex(root), backup_time, restore_time)
        key.verify(base64.b64decode(sig, validate=True), declared.signed_message())
    except (ValueError, binascii.Error, InvalidSignature):
        return "the restore record is not signed by the node's audit key"
    if declared.root != prefix_root:
        return f"the restore record's checkpoint root is not that of the log's first {index} entries"
    return declared
