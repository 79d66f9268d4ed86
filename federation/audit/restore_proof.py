"""A node's restore records on the wire, and the client's check that a receipt it cannot prove was lost in one.

A node restored from a backup declares the break in its own log (:mod:`federation.audit.restore_record`): what
the lost host logged after the backup's checkpoint ``N`` is gone, so a receipt the lost host gave for entry ``N``
or later no longer matches the region's log. With its proofs (``AuditProofResponse``) the node sends each restore
record, its inclusion proof in the latest checkpoint and a consistency proof from the record's ``N`` entries to
it. A client accepts a receipt whose proofs fail as lost in the break only when the record is in the tree the
latest checkpoint signs (verified with the pinned audit key), is signed by that key, names the root of the log's
first ``N`` entries, is covered by a checkpoint signed no earlier than its restore time, and the receipt's own
checkpoint (signed, with its entry proven in it) covers more than ``N`` entries and was signed before the restore
(:meth:`DeclaredBreak.loses`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hpf.federation.audit import merkle
from hpf.federation.audit.records import Checkpoint, Receipt
from hpf.federation.audit.restore_record import RESTORED, DeclaredBreak, read_restore_record
from hpf.federation.generated import hpf_federation_pb2 as pb

if TYPE_CHECKING:
    from hpf.federation.audit.log import AuditLog


@dataclass(frozen=True)
class LostInBreak:
    """A receipt of an entry the region's lost host logged: gone with it in ``declared``, not rewritten."""

    declared: DeclaredBreak
    latest: Checkpoint  # the region's latest checkpoint, which covers the restore record

    def describe(self) -> str:
        return (
            f"lost in the declared break (restored from checkpoint {self.declared.checkpoint} at "
            f"{self.declared.restore_time})"
        )


def restores_to_proto(audit: AuditLog, size: int) -> list[pb.AuditRestore]:
    """The restore records ``audit`` declares that its first ``size`` entries hold, with their proofs in that
    tree (``size``: its latest checkpoint's)."""
    return [
        pb.AuditRestore(
            index=b.checkpoint,
            entry=audit.entry(b.checkpoint),
            inclusion=audit.inclusion_proof(b.checkpoint, size),
            consistency=audit.consistency_proof(b.checkpoint, size),
        )
        for b in audit.breaks
        if b.checkpoint < size
    ]


def _declared(
    restore: pb.AuditRestore, latest: Checkpoint, node_id: str, key: Ed25519PublicKey
) -> DeclaredBreak | None:
    """The break ``restore`` declares if it holds in ``latest`` (whose signature the caller verified), else None."""
    n, proof = restore.index, list(restore.inclusion)
    if not 0 < n < latest.size or not merkle.verify_inclusion(
        merkle.leaf_hash(restore.entry), n, latest.size, proof, latest.root
    ):
        return None
    try:
        fields = json.loads(restore.entry)
        root = bytes.fromhex(fields["checkpoint_root"])
    except (ValueError, RecursionError, TypeError, KeyError):
        return None
    if not isinstance(fields, dict) or fields.get("kind") != RESTORED or fields.get("index") != n:
        return None
    if not merkle.verify_consistency(n, latest.size, root, latest.root, list(restore.consistency)):
        return None  # the root it names is not that of the log's first n entries
    declared = read_restore_record(fields, n, node_id, root, key)
    if isinstance(declared, str) or latest.time < declared.restore_time:
        return None  # not signed by the region's key, or dated after a checkpoint that covers it
    return declared


def lost_in_break(
    receipt: Receipt, latest: Checkpoint, restores: Sequence[pb.AuditRestore], key: Ed25519PublicKey
) -> LostInBreak | None:
    """Whether ``receipt`` (its checkpoint's signature verified by the caller) is of an entry lost in a break
    one of ``restores`` declares in ``latest`` (the region's latest checkpoint, verified by the caller).

    The receipt's own proof must show its entry in its checkpoint: a receipt whose entry was altered is never
    excused. The checkpoint that covers the record is at latest ``latest``, so a receipt's checkpoint signed at
    ``latest.time`` or later is the restored node's own and falls in no break."""
    if latest.node_id != receipt.node_id or not receipt.proves_entry():
        return None
    for restore in restores:
        declared = _declared(restore, latest, receipt.node_id, key)
        if (
            declared is not None
            and declared.checkpoint <= receipt.index
            and declared.loses(receipt.checkpoint.size, receipt.checkpoint.time, latest.time)
        ):
            return LostInBreak(declared, latest)
    return None
