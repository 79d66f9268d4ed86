"""Differencing two aggregates, as an asker within policy would, against the default policy (hpf:default).

The attack: ask "the whole table" and "the whole table except one employer, open date and birth year", three
public columns that together single out one person, and subtract. Against exact answers the difference is that
person's row, whatever the minimum group size (each answer covers hundreds of rows). The default answers exactly
only operators, for an internal-statistics purpose; a caseworker's aggregates are differentially private, so the
difference is noise of the size each answer states, draw after draw, and not the person's figures.

Every node runs the default policy with one change, a test policy written here: the caseworker's monthly budget is
raised from epsilon 30 to 84, so that one identity can draw PAIRS pairs (2 * PAIRS answers at epsilon 1 each) and
the spread of the differences can be measured. Each answer's own terms (epsilon 1, delta 1e-8, the noise) are the
default's; with the default budget the same caseworker is refused after 15 pairs, which bounds what averaging
more pairs could teach.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import statistics
from collections.abc import Iterator
from typing import Any

import harness
import pytest

from hpf.cli.output import privacy_note
from hpf.federation.crypto import he
from hpf.federation.hpf_schema import hpf_tables
from hpf.policies import DEFAULT_POLICY
from hpf.policies.loader import load_policy

NODES = ("shanghai", "hangzhou", "nanjing")  # the default's masked sums take at least 3 regions
PEOPLE = (("caseworker", "caseworker", None), ("operator", "operator", None))
ROWS_PER_NODE = 200
PAIRS = 40
BUDGET = 84  # epsilon per month per identity at each region: 2 * PAIRS answers at epsilon 1, and a little room

# the person the attacker isolates: in the "east" region, through three public columns of accounts
EMPLOYER, OPENED, BORN = "E-0042", dt.date(2015, 3, 17), 1984
BALANCE_FEN = 12_345_678  # 123,456.78 yuan
WHOLE = "SELECT COUNT(*) AS n, SUM(balance_fen) AS balance_fen FROM accounts"
ALL_BUT_ONE = (
    f"{WHOLE} WHERE employer_id <> '{EMPLOYER}' OR open_date <> DATE '{OPENED.isoformat()}' OR birth_year <> {BORN}"
)
ONE = (
    f"SELECT COUNT(*), SUM(balance_fen) FROM accounts WHERE employer_id = '{EMPLOYER}' "
    f"AND open_date = DATE '{OPENED.isoformat()}' AND birth_year = {BORN}"
)

LARGER_BUDGET = f"""\
# A TEST policy: the default with the caseworker's monthly budget raised from epsilon 30 to {BUDGET}, so that one
# caseworker can draw {PAIRS} pairs of answers and the test can measure the noise of their differences.
version: 1
extends: {DEFAULT_POLICY}
roles:
  caseworker:
    privacy:
      budget: {{epsilon: {BUDGET}, delta: 1.0e-6, period: month}}
"""


def _accounts(node: int) -> list[tuple[Any, ...]]:
    """ROWS_PER_NODE accounts, one per person (so DP's one row per person per region keeps every row), balances
    inside the catalog's bounds; employers E-0000..E-0019, never the target's (she is added to the last region)."""
    rng = random.Random(node)
    city = ("310000", "330100", "320100")[node]
    rows: list[tuple[Any, ...]] = [
        (
            f"{city}19800101{node}{i:03d}",
            city,
            f"E-{rng.randrange(20):04d}",
            dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(9000)),
            rng.choice(("active", "sealed", "closed")),
            rng.randrange(0, 50_000_000),
            rng.randrange(0, 1_000_000),
            rng.choice("FM"),
            rng.randrange(1950, 2005),
        )
        for i in range(ROWS_PER_NODE)
    ]
    if node == len(NODES) - 1:
        rows.append((f"{city}19840101999X", city, EMPLOYER, OPENED, "active", BALANCE_FEN, 300_000, "F", BORN))
    return rows


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("differencing")
    policy = root / "default-larger-budget.yaml"
    policy.write_text(LARGER_BUDGET)
    node_rows = {n: {"accounts": _accounts(i)} for i, n in enumerate(NODES)}
    with harness.federation(root, hpf_tables(), node_rows, policy=policy, people=PEOPLE) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


def test_the_three_public_columns_single_out_one_person(fed: harness.Federation) -> None:
    assert fed.oracle(ONE) == [(1, BALANCE_FEN)]
    whole, rest = fed.oracle(WHOLE)[0], fed.oracle(ALL_BUT_ONE)[0]
    assert (whole[0] - rest[0], whole[1] - rest[1]) == (1, BALANCE_FEN)  # what exact answers give away


def test_an_operator_answer_is_exact_so_it_can_be_differenced(fed: harness.Federation, keys: he.ClientKeys) -> None:
    """The risk the default accepts for its one exact role (docs/privacy.md): k = 3 withholds nothing here."""
    with fed.client(keys=keys, person="operator") as client:
        whole = client.query(WHOLE, purpose="statistics")
        rest = client.query(ALL_BUT_ONE, purpose="statistics")
    assert whole.privacy == {"mode": "exact"} and rest.privacy == {"mode": "exact"}
    assert [tuple(r) for r in whole.rows] == fed.oracle(WHOLE)
    assert [tuple(r) for r in rest.rows] == fed.oracle(ALL_BUT_ONE)
    assert (whole.rows[0][0] - rest.rows[0][0], whole.rows[0][1] - rest.rows[0][1]) == (1, BALANCE_FEN)


def test_an_operator_without_an_internal_statistics_purpose_is_refused(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    with fed.client(keys=keys, person="operator") as client:
        assert harness.refusal(lambda: client.query(WHOLE)).code == "POLICY_PURPOSE_REQUIRED"
        err = harness.refusal(lambda: client.query(WHOLE, purpose="loan-review"))
    assert err.code == "POLICY_PURPOSE_NOT_ALLOWED"
    assert (err.rule or "").endswith(": roles.operator.purposes")


def test_a_caseworkers_differences_are_noise_of_the_stated_size(fed: harness.Federation, keys: he.ClientKeys) -> None:
    counts: list[int] = []
    sums: list[int] = []
    count_sd = sum_sd = 0.0
    with fed.client(keys=keys) as client:  # the caseworker
        for _ in range(PAIRS):
            whole, rest = client.query(WHOLE), client.query(ALL_BUT_ONE)
            for answer in (whole, rest):
                assert answer.privacy["mode"] == "dp" and answer.privacy["epsilon"] == 1.0
                assert not answer.missing and len(answer.rows) == 1  # every region, nothing suppressed
                note = privacy_note(answer)  # what the CLI prints under the answer
                assert note is not None and note.startswith("differentially private: epsilon 1 (delta 1e-08)")
            stated = {n["component"]: float(n["sd"]) for n in whole.privacy["noise"]}
            assert stated == {n["component"]: float(n["sd"]) for n in rest.privacy["noise"]}
            count_sd, sum_sd = stated["COUNT(*)"], stated["SUM(balance_fen)"]
            counts.append(whole.rows[0][0] - rest.rows[0][0])
            sums.append(whole.rows[0][1] - rest.rows[0][1])
    # each difference is the person's figure plus the noise of two answers: sd sqrt(2) times each one's
    expected_count_sd, expected_sum_sd = math.sqrt(2) * count_sd, math.sqrt(2) * sum_sd
    observed_count_sd, observed_sum_sd = statistics.stdev(counts), statistics.stdev(sums)
    print(
        f"\n{PAIRS} pairs; COUNT(*): stated sd {count_sd:.2f} per answer, difference sd expected "
        f"{expected_count_sd:.2f}, observed {observed_count_sd:.2f}; SUM(balance_fen): stated sd {sum_sd:,.0f} fen "
        f"per answer, difference sd expected {expected_sum_sd:,.0f}, observed {observed_sum_sd:,.0f} fen; the "
        f"person's balance {BALANCE_FEN:,} fen; mean of the differences {statistics.fmean(sums):,.0f} fen"
    )
    # the spread is the stated noise's: with 40 draws the sample sd lies within 0.55 to 1.6 of the true one but
    # for odds far below one in a thousand
    assert 0.55 < observed_count_sd / expected_count_sd < 1.6, (counts, count_sd)
    assert 0.55 < observed_sum_sd / expected_sum_sd < 1.6, (sums, sum_sd)
    # the noise dwarfs the person's balance: one difference tells nothing of it, and it is not the difference
    assert expected_sum_sd > 10 * BALANCE_FEN
    assert sums.count(BALANCE_FEN) <= 1 and counts.count(1) < PAIRS // 2, (counts, sums)
    # averaging every pair an inflated budget allows still leaves noise above the balance: its sd over PAIRS
    # pairs is expected_sum_sd / sqrt(PAIRS)
    assert expected_sum_sd / math.sqrt(PAIRS) > BALANCE_FEN
    assert abs(statistics.fmean(sums) - BALANCE_FEN) < 5 * expected_sum_sd / math.sqrt(PAIRS)  # unbiased noise


def test_the_test_policy_changes_only_the_caseworkers_budget(fed: harness.Federation) -> None:
    """Each answer above carries the default's terms; only how many of them one caseworker may draw is raised."""
    default = load_policy(DEFAULT_POLICY).roles["caseworker"].privacy
    larger = load_policy(fed.root / "default-larger-budget.yaml").roles["caseworker"].privacy
    assert default.mode == "dp" and default.budget is not None and larger.budget is not None
    assert (default.budget.epsilon, default.budget.period) == (30, "month")  # 15 pairs a month at most
    assert larger.model_copy(update={"budget": default.budget}) == default
    assert larger.budget.epsilon == BUDGET
