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

import grpc
import harness
import lying_coordinator as lie
import pytest
import yaml
from typer.testing import CliRunner, Result

from hpf.cli.app import _register, app
from hpf.client.federation_client import FederationClient
from hpf.client.profile import load_profile
from hpf.coordinator import fanout
from hpf.coordinator.outcome import FederatedAnswer
from hpf.federation.audit.proto import checkpoint_to_proto, receipt_to_proto
from hpf.federation.crypto import he
from hpf.federation.generated import hpf_federation_pb2 as pb

_register()
NODES = ["n0", "n1", "n2", "n3"]
CITIES = ["310000", "330100"]
TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": CITIES}},
            "amount_fen": {"type": "BIGINT", "class": "public"},
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
    honest = fanout.FanOut.audit_proof

    async def audit_proof(self: fanout.FanOut, request: pb.AuditProofRequest) -> pb.AuditProofResponse:
        out = pb.AuditProofResponse()
        out.CopyFrom(await honest(self, request))
        change(out)
        return out

    with patch.context() as p:
        p.setattr(fanout.FanOut, "audit_proof", audit_proof)
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


# ------------------------------------------------------------------------------------------ explain verdicts

Explain = Callable[[pb.ExplainResponse], pb.ExplainResponse]


@contextlib.contextmanager
def lying_explain(patch: pytest.MonkeyPatch, tamper: Explain) -> Iterator[list[pb.ExplainResponse]]:
    """While active, the coordinator asks every region for its verdict, then relays ``tamper(reply)``; yields the
    true replies."""
    honest = fanout.FanOut.explain
    seen: list[pb.ExplainResponse] = []

    async def explain(self: fanout.FanOut, *args: Any, **kwargs: Any) -> pb.ExplainResponse:
        reply = await honest(self, *args, **kwargs)
        seen.append(reply)
        out = pb.ExplainResponse()
        out.CopyFrom(reply)
        return tamper(out)

    with patch.context() as p:
        p.setattr(fanout.FanOut, "explain", explain)
        yield seen


def _each_verdict(change: Callable[[pb.NodeVerdict], None], node: str | None = None) -> Explain:
    def tamper(r: pb.ExplainResponse) -> pb.ExplainResponse:
        for v in r.verdicts:
            if node is None or v.node_id == node:
                change(v)
        return r

    return tamper


def _red_team(r: pb.ExplainResponse) -> pb.ExplainResponse:
    """The red team's rewrite: every verdict's privacy made cheap, a region of its own, one region twice."""
    for v in r.verdicts:
        v.privacy.mode = "dp"
        v.privacy.epsilon = 0.001
        v.privacy.budget_epsilon = 1000
        v.privacy.budget_spent = 0
        v.privacy.budget_period = "month"
    r.verdicts.append(pb.NodeVerdict(node_id="evil", accepted=True, min_group_size=1))
    r.verdicts.append(r.verdicts[0])
    return r


def _dp(v: pb.NodeVerdict) -> None:
    v.privacy.mode, v.privacy.epsilon, v.privacy.budget_epsilon = "dp", 0.001, 1000


def _k_changed(v: pb.NodeVerdict) -> None:
    v.min_group_size = 1 if v.min_group_size != 1 else 0


def _refused(v: pb.NodeVerdict) -> None:
    v.accepted, v.code, v.rule = False, "POLICY_ROLE_DENIED", "forged"


def _unsigned(v: pb.NodeVerdict) -> None:
    v.ClearField("signature")


def _unsigned_refusal(v: pb.NodeVerdict) -> None:
    """What a coordinator would say to make a region look like it refuses, without the region's signature."""
    v.Clear()
    v.node_id, v.accepted, v.code = "n1", False, "POLICY_ROLE_DENIED"


def _unsigned_acceptance(v: pb.NodeVerdict) -> None:
    v.Clear()
    v.node_id, v.accepted, v.code, v.min_group_size = "n1", True, "NODE_UNREACHABLE", 1


def _another_regions(r: pb.ExplainResponse) -> pb.ExplainResponse:
    """n0's signed verdict relabelled as n1's, in n1's place."""
    moved = pb.NodeVerdict()
    moved.CopyFrom(next(v for v in r.verdicts if v.node_id == "n0"))
    moved.node_id = "n1"
    for v in r.verdicts:
        if v.node_id == "n1":
            v.CopyFrom(moved)
    return r


def _swapped_receipts(r: pb.ExplainResponse) -> pb.ExplainResponse:
    first, second = r.verdicts[0].receipt, r.verdicts[1].receipt
    kept = pb.AuditReceipt()
    kept.CopyFrom(first)
    first.CopyFrom(second)
    second.CopyFrom(kept)
    return r


def _signed_by_the_coordinator(r: pb.ExplainResponse) -> pb.ExplainResponse:
    """A verdict for a region outside the catalog, signed with a key of the coordinator's own."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hpf.federation.trust import verdicts

    own = Ed25519PrivateKey.generate()
    r.verdicts.append(verdicts.sign(pb.NodeVerdict(node_id="evil", accepted=True), r.query_id, own.sign))
    return r


def _twice(r: pb.ExplainResponse) -> pb.ExplainResponse:
    r.verdicts.append(r.verdicts[2])
    return r


def _dropped(r: pb.ExplainResponse) -> pb.ExplainResponse:
    del r.verdicts[1]
    return r


def _another_question(r: pb.ExplainResponse) -> pb.ExplainResponse:
    r.query_id = "0" * 32
    return r


EARLIER: list[pb.NodeVerdict] = []


def _replayed(r: pb.ExplainResponse) -> pb.ExplainResponse:
    """n2's signed verdict on an earlier explain of the same SQL (kept by the coordinator) in place of this one."""
    if not EARLIER:  # the first explain: keep it, relay it
        EARLIER.extend(r.verdicts)
        return r
    r.verdicts[2].CopyFrom(EARLIER[2])
    return r


VERDICT_ATTACKS: dict[str, tuple[Explain, str]] = {
    "the red team's rewrite": (_red_team, "ANSWER_CORRUPT"),
    "a region's privacy made cheap": (_each_verdict(_dp, "n2"), "ANSWER_STATEMENT_INVALID"),
    "a region's k changed": (_each_verdict(_k_changed, "n3"), "ANSWER_STATEMENT_INVALID"),
    "a region's budget spent": (
        _each_verdict(lambda v: setattr(v.privacy, "budget_spent", 9.0), "n0"),
        "ANSWER_STATEMENT_INVALID",
    ),
    "an acceptance turned into a refusal": (_each_verdict(_refused, "n1"), "ANSWER_STATEMENT_INVALID"),
    "a region's signature stripped": (_each_verdict(_unsigned, "n2"), "ANSWER_STATEMENT_INVALID"),
    "a refusal the region never signed": (_each_verdict(_unsigned_refusal, "n1"), "ANSWER_STATEMENT_INVALID"),
    "an unsigned acceptance with a transport code": (
        _each_verdict(_unsigned_acceptance, "n1"),
        "ANSWER_STATEMENT_INVALID",
    ),
    "a region's signature zeroed": (
        _each_verdict(lambda v: setattr(v, "signature", bytes(64)), "n3"),
        "ANSWER_STATEMENT_INVALID",
    ),
    "another region's verdict in its place": (_another_regions, "ANSWER_STATEMENT_INVALID"),
    "the regions' receipts swapped": (_swapped_receipts, "ANSWER_STATEMENT_INVALID"),
    "a region not in the catalog": (_signed_by_the_coordinator, "ANSWER_CORRUPT"),
    "a region's verdict twice": (_twice, "ANSWER_CORRUPT"),
    "a region's verdict dropped": (_dropped, "ANSWER_CORRUPT"),
    "another question's id": (_another_question, "ANSWER_CORRUPT"),
    "a verdict the region gave another question": (_replayed, "ANSWER_STATEMENT_INVALID"),
}


def test_an_honest_explain_is_every_regions_signed_verdict(fed: harness.Federation, keys: he.ClientKeys) -> None:
    with fed.client(keys=keys) as c:
        _, reply = c.explain(COUNT)
    assert reply.verified and [v.node_id for v in reply.verdicts] == NODES
    assert all(v.accepted and len(v.signature) == 64 for v in reply.verdicts)
    table = hpf("query", "-p", fed.profile_path, "--explain", COUNT)
    assert table.exit_code == 0 and "4 of 4 region(s) would answer" in table.stdout
    assert "unverified" not in table.stdout
    doc = json.loads(hpf("query", "-p", fed.profile_path, "--explain", "--format", "json", COUNT).stdout)
    assert doc["verified"] is True and all(r["signed"] for r in doc["regions"])


@pytest.mark.parametrize("attack", list(VERDICT_ATTACKS))
def test_a_verdict_rewritten_by_the_coordinator_is_refused(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    tamper, code = VERDICT_ATTACKS[attack]
    with lying_explain(monkeypatch, tamper), fed.client(keys=keys) as c:
        if tamper is _replayed:
            EARLIER.clear()
            assert c.explain(COUNT)[1].verified  # kept by the coordinator
        assert harness.refusal(lambda: c.explain(COUNT)).code == code, attack
    with fed.client(keys=keys) as c:  # and the next honest explain is answered
        assert c.explain(COUNT)[1].verified


def test_the_red_team_explain_is_refused_on_the_command_line(
    fed: harness.Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    with lying_explain(monkeypatch, _red_team):
        result = hpf("query", "-p", fed.profile_path, "--explain", COUNT)
    assert result.exit_code == 6 and "ANSWER_CORRUPT" in result.stderr, (result.stdout, result.stderr)
    assert "would answer" not in result.stdout and "epsilon 0.001" not in result.stdout
    with lying_explain(monkeypatch, _each_verdict(_dp)):
        result = hpf("query", "-p", fed.profile_path, "--explain", COUNT)
    assert result.exit_code == 6 and "ANSWER_STATEMENT_INVALID" in result.stderr, (result.stdout, result.stderr)
    assert "epsilon 0.001" not in result.stdout


def test_a_region_the_coordinator_cannot_reach_is_its_unsigned_word(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator's own report of a region it got no verdict from cannot be signed: the client takes it only
    as a non-answer with a transport code, in words of its own, and the command line says whose word it is."""

    class Unreachable(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return "\x1b[2Kconnection refused"  # the coordinator's text is not shown

        def trailing_metadata(self) -> None:
            return None

    class Down:
        @staticmethod
        async def Explain(request: Any, timeout: float) -> Any:
            raise Unreachable()

    honest = fanout.FanOut.explain

    async def explain(self: fanout.FanOut, *args: Any, **kwargs: Any) -> pb.ExplainResponse:
        stubs = self._stubs
        self._stubs = {**stubs, "n3": Down()}  # type: ignore[dict-item]
        try:
            return await honest(self, *args, **kwargs)
        finally:
            self._stubs = stubs

    with monkeypatch.context() as p:
        p.setattr(fanout.FanOut, "explain", explain)
        with fed.client(keys=keys) as c:
            _, reply = c.explain(COUNT)
        table = hpf("query", "-p", fed.profile_path, "--explain", COUNT)
        doc = json.loads(hpf("query", "-p", fed.profile_path, "--explain", "--format", "json", COUNT).stdout)
    assert reply.verified and [(v.node_id, v.accepted) for v in reply.verdicts][:3] == [(n, True) for n in NODES[:3]]
    down = reply.verdicts[3]
    assert (down.node_id, down.accepted, down.code, down.signature) == ("n3", False, "NODE_UNREACHABLE", b"")
    assert down.message == "the region cannot be reached" and "\x1b" not in table.stdout
    assert table.exit_code == 4 and "3 of 4 region(s) would answer" in table.stdout
    assert "no verdict" in table.stdout and "reported by the coordinator" in table.stdout
    assert doc["regions"][3] | {"message": ""} == {
        "node_id": "n3",
        "accepted": False,
        "signed": False,
        "code": "NODE_UNREACHABLE",
        "message": "",
        "rule": "",
        "hint": "reported by the coordinator: the region signed no verdict",
    }


def test_a_replayed_explain_is_the_regions_refusal_not_a_verdict(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coordinator sending an explain to the regions twice gets their refusal of the replay: the explain fails
    with it, as a question would, and no region's verdict is made up for it."""
    honest = fanout.FanOut.explain

    async def twice(self: fanout.FanOut, *args: Any, **kwargs: Any) -> pb.ExplainResponse:
        await honest(self, *args, **kwargs)
        return await honest(self, *args, **kwargs)

    with monkeypatch.context() as p:
        p.setattr(fanout.FanOut, "explain", twice)
        with fed.client(keys=keys) as c:
            assert harness.refusal(lambda: c.explain(COUNT)).code == "AUTH_REPLAY"


def unpinned_profile(fed: harness.Federation, tmp_path: Path) -> Path:
    doc = yaml.safe_load(fed.profile_path.read_text())
    del doc["catalog"]
    path = tmp_path / "unpinned.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_an_unpinned_explain_says_it_is_unverified(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a pinned catalog the keys would be the coordinator's: the signatures are not checked and the
    explain says so; every other check (one verdict per region, none unsigned but a non-answer) is still made."""
    unpinned = unpinned_profile(fed, tmp_path)
    with client(unpinned, keys) as c:
        _, reply = c.explain(COUNT)
        assert not reply.verified and [v.node_id for v in reply.verdicts] == NODES
        with lying_explain(monkeypatch, _each_verdict(_dp, "n2")):
            fooled = c.explain(COUNT)[1]  # what pinning the catalog is for
        assert not fooled.verified and fooled.verdicts[2].privacy.epsilon == 0.001
        for attack in ("the red team's rewrite", "a region's verdict dropped", "a refusal the region never signed"):
            tamper, code = VERDICT_ATTACKS[attack]
            with lying_explain(monkeypatch, tamper):
                assert harness.refusal(lambda: c.explain(COUNT)).code == code, attack
    table = hpf("query", "-p", unpinned, "--explain", COUNT)
    assert table.exit_code == 0 and sum("unverified" in line for line in table.stdout.splitlines()) == 1
    doc = json.loads(hpf("query", "-p", unpinned, "--explain", "--format", "json", COUNT).stdout)
    assert doc["verified"] is False
