"""A client's later check of a kept receipt against a region's latest checkpoint (no servers)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from hpf.federation.audit.keys import KEY
from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.proto import check_still_logged, checkpoint_to_proto
from hpf.federation.audit.records import Receipt
from hpf.federation.errors import AuditError
from hpf.federation.generated import hpf_federation_pb2 as pb


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


def _forged_log(tmp_path: Path, size: int) -> AuditLog:
    """The region keeps its key but rewrites entry 1 and re-signs a log of ``size`` entries."""
    (tmp_path / "forged").mkdir()
    shutil.copy(tmp_path / "honest" / KEY, tmp_path / "forged" / KEY)
    forged = AuditLog.open(tmp_path / "forged", "n0", fsync=False)
    forged.append(entry(0))
    forged.append(entry(1, who="someone-else"))  # history rewritten, signed with the same key
    for i in range(2, size):
        forged.append(entry(i))
    return forged


def test_a_rewritten_history_cannot_be_proven(tmp_path: Path) -> None:
    """The old receipt no longer proves: through the coordinator, which relays the proofs unsigned, that is all a
    client can say (the region's own log says more: see audit_verify)."""
    with AuditLog.open(tmp_path / "honest", "n0", fsync=False) as honest:
        kept = [honest.append(entry(i)) for i in range(3)]
        key = honest.public_key_b64()
    with _forged_log(tmp_path, 9) as forged:
        with pytest.raises(AuditError) as err:
            check_still_logged(kept[1], proof_from(forged, kept[1]), key)
        assert err.value.code == "AUDIT_RECEIPT_UNPROVEN" and "rewritten or the proof broken" in err.value.message
        assert check_still_logged(kept[0], proof_from(forged, kept[0]), key).size == 9  # entry 0 is untouched


def test_two_logs_the_region_signed_for_one_size_are_a_rewrite(tmp_path: Path) -> None:
    """The region's own signatures contradict each other: no coordinator can make that up."""
    with AuditLog.open(tmp_path / "honest", "n0", fsync=False) as honest:
        kept = [honest.append(entry(i)) for i in range(3)]
        key = honest.public_key_b64()
    with _forged_log(tmp_path, 3) as forged:
        with pytest.raises(AuditError) as err:
            check_still_logged(kept[2], proof_from(forged, kept[2]), key)
        assert err.value.code == "AUDIT_INCONSISTENT" and "rewritten" in err.value.message


def _zeroed(hashes: list[bytes]) -> list[bytes]:
    return [bytes(32)] * len(hashes)


def test_proofs_broken_on_the_way_blame_no_one(tmp_path: Path) -> None:
    """What a coordinator can do to a proof it relays: drop it, zero it, replay an older checkpoint, forge one."""
    with AuditLog.open(tmp_path / "a", "n0", fsync=False) as log:
        receipts = [log.append(entry(i)) for i in range(6)]
        key = log.public_key_b64()
        for i in range(6, 20):
            log.append(entry(i))
        receipt = receipts[3]
        honest = proof_from(log, receipt)
        # the receipt's own proof and the consistency proof are enough: the inclusion proof sent now is not needed
        for inclusion in ([], _zeroed(list(honest.inclusion))):
            tampered = pb.AuditProofResponse()
            tampered.CopyFrom(honest)
            del tampered.inclusion[:]
            tampered.inclusion.extend(inclusion)
            assert check_still_logged(receipt, tampered, key).size == 20
        for consistency in ([], _zeroed(list(honest.consistency))):
            tampered = pb.AuditProofResponse()
            tampered.CopyFrom(honest)
            del tampered.consistency[:]
            tampered.consistency.extend(consistency)
            with pytest.raises(AuditError) as err:
                check_still_logged(receipt, tampered, key)
            assert err.value.code == "AUDIT_RECEIPT_UNPROVEN"
        older = pb.AuditProofResponse(checkpoint=checkpoint_to_proto(receipts[1].checkpoint))  # signed, but older
        with pytest.raises(AuditError) as err:
            check_still_logged(receipt, older, key)
        assert err.value.code == "AUDIT_RECEIPT_UNPROVEN"
        forged = pb.AuditProofResponse()
        forged.CopyFrom(honest)
        forged.checkpoint.root = bytes(32)
        with pytest.raises(AuditError) as err:
            check_still_logged(receipt, forged, key)
        assert err.value.code == "AUDIT_CHECKPOINT_SIGNATURE"


def test_a_receipt_kept_without_a_proof_is_proven_by_the_latest_log_alone(tmp_path: Path) -> None:
    """A receipt kept before receipts carried a proof: the inclusion proof sent now is all that proves its entry,
    so an entry rewritten before it was kept cannot be proven, and a broken proof cannot prove either."""
    with AuditLog.open(tmp_path / "a", "n0", fsync=False) as log:
        receipt = dataclasses.replace(log.append(entry(0)), inclusion=None)
        for i in range(1, 7):
            log.append(entry(i))
        key = log.public_key_b64()
        assert check_still_logged(receipt, proof_from(log, receipt), key).size == 7
        rewritten = dataclasses.replace(
            receipt, entry=receipt.entry.replace(b'"caseworker"', b'"someone-else"')
        )  # what a coordinator could have kept in the client's file before receipts carried proofs
        with pytest.raises(AuditError) as err:
            check_still_logged(rewritten, proof_from(log, rewritten), key)
        assert (
            err.value.code == "AUDIT_RECEIPT_UNPROVEN" and "kept before receipts carried a proof" in err.value.message
        )
        broken = proof_from(log, receipt)
        del broken.inclusion[:]
        with pytest.raises(AuditError) as err:
            check_still_logged(receipt, broken, key)
        assert err.value.code == "AUDIT_RECEIPT_UNPROVEN"


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
        wrong.checkpoint.node_id = "n1"  # another node's label: the signature covers it
        with pytest.raises(AuditError) as err:
            check_still_logged(receipt, wrong, log.public_key_b64())
        assert err.value.code == "AUDIT_CHECKPOINT_SIGNATURE"
