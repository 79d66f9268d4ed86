"""Differentially private answers on a running four-region federation: noise, clamping, threshold, budget.

Caseworkers and analysts here get DP answers (tests/fixtures/policies/open-dp.yaml): epsilon 1 and delta 1e-6 per
answer, 3 epsilon per identity per day on every region; analysts' groups with a noisy row count under 150 are
not shown. Each test spends the budget of its own person, so the tests do not depend on their order.

The oracle of a DP answer is the *clamped* oracle: DuckDB over the union of every region's rows with at most
``max_rows`` rows per person kept per region and every bounded column clamped into its bounds. On ``claims``
the clamping does not bind (every person holds at most 2 rows, in one region, with amounts inside the bounds),
and the tests check that the clamped oracle equals the plain one there; on ``payouts`` it binds on purpose.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import harness
import lying_coordinator as lie
import numpy as np
import pytest
import yaml
from streamed import collect

from hpf.client.answers import QueryAnswer
from hpf.client.profile import ClientProfile
from hpf.federation.config_files import parse_model
from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.crypto.sealing import AgreementKey, load_or_create_secret
from hpf.federation.crypto.slot_codec import chunks, decode_totals, encode_noisy_partials, encode_partials
from hpf.federation.errors import FederationError, from_rpc_error
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.plan import OTHER, Plan
from hpf.federation.planner import plan_query
from hpf.federation.privacy import skellam
from hpf.federation.privacy.dp_plan import DpTerms, component_label, dp_plan, dp_terms
from hpf.federation.trust import statements
from hpf.federation.trust.envelope import query_id
from hpf.node.protection import NOISE_KEY, Protector

RPC_TIMEOUT_S = 20.0
DP_POLICY = harness.OPEN_POLICY.with_name("open-dp.yaml")
NODES = ("n0", "n1", "n2", "n3")
EPSILON, DELTA, BUDGET = 1.0, 1e-6, 3.0
DISTRICTS = [f"d{i:03d}" for i in range(200)]
TABLES: dict[str, Any] = {
    "claims": {
        "contribution": {"person": "person_id", "max_rows": 2, "max_regions": 2},
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "district": {"type": "VARCHAR", "class": "public", "domain": {"values": DISTRICTS}},
            "kind": {"type": "VARCHAR", "class": "public", "domain": {"values": ["a", "b", "c"]}},
            "amount": {"type": "BIGINT", "class": "public", "bounds": [0, 1000]},
            "score": {"type": "BIGINT", "class": "public"},  # no bounds: a DP question may not sum it
        },
    },
    "payouts": {
        "contribution": {"person": "person_id", "max_rows": 1, "max_regions": 1},
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "amount": {"type": "BIGINT", "class": "public", "bounds": [0, 100]},
        },
    },
    "notes": {  # no contribution bound at all
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "kind": {"type": "VARCHAR", "class": "public", "domain": {"values": ["a", "b"]}},
        }
    },
}


def _claims(node: int) -> list[tuple[Any, ...]]:
    """300 rows: 150 people with 2 rows each, in this region only; 8 rows in each of d000..d149 over all four
    regions (d150..d199 hold none); kinds a and c alternate (600 each in all, b none); amounts inside [0, 1000]."""
    return [
        (
            f"C{node}-{i // 2:03d}",
            DISTRICTS[(node * 300 + i) % 150],
            "a" if i % 2 == 0 else "c",
            (37 * i + 101 * node) % 1001,
            (-1) ** i * (7919 * i + node) * 1000,
        )
        for i in range(300)
    ]


def _payouts(node: int) -> list[tuple[Any, ...]]:
    rows = [(f"Y{node}-{i:02d}", 50) for i in range(20)]
    if node == 0:  # one person with 5 rows far above the bound: clamped to one row of 100
        rows += [("Y0-HEAVY", 10_000_000)] * 5
    return rows


NODE_ROWS: dict[str, dict[str, list[tuple[Any, ...]]]] = {
    n: {"claims": _claims(i), "payouts": _payouts(i), "notes": [(f"N{i}", "a")]} for i, n in enumerate(NODES)
}
PEOPLE = (
    ("caseworker", "caseworker", None),
    ("cw_direct", "caseworker", None),
    ("cw_budget", "caseworker", None),
    ("cw_other", "caseworker", None),
    ("cw_explain", "caseworker", None),
    ("cw_unbounded", "caseworker", None),
    ("cw_rerun", "caseworker", None),
    ("cw_silent1", "caseworker", None),
    ("cw_silent2", "caseworker", None),
    ("analyst", "analyst", None),
)
WIDE = "SELECT district, COUNT(*) AS n, SUM(amount) AS total FROM claims GROUP BY district ORDER BY district"
COUNT = "SELECT COUNT(*) AS n FROM claims"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("dp")
    with harness.federation(root, TABLES, NODE_ROWS, policy=DP_POLICY, people=PEOPLE) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


# ---------------------------------------------------------------------------------------------- helpers


def terms_of(f: harness.Federation, sql: str, threshold: int = 0) -> DpTerms:
    return dp_terms(plan_query(sql, f.catalog), f.catalog, EPSILON, DELTA, threshold)


def stated_noise(plan: Plan, terms: DpTerms) -> list[dict[str, Any]]:
    """The noise an answer must state: each noisy component's SD in its own units."""
    return [
        {"component": component_label(comp), "sd": noise.sd / 10**comp.scale}
        for comp, noise in zip(plan.components, terms.components, strict=True)
        if noise.mu > 0
    ]


def spent(f: harness.Federation, keys: he.ClientKeys, person: str, sql: str = COUNT) -> dict[str, float]:
    """Each region's budget spent by ``person`` this period, from explain (which spends nothing)."""
    with f.client(keys=keys, person=person) as c:
        _, reply = c.explain(sql)
    assert all(v.accepted and v.privacy.mode == "dp" for v in reply.verdicts), reply
    return {v.node_id: v.privacy.budget_spent for v in reply.verdicts}


def cell_key(plan: Plan, cell: int) -> Any:
    (key,) = plan.keys
    return key.values[cell] if cell < len(key.values) else (None if cell == key.null_cell else OTHER)


# ------------------------------------------------------------------------------- 1. a DP answer


@pytest.fixture(scope="module")
def wide_answer(fed: harness.Federation, keys: he.ClientKeys) -> QueryAnswer:
    with fed.client(keys=keys) as c:
        return c.query(WIDE)


def test_the_answer_states_epsilon_and_the_noise_of_every_component(
    fed: harness.Federation, wide_answer: QueryAnswer
) -> None:
    plan = plan_query(WIDE, fed.catalog)
    terms = terms_of(fed, WIDE)
    # independently of the regions: one person moves COUNT(*) and COUNT(amount) by 2 rows x 2 regions, and
    # SUM(amount) by 4 x 1000; the noise is calibrated to exactly epsilon 1 over the three
    assert [c.sensitivity for c in terms.components] == [4, 4, 4000, 0]
    assert [c.unit for c in terms.components] == [1, 1, 1, 1]
    mus = [c.mu for c in terms.components[:3]]
    accounted = skellam.epsilon_of(mus, [skellam.ComponentNoise(s, s) for s in (4, 4, 4000)], DELTA)
    assert 0.999 < accounted <= EPSILON
    assert wide_answer.privacy == {
        "mode": "dp",
        "epsilon": EPSILON,
        "delta": DELTA,
        "threshold": 0,
        "runs": 1,
        "max_runs": 2,  # the bound the client signed (the profile's default)
        "verified": True,
        "noise": stated_noise(plan, terms),
    }
    assert [n["component"] for n in wide_answer.privacy["noise"]] == ["COUNT(*)", "COUNT(amount)", "SUM(amount)"]
    assert wide_answer.privacy["noise"][0]["sd"] == pytest.approx(math.sqrt(2 * mus[0]))
    assert sorted(wide_answer.answered) == list(NODES) and wide_answer.statements_verified == 4


def test_every_present_cell_is_noisy_and_the_empty_ones_are_there_too(
    fed: harness.Federation, wide_answer: QueryAnswer
) -> None:
    exact = {k: (n, s) for k, n, s in fed.oracle(WIDE)}
    assert fed.clamped_oracle(WIDE) == fed.oracle(WIDE)  # the clamping does not bind on claims
    rows = {r[0]: (r[1], r[2]) for r in wide_answer.rows}
    assert len(rows) == len(wide_answer.rows)  # one row per cell
    assert set(rows) <= {*DISTRICTS, None, OTHER}
    # districts without a row (and NULL, other) are answered too, with noise: with no threshold, every one of them
    empty = [k for k in rows if k not in exact]
    assert len(empty) == len(DISTRICTS) + 2 - len(exact)
    assert sum(1 for k in empty if rows[k][0] != 0) >= len(empty) / 2
    same = sum(1 for k, (n, s) in rows.items() if k in exact and (n, s) == exact[k])
    assert same == 0  # not one occupied cell comes back exact
    for n, total in rows.values():  # a SUM is NULL only where its noisy COUNT(amount) is 0
        assert isinstance(n, int) and (total is None or isinstance(total, int))


def test_with_threshold_0_every_cell_is_in_the_answer(fed: harness.Federation, wide_answer: QueryAnswer) -> None:
    assert wide_answer.suppressed_groups == 0
    assert sorted(r[0] for r in wide_answer.rows if r[0] not in (None, OTHER)) == DISTRICTS
    assert {r[0] for r in wide_answer.rows} >= {None, OTHER} and len(wide_answer.rows) == len(DISTRICTS) + 2


def test_the_noise_is_unbiased_with_the_stated_sd_in_every_cell(fed: harness.Federation, keys: he.ClientKeys) -> None:
    """Standardized residuals (noisy total - clamped oracle) / sd of all 202 cells x 3 components, from the
    decrypted sum before any suppression: mean 0 and variance 1, within 6 standard errors."""
    plan = plan_query(WIDE, fed.catalog)
    terms = terms_of(fed, WIDE)
    with fed.client(keys=keys, person="cw_direct") as c:
        signed = c.sign(WIDE)
        reply, blobs = collect(
            c._stub.Query(
                pb.QueryRequest(he_format=HE_FORMAT, envelope=signed, public_context=keys.public_context()),
                timeout=RPC_TIMEOUT_S,
            )
        )
    assert sorted(reply.answered) == list(NODES) and reply.timings.runs == 1
    summed = keys.decrypt_sum([blobs[n] for n in reply.answered], plan.layout.chunk_sizes)
    noisy = decode_totals(plan, summed, 4, noisy=True)
    assert sorted(noisy) == list(range(plan.layout.cells))  # every cell
    exact = decode_totals(plan, chunks(encode_partials(plan, fed.clamped_oracle(plan.node_sql()))), 1)
    assert {cell_key(plan, cell) for cell in exact} == {r[0] for r in fed.oracle(WIDE)}
    zero = [0] * len(plan.components)
    for j, noise in enumerate(terms.components):
        if noise.mu == 0:
            assert all(noisy[cell][j] == 0 for cell in noisy)  # the withheld mark carries no noise
            continue
        z = np.array([(noisy[cell][j] - exact.get(cell, zero)[j]) / noise.sd for cell in sorted(noisy)])
        k = z.size
        assert abs(z.mean()) < 6 / math.sqrt(k), (j, z.mean())
        assert abs(float((z**2).sum()) - k) < 6 * math.sqrt(2 * k), (j, float((z**2).sum()))


def test_clamping_binds_where_a_person_holds_too_many_rows_or_too_large_values(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    sql = "SELECT COUNT(*) AS n, SUM(amount) AS total FROM payouts"
    ((n_plain, total_plain),) = fed.oracle(sql)
    ((n_clamped, total_clamped),) = fed.clamped_oracle(sql)
    assert (n_plain, total_plain) == (85, 50_004_000) and (n_clamped, total_clamped) == (81, 4_100)
    terms = terms_of(fed, sql)
    sd_count, sd_sum = terms.components[0].sd, terms.components[2].sd
    assert [c.sensitivity for c in terms.components] == [1, 1, 100, 0]
    with fed.client(keys=keys) as c:
        answer = c.query(sql)
    ((n, total),) = answer.rows
    assert abs(n - n_clamped) < 6 * sd_count
    assert abs(total - total_clamped) < 6 * sd_sum
    assert abs(total - total_plain) > 1000 * sd_sum


def test_a_region_s_noise_is_a_function_of_its_noise_key_and_the_run(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    """What n0 sends, decrypted alone, is exactly its clamped partial plus its Skellam share seeded by HKDF(noise
    key, run id) plus its masks for the run: asked the same run again it could only repeat itself. Restarted, it
    derives the same noise from the same key, and answers a new strict-subset run with new noise."""
    sql = "SELECT kind, COUNT(*) AS n, SUM(amount) AS total FROM claims GROUP BY kind"
    plan = plan_query(sql, fed.catalog)
    terms = terms_of(fed, sql)
    clamped, source = dp_plan(plan, fed.catalog)
    rows = fed.node_oracle("n0", clamped.node_sql(source))
    signed = fed.sign(keys, sql, "cw_direct")
    state = fed.root / "state" / "n0"

    def request(participants: Sequence[str]) -> pb.PartialRequest:
        return pb.PartialRequest(
            he_format=HE_FORMAT,
            query_id=query_id(signed),
            public_context=keys.public_context(),
            plan_fingerprint=plan.fingerprint,
            envelope=signed,
            participants=list(participants),
        )

    def expected(participants: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        protector = Protector(
            "n0", fed.catalog, AgreementKey.load_or_create(state), load_or_create_secret(state / NOISE_KEY)
        )
        run = protector.run(query_id(signed), participants, 1, {"mode": "dp", **terms.canonical()})
        noise = protector.noise(run, terms, plan.layout.cells)
        units = [c.unit for c in terms.components]
        return protector.mask(run, chunks(encode_noisy_partials(clamped, rows, units, noise))), noise

    def answered(participants: Sequence[str]) -> list[np.ndarray]:
        with fed.node_stubs_as_coordinator() as stubs:
            response = stubs["n0"].ComputePartial(request(participants), timeout=RPC_TIMEOUT_S)
        statement = statements.parse(response.statement)
        assert statement.privacy == {"mode": "dp", **terms.canonical()}
        return [keys.decrypt(b, n) for b, n in zip(response.ciphertexts, plan.layout.chunk_sizes, strict=True)]

    first, first_noise = expected(NODES)
    assert np.count_nonzero(first_noise[:, :3]) > 10  # n0's share is noise in every cell, not zeros
    got = answered(NODES)
    assert all(np.array_equal(a, b) for a, b in zip(got, first, strict=True))
    fed.restart_node("n0")
    fed.wait_for_regions()
    assert all(np.array_equal(a, b) for a, b in zip(expected(NODES)[0], first, strict=True))  # same key, same noise
    subset = ("n0", "n1", "n2")
    again, again_noise = expected(subset)
    assert all(np.array_equal(a, b) for a, b in zip(answered(subset), again, strict=True))
    assert not np.array_equal(again_noise, first_noise)  # a new run: new noise
    with fed.node_stubs_as_coordinator() as stubs, pytest.raises(grpc.RpcError) as info:
        stubs["n0"].ComputePartial(request(subset), timeout=RPC_TIMEOUT_S)
    assert from_rpc_error(info.value).code == "AUTH_REPLAY"


# ------------------------------------------------------------------------------------- 2. threshold


def test_groups_whose_noisy_count_is_under_the_threshold_are_suppressed(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    sql = "SELECT kind, COUNT(*) AS n FROM claims GROUP BY kind ORDER BY kind"
    assert fed.oracle(sql) == [("a", 600), ("c", 600)]
    terms = terms_of(fed, sql, threshold=150)
    sd = terms.components[0].sd
    assert (600 - 150) / sd > 10 and 150 / sd > 6  # far on either side of the threshold: no flaky group
    with fed.client(keys=keys, person="analyst") as c:
        answer = c.query(sql)
        assert answer.privacy["threshold"] == 150 and answer.privacy["noise"] == stated_noise(
            plan_query(sql, fed.catalog), terms
        )
        assert [r[0] for r in answer.rows] == ["a", "c"]  # b, NULL and other are under it
        assert answer.suppressed_groups == 3
        for _, n in answer.rows:
            assert abs(n - 600) < 6 * sd
        # ungrouped: the one row SQL always gives is kept, with NULL aggregates
        alone = c.query("SELECT COUNT(*) AS n, SUM(amount) AS total FROM claims WHERE kind = 'b'")
    assert alone.rows == [[None, None]] and alone.suppressed_groups == 1


# ----------------------------------------------------------------------------------------- 3. budget


@pytest.fixture(scope="module")
def exhausted(fed: harness.Federation, keys: he.ClientKeys) -> tuple[list[QueryAnswer], FederationError]:
    """cw_budget's three answers at epsilon 1 (its whole daily budget) and the refusal of a fourth."""
    with fed.client(keys=keys, person="cw_budget") as c:
        answers = [c.query(COUNT) for _ in range(3)]
        err = harness.refusal(lambda: c.query(COUNT))
    return answers, err


def test_three_answers_spend_the_budget_and_the_fourth_is_refused(
    fed: harness.Federation, keys: he.ClientKeys, exhausted: tuple[list[QueryAnswer], FederationError]
) -> None:
    answers, err = exhausted
    sd = terms_of(fed, COUNT).components[0].sd
    for answer in answers:
        assert answer.privacy["epsilon"] == EPSILON and abs(answer.rows[0][0] - 1200) < 6 * sd
    assert err.code == "POLICY_PRIVACY_BUDGET"
    assert err.rule and err.rule.endswith("roles.caseworker.privacy.budget") and err.hint
    assert "cw_budget" not in str(err)  # the identity is not named
    # the refused question spent nothing: 3 of 3 on every region, not 4
    assert spent(fed, keys, "cw_budget") == dict.fromkeys(NODES, 3.0)
    again = harness.refusal(lambda: fed.client(keys=keys, person="cw_budget").query(COUNT))
    assert again.code == "POLICY_PRIVACY_BUDGET"
    assert spent(fed, keys, "cw_budget") == dict.fromkeys(NODES, 3.0)
    # another person of the same role has a budget of their own
    before = spent(fed, keys, "cw_other")
    assert all(v <= 1.0 for v in before.values())
    with fed.client(keys=keys, person="cw_other") as other:
        assert other.query(COUNT).privacy["mode"] == "dp"
    assert spent(fed, keys, "cw_other") == {n: before[n] + 1.0 for n in NODES}


def test_the_budget_refusal_names_the_region_and_the_rule_once(
    exhausted: tuple[list[QueryAnswer], FederationError],
) -> None:
    _, err = exhausted
    assert err.rule in {f"{n}: roles.caseworker.privacy.budget" for n in NODES}


def test_the_spent_budget_survives_a_restart_of_every_region(
    fed: harness.Federation, keys: he.ClientKeys, exhausted: tuple[list[QueryAnswer], FederationError]
) -> None:
    for node in NODES:
        fed.restart_node(node)
    fed.wait_for_regions()
    assert spent(fed, keys, "cw_budget") == dict.fromkeys(NODES, 3.0)
    with fed.client(keys=keys, person="cw_budget") as c:
        assert harness.refusal(lambda: c.query(COUNT)).code == "POLICY_PRIVACY_BUDGET"
    with fed.client(keys=keys, person="cw_other") as other:  # still served, from what is left of their own
        before = spent(fed, keys, "cw_other")
        assert other.query(COUNT).rows
    assert spent(fed, keys, "cw_other") == {n: before[n] + 1.0 for n in NODES}


def test_a_dp_answer_leaves_a_region_that_is_down_out_and_charges_the_re_run(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    """A DP answer may be summed without a failed region (each run carries fresh noise): the survivors are asked
    again, and each run is a release charged to the asker, so the survivors charge twice and n3 nothing."""
    survivors = NODES[:3]
    sql = "SELECT SUM(amount) AS total FROM claims"
    fed.stop_node("n3")
    try:
        with fed.client(keys=keys, person="cw_rerun") as c:
            answer = c.query(sql)
    finally:
        fed.restart_node("n3")
        fed.wait_for_regions()
    assert answer.answered == list(survivors) and [m["node_id"] for m in answer.missing] == ["n3"]
    assert answer.privacy["mode"] == "dp" and answer.statements_verified == 3
    ((expected,),) = fed.clamped_oracle(sql, survivors)
    sd = terms_of(fed, sql).components[2].sd
    assert abs(answer.rows[0][0] - expected) < 6 * sd
    assert spent(fed, keys, "cw_rerun") == {"n0": 2.0, "n1": 2.0, "n2": 2.0, "n3": 0.0}


# ---------------------------------------------------------------------------------------- 4. explain


def test_explain_shows_mode_epsilon_and_the_budget_of_every_region(
    fed: harness.Federation, keys: he.ClientKeys, tmp_path: Path
) -> None:
    sql = WIDE
    terms = terms_of(fed, sql)
    renews = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    with fed.client(keys=keys, person="cw_explain") as c:
        _, before = c.explain(sql)
        c.query(sql)
        _, after = c.explain(sql)
    for reply, used in ((before, 0.0), (after, 1.0)):
        assert sorted(v.node_id for v in reply.verdicts) == list(NODES)
        for v in reply.verdicts:
            p = v.privacy
            assert v.accepted and p.mode == "dp" and p.rule == f"{v.node_id}: roles.caseworker.privacy"
            assert (p.epsilon, p.delta, p.threshold) == (EPSILON, DELTA, 0)
            assert list(p.noise_sd) == [c.sd for c in terms.components]
            assert (p.budget_epsilon, p.budget_spent, p.budget_period) == (BUDGET, used, "day")
            assert p.budget_renews == renews
    # the command line shows the same, per region (JSON) and as epsilon left (text)
    doc = yaml.safe_load(fed.profile_path.read_text())
    doc["tls"]["cert"] = str(fed.pki_dir / "people" / "cw_explain.pem")
    doc["tls"]["key"] = str(fed.pki_dir / "people" / "cw_explain.key")
    profile = tmp_path / "cw_explain.yaml"
    profile.write_text(yaml.safe_dump(doc))
    parse_model(profile, doc, ClientProfile)
    base = [sys.executable, "-m", "hpf.cli", "query", "--profile", str(profile), "--explain"]
    shown = subprocess.run([*base, "--format", "json", sql], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    regions = json.loads(shown.stdout)["regions"]
    assert [(r["node_id"], r["privacy"]["mode"], r["privacy"]["epsilon"]) for r in regions] == [
        (n, "dp", EPSILON) for n in NODES
    ]
    assert all(
        r["privacy"]["budget"] == {"epsilon": BUDGET, "spent": 1.0, "period": "day", "renews": renews} for r in regions
    )
    text = subprocess.run([*base, sql], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "DP: epsilon 1 per answer, 2 of 3 left this day" in text.stdout


# ------------------------------------------------------------------------------------ 5. unbounded


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT SUM(score) FROM claims",  # a column without bounds
        "SELECT kind, AVG(amount + score) FROM claims GROUP BY kind",  # bounded with unbounded
        "SELECT COUNT(*) FROM notes",  # a table without a contribution bound
    ],
)
def test_an_unbounded_dp_question_is_refused_and_spends_nothing(
    fed: harness.Federation, keys: he.ClientKeys, sql: str
) -> None:
    before = spent(fed, keys, "cw_unbounded")
    with fed.client(keys=keys, person="cw_unbounded") as c:
        err = harness.refusal(lambda: c.query(sql))
        assert err.code == "DP_UNBOUNDED" and err.hint
        _, reply = c.explain(sql)  # explain refuses it too, per region
    assert [(v.accepted, v.code) for v in reply.verdicts] == [(False, "DP_UNBOUNDED")] * 4
    assert spent(fed, keys, "cw_unbounded") == before


def test_a_bounded_question_after_unbounded_ones_is_answered(fed: harness.Federation, keys: he.ClientKeys) -> None:
    with fed.client(keys=keys, person="cw_unbounded") as c:
        assert harness.refusal(lambda: c.query("SELECT SUM(score) FROM claims")).code == "DP_UNBOUNDED"
        answer = c.query("SELECT SUM(amount) AS total FROM claims")
    sd = terms_of(fed, "SELECT SUM(amount) AS total FROM claims").components[2].sd
    assert abs(answer.rows[0][0] - fed.oracle("SELECT SUM(amount) FROM claims")[0][0]) < 6 * sd


# ------------------------------------------------------------------- a region's refusal is the question's


def test_one_region_refusing_an_unbounded_dp_question_fails_the_question(tmp_path: Path, keys: he.ClientKeys) -> None:
    three = {n: NODE_ROWS[n] for n in NODES[:3]}
    policies = {"n0": DP_POLICY, "n1": harness.OPEN_POLICY, "n2": harness.OPEN_POLICY}  # n0 alone answers with DP
    with harness.federation(tmp_path, TABLES, three, policy=policies) as f, f.client(keys=keys) as c:
        err = harness.refusal(lambda: c.query("SELECT SUM(score) FROM claims"))
    assert err.code == "DP_UNBOUNDED"


def test_a_coordinator_spends_no_more_runs_than_the_asker_signed(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coordinator that re-runs a DP question behind the asker's back (each time over one region fewer, as a
    re-run after a failure looks) charges at most the runs the asker signed: every region refuses a run past the
    bound, and the answer states that bound."""
    for person, bound in (("cw_silent1", 1), ("cw_silent2", 2)):
        with lie.rerunning(monkeypatch, extra_runs=2) as refused, fed.client(keys=keys, person=person) as c:
            c.profile.max_runs = bound
            answer = c.query(COUNT)
        assert answer.privacy["mode"] == "dp" and answer.privacy["runs"] == 1 and answer.max_runs == bound
        charged = spent(fed, keys, person)
        assert all(charged[n] <= bound * EPSILON for n in NODES), charged
        # the first silent re-run (without n3) is within a bound of 2 and charged there; beyond it, refused
        assert charged == {n: (2.0 if bound == 2 and n != "n3" else 1.0) * EPSILON for n in NODES}, charged
        assert refused == ["AUTH_REPLAY"] * (3 - bound), refused
        note = privacy_note_of(answer)
        assert (f"at most {bound} runs" in note) == (bound > 1), note


def privacy_note_of(answer: Any) -> str:
    from hpf.cli.output import privacy_note

    line = privacy_note(answer)
    assert line is not None
    return line
