"""Audit receipts and checkpoints to and from their wire form, and the client's checks of a receipt: when it
arrives with an answer, and later, against the region's latest checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping

from hpf.federation.audit import merkle
from hpf.federation.audit.keys import load_public_key
from hpf.federation.audit.records import Checkpoint, Receipt
from hpf.federation.audit.restore_proof import LostInBreak, lost_in_break
from hpf.federation.errors import AuditError, CryptoError
from hpf.federation.generated import hpf_federation_pb2 as pb


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


UNPROVEN = "AUDIT_RECEIPT_UNPROVEN"


def check_still_logged(receipt: Receipt, proof: pb.AuditProofResponse, audit_key: str | None) -> Checkpoint:
    """Check a region's answer to "is my receipt's entry still in your log?"; its latest checkpoint if so.

    The entry is proven in the latest checkpoint (signed by the region's audit key) when the tree of the receipt's
    checkpoint is a prefix of the latest one (the consistency proof) and the entry is in either tree (the
    receipt's own inclusion proof, or the one sent now). The proofs are hashes relayed by the coordinator, signed
    by nobody, so a proof that does not hold blames no one: ``AUDIT_RECEIPT_UNPROVEN`` (the region or the
    coordinator; ``hpf audit verify --receipts`` on the region's own log settles which). Only the region's own
    signatures can show its log was rewritten: two checkpoints it signed for one size with different roots
    (``AUDIT_INCONSISTENT``). ``AUDIT_KEY_MISSING`` when the catalog gives no key to check the signatures with;
    a kept receipt that does not hold together, or a checkpoint not signed by the region's key, is unproven too
    (``AUDIT_RECEIPT_MISMATCH``, ``AUDIT_CHECKPOINT_SIGNATURE``, ``AUDIT_NODE_MISMATCH``)."""
    region = receipt.node_id
    if audit_key is None:
        raise AuditError(f"the catalog has no audit key for region {region}", code="AUDIT_KEY_MISSING")
    if problem := receipt.problem():  # one node's: the receipt's, its checkpoint's and its entry's
        raise AuditError(
            f"a kept receipt of region {receipt.checkpoint.node_id}: {problem}", code="AUDIT_RECEIPT_MISMATCH"
        )
    key = load_public_key(audit_key)
    old, latest = receipt.checkpoint, checkpoint_from_proto(proof.checkpoint)
    old.verify(key)
    latest.verify(key)
    if latest.node_id != region:
        raise AuditError(f"region {region} answered with another node's checkpoint", code="AUDIT_NODE_MISMATCH")
    if latest.size == old.size and latest.root != old.root:
        raise AuditError(
            f"region {region} signed two different logs of {old.size} entries (the receipt's checkpoint and its "
            "latest): its log was rewritten",
            code="AUDIT_INCONSISTENT",
        )
    if not merkle.verify_consistency(old.size, latest.size, old.root, latest.root, list(proof.consistency)):
        raise AuditError(
            f"the proof that region {region}'s log only grew since the checkpoint of size {old.size} it gave with "
            f"this receipt does not hold (latest size {latest.size}): its log was rewritten or the proof broken "
            "on the way",
            code=UNPROVEN,
            hint="the coordinator relays the proofs: run `hpf audit verify --receipts` on the region's own log",
        )
    in_latest = merkle.verify_inclusion(
        receipt.leaf_hash, receipt.index, latest.size, list(proof.inclusion), latest.root
    )
    if not (receipt.proves_entry() or in_latest):
        kept = "it was kept before receipts carried a proof, and " if receipt.inclusion is None else ""
        raise AuditError(
            f"nothing proves region {region}'s entry {receipt.index} as receipted: {kept}the proof that it is in "
            "the region's latest log does not hold (an entry rewritten before it was kept, or a proof broken on "
            "the way)",
            code=UNPROVEN,
            hint="the coordinator relays the proofs: run `hpf audit verify --receipts` on the region's own log",
        )
    return latest


def check_still_logged_or_lost(
    receipt: Receipt, proof: pb.AuditProofResponse, audit_key: str | None
) -> Checkpoint | LostInBreak:
    """:func:`check_still_logged`, except that a receipt whose proofs do not hold against the region's latest
    checkpoint (or whose checkpoint the region signed another log of the same size for) is reported lost, not
    raised, when the region declares, in the tree its latest checkpoint signs, a break the receipt's entry was lost
    in (:func:`federation.audit.restore_proof.lost_in_break`): a host lost after the region's last backup, not a
    rewritten log."""
    try:
        return check_still_logged(receipt, proof, audit_key)
    except AuditError as err:
        if err.code not in (UNPROVEN, "AUDIT_INCONSISTENT") or audit_key is None or not proof.restores:
            raise
        key = load_public_key(audit_key)
        latest = checkpoint_from_proto(proof.checkpoint)  # its signature and node verified before these codes
        lost = lost_in_break(receipt, latest, proof.restores, key)
        if lost is None:
            raise
        return lost
