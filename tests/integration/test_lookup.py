"""Person lookups on a running federation of synthetic housing provident fund centres.

The oracle for every figure is DuckDB over the union of the nodes' Parquet files, counted per city with
``GROUP BY city_code`` and summed here, so it does not share the node's facts query. Covered: single lookups
and batch screening against the oracle (and the planted duplicate loans), per-city answers, leaving the
asker's home region out, every refusal with its stable code (after which the same servers answer a valid
lookup), what a compromised coordinator can try with sealed identifiers and participant sets (each region's
answer alone is masked; a re-run without a region is answered only where the asker may ask exactly the regions
left), a region that is down (the survivors asked again: their exact sum, the region named missing), rate limits
counted per person and facts that follow the data files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import grpc
import harness
import lying_coordinator as lie
import numpy as np
import numpy.typing as npt
import pytest
import yaml
from streamed import Stream, collect, stream

import hpf.client.session
from hpf.cli.errors import exit_code
from hpf.client.answers import LookupAnswer
from hpf.client.federation_client import FederationClient
from hpf.client.profile import ClientProfile
from hpf.coordinator.outcome import FederatedAnswer
from hpf.demo.synth import generate_node, planted_duplicate_loans
from hpf.federation.config_files import parse_model
from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.crypto.lookup_codec import FACT_COLUMNS, PersonFacts, decode_facts, encode_facts, layout_fingerprint
from hpf.federation.crypto.sealing import AgreementKey, OneTimeKey, load_public_b64
from hpf.federation.errors import FederationError, UnavailableError, from_rpc_error
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.hpf_schema import hpf_tables
from hpf.federation.person_id import person_id_array
from hpf.federation.planner import plan_query
from hpf.federation.regions import BY_NODE_ID
from hpf.federation.trust import statements
from hpf.federation.trust.channels import secure_channel
from hpf.federation.trust.envelope import Signer, query_id
from hpf.federation.trust.tls import TlsConfig
from hpf.policies import DEFAULT_POLICY

NODES = ["shanghai", "hangzhou", "nanjing", "suzhou"]
SEED, ROWS = 7, 20_000
PEOPLE = (
    ("caseworker", "caseworker", "shanghai"),
    ("checker", "caseworker", "hangzhou"),
    ("roving", "caseworker", None),
    ("bank", "integrator", "suzhou"),
    ("analyst", "analyst", None),
)
REVIEW: dict[str, Any] = {"purpose": "loan-review", "consent": "CONSENT-2026-0042"}
TRANSFER: dict[str, Any] = {"purpose": "account-transfer", "consent": "CONSENT-2026-0043"}
REVIEW_SIGN: dict[str, Any] = {"purpose": REVIEW["purpose"], "consent_ref": REVIEW["consent"]}
RPC_TIMEOUT_S = 20.0

Run = Callable[[str], list[tuple[Any, ...]]]


# ------------------------------------------------------------------------------------------ the oracle


def oracle_facts(run: Run, ids: Sequence[str]) -> dict[str, PersonFacts]:
    """Each person's facts over the files ``run`` reads, counted per city, then summed over cities."""
    listed = ", ".join(f"'{pid}'" for pid in sorted(set(ids)))  # identifiers are digits and X only
    where = f"person_id IN ({listed})"
    sums: dict[str, dict[str, int]] = {pid: dict.fromkeys(FACT_COLUMNS, 0) for pid in ids}
    for pid, _city, active, sealed, balance in run(
        "SELECT person_id, city_code, bool_or(status = 'active'), bool_or(status = 'sealed'), SUM(balance_fen) "
        f"FROM accounts WHERE {where} GROUP BY person_id, city_code"
    ):
        f = sums[pid]
        f["cities"] += 1
        f["cities_active"] += int(active)
        f["cities_sealed"] += int(sealed)
        f["balance_fen"] += int(balance)
    for pid, _city, months, amount in run(
        f"SELECT person_id, city_code, COUNT(*), SUM(amount_fen) FROM deposits WHERE {where} "
        "GROUP BY person_id, city_code"
    ):
        sums[pid]["contribution_months"] += int(months)
        sums[pid]["contribution_fen"] += int(amount)
    for pid, _city, active, overdue, outstanding in run(
        "SELECT person_id, city_code, COUNT(*) FILTER (WHERE status = 'active'), "
        "COUNT(*) FILTER (WHERE status = 'overdue'), "
        "COALESCE(SUM(outstanding_fen) FILTER (WHERE status IN ('active', 'overdue')), 0) "
        f"FROM loans WHERE {where} GROUP BY person_id, city_code"
    ):
        f = sums[pid]
        f["active_loans"] += int(active)
        f["overdue_loans"] += int(overdue)
        f["outstanding_fen"] += int(outstanding)
        f["loan_cities"] += int(active + overdue > 0)
    return {
        pid: PersonFacts(**{k: v for k, v in f.items() if k != "failed"}, failed_regions=0) for pid, f in sums.items()
    }


def over(fed: harness.Federation, nodes: Sequence[str]) -> Run:
    """The oracle over ``nodes``' files only."""
    files = {t: [p for p in paths if p.parent.name in nodes] for t, paths in fed.data_files.items()}
    return dataclasses.replace(fed, data_files=files).oracle


def absent_ids(n: int, offset: int = 0) -> list[str]:
    """Valid identifiers (Beijing region code, so in no node of the Yangtze River Delta)."""
    seq = range(offset, offset + n)
    return person_id_array([110101] * n, [19700101 + 100 * (i % 12) for i in seq], [i % 1000 for i in seq]).tolist()


@dataclasses.dataclass(frozen=True)
class Population:
    everyone: list[str]  # in any table of any node
    multi_city: list[str]  # accounts in two or more cities
    single_city: list[str]
    planted: list[str]
    with_overdue: list[str]
    closed_only: list[str]
    with_sealed: list[str]
    x_check: list[str]
    absent: list[str]


def people_where(fed: harness.Federation, sql: str) -> list[str]:
    return sorted(r[0] for r in fed.oracle(sql))


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("lookup")
    for node in NODES:
        generate_node(root / "data", node, ROWS, SEED)
    with harness.federation(
        root, hpf_tables(), {n: {} for n in NODES}, write_data=False, policy=DEFAULT_POLICY, people=PEOPLE
    ) as f:
        # the oracle counts per city; the nodes count per region: they agree because a node holds its own city
        for node in NODES:
            codes = f.node_oracle(
                node,
                "SELECT city_code FROM accounts UNION SELECT city_code FROM deposits UNION SELECT city_code FROM loans",
            )
            assert codes == [(BY_NODE_ID[node].code,)]
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.fixture(scope="module")
def population(fed: harness.Federation) -> Population:
    everyone = people_where(
        fed,
        "SELECT person_id FROM accounts UNION SELECT person_id FROM deposits UNION SELECT person_id FROM loans "
        "UNION SELECT person_id FROM withdrawals",
    )
    multi = people_where(fed, "SELECT person_id FROM accounts GROUP BY 1 HAVING COUNT(DISTINCT city_code) >= 2")
    absent = absent_ids(8)
    assert not set(absent) & set(everyone)
    return Population(
        everyone=everyone,
        multi_city=multi,
        single_city=sorted(set(everyone) - set(multi)),
        planted=[p.person_id for p in planted_duplicate_loans(SEED, ROWS, NODES)],
        with_overdue=people_where(fed, "SELECT DISTINCT person_id FROM loans WHERE status = 'overdue'"),
        closed_only=people_where(fed, "SELECT person_id FROM accounts GROUP BY 1 HAVING bool_and(status = 'closed')"),
        with_sealed=people_where(fed, "SELECT DISTINCT person_id FROM accounts WHERE status = 'sealed'"),
        x_check=[p for p in everyone if p.endswith("X")],
        absent=absent,
    )


@pytest.fixture(scope="module")
def node_stubs(fed: harness.Federation) -> Iterator[dict[str, pb_grpc.NodeStub]]:
    """Stubs holding the coordinator's certificate: what a compromised coordinator can send a node."""
    with fed.node_stubs_as_coordinator() as stubs:
        yield stubs


@pytest.fixture(scope="module")
def coordinator_stub(fed: harness.Federation) -> Iterator[pb_grpc.CoordinatorStub]:
    """The coordinator as the caseworker's own gRPC client reaches it (for requests the library never sends)."""
    pki = fed.pki_dir
    tls = TlsConfig(ca=pki / "ca.pem", cert=pki / "people" / "caseworker.pem", key=pki / "people" / "caseworker.key")
    with secure_channel(f"127.0.0.1:{fed.coordinator.port}", tls) as channel:
        yield pb_grpc.CoordinatorStub(channel)


# ------------------------------------------------------------------------------------------ helpers


def audit_sizes(fed: harness.Federation) -> dict[str, int]:
    sizes = {}
    for node in fed.node_ids:
        path = fed.audit_dir(node) / "entries.jsonl"
        sizes[node] = len(path.read_text().splitlines()) if path.exists() else 0
    return sizes


def last_entry(fed: harness.Federation, node: str) -> dict[str, Any]:
    return dict(json.loads((fed.audit_dir(node) / "entries.jsonl").read_text().splitlines()[-1]))


def assert_complete(answer: LookupAnswer, regions: Sequence[str] = NODES) -> None:
    assert answer.regions == list(regions)
    assert sorted(answer.answered) == sorted(regions) and answer.missing == [] and answer.complete
    assert answer.receipts_verified == len(regions)  # each region's receipt, checked with its catalog audit key


def assert_serves(fed: harness.Federation, client: FederationClient, pid: str) -> None:
    """The federation still answers a valid lookup, exactly."""
    answer = client.lookup([pid], **REVIEW)
    assert_complete(answer)
    assert answer.facts == [oracle_facts(fed.oracle, [pid])[pid]]


def refusal(call: Callable[[], object], *secrets: str) -> FederationError:
    with pytest.raises(FederationError) as info:
        call()
    err = info.value
    for secret in secrets:  # a refusal never repeats an identifier
        for text in (str(err), err.message, err.hint or "", err.rule or ""):
            assert secret not in text and secret[:17] not in text
    return err


class CountingStub:
    """A coordinator stub that records which methods the client calls."""

    def __init__(self, stub: pb_grpc.CoordinatorStub) -> None:
        self._stub = stub
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return call


def counted_client(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch, person: str
) -> tuple[FederationClient, CountingStub]:
    stubs: list[CountingStub] = []
    real = pb_grpc.CoordinatorStub

    def make(channel: grpc.Channel) -> CountingStub:
        stubs.append(CountingStub(real(channel)))
        return stubs[-1]

    with monkeypatch.context() as m:
        m.setattr(hpf.client.session.pb_grpc, "CoordinatorStub", make)
        client = fed.client(keys=keys, person=person)
    assert len(stubs) == 1
    return client, stubs[0]


@dataclasses.dataclass(frozen=True)
class SealedLookup:
    signed: pb.SignedEnvelope
    qid: str
    blobs: dict[str, bytes]
    regions: list[str]  # the regions the signed lookup asks


def signer(fed: harness.Federation, person: str = "caseworker") -> Signer:
    return Signer.from_files(fed.pki_dir / "people" / f"{person}.pem", fed.pki_dir / "people" / f"{person}.key")


def seal_lookup(
    fed: harness.Federation,
    keys: he.ClientKeys,
    ids: Sequence[str],
    regions: Sequence[str] = NODES,
    *,
    breakdown: bool = False,
    person: str = "caseworker",
    purpose: str = REVIEW["purpose"],
    sealed_instead: Mapping[str, Sequence[str]] | None = None,
) -> SealedLookup:
    """A lookup exactly as the client library signs and seals it (``sealed_instead``: other people sealed to
    some regions than the ``ids`` signed for, as a cheating client would)."""
    one_time = OneTimeKey()
    spec = pb.LookupSpec(
        subjects=len(ids),
        seal_public_key=one_time.public,
        regions=regions,
        breakdown=breakdown,
        subjects_commitment=one_time.commitment(ids),
    )
    signed = signer(fed, person).sign(
        sql="",
        context_digest=he.context_digest(keys.public_context()),
        federation=fed.catalog.federation,
        operation="lookup",
        purpose=purpose,
        consent_ref=REVIEW["consent"],
        lookup=spec,
    )
    qid = query_id(signed)
    region_keys = {n.id: load_public_b64(n.agreement_key or "") for n in fed.catalog.nodes}
    stranger = OneTimeKey().public  # for a region the catalog does not have
    sealed = {**{r: ids for r in regions}, **(sealed_instead or {})}
    return SealedLookup(
        signed,
        qid,
        {r: one_time.seal(sealed[r], region_keys.get(r, stranger), qid, r) for r in regions},
        list(regions),
    )


def node_request(
    keys: he.ClientKeys,
    lookup: SealedLookup,
    blob: bytes,
    qid: str | None = None,
    participants: Sequence[str] | None = None,
) -> pb.NodeLookupRequest:
    """What the coordinator sends a region for one run; by default a run over every region the lookup asks."""
    return pb.NodeLookupRequest(
        he_format=HE_FORMAT,
        query_id=lookup.qid if qid is None else qid,
        public_context=keys.public_context(),
        envelope=lookup.signed,
        sealed=blob,
        participants=lookup.regions if participants is None else participants,
    )


def run_lookup(
    keys: he.ClientKeys,
    node_stubs: Mapping[str, pb_grpc.NodeStub],
    lookup: SealedLookup,
    participants: Sequence[str],
) -> list[pb.PartialResponse]:
    """One run of ``lookup`` as a coordinator sends it: every participant asked with the set, in order."""
    return [
        node_stubs[n].Lookup(
            node_request(keys, lookup, lookup.blobs[n], participants=participants), timeout=RPC_TIMEOUT_S
        )
        for n in participants
    ]


def masked_sum(vectors: Sequence[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    """Decrypted slot vectors added as the coordinator's ciphertext sum adds them: modulo the plain modulus,
    centred (each region's masks cancel there, and only there)."""
    total = np.remainder(np.sum(np.stack(vectors), axis=0), he.PLAIN_MODULUS)
    total[total > he.HALF_PLAIN] -= he.PLAIN_MODULUS
    return total


def decrypted_facts(keys: he.ClientKeys, responses: Sequence[pb.PartialResponse]) -> PersonFacts:
    """The facts about one person in the sum of ``responses`` (one run's answers, one person, no breakdown)."""
    slots = masked_sum([keys.decrypt(r.ciphertexts[0], 9) for r in responses])
    return decode_facts(slots, subjects=1, cells=1)[0][0]


def own_slots(facts: PersonFacts) -> npt.NDArray[np.int64]:
    """The slots one region would send for ``facts`` (its own figures, one person) without its masks."""
    row = [0 if name == "failed" else (getattr(facts, name) or 0) for name in FACT_COLUMNS]
    return encode_facts(np.array([row], dtype=np.int64), cells=1, cell=0)


def run_statements(responses: Sequence[pb.PartialResponse]) -> list[statements.Statement]:
    return [statements.parse(r.statement) for r in responses]


def rpc_code(call: Callable[[], object]) -> str:
    with pytest.raises(grpc.RpcError) as info:
        out = call()
        if isinstance(out, grpc.Call):  # a streamed answer fails as it is read
            list(out)  # type: ignore[call-overload]
    return from_rpc_error(info.value).code


# ------------------------------------------------------------------------------------------ answers


def test_single_lookups_equal_the_oracle(fed: harness.Federation, keys: he.ClientKeys, population: Population) -> None:
    rng = random.Random(2026)
    planted = set(population.planted)
    sample = list(
        dict.fromkeys(
            [
                *population.planted,
                *rng.sample(sorted(set(population.multi_city) - planted), 12),
                *rng.sample(population.single_city, 12),
                *rng.sample(population.with_overdue, 3),
                *rng.sample(population.closed_only, 3),
                *rng.sample(population.with_sealed, 3),
                *rng.sample(population.x_check, 2),
                *population.absent[:5],
            ]
        )
    )
    expected = oracle_facts(fed.oracle, sample)
    # the sample is what the issue asks for: people in one city, in several, planted duplicates, nobody
    assert len(sample) >= 40 and len(planted) >= 5
    assert sum(expected[p].cities >= 2 for p in sample) >= 15
    assert sum(expected[p].overdue_loans or 0 for p in sample) >= 3
    nobody = PersonFacts(**dict.fromkeys(PersonFacts.__dataclass_fields__, 0))
    assert all(expected[p] == nobody for p in population.absent[:5])
    with fed.client(keys=keys, person="checker") as client:
        answers = {pid: client.lookup([pid], **REVIEW) for pid in sample}
    for pid, answer in answers.items():
        assert_complete(answer)
        assert answer.facts == [expected[pid]], pid
        assert answer.by_city is None and len(answer.query_ids) == 1
    assert {pid for pid, a in answers.items() if a.facts[0].duplicate_loans} == planted
    assert len({a.query_ids[0] for a in answers.values()}) == len(sample)


def test_identifiers_are_normalised_before_they_are_sealed(
    fed: harness.Federation, keys: he.ClientKeys, population: Population
) -> None:
    pid = population.x_check[0]
    expected = oracle_facts(fed.oracle, [pid])[pid]
    assert expected.cities >= 1
    with fed.client(keys=keys, person="checker") as client:
        answer = client.lookup([f"  {pid[:17]}x "], **REVIEW)
    assert_complete(answer)
    assert answer.facts == [expected]


def test_screening_finds_exactly_the_planted_duplicate_loans(
    fed: harness.Federation, keys: he.ClientKeys, population: Population
) -> None:
    ids = [*population.everyone, *population.absent]
    random.Random(7).shuffle(ids)  # batches mix people of every kind
    batch = 500
    done: list[int] = []
    with fed.client(keys=keys, person="bank") as bank:
        answer = bank.screen(
            ids, batch=batch, parallel=2, progress=done.append, tokens=fed.consent_tokens(ids), **REVIEW
        )
        planted = [population.planted[0], population.multi_city[0], population.absent[0]]
        singles = {pid: bank.lookup([pid], tokens=fed.consent_tokens([pid]), **REVIEW).facts[0] for pid in planted}
    batches = math.ceil(len(ids) / batch)
    assert batches >= 4
    assert done[-1] == len(ids) and len(done) == batches and done == sorted(set(done))
    assert len(answer.query_ids) == len(set(answer.query_ids)) == batches
    assert answer.answered == sorted(NODES) and answer.missing == []
    assert answer.receipts_verified == batches * len(NODES)
    assert len(answer.facts) == len(ids)
    found = {pid for pid, f in zip(ids, answer.facts, strict=True) if f.duplicate_loans}
    open_in_two = people_where(
        fed,
        "SELECT person_id FROM loans WHERE status IN ('active', 'overdue') GROUP BY 1 "
        "HAVING COUNT(DISTINCT city_code) >= 2",
    )
    assert len(population.planted) >= 5
    assert found == set(population.planted) == set(open_in_two)
    # a bank screening for a loan review asks, by default, for what the decision needs: never a balance
    assert answer.facts_asked == ("duplicate_loans", "loan_cities")
    expected = {pid: f.only(answer.facts_asked) for pid, f in oracle_facts(fed.oracle, ids).items()}
    wrong = [pid for pid, f in zip(ids, answer.facts, strict=True) if f != expected[pid]]
    assert wrong == []
    assert all(f.balance_fen is None and f.contribution_fen is None and f.cities is None for f in answer.facts)
    by_id = dict(zip(ids, answer.facts, strict=True))
    for pid, facts in singles.items():
        assert by_id[pid] == facts == expected[pid]


def test_a_bank_decrypts_no_balance_slot_by_default(
    fed: harness.Federation, keys: he.ClientKeys, population: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a bank decrypts holds two slots per person (the flags and the status), laid out for the facts a loan
    review needs; every region signed that layout. Asking for a balance is refused by every region's policy."""
    from hpf.federation.crypto import lookup_codec

    decrypted: list[tuple[int, tuple[str, ...]]] = []
    real = lookup_codec.decode_facts

    def spy(slots: Any, **kw: Any) -> Any:
        decrypted.append((len(slots), tuple(kw["facts"])))
        return real(slots, **kw)

    monkeypatch.setattr(lookup_codec, "decode_facts", spy)
    ids = population.multi_city[:3]
    with fed.client(keys=keys, person="bank") as bank:
        tokens = fed.consent_tokens(ids)
        answer = bank.lookup(ids, tokens=tokens, **REVIEW)
        assert decrypted == [(3 * 2, ("duplicate_loans", "loan_cities"))]
        assert all(f.balance_fen is None for f in answer.facts)
        with pytest.raises(FederationError) as err:
            bank.lookup(ids, facts=["duplicate_loans", "balance"], tokens=tokens, **REVIEW)
    assert err.value.code == "POLICY_FACTS_NOT_ALLOWED" and (err.value.rule or "").endswith("lookups.facts")
    assert len(decrypted) == 1


def test_account_transfer_by_city_shows_each_regions_own_figures(
    fed: harness.Federation, keys: he.ClientKeys, population: Population
) -> None:
    pid = population.planted[0]  # accounts and open loans in two cities
    with fed.client(keys=keys) as client:
        answer = client.lookup([pid], by_city=True, **TRANSFER)
    assert_complete(answer)
    assert answer.by_city is not None and list(answer.by_city[0]) == NODES
    cities = answer.by_city[0]
    for node in NODES:
        assert cities[node] == oracle_facts(over(fed, [node]), [pid])[pid], node
    assert sum(c.cities for c in cities.values()) >= 2 and sum(c.loan_cities for c in cities.values()) == 2
    total = oracle_facts(fed.oracle, [pid])[pid]
    assert answer.facts == [total]
    for name in PersonFacts.__dataclass_fields__:
        assert sum(getattr(c, name) for c in cities.values()) == getattr(total, name), name


def in_and_elsewhere(fed: harness.Federation, node: str) -> str:
    """Someone with an account in ``node`` and in another region."""
    return people_where(
        fed,
        f"SELECT person_id FROM accounts GROUP BY 1 HAVING bool_or(city_code = '{BY_NODE_ID[node].code}') "
        "AND COUNT(DISTINCT city_code) >= 2",
    )[0]


def test_exclude_home_leaves_the_askers_region_out(fed: harness.Federation, keys: he.ClientKeys) -> None:
    pid = in_and_elsewhere(fed, "shanghai")
    others = [n for n in NODES if n != "shanghai"]
    before = audit_sizes(fed)
    with fed.client(keys=keys) as client:  # the caseworker's home region is shanghai
        answer = client.lookup([pid], exclude_home=True, **REVIEW)
    assert_complete(answer, others)
    expected = oracle_facts(over(fed, others), [pid])[pid]
    assert answer.facts == [expected]
    assert expected != oracle_facts(fed.oracle, [pid])[pid]  # shanghai's own figures are really left out
    after = audit_sizes(fed)
    assert after["shanghai"] == before["shanghai"]  # shanghai was not even asked
    assert all(after[n] == before[n] + 1 for n in others)


def test_exclude_home_needs_a_home_region(
    fed: harness.Federation, keys: he.ClientKeys, population: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, stub = counted_client(fed, keys, monkeypatch, "roving")
    with client:
        err = refusal(lambda: client.lookup([population.multi_city[0]], exclude_home=True, **REVIEW))
        assert err.code == "LOOKUP_NO_HOME" and stub.calls == []
        assert_serves(fed, client, population.multi_city[0])
    assert stub.calls == ["Lookup"]


def test_a_bank_cannot_leave_its_own_city_out(
    fed: harness.Federation, keys: he.ClientKeys, population: Population
) -> None:
    """Every region but the asker's shows that region's figures by difference: only roles whose lookups say
    exclude_home (a centre's caseworkers) may ask so; for the bank it is a per-city answer, refused."""
    pid = population.multi_city[0]
    with fed.client(keys=keys, person="bank") as bank:
        err = refusal(lambda: bank.lookup([pid], exclude_home=True, tokens=fed.consent_tokens([pid]), **REVIEW), pid)
        assert err.code == "POLICY_BREAKDOWN_DENIED"
        answer = bank.lookup([pid], tokens=fed.consent_tokens([pid]), **REVIEW)
        assert answer.facts == [oracle_facts(fed.oracle, [pid])[pid].only(answer.facts_asked)]


def test_a_person_is_asked_about_once_per_request(
    fed: harness.Federation, keys: he.ClientKeys, population: Population
) -> None:
    a, b = population.multi_city[:2]
    with fed.client(keys=keys) as client:
        assert refusal(lambda: client.lookup([a, a], **REVIEW), a).code == "PERSON_ID_DUPLICATE"
    with fed.client(keys=keys, person="bank") as bank:
        done: list[int] = []
        answer = bank.screen(
            [a, b, a.lower()], progress=done.append, tokens=fed.consent_tokens([a, b, a.lower()]), **REVIEW
        )
    expected = {pid: f.only(answer.facts_asked) for pid, f in oracle_facts(fed.oracle, [a, b]).items()}
    assert answer.facts == [expected[a], expected[b], expected[a]] and done[-1] == 3


# ------------------------------------------------------------------------------------------ refusals


def test_invalid_identifiers_are_refused_before_anything_is_sent(
    fed: harness.Federation, keys: he.ClientKeys, population: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = population.multi_city[1]
    wrong_check = good[:17] + ("0" if good[17] != "0" else "1")
    bad_date = "310101" + "19901332" + "123"
    bad_date += "X"  # whatever the check character: the date is checked first
    bad = {
        "too short": good[:17],
        "too long": good + "1",
        "bad check character": wrong_check,
        "bad birth date": bad_date,
        "a letter inside": good[:5] + "A" + good[6:],
        "empty": "",
    }
    before = audit_sizes(fed)
    client, stub = counted_client(fed, keys, monkeypatch, "caseworker")
    bank, bank_stub = counted_client(fed, keys, monkeypatch, "bank")
    with client, bank:
        for what, pid in bad.items():
            err = refusal(functools.partial(client.lookup, [pid], **REVIEW), *(s for s in [pid] if len(s) >= 17))
            assert err.code == "PERSON_ID_INVALID", what
        assert refusal(lambda: client.lookup([], **REVIEW)).code == "PERSON_ID_INVALID"
        # a screening with one bad identifier among many sends no batch at all, not even the good ones before it
        many = [*population.everyone[:600], wrong_check, *population.everyone[600:700]]
        tokens = fed.consent_tokens([good if pid == wrong_check else pid for pid in many])  # the id is checked first
        err = refusal(lambda: bank.screen(many, batch=100, tokens=tokens, **REVIEW), wrong_check)
        assert err.code == "PERSON_ID_INVALID" and err.message.startswith("identifier 601: ")
        assert stub.calls == [] and bank_stub.calls == []
        assert audit_sizes(fed) == before
        assert_serves(fed, client, good)
    assert stub.calls == ["Lookup"]


POLICY_REFUSALS = [
    ("analyst", 1, REVIEW, False, "POLICY_LOOKUP_DENIED"),
    ("caseworker", 1, {"purpose": "", "consent": "C-1"}, False, "POLICY_PURPOSE_REQUIRED"),
    ("caseworker", 1, {"purpose": "statistics", "consent": "C-1"}, False, "POLICY_PURPOSE_NOT_ALLOWED"),
    ("caseworker", 1, {"purpose": "fishing", "consent": "C-1"}, False, "POLICY_PURPOSE_UNKNOWN"),
    ("bank", 1, {"purpose": "account-transfer", "consent": "C-1"}, False, "POLICY_PURPOSE_NOT_ALLOWED"),
    ("caseworker", 1, {"purpose": "loan-review"}, False, "POLICY_CONSENT_REQUIRED"),
    ("caseworker", 2, REVIEW, False, "POLICY_LOOKUP_TOO_MANY"),
    ("caseworker", 1, REVIEW, True, "POLICY_BREAKDOWN_DENIED"),
    ("bank", 1, REVIEW, True, "POLICY_BREAKDOWN_DENIED"),
    ("bank", 1, {**REVIEW, "facts": ["duplicate_loans", "balance"]}, False, "POLICY_FACTS_NOT_ALLOWED"),
]


@pytest.mark.parametrize(
    ("person", "subjects", "kw", "by_city", "code"), POLICY_REFUSALS, ids=[f"{r[0]}-{r[4]}" for r in POLICY_REFUSALS]
)
def test_policy_refusals_have_their_code_and_the_servers_keep_serving(
    fed: harness.Federation,
    keys: he.ClientKeys,
    population: Population,
    person: str,
    subjects: int,
    kw: dict[str, Any],
    by_city: bool,
    code: str,
) -> None:
    ids = population.multi_city[2 : 2 + subjects]
    before = audit_sizes(fed)
    with fed.client(keys=keys, person=person) as client:
        err = refusal(lambda: client.lookup(ids, by_city=by_city, **kw), *ids)
    assert err.code == code
    assert err.rule and err.rule.split(": ", 1)[0] in NODES
    # every region refused it on its own, and logged it, with its code
    assert audit_sizes(fed) == {n: before[n] + 1 for n in NODES}
    for node in NODES:
        entry = last_entry(fed, node)
        assert (entry["operation"], entry["decision"], entry["code"]) == ("lookup", "refused", code)
        # a purpose code the node does not know is free text: it is not written down
        assert entry["purpose"] == ("?" if kw["purpose"] == "fishing" else kw["purpose"])
        assert entry["consent"] is bool(kw.get("consent"))
        assert len(entry["subjects"].split()) == subjects  # a refused lookup is on record, by keyed hash
    with fed.client(keys=keys) as client:
        assert_serves(fed, client, population.multi_city[3])


def test_account_transfer_by_city_is_the_only_breakdown(
    fed: harness.Federation, keys: he.ClientKeys, population: Population
) -> None:
    pid = population.multi_city[4]
    with fed.client(keys=keys) as client:
        assert refusal(lambda: client.lookup([pid], by_city=True, **REVIEW), pid).code == "POLICY_BREAKDOWN_DENIED"
        answer = client.lookup([pid], by_city=True, **TRANSFER)
    assert answer.by_city is not None and answer.facts == [oracle_facts(fed.oracle, [pid])[pid]]


# ------------------------------------------------------------------------------- a compromised coordinator


def test_a_client_cannot_ask_one_region_about_someone_else(
    fed: harness.Federation,
    keys: he.ClientKeys,
    population: Population,
    coordinator_stub: pb_grpc.CoordinatorStub,
) -> None:
    """Sealing the target to one region and an unknown person to the others would make the "total" that city's
    own figures: the region given people other than those signed for refuses, and so the whole lookup fails."""
    target, decoy = population.planted[0], absent_ids(1, offset=900)[0]
    lookup = seal_lookup(fed, keys, [decoy], sealed_instead={"hangzhou": [target]})
    request = pb.LookupRequest(
        he_format=HE_FORMAT,
        envelope=lookup.signed,
        public_context=keys.public_context(),
        sealed=[pb.SealedSubjects(node_id=n, blob=b) for n, b in lookup.blobs.items()],
    )
    assert rpc_code(functools.partial(coordinator_stub.Lookup, request, timeout=RPC_TIMEOUT_S)) == "LOOKUP_SEAL_INVALID"
    entry = last_entry(fed, "hangzhou")
    assert (entry["decision"], entry["code"]) == ("refused", "LOOKUP_SEAL_INVALID")
    with fed.client(keys=keys) as client:  # and the honest lookup still works
        assert client.lookup([target], **REVIEW).facts == [oracle_facts(fed.oracle, [target])[target]]


def test_a_lookup_in_another_he_format_is_refused_by_the_coordinator_and_every_region(
    fed: harness.Federation,
    keys: he.ClientKeys,
    population: Population,
    coordinator_stub: pb_grpc.CoordinatorStub,
    node_stubs: dict[str, pb_grpc.NodeStub],
) -> None:
    """A context in a format another TenSEAL writes is refused before it is parsed, on the lookup path too, with
    a message naming both formats; the same lookup in this federation's format is answered."""
    other = "tenseal-0.3.14/seal-4.1/bfv-4096"
    pid = population.multi_city[6]
    lookup = seal_lookup(fed, keys, [pid])
    blobs = [pb.SealedSubjects(node_id=n, blob=b) for n, b in lookup.blobs.items()]
    request = pb.LookupRequest(
        he_format=other, envelope=lookup.signed, public_context=keys.public_context(), sealed=blobs
    )
    with pytest.raises(grpc.RpcError) as at_coordinator:
        list(coordinator_stub.Lookup(request, timeout=RPC_TIMEOUT_S))
    node = node_request(keys, lookup, lookup.blobs["hangzhou"])
    node.he_format = other
    with pytest.raises(grpc.RpcError) as at_node:
        node_stubs["hangzhou"].Lookup(node, timeout=RPC_TIMEOUT_S)
    for info in (at_coordinator, at_node):
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        err = from_rpc_error(info.value)
        assert err.code == "HE_FORMAT_MISMATCH" and other in err.message and HE_FORMAT in err.message, err.message
    entry = last_entry(fed, "hangzhou")
    assert (entry["decision"], entry["code"]) == ("refused", "HE_FORMAT_MISMATCH")
    with fed.client(keys=keys) as client:  # the honest lookup of the same person is answered
        assert client.lookup([pid], **REVIEW).facts == [oracle_facts(fed.oracle, [pid])[pid]]


def test_a_sealed_blob_opens_only_in_its_region_and_question(
    fed: harness.Federation,
    keys: he.ClientKeys,
    population: Population,
    node_stubs: dict[str, pb_grpc.NodeStub],
) -> None:
    pid = population.planted[1]
    a, b, c = asked = ["shanghai", "hangzhou", "nanjing"]
    # some regions only: a per-city purpose (a lookup of some regions shows their own figures); three, the
    # fewest a region sums its answer with (secure_aggregation.min_participants)
    first = seal_lookup(fed, keys, [pid], asked, purpose="account-transfer")
    second = seal_lookup(fed, keys, [pid], asked, purpose="account-transfer")
    before = audit_sizes(fed)
    attempts = [
        ("blobs swapped", a, node_request(keys, first, first.blobs[b]), "LOOKUP_SEAL_INVALID"),
        ("blobs swapped", b, node_request(keys, first, first.blobs[a]), "LOOKUP_SEAL_INVALID"),
        ("a blob of another question", a, node_request(keys, second, first.blobs[a]), "LOOKUP_SEAL_INVALID"),
        ("another question's id", a, node_request(keys, first, first.blobs[a], second.qid), "PLAN_QUERY_ID_MISMATCH"),
        ("a region not asked", "suzhou", node_request(keys, first, first.blobs[a]), "LOOKUP_MALFORMED"),
        ("no blob", a, node_request(keys, first, b""), "LOOKUP_SEAL_INVALID"),
    ]
    for what, node, request, code in attempts:
        assert rpc_code(functools.partial(node_stubs[node].Lookup, request, timeout=RPC_TIMEOUT_S)) == code, what
        entry = last_entry(fed, node)
        assert (entry["decision"], entry["code"]) == ("refused", code) and "subjects" not in entry
    # participant sets a region does not sum its answer over: refused once the blob is open (so on record by
    # keyed hash), before anything is encrypted or the nonce used
    runs = [
        ("no participant set", a, [], "SECAGG_PARTICIPANTS_INVALID"),
        ("a set without this region", a, [b, c], "SECAGG_PARTICIPANTS_INVALID"),
        ("a region named twice", a, [a, b, b, c], "SECAGG_PARTICIPANTS_INVALID"),
        ("a region not of the catalog", a, [a, b, c, "wuhan"], "SECAGG_PARTICIPANTS_INVALID"),
        ("a region the lookup does not ask", a, [a, b, c, "suzhou"], "SECAGG_PARTICIPANTS_INVALID"),
        ("too few to sum with", a, [a, b], "POLICY_TOO_FEW_PARTICIPANTS"),
        ("alone", c, [c], "POLICY_TOO_FEW_PARTICIPANTS"),
    ]
    for what, node, participants, code in runs:
        request = node_request(keys, first, first.blobs[node], participants=participants)
        assert rpc_code(functools.partial(node_stubs[node].Lookup, request, timeout=RPC_TIMEOUT_S)) == code, what
        entry = last_entry(fed, node)
        assert (entry["decision"], entry["code"]) == ("refused", code), what
        assert len(entry["subjects"].split()) == 1, what
    assert sum(audit_sizes(fed).values()) == sum(before.values()) + len(attempts) + len(runs)
    # the untouched blobs are answered over the set the lookup asks (the refusals used up no nonce): the answers
    # sum to the oracle, and each one alone is masked (a coordinator and asker together cannot read it)
    responses = run_lookup(keys, node_stubs, first, asked)
    assert all(r.plan_fingerprint == layout_fingerprint(1, 1) for r in responses)
    assert decrypted_facts(keys, responses) == oracle_facts(over(fed, asked), [pid])[pid]
    for node, response in zip(asked, responses, strict=True):
        alone = keys.decrypt(response.ciphertexts[0], 9)
        assert not np.array_equal(alone, own_slots(oracle_facts(over(fed, [node]), [pid])[pid])), node
        assert int(np.count_nonzero(np.abs(alone) > 1 << 30)) >= 7, node  # uniform modulo t, not small figures
    signed = run_statements(responses)
    assert [s.node for s in signed] == asked and len({s.run for s in signed}) == 1
    assert all(s.participants == tuple(sorted(asked)) and s.query_id == first.qid for s in signed)
    for node in asked:
        entry = last_entry(fed, node)
        assert (entry["decision"], entry["participants"]) == ("allowed", ",".join(sorted(asked)))
    # and the same run again is a replay, whatever order the set is named in
    for node, participants in ((a, asked), (c, list(reversed(asked)))):
        again = node_request(keys, first, first.blobs[node], participants=participants)
        assert rpc_code(functools.partial(node_stubs[node].Lookup, again, timeout=RPC_TIMEOUT_S)) == "AUTH_REPLAY"
    with fed.client(keys=keys) as client:
        assert_serves(fed, client, pid)


def test_a_rerun_without_a_region_is_answered_only_where_its_figures_may_be_shown(
    fed: harness.Federation,
    keys: he.ClientKeys,
    population: Population,
    node_stubs: dict[str, pb_grpc.NodeStub],
) -> None:
    """A compromised coordinator that has every region's answer claims one failed and asks the others again:
    the asker would decrypt both sums, and their difference is that region's own figures. The survivors answer
    such a re-run only where the asker's policy allows asking exactly them."""
    pid = in_and_elsewhere(fed, "nanjing")
    survivors = ["shanghai", "hangzhou", "suzhou"]  # without nanjing; the caseworker's home is shanghai
    review = seal_lookup(fed, keys, [pid])  # every region, for a loan review: federation-wide totals only
    full = run_lookup(keys, node_stubs, review, NODES)
    assert decrypted_facts(keys, full) == oracle_facts(fed.oracle, [pid])[pid]
    for node in survivors:
        request = node_request(keys, review, review.blobs[node], participants=survivors)
        with pytest.raises(grpc.RpcError) as info:
            node_stubs[node].Lookup(request, timeout=RPC_TIMEOUT_S)
        err = from_rpc_error(info.value)
        assert err.code == "POLICY_BREAKDOWN_DENIED" and "nanjing" in err.message, node
        assert err.rule == f"{node}: roles.caseworker.lookups.breakdown"
        assert err.hint == "ask again when every region the lookup asks is up"
        entry = last_entry(fed, node)
        assert (entry["decision"], entry["code"]) == ("refused", "POLICY_BREAKDOWN_DENIED")
        assert entry["participants"] == ",".join(sorted(survivors))
    # every region but the asker's home is a set a caseworker may ask (exclude_home): that re-run is answered
    but_home = NODES[1:]
    rerun = run_lookup(keys, node_stubs, review, but_home)
    assert decrypted_facts(keys, rerun) == oracle_facts(over(fed, but_home), [pid])[pid]
    assert all(s.participants == tuple(sorted(but_home)) for s in run_statements(rerun))
    assert len({s.run for s in run_statements(full)} | {s.run for s in run_statements(rerun)}) == 2  # new masks
    # a nonce comes back only with fewer regions: the same set, or the home region added back, is a replay
    for participants in (but_home, NODES):
        request = node_request(keys, review, review.blobs["hangzhou"], participants=participants)
        call = functools.partial(node_stubs["hangzhou"].Lookup, request, timeout=RPC_TIMEOUT_S)
        assert rpc_code(call) == "AUTH_REPLAY"
    # for a per-city purpose the survivors answer without nanjing, and the difference is what that purpose shows
    transfer = seal_lookup(fed, keys, [pid], purpose="account-transfer")
    with_nanjing = decrypted_facts(keys, run_lookup(keys, node_stubs, transfer, NODES))
    without = decrypted_facts(keys, run_lookup(keys, node_stubs, transfer, survivors))
    assert without == oracle_facts(over(fed, survivors), [pid])[pid]
    nanjing = oracle_facts(over(fed, ["nanjing"]), [pid])[pid]
    assert nanjing.cities == 1
    for name in PersonFacts.__dataclass_fields__:
        assert getattr(with_nanjing, name) - getattr(without, name) == getattr(nanjing, name), name


class SubsetCoordinator:
    """A compromised coordinator, as a client's stub: it asks only ``participants`` of the regions a lookup
    names (each one answers, the set being one the asker may ask) and names ``missing`` as it likes."""

    def __init__(
        self, node_stubs: Mapping[str, pb_grpc.NodeStub], participants: Sequence[str], missing: Sequence[str]
    ) -> None:
        self.node_stubs, self.participants, self.missing = node_stubs, list(participants), list(missing)

    def Lookup(self, request: pb.LookupRequest, timeout: float | None = None) -> Stream:  # noqa: N802
        qid = query_id(request.envelope)
        blobs = {s.node_id: s.blob for s in request.sealed}
        responses = [
            self.node_stubs[n].Lookup(
                pb.NodeLookupRequest(
                    he_format=HE_FORMAT,
                    query_id=qid,
                    public_context=request.public_context,
                    envelope=request.envelope,
                    sealed=blobs[n],
                    participants=self.participants,
                ),
                timeout=RPC_TIMEOUT_S,
            )
            for n in self.participants
        ]
        head = pb.QueryResponse(
            query_id=qid,
            plan_fingerprint=responses[0].plan_fingerprint,
            answered=self.participants,
            missing=[pb.RegionStatus(node_id=n, code="NODE_UNREACHABLE", message="down") for n in self.missing],
            receipts=[r.receipt for r in responses],
            statements=[r.statement for r in responses],
        )
        return stream(head, {n: list(r.ciphertexts) for n, r in zip(self.participants, responses, strict=True)})


def test_a_region_left_out_of_the_sum_is_named_missing(
    fed: harness.Federation,
    keys: he.ClientKeys,
    node_stubs: dict[str, pb_grpc.NodeStub],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regions answer a run over some of the regions a lookup asks (a re-run with the survivors), so the client
    checks that every region asked either answered or is named missing: an answer short of a region never
    passes for a complete one."""
    pid = in_and_elsewhere(fed, "nanjing")
    survivors = ["shanghai", "hangzhou", "suzhou"]
    for missing, code in (([], "ANSWER_CORRUPT"), (["nanjing", "hangzhou"], "ANSWER_CORRUPT"), (["nanjing"], "")):
        with fed.client(keys=keys) as client:
            monkeypatch.setattr(client, "_stub", SubsetCoordinator(node_stubs, survivors, missing))
            if code:
                assert refusal(lambda: client.lookup([pid], **TRANSFER), pid).code == code, missing
                continue
            answer = client.lookup([pid], **TRANSFER)
        assert sorted(answer.answered) == sorted(survivors) and not answer.complete
        assert [m["node_id"] for m in answer.missing] == ["nanjing"]
        assert answer.facts == [oracle_facts(over(fed, survivors), [pid])[pid]]


def test_a_lookup_envelope_is_no_query_and_a_query_envelope_no_lookup(
    fed: harness.Federation,
    keys: he.ClientKeys,
    population: Population,
    node_stubs: dict[str, pb_grpc.NodeStub],
    coordinator_stub: pb_grpc.CoordinatorStub,
) -> None:
    pid = population.multi_city[5]
    lookup = seal_lookup(fed, keys, [pid])
    sql = "SELECT COUNT(*) FROM deposits"
    fingerprint = plan_query(sql, fed.catalog).fingerprint
    context = keys.public_context()
    digest = he.context_digest(context)
    sign = signer(fed).sign
    query = sign(sql=sql, context_digest=digest, federation="test", **REVIEW_SIGN)
    lookup_without_spec = sign(sql="", context_digest=digest, federation="test", operation="lookup", **REVIEW_SIGN)
    query_with_spec = sign(
        sql=sql,
        context_digest=digest,
        federation="test",
        lookup=pb.LookupSpec(subjects=1, seal_public_key=bytes(32), regions=NODES),
        **REVIEW_SIGN,
    )

    def partial(signed: pb.SignedEnvelope) -> pb.PartialRequest:
        return pb.PartialRequest(
            he_format=HE_FORMAT,
            query_id=query_id(signed),
            public_context=context,
            plan_fingerprint=fingerprint,
            envelope=signed,
        )

    def node_lookup(signed: pb.SignedEnvelope) -> pb.NodeLookupRequest:
        return pb.NodeLookupRequest(
            he_format=HE_FORMAT,
            query_id=query_id(signed),
            public_context=context,
            envelope=signed,
            sealed=lookup.blobs["nanjing"],
        )

    def sealed(signed: pb.SignedEnvelope) -> pb.LookupRequest:
        blobs = [pb.SealedSubjects(node_id=n, blob=b) for n, b in lookup.blobs.items()]
        return pb.LookupRequest(he_format=HE_FORMAT, envelope=signed, public_context=context, sealed=blobs)

    stub = node_stubs["nanjing"]
    t = RPC_TIMEOUT_S
    cases: list[tuple[str, Callable[[], object], str]] = [
        (
            "node: lookup run as a query",
            lambda: stub.ComputePartial(partial(lookup.signed), timeout=t),
            "AUTH_ENVELOPE_OPERATION",
        ),
        ("node: lookup explained", lambda: stub.Explain(partial(lookup.signed), timeout=t), "AUTH_ENVELOPE_OPERATION"),
        ("node: query run as a lookup", lambda: stub.Lookup(node_lookup(query), timeout=t), "AUTH_ENVELOPE_OPERATION"),
        (
            "node: a lookup without its spec",
            lambda: stub.Lookup(node_lookup(lookup_without_spec), timeout=t),
            "AUTH_ENVELOPE_MALFORMED",
        ),
        (
            "node: a query with a lookup spec",
            lambda: stub.ComputePartial(partial(query_with_spec), timeout=t),
            "AUTH_ENVELOPE_MALFORMED",
        ),
        (
            "coordinator: lookup run as a query",
            lambda: coordinator_stub.Query(
                pb.QueryRequest(he_format=HE_FORMAT, envelope=lookup.signed, public_context=context), timeout=t
            ),
            "AUTH_ENVELOPE_OPERATION",
        ),
        (
            "coordinator: query run as a lookup",
            lambda: coordinator_stub.Lookup(sealed(query), timeout=t),
            "AUTH_ENVELOPE_OPERATION",
        ),
        (
            "coordinator: a lookup without its spec",
            lambda: coordinator_stub.Lookup(sealed(lookup_without_spec), timeout=t),
            "AUTH_ENVELOPE_MALFORMED",
        ),
    ]
    for what, call, code in cases:
        assert rpc_code(call) == code, what
    # the lookup itself, sent as it should be, is answered
    reply, blobs = collect(coordinator_stub.Lookup(sealed(lookup.signed), timeout=t))
    assert sorted(reply.answered) == sorted(NODES) and reply.query_id == lookup.qid
    (slots,) = keys.decrypt_sum([blobs[n] for n in reply.answered], [9])
    assert decode_facts(slots, subjects=1, cells=1)[0][0] == oracle_facts(fed.oracle, [pid])[pid]


def test_the_coordinator_wants_one_blob_for_each_region_named(
    fed: harness.Federation,
    keys: he.ClientKeys,
    population: Population,
    coordinator_stub: pb_grpc.CoordinatorStub,
) -> None:
    pid = population.multi_city[6]
    lookup = seal_lookup(fed, keys, [pid], NODES[1:])  # every region but the caseworker's home
    other = seal_lookup(fed, keys, [pid])
    context = keys.public_context()

    def request(blobs: dict[str, bytes], signed: pb.SignedEnvelope = lookup.signed) -> pb.LookupRequest:
        sealed = [pb.SealedSubjects(node_id=n, blob=b) for n, b in blobs.items()]
        return pb.LookupRequest(he_format=HE_FORMAT, envelope=signed, public_context=context, sealed=sealed)

    one_short = dict(list(lookup.blobs.items())[:2])
    one_more = {**lookup.blobs, "shanghai": other.blobs["shanghai"]}
    stranger = seal_lookup(fed, keys, [pid], ["shanghai", "wuhan"])  # a region this federation does not have
    before = audit_sizes(fed)
    for blobs, signed in ((one_short, lookup.signed), (one_more, lookup.signed), (stranger.blobs, stranger.signed)):
        code = rpc_code(functools.partial(coordinator_stub.Lookup, request(blobs, signed), timeout=RPC_TIMEOUT_S))
        assert code == "LOOKUP_MALFORMED"
    assert audit_sizes(fed) == before  # refused before any region saw it
    reply, _ = collect(coordinator_stub.Lookup(request(lookup.blobs), timeout=RPC_TIMEOUT_S))
    assert sorted(reply.answered) == sorted(NODES[1:])


def test_asking_only_some_regions_is_a_breakdown(
    fed: harness.Federation,
    keys: he.ClientKeys,
    population: Population,
    coordinator_stub: pb_grpc.CoordinatorStub,
) -> None:
    """A lookup of one region alone would show that city's own figures: unless the policy allows a per-city
    answer for the purpose, a region answers only a lookup of every region (or every one but the asker's own)."""
    pid = population.planted[2]
    context = keys.public_context()

    def ask(regions: Sequence[str], purpose: str = "loan-review") -> tuple[pb.QueryResponse, list[np.ndarray]]:
        lookup = seal_lookup(fed, keys, [pid], regions, purpose=purpose)
        sealed = [pb.SealedSubjects(node_id=n, blob=b) for n, b in lookup.blobs.items()]
        request = pb.LookupRequest(he_format=HE_FORMAT, envelope=lookup.signed, public_context=context, sealed=sealed)
        reply, blobs = collect(coordinator_stub.Lookup(request, timeout=RPC_TIMEOUT_S))
        return reply, keys.decrypt_sum([blobs[n] for n in reply.answered], [9])

    for regions in (["hangzhou"], ["shanghai", "nanjing"], ["shanghai", "hangzhou", "nanjing"]):
        assert rpc_code(functools.partial(ask, regions)) == "POLICY_BREAKDOWN_DENIED", regions
    # every region, or every one but the caseworker's home (shanghai), is a federation-wide answer
    for regions in (NODES, ["hangzhou", "nanjing", "suzhou"]):
        reply, _ = ask(regions)
        assert sorted(reply.answered) == sorted(regions)
    # where a per-city answer is allowed, so is asking some regions only
    some = ["shanghai", "hangzhou", "nanjing"]
    reply, (slots,) = ask(some, purpose="account-transfer")
    assert sorted(reply.answered) == sorted(some) and list(reply.missing) == [] and reply.timings.runs == 1
    assert decode_facts(slots, subjects=1, cells=1)[0][0] == oracle_facts(over(fed, some), [pid])[pid]
    # but not fewer regions than a region sums its answer with: each one refuses to be summed over so few
    for regions in (["hangzhou"], ["shanghai", "nanjing"]):
        lookup = seal_lookup(fed, keys, [pid], regions, purpose="account-transfer")
        sealed = [pb.SealedSubjects(node_id=n, blob=b) for n, b in lookup.blobs.items()]
        request = pb.LookupRequest(he_format=HE_FORMAT, envelope=lookup.signed, public_context=context, sealed=sealed)
        with pytest.raises(grpc.RpcError) as info:
            list(coordinator_stub.Lookup(request, timeout=RPC_TIMEOUT_S))
        err = from_rpc_error(info.value)
        assert err.code == "POLICY_TOO_FEW_PARTICIPANTS", regions
        assert err.rule == f"{regions[0]}: secure_aggregation.min_participants"
        for node in regions:
            entry = last_entry(fed, node)
            assert (entry["decision"], entry["code"]) == ("refused", "POLICY_TOO_FEW_PARTICIPANTS")


# ------------------------------------------------------------------------------------------ keys


def profile_pinning(fed: harness.Federation, catalog: Path | None, person: str = "caseworker") -> ClientProfile:
    doc = yaml.safe_load(fed.profile_path.read_text())
    doc["tls"]["cert"] = str(fed.pki_dir / "people" / f"{person}.pem")
    doc["tls"]["key"] = str(fed.pki_dir / "people" / f"{person}.key")
    if catalog is None:
        del doc["catalog"]
    else:
        doc["catalog"] = str(catalog)
    return parse_model(fed.profile_path, doc, ClientProfile)


def catalog_with(fed: harness.Federation, name: str, node: str, agreement_key: str | None) -> Path:
    doc = yaml.safe_load(fed.catalog_path.read_text())
    for entry in doc["nodes"]:
        if entry["id"] == node:
            if agreement_key is None:
                del entry["agreement_key"]
            else:
                entry["agreement_key"] = agreement_key
    path = fed.root / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def test_lookups_seal_only_to_keys_from_a_pinned_catalog(
    fed: harness.Federation, keys: he.ClientKeys, population: Population
) -> None:
    pid = population.multi_city[7]
    before = audit_sizes(fed)
    with FederationClient(profile_pinning(fed, None), keys=keys) as unpinned:
        assert unpinned.catalog.federation == "test"  # the coordinator's catalog is there, with its keys
        assert refusal(lambda: unpinned.lookup([pid], **REVIEW), pid).code == "LOOKUP_KEYS_UNPINNED"
        assert refusal(lambda: unpinned.screen([pid], **REVIEW), pid).code == "LOOKUP_KEYS_UNPINNED"
    keyless = catalog_with(fed, "catalog-keyless.yaml", "nanjing", None)
    with FederationClient(profile_pinning(fed, keyless), keys=keys) as client:
        assert refusal(lambda: client.lookup([pid], **REVIEW), pid).code == "LOOKUP_KEY_MISSING"
    assert audit_sizes(fed) == before  # nothing was sealed to anyone, nothing was sent
    # a pinned catalog with a key that is not the region's: that region cannot open it, and the lookup fails
    impostor = AgreementKey.load_or_create(fed.root / "impostor").public_b64()
    wrong = catalog_with(fed, "catalog-wrong-key.yaml", "hangzhou", impostor)
    with FederationClient(profile_pinning(fed, wrong), keys=keys) as client:
        err = refusal(lambda: client.lookup([pid], **REVIEW), pid)
    assert err.code == "LOOKUP_SEAL_INVALID" and "hangzhou" in err.message
    entry = last_entry(fed, "hangzhou")
    assert (entry["decision"], entry["code"]) == ("refused", "LOOKUP_SEAL_INVALID")
    with fed.client(keys=keys) as client:
        assert_serves(fed, client, pid)


# ------------------------------------------------------------------------------------------ a region down


def wait_until_reachable(coordinator_stub: pb_grpc.CoordinatorStub, node: str, timeout_s: float = 30.0) -> None:
    """Until the coordinator reaches ``node`` again (its channel retries a restarted node only after a backoff)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            coordinator_stub.AuditProof(pb.AuditProofRequest(node_id=node, index=0, old_size=1), timeout=RPC_TIMEOUT_S)
            return
        except grpc.RpcError as err:
            if from_rpc_error(err).code != "NODE_UNREACHABLE" or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def entries_of(fed: harness.Federation, node: str, signed: pb.SignedEnvelope) -> list[dict[str, Any]]:
    """``node``'s audit entries for the signed question ``signed`` (by its nonce), in order."""
    nonce = pb.QueryEnvelope.FromString(signed.envelope).nonce.hex()
    lines = (fed.audit_dir(node) / "entries.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["nonce"] == nonce]


def test_a_region_that_is_down_is_missing_and_the_others_answer(
    fed: harness.Federation,
    keys: he.ClientKeys,
    population: Population,
    coordinator_stub: pb_grpc.CoordinatorStub,
) -> None:
    """Runs last of this module's federation: it stops nodes, and starts them again.

    The coordinator asks the survivors again as a new run (their first answers were masked against the region
    that failed); they answer it where the asker may ask exactly them, and the sum is theirs, exactly."""
    pid = in_and_elsewhere(fed, "nanjing")
    others = [n for n in NODES if n != "nanjing"]
    expected = oracle_facts(over(fed, others), [pid])[pid]
    assert expected != oracle_facts(fed.oracle, [pid])[pid]  # nanjing's own figures are really left out
    fed.stop_node("nanjing")
    try:
        # a per-city purpose: the survivors' sum may be shown
        lookup = seal_lookup(fed, keys, [pid], purpose="account-transfer")
        sealed = [pb.SealedSubjects(node_id=n, blob=b) for n, b in lookup.blobs.items()]
        request = pb.LookupRequest(
            he_format=HE_FORMAT, envelope=lookup.signed, public_context=keys.public_context(), sealed=sealed
        )
        reply, blobs = collect(coordinator_stub.Lookup(request, timeout=RPC_TIMEOUT_S))
        assert reply.timings.runs == 2 and reply.query_id == lookup.qid
        assert sorted(reply.answered) == sorted(others)
        assert [(m.node_id, m.code) for m in reply.missing] == [("nanjing", "NODE_UNREACHABLE")]
        (slots,) = keys.decrypt_sum([blobs[n] for n in reply.answered], [9])
        assert decode_facts(slots, subjects=1, cells=1)[0][0] == expected
        signed = [statements.parse(s) for s in reply.statements]
        assert sorted(s.node for s in signed) == sorted(others)
        assert all(s.participants == tuple(sorted(others)) for s in signed)
        for node in others:  # two runs of one nonce: every region asked, then the survivors
            runs = entries_of(fed, node, lookup.signed)
            assert [(e["decision"], e["participants"]) for e in runs] == [
                ("allowed", ",".join(sorted(NODES))),
                ("allowed", ",".join(sorted(others))),
            ]
        with fed.client(keys=keys) as client:
            answer = client.lookup([pid], **TRANSFER)
            assert sorted(answer.answered) == sorted(others) and not answer.complete
            assert [(m["node_id"], m["code"]) for m in answer.missing] == [("nanjing", "NODE_UNREACHABLE")]
            assert answer.facts == [expected] and answer.receipts_verified == len(others)
            # a loan review shows federation-wide totals only: without nanjing, set against the first run, the
            # survivors' sum would show nanjing's own figures, so they refuse the re-run and nothing is shown. That
            # is no refusal of the lookup: it says nanjing is missing, why, and what the policy needs without it
            err = refusal(lambda: client.lookup([pid], **REVIEW), pid)
        assert isinstance(err, UnavailableError) and exit_code(err) == 5
        assert err.code == "LOOKUP_REGION_MISSING", err
        assert err.message.startswith("region(s) nanjing (NODE_UNREACHABLE) missing, and without them this lookup")
        assert "POLICY_BREAKDOWN_DENIED" in err.message and "only federation-wide totals" in err.message
        assert err.hint is not None and "nanjing" in err.hint
        assert err.rule is not None and err.rule.endswith("roles.caseworker.lookups.breakdown")
        for node in others:
            entry = last_entry(fed, node)
            assert (entry["decision"], entry["code"]) == ("refused", "POLICY_BREAKDOWN_DENIED")
            assert entry["participants"] == ",".join(sorted(others))
        with fed.client(keys=keys) as client:
            # leaving the home out (shanghai): hangzhou and suzhou are left, fewer than the default policy's
            # secure aggregation sums an answer over (3)
            alone = refusal(lambda: client.lookup([pid], exclude_home=True, **REVIEW), pid)
        with fed.client(keys=keys, person="bank") as bank:  # a bank's screening, the same
            screening = refusal(
                lambda: bank.screen(
                    [pid, population.planted[0]], tokens=fed.consent_tokens([pid, population.planted[0]]), **REVIEW
                ),
                pid,
            )
        assert isinstance(alone, UnavailableError) and alone.code == "LOOKUP_REGION_MISSING", alone
        assert "nanjing (NODE_UNREACHABLE)" in alone.message and "POLICY_TOO_FEW_PARTICIPANTS" in alone.message
        assert "at least 3 regions; this run has 2" in alone.message
        assert isinstance(screening, UnavailableError) and screening.code == "LOOKUP_REGION_MISSING", screening
        assert "nanjing (NODE_UNREACHABLE)" in screening.message
        # `hpf lookup`, as a process: one line naming the region, and exit 5 (regions unavailable), not 4 (policy)
        profile = str(fed.profile_path)
        cli = subprocess.run(
            [sys.executable, "-m", "hpf.cli", "lookup", "-p", profile, "--purpose", "loan-review"]
            + ["--consent", "C1", pid],
            capture_output=True,
            text=True,
            timeout=240,
            stdin=subprocess.DEVNULL,
        )
        assert cli.returncode == 5, cli.stderr
        assert "LOOKUP_REGION_MISSING" in cli.stderr and "nanjing (NODE_UNREACHABLE)" in cli.stderr, cli.stderr
        assert pid not in cli.stderr + cli.stdout
    finally:
        fed.restart_node("nanjing")
    # the asker's home region down: every region but the home is a set the caseworker may ask (exclude_home)
    wait_until_reachable(coordinator_stub, "nanjing")
    but_home = NODES[1:]
    fed.stop_node("shanghai")
    try:
        with fed.client(keys=keys) as client:
            answer = client.lookup([pid], **REVIEW)
    finally:
        fed.restart_node("shanghai")
    assert sorted(answer.answered) == sorted(but_home) and not answer.complete
    assert [(m["node_id"], m["code"]) for m in answer.missing] == [("shanghai", "NODE_UNREACHABLE")]
    assert answer.facts == [oracle_facts(over(fed, but_home), [pid])[pid]]
    # restarted with the same agreement keys, they open what is sealed to the keys in the catalog
    wait_until_reachable(coordinator_stub, "shanghai")
    with fed.client(keys=keys) as client:
        assert_serves(fed, client, pid)


# ------------------------------------------------------------------------- rate limits and fresh data

SMALL_NODES = ["shanghai", "hangzhou"]
SMALL_PEOPLE = (
    ("caseworker", "caseworker", "shanghai"),
    ("caseworker2", "caseworker", "hangzhou"),
    ("bank", "integrator", None),
    ("bank2", "integrator", None),
    ("refresher", "integrator", None),
    ("bank3", "integrator", None),
    ("caseworker3", "caseworker", "hangzhou"),
)
# two regions, so the default minimum of regions an answer is summed with (3) would refuse every lookup; with 1,
# a lone survivor answers a re-run where the asker's policy allows it, and the client is what refuses to show it
# as a total (test_one_region_answering_alone_is_not_shown_as_a_total)
SMALL_POLICY = """\
version: 1
extends: {base}
secure_aggregation:
  min_participants: 1
roles:
  caseworker:
    lookups:
      rate_limit: {{requests: 3, per_seconds: 3600}}
  integrator:
    rate_limit: {{requests: 5, per_seconds: 3600}}
    lookups:
      rate_limit: {{requests: 10, per_seconds: 3600}}
      facts: [duplicate_loans, loan_cities, contributions]
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("lookup-limits")
    for node in SMALL_NODES:
        generate_node(root / "data", node, 2_000, SEED)
    policy = root / "policy.yaml"
    policy.write_text(SMALL_POLICY.format(base=DEFAULT_POLICY))
    with harness.federation(
        root, hpf_tables(), {n: {} for n in SMALL_NODES}, write_data=False, policy=policy, people=SMALL_PEOPLE
    ) as f:
        yield f


def test_the_lookup_rate_limit_counts_people_not_requests(small: harness.Federation, keys: he.ClientKeys) -> None:
    ids = absent_ids(11, offset=100)
    with small.client(keys=keys, person="bank") as bank:
        err = refusal(lambda: bank.lookup(ids, tokens=small.consent_tokens(ids), **REVIEW), *ids)
        assert err.code == "POLICY_RATE_LIMITED" and err.hint == "ask about at most 10 at a time"
        assert err.rule and err.rule.endswith(": roles.integrator.lookups.rate_limit")
        assert bank.lookup(
            ids[:7], tokens=small.consent_tokens(ids[:7]), **REVIEW
        ).complete  # the refused 11 were not counted
        err = refusal(lambda: bank.lookup(ids[:4], tokens=small.consent_tokens(ids[:4]), **REVIEW))  # 7 + 4 > 10
        assert err.code == "POLICY_RATE_LIMITED" and (err.hint or "").startswith("wait ")
        assert bank.lookup(ids[:3], tokens=small.consent_tokens(ids[:3]), **REVIEW).complete  # exactly 10
        assert (
            refusal(lambda: bank.lookup(ids[:1], tokens=small.consent_tokens(ids[:1]), **REVIEW)).code
            == "POLICY_RATE_LIMITED"
        )
    with small.client(keys=keys, person="bank2") as bank2:  # per identity
        answer = bank2.lookup(ids[:10], tokens=small.consent_tokens(ids[:10], "bank2"), **REVIEW)
    assert answer.complete and all(f.loan_cities == 0 for f in answer.facts)
    for node in SMALL_NODES:
        entry = last_entry(small, node)
        assert (entry["identity"], entry["decision"]) == ("bank2", "allowed")


def test_a_request_refused_by_the_request_limit_uses_up_no_people(
    small: harness.Federation, keys: he.ClientKeys
) -> None:
    with small.client(keys=keys, person="bank3") as bank:
        for i in range(5):
            assert bank.lookup(
                absent_ids(1, offset=200 + i),
                tokens=small.consent_tokens(absent_ids(1, offset=200 + i), "bank3"),
                **REVIEW,
            ).complete
        err = refusal(
            lambda: bank.lookup(
                absent_ids(3, offset=300), tokens=small.consent_tokens(absent_ids(3, offset=300), "bank3"), **REVIEW
            )
        )
    assert err.code == "POLICY_RATE_LIMITED" and err.rule and err.rule.endswith(": roles.integrator.rate_limit")
    for node in SMALL_NODES:  # the 3 people of the refused request were given back: 5 requests, 5 people
        assert small.nodes[node].handler.lookup_limiter._log["bank3"][2] == 5


def test_a_caseworker_is_limited_in_people_looked_up(small: harness.Federation, keys: he.ClientKeys) -> None:
    pid = sorted(r[0] for r in small.oracle("SELECT DISTINCT person_id FROM accounts"))[0]
    with small.client(keys=keys) as client:
        for _ in range(3):
            assert client.lookup([pid], **REVIEW).complete
        err = refusal(lambda: client.lookup([pid], **REVIEW), pid)
        assert err.code == "POLICY_RATE_LIMITED" and err.rule
        assert err.rule.endswith(": roles.caseworker.lookups.rate_limit")
    with small.client(keys=keys, person="caseworker2") as other:
        answer = other.lookup([pid], **REVIEW)
    assert answer.complete and answer.facts == [oracle_facts(small.oracle, [pid])[pid]]


def test_two_regions_without_home_is_one_city(small: harness.Federation, keys: he.ClientKeys) -> None:
    """With two regions, every region but the asker's is one city: a per-city answer, refused for loan-review."""
    pid = sorted(r[0] for r in small.oracle("SELECT DISTINCT person_id FROM accounts"))[1]
    with small.client(keys=keys, person="caseworker2") as client:
        err = refusal(lambda: client.lookup([pid], exclude_home=True, **REVIEW), pid)
    assert err.code == "POLICY_BREAKDOWN_DENIED"


CONTRIBUTIONS = ["contributions"]


def test_facts_follow_the_data_files(small: harness.Federation, keys: he.ClientKeys) -> None:
    """A node recomputes its facts when its files change: no lookup answers from a stale copy."""
    pid = sorted(r[0] for r in small.node_oracle("hangzhou", "SELECT DISTINCT person_id FROM deposits"))[-1]
    with small.client(keys=keys, person="refresher") as client:
        tokens = small.consent_tokens([pid], "refresher")
        before = client.lookup([pid], facts=CONTRIBUTIONS, tokens=tokens, **REVIEW).facts[0]  # as this policy allows
        assert before == oracle_facts(small.oracle, [pid])[pid].only(CONTRIBUTIONS)
        path = small.root / "data" / "hangzhou" / "deposits.parquet"
        tmp = path.with_name("deposits.parquet.new")
        con = duckdb.connect()
        try:
            con.execute(
                f"COPY (SELECT * FROM read_parquet('{path}') UNION ALL "
                f"(SELECT * REPLACE (DATE '2025-01-01' AS month, 123456 AS amount_fen) "
                f"FROM read_parquet('{path}') WHERE person_id = '{pid}' LIMIT 1)) TO '{tmp}' (FORMAT parquet)"
            )
        finally:
            con.close()
        os.replace(tmp, path)
        after = client.lookup([pid], facts=CONTRIBUTIONS, tokens=tokens, **REVIEW).facts[0]
    assert after == oracle_facts(small.oracle, [pid])[pid].only(CONTRIBUTIONS)
    assert after.contribution_months == (before.contribution_months or 0) + 1
    assert after.contribution_fen == (before.contribution_fen or 0) + 123456


# last: it stops a node of the small federation
def test_one_region_answering_alone_is_not_shown_as_a_total(small: harness.Federation, keys: he.ClientKeys) -> None:
    pid = sorted(r[0] for r in small.oracle("SELECT DISTINCT person_id FROM accounts"))[2]
    small.stop_node("hangzhou")
    try:
        with small.client(keys=keys, person="caseworker3") as client:  # home: hangzhou
            # a loan review: shanghai alone is no set the caseworker may ask, so shanghai refuses the re-run
            review = refusal(lambda: client.lookup([pid], **REVIEW), pid)
            # a transfer may show shanghai's own figures: shanghai answers the re-run, and the client refuses to
            # show them as federation-wide ones
            err = refusal(lambda: client.lookup([pid], **TRANSFER), pid)
    finally:
        small.restart_node("hangzhou")
    assert review.code == "LOOKUP_REGION_MISSING" and "hangzhou (NODE_UNREACHABLE) missing" in review.message
    assert "without region(s) hangzhou" in review.message and "POLICY_BREAKDOWN_DENIED" in review.message
    assert err.code == "LOOKUP_TOO_FEW_REGIONS" and "shanghai" in err.message
    assert isinstance(err, UnavailableError) and "hangzhou (NODE_UNREACHABLE) missing" in err.message
    entries = list(map(json.loads, (small.audit_dir("shanghai") / "entries.jsonl").read_text().splitlines()))
    transfer_runs = [e for e in entries if e["nonce"] == entries[-1]["nonce"]]
    assert [(e["purpose"], e["decision"], e["participants"]) for e in transfer_runs] == [
        ("account-transfer", "allowed", "hangzhou,shanghai"),
        ("account-transfer", "allowed", "shanghai"),
    ]


def test_a_coordinator_cannot_flip_a_screening(
    fed: harness.Federation, keys: he.ClientKeys, population: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack a red team ran: holding the client's public context, the coordinator added an encryption of its
    own to one region's answer and turned a person without a loan into one with open loans in two cities. The
    client adds the regions' answers itself, each checked against the digest its region signed: a lookup and a
    screening both refuse the altered answer, whichever region's answer was altered, and never show it."""
    clean = [p for p in population.closed_only if oracle_facts(fed.oracle, [p])[p].loan_cities == 0]
    pid, other = clean[0], population.planted[0]
    two_cities = 2 << 27  # loan_cities sits at bit 27 of a person's first slot (lookup_codec)
    with fed.client(keys=keys, person="bank") as bank:
        assert not bank.lookup([pid], tokens=fed.consent_tokens([pid]), **REVIEW).facts[0].duplicate_loans
        for node in NODES:
            with lie.lying(monkeypatch, lie.add_to(keys.public_context(), node, two_cities)):
                assert (
                    refusal(lambda: bank.lookup([pid], tokens=fed.consent_tokens([pid]), **REVIEW), pid).code
                    == "ANSWER_CIPHERTEXT_MISMATCH"
                )
                err = refusal(
                    lambda: bank.screen([pid, other], tokens=fed.consent_tokens([pid, other]), **REVIEW), pid, other
                )
                assert err.code == "ANSWER_CIPHERTEXT_MISMATCH", node
        answer = bank.screen([pid, other], tokens=fed.consent_tokens([pid, other]), **REVIEW)
    assert [f.duplicate_loans for f in answer.facts] == [False, True] and answer.verified


def test_a_lookup_keeps_its_receipts_only_once_every_check_passed(
    fed: harness.Federation, keys: he.ClientKeys, population: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receipt of an answer the client refused is never kept (it would later be held against a region that may
    have done nothing wrong), and a receipt whose entry the coordinator rewrote refuses the answer."""
    pid = population.closed_only[0]

    def rewritten(a: FederatedAnswer) -> FederatedAnswer:
        first = a.receipts[0]
        entry = {**json.loads(first.entry), "purpose": "FORGED-BY-COORDINATOR"}
        forged = pb.AuditReceipt()
        forged.CopyFrom(first)
        forged.entry = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
        a.receipts = [forged, *a.receipts[1:]]
        return a

    with fed.client(keys=keys, person="bank") as bank:
        before = len(bank.kept_receipts())
        with lie.lying(monkeypatch, lie.add_to(keys.public_context(), NODES[1], 1)):
            assert (
                refusal(lambda: bank.lookup([pid], tokens=fed.consent_tokens([pid]), **REVIEW), pid).code
                == "ANSWER_CIPHERTEXT_MISMATCH"
            )
        with lie.lying(monkeypatch, rewritten):
            assert (
                refusal(lambda: bank.lookup([pid], tokens=fed.consent_tokens([pid]), **REVIEW), pid).code
                == "ANSWER_CORRUPT"
            )
            assert (
                refusal(
                    lambda: bank.screen(
                        [pid, population.planted[0]], tokens=fed.consent_tokens([pid, population.planted[0]]), **REVIEW
                    ),
                    pid,
                ).code
                == "ANSWER_CORRUPT"
            )
        assert len(bank.kept_receipts()) == before
        answer = bank.lookup([pid], tokens=fed.consent_tokens([pid]), **REVIEW)
        assert answer.receipts_verified == len(NODES) and all(r.proves_entry() for r in answer.receipts)
        assert bank.kept_receipts()[before:] == answer.receipts


@pytest.fixture(scope="module")
def unclassified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    """Two regions whose catalog leaves a column every lookup reads without a class."""
    root = tmp_path_factory.mktemp("lookup-unclassified")
    for node in SMALL_NODES:
        generate_node(root / "data", node, 500, SEED)
    policy = root / "policy.yaml"
    policy.write_text(SMALL_POLICY.format(base=DEFAULT_POLICY))
    tables = hpf_tables()
    tables["accounts"]["columns"]["balance_fen"].pop("class")
    with harness.federation(
        root, tables, {n: {} for n in SMALL_NODES}, write_data=False, policy=policy, people=SMALL_PEOPLE
    ) as f:
        yield f


def test_a_lookup_that_reads_an_unclassified_column_is_refused_by_every_region(
    unclassified: harness.Federation, keys: he.ClientKeys
) -> None:
    ids = people_where(unclassified, "SELECT person_id FROM accounts")[:1]
    with unclassified.client(keys=keys) as client:
        err = refusal(lambda: client.lookup(ids, **REVIEW), *ids)
    assert err.code == "POLICY_COLUMN_UNCLASSIFIED", err.message
    assert "balance_fen of accounts" in err.message
    for node in SMALL_NODES:
        entry = last_entry(unclassified, node)
        assert (entry["operation"], entry["decision"], entry["code"]) == ("lookup", "refused", err.code)
