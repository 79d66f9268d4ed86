"""Codes of the audit logs: a node's own log, its checkpoints, the receipts askers keep and the proofs."""

from __future__ import annotations

from hpf.federation.error_codes.model import Area, Code, Effect, Scope
from hpf.federation.errors import AuditError

_audit = Area("Audit logs and receipts", AuditError, Scope.AUDIT, Effect.REGION_MISSING)

CODES: tuple[Code, ...] = (
    _audit.code("AUDIT_INVALID", "an audit log, checkpoint or receipt does not hold"),
    _audit.code("AUDIT_NOT_FOUND", "there is no audit log in the folder"),
    _audit.code("AUDIT_LOG_LOCKED", "the audit log is open in another process"),
    _audit.code("AUDIT_LOG_CORRUPT", "the audit log is damaged; nothing is appended to it"),
    _audit.code("AUDIT_LOG_BROKEN", "what a crash left in the audit log cannot be repaired"),
    _audit.code("AUDIT_WRITE_FAILED", "an audit write failed; nothing of the entry was kept"),
    _audit.code("AUDIT_FIELD_INVALID", "a field of an audit entry is not valid"),
    _audit.code("AUDIT_ENTRY_MALFORMED", "an audit entry is not a JSON object of the entry's form"),
    _audit.code("AUDIT_RESTORE_INVALID", "a restore record of the log is malformed, unsigned or names another prefix"),
    _audit.code("AUDIT_ENTRY_NOT_CANONICAL", "an audit entry is not in canonical form (edited by hand?)"),
    _audit.code("AUDIT_INDEX_MISMATCH", "an audit entry is not at its place (entries deleted or reordered)"),
    _audit.code("AUDIT_NODE_MISMATCH", "the audit log, or a checkpoint a region answered with, is another node's"),
    _audit.code("AUDIT_KEY_MISSING", "the audit key is missing"),
    _audit.code("AUDIT_KEY_UNREADABLE", "the audit key file is no regular file or cannot be read"),
    _audit.code("AUDIT_KEY_INVALID", "the audit key is not an Ed25519 key"),
    _audit.code("AUDIT_KEY_MISMATCH", "the audit public key does not match the private key"),
    _audit.code("AUDIT_CHECKPOINT_MALFORMED", "a checkpoint cannot be read"),
    _audit.code("AUDIT_CHECKPOINT_SIGNATURE", "a checkpoint is not signed by the node's audit key"),
    _audit.code("AUDIT_CHECKPOINT_ORDER", "the checkpoints' sizes decrease"),
    _audit.code("AUDIT_ROOT_MISMATCH", "a checkpoint's root is not the head of the entries it covers"),
    _audit.code("AUDIT_TRUNCATED", "a checkpoint covers more entries than the log holds"),
    _audit.code("AUDIT_UNSIGNED", "more than one entry is covered by no checkpoint"),
    _audit.code("AUDIT_TORN_TAIL", "the last line of the log or its checkpoints is torn"),
    _audit.code("AUDIT_PROOF_RANGE", "the entry or size asked for is not in the log, or has no checkpoint yet"),
    _audit.code("AUDIT_INCONSISTENT", "a region signed two different logs of one size: its log was rewritten"),
    _audit.code("AUDIT_RECEIPT_MALFORMED", "a kept receipt cannot be read"),
    _audit.code("AUDIT_RECEIPT_MISMATCH", "a kept receipt does not match the region's log"),
    _audit.code("AUDIT_RECEIPT_UNPROVEN", "a proof relayed for a receipt does not hold"),
)
