"""`hpf audit verify|show`: exit 0 on a clean log, exit 7 naming the first bad entry on a tampered one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from audit_tamper import Tamper, delete, edit, lines, swap, write_lines
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from hpf.cli.app import _register, app
from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.records import CHECKPOINTS, ENTRIES, Checkpoint, Receipt, canonical_json, checkpoint_line
from hpf.federation.errors import AuditError

_register()
N = 12


def request(i: int, **extra: str | int | bool | None) -> dict[str, str | int | bool | None]:
    refused = i % 4 == 3
    return {
        "time": f"2026-11-28T08:30:{i:02d}.000Z",
        "node": "hangzhou",
        "identity": "alice" if i % 2 else "bob",
        "role": "caseworker" if i % 3 else "analyst",
        "purpose": "loan-review",
        "consent": True,
        "operation": "query",
        "query": hashlib.sha256(f"q{i}".encode()).hexdigest(),
        "decision": "refused" if refused else "allowed",
        "code": "POLICY_DENIED" if refused else "",
        "rule": "",
        "ciphertext": "",
        "nonce": f"{i:032x}",
        **extra,
    }


@dataclasses.dataclass
class Kept:
    """A node's log and what an auditor and the clients kept from it."""

    log: Path
    public_key: Path
    checkpoint: Path  # the auditor's last saved checkpoint (size N)
    receipts: Path  # every client's receipts, one JSON object per line
    receipt_list: list[Receipt]


@pytest.fixture
def kept(tmp_path: Path) -> Kept:
    log_dir = tmp_path / "hangzhou-audit"
    with AuditLog.open(log_dir, "hangzhou", fsync=False) as log:
        receipts = [log.append(request(i)) for i in range(N)]
        (tmp_path / "hangzhou.pub").write_text(log.public_key_b64() + "\n")
    (tmp_path / "checkpoint.json").write_text(json.dumps(receipts[-1].checkpoint.to_dict()))
    (tmp_path / "receipts.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in receipts))
    return Kept(log_dir, tmp_path / "hangzhou.pub", tmp_path / "checkpoint.json", tmp_path / "receipts.jsonl", receipts)


def hpf(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def verify(kept: Kept, *extra: str | Path) -> Result:
    return hpf("audit", "verify", kept.log, "--public-key", kept.public_key, *extra)


def _edit(k: int) -> Tamper:
    return edit(k, b'"purpose":"loan-review"', b'"purpose":"curiosity"')


def forge(size: int) -> Callable[[Path], None]:
    def tamper(d: Path) -> None:
        cps = lines(d, CHECKPOINTS)
        cp = Checkpoint.from_dict(json.loads(cps[size - 1]))
        cps[size - 1] = checkpoint_line(dataclasses.replace(cp, signature=bytes(64))).rstrip(b"\n")
        write_lines(d, cps, CHECKPOINTS)

    return tamper


def test_a_clean_log_verifies(kept: Kept) -> None:
    result = verify(kept)
    assert result.exit_code == 0, result.output
    root = kept.receipt_list[-1].checkpoint.root.hex()
    assert f"ok: {N} entries, {N} checkpoints, node hangzhou, root {root} at size {N}" in result.stdout
    assert "key pinned" in result.stdout and result.stderr == ""
    result = verify(kept, "--checkpoint", kept.checkpoint, "--receipts", kept.receipts)
    assert result.exit_code == 0 and result.stderr == ""


def test_a_key_read_from_the_log_itself_is_a_warning(kept: Kept) -> None:
    result = hpf("audit", "verify", kept.log)
    assert result.exit_code == 0
    assert "key NOT pinned" in result.stdout
    assert "pass --public-key to pin the node's key" in result.stderr


@pytest.mark.parametrize(
    ("tamper", "code", "first_bad"),
    [
        (_edit(0), "AUDIT_ROOT_MISMATCH", 0),
        (_edit(5), "AUDIT_ROOT_MISMATCH", 5),
        (_edit(N - 1), "AUDIT_ROOT_MISMATCH", N - 1),
        (delete(0), "AUDIT_INDEX_MISMATCH", 0),
        (delete(6), "AUDIT_INDEX_MISMATCH", 6),
        (swap(2), "AUDIT_INDEX_MISMATCH", 2),
        (swap(9), "AUDIT_INDEX_MISMATCH", 9),
        (lambda d: write_lines(d, lines(d)[:-1]), "AUDIT_TRUNCATED", N - 1),
        (lambda d: write_lines(d, lines(d)[:-4]), "AUDIT_TRUNCATED", N - 4),
        (forge(1), "AUDIT_CHECKPOINT_SIGNATURE", 0),
        (forge(7), "AUDIT_CHECKPOINT_SIGNATURE", 6),
    ],
    ids=[
        "edit-0",
        "edit-5",
        "edit-last",
        "delete-0",
        "delete-6",
        "swap-2-3",
        "swap-9-10",
        "truncate-1",
        "truncate-4",
        "forged-signature-1",
        "forged-signature-7",
    ],
)
def test_tampering_exits_7_naming_the_first_bad_entry(
    kept: Kept, tamper: Callable[[Path], None], code: str, first_bad: int
) -> None:
    tamper(kept.log)
    result = verify(kept)
    assert result.exit_code == 7, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: [{code}] entry {first_bad}: "), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    as_json = verify(kept, "--format", "json")
    assert as_json.exit_code == 7
    report = json.loads(as_json.stdout)
    assert (report["ok"], report["code"], report["first_bad"]) == (False, code, first_bad)


def test_another_nodes_key_exits_7(kept: Kept, tmp_path: Path) -> None:
    import base64

    from cryptography.hazmat.primitives import serialization

    other = Ed25519PrivateKey.generate().public_key()
    pem = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "other.pem").write_bytes(pem)
    result = hpf("audit", "verify", kept.log, "--public-key", tmp_path / "other.pem")
    assert result.exit_code == 7
    assert result.stderr.startswith("error: [AUDIT_CHECKPOINT_SIGNATURE] entry 0: ")
    raw = other.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    (tmp_path / "other.b64").write_text(base64.b64encode(raw).decode())
    assert hpf("audit", "verify", kept.log, "--public-key", tmp_path / "other.b64").exit_code == 7


def test_cutting_entries_and_checkpoints_together_needs_the_saved_checkpoint(kept: Kept) -> None:
    write_lines(kept.log, lines(kept.log)[:9])
    write_lines(kept.log, lines(kept.log, CHECKPOINTS)[:9], CHECKPOINTS)
    assert verify(kept).exit_code == 0  # consistent with itself
    result = verify(kept, "--checkpoint", kept.checkpoint)
    assert result.exit_code == 7
    assert result.stderr.startswith("error: [AUDIT_TRUNCATED] entry 9: missing: the log ends after 9 entries")
    result = verify(kept, "--receipts", kept.receipts)
    assert result.exit_code == 7 and result.stderr.startswith("error: [AUDIT_TRUNCATED] entry 9: ")


def test_a_history_rewritten_with_the_node_key_is_inconsistent_with_what_was_kept(kept: Kept) -> None:
    write_lines(kept.log, lines(kept.log)[:4])
    write_lines(kept.log, lines(kept.log, CHECKPOINTS)[:4], CHECKPOINTS)
    with AuditLog.open(kept.log, "hangzhou", fsync=False) as log:  # re-signed by whoever holds audit.key
        for i in range(4, N):
            log.append(request(i, decision="allowed", code=""))
    assert verify(kept).exit_code == 0
    result = verify(kept, "--checkpoint", kept.checkpoint)
    assert result.exit_code == 7 and result.stderr.startswith("error: [AUDIT_INCONSISTENT] ")
    result = verify(kept, "--receipts", kept.receipts)
    assert result.exit_code == 7
    assert result.stderr.startswith("error: [AUDIT_RECEIPT_MISMATCH] entry 7: ")  # entry 7 was a refusal


def forged(index: int) -> bytes:
    """An entry line appended by someone without the node's key: canonical, with the right index."""
    return canonical_json({**request(index, identity="mallory"), "index": index})


def test_entries_appended_without_the_key_exit_7_naming_the_first(kept: Kept) -> None:
    write_lines(kept.log, [*lines(kept.log), forged(N), forged(N + 1)])
    result = verify(kept)
    assert result.exit_code == 7, result.output
    assert result.stderr.startswith(f"error: [AUDIT_UNSIGNED] entry {N}: "), result.stderr
    report = json.loads(verify(kept, "--format", "json").stdout)
    assert (report["ok"], report["code"], report["first_bad"]) == (False, "AUDIT_UNSIGNED", N)
    with pytest.raises(AuditError) as err:  # nor does the node sign them when it restarts
        AuditLog.open(kept.log, "hangzhou", fsync=False)
    assert err.value.code == "AUDIT_LOG_CORRUPT" and f"at entry {N}:" in err.value.message
    assert verify(kept).exit_code == 7


def test_one_entry_without_its_checkpoint_is_a_warning(kept: Kept) -> None:
    write_lines(
        kept.log, lines(kept.log, CHECKPOINTS)[:-1], CHECKPOINTS
    )  # a crash between the entry and its checkpoint
    result = verify(kept)
    assert result.exit_code == 0, result.output
    assert "warning: the last entry (" in result.stderr and "not covered by a checkpoint" in result.stderr


def test_a_torn_last_line_exits_7_with_its_own_code(kept: Kept) -> None:
    cps = lines(kept.log, CHECKPOINTS)
    (kept.log / CHECKPOINTS).write_bytes(b"".join(line + b"\n" for line in cps[:-1]) + cps[-1][:40])
    result = verify(kept)
    assert result.exit_code == 7
    assert result.stderr.startswith(f"error: [AUDIT_TORN_TAIL] checkpoint {N} "), result.stderr
    report = json.loads(verify(kept, "--format", "json").stdout)
    assert (report["code"], report["first_bad"], report["entries"]) == ("AUDIT_TORN_TAIL", None, N)
    with AuditLog.open(kept.log, "hangzhou", fsync=False):  # the node cuts it off and signs entry N - 1 again
        pass
    assert verify(kept, "--checkpoint", kept.checkpoint, "--receipts", kept.receipts).exit_code == 0
    with (kept.log / ENTRIES).open("ab") as fh:
        fh.write(forged(N)[:25])
    result = verify(kept)
    assert result.exit_code == 7 and result.stderr.startswith(f"error: [AUDIT_TORN_TAIL] entry {N}: ")


def test_the_help_says_what_only_kept_checkpoints_catch() -> None:
    result = hpf("audit", "verify", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "same earlier prefix" in text and "cannot be detected from the files alone" in text
    for way in ("--checkpoint", "--receipts", "hpf audit receipts"):
        assert way in text


def test_bad_inputs_are_named(kept: Kept, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"size": 3}')
    result = verify(kept, "--checkpoint", tmp_path / "bad.json")
    assert result.exit_code == 7 and result.stderr.startswith("error: [AUDIT_CHECKPOINT_MALFORMED] ")
    (tmp_path / "bad.jsonl").write_text(kept.receipts.read_text() + "not json\n")
    result = verify(kept, "--receipts", tmp_path / "bad.jsonl")
    assert result.exit_code == 7 and f"line {N + 1}: not JSON" in result.stderr
    result = verify(kept, "--checkpoint", tmp_path / "missing.json")
    assert result.exit_code == 2 and result.stderr.startswith("error: [CONFIG_NOT_FOUND] ")
    (tmp_path / "garbage.pub").write_text("hello")
    result = hpf("audit", "verify", kept.log, "--public-key", tmp_path / "garbage.pub")
    assert result.exit_code == 7 and result.stderr.startswith("error: [AUDIT_KEY_INVALID] ")
    result = hpf("audit", "verify", tmp_path / "no-such-log")
    assert result.exit_code == 7 and result.stderr.startswith("error: [AUDIT_NOT_FOUND] ")


def test_json_report_of_a_clean_log(kept: Kept) -> None:
    result = verify(kept, "--format", "json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] and report["entries"] == N and report["key_pinned"] and report["first_bad"] is None
    assert report["latest"] == kept.receipt_list[-1].checkpoint.to_dict()


def test_show_lists_entries_for_an_auditor(kept: Kept) -> None:
    result = hpf("audit", "show", kept.log)
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[1]
    for column in ("index", "time", "identity", "role", "purpose", "operation", "decision", "code", "query"):
        assert column in header
    assert hashlib.sha256(b"q0").hexdigest()[:12] + "…" in result.stdout
    assert hashlib.sha256(b"q0").hexdigest() not in result.stdout  # fingerprints are shortened
    assert f"{N} shown, {N} matching, {N} in the log" in result.stdout


def test_show_filters(kept: Kept) -> None:
    def indexes(*args: str) -> list[int]:
        result = hpf("audit", "show", kept.log, "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return [e["index"] for e in json.loads(result.stdout)]

    assert indexes() == list(range(N))
    assert indexes("--identity", "alice") == [1, 3, 5, 7, 9, 11]
    assert indexes("--decision", "refused") == [3, 7, 11]
    assert indexes("--decision", "refused", "--identity", "bob") == []
    assert indexes("--since", "2026-11-28T08:30:08Z") == [8, 9, 10, 11]
    assert indexes("--since", "2026-11-28T16:30:08+08:00") == [8, 9, 10, 11]
    assert indexes("--limit", "3") == [9, 10, 11]
    assert indexes("--identity", "alice", "--limit", "2") == [9, 11]
    assert hpf("audit", "show", kept.log, "--decision", "maybe").exit_code == 2
    result = hpf("audit", "show", kept.log, "--since", "yesterday")
    assert result.exit_code == 2 and "RFC 3339" in result.output


def test_show_prints_missing_fields_empty_and_log_text_literally(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "log", "suzhou", fsync=False) as log:
        log.append({"identity": "[bold red]x[/bold red]\x1b[2J", "decision": "allowed"})
        log.append({"time": "not a time"})
    result = hpf("audit", "show", tmp_path / "log")
    assert result.exit_code == 0
    assert "[bold red]x[/bold red]?[2J" in result.stdout and "\x1b" not in result.stdout
    result = hpf("audit", "show", tmp_path / "log", "--since", "2026-01-01T00:00:00Z", "--format", "json")
    assert json.loads(result.stdout) == []  # entries without a readable time are not "since" anything
    result = hpf("audit", "show", tmp_path / "missing")
    assert result.exit_code == 7 and result.stderr.startswith("error: [AUDIT_NOT_FOUND] ")


def test_the_installed_command_exits_7_on_a_tampered_log(kept: Kept) -> None:
    _edit(3)(kept.log)
    result = subprocess.run(
        [sys.executable, "-m", "hpf.cli", "audit", "verify", str(kept.log), "--public-key", str(kept.public_key)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 7
    assert result.stderr.startswith("error: [AUDIT_ROOT_MISMATCH] entry 3: ") and "Traceback" not in result.stderr
