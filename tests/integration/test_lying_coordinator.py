"""A compromised coordinator cannot make a client accept an answer that is not the sum of what the regions signed.

The coordinator here is the real one, fanning questions out to real regions, patched (tests/lying_coordinator.py)
to lie about their answers in every way it is able to: it adds an encryption of its own to a region's ciphertext,
replaces one with fresh zeros, another region's or an earlier question's, drops one, sends one twice, swaps a
region's chunks, reorders or relabels the stream, calls a region that answered missing, and forges a statement.
The client catches each, for every region attacked, with a stable code; the honest answer still equals the
oracle, and a client that pins no catalog says its answer is unverified.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import harness
import lying_coordinator as lie
import pytest
import yaml

import hpf.coordinator.fanout
from hpf.client.federation_client import FederationClient
from hpf.client.profile import ClientProfile
from hpf.coordinator.outcome import FederatedAnswer
from hpf.federation.config_files import parse_model
from hpf.federation.crypto import he
from hpf.federation.errors import PlanError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust import statements

NODES = ["n0", "n1", "n2", "n3"]
TABLES = harness.MONTHLY_TABLES
COUNT = "SELECT COUNT(*) AS n, SUM(amount_fen) AS total FROM deposits"
# (4 + 2) cities x (372 + 2) months x the components' slots: several ciphertexts per region
WIDE = (
    "SELECT city_code, month, COUNT(*) AS n, SUM(amount_fen) AS total FROM deposits GROUP BY city_code, month "
    "ORDER BY city_code, month"
)


def _rows(seed: int, n: int) -> list[tuple[Any, ...]]:
    return harness.monthly_rows(seed, n, 10**9)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    rows = {n: {"deposits": _rows(i, 200)} for i, n in enumerate(NODES)}
    with harness.federation(tmp_path_factory.mktemp("lying"), TABLES, rows) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


def caught(fed: harness.Federation, keys: he.ClientKeys, sql: str = COUNT) -> str:
    """The code a client refuses the coordinator's answer with (fails the test if it accepts it)."""
    with fed.client(keys=keys) as client:
        err = harness.refusal(lambda: client.query(sql))
    return err.code


def earlier_answer(fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch) -> FederatedAnswer:
    """What the coordinator kept of an honest earlier answer to the same SQL (a different signed question)."""
    with lie.lying(monkeypatch, lambda a: a) as seen, fed.client(keys=keys) as client:
        client.query(COUNT)
    return seen[-1]


def test_the_honest_answer_is_the_oracle_and_verified(fed: harness.Federation, keys: he.ClientKeys) -> None:
    with fed.client(keys=keys) as client:
        for sql in (COUNT, WIDE):
            answer = client.query(sql)
            assert [tuple(r) for r in answer.rows] == fed.oracle(sql)
            assert answer.verified and answer.statements_verified == len(NODES)
            assert answer.to_json()["verified"] is True


def test_regions_in_another_order_are_no_lie(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sum does not depend on the regions' order: each region's ciphertexts, statement and receipt moved
    together is still exactly what the regions signed, and the answer is the oracle's."""
    with lie.lying(monkeypatch, lie.regions_reversed), fed.client(keys=keys) as client:
        answer = client.query(COUNT)
    assert answer.answered == NODES[::-1] and [tuple(r) for r in answer.rows] == fed.oracle(COUNT)


ATTACKS: dict[str, tuple[Callable[[bytes, str, FederatedAnswer], lie.Tamper], str]] = {
    "Enc(1000) added to a region's COUNT": (lambda ctx, n, _: lie.add_to(ctx, n, 1000), "ANSWER_CIPHERTEXT_MISMATCH"),
    "Enc(-1) added to a region's SUM limb": (
        lambda ctx, n, _: lie.add_to(ctx, n, -1, slot=2),
        "ANSWER_CIPHERTEXT_MISMATCH",
    ),
    "fresh zeros for a region": (lambda ctx, n, _: lie.fresh(ctx, n), "ANSWER_CIPHERTEXT_MISMATCH"),
    "another region's ciphertexts": (
        lambda ctx, n, _: lie.copy_from(n, NODES[(NODES.index(n) + 1) % len(NODES)]),
        "ANSWER_CIPHERTEXT_MISMATCH",
    ),
    "the region's answer to an earlier question": (
        lambda ctx, n, old: lie.replay_from(old, n),
        "ANSWER_CIPHERTEXT_MISMATCH",
    ),
    "...with its statement": (lambda ctx, n, old: lie.replay_from(old, n, statement=True), "ANSWER_STATEMENT_INVALID"),
    "...with its statement and receipt": (  # the statements are checked first, as the head arrives
        lambda ctx, n, old: lie.replay_from(old, n, statement=True, receipt=True),
        "ANSWER_STATEMENT_INVALID",
    ),
    "a region answered, its ciphertexts dropped": (lambda ctx, n, _: lie.without_ciphertexts(n), "ANSWER_CORRUPT"),
    "a region that answered called missing": (lambda ctx, n, _: lie.called_missing(n), "ANSWER_STATEMENT_INVALID"),
    "a region's ciphertexts sent twice": (lambda ctx, n, _: lie.doubled(n), "ANSWER_CORRUPT"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_alteration_of_a_region_is_caught_for_every_region(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    make, code = ATTACKS[attack]
    old = earlier_answer(fed, keys, monkeypatch)
    for node in NODES:
        with lie.lying(monkeypatch, make(keys.public_context(), node, old)):
            assert caught(fed, keys) == code, (attack, node)
    with fed.client(keys=keys) as client:  # and the next honest question is answered
        assert [tuple(r) for r in client.query(COUNT).rows] == fed.oracle(COUNT)


def test_swapped_chunks_of_a_region_are_caught(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fed.client(keys=keys) as client:
        assert len(client.plan(WIDE).layout.chunk_sizes) >= 2
    for node in NODES:
        with lie.lying(monkeypatch, lie.chunks_swapped(node)):
            assert caught(fed, keys, WIDE) == "ANSWER_CIPHERTEXT_MISMATCH", node


def _relabelled(parts: list[pb.AnswerPart]) -> list[pb.AnswerPart]:
    first = parts[1].ciphertext
    other = next(p for p in parts[2:] if p.ciphertext.node_id != first.node_id).ciphertext.node_id
    moved = pb.AnswerPart(ciphertext=pb.RegionCiphertext(node_id=other, chunk=first.chunk, ciphertext=first.ciphertext))
    return [parts[0], moved, *parts[2:]]


def _extra_region(parts: list[pb.AnswerPart]) -> list[pb.AnswerPart]:
    c = parts[-1].ciphertext
    stranger = pb.RegionCiphertext(node_id="elsewhere", chunk=0, ciphertext=c.ciphertext)
    return [*parts, pb.AnswerPart(ciphertext=stranger)]


def _head_twice(parts: list[pb.AnswerPart]) -> list[pb.AnswerPart]:
    return [parts[0], *parts[1:], parts[0]]


STREAM_ATTACKS: dict[str, Callable[[list[pb.AnswerPart]], list[pb.AnswerPart]]] = {
    "ciphertexts before the head": lambda p: [*p[1:], p[0]],
    "ciphertexts in reverse": lambda p: [p[0], *p[:0:-1]],
    "a ciphertext relabelled to another region": _relabelled,
    "one ciphertext more": lambda p: [*p, p[-1]],
    "a ciphertext of a region not asked": _extra_region,
    "the last ciphertext dropped": lambda p: p[:-1],
    "no ciphertexts at all": lambda p: p[:1],
    "a second head": _head_twice,
    "nothing at all": lambda p: [],
}


@pytest.mark.parametrize("attack", list(STREAM_ATTACKS))
def test_a_rewritten_stream_is_caught(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    with lie.lying_stream(monkeypatch, STREAM_ATTACKS[attack]):
        assert caught(fed, keys, WIDE) == "ANSWER_CORRUPT", attack


def _forged(public_context: bytes, node: str) -> lie.Tamper:
    """Enc(1000) added to a region's ciphertext, and that region's statement rewritten to sign the new digest:
    the coordinator has no region's audit key, so the signature is its own."""
    add = lie.add_to(public_context, node, 1000)

    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        a = add(a)
        i = a.answered.index(node)
        st = statements.parse(a.statements[i])
        forged = dataclasses.replace(st, ciphertexts=statements.ciphertexts_digest(a.ciphertexts[node]))
        a.statements = [
            *a.statements[:i],
            pb.AnswerStatement(node_id=node, statement=forged.encode(), signature=bytes(64)),
            *a.statements[i + 1 :],
        ]
        return a

    return tamper


def unpinned(fed: harness.Federation, keys: he.ClientKeys) -> FederationClient:
    doc = yaml.safe_load(fed.profile_path.read_text())
    del doc["catalog"]
    return FederationClient(parse_model(fed.profile_path, doc, ClientProfile), keys=keys)


def test_only_a_pinned_catalog_verifies_and_an_unpinned_client_says_so(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement forged to match the altered ciphertext fails on its signature at a client that pins the
    regions' keys. A client that takes its catalog from the coordinator has no keys of its own: every other check
    is still made (an unforged alteration is caught), but its answer says it is unverified."""
    for node in NODES:
        with lie.lying(monkeypatch, _forged(keys.public_context(), node)):
            assert caught(fed, keys) == "ANSWER_STATEMENT_INVALID", node
    with unpinned(fed, keys) as client:
        honest = client.query(COUNT)
        assert [tuple(r) for r in honest.rows] == fed.oracle(COUNT)
        assert not honest.verified and honest.statements_verified == 0 and honest.to_json()["verified"] is False
        with lie.lying(monkeypatch, lie.add_to(keys.public_context(), "n1", 1000)):
            assert harness.refusal(lambda: client.query(COUNT)).code == "ANSWER_CIPHERTEXT_MISMATCH"
        with lie.lying(monkeypatch, _forged(keys.public_context(), "n1")):
            fooled = client.query(COUNT)
    (count, _), ((true_count, _),) = fooled.rows[0], fed.oracle(COUNT)
    assert count == true_count + 1000 and not fooled.verified  # what pinning the catalog is for


def test_the_cli_prints_an_unverified_answer_as_such(fed: harness.Federation, keys: he.ClientKeys) -> None:
    from hpf.cli.output import render

    with unpinned(fed, keys) as client:
        answer = client.query(COUNT)
    assert "unverified" in render(answer, "table")
    with fed.client(keys=keys) as client:
        assert "unverified" not in render(client.query(COUNT), "table")


def test_a_coordinator_cannot_run_a_question_more_often_than_the_asker_signed(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Re-running a question behind the asker's back: every region refuses a run past the bound signed into the
    envelope, and what the regions answered (their audit logs) never exceeds it."""
    for bound in (1, 2):
        with lie.rerunning(monkeypatch, extra_runs=2) as refused, fed.client(keys=keys) as client:
            client.profile.max_runs = bound
            answer = client.query(COUNT)
        assert [tuple(r) for r in answer.rows] == fed.oracle(COUNT) and answer.max_runs == bound
        # each extra run beyond the bound was refused (by every region asked)
        assert refused == ["AUTH_REPLAY"] * (2 - (bound - 1)), (bound, refused)
        runs = answered_runs(fed, answer.receipts[0].fields()["nonce"])
        assert max(runs.values()) == bound and all(r <= bound for r in runs.values()), runs


def answered_runs(fed: harness.Federation, nonce: str) -> dict[str, int]:
    """How many runs of a question (by its nonce) each region answered, from its own audit log."""
    out = {}
    for node in NODES:
        entries = [json.loads(line) for line in (fed.audit_dir(node) / "entries.jsonl").read_text().splitlines()]
        out[node] = sum(1 for e in entries if e["nonce"] == nonce and e["decision"] == "allowed")
    return out


def _missing_as(code: str, message: str) -> lie.Tamper:
    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        a.missing = [dataclasses.replace(m, code=code, message=message) for m in a.missing]
        return a

    return tamper


ESCAPES = "\x1b[2A\x1b[1G\x1b[2K│ 20 │ 999999 │\x1b[2B\u202eregions answered: 4\n"


def test_no_text_from_the_coordinator_reaches_the_terminal_raw(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coordinator that writes terminal escapes (or a bidi override, or a newline) into what it says of a missing
    region or into an error would redraw a verified answer on the asker's screen: a missing region's code must
    have the stable form (else the answer is refused), and every text it sends is printed without control or
    format characters."""
    from hpf.cli.output import render

    fed.stop_node("n3")
    try:
        with lie.lying(monkeypatch, _missing_as("NODE_UNREACHABLE" + ESCAPES, "down")):
            assert caught(fed, keys) == "ANSWER_CORRUPT"
        with lie.lying(monkeypatch, _missing_as("NODE_UNREACHABLE", "down" + ESCAPES)), fed.client(keys=keys) as c:
            answer = c.query(COUNT)
    finally:
        fed.restart_node("n3")
        fed.wait_for_regions()
    assert [m["node_id"] for m in answer.missing] == ["n3"]
    assert answer.missing[0]["message"] == "down?[2A?[1G?[2K│ 20 │ 999999 │?[2B?regions answered: 4?"
    for fmt in ("table", "json", "csv"):
        assert "\x1b" not in render(answer, fmt) and "\u202e" not in render(answer, fmt), fmt

    async def refusing(*_: Any, **__: Any) -> FederatedAnswer:
        # gRPC carries a status message with any bytes; metadata (code, hint) only printable ASCII
        raise PlanError("refused" + ESCAPES, code="PLAN_REFUSED;[2A", hint="ask")

    monkeypatch.setattr(hpf.coordinator.fanout.FanOut, "query", refusing)
    err = harness.refusal(lambda: fed.client(keys=keys).query(COUNT))
    assert err.code == "REMOTE_CODE_INVALID"
    assert not any(ch in f"{err.message} {err.hint}" for ch in "\x1b\u202e\n"), err
