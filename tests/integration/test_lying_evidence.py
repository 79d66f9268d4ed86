"""A lying coordinator against what the regions hand the client as evidence: audit receipts and explain verdicts.

The coordinator here is the real one, fanning questions out to real regions, patched to rewrite what it relays:
a receipt's entry (its purpose, its question), the entry's inclusion proof, the proofs a region sends later for a
kept receipt. The client refuses an answer whose receipt does not prove its entry in the log the region signed,
keeps a receipt only once the whole answer passed its checks, and `hpf audit receipts` blames no region for a
proof the coordinator could have broken.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import harness
import lying_coordinator as lie
import pytest
import yaml
from typer.testing import CliRunner, Result

import coordinator.fanout
from cli.app import _register, app
from coordinator.fanout import FederatedAnswer
from federation import he
from federation.audit_proto import checkpoint_to_proto, receipt_to_proto
from federation.client import FederationClient
from federation.generated import hpf_federation_pb2 as pb
from federation.profile import load_profile

_register()
NODES = ["n0", "n1", "n2", "n3"]
CITIES = ["310000", "330100"]
TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "city_code": {"type": "VARCHAR", "domain": {"values": CITIES}},
            "amount_fen": {"type": "BIGINT"},
        }
    }
}
COUNT = "SELECT COUNT(*) AS n, SUM(amount_fen) AS total FROM deposits"
UNPROVEN = "could not be proven (the region or the coordinator)"


def _rows(seed: int, n: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    return [(rng.choice(CITIES), rng.randrange(0, 10**6)) for _ in range(n)]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    rows = {n: {"deposits": _rows(i, 40)} for i, n in enumerate(NODES)}
    with harness.federation(tmp_path_factory.mktemp("evidence"), TABLES, rows) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.fixture()
def profile(fed: harness.Federation, tmp_path: Path) -> Path:
    """The federation's client profile (its catalog pinned), with a receipts file of this test's own."""
    doc = yaml.safe_load(fed.profile_path.read_text())
    doc["receipts"] = str(tmp_path / "receipts.jsonl")
    path = tmp_path / "client.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def client(profile: Path, keys: he.ClientKeys) -> FederationClient:
    return FederationClient(load_profile(profile), keys=keys)


def hpf(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def kept_lines(profile: Path) -> list[str]:
    path = profile.parent / "receipts.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def receipts_report(profile: Path) -> tuple[int, dict[str, Any]]:
    result = hpf("audit", "receipts", "--profile", profile, "--format", "json")
    return result.exit_code, json.loads(result.stdout)


# -------------------------------------------------------------------------------- receipts with an answer


def test_an_honest_answer_carries_receipts_that_prove_their_entries(profile: Path, keys: he.ClientKeys) -> None:
    with client(profile, keys) as c:
        answer = c.query(COUNT)
        assert answer.receipts_verified == len(NODES) and answer.verified
        assert all(r.inclusion is not None and r.proves_entry() for r in answer.receipts)
        assert all(len(r.inclusion or ()) <= r.checkpoint.size.bit_length() for r in answer.receipts)
        assert c.kept_receipts() == answer.receipts  # kept with their proofs


def _each_receipt(change: Callable[[pb.AuditReceipt], pb.AuditReceipt]) -> lie.Tamper:
    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        a.receipts = [change(r) for r in a.receipts]
        return a

    return tamper


def _one_receipt(node: str, change: Callable[[pb.AuditReceipt], pb.AuditReceipt]) -> lie.Tamper:
    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        a.receipts = [change(r) if r.node_id == node else r for r in a.receipts]
        return a

    return tamper


def _entry_rewritten(**fields: Any) -> Callable[[pb.AuditReceipt], pb.AuditReceipt]:
    """The entry rewritten (and put back in canonical form), its checkpoint and proof the region's own."""

    def change(r: pb.AuditReceipt) -> pb.AuditReceipt:
        entry = {**json.loads(r.entry), **fields}
        out = pb.AuditReceipt()
        out.CopyFrom(r)
        out.entry = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
        return out

    return change


def _proof(hashes: Callable[[list[bytes]], list[bytes]]) -> Callable[[pb.AuditReceipt], pb.AuditReceipt]:
    def change(r: pb.AuditReceipt) -> pb.AuditReceipt:
        out = pb.AuditReceipt()
        out.CopyFrom(r)
        del out.inclusion[:]
        out.inclusion.extend(hashes(list(r.inclusion)))
        return out

    return change


def _relabelled(r: pb.AuditReceipt) -> pb.AuditReceipt:
    """The entry's own words changed to a refusal: what would frame a region for refusing, or hide an answer."""
    return _entry_rewritten(decision="refused", code="POLICY_DENIED")(r)


RECEIPT_ATTACKS: dict[str, Callable[[pb.AuditReceipt], pb.AuditReceipt]] = {
    "purpose and question rewritten": _entry_rewritten(purpose="FORGED-BY-COORDINATOR", query="0" * 64),
    "time moved": _entry_rewritten(time="2001-01-01T00:00:00.000Z"),
    "an extra field": _entry_rewritten(note="added"),
    "proof dropped": _proof(lambda p: []),
    "proof zeroed": _proof(lambda p: [bytes(32)] * len(p)),
    "proof cut short": _proof(lambda p: p[:-1]),
    "proof with one hash more": _proof(lambda p: [*p, bytes(32)]),
}


@pytest.mark.parametrize("attack", list(RECEIPT_ATTACKS))
def test_a_receipt_rewritten_on_the_way_is_refused_and_never_kept(
    profile: Path, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    with client(profile, keys) as c:
        c.query(COUNT)  # every log holds more than one entry: a proof is never empty
        before = kept_lines(profile)
        for node in NODES:
            with lie.lying(monkeypatch, _one_receipt(node, RECEIPT_ATTACKS[attack])):
                err = harness.refusal(lambda: c.query(COUNT))
            assert err.code == "ANSWER_CORRUPT", (attack, node, err)
        assert kept_lines(profile) == before  # nothing of a refused answer is kept
        assert c.query(COUNT).receipts_verified == len(NODES)  # the next honest question is answered


def test_every_receipt_forged_at_once_is_refused(
    profile: Path, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The red team's attack: every entry's purpose and question rewritten, each real signed checkpoint kept."""
    forged = _each_receipt(_entry_rewritten(purpose="FORGED-BY-COORDINATOR", query="0" * 64))
    with lie.lying(monkeypatch, forged), client(profile, keys) as c:
        assert harness.refusal(lambda: c.query(COUNT)).code == "ANSWER_CORRUPT"
        assert c.kept_receipts() == []
    code, report = receipts_report(profile)
    assert code == 0 and report["receipts"] == []


def test_an_answer_refused_for_its_sum_keeps_none_of_its_honest_receipts(
    profile: Path, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    with lie.lying(monkeypatch, lie.add_to(keys.public_context(), "n2", 1000)), client(profile, keys) as c:
        assert harness.refusal(lambda: c.query(COUNT)).code == "ANSWER_CIPHERTEXT_MISMATCH"
    with lie.lying(monkeypatch, lie.called_missing("n1")), client(profile, keys) as c:
        assert harness.refusal(lambda: c.query(COUNT)).code == "ANSWER_STATEMENT_INVALID"
    assert kept_lines(profile) == []


NESTED = b"[" * 200_000 + b"]" * 200_000


def test_a_deeply_nested_entry_is_refused_not_a_crash(
    profile: Path, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nested(r: pb.AuditReceipt) -> pb.AuditReceipt:
        out = pb.AuditReceipt()
        out.CopyFrom(r)
        out.entry = NESTED
        return out

    with lie.lying(monkeypatch, _one_receipt("n0", nested)):
        with client(profile, keys) as c:
            assert harness.refusal(lambda: c.query(COUNT)).code == "ANSWER_CORRUPT"
        result = hpf("query", "-p", profile, COUNT)
    assert result.exit_code == 6 and "ANSWER_CORRUPT" in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert kept_lines(profile) == []


# ------------------------------------------------------------------------------ `hpf audit receipts` later


def test_kept_receipts_are_proven_later(profile: Path, keys: he.ClientKeys) -> None:
    with client(profile, keys) as c:
        for _ in range(3):
            c.query(COUNT)
    code, report = receipts_report(profile)
    assert code == 0, report
    assert len(report["receipts"]) == 3 * len(NODES) and report["rewritten"] == report["unproven"] == 0
    assert all(r["status"] == "still logged" and r["own_proof"] for r in report["receipts"])


@contextlib.contextmanager
def relayed_proofs(patch: pytest.MonkeyPatch, change: Callable[[pb.AuditProofResponse], None]) -> Iterator[None]:
    """While active, the coordinator changes every audit proof it relays from a region."""
    honest = coordinator.fanout.FanOut.audit_proof

    def audit_proof(self: coordinator.fanout.FanOut, request: pb.AuditProofRequest) -> pb.AuditProofResponse:
        out = pb.AuditProofResponse()
        out.CopyFrom(honest(self, request))
        change(out)
        return out

    with patch.context() as p:
        p.setattr(coordinator.fanout.FanOut, "audit_proof", audit_proof)
        yield


def _zero(*proofs: Any) -> None:
    for hashes in proofs:
        zeroed = [bytes(32)] * len(hashes)
        del hashes[:]
        hashes.extend(zeroed)


def test_an_inclusion_proof_broken_on_the_way_is_not_needed(
    profile: Path, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The red team zeroed every inclusion proof the coordinator relays: a receipt's own proof and the consistency
    proof still show its entry in the region's latest log, so no region is blamed and none is unproven."""
    with client(profile, keys) as c:
        for _ in range(3):
            c.query(COUNT)
    for change in (lambda r: _zero(r.inclusion), lambda r: r.ClearField("inclusion")):
        with relayed_proofs(monkeypatch, change):
            code, report = receipts_report(profile)
        assert code == 0 and all(r["status"] == "still logged" for r in report["receipts"]), report


BROKEN_PROOFS: dict[str, Callable[[pb.AuditProofResponse, dict[str, pb.AuditCheckpoint]], None]] = {
    "consistency zeroed": lambda r, _: _zero(r.consistency),
    "consistency dropped": lambda r, _: r.ClearField("consistency"),
    "both zeroed": lambda r, _: _zero(r.consistency, r.inclusion),
    "an older signed checkpoint as the latest": lambda r, older: r.checkpoint.CopyFrom(older[r.checkpoint.node_id]),
}


@pytest.mark.parametrize("attack", list(BROKEN_PROOFS))
def test_a_proof_broken_on_the_way_blames_no_region(
    profile: Path, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    """The proofs travel unsigned through the coordinator: one that does not hold says the receipt could not be
    proven, by the region or the coordinator, never that the region rewrote its log."""
    with client(profile, keys) as c:
        first = c.query(COUNT)
        for _ in range(2):
            c.query(COUNT)
    older = {r.node_id: checkpoint_to_proto(r.checkpoint) for r in first.receipts}
    with relayed_proofs(monkeypatch, lambda r: BROKEN_PROOFS[attack](r, older)):
        result = hpf("audit", "receipts", "--profile", profile)
        code, report = receipts_report(profile)
    assert result.exit_code == code == 7 and "AUDIT_RECEIPT_UNPROVEN" in result.stderr, (attack, result.stderr)
    assert "the region or the coordinator" in result.stderr
    assert "REWRITTEN" not in result.stdout and UNPROVEN in result.stdout, attack
    assert report["rewritten"] == 0 and report["unproven"] >= 2 * len(NODES), (attack, report)
    assert {r["status"] for r in report["receipts"]} <= {UNPROVEN, "still logged"}
    with client(profile, keys) as c:  # and the next honest question is answered
        assert c.query(COUNT).receipts_verified == len(NODES)


def test_a_receipt_kept_before_receipts_carried_a_proof_is_read_with_a_note(profile: Path, keys: he.ClientKeys) -> None:
    """A receipts file written before this change: no proofs, and perhaps an entry a coordinator rewrote then (a
    client kept it as verified). The honest one is proven by the region's latest log; the rewritten one cannot be
    proven, and no region is called a rewriter for it."""
    with client(profile, keys) as c:
        answer = c.query(COUNT)
    path = profile.parent / "receipts.jsonl"
    old = [dataclasses.replace(r, inclusion=None) for r in answer.receipts]
    forged = dataclasses.replace(
        old[0], entry=_entry_rewritten(purpose="FORGED-BY-COORDINATOR")(receipt_to_proto(old[0])).entry
    )
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in old))
    assert all("inclusion" not in json.loads(line) for line in kept_lines(profile))
    code, report = receipts_report(profile)
    assert code == 0 and report["kept_without_proof"] == len(NODES), report
    assert all(r["status"] == "still logged" and not r["own_proof"] for r in report["receipts"])
    table = hpf("audit", "receipts", "--profile", profile)
    assert table.exit_code == 0 and "kept before receipts carried a proof" in table.stdout
    path.write_text(path.read_text() + json.dumps(forged.to_dict()) + "\n")
    result = hpf("audit", "receipts", "--profile", profile)
    assert result.exit_code == 7 and "REWRITTEN" not in result.stdout and UNPROVEN in result.stdout, result.stdout
    assert "AUDIT_RECEIPT_UNPROVEN" in result.stderr and "kept before receipts carried a proof" in result.stderr
