"""Differential privacy at its edges, on running four-region federations: regions under other privacy terms,
a question that fails on some regions' rows, the capped table following the data, and re-runs charged again.

Caseworkers get DP answers where a region runs tests/fixtures/policies/open-dp.yaml (epsilon 1, delta 1e-6 per
answer, 3 epsilon per identity per day) and exact ones where it runs open.yaml. Each question is asked by a
person of its own, so no test spends another's budget.

"A compromised coordinator" is played as in test_secure_aggregation.py: the coordinator's certificate
(``node_stubs_as_coordinator``) and the client's key pair, which decrypts anything the regions send.

The oracle of a DP answer is the *clamped* oracle: DuckDB over each region's rows with at most ``max_rows`` rows
per person kept per region (those with the highest ``contribution.prefer`` value first, then in the order of all
columns) and every bounded column clamped into its bounds, written here independently of the product's SQL.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
import numpy as np
import pytest
from uniformity import CHI2_LIMIT, chi_square_uniform

from hpf.cli.output import privacy_note, render
from hpf.client.answers import QueryAnswer
from hpf.federation.crypto import he, masking
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.crypto.slot_codec import CANARY, FAILED, chunks, decode_totals, encode_partials
from hpf.federation.errors import FederationError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.plan import Plan
from hpf.federation.planner import plan_query
from hpf.federation.privacy.dp_plan import DpTerms, dp_terms
from hpf.federation.trust import statements
from hpf.federation.trust.envelope import query_id
from hpf.node.privacy_budget import LEDGER_FILE, Budget, PrivacyLedger

RPC_TIMEOUT_S = 20.0
DP_POLICY = harness.OPEN_POLICY.with_name("open-dp.yaml")
NODES = ("n0", "n1", "n2", "n3")
EPSILON, DELTA = 1.0, 1e-6
BUDGET = Budget(3.0, 1e-4, "day")  # open-dp.yaml's caseworker budget
DISTRICTS = [f"d{i:03d}" for i in range(200)]
TABLES: dict[str, Any] = {
    "claims": {
        "contribution": {"person": "person_id", "max_rows": 2, "max_regions": 2},
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "district": {"type": "VARCHAR", "class": "public", "domain": {"values": DISTRICTS}},
            "amount": {"type": "BIGINT", "class": "public", "bounds": [0, 20_000]},
        },
    },
    "visits": {  # the cap keeps each person's latest rows: prefer is the last column, not the first
        "contribution": {"person": "person_id", "max_rows": 2, "max_regions": 1, "prefer": "month"},
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "amount": {"type": "BIGINT", "class": "public", "bounds": [0, 100]},
            "month": {"type": "INTEGER", "class": "public"},
        },
    },
}
VISIT_AMOUNT = {1: 0, 2: 10, 3: 60, 4: 100}  # by month: the latest two months hold the most
VISITORS = 100  # per region


def _claims(node: int) -> list[tuple[Any, ...]]:
    """300 rows of 150 people (2 each, in this region only) over d000..d149, amounts below 5000; in n1..n3 one
    more person with a single claim of 15000 (inside the bounds, kept by the cap, but not a DECIMAL(4,0))."""
    rows: list[tuple[Any, ...]] = [
        (f"C{node}-{i // 2:03d}", DISTRICTS[(node * 300 + i) % 150], (37 * i + 101 * node) % 5000) for i in range(300)
    ]
    if node > 0:
        rows.append((f"F{node}", DISTRICTS[node], 15_000))
    return rows


def _visits(node: int) -> list[tuple[Any, ...]]:
    """VISITORS people with one visit in each of months 1..4, in a shuffled file order."""
    rows = [(f"V{node}-{p:03d}", VISIT_AMOUNT[m], m) for p in range(VISITORS) for m in (1, 2, 3, 4)]
    random.Random(node).shuffle(rows)
    return rows


NODE_ROWS: dict[str, dict[str, list[tuple[Any, ...]]]] = {
    n: {"claims": _claims(i), "visits": _visits(i)} for i, n in enumerate(NODES)
}
PEOPLE = (
    ("caseworker", "caseworker", None),
    ("cw_mixed", "caseworker", None),
    ("cw_fail", "caseworker", None),
    ("cw_cap", "caseworker", None),
    ("cw_rerun", "caseworker", None),
)
WIDE = "SELECT district, COUNT(*) AS n, SUM(amount) AS total FROM claims GROUP BY district ORDER BY district"
# n1, n2 and n3 stop it at their own limit (harness.scans_stopped); n0 answers it
FAILING = (
    "SELECT district, COUNT(*) AS n, SUM(CAST(amount AS DECIMAL(38,0))) AS total FROM claims "
    "GROUP BY district ORDER BY district"
)
VISITS = "SELECT COUNT(*) AS n, SUM(amount) AS total FROM visits"


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    """Every region answers caseworkers with DP."""
    with harness.federation(
        tmp_path_factory.mktemp("dp-edges"), TABLES, NODE_ROWS, policy=DP_POLICY, people=PEOPLE
    ) as f:
        yield f


# ---------------------------------------------------------------------------------------------- helpers


def terms_of(f: harness.Federation, sql: str) -> DpTerms:
    return dp_terms(plan_query(sql, f.catalog), f.catalog, EPSILON, DELTA, 0)


def ask_every(
    f: harness.Federation, keys: he.ClientKeys, signed: pb.SignedEnvelope, plan: Plan
) -> dict[str, pb.PartialResponse]:
    """Every region's answer to ``signed`` for the run over all four, asked with the coordinator's certificate."""
    request = pb.PartialRequest(
        he_format=HE_FORMAT,
        query_id=query_id(signed),
        public_context=keys.public_context(),
        plan_fingerprint=plan.fingerprint,
        envelope=signed,
        participants=list(NODES),
    )

    def ask(stub: pb_grpc.NodeStub) -> pb.PartialResponse:
        return stub.ComputePartial(request, timeout=RPC_TIMEOUT_S)

    with f.node_stubs_as_coordinator() as stubs, ThreadPoolExecutor(len(NODES)) as pool:
        calls = {n: pool.submit(ask, stubs[n]) for n in NODES}
        return {n: c.result() for n, c in calls.items()}


def decrypted_sum(keys: he.ClientKeys, plan: Plan, answers: dict[str, pb.PartialResponse]) -> list[np.ndarray]:
    """The homomorphic sum of every answer as the coordinator forms it, decrypted with the client's key."""
    total = he.CiphertextSum(he.load_public_context(keys.public_context()), plan.layout.chunk_sizes)
    for n in NODES:
        total.add(list(answers[n].ciphertexts))
    return [keys.decrypt(b, size) for b, size in zip(total.result(), plan.layout.chunk_sizes, strict=True)]


def write_replacing(path: Path, columns: dict[str, str], rows: Sequence[Sequence[Any]]) -> None:
    """Replace ``path`` at once (a new file renamed over it), as an operator's export would."""
    fresh = path.with_name(path.name + ".new")
    harness.write_table(fresh, columns, rows)
    os.replace(fresh, path)


# ------------------------------------------------------------------- 1. regions under other privacy terms


def test_a_region_under_dp_among_exact_ones_cannot_be_summed_into_an_answer(
    tmp_path: Path, keys: he.ClientKeys
) -> None:
    """n0 answers caseworkers with DP, n1..n3 exactly. Each region binds its masks to the terms it answers under
    (masking.run_id), so no sum of the four is an answer: the client refuses the question, and a coordinator and
    client who decrypt the sum anyway find uniform garbage, not the exact figures n1..n3 would give away."""
    policies = {"n0": DP_POLICY, "n1": harness.OPEN_POLICY, "n2": harness.OPEN_POLICY, "n3": harness.OPEN_POLICY}
    with harness.federation(tmp_path, TABLES, NODE_ROWS, policy=policies, people=PEOPLE) as f:
        with f.client(keys=keys, person="cw_mixed") as c:
            err = harness.refusal(lambda: c.query(WIDE))
        # the client names the cause: the regions' policies disagree (their run ids, which bind the terms, differ
        # too, so no sum came out of it)
        assert err.code == "DP_TERMS_DIFFER", err
        assert "different privacy terms" in err.message and err.hint and "policies must agree" in err.hint

        plan = plan_query(WIDE, f.catalog)
        assert plan.layout.total >= 64 * 15  # enough slots for a 64-bin test
        signed = f.sign(keys, WIDE, "cw_mixed")
        answers = ask_every(f, keys, signed, plan)
        exact_partials = {
            n: np.concatenate(chunks(encode_partials(plan, f.node_oracle(n, plan.node_sql())))) for n in NODES
        }

    dp = {"mode": "dp", **terms_of(f, WIDE).canonical()}
    qid = query_id(signed)
    for node, response in answers.items():
        statement = statements.parse(response.statement)
        terms = dp if node == "n0" else statements.EXACT
        assert statement.privacy == terms
        assert statement.run == masking.run_id(qid, NODES, statements.canonical_terms(terms))
    assert statements.parse(answers["n0"].statement).run != statements.parse(answers["n1"].statement).run

    summed = decrypted_sum(keys, plan, answers)
    flat = np.concatenate(summed)
    honest = sum(exact_partials.values())  # what an all-exact run would decrypt to, canaries included
    assert isinstance(honest, np.ndarray) and np.count_nonzero(honest) > 50
    assert np.count_nonzero(flat == honest) == 0  # not one slot of the exact sum shows
    statistic = chi_square_uniform(flat)
    assert statistic < CHI2_LIMIT, statistic
    for noisy in (False, True):  # and the client's own checks would refuse it
        with pytest.raises(FederationError) as info:
            decode_totals(plan, summed, len(NODES), noisy=noisy)
        assert info.value.code == "ANSWER_CORRUPT"


# ------------------------------------------------------------- 2. a DP question failing on some regions' rows


def test_a_dp_question_failing_on_some_regions_rows_is_refused_and_its_sum_is_random(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n1..n3 stop the question at their own limit; n0 answers it. The client is told NODE_EXECUTION_FAILED.
    Decrypted anyway (the asker holds the key), the sum is uniformly random in every data slot: the failing
    regions send randomness, not zeros (with zeros the sum would be n0's partial under a quarter of the noise its
    policy asks for; under exact answers, n0's exact partial), and not their noise shares either. Only the
    canaries say how many regions failed."""
    plan = plan_query(FAILING, fed.catalog)
    terms = terms_of(fed, FAILING)
    with harness.scans_stopped(monkeypatch, fed, NODES[1:]), fed.client(keys=keys, person="cw_fail") as c:
        err = harness.refusal(lambda: c.query(FAILING))
    assert err.code == "NODE_EXECUTION_FAILED" and err.message.startswith("3 region(s) could not compute")

    signed = fed.sign(keys, FAILING, "cw_fail")
    with harness.scans_stopped(monkeypatch, fed, NODES[1:]):
        answers = ask_every(fed, keys, signed, plan)
    dp = {"mode": "dp", **terms.canonical()}
    assert {statements.parse(r.statement).run for r in answers.values()} == {
        masking.run_id(query_id(signed), NODES, statements.canonical_terms(dp))
    }  # one run: the masks cancel
    assert all(statements.parse(r.statement).privacy == dp for r in answers.values())
    summed = decrypted_sum(keys, plan, answers)
    # every canary holds 4 honest marks and 3 failure marks: three regions failed, none is named
    assert {int(c[-1]) for c in summed} == {len(NODES) * CANARY + 3 * (FAILED - CANARY)}
    with pytest.raises(FederationError) as info:
        decode_totals(plan, summed, len(NODES), noisy=True)
    assert info.value.code == "NODE_EXECUTION_FAILED"
    data = np.concatenate([c[:-1] for c in summed])
    n0_rows = fed.clamped_oracle(plan.node_sql(), ["n0"])
    n0_partial = encode_partials(plan, n0_rows)
    assert sum(v[0] for v in decode_totals(plan, chunks(n0_partial), 1).values()) == 300  # n0's 300 claims
    # the decrypted sum is not n0's partial plus noise of any size: it is uniform over the plain range
    assert chi_square_uniform(data) < CHI2_LIMIT
    assert float(np.abs(data - n0_partial).mean()) > he.HALF_PLAIN / 4  # noise of the stated sd is far smaller
    assert max(n.sd for n in terms.components) < he.HALF_PLAIN / 1000


# ----------------------------------------------------------------------------- 3. the capped table


def test_the_cap_keeps_the_latest_rows_and_follows_a_data_file_replaced_while_the_node_runs(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    """Each person's two rows that count are their latest (contribution.prefer: month, the table's last column):
    months 3 and 4, not the first two in file order or in the order of all columns. Then n0's file is replaced
    under the running node, and its next DP answer is of the new rows, capped again: the capped table it keeps
    in memory is made per data version."""
    terms = terms_of(fed, VISITS)
    sd_n, sd_total = terms.components[0].sd, terms.components[2].sd
    assert [c.sensitivity for c in terms.components] == [2, 2, 200, 0]
    ((n_before, total_before),) = fed.clamped_oracle(VISITS)
    people = len(NODES) * VISITORS
    assert (n_before, total_before) == (2 * people, people * (60 + 100))  # each person's months 3 and 4
    # the two rows of each person first in the order of all columns (or of the months) are months 1 and 2
    first_rows = people * (0 + 10)
    assert fed.oracle(
        "SELECT SUM(amount) FROM (SELECT * FROM visits QUALIFY row_number() OVER "
        "(PARTITION BY person_id ORDER BY person_id, amount, month) <= 2)"
    ) == [(first_rows,)]
    with fed.client(keys=keys, person="cw_cap") as c:
        before = c.query(VISITS)
    ((n, total),) = before.rows
    assert abs(n - n_before) < 6 * sd_n and abs(total - total_before) < 6 * sd_total
    assert abs(total - first_rows) > 20 * sd_total  # not the first rows: the latest ones

    # n0's file replaced under the running node: 1500 people with months 1..3 (60 and 100 kept, not 0), and one
    # with 40 rows (every other one above the bounds) of which 2 count, 100 each once clamped
    path = fed.root / "data" / "n0" / "visits.parquet"
    assert path in fed.data_files["visits"]
    rows = [(f"W-{p:04d}", {1: 0, 2: 60, 3: 100}[m], m) for p in range(1500) for m in (1, 2, 3)]
    rows += [("W-HEAVY", 5_000 if m % 2 else 100, m) for m in range(1, 41)]  # out of bounds too: clamped
    random.Random(7).shuffle(rows)
    write_replacing(path, {"person_id": "VARCHAR", "amount": "BIGINT", "month": "INTEGER"}, rows)
    ((n_after, total_after),) = fed.clamped_oracle(VISITS)
    others = 3 * VISITORS
    assert (n_after, total_after) == (2 * others + 1500 * 2 + 2, others * 160 + 1500 * 160 + 2 * 100)
    assert fed.oracle(VISITS)[0][0] == 4 * others + 1500 * 3 + 40  # the heavy person's 40 rows are in the file
    assert (n_after - n_before) / sd_n > 100 and (total_after - total_before) / sd_total > 100
    with fed.client(keys=keys, person="cw_cap") as c:
        after = c.query(VISITS)
    ((n, total),) = after.rows
    assert abs(n - n_after) < 6 * sd_n and abs(total - total_after) < 6 * sd_total
    assert abs(n - n_before) > 50 * sd_n and abs(total - total_before) > 50 * sd_total
    assert sorted(after.answered) == list(NODES) and after.privacy["mode"] == "dp"


# ------------------------------------------------------------------------- 4. a re-run is charged again


def test_a_dp_re_run_is_charged_again_and_the_answer_and_its_printed_line_say_so(
    tmp_path: Path, keys: he.ClientKeys
) -> None:
    """With n3 down the survivors answer the run over all four, then the re-run over themselves: two releases,
    each charged. The answer says 2 runs, the printed line the epsilon of both, and the survivors' ledgers (read
    after the federation stops, when no node holds them open) 2 epsilon; n3, down throughout, charged nothing."""
    survivors = NODES[:3]
    sql = "SELECT SUM(amount) AS total FROM claims"
    with harness.federation(tmp_path, TABLES, NODE_ROWS, policy=DP_POLICY, people=PEOPLE) as f:
        f.stop_node("n3")
        with f.client(keys=keys, person="cw_rerun") as c:
            answer: QueryAnswer = c.query(sql)
        ((expected,),) = f.clamped_oracle(sql, survivors)
        sd = terms_of(f, sql).components[2].sd
    assert answer.answered == list(survivors) and [m["node_id"] for m in answer.missing] == ["n3"]
    assert answer.privacy["mode"] == "dp" and answer.privacy["runs"] == 2
    assert (answer.privacy["epsilon"], answer.privacy["delta"]) == (EPSILON, DELTA)  # per run, as signed
    assert answer.timings["runs"] == 2.0 and answer.statements_verified == 3
    assert abs(answer.rows[0][0] - expected) < 6 * sd

    line = privacy_note(answer)
    assert line is not None
    assert line.startswith("differentially private: epsilon 2 (delta 2e-06)")  # 1 (1e-06) per run, twice
    assert "2 runs" in line and "spent of your budget at each region" in line
    assert " ".join(line.split()) in " ".join(render(answer, "table").split())  # printed under the table

    for node in NODES:
        directory = tmp_path / "state" / node / "privacy"  # where a node keeps its ledger (state_dir/privacy)
        assert (directory / LEDGER_FILE).is_file()  # opening elsewhere would make an empty ledger and read 0
        with PrivacyLedger.open(directory) as ledger:
            spent = ledger.spent("cw_rerun", BUDGET)
        if node in survivors:
            assert (spent.epsilon, spent.queries) == (2 * EPSILON, 2), node
            assert spent.delta == pytest.approx(2 * DELTA, rel=1e-12)
        else:
            assert (spent.epsilon, spent.delta, spent.queries) == (0.0, 0.0, 0), node
