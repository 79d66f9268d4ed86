"""Backup and restore of a node: `hpf node backup` of a running node, `hpf node restore` into a fresh state
directory, and what the restored node refuses (node.backup, node.restore, federation.audit.restore_record).

One federation of three regions under a DP policy for caseworkers (epsilon 1 an answer, 3 a day) and exact answers
for operators. Region n0 is backed up while questions are answered, then spends a caseworker's budget, then is
lost; the backup is restored into an empty state directory and n0 started again from it. The story runs once
(module fixture ``restored``); each test checks one consequence.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import pytest
import yaml
from typer.testing import CliRunner, Result

from hpf.cli.app import _register, app
from hpf.client.profile import load_profile
from hpf.federation.audit.records import ENTRIES, Checkpoint
from hpf.federation.audit.verify import read_entries
from hpf.federation.crypto import he
from hpf.federation.errors import AuditError, FederationError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.node.backup import BACKUP_FILES, LEDGER
from hpf.node.server import start_node

pytestmark = pytest.mark.integration

DP_POLICY = harness.OPEN_POLICY.with_name("open-dp.yaml")
NODES = ("n0", "n1", "n2")
TABLES: dict[str, Any] = {
    "claims": {
        "contribution": {"person": "person_id", "max_rows": 2, "max_regions": 2},
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "kind": {"type": "VARCHAR", "class": "public", "domain": {"values": ["a", "b"]}},
            "amount": {"type": "BIGINT", "class": "public", "bounds": [0, 1000]},
        },
    }
}
NODE_ROWS = {
    n: {"claims": [(f"P{i}-{j}", "a" if j % 2 else "b", (31 * j + i) % 1000) for j in range(40)]}
    for i, n in enumerate(NODES)
}
PEOPLE = (("caseworker", "caseworker", None), ("cw_budget", "caseworker", None), ("boss", "operator", None))
EXACT = "SELECT kind, COUNT(*) AS n, SUM(amount) AS total FROM claims GROUP BY kind ORDER BY kind"
COUNT = "SELECT COUNT(*) AS n FROM claims"
WINDOW_S = 10  # the restored node's envelope_window_s: the least a node takes

_register("node")
_register("audit")


def hpf(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def said(result: Result) -> str:
    """What a command printed, on stdout and stderr."""
    try:
        return result.output + result.stderr
    except ValueError:  # stderr not captured apart
        return result.output


def node_yaml(fed: harness.Federation, node_id: str, path: Path) -> Path:
    """The node's configuration as the operator's node.yaml, listening on the port it serves on."""
    config = fed.node_configs[node_id]
    doc = config.model_dump(mode="json", exclude_unset=True)
    doc["listen"] = f"127.0.0.1:{fed.nodes[node_id].port}"
    path.write_text(yaml.safe_dump(doc))
    return path


@dataclass
class Story:
    fed: harness.Federation
    keys: he.ClientKeys
    root: Path
    config: Path
    backup: Path
    backup_output: str
    answered_during_backup: int
    refused_before: FederationError  # what a question signed before the restore got from the restored node
    window: list[str]  # what questions got while the restored node's window ran (a refusal, or who was missing)
    spent_before_loss: list[float]
    restore_output: str
    live_state_files: set[str]


@pytest.fixture(scope="module")
def restored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("restore")
    keys = he.ClientKeys.generate()
    with harness.federation(root, TABLES, NODE_ROWS, policy=DP_POLICY, people=PEOPLE) as fed:
        config = node_yaml(fed, "n0", root / "n0-node.yaml")
        backup = root / "backups" / "n0-1"
        # back up while the federation answers questions
        answered: list[int] = []
        stop = threading.Event()

        def ask() -> None:
            with fed.client(keys=keys, person="boss") as c:
                while not stop.is_set():
                    answered.append(len(c.query(EXACT).rows))

        asker = threading.Thread(target=ask)
        asker.start()
        try:
            while len(answered) < 2:
                stop.wait(0.05)
            made = hpf("node", "backup", backup, "--config", config)
            while len(answered) < 4:
                stop.wait(0.05)
        finally:
            stop.set()
            asker.join()
        assert made.exit_code == 0, said(made)
        live = fed.node_configs["n0"].state_dir
        live_files = {p.relative_to(live).as_posix() for p in live.rglob("*") if p.is_file()}
        # after the backup: the caseworker spends the whole day's budget at every region
        with fed.client(keys=keys, person="cw_budget") as c:
            answers = [c.query(COUNT) for _ in range(3)]
            refused = harness.refusal(lambda: c.query(COUNT))
            assert refused.code == "POLICY_PRIVACY_BUDGET"
        spent = [a.privacy["epsilon"] for a in answers]
        # what clients keep of the lost host: a receipt of an entry after the backup, and its last checkpoint
        lost_receipts = [r for a in answers for r in a.receipts if r.node_id == "n0"]
        (root / "lost-receipts.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in lost_receipts))
        lost_checkpoint = fed.nodes["n0"].handler.audit.latest_checkpoint()
        assert lost_checkpoint is not None
        (root / "lost-checkpoint.json").write_text(json.dumps(lost_checkpoint.to_dict()))
        # n0's host is lost with its state; a new host restores the backup into an empty state directory
        port = fed.nodes["n0"].port
        fed.stop_node("n0")
        state_dir = fed.node_configs["n0"].state_dir
        shutil.rmtree(state_dir)
        done = hpf("node", "restore", backup, "--config", config)
        assert done.exit_code == 0, said(done)
        # a question signed before the restore (its time is fixed at the node's start), sent after it
        with fed.client(keys=keys, person="boss") as c:
            signed_before = c.sign(EXACT)
        # the restored node takes questions again one envelope window after its restore: the least, for the test
        fed.node_configs["n0"] = fed.node_configs["n0"].model_copy(update={"envelope_window_s": WINDOW_S})
        fed.nodes["n0"] = start_node(fed.node_configs["n0"], f"127.0.0.1:{port}")
        fed.wait_for_regions()
        with fed.client(keys=keys, person="boss") as c:  # at once, while it is fresh: it may have run already
            c.sign = lambda *args, **kwargs: signed_before  # type: ignore[method-assign]
            refused_before = harness.refusal(lambda: c.query(EXACT))
        window = _answered_again(fed, keys)
        yield Story(
            fed,
            keys,
            root,
            config,
            backup,
            said(made),
            len(answered),
            refused_before,
            window,
            spent,
            said(done),
            live_files,
        )


def _answered_again(fed: harness.Federation, keys: he.ClientKeys) -> list[str]:
    """Ask until every region answers, within the restored node's window and a margin; what each question
    before that got (a refusal's code, or the regions named missing)."""
    got: list[str] = []
    give_up = time.monotonic() + WINDOW_S + 30
    with fed.client(keys=keys, person="boss") as c:
        while time.monotonic() < give_up:
            try:
                answer = c.query(EXACT)
            except FederationError as err:
                got.append(err.code)
            else:
                if not answer.missing:
                    return got
                got.append(",".join(f"{m['node_id']}:{m['code']}" for m in answer.missing))
            time.sleep(0.5)
    raise AssertionError(f"n0 was not answered again within its window and a margin: {got}")


def test_a_running_node_is_backed_up_while_questions_are_answered(restored: Story) -> None:
    manifest = json.loads((restored.backup / "manifest.json").read_text())
    size = manifest["checkpoint"]["size"]
    assert restored.answered_during_backup >= 4 and size > 0
    assert restored.backup_output.strip().startswith(
        f"node n0: backed up to {restored.backup} at checkpoint {size} ({size} entries) in "
    )
    assert (restored.backup.stat().st_mode & 0o777) == 0o700
    state = restored.backup / "state"
    files = [p for p in state.rglob("*") if p.is_file()]
    assert {p.relative_to(state).as_posix() for p in files} == set(manifest["files"])
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in files)
    assert {"audit/audit.key", "agreement.key", "privacy/privacy-budget.sqlite3"} <= set(manifest["files"])
    assert len((state / "audit" / ENTRIES).read_bytes().splitlines()) == size
    # every file the running node keeps is one a backup holds (a new state file must join BACKUP_FILES), but the
    # ledger's WAL: the ledger is copied through SQLite
    kept = {f for f in restored.live_state_files if not f.endswith(("-wal", "-shm"))}
    assert kept <= BACKUP_FILES and {f"audit/{ENTRIES}", LEDGER} <= kept
    assert "node n0: restored" in restored.restore_output and f"checkpoint {size}" in restored.restore_output


def test_a_question_signed_before_the_restore_is_refused_and_a_new_one_answered_exactly(restored: Story) -> None:
    fed = restored.fed
    err = restored.refused_before
    assert err.code == "AUTH_SIGNED_BEFORE_RESTORE" and "takes questions signed from" in err.message
    # meanwhile (the window after the restore) the region is named missing, never answered
    assert all(got in ("REGIONS_MISSING", "AUTH_SIGNED_BEFORE_RESTORE", "n0:NODE_UNWELL") for got in restored.window)
    with fed.client(keys=restored.keys, person="boss") as c:
        answer = c.query(EXACT)
    assert [tuple(r) for r in answer.rows] == fed.oracle(EXACT) and answer.privacy["mode"] == "exact"


def test_a_budget_spent_after_the_backup_is_not_spent_again_after_the_restore(restored: Story) -> None:
    assert restored.spent_before_loss == [1.0, 1.0, 1.0]
    fed = restored.fed
    with fed.client(keys=restored.keys, person="cw_budget") as c:
        err = harness.refusal(lambda: c.query(COUNT))
    assert err.code == "POLICY_PRIVACY_BUDGET"
    assert "n0" in str(err) and "restored from a backup" in str(err)
    # an identity the ledger never saw is charged in full for the gap too
    with fed.client(keys=restored.keys, person="caseworker") as c:
        err = harness.refusal(lambda: c.query(COUNT))
    assert err.code == "POLICY_PRIVACY_BUDGET" and "restored from a backup" in str(err)


def test_audit_verify_reports_the_declared_break_and_succeeds(restored: Story) -> None:
    fed = restored.fed
    audit = fed.audit_dir("n0")
    manifest = json.loads((restored.backup / "manifest.json").read_text())
    size = manifest["checkpoint"]["size"]
    record = list(read_entries(audit, size))[0]
    assert record["kind"] == "restored" and record["restored_from"] == size
    key = audit.parent / "n0.pub"
    key.write_text(fed.nodes["n0"].handler.audit.public_key_b64())
    result = hpf("audit", "verify", audit, "--public-key", key, "--node", "n0")
    assert result.exit_code == 0, said(result)
    assert f"declared break: restored from checkpoint {size} at {record['restore_time']}" in said(result)


def test_the_lost_hosts_checkpoint_and_receipts_are_lost_in_the_break_not_tampering(
    restored: Story, tmp_path: Path
) -> None:
    """What clients kept of the lost host after the backup (its last checkpoint, receipts of entries past the
    backup's checkpoint) no longer matches the restored log: reported as lost in the declared break."""
    fed = restored.fed
    key = tmp_path / "n0.pub"
    key.write_text(fed.nodes["n0"].handler.audit.public_key_b64())
    audit = fed.audit_dir("n0")
    lost = restored.root / "lost-checkpoint.json"
    result = hpf("audit", "verify", audit, "--public-key", key, "--node", "n0", "--checkpoint", lost)
    assert result.exit_code == 0, said(result)
    assert "the saved checkpoint" in said(result) and "is lost in the declared break" in said(result)
    receipts = restored.root / "lost-receipts.jsonl"
    assert receipts.read_text().count("\n") == 3
    result = hpf("audit", "verify", audit, "--public-key", key, "--node", "n0", "--receipts", receipts)
    assert result.exit_code == 0, said(result)
    assert said(result).count("is lost in the declared break at checkpoint") == 3
    assert "0 receipt(s) of node n0 still in the log, 3 lost in a declared break" in said(result)


def test_without_the_restore_record_the_lost_checkpoint_is_tampering(restored: Story, tmp_path: Path) -> None:
    """The same log cut back before its restore record (as if never restored): the lost checkpoint fails."""
    fed = restored.fed
    manifest = json.loads((restored.backup / "manifest.json").read_text())
    size = manifest["checkpoint"]["size"]
    cut = tmp_path / "audit"
    shutil.copytree(fed.audit_dir("n0"), cut)
    entries = (cut / ENTRIES).read_bytes().splitlines(keepends=True)[:size]
    (cut / ENTRIES).write_bytes(b"".join(entries))
    checkpoints = (cut / "checkpoints.jsonl").read_bytes().splitlines(keepends=True)
    (cut / "checkpoints.jsonl").write_bytes(
        b"".join(c for c in checkpoints if Checkpoint.from_dict(json.loads(c)).size <= size)
    )
    key = tmp_path / "n0.pub"
    key.write_text(fed.nodes["n0"].handler.audit.public_key_b64())
    lost = restored.root / "lost-checkpoint.json"
    result = hpf("audit", "verify", cut, "--public-key", key, "--node", "n0", "--checkpoint", lost)
    assert result.exit_code != 0 and "AUDIT_TRUNCATED" in said(result)


def test_a_forged_restore_record_fails_verification(restored: Story, tmp_path: Path) -> None:
    """A restore record whose signature is not the node's is no declared break: the log fails."""
    fed = restored.fed
    manifest = json.loads((restored.backup / "manifest.json").read_text())
    size = manifest["checkpoint"]["size"]
    forged = tmp_path / "audit"
    shutil.copytree(fed.audit_dir("n0"), forged)
    lines = (forged / ENTRIES).read_bytes().splitlines(keepends=True)
    record = json.loads(lines[size])
    record["restore_signature"] = record["restore_signature"][:-4] + (
        "AAA=" if record["restore_signature"][-4:] != "AAA=" else "BBB="
    )
    from hpf.federation.audit.records import canonical_json

    (forged / ENTRIES).write_bytes(b"".join(lines[:size]) + canonical_json(record) + b"\n")
    checkpoints = (forged / "checkpoints.jsonl").read_bytes().splitlines(keepends=True)
    (forged / "checkpoints.jsonl").write_bytes(
        b"".join(c for c in checkpoints if Checkpoint.from_dict(json.loads(c)).size <= size)
    )
    key = tmp_path / "n0.pub"
    key.write_text(fed.nodes["n0"].handler.audit.public_key_b64())
    result = hpf("audit", "verify", forged, "--public-key", key, "--node", "n0")
    assert result.exit_code != 0 and "AUDIT_RESTORE_INVALID" in said(result)


@pytest.fixture
def copy_of_backup(restored: Story, tmp_path: Path) -> Path:
    copy = tmp_path / "backup"
    shutil.copytree(restored.backup, copy)
    return copy


def _restore_into_fresh(restored: Story, backup: Path, tmp_path: Path, *extra: str) -> Result:
    """Restore ``backup`` with n0's configuration pointed at a fresh state directory and a port nothing serves."""
    doc = yaml.safe_load(restored.config.read_text())
    doc["state_dir"] = str(tmp_path / "fresh-state")
    doc["listen"] = "127.0.0.1:1"
    config = tmp_path / "fresh.yaml"
    config.write_text(yaml.safe_dump(doc))
    return hpf("node", "restore", backup, "--config", config, *extra)


def test_a_tampered_backup_is_refused(restored: Story, copy_of_backup: Path, tmp_path: Path) -> None:
    entries = copy_of_backup / "state" / "audit" / ENTRIES
    data = bytearray(entries.read_bytes())
    data[len(data) // 2] ^= 0x01
    entries.write_bytes(bytes(data))
    result = _restore_into_fresh(restored, copy_of_backup, tmp_path)
    assert result.exit_code != 0 and "BACKUP_DIGEST_MISMATCH" in said(result)
    assert not (tmp_path / "fresh-state").exists()
    assert not [p for p in tmp_path.iterdir() if "restoring" in p.name]  # nothing of the copy is left


def test_a_backup_whose_digest_is_made_to_match_still_fails_its_checkpoint(
    restored: Story, copy_of_backup: Path, tmp_path: Path
) -> None:
    import hashlib

    entries = copy_of_backup / "state" / "audit" / ENTRIES
    lines = entries.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"decision":"allowed"', b'"decision":"refused"')
    entries.write_bytes(b"".join(lines))
    manifest_path = copy_of_backup / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["audit/entries.jsonl"] = hashlib.sha256(entries.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    result = _restore_into_fresh(restored, copy_of_backup, tmp_path)
    assert result.exit_code != 0 and "BACKUP_AUDIT_INVALID" in said(result)


def test_a_backup_of_another_node_is_refused(restored: Story, copy_of_backup: Path, tmp_path: Path) -> None:
    manifest_path = copy_of_backup / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["node_id"] = "n1"
    manifest_path.write_text(json.dumps(manifest))
    result = _restore_into_fresh(restored, copy_of_backup, tmp_path)
    assert result.exit_code != 0 and "BACKUP_NODE_MISMATCH" in said(result)


def test_a_state_directory_that_holds_state_is_refused_unless_forced(
    restored: Story, copy_of_backup: Path, tmp_path: Path
) -> None:
    (tmp_path / "fresh-state").mkdir()
    (tmp_path / "fresh-state" / "agreement.key").write_text("someone else's")
    result = _restore_into_fresh(restored, copy_of_backup, tmp_path)
    assert result.exit_code != 0 and "RESTORE_STATE_NOT_EMPTY" in said(result)
    forced = _restore_into_fresh(restored, copy_of_backup, tmp_path, "--force")
    assert forced.exit_code == 0, said(forced)
    assert json.loads((tmp_path / "fresh-state" / "restored.json").read_text())["pending"] is True
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("fresh-state.before-restore-")]
    assert len(kept) == 1 and (kept[0] / "agreement.key").read_text() == "someone else's"


def test_a_running_node_is_not_restored_over(restored: Story, copy_of_backup: Path) -> None:
    result = hpf("node", "restore", copy_of_backup, "--config", restored.config, "--force")
    assert result.exit_code != 0 and "RESTORE_NODE_RUNNING" in said(result)


def test_backup_refuses_a_folder_that_is_not_empty(restored: Story, tmp_path: Path) -> None:
    target = tmp_path / "full"
    target.mkdir()
    (target / "something").write_text("x")
    result = hpf("node", "backup", target, "--config", restored.config)
    assert result.exit_code != 0 and "BACKUP_TARGET_NOT_EMPTY" in said(result)
    assert [p.name for p in target.iterdir()] == ["something"]


def test_a_restart_keeps_the_restore_and_a_stopped_node_is_backed_up_too(restored: Story, tmp_path: Path) -> None:
    """The restore is declared once: a later start appends no second record and keeps refusing older questions;
    and a node that is not running is backed up as well, its restore state with it."""
    fed = restored.fed
    marker = json.loads((fed.node_configs["n0"].state_dir / "restored.json").read_text())
    assert marker["pending"] is False and marker["restored_at_ms"] > 0
    port = fed.nodes["n0"].port
    fed.stop_node("n0")
    try:
        made = hpf("node", "backup", tmp_path / "stopped", "--config", restored.config)
        assert made.exit_code == 0, said(made)
    finally:
        fed.nodes["n0"] = start_node(fed.node_configs["n0"], f"127.0.0.1:{port}")
        fed.wait_for_regions()
    records = [e for e in read_entries(fed.audit_dir("n0")) if e.get("kind") == "restored"]
    assert len(records) == 1
    assert json.loads((fed.node_configs["n0"].state_dir / "restored.json").read_text()) == marker
    copied = json.loads((tmp_path / "stopped" / "state" / "restored.json").read_text())
    assert copied == marker
    # the restore time is the first start's: questions signed before it and its window stay refused
    assert fed.nodes["n0"].handler.admission.restored_at_ms == marker["restored_at_ms"]


def test_a_node_that_has_logged_nothing_yet_is_backed_up_and_restored(tmp_path: Path) -> None:
    """A node fresh from its keys (an empty audit log, no checkpoint) is backed up with its keys, and restored
    from checkpoint 0: it starts, declares the break, and its log verifies."""
    from hpf.demo.containers import prepare, volume_layout
    from hpf.node.config import load_node_config
    from hpf.node.server import running_node

    layout = volume_layout(tmp_path / "fed", ["shanghai", "hangzhou", "nanjing"], 47401)
    prepare(layout, 1_000, 7, lambda _line: None)
    config = layout.node_config("shanghai")
    assert (layout.state("shanghai") / "audit" / "entries.jsonl").stat().st_size == 0
    made = hpf("node", "backup", tmp_path / "backup", "--config", config)
    assert made.exit_code == 0 and "at checkpoint 0 (0 entries)" in said(made), said(made)
    doc = yaml.safe_load(config.read_text())
    doc["state_dir"] = str(tmp_path / "new-host-state")
    moved = tmp_path / "node-new-host.yaml"
    moved.write_text(yaml.safe_dump(doc))
    back = hpf("node", "restore", tmp_path / "backup", "--config", moved)
    assert back.exit_code == 0, said(back)
    with running_node(load_node_config(moved)):
        pass
    checked = hpf(
        "audit", "verify", tmp_path / "new-host-state" / "audit", "--catalog", layout.catalog, "--node", "shanghai"
    )
    assert checked.exit_code == 0 and "declared break: restored from checkpoint 0" in said(checked), said(checked)


def test_hpf_audit_receipts_through_the_coordinator_reports_the_lost_hosts_receipts_lost(
    restored: Story, tmp_path: Path
) -> None:
    """`hpf audit receipts` after the restore, through the coordinator: a receipt of an entry before the backup
    is still logged, the lost host's receipts of entries past the backup's checkpoint are lost in the declared
    break (proven by the region's signed restore record, not counted as rewritten or unproven), and one of them
    with its entry altered still fails."""
    fed = restored.fed
    size = json.loads((restored.backup / "manifest.json").read_text())["checkpoint"]["size"]
    doc = yaml.safe_load(fed.profile_path.read_text())
    kept_path = load_profile(fed.profile_path).receipts
    assert kept_path is not None
    kept = [json.loads(line) for line in kept_path.read_text().splitlines()]
    before = next(r for r in kept if r["node_id"] == "n0" and r["checkpoint"]["size"] <= size)
    lost = [json.loads(line) for line in (restored.root / "lost-receipts.jsonl").read_text().splitlines()]
    assert all(r["index"] >= size for r in lost)
    altered = json.loads(json.dumps(lost[0]))
    entry = json.loads(altered["entry"])
    entry["rows"] = entry.get("rows", 0) + 1 if isinstance(entry.get("rows"), int) else 1
    altered["entry"] = json.dumps(entry, separators=(",", ":"), sort_keys=True)
    assert altered["entry"] != lost[0]["entry"]

    def receipts_check(receipts: list[dict[str, Any]], name: str) -> tuple[Result, dict[str, Any]]:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in receipts))
        profile = fed.profile_path.with_name(f"{tmp_path.name}-{name}.yaml")  # its relative paths hold there
        profile.write_text(yaml.safe_dump(doc | {"receipts": str(path)}))
        result = hpf("audit", "receipts", "--profile", profile, "--format", "json")
        return result, json.loads(result.output.splitlines()[0])

    result, report = receipts_check([before, *lost], "kept")
    assert result.exit_code == 0, said(result)
    statuses = [r["status"] for r in report["receipts"]]
    assert statuses[0] == "still logged"
    record = next(e for e in read_entries(fed.audit_dir("n0"), size) if e["kind"] == "restored")
    assert statuses[1:] == [
        f"lost in the declared break (restored from checkpoint {size} at {record['restore_time']})"
    ] * len(lost)
    assert (report["lost"], report["rewritten"], report["unproven"]) == (len(lost), 0, 0)

    result, report = receipts_check([altered, lost[1]], "altered")
    assert result.exit_code == 7, said(result)
    statuses = [r["status"] for r in report["receipts"]]
    assert statuses[0] in ("REWRITTEN", "could not be proven (the region or the coordinator)")
    assert statuses[1].startswith("lost in the declared break")
    assert (report["lost"], report["rewritten"] + report["unproven"]) == (1, 1)


def test_a_lost_receipt_is_excused_only_by_the_regions_own_signed_restore_record(restored: Story) -> None:
    """The proof the coordinator relays for a lost host's receipt, altered as a lying coordinator would: a restore
    record whose entry is changed, whose inclusion proof is cut, which is dropped, or checked under another
    region's key, excuses nothing: the receipt is then unproven (raised), never lost."""
    from hpf.federation.audit.proto import check_still_logged_or_lost
    from hpf.federation.audit.records import Receipt
    from hpf.federation.audit.restore_proof import LostInBreak

    fed = restored.fed
    lost = Receipt.from_dict(json.loads((restored.root / "lost-receipts.jsonl").read_text().splitlines()[0]))
    request = pb.AuditProofRequest(node_id=lost.node_id, index=lost.index, old_size=lost.checkpoint.size)
    with fed.client(keys=restored.keys, person="boss") as c:
        proof = c._stub.AuditProof(request, timeout=10)  # noqa: SLF001 - the proof as relayed, to alter it
        keys = c._audit_keys()  # noqa: SLF001
    assert isinstance(check_still_logged_or_lost(lost, proof, keys["n0"]), LostInBreak)  # as relayed: lost

    def altered(change: Callable[[pb.AuditProofResponse], None]) -> pb.AuditProofResponse:
        copy = pb.AuditProofResponse()
        copy.CopyFrom(proof)
        change(copy)
        return copy

    def flip_entry(p: pb.AuditProofResponse) -> None:
        before = p.restores[0].entry
        p.restores[0].entry = before.replace(b'"restore_time":"2', b'"restore_time":"3')  # a thousand years on
        assert p.restores[0].entry != before

    forged = [
        altered(flip_entry),
        altered(lambda p: p.restores[0].ClearField("inclusion")),
        altered(lambda p: p.ClearField("restores")),
    ]
    for proof_altered in forged:
        with pytest.raises(AuditError):
            check_still_logged_or_lost(lost, proof_altered, keys["n0"])
    with pytest.raises(AuditError):  # another region's key: its signature is not the region's
        check_still_logged_or_lost(lost, proof, keys["n1"])
