"""Secure aggregation on a running four-region federation: pairwise masks, participant sets, re-runs, statements.

A region's answer is masked for exactly one run (the signed question and its participant set), so that even
a coordinator colluding with the asker, who can decrypt any single ciphertext, reads nothing of one region's
partial, while the sum over the whole set is exact. "A compromised coordinator" is played with the
coordinator's own certificate (``node_stubs_as_coordinator``) and the client's key pair: what it can ask each
node, and what it gets back. Answers here are exact (no DP); every exact answer equals the oracle.

``fed`` runs open.yaml (one region may be summed alone, and exact sums over the survivors of a failure are
allowed); ``fed3`` runs the product's defaults (tests/fixtures/policies/secagg-min3.yaml): at least 3 regions,
and an exact answer only over every region, since two exact sums over sets one region apart give it away.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import harness
import lying_coordinator as lie
import numpy as np
import pytest
from streamed import collect
from uniformity import CHI2_LIMIT, chi_square_uniform

import hpf.coordinator.fanout
from hpf.client.finish import finish
from hpf.federation.crypto import he, masking
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.crypto.slot_codec import chunks, decode_totals, encode_partials
from hpf.federation.errors import FederationError, UnavailableError, from_rpc_error
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.plan import Plan
from hpf.federation.planner import plan_query
from hpf.federation.trust import statements
from hpf.federation.trust.envelope import query_id

RPC_TIMEOUT_S = 20.0
MIN3_POLICY = harness.OPEN_POLICY.with_name("secagg-min3.yaml")
NODES = ("n0", "n1", "n2", "n3")
DISTRICTS = [f"d{i:03d}" for i in range(200)]
CITIES = ["310000", "330100", "320100"]
TABLES: dict[str, Any] = {
    "accounts": {
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "district": {"type": "VARCHAR", "class": "public", "domain": {"values": DISTRICTS}},
            "city": {"type": "VARCHAR", "class": "public", "domain": {"values": CITIES}},
            "amount": {"type": "BIGINT", "class": "public"},
            "balance": {"type": "DECIMAL(12,2)", "class": "public"},
        }
    }
}


def _rows(seed: int, n: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    return [
        (
            f"P{seed}-{i:04d}",
            rng.choice(DISTRICTS[:150]),  # 50 districts hold no row anywhere
            rng.choice([*CITIES, None]),
            rng.randint(-50_000, 9_000_000),
            round(rng.uniform(0, 250_000), 2),
        )
        for i in range(n)
    ]


NODE_ROWS: dict[str, dict[str, list[tuple[Any, ...]]]] = {
    n: {"accounts": _rows(seed, 40 + 7 * seed)} for seed, n in enumerate(NODES)
}
# 202 cells (200 districts, NULL, other) of COUNT(*), SUM(amount), COUNT(balance), SUM(balance), withheld mark.
# No AVG of a DECIMAL: the client computes it exactly, DuckDB (the oracle) rounds twice.
WIDE = (
    "SELECT district, COUNT(*) AS n, SUM(amount) AS total, SUM(balance) AS b, AVG(amount) AS mean FROM accounts "
    "GROUP BY district ORDER BY district"
)
GROUPED = (
    "SELECT city, COUNT(*) AS n, SUM(amount) AS total, AVG(amount) AS mean_amount, SUM(balance) AS b "
    "FROM accounts GROUP BY city ORDER BY city"
)
VALID = "SELECT city, COUNT(*) AS n, SUM(amount) AS total FROM accounts GROUP BY city ORDER BY city"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    with harness.federation(tmp_path_factory.mktemp("secagg"), TABLES, NODE_ROWS) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.fixture(scope="module")
def stubs(fed: harness.Federation) -> Iterator[dict[str, pb_grpc.NodeStub]]:
    with fed.node_stubs_as_coordinator() as s:
        yield s


# ---------------------------------------------------------------------------------------------- helpers


def rows_of(f: harness.Federation, sql: str, nodes: Sequence[str]) -> list[tuple[Any, ...]]:
    """The oracle over the files of ``nodes`` only."""
    files = {t: [p for p in paths if p.parent.name in nodes] for t, paths in f.data_files.items()}
    return dataclasses.replace(f, data_files=files).oracle(sql)


def partial_request(
    f: harness.Federation, keys: he.ClientKeys, signed: pb.SignedEnvelope, sql: str, participants: Sequence[str]
) -> pb.PartialRequest:
    return pb.PartialRequest(
        he_format=HE_FORMAT,
        query_id=query_id(signed),
        public_context=keys.public_context(),
        plan_fingerprint=plan_query(sql, f.catalog).fingerprint,
        envelope=signed,
        participants=list(participants),
    )


def ask(stub: pb_grpc.NodeStub, request: pb.PartialRequest) -> pb.PartialResponse:
    return stub.ComputePartial(request, timeout=RPC_TIMEOUT_S)


def refused(stub: pb_grpc.NodeStub, request: pb.PartialRequest) -> FederationError:
    with pytest.raises(grpc.RpcError) as info:
        stub.ComputePartial(request, timeout=RPC_TIMEOUT_S)
    return from_rpc_error(info.value)


def ask_every(
    stubs: dict[str, pb_grpc.NodeStub], make: Callable[[str], pb.PartialRequest], nodes: Sequence[str]
) -> dict[str, pb.PartialResponse]:
    with ThreadPoolExecutor(len(nodes)) as pool:
        calls = {n: pool.submit(ask, stubs[n], make(n)) for n in nodes}
        return {n: c.result() for n, c in calls.items()}


def decrypt(keys: he.ClientKeys, plan: Plan, ciphertexts: Sequence[bytes]) -> list[np.ndarray]:
    return [keys.decrypt(blob, n) for blob, n in zip(ciphertexts, plan.layout.chunk_sizes, strict=True)]


def exact_chunks(f: harness.Federation, plan: Plan, node: str) -> list[np.ndarray]:
    """What ``node`` would encrypt without masks: its own exact partial, canaries included."""
    return chunks(encode_partials(plan, f.node_oracle(node, plan.node_sql())))


def sum_and_finish(keys: he.ClientKeys, plan: Plan, answers: Sequence[Sequence[bytes]]) -> list[tuple[Any, ...]]:
    """The homomorphic sum of ``answers`` as the coordinator forms it, decrypted and finished as the client does."""
    total = he.CiphertextSum(he.load_public_context(keys.public_context()), plan.layout.chunk_sizes)
    for blobs in answers:
        total.add(list(blobs))
    totals = decode_totals(plan, decrypt(keys, plan, total.result()), len(answers))
    return [tuple(r) for r in finish(plan, totals).rows]


def assert_serves(f: harness.Federation, keys: he.ClientKeys, nodes: Sequence[str] = NODES) -> None:
    with f.client(keys=keys) as c:
        answer = c.query(VALID)
    assert [tuple(r) for r in answer.rows] == rows_of(f, VALID, nodes)
    assert sorted(answer.answered) == sorted(nodes) and not answer.missing


# ------------------------------------------------------------------------------------- 1. collusion


def test_one_region_s_ciphertext_is_uniform_to_a_colluding_coordinator_and_client(
    fed: harness.Federation, keys: he.ClientKeys, stubs: dict[str, pb_grpc.NodeStub]
) -> None:
    plan = plan_query(WIDE, fed.catalog)
    assert plan.layout.total >= 64 * 15  # enough slots for a 64-bin test
    signed = fed.sign(keys, WIDE)
    answers = ask_every(stubs, lambda n: partial_request(fed, keys, signed, WIDE, NODES), NODES)

    for node in ("n0", "n3"):
        alone = decrypt(keys, plan, answers[node].ciphertexts)
        exact = exact_chunks(fed, plan, node)
        assert [len(c) for c in alone] == [len(c) for c in exact]
        flat_alone, flat_exact = np.concatenate(alone), np.concatenate(exact)
        assert np.count_nonzero(flat_exact) > 50  # the partial is not all zeros ...
        assert np.count_nonzero(flat_alone == flat_exact) == 0  # ... and not one slot of it shows, canaries included
        statistic = chi_square_uniform(flat_alone)
        assert statistic < CHI2_LIMIT, (node, statistic)
        # one region's ciphertext alone is no honest answer: the client's checks refuse it
        with pytest.raises(FederationError) as info:
            decode_totals(plan, alone, 1)
        assert info.value.code == "ANSWER_CORRUPT"

    # every region signed the run it masked for: the query id and exactly this participant set
    run = masking.run_id(query_id(signed), NODES, statements.canonical_terms(statements.EXACT))  # and the terms
    for node, response in answers.items():
        statement = statements.parse(response.statement)
        assert (statement.node, statement.run, statement.participants) == (node, run, NODES)
        assert statement.privacy == {"mode": "exact"}

    # the masks cancel in the sum over exactly the participant set: the answer is the oracle, exactly
    assert sum_and_finish(keys, plan, [answers[n].ciphertexts for n in NODES]) == fed.oracle(WIDE)
    # and over any other set they do not: three of the four answers sum to garbage the client refuses
    with pytest.raises(FederationError) as info:
        sum_and_finish(keys, plan, [answers[n].ciphertexts for n in NODES[:3]])
    assert info.value.code == "ANSWER_CORRUPT"


def test_two_regions_masks_cancel_in_their_two_member_run(
    fed: harness.Federation, keys: he.ClientKeys, stubs: dict[str, pb_grpc.NodeStub]
) -> None:
    pair = ("n1", "n2")
    plan = plan_query(GROUPED, fed.catalog)
    signed = fed.sign(keys, GROUPED)
    answers = ask_every(stubs, lambda n: partial_request(fed, keys, signed, GROUPED, pair), pair)
    slots = {n: np.concatenate(decrypt(keys, plan, answers[n].ciphertexts)) for n in pair}
    exact = {n: np.concatenate(exact_chunks(fed, plan, n)) for n in pair}
    for n in pair:
        assert np.count_nonzero(slots[n] == exact[n]) == 0
    # slot by slot, modulo t: mask(n1) + mask(n2) == 0
    masks = [(slots[n] - exact[n]) % he.PLAIN_MODULUS for n in pair]
    assert np.all((masks[0] + masks[1]) % he.PLAIN_MODULUS == 0)
    assert sum_and_finish(keys, plan, [answers[n].ciphertexts for n in pair]) == rows_of(fed, GROUPED, pair)


# ------------------------------------------------------------------------------- 2. the client path


def test_the_client_s_masked_answer_equals_the_oracle(fed: harness.Federation, keys: he.ClientKeys) -> None:
    with fed.client(keys=keys) as c:
        for sql in (GROUPED, WIDE, "SELECT COUNT(*), SUM(amount), AVG(amount), SUM(balance) FROM accounts"):
            answer = c.query(sql)
            assert [tuple(r) for r in answer.rows] == fed.oracle(sql), sql
            assert sorted(answer.answered) == list(NODES) and not answer.missing
            assert answer.privacy == {"mode": "exact"} and answer.suppressed_groups == 0
            assert answer.statements_verified == 4  # each statement checked with the catalog's audit key
            for receipt in answer.receipts:  # each region logged the run's participant set
                assert json.loads(receipt.entry)["participants"] == ",".join(NODES)


# -------------------------------------------------------------------------- 3. participant minimum


@pytest.fixture(scope="module")
def fed3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    """The same regions under the product's default minimum: every answer is summed with at least 3 regions'."""
    with harness.federation(tmp_path_factory.mktemp("secagg3"), TABLES, NODE_ROWS, policy=MIN3_POLICY) as f:
        yield f


@pytest.fixture(scope="module")
def stubs3(fed3: harness.Federation) -> Iterator[dict[str, pb_grpc.NodeStub]]:
    with fed3.node_stubs_as_coordinator() as s:
        yield s


def test_a_participant_set_below_the_minimum_or_malformed_is_refused(
    fed3: harness.Federation, stubs3: dict[str, pb_grpc.NodeStub], keys: he.ClientKeys
) -> None:
    f, s = fed3, stubs3
    signed = f.sign(keys, VALID)

    def request(participants: Sequence[str]) -> pb.PartialRequest:
        return partial_request(f, keys, signed, VALID, participants)

    for node in NODES:
        peer = "n1" if node != "n1" else "n2"
        err = refused(s[node], request([node, peer]))
        assert err.code == "POLICY_TOO_FEW_PARTICIPANTS"
        assert err.rule == f"{node}: secure_aggregation.min_participants" and err.hint
        for bad in (
            [node, peer, "nowhere"],  # a region not in the catalog
            [p for p in NODES if p != node],  # the node itself left out
            [node, node, peer, "n3" if node != "n3" else "n0"],  # a region named twice
            [],
        ):
            assert refused(s[node], request(bad)).code == "SECAGG_PARTICIPANTS_INVALID", (node, bad)
    # a refused request does not use up the nonce: the same signed question with a valid set is answered
    plan = plan_query(VALID, f.catalog)
    answers = ask_every(s, lambda n: request(NODES), NODES)
    assert sum_and_finish(keys, plan, [answers[n].ciphertexts for n in NODES]) == f.oracle(VALID)
    assert_serves(f, keys)
    with f.client(keys=keys) as c:  # explain states the minimum each region applies
        _, verdicts = c.explain(VALID)
    assert [(v.accepted, v.min_participants) for v in verdicts.verdicts] == [(True, 3)] * 4


# ----------------------------------------------------------------------------------------- 4. re-runs


def test_a_region_down_is_left_out_by_a_re_run_with_the_survivors(tmp_path: Path, keys: he.ClientKeys) -> None:
    """Where exact sums over the survivors are allowed (open.yaml's exact_subsets), a region that is down is left
    out: the survivors are asked again as a new run, and their sum is exact."""
    with harness.federation(tmp_path, TABLES, NODE_ROWS) as f:
        survivors = NODES[:3]
        f.stop_node("n3")
        with f.client(keys=keys) as c:
            answer = c.query(GROUPED)
            assert [tuple(r) for r in answer.rows] == rows_of(f, GROUPED, survivors)
            assert answer.answered == list(survivors)
            assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n3", "NODE_UNREACHABLE")]
            assert answer.statements_verified == 3
            for receipt in answer.receipts:  # the answer summed is the survivors' run
                assert json.loads(receipt.entry)["participants"] == ",".join(survivors)
            # the client does not pass the run count on (QueryAnswer.timings has no "runs"): ask the coordinator
            signed = c.sign(GROUPED)
            reply, blobs = collect(
                c._stub.Query(
                    pb.QueryRequest(he_format=HE_FORMAT, envelope=signed, public_context=keys.public_context()),
                    timeout=RPC_TIMEOUT_S,
                )
            )
        assert reply.timings.runs == 2
        assert list(reply.answered) == list(survivors) and [m.node_id for m in reply.missing] == ["n3"]
        plan = plan_query(GROUPED, f.catalog)
        summed = keys.decrypt_sum([blobs[n] for n in reply.answered], plan.layout.chunk_sizes)
        totals = decode_totals(plan, summed, 3)
        assert [tuple(r) for r in finish(plan, totals).rows] == rows_of(f, GROUPED, survivors)
        # every survivor answered that question twice, for the full set and then for the survivors
        for node in survivors:
            entries = [json.loads(line) for line in (f.audit_dir(node) / "entries.jsonl").read_text().splitlines()]
            mine = [e for e in entries if e["nonce"] == pb.QueryEnvelope.FromString(signed.envelope).nonce.hex()]
            assert [e["participants"] for e in mine] == [",".join(NODES), ",".join(survivors)]

        f.restart_node("n3")  # back: once the coordinator has reconnected, a question is one run over all four
        f.wait_for_regions()
        with f.client(keys=keys) as c:
            signed = c.sign(VALID)
            reply, _ = collect(
                c._stub.Query(
                    pb.QueryRequest(he_format=HE_FORMAT, envelope=signed, public_context=keys.public_context()),
                    timeout=RPC_TIMEOUT_S,
                )
            )
        assert reply.timings.runs == 1 and sorted(reply.answered) == list(NODES)
        assert_serves(f, keys)


def test_without_exact_subsets_an_exact_question_waits_for_every_region(tmp_path: Path, keys: he.ClientKeys) -> None:
    """With a region down, the survivors' exact sum set against a full run's would show the missing region's
    partial: refused (secure_aggregation.exact_subsets false); with two down, three are too few anyway."""
    with harness.federation(tmp_path, TABLES, NODE_ROWS, policy=MIN3_POLICY) as f:
        assert_serves(f, keys)
        f.stop_node("n3")
        with f.client(keys=keys) as c:
            err = harness.refusal(lambda: c.query(VALID))
        # no refusal of the question: n3 is missing, and the policy needs it for an exact answer
        assert isinstance(err, UnavailableError) and err.code == "REGIONS_MISSING", err
        assert err.message.startswith("region(s) n3 (NODE_UNREACHABLE) missing, and without them this query")
        assert "POLICY_EXACT_NEEDS_ALL_REGIONS" in err.message and "an exact answer is summed over" in err.message
        assert err.rule and err.rule.endswith("secure_aggregation.exact_subsets") and "n3" in err.message
        f.stop_node("n2")
        with f.client(keys=keys) as c:
            err = harness.refusal(lambda: c.query(VALID))
        assert isinstance(err, UnavailableError) and err.code == "REGIONS_MISSING", err
        assert "n2 (NODE_UNREACHABLE)" in err.message and "n3 (NODE_UNREACHABLE)" in err.message
        assert "POLICY_TOO_FEW_PARTICIPANTS" in err.message and "at least 3 regions; this run has 2" in err.message
        assert err.rule and err.rule.endswith("secure_aggregation.min_participants")


def test_replay_rules_for_re_runs(
    fed: harness.Federation, keys: he.ClientKeys, stubs: dict[str, pb_grpc.NodeStub]
) -> None:
    """The re-run rules of one signed question at one node (exact subsets allowed here, so only they apply); the
    question allows more runs than the node's policy (max_runs 3), so the policy's bound is the one met."""
    node = stubs["n0"]
    signed = fed.sign(keys, VALID, max_runs=16)

    def request(participants: Sequence[str]) -> pb.PartialRequest:
        return partial_request(fed, keys, signed, VALID, participants)

    assert ask(node, request(NODES)).ciphertexts  # run 1
    assert refused(node, request(NODES)).code == "AUTH_REPLAY"  # the same run again
    assert refused(node, request(list(reversed(NODES)))).code == "AUTH_REPLAY"  # the same set in another order
    assert ask(node, request(["n0", "n1", "n2"])).ciphertexts  # run 2: a strict subset
    assert refused(node, request(NODES)).code == "AUTH_REPLAY"  # a superset after the subset
    assert refused(node, request(["n0", "n1", "n3"])).code == "AUTH_REPLAY"  # not a subset of the last set
    assert refused(node, request(["n0", "n1", "n2"])).code == "AUTH_REPLAY"  # the subset again
    assert ask(node, request(["n0", "n1"])).ciphertexts  # run 3: a strict subset again (max_runs 3)
    assert refused(node, request(["n0"])).code == "AUTH_REPLAY"  # a fourth run: more than max_runs
    # the other regions keep their own counts: n1 has not run this question yet
    assert ask(stubs["n1"], request(["n0", "n1"])).ciphertexts
    assert_serves(fed, keys)


def test_a_restarted_node_remembers_its_runs_and_still_answers_a_new_strict_subset(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    signed = fed.sign(keys, GROUPED, max_runs=3)
    plan = plan_query(GROUPED, fed.catalog)

    def request(participants: Sequence[str]) -> pb.PartialRequest:
        return partial_request(fed, keys, signed, GROUPED, participants)

    with fed.node_stubs_as_coordinator() as s:
        first = ask_every(s, lambda n: request(NODES), NODES)
    assert sum_and_finish(keys, plan, [first[n].ciphertexts for n in NODES]) == fed.oracle(GROUPED)
    fed.restart_node("n0")  # the runs come back from its audit log
    survivors = ("n0", "n1", "n2")
    with fed.node_stubs_as_coordinator() as s:
        assert refused(s["n0"], request(NODES)).code == "AUTH_REPLAY"
        second = ask_every(s, lambda n: request(survivors), survivors)
        assert sum_and_finish(keys, plan, [second[n].ciphertexts for n in survivors]) == rows_of(
            fed, GROUPED, survivors
        )
        assert refused(s["n0"], request(survivors)).code == "AUTH_REPLAY"
        fed.restart_node("n1")
        assert refused(s["n1"], request(survivors)).code == "AUTH_REPLAY"
        assert refused(s["n1"], request(NODES)).code == "AUTH_REPLAY"
        pair = ("n0", "n1")
        third = ask_every(s, lambda n: request(pair), pair)  # run 3 of 3, across two restarts
        assert sum_and_finish(keys, plan, [third[n].ciphertexts for n in pair]) == rows_of(fed, GROUPED, pair)
        assert refused(s["n0"], request(["n0"])).code == "AUTH_REPLAY"
    fed.wait_for_regions()
    assert_serves(fed, keys)


def test_a_re_run_of_an_exact_question_cannot_give_away_the_region_it_leaves_out(
    fed3: harness.Federation, keys: he.ClientKeys, stubs3: dict[str, pb_grpc.NodeStub]
) -> None:
    """n3 answered the full run; a compromised coordinator says it did not and asks the others again without it.
    Answered, the two sums would differ by exactly n3's partial: every region refuses the exact re-run."""
    plan = plan_query(GROUPED, fed3.catalog)
    signed = fed3.sign(keys, GROUPED)
    full = ask_every(stubs3, lambda n: partial_request(fed3, keys, signed, GROUPED, NODES), NODES)
    assert sum_and_finish(keys, plan, [full[n].ciphertexts for n in NODES]) == fed3.oracle(GROUPED)
    for node in NODES[:3]:
        err = refused(stubs3[node], partial_request(fed3, keys, signed, GROUPED, NODES[:3]))
        assert err.code == "POLICY_EXACT_NEEDS_ALL_REGIONS"
        assert err.rule == f"{node}: secure_aggregation.exact_subsets" and "n3" in err.message


def test_a_second_exact_question_over_fewer_regions_cannot_give_away_the_one_left_out(
    fed3: harness.Federation, keys: he.ClientKeys, stubs3: dict[str, pb_grpc.NodeStub]
) -> None:
    """The same SQL signed twice: all four for the first, three for the second (a first run of its own, so no
    replay rule applies). Answered, the difference would be n3's partial: refused."""
    plan = plan_query(GROUPED, fed3.catalog)
    first, second = fed3.sign(keys, GROUPED), fed3.sign(keys, GROUPED)
    full = ask_every(stubs3, lambda n: partial_request(fed3, keys, first, GROUPED, NODES), NODES)
    assert sum_and_finish(keys, plan, [full[n].ciphertexts for n in NODES]) == fed3.oracle(GROUPED)
    for node in NODES[:3]:
        assert refused(stubs3[node], partial_request(fed3, keys, second, GROUPED, NODES[:3])).code == (
            "POLICY_EXACT_NEEDS_ALL_REGIONS"
        )
    # the refusals did not use up the second question: over every region it is answered
    again = ask_every(stubs3, lambda n: partial_request(fed3, keys, second, GROUPED, NODES), NODES)
    assert sum_and_finish(keys, plan, [again[n].ciphertexts for n in NODES]) == fed3.oracle(GROUPED)


# ------------------------------------------------------------------------------------- 5. statements


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]


def _tampered_statement(answer: hpf.coordinator.fanout.FederatedAnswer, how: str) -> None:
    victim = answer.statements[1]
    if how == "signature":
        victim.signature = _flip(victim.signature, 7)
    elif how == "terms":  # well-formed, canonical, claims DP terms the region never signed
        body = json.loads(victim.statement)
        body["privacy"] = {"mode": "dp", "epsilon": 1.0, "delta": 1e-6, "threshold": 0, "components": []}
        victim.statement = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    elif how == "byte":
        victim.statement = _flip(victim.statement, len(victim.statement) // 2)
    elif how == "missing":
        del answer.statements[1]
    else:  # another run's statement: the participant set named does not match the run's
        body = json.loads(victim.statement)
        body["participants"] = body["participants"][:3]
        victim.statement = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize("how", ["signature", "terms", "byte", "missing", "participants"])
def test_the_client_refuses_a_statement_the_coordinator_tampered_with(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    honest = hpf.coordinator.fanout.FanOut.query

    async def tampering(
        self: hpf.coordinator.fanout.FanOut, *args: Any, **kwargs: Any
    ) -> hpf.coordinator.fanout.FederatedAnswer:
        answer = await honest(self, *args, **kwargs)
        _tampered_statement(answer, how)
        return answer

    monkeypatch.setattr(hpf.coordinator.fanout.FanOut, "query", tampering)
    with fed.client(keys=keys) as c, pytest.raises(FederationError) as info:
        c.query(VALID)
    assert info.value.code == "ANSWER_STATEMENT_INVALID", info.value
    monkeypatch.undo()
    assert_serves(fed, keys)


def test_a_sum_missing_a_participant_it_claims_is_refused(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the coordinator leaves n0's ciphertexts out but relays its statement and receipt
    with lie.lying(monkeypatch, lie.without_ciphertexts("n0")), fed.client(keys=keys) as c:
        with pytest.raises(FederationError) as info:
            c.query(GROUPED)
    assert info.value.code == "ANSWER_CORRUPT", info.value
    assert_serves(fed, keys)


def test_a_sum_leaving_out_a_region_that_answered_the_run_is_refused(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # n3 answered the run over all four, but the coordinator relays only the others and says n3 did not answer:
    # the others' statements name a set the sum does not hold, so their masks cannot have cancelled
    with lie.lying(monkeypatch, lie.called_missing("n3")):
        with fed.client(keys=keys) as c, pytest.raises(FederationError) as info:
            c.query(GROUPED)
    assert info.value.code == "ANSWER_STATEMENT_INVALID", info.value
    assert "masks would not cancel" in info.value.message
    assert_serves(fed, keys)
