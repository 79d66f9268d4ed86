"""A client's later check of a kept receipt against a region's latest checkpoint (no servers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from federation.audit_keys import KEY
from federation.audit_log import AuditLog
from federation.audit_proto import check_still_logged, checkpoint_to_proto
from federation.audit_records import Receipt
from federation.errors import AuditError
from federation.generated import hpf_federation_pb2 as pb


def entry(i: int, who: str = "caseworker") -> dict[str, str | int | bool | None]:
    return {"time": f"2026-11-28T08:00:{i:02d}.000Z", "identity": who, "decision": "allowed", "nonce": f"{i:032x}"}


def proof_from(log: AuditLog, receipt: Receipt) -> pb.AuditProofResponse:
    latest = log.latest_checkpoint()
    assert latest is not None
    return pb.AuditProofResponse(
        checkpoint=checkpoint_to_proto(latest),
        inclusion=log.inclusion_proof(receipt.index, latest.size),
        consistency=log.consistency_proof(receipt.checkpoint.size, latest.size),
    )


def test_a_receipt_stays_provable_as_the_log_grows(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "a", "n0", fsync=False) as log:
        receipts = [log.append(entry(i)) for i in range(5)]
        key = log.public_key_b64()
        for i in range(5, 37):
            log.append(entry(i))
        for receipt in receipts:
            latest = check_still_logged(receipt, proof_from(log, receipt), key)
            assert latest.size == 37


def test_a_rewritten_history_is_caught(tmp_path: Path) -> None:
    """The region keeps its key but rewrites entry 1 and re-signs: the old receipt exposes it."""
    with AuditLog.open(tmp_path / "honest", "n0", fsync=False) as honest:
        kept = [honest.append(entry(i)) for i in range(3)]
        key = honest.public_key_b64()
    (tmp_path / "forged").mkdir()
    shutil.copy(tmp_path / "honest" / KEY, tmp_path / "forged" / KEY)
    with AuditLog.open(tmp_path / "forged", "n0", fsync=False) as forged:
        forged.append(entry(0))
        forged.append(entry(1, who="someone-else"))  # history rewritten, signed with the same key
        for i in range(2, 9):
            forged.append(entry(i))
        with pytest.raises(AuditError) as err:
            check_still_logged(kept[1], proof_from(forged, kept[1]), key)
        assert err.value.code == "AUDIT_INCONSISTENT"
        assert check_still_logged(kept[0], proof_from(forged, kept[0]), key).size == 9  # entry 0 is untouched


def test_a_proof_from_another_key_or_with_no_key_is_refused(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "a", "n0", fsync=False) as log, AuditLog.open(tmp_path / "b", "n0") as other:
        receipt = log.append(entry(0))
        log.append(entry(1))
        with pytest.raises(AuditError) as err:
            check_still_logged(receipt, proof_from(log, receipt), other.public_key_b64())
        assert err.value.code == "AUDIT_CHECKPOINT_SIGNATURE"
        with pytest.raises(AuditError) as err:
            check_still_logged(receipt, proof_from(log, receipt), None)
        assert err.value.code == "AUDIT_KEY_MISSING"
        wrong = proof_from(log, receipt)
        del wrong.inclusion[:]
        with pytest.raises(AuditError) as err:
            check_still_logged(receipt, wrong, log.public_key_b64())
        assert err.value.code == "AUDIT_RECEIPT_MISMATCH"
