"""The node's audit log: what it writes, that it survives restarts and threads, and that tampering is found."""

from __future__ import annotations

import base64
import dataclasses
import doctest
import enum
import errno
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from audit_tamper import Tamper, delete, edit, lines, replace_line, swap, write_lines
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hpf.federation.audit import log as audit_log
from hpf.federation.audit import merkle
from hpf.federation.audit import records as audit_records
from hpf.federation.audit.keys import load_public_key
from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.records import (
    CHECKPOINT_DOMAIN,
    CHECKPOINTS,
    ENTRIES,
    Checkpoint,
    Receipt,
    canonical_json,
    checkpoint_line,
)
from hpf.federation.audit.verify import read_entries, verify_log
from hpf.federation.errors import AuditError, error_for_code


def request(i: int, **extra: str | int | bool | None) -> dict[str, str | int | bool | None]:
    """What a node logs for one request (the index is the log's to add)."""
    refused = i % 5 == 0
    return {
        "time": f"2026-11-28T08:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
        "node": "hangzhou",
        "identity": ("alice", "bob", "carol")[i % 3],
        "role": "caseworker",
        "purpose": "loan-review",
        "consent": i % 2 == 0,
        "operation": "explain" if i % 4 == 0 else "query",
        "query": hashlib.sha256(f"q{i}".encode()).hexdigest(),
        "decision": "refused" if refused else "allowed",
        "code": "POLICY_DENIED" if refused else "",
        "rule": "hangzhou: roles.caseworker.purposes" if refused else "",
        "ciphertext": "" if refused else hashlib.sha256(f"c{i}".encode()).hexdigest(),
        "nonce": hashlib.sha256(f"n{i}".encode()).hexdigest()[:32],
        **extra,
    }


def make_log(directory: Path, n: int, node_id: str = "hangzhou") -> tuple[Ed25519PublicKey, list[Receipt]]:
    with AuditLog.open(directory, node_id, fsync=False) as log:
        receipts = [log.append(request(i)) for i in range(n)]
        return log.public_key, receipts


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


# -- canonical JSON ----------------------------------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": '中文 "q" \\', "c": None, "d": False}) == (
        '{"a":"中文 \\"q\\" \\\\","b":1,"c":null,"d":false}'.encode()
    )
    assert canonical_json({}) == b"{}"


def test_canonical_json_refuses_what_has_no_single_form() -> None:
    for bad in ({"x": 1.0}, {"x": [1]}, {"x": {"y": 1}}, {1: "x"}, {"x": b"raw"}, {"x": "\ud800"}):
        with pytest.raises(AuditError) as err:
            canonical_json(bad)  # type: ignore[arg-type]
        assert err.value.code == "AUDIT_FIELD_INVALID"


def test_canonical_json_writes_enums_as_their_values() -> None:
    class Decision(str, enum.Enum):
        allowed = "allowed"

    class Level(enum.IntEnum):
        high = 3

    assert canonical_json({"d": Decision.allowed, "l": Level.high, "t": True}) == b'{"d":"allowed","l":3,"t":true}'


def test_docstring_examples_run() -> None:
    result = doctest.testmod(audit_records, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_audit_errors_are_data_loss_and_rebuild_from_their_code() -> None:
    import grpc

    err = error_for_code("AUDIT_ROOT_MISMATCH", "x")
    assert isinstance(err, AuditError) and err.status == grpc.StatusCode.DATA_LOSS
    assert AuditError("x").code == "AUDIT_INVALID"


# -- checkpoints and receipts --------------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_signature(log_dir: Path) -> None:
    key, receipts = make_log(log_dir, 3)
    cp = receipts[-1].checkpoint
    assert Checkpoint.from_dict(json.loads(json.dumps(cp.to_dict()))) == cp
    assert checkpoint_line(cp) == canonical_json(cp.to_dict()) + b"\n" == lines(log_dir, CHECKPOINTS)[-1] + b"\n"
    message = cp.signed_message()
    assert message.startswith(CHECKPOINT_DOMAIN)
    assert message.decode().split("\n")[1:5] == ["hangzhou", "3", cp.root.hex(), cp.time]
    assert len(cp.time) == 24 and cp.time.endswith("Z") and cp.time[19] == "."
    cp.verify(key)
    for changed in (
        dataclasses.replace(cp, size=2),
        dataclasses.replace(cp, root=bytes(32)),
        dataclasses.replace(cp, time="2020-01-01T00:00:00.000Z"),
        dataclasses.replace(cp, node_id="suzhou"),
    ):
        with pytest.raises(AuditError) as err:
            changed.verify(key)
        assert err.value.code == "AUDIT_CHECKPOINT_SIGNATURE"
    with pytest.raises(AuditError):
        cp.verify(Ed25519PrivateKey.generate().public_key())


@pytest.mark.parametrize(
    "change",
    [
        {"node_id": "hang\nzhou"},
        {"node_id": "hangzhou\n"},
        {"size": -1},
        {"size": True},
        {"size": "3"},
        {"root": "AB" * 32},
        {"root": "ab" * 31},
        {"time": "2026-11-28T08:30:10Z"},
        {"time": "2026-11-28T08:30:10.123Z\n"},
        {"signature": base64.b64encode(b"x" * 63).decode()},
        {"signature": "not base64!"},
        {"signature": None},
    ],
)
def test_checkpoint_from_dict_names_what_is_malformed(log_dir: Path, change: dict[str, object]) -> None:
    _, receipts = make_log(log_dir, 1)
    data = {**receipts[0].checkpoint.to_dict(), **change}
    with pytest.raises(AuditError) as err:
        Checkpoint.from_dict(data)
    assert err.value.code == "AUDIT_CHECKPOINT_MALFORMED"
    assert next(iter(change)) in err.value.message
    with pytest.raises(AuditError):
        Checkpoint.from_dict([data])


def test_receipt_round_trip_and_inclusion(log_dir: Path) -> None:
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        receipts = [log.append(request(i)) for i in range(6)]
        receipt = receipts[3]
        assert Receipt.from_dict(json.loads(json.dumps(receipt.to_dict()))) == receipt
        assert receipt.leaf_hash == merkle.leaf_hash(receipt.entry)
        assert receipt.fields()["index"] == 3 and receipt.checkpoint.size == 4
        receipt.check(log.public_key)
        receipt.check(log.public_key, log.inclusion_proof(3, 4))
        # each receipt carries its entry's proof in its own checkpoint's tree
        assert all(r.inclusion == tuple(log.inclusion_proof(r.index, r.index + 1)) for r in receipts)
        assert all(r.proves_entry() for r in receipts)
        assert not dataclasses.replace(receipt, entry=receipts[2].entry).proves_entry()
        assert not dataclasses.replace(receipt, inclusion=None).proves_entry()
        assert not dataclasses.replace(receipt, inclusion=(bytes(32),) * len(receipt.inclusion or ())).proves_entry()
        # the same entry is in every later tree the node signs
        later = log.receipt(3)
        assert later.checkpoint.size == 6 and later.proves_entry()
        later.check(log.public_key, log.inclusion_proof(3))
        with pytest.raises(AuditError) as err:
            receipt.check(log.public_key, log.inclusion_proof(2, 4))
        assert err.value.code == "AUDIT_RECEIPT_MISMATCH"
        with pytest.raises(AuditError) as err:
            dataclasses.replace(receipt, entry=receipts[2].entry).check(log.public_key)
        assert err.value.code == "AUDIT_RECEIPT_MISMATCH"
        with pytest.raises(AuditError) as err:
            dataclasses.replace(receipt, index=5).check(log.public_key)
        assert err.value.code == "AUDIT_RECEIPT_MISMATCH"
        with pytest.raises(AuditError) as err:
            receipt.check(Ed25519PrivateKey.generate().public_key())
        assert err.value.code == "AUDIT_CHECKPOINT_SIGNATURE"
    # a receipt kept before receipts carried a proof still reads, without one
    old = {k: v for k, v in receipt.to_dict().items() if k != "inclusion"}
    assert Receipt.from_dict(old) == dataclasses.replace(receipt, inclusion=None)
    for bad in (
        {},
        {"node_id": "h", "index": "1", "entry": "{}"},
        {**receipt.to_dict(), "checkpoint": {}},
        {**receipt.to_dict(), "inclusion": "00" * 32},
        {**receipt.to_dict(), "inclusion": ["zz" * 32]},
        {**receipt.to_dict(), "inclusion": ["00" * 32] * 65},
    ):
        with pytest.raises(AuditError) as err:
            Receipt.from_dict(bad)
        assert err.value.code == "AUDIT_RECEIPT_MALFORMED"


def test_a_deeply_nested_entry_is_a_problem_not_a_crash(log_dir: Path) -> None:
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        receipt = log.append(request(0))
    nested = dataclasses.replace(receipt, entry=b"[" * 200_000 + b"]" * 200_000)
    assert nested.problem() == "the receipt's entry 0 is not JSON" and not nested.proves_entry()


# -- keys ---------------------------------------------------------------------------------------------------------


def test_open_makes_a_private_key_only_its_owner_reads(log_dir: Path) -> None:
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        key_file, pub_file = log_dir / "audit.key", log_dir / "audit.pub"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(pub_file.stat().st_mode) == 0o644
        assert stat.S_IMODE((log_dir / ENTRIES).stat().st_mode) == 0o600
        assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        raw = base64.b64decode(log.public_key_b64())
        assert len(raw) == 32 and log.public_key_raw() == raw
        spki = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        assert load_public_key(pub_file.read_text()).public_bytes(*spki) == raw
        assert load_public_key(log.public_key_b64()).public_bytes(*spki) == raw
        assert log.public_key.public_bytes(*spki) == raw
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as again:  # the same key on every open
        assert again.public_key_b64() == log.public_key_b64()


def test_load_public_key_refuses_other_keys() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for bad in (ec_pem, b"not a key", base64.b64encode(b"x" * 31), b"-----BEGIN PUBLIC KEY-----\nxx\n"):
        with pytest.raises(AuditError) as err:
            load_public_key(bad)
        assert err.value.code == "AUDIT_KEY_INVALID"


def test_open_refuses_a_log_whose_key_is_gone_or_replaced(log_dir: Path) -> None:
    make_log(log_dir, 2)
    pub = (log_dir / "audit.pub").read_bytes()
    (log_dir / "audit.pub").write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(AuditError) as err:
        AuditLog.open(log_dir, "hangzhou")
    assert err.value.code == "AUDIT_KEY_MISMATCH"
    (log_dir / "audit.pub").write_bytes(pub)
    (log_dir / "audit.key").unlink()
    with pytest.raises(AuditError) as err:
        AuditLog.open(log_dir, "hangzhou")
    assert err.value.code == "AUDIT_KEY_MISSING"


# -- appending -----------------------------------------------------------------------------------------------------


def test_append_writes_canonical_entries_and_a_signed_checkpoint_each(log_dir: Path) -> None:
    with AuditLog.open(log_dir, "hangzhou", fsync=True) as log:
        assert log.size == 0 and log.latest_checkpoint() is None
        receipts = [log.append(request(i)) for i in range(5)]
        assert log.size == 5 and log.latest_checkpoint() == receipts[-1].checkpoint
        rows = lines(log_dir)
        leaves = [merkle.leaf_hash(row) for row in rows]
        for i, receipt in enumerate(receipts):
            assert receipt.index == i and receipt.node_id == "hangzhou"
            assert receipt.entry == rows[i] == log.entry(i)
            assert json.loads(rows[i]) == {**request(i), "index": i}
            assert rows[i] == canonical_json(json.loads(rows[i]))
            cp = receipt.checkpoint
            assert cp.size == i + 1 and cp.root == merkle.root(leaves[: i + 1]) == log.root(i + 1)
            cp.verify(log.public_key)
        assert [Checkpoint.from_dict(json.loads(row)) for row in lines(log_dir, CHECKPOINTS)] == [
            r.checkpoint for r in receipts
        ]
        assert [e["index"] for e in log.entries()] == [0, 1, 2, 3, 4]
        assert list(log.entries(3)) == [json.loads(rows[3]), json.loads(rows[4])]
        assert list(log.entries(5)) == []
        assert [e["index"] for e in read_entries(log_dir, start=2)] == [2, 3, 4]


def test_append_refuses_an_index_and_values_without_one_form(log_dir: Path) -> None:
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        for bad in ({"index": 7}, {"amount": 1.5}, {"nested": {"a": 1}}):
            with pytest.raises(AuditError) as err:
                log.append(bad)  # type: ignore[arg-type]
            assert err.value.code == "AUDIT_FIELD_INVALID"
        assert log.size == 0 and (log_dir / ENTRIES).read_bytes() == b""
        assert log.append({"decision": "allowed"}).index == 0


def test_proofs_connect_every_checkpoint_the_node_signed(log_dir: Path) -> None:
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        receipts = [log.append(request(i)) for i in range(13)]
        for receipt in receipts:
            for later in receipts[receipt.index :]:
                cp = later.checkpoint
                proof = log.inclusion_proof(receipt.index, cp.size)
                assert merkle.verify_inclusion(receipt.leaf_hash, receipt.index, cp.size, proof, cp.root)
                old = receipt.checkpoint
                proof = log.consistency_proof(old.size, cp.size)
                assert merkle.verify_consistency(old.size, cp.size, old.root, cp.root, proof)
        for bad in (
            lambda: log.inclusion_proof(13),
            lambda: log.consistency_proof(5, 14),
            lambda: log.entry(13),
            lambda: log.root(14),
        ):
            with pytest.raises(AuditError) as err:
                bad()
            assert err.value.code == "AUDIT_PROOF_RANGE"


def test_reopening_continues_the_same_log(log_dir: Path) -> None:
    key, first = make_log(log_dir, 4)
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        assert log.size == 4 and log.latest_checkpoint() == first[-1].checkpoint
        assert log.root() == first[-1].checkpoint.root
        receipt = log.append(request(4))
        assert receipt.index == 4 and json.loads(receipt.entry)["index"] == 4
        proof = log.consistency_proof(4, 5)
        assert merkle.verify_consistency(4, 5, first[-1].checkpoint.root, receipt.checkpoint.root, proof)
    with AuditLog.open(log_dir, "hangzhou", fsync=False, check_all_signatures=False) as log:
        assert log.append(request(5)).index == 5
    report = verify_log(log_dir, key, older=first[1].checkpoint, receipts=[*first, receipt])
    assert report.ok and report.entries == report.checkpoints == 6 and report.key_pinned


def test_an_entry_whose_checkpoint_was_not_written_is_signed_on_the_next_open(log_dir: Path) -> None:
    key, _ = make_log(log_dir, 4)
    write_lines(log_dir, lines(log_dir, CHECKPOINTS)[:-1], CHECKPOINTS)  # a crash between the two writes
    report = verify_log(log_dir, key)
    assert report.ok and report.unsigned == 1 and report.latest is not None and report.latest.size == 3
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        latest = log.latest_checkpoint()
        assert latest is not None and latest.size == 4
    report = verify_log(log_dir, key)
    assert report.ok and report.unsigned == 0 and report.checkpoints == 4


def forged_entry(index: int) -> bytes:
    """An entry line as someone without the key would append it: canonical, with the right index."""
    return canonical_json({**request(index, identity="mallory"), "index": index})


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def test_entries_appended_without_the_key_fail_verification_and_are_not_signed_at_open(log_dir: Path) -> None:
    key, _ = make_log(log_dir, 4)
    write_lines(log_dir, [*lines(log_dir), forged_entry(4), forged_entry(5)])
    for full in (True, False):
        report = verify_log(log_dir, key, check_all_signatures=full)
        assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_UNSIGNED", 4), report.problem
        assert "entries 4..5" in (report.problem or "")
    error = report.error()
    assert error is not None and str(error).startswith("[AUDIT_UNSIGNED] entry 4: ")
    before = (log_dir / ENTRIES).read_bytes(), (log_dir / CHECKPOINTS).read_bytes()
    for full in (True, False):
        with pytest.raises(AuditError) as err:
            AuditLog.open(log_dir, "hangzhou", fsync=False, check_all_signatures=full)
        assert err.value.code == "AUDIT_LOG_CORRUPT"
        assert "at entry 4:" in err.value.message and "AUDIT_UNSIGNED" in err.value.message
    assert ((log_dir / ENTRIES).read_bytes(), (log_dir / CHECKPOINTS).read_bytes()) == before  # nothing signed
    assert verify_log(log_dir, key).code == "AUDIT_UNSIGNED"


def test_one_forged_entry_after_a_crash_window_is_still_two_unsigned(log_dir: Path) -> None:
    key, _ = make_log(log_dir, 4)
    write_lines(log_dir, lines(log_dir, CHECKPOINTS)[:-1], CHECKPOINTS)  # entry 3 lost its checkpoint
    write_lines(log_dir, [*lines(log_dir), forged_entry(4)])
    report = verify_log(log_dir, key)
    assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_UNSIGNED", 3)
    with pytest.raises(AuditError) as err:
        AuditLog.open(log_dir, "hangzhou", fsync=False)
    assert err.value.code == "AUDIT_LOG_CORRUPT" and "at entry 3:" in err.value.message


def test_entries_without_any_checkpoint_are_unsigned(log_dir: Path) -> None:
    key, _ = make_log(log_dir, 0)
    write_lines(log_dir, [forged_entry(0), forged_entry(1)])
    report = verify_log(log_dir, key)
    assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_UNSIGNED", 0)
    write_lines(log_dir, [forged_entry(0)])  # one: what a crash during the first append leaves
    report = verify_log(log_dir, key)
    assert report.ok and report.unsigned == 1 and report.latest is None


# -- a crash in the middle of a write: a torn last line ---------------------------------------------------------


def evidence(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}.torn-*"))


def test_a_torn_entry_whose_checkpoint_was_never_written_is_cut_off_at_open(
    log_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, receipts = make_log(log_dir, 4)
    torn = forged_entry(4)[:37]  # the crash came in the middle of writing entry 4
    append_bytes(log_dir / ENTRIES, torn)
    report = verify_log(log_dir, key)
    assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_TORN_TAIL", 4), report.problem
    assert str(report.error()).startswith("[AUDIT_TORN_TAIL] entry 4: ")
    assert verify_log(log_dir, key, check_all_signatures=False).code == "AUDIT_TORN_TAIL"
    with caplog.at_level("WARNING", logger="hpf.audit"), AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        assert log.size == 4 and log.latest_checkpoint() == receipts[-1].checkpoint
        assert log.append(request(4)).index == 4
    (kept,) = evidence(log_dir, ENTRIES)
    assert kept.read_bytes() == torn and evidence(log_dir, CHECKPOINTS) == []
    assert ENTRIES in caplog.text and kept.name in caplog.text
    report = verify_log(log_dir, key, receipts=receipts)
    assert report.ok and report.entries == report.checkpoints == 5 and report.unsigned == 0


def test_a_torn_checkpoint_after_a_whole_entry_is_cut_off_and_the_entry_signed(
    log_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, receipts = make_log(log_dir, 4)
    rows = lines(log_dir, CHECKPOINTS)
    torn = rows[-1][:50]  # the crash came in the middle of writing checkpoint 4
    (log_dir / CHECKPOINTS).write_bytes(b"".join(r + b"\n" for r in rows[:-1]) + torn)
    report = verify_log(log_dir, key)
    assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_TORN_TAIL", None), report.problem
    assert "checkpoint 4" in (report.problem or "") and report.entries == 4
    with caplog.at_level("WARNING", logger="hpf.audit"), AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        latest = log.latest_checkpoint()
        assert latest is not None and latest.size == 4 and latest.root == receipts[-1].checkpoint.root
    (kept,) = evidence(log_dir, CHECKPOINTS)
    assert kept.read_bytes() == torn and evidence(log_dir, ENTRIES) == []
    assert CHECKPOINTS in caplog.text
    report = verify_log(log_dir, key, receipts=receipts)
    assert report.ok and report.entries == report.checkpoints == 4 and report.unsigned == 0


def test_the_first_entry_torn_leaves_an_empty_log(log_dir: Path) -> None:
    key, _ = make_log(log_dir, 0)
    append_bytes(log_dir / ENTRIES, forged_entry(0)[:20])
    assert (verify_log(log_dir, key).code, verify_log(log_dir, key).first_bad) == ("AUDIT_TORN_TAIL", 0)
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        assert log.size == 0 and log.append(request(0)).index == 0
    assert verify_log(log_dir, key).ok


def test_a_torn_tail_does_not_excuse_more_unsigned_entries(log_dir: Path) -> None:
    key, _ = make_log(log_dir, 4)
    rows = lines(log_dir, CHECKPOINTS)
    write_lines(log_dir, [*lines(log_dir), forged_entry(4)])
    (log_dir / CHECKPOINTS).write_bytes(b"".join(r + b"\n" for r in rows[:-1]) + rows[-1][:50])
    report = verify_log(log_dir, key)  # entries 3 and 4 uncovered, and checkpoint 4 torn
    assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_UNSIGNED", 3)
    append_bytes(log_dir / ENTRIES, forged_entry(5)[:30])
    report = verify_log(log_dir, key)
    assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_UNSIGNED", 3)
    before = (log_dir / ENTRIES).read_bytes(), (log_dir / CHECKPOINTS).read_bytes()
    with pytest.raises(AuditError) as err:
        AuditLog.open(log_dir, "hangzhou", fsync=False)
    assert err.value.code == "AUDIT_LOG_CORRUPT" and "at entry 3:" in err.value.message
    # a log it refuses is left as it was, torn lines included
    assert ((log_dir / ENTRIES).read_bytes(), (log_dir / CHECKPOINTS).read_bytes()) == before
    assert evidence(log_dir, ENTRIES) == evidence(log_dir, CHECKPOINTS) == []


def test_one_writer_at_a_time(log_dir: Path) -> None:
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        with pytest.raises(AuditError) as err:
            AuditLog.open(log_dir, "hangzhou")
        assert err.value.code == "AUDIT_LOG_LOCKED"
        log.append(request(0))
    log.close()  # closing twice is harmless
    with pytest.raises(AuditError) as err:
        log.append(request(1))
    assert err.value.code == "AUDIT_LOG_BROKEN"
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        assert log.append(request(1)).index == 1


def test_open_refuses_a_tampered_log_and_names_the_entry(log_dir: Path) -> None:
    make_log(log_dir, 6)
    rows = lines(log_dir)
    rows[3] = rows[3].replace(b'"identity":"alice"', b'"identity":"mallory"')
    write_lines(log_dir, rows)
    before = (log_dir / ENTRIES).read_bytes(), (log_dir / CHECKPOINTS).read_bytes()
    with pytest.raises(AuditError) as err:
        AuditLog.open(log_dir, "hangzhou")
    assert err.value.code == "AUDIT_LOG_CORRUPT"
    assert "at entry 3" in err.value.message and "AUDIT_ROOT_MISMATCH" in err.value.message
    assert ((log_dir / ENTRIES).read_bytes(), (log_dir / CHECKPOINTS).read_bytes()) == before
    with pytest.raises(AuditError) as err:  # the refusal released the lock: a second try says the same
        AuditLog.open(log_dir, "hangzhou")
    assert err.value.code == "AUDIT_LOG_CORRUPT"


def test_open_refuses_another_nodes_log(log_dir: Path) -> None:
    make_log(log_dir, 2)
    with pytest.raises(AuditError) as err:
        AuditLog.open(log_dir, "suzhou")
    assert err.value.code == "AUDIT_NODE_MISMATCH"
    with pytest.raises(AuditError) as err:
        AuditLog.open(log_dir, "bad id")
    assert err.value.code == "AUDIT_FIELD_INVALID"


def test_every_entry_names_the_logs_node(log_dir: Path, tmp_path: Path) -> None:
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        unnamed = {k: v for k, v in request(0).items() if k != "node"}
        assert json.loads(log.append(unnamed).entry)["node"] == "hangzhou"  # the log names it itself
        with pytest.raises(AuditError) as err:
            log.append(request(1, node="suzhou"))
        assert err.value.code == "AUDIT_FIELD_INVALID"
        key = log.public_key
    assert verify_log(log_dir, key, node_id="hangzhou").ok
    report = verify_log(log_dir, key, node_id="suzhou")  # asked for suzhou's log, given hangzhou's
    assert (report.code, report.first_bad) == ("AUDIT_NODE_MISMATCH", 0) and "hangzhou" in (report.problem or "")
    # whoever holds the key signs checkpoints over entries naming another node: the entries give it away
    signing = serialization.load_pem_private_key((log_dir / "audit.key").read_bytes(), password=None)
    assert isinstance(signing, Ed25519PrivateKey)
    forged = tmp_path / "forged"
    forged.mkdir()
    tree, rows, checkpoints = merkle.MerkleTree(), [], []
    for i in range(3):
        rows.append(canonical_json({**request(i, node="suzhou" if i == 1 else "hangzhou"), "index": i}))
        tree.append(merkle.leaf_hash(rows[-1]))
        cp = Checkpoint("hangzhou", i + 1, tree.root(), "2026-11-28T08:00:00.000Z", b"")
        checkpoints.append(checkpoint_line(dataclasses.replace(cp, signature=signing.sign(cp.signed_message()))))
    write_lines(forged, rows)
    (forged / CHECKPOINTS).write_bytes(b"".join(checkpoints))
    for node_id in (None, "hangzhou"):
        report = verify_log(forged, key, node_id=node_id)
        assert (report.code, report.first_bad) == ("AUDIT_NODE_MISMATCH", 1), report
        assert "suzhou" in (report.problem or "")


def test_threads_appending_together_make_one_valid_log(log_dir: Path) -> None:
    threads, per_thread = 8, 40
    receipts: list[Receipt] = []
    guard = threading.Lock()
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        start = threading.Barrier(threads)

        def work(t: int) -> None:
            start.wait()
            mine = [log.append(request(t * per_thread + i, thread=t)) for i in range(per_thread)]
            with guard:
                receipts.extend(mine)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        n = threads * per_thread
        assert sorted(r.index for r in receipts) == list(range(n))
        assert [e["index"] for e in log.entries()] == list(range(n))
        for r in receipts:
            assert log.entry(r.index) == r.entry and r.checkpoint.size == r.index + 1
            r.check(log.public_key, log.inclusion_proof(r.index, r.checkpoint.size))
        # every thread's entries are all there, each once
        per = [sum(1 for e in log.entries() if e["thread"] == t) for t in range(threads)]
        assert per == [per_thread] * threads
    report = verify_log(log_dir, log.public_key, receipts=receipts)
    assert report.ok and report.entries == report.checkpoints == n


# -- verification: tampering --------------------------------------------------------------------------------------


def _edit(k: int) -> Tamper:
    return edit(k, b'"role":"caseworker"', b'"role":"supervisor"')


def _respace(k: int) -> Callable[[Path], None]:
    return lambda d: replace_line(k, json.dumps(json.loads(lines(d)[k]), sort_keys=True).encode())(d)


def _float(k: int) -> Callable[[Path], None]:
    def tamper(d: Path) -> None:
        fields = json.loads(lines(d)[k])
        fields["amount"] = 1.5
        replace_line(k, json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())(d)

    return tamper


def _torn(d: Path) -> None:
    data = (d / ENTRIES).read_bytes()
    (d / ENTRIES).write_bytes(data[: len(data) - 40])


def _forge_signature(size: int) -> Callable[[Path], None]:
    def tamper(d: Path) -> None:
        rows = lines(d, CHECKPOINTS)
        cp = Checkpoint.from_dict(json.loads(rows[size - 1]))
        forged = dataclasses.replace(cp, signature=bytes([cp.signature[0] ^ 1]) + cp.signature[1:])
        rows[size - 1] = checkpoint_line(forged).rstrip(b"\n")
        write_lines(d, rows, CHECKPOINTS)

    return tamper


def _swap_checkpoints(d: Path) -> None:
    rows = lines(d, CHECKPOINTS)
    rows[4], rows[5] = rows[5], rows[4]
    write_lines(d, rows, CHECKPOINTS)


N = 12
TAMPERING = {
    "edit entry 0": (_edit(0), "AUDIT_ROOT_MISMATCH", 0),
    "edit entry 7": (_edit(7), "AUDIT_ROOT_MISMATCH", 7),
    "edit the last entry": (_edit(N - 1), "AUDIT_ROOT_MISMATCH", N - 1),
    "respace entry 4": (_respace(4), "AUDIT_ENTRY_NOT_CANONICAL", 4),
    "garbage in entry 2": (replace_line(2, b"{not json"), "AUDIT_ENTRY_MALFORMED", 2),
    "an array for entry 2": (replace_line(2, b'[{"index":2}]'), "AUDIT_ENTRY_MALFORMED", 2),
    "a float in entry 6": (_float(6), "AUDIT_ENTRY_MALFORMED", 6),
    "bytes that are not UTF-8 in entry 3": (replace_line(3, b'{"index":3,"x":"\xff"}'), "AUDIT_ENTRY_MALFORMED", 3),
    "delete entry 0": (delete(0), "AUDIT_INDEX_MISMATCH", 0),
    "delete entry 5": (delete(5), "AUDIT_INDEX_MISMATCH", 5),
    "delete the last entry": (delete(N - 1), "AUDIT_TRUNCATED", N - 1),
    "swap entries 3 and 4": (swap(3), "AUDIT_INDEX_MISMATCH", 3),
    "swap the last two": (swap(N - 2), "AUDIT_INDEX_MISMATCH", N - 2),
    "truncate 3 entries": (lambda d: write_lines(d, lines(d)[:-3]), "AUDIT_TRUNCATED", N - 3),
    "truncate every entry": (lambda d: write_lines(d, []), "AUDIT_TRUNCATED", 0),
    "delete the entries file": (lambda d: (d / ENTRIES).unlink(), "AUDIT_TRUNCATED", 0),
    "cut the last line short": (_torn, "AUDIT_TORN_TAIL", N - 1),
    "forge checkpoint 1's signature": (_forge_signature(1), "AUDIT_CHECKPOINT_SIGNATURE", 0),
    "forge checkpoint 9's signature": (_forge_signature(9), "AUDIT_CHECKPOINT_SIGNATURE", 8),
    "reorder checkpoints": (_swap_checkpoints, "AUDIT_CHECKPOINT_ORDER", 5),
    "garble checkpoint 3": (
        lambda d: write_lines(d, [*lines(d, CHECKPOINTS)[:2], b"{", *lines(d, CHECKPOINTS)[3:]], CHECKPOINTS),
        "AUDIT_CHECKPOINT_MALFORMED",
        2,
    ),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampering_is_found_at_the_first_bad_entry(log_dir: Path, case: str) -> None:
    tamper, code, first_bad = TAMPERING[case]
    key, _ = make_log(log_dir, N)
    assert verify_log(log_dir, key).ok
    tamper(log_dir)
    report = verify_log(log_dir, key)
    assert (report.ok, report.code, report.first_bad) == (False, code, first_bad), report.problem
    if code != "AUDIT_CHECKPOINT_SIGNATURE":  # only an intermediate signature needs the full check
        quick = verify_log(log_dir, key, check_all_signatures=False)
        assert (quick.code, quick.first_bad) == (code, first_bad)
    error = report.error()
    assert error is not None and str(error).startswith(f"[{code}] entry {first_bad}: ")
    with pytest.raises(AuditError) as err:
        AuditLog.open(log_dir, "hangzhou")
    assert err.value.code == "AUDIT_LOG_CORRUPT" and f"at entry {first_bad}:" in err.value.message


def test_a_signed_entry_cut_short_later_is_torn_and_refused(log_dir: Path) -> None:
    key, _ = make_log(log_dir, N)
    _torn(log_dir)
    report = verify_log(log_dir, key)
    assert (report.code, report.first_bad) == ("AUDIT_TORN_TAIL", N - 1)
    assert f"checkpoint {N}" in (report.problem or "")  # it was whole when the node signed it
    with pytest.raises(AuditError) as err:
        AuditLog.open(log_dir, "hangzhou", fsync=False)
    assert err.value.code == "AUDIT_LOG_CORRUPT" and f"at entry {N - 1}:" in err.value.message
    assert "AUDIT_TRUNCATED" in err.value.message and evidence(log_dir, ENTRIES) == []


def test_a_clean_log_verifies_with_pinned_or_local_key(log_dir: Path) -> None:
    key, receipts = make_log(log_dir, N)
    pinned = verify_log(log_dir, key, older=receipts[4].checkpoint, receipts=receipts)
    assert pinned.ok and pinned.key_pinned and pinned.entries == pinned.checkpoints == N
    assert pinned.root == receipts[-1].checkpoint.root and pinned.latest == receipts[-1].checkpoint
    assert pinned.node_id == "hangzhou" and pinned.first_bad is None and pinned.error() is None
    local = verify_log(log_dir)
    assert local.ok and not local.key_pinned


def test_another_key_verifies_nothing(log_dir: Path, tmp_path: Path) -> None:
    make_log(log_dir, N)
    other, _ = make_log(tmp_path / "other", 1)
    report = verify_log(log_dir, other)
    assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_CHECKPOINT_SIGNATURE", 0)


def test_a_log_cut_short_with_its_checkpoints_needs_an_older_checkpoint(log_dir: Path) -> None:
    key, receipts = make_log(log_dir, N)
    saved = receipts[-1].checkpoint  # what an auditor kept last time
    write_lines(log_dir, lines(log_dir)[:8])
    write_lines(log_dir, lines(log_dir, CHECKPOINTS)[:8], CHECKPOINTS)
    assert verify_log(log_dir, key).ok  # consistent on its own
    report = verify_log(log_dir, key, older=saved)
    assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_TRUNCATED", 8)
    report = verify_log(log_dir, key, receipts=[receipts[10]])
    assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_TRUNCATED", 8)
    assert verify_log(log_dir, key, older=receipts[7].checkpoint, receipts=receipts[:8]).ok


def test_a_log_rewritten_with_the_nodes_own_key_is_caught_by_what_others_kept(log_dir: Path) -> None:
    key, receipts = make_log(log_dir, N)
    # the operator (who holds audit.key) rewrites history from entry 5 on and re-signs it
    write_lines(log_dir, lines(log_dir)[:5])
    write_lines(log_dir, lines(log_dir, CHECKPOINTS)[:5], CHECKPOINTS)
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        for i in range(5, N):
            log.append(request(i, identity="someone-else"))
    assert verify_log(log_dir, key).ok
    report = verify_log(log_dir, key, older=receipts[-1].checkpoint)
    assert (report.ok, report.code) == (False, "AUDIT_INCONSISTENT")
    assert "the saved checkpoint" in (report.problem or "")
    assert verify_log(log_dir, key, older=receipts[4].checkpoint).ok  # history before the rewrite is intact
    report = verify_log(log_dir, key, receipts=[receipts[6]])
    assert (report.ok, report.code, report.first_bad) == (False, "AUDIT_RECEIPT_MISMATCH", 6)


def test_bad_outside_checkpoints_and_receipts_are_named(log_dir: Path, tmp_path: Path) -> None:
    key, receipts = make_log(log_dir, N)
    _, foreign = make_log(tmp_path / "other", 3)
    report = verify_log(log_dir, key, older=foreign[-1].checkpoint)
    assert (report.code, report.first_bad) == ("AUDIT_CHECKPOINT_SIGNATURE", None)
    report = verify_log(log_dir, key, receipts=[receipts[0], foreign[0]])
    assert report.code == "AUDIT_CHECKPOINT_SIGNATURE" and "receipt 2" in (report.problem or "")
    report = verify_log(log_dir, key, receipts=[dataclasses.replace(receipts[3], index=2)])
    assert report.code == "AUDIT_RECEIPT_MISMATCH"


def test_missing_log_is_not_found(tmp_path: Path) -> None:
    report = verify_log(tmp_path / "nowhere")
    assert (report.ok, report.code) == (False, "AUDIT_NOT_FOUND")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ENTRIES).write_bytes(b"")
    report = verify_log(tmp_path / "empty")  # a log without its public key, and none given
    assert report.code == "AUDIT_NOT_FOUND" and "public key" in (report.problem or "")
    with pytest.raises(AuditError) as err:
        list(read_entries(tmp_path / "nowhere"))
    assert err.value.code == "AUDIT_NOT_FOUND"


def test_awkward_text_stays_canonical_across_chunks(log_dir: Path) -> None:
    """Unicode, escapes and line separators round-trip; entries past the first read chunk are checked too."""
    awkward = 'quote " backslash \\ tab \t newline \n nul \x00 ls \u2028 中文 😀 </script>'
    pad = "x" * 2000
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        for i in range(900):  # about 2 MB: the verifier reads it in several chunks
            log.append(request(i, note=awkward, pad=pad, big=2**63 + i, negative=-i, empty=None))
        key = log.public_key
    assert (log_dir / ENTRIES).stat().st_size > 2 * (1 << 20)
    assert verify_log(log_dir, key).ok
    assert json.loads(lines(log_dir)[0])["note"] == awkward
    _edit(700)(log_dir)
    report = verify_log(log_dir, key)
    assert (report.code, report.first_bad) == ("AUDIT_ROOT_MISMATCH", 700)
    delete(650)(log_dir)
    report = verify_log(log_dir, key)
    assert (report.code, report.first_bad) == ("AUDIT_INDEX_MISMATCH", 650)


def test_the_quick_check_still_verifies_the_latest_signature(log_dir: Path) -> None:
    key, _ = make_log(log_dir, N)
    _forge_signature(N)(log_dir)
    for full in (True, False):
        report = verify_log(log_dir, key, check_all_signatures=full)
        assert (report.code, report.first_bad) == ("AUDIT_CHECKPOINT_SIGNATURE", N - 1)
    with pytest.raises(AuditError) as err:
        AuditLog.open(log_dir, "hangzhou", check_all_signatures=False)
    assert err.value.code == "AUDIT_LOG_CORRUPT"


def _checkpoint_writes_fail(monkeypatch: pytest.MonkeyPatch, log: AuditLog) -> None:
    """The checkpoint's write fails once its entry is on disk (the disk filled in between)."""
    real = audit_log._write_all

    def write_all(fd: int, data: bytes) -> None:
        if fd == log._checkpoints_fd:
            real(fd, data[:20])  # as much as fitted
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(audit_log, "_write_all", write_all)


def test_a_failed_append_is_undone_and_the_next_one_is_kept(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        kept = [log.append(request(0))]
        before = (log_dir / ENTRIES).read_bytes(), (log_dir / CHECKPOINTS).read_bytes()
        with monkeypatch.context() as m:
            _checkpoint_writes_fail(m, log)
            with pytest.raises(AuditError) as err:
                log.append(request(1))
        assert err.value.code == "AUDIT_WRITE_FAILED"
        assert ((log_dir / ENTRIES).read_bytes(), (log_dir / CHECKPOINTS).read_bytes()) == before
        kept.append(log.append(request(1)))  # the disk takes writes again: the same index, on the same log
        assert [r.index for r in kept] == [0, 1] and log.size == 2
    assert verify_log(log_dir, receipts=kept).ok


def _device_fails(fd: int, size: int) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_an_append_that_cannot_be_undone_stops_the_log_until_reopened(
    log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        kept = log.append(request(0))
        with monkeypatch.context() as m:
            _checkpoint_writes_fail(m, log)
            m.setattr(os, "ftruncate", _device_fails)
            with pytest.raises(AuditError) as err:
                log.append(request(1))
        assert err.value.code == "AUDIT_LOG_BROKEN"
        with pytest.raises(AuditError) as err:  # what is on disk is not what the log holds: no more appends
            log.append(request(2))
        assert err.value.code == "AUDIT_LOG_BROKEN"
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:  # reopening repairs what was left
        assert log.append(request(2)).index == 2  # the entry left without its checkpoint, signed at the reopening
    assert verify_log(log_dir, receipts=[kept]).ok
