"""Audit receipts and checkpoints to and from their wire form, and the client's checks of a receipt: when it
arrives with an answer, and later, against the region's latest checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping

from federation import merkle
from federation.audit_keys import load_public_key
from federation.audit_records import Checkpoint, Receipt
from federation.errors import AuditError, CryptoError
from federation.generated import hpf_federation_pb2 as pb


def checkpoint_to_proto(cp: Checkpoint) -> pb.AuditCheckpoint:
    return pb.AuditCheckpoint(node_id=cp.node_id, size=cp.size, root=cp.root, time=cp.time, signature=cp.signature)


def checkpoint_from_proto(msg: pb.AuditCheckpoint) -> Checkpoint:
    return Checkpoint(node_id=msg.node_id, size=msg.size, root=msg.root, time=msg.time, signature=msg.signature)


def receipt_to_proto(receipt: Receipt) -> pb.AuditReceipt:
    return pb.AuditReceipt(
        node_id=receipt.node_id,
        index=receipt.index,
        entry=receipt.entry,
        checkpoint=checkpoint_to_proto(receipt.checkpoint),
        inclusion=receipt.inclusion or (),
    )


def receipt_from_proto(msg: pb.AuditReceipt) -> Receipt:
    """A receipt as received; its proof as sent (an empty one is a proof too: of the only entry of a log)."""
    return Receipt(
        node_id=msg.node_id,
        index=msg.index,
        entry=msg.entry,
        checkpoint=checkpoint_from_proto(msg.checkpoint),
        inclusion=tuple(msg.inclusion),
    )


def check_receipt(receipt: Receipt, *, nonce: bytes, signer: str, audit_keys: Mapping[str, str | None]) -> bool:
    """Check a region's receipt for this client's question: its entry is this question's, and its proof shows the
    entry in the tree its checkpoint signs. True when the checkpoint's signature was verified too (the catalog
    holds the region's audit key), False when there was no key to verify it with. ``ANSWER_CORRUPT`` otherwise:
    an entry rewritten on the way, or one the region's checkpoint does not cover, is never kept as a receipt."""
    try:
        entry = json.loads(receipt.entry)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past any real entry
        raise CryptoError(f"region {receipt.node_id} sent an unreadable audit receipt", code="ANSWER_CORRUPT") from None
    if (
        not isinstance(entry, dict)
        or entry.get("nonce") != nonce.hex()
        or entry.get("identity") != signer
        or entry.get("decision") != "allowed"
        or entry.get("index") != receipt.index
        or entry.get("node") != receipt.node_id
        or receipt.checkpoint.node_id != receipt.node_id
        or receipt.checkpoint.size <= receipt.index
    ):
        raise CryptoError(f"region {receipt.node_id}'s audit receipt is not for this question", code="ANSWER_CORRUPT")
    if not receipt.proves_entry():
        raise CryptoError(
            f"region {receipt.node_id}'s audit receipt does not prove its entry is in the log its checkpoint signs",
            code="ANSWER_CORRUPT",
            hint="the coordinator or the region is misbehaving",
        )
    key = audit_keys.get(receipt.node_id)
    if key is None:
        return False
    receipt.checkpoint.verify(load_public_key(key))
    return True


def check_still_logged(receipt: Receipt, proof: pb.AuditProofResponse, audit_key: str | None) -> Checkpoint:
    """Check a region's answer to "is my receipt's entry still in your log?": its latest checkpoint is signed
    by the region's audit key, holds the entry at its index, and extends the receipt's checkpoint. Returns the
    latest checkpoint; AuditError (``AUDIT_RECEIPT_MISMATCH`` / ``AUDIT_INCONSISTENT``) when the log was
    rewritten, ``AUDIT_KEY_MISSING`` when the catalog gives no key to check the signatures with."""
    latest = checkpoint_from_proto(proof.checkpoint)
    if problem := receipt.problem():  # one node's: the receipt's, its checkpoint's and its entry's
        raise AuditError(
            f"a kept receipt of region {receipt.checkpoint.node_id}: {problem}", code="AUDIT_RECEIPT_MISMATCH"
        )
    if audit_key is None:
        raise AuditError(f"the catalog has no audit key for region {receipt.node_id}", code="AUDIT_KEY_MISSING")
    key = load_public_key(audit_key)
    receipt.checkpoint.verify(key)
    latest.verify(key)
    if latest.node_id != receipt.node_id:
        raise AuditError(
            f"region {receipt.node_id} answered with another node's checkpoint", code="AUDIT_NODE_MISMATCH"
        )
    old = receipt.checkpoint
    if not merkle.verify_consistency(old.size, latest.size, old.root, latest.root, list(proof.consistency)):
        raise AuditError(
            f"region {receipt.node_id}'s log no longer extends the checkpoint of size {old.size} it gave with this "
            "receipt: its log was rewritten",
            code="AUDIT_INCONSISTENT",
        )
    if not merkle.verify_inclusion(receipt.leaf_hash, receipt.index, latest.size, list(proof.inclusion), latest.root):
        raise AuditError(
            f"region {receipt.node_id}'s log no longer holds entry {receipt.index} as receipted",
            code="AUDIT_RECEIPT_MISMATCH",
        )
    return latest
