"""Who may ask from where, through a real federation: a region that admits lookups (or an operator's aggregates)
only from its own province refuses askers from elsewhere with POLICY_ASKER_REGION, and the question fails as a
whole: it is never answered by the regions that would have answered, without the one that refused.

Four regions of the demo table: nanjing, suzhou and wuxi in Jiangsu (32), hangzhou in Zhejiang (33). Only
suzhou restricts (``askers:`` below); the others run the default policy, so every refusal here is suzhou's
alone, and an answer "without suzhou" is what a silently partial federation would have given. The oracle is
DuckDB over every region's files, suzhou's included.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import harness
import pytest

from hpf.demo.synth import generate_node
from hpf.federation.crypto import he
from hpf.federation.errors import FederationError
from hpf.federation.hpf_schema import hpf_tables
from hpf.policies import DEFAULT_POLICY

NODES = ["nanjing", "suzhou", "wuxi", "hangzhou"]
SEED, ROWS = 11, 2_000
PEOPLE = (
    ("caseworker", "caseworker", "wuxi"),  # Jiangsu: admitted by suzhou
    ("zhejiang", "caseworker", "hangzhou"),  # Zhejiang: suzhou refuses its lookups
    ("roving", "caseworker", None),  # no home region: refused by any rule that lists places
    ("bank", "integrator", "hangzhou"),  # integrators: suzhou admits their lookups from anywhere
    ("own-operator", "operator", "suzhou"),
    ("other-operator", "operator", "nanjing"),  # same province, other centre: suzhou refuses its aggregates
)
REVIEW: dict[str, Any] = {"purpose": "loan-review", "consent": "CONSENT-2026-0101"}
COUNT_SQL = "SELECT COUNT(*), SUM(balance_fen) FROM accounts"
SUZHOU_POLICY = """\
version: 1
extends: {default}
description: suzhou admits lookups from Jiangsu only, and operators' aggregates from its own centre only
askers:
  lookup:
    provinces: [same]
roles:
  integrator:
    askers:
      lookup: {{anywhere: true}}
  operator:
    askers:
      query: {{regions: [same]}}
"""


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("askers")
    for node in NODES:
        generate_node(root / "data", node, ROWS, SEED)
    suzhou = root / "suzhou-policy.yaml"
    suzhou.write_text(SUZHOU_POLICY.format(default=DEFAULT_POLICY))
    policies = {n: (suzhou if n == "suzhou" else DEFAULT_POLICY) for n in NODES}
    with harness.federation(
        root, hpf_tables(), {n: {} for n in NODES}, write_data=False, policy=policies, people=PEOPLE
    ) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.fixture(scope="module")
def person(fed: harness.Federation) -> str:
    """Someone with accounts in suzhou and in another region: an answer without suzhou would differ."""
    rows = fed.oracle(
        "SELECT person_id FROM accounts GROUP BY 1 HAVING bool_or(city_code = '320500') "
        "AND COUNT(DISTINCT city_code) >= 2 ORDER BY 1 LIMIT 1"
    )
    if not rows:  # every synthetic federation of this size has some; say so rather than skip
        pytest.fail("the synthetic data hold nobody with accounts in suzhou and elsewhere")
    return str(rows[0][0])


def refusal(call: Callable[[], object], *secrets: str) -> FederationError:
    with pytest.raises(FederationError) as info:
        call()
    err = info.value
    for secret in secrets:  # a refusal never repeats an identifier
        assert secret not in f"{err} {err.message} {err.hint} {err.rule}"
    return err


def entries(fed: harness.Federation, node: str) -> list[dict[str, Any]]:
    path = fed.audit_dir(node) / "entries.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def balance(fed: harness.Federation, pid: str) -> int:
    return int(fed.oracle(f"SELECT SUM(balance_fen) FROM accounts WHERE person_id = '{pid}'")[0][0])


def test_a_lookup_from_the_same_province_is_answered_by_every_region(
    fed: harness.Federation, keys: he.ClientKeys, person: str
) -> None:
    with fed.client(keys=keys, person="caseworker") as client:
        answer = client.lookup([person], **REVIEW)
    assert sorted(answer.answered) == sorted(NODES) and answer.missing == [] and answer.complete
    assert answer.facts[0].balance_fen == balance(fed, person)


def test_a_lookup_from_another_province_fails_whole_never_answered_without_the_refusing_region(
    fed: harness.Federation, keys: he.ClientKeys, person: str
) -> None:
    before = {n: len(entries(fed, n)) for n in NODES}
    with fed.client(keys=keys, person="zhejiang") as client:
        err = refusal(lambda: client.lookup([person], **REVIEW), person)
        assert err.code == "POLICY_ASKER_REGION"
        assert err.rule == "suzhou: askers.lookup"
        assert "province 33 (Zhejiang)" in err.message
        # and again in a batch: one refusing region fails the whole screening, not just its share
        err = refusal(lambda: client.screen([person], **REVIEW), person)
        assert err.code == "POLICY_ASKER_REGION"
        # the same asker's aggregate questions are admitted from anywhere, suzhou answering too (a caseworker's
        # aggregates are differentially private under the default policy: their exactness is tested elsewhere)
        answer = client.query(COUNT_SQL)
        assert sorted(answer.answered) == sorted(NODES) and answer.missing == []
        assert answer.privacy["mode"] == "dp" and len(answer.rows) == 1
    refused = [e for e in entries(fed, "suzhou")[before["suzhou"] :] if e["operation"] == "lookup"]
    assert [(e["decision"], e["code"]) for e in refused] == [("refused", "POLICY_ASKER_REGION")] * 2


def test_an_asker_with_no_home_region_is_refused_a_lookup(
    fed: harness.Federation, keys: he.ClientKeys, person: str
) -> None:
    with fed.client(keys=keys, person="roving") as client:
        err = refusal(lambda: client.lookup([person], **REVIEW), person)
        assert (err.code, err.rule) == ("POLICY_ASKER_REGION", "suzhou: askers.lookup")
        assert "no home region" in err.message
        assert client.query(COUNT_SQL).rows  # aggregates: no rule, admitted


def test_a_role_rule_opens_lookups_to_integrators_from_any_province(
    fed: harness.Federation, keys: he.ClientKeys, person: str
) -> None:
    with fed.client(keys=keys, person="bank") as bank:
        answer = bank.screen([person], tokens=fed.consent_tokens([person]), **REVIEW)
    open_in = fed.oracle(
        f"SELECT COUNT(DISTINCT city_code) FROM loans WHERE person_id = '{person}' AND status IN ('active', 'overdue')"
    )[0][0]
    # what a loan review needs, never a balance
    assert answer.complete and answer.facts[0].loan_cities == open_in and answer.facts[0].balance_fen is None


def test_an_operators_aggregates_only_from_the_regions_own_centre(fed: harness.Federation, keys: he.ClientKeys) -> None:
    sql, purpose = COUNT_SQL, "operations"
    with fed.client(keys=keys, person="other-operator") as client:
        err = refusal(lambda: client.query(sql, purpose=purpose))
        assert (err.code, err.rule) == ("POLICY_ASKER_REGION", "suzhou: roles.operator.askers.query")
        # an explain follows the query's rule: suzhou's signed verdict says so, the others accept
        _, explained = client.explain(sql, purpose=purpose)
        by_node = {v.node_id: v for v in explained.verdicts}
        assert (by_node["suzhou"].accepted, by_node["suzhou"].code) == (False, "POLICY_ASKER_REGION")
        assert all(by_node[n].accepted for n in NODES if n != "suzhou")
    with fed.client(keys=keys, person="own-operator") as client:
        answer = client.query(sql, purpose=purpose)
    assert sorted(answer.answered) == sorted(NODES)
    assert sorted(tuple(r) for r in answer.rows) == sorted(fed.oracle(sql))


def test_the_catalog_places_the_demo_regions(fed: harness.Federation) -> None:
    """The harness catalog gives no codes: the demo table places these node ids (a catalog's code would win)."""
    assert [fed.catalog.region_code(n) for n in NODES] == ["320100", "320500", "320200", "330100"]
