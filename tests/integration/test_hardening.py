"""The SQL surface and the node's own limits, attacked on running federations as an asker within policy would.

Each attack is sent the way an attacker's own client would send it: a question signed by a person of the
federation, straight to the coordinator (no client-side planning in between), and, playing a coordinator that
colludes with the asker, straight to a node with the coordinator's certificate. Each must be refused with its
code by every party, and the next honest question must still be answered exactly (DuckDB over the pooled files).

Classes, each with several forms (see docs/sql-surface.md):

1. forms that name a column without a plain column reference, or read the engine's state;
2. expressions that could fail on some values only (casts, implicit casts, overflow, division, bounds);
3. expressions whose cost or allocation an argument sets;
4. work before policy: a refused role or purpose makes no party bind anything (an injected binder counts);
5. nesting;
6. the engine: unknown functions never reach DuckDB's extension loader;
7. the wait is the server's: an asker's short deadline does not shorten it below the floor.

The node's own limits (time and memory) are in tests/integration/test_node_limits.py.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import harness
import pytest
from streamed import collect

from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.errors import FederationError, from_rpc_error
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.planner.binder import SchemaBinder
from hpf.federation.trust.channels import secure_channel
from hpf.federation.trust.envelope import Signer, query_id
from hpf.federation.trust.tls import TlsConfig
from hpf.node.executor import PartialExecutor

RPC_TIMEOUT_S = 30.0
SECRET_ID = "310101199001011237"
TABLES = harness.DEPOSIT_TABLES


def _row(person: str, employer: str, city: str, amount: int, balance: str, year: int) -> tuple[Any, ...]:
    return (person, employer, city, f"{year}-03-01", amount, balance, 0.5)


NODE_ROWS = {
    "n0": {
        "deposits": [
            _row(SECRET_ID, "Acme 12", "310000", 120_000, "10.50", 2019),
            _row("p2", "7", "330100", 5, "3.25", 2020),
        ]
    },
    "n1": {
        "deposits": [_row("p3", "Steel", "310000", 77_000, "1.00", 2021), _row("p4", "x", "320100", 5, "0.01", 2019)]
    },
    "n2": {"deposits": [_row("p5", "东方", "320100", 900_000_000_000, "99999.99", 2024)]},
}
PEOPLE = (("caseworker", "caseworker", None), ("auditor", "auditor", None))
HONEST = "SELECT city_code, COUNT(*) AS n, SUM(amount_fen) AS total FROM deposits GROUP BY city_code ORDER BY city_code"

# 1. what names a column without a plain column reference, or reads what a question has no business reading
NAMING = [
    f"SELECT COUNT(*) FROM deposits WHERE COLUMNS('person_id') <> '{SECRET_ID}'",
    "SELECT COUNT(*) FROM deposits WHERE COLUMNS('.*id') IS NOT NULL",
    "SELECT SUM(COLUMNS(*)) FROM deposits",
    "SELECT COUNT(*) FROM deposits WHERE COLUMNS(c -> c LIKE '%id') = 'x'",
    "SELECT COUNT(*) FROM deposits WHERE #1 = 'x'",
    "SELECT COUNT(*) FROM deposits WHERE list_transform([amount_fen], x -> x + 1) = [2]",
    "SELECT COUNT(*) FROM deposits WHERE list_filter([employer], x -> x = 'Acme 12') = ['Acme 12']",
    "SELECT COUNT(*) FROM deposits WHERE {'a': employer}.a = 'x'",
    "SELECT COUNT(*) FROM deposits WHERE struct_pack(a := employer).a = 'x'",
    "SELECT COUNT(*) FROM deposits WHERE employer[1] = 'A'",
    "SELECT COUNT(*) FROM deposits WHERE row(employer, amount_fen) IS NOT NULL",
    "SELECT COUNT(*) FROM deposits WHERE getvariable('v') IS NULL",
    "SELECT COUNT(*) FROM deposits WHERE current_setting('memory_limit') <> ''",
    "SELECT COUNT(*) FROM deposits WHERE length(query('SELECT 1')) > 0",
    "SELECT COUNT(*) FROM deposits WHERE employer IN (SELECT employer FROM deposits)",
    "SELECT COUNT(*) FROM deposits WHERE employer = ANY([person_id])",
    "SELECT COUNT(*) FROM deposits WHERE unnest([employer]) = 'x'",
    "SELECT COUNT(*) FROM deposits WHERE employer::STRUCT(a VARCHAR) IS NULL",
    "SELECT COUNT(*) FROM deposits WHERE employer ~ 'A.*'",
    "SELECT COUNT(*) FROM deposits WHERE employer SIMILAR TO 'A%'",
    "SELECT COUNT(*) FROM deposits WHERE employer GLOB 'A*'",
    "SELECT COUNT(*) FROM deposits WHERE employer LIKE 'A%' ESCAPE '!'",
    "SELECT COUNT(*) FROM deposits WHERE employer COLLATE nocase = 'acme 12'",
    "SELECT COUNT(*) FROM deposits WHERE json_extract(employer, '$.a') IS NOT NULL",
    "SELECT COUNT(*) FROM deposits WHERE x'41' IS NOT NULL",
    "SELECT COUNT(*) FROM deposits WHERE amount_fen = 0x10",
    "SELECT COUNT(*) FROM deposits WHERE amount_fen > 1e3",
    "SELECT COUNT(*), employer AS e FROM deposits WHERE e = 'x'",
    "SELECT COUNT(*) FROM deposits WHERE error('boom') IS NULL",
]
# 2. what could fail on some values only: the failure would say those values exist
FAILING = [
    "SELECT COUNT(*) FROM deposits WHERE CAST(employer AS INTEGER) > 0",
    "SELECT COUNT(*) FROM deposits WHERE CAST(employer AS DATE) > DATE '2020-01-01'",
    "SELECT COUNT(*) FROM deposits WHERE employer = 7",
    "SELECT COUNT(*) FROM deposits WHERE employer IN (7, 8)",
    "SELECT COUNT(*) FROM deposits WHERE month = employer",
    "SELECT COUNT(*) FROM deposits WHERE employer",
    "SELECT COUNT(*) FROM deposits WHERE NOT employer",
    "SELECT COUNT(*) FROM deposits WHERE COALESCE(amount_fen, employer) IS NULL",
    "SELECT COUNT(*) FROM deposits WHERE CASE WHEN amount_fen > 0 THEN employer ELSE amount_fen END IS NULL",
    "SELECT COUNT(*) FROM deposits WHERE CAST(score AS BIGINT) > 0",
    "SELECT COUNT(*) FROM deposits WHERE CAST(amount_fen AS INTEGER) > 0",
    "SELECT COUNT(*) FROM deposits WHERE CAST(amount_fen - 119999 AS UTINYINT) = 1",
    "SELECT SUM(CAST(balance AS DECIMAL(4, 0))) FROM deposits",
    "SELECT COUNT(*) FROM deposits WHERE amount_fen * amount_fen * amount_fen > 0",
    "SELECT COUNT(*) FROM deposits WHERE balance = 1.0000000000000000000000000000001",
    "SELECT COUNT(*) FROM deposits WHERE amount_fen // 0 = 1",
    "SELECT COUNT(*) FROM deposits WHERE amount_fen % (amount_fen - 120000) = 1",
    "SELECT COUNT(*) FROM deposits WHERE substring(employer, 1, 99999999999) = 'x'",
    "SELECT COUNT(*) FROM deposits WHERE month + 1 > DATE '2020-01-01'",
    "SELECT COUNT(*) FROM deposits WHERE make_date(amount_fen, 1, 1) > DATE '2020-01-01'",
    "SELECT VAR_POP(amount_fen * amount_fen) FROM deposits",
]
# 3. what an argument makes expensive: time or memory set by the asker, not by the rows
COSTLY = [
    "SELECT COUNT(*) FROM deposits WHERE length(repeat('x', 2000000000)) > 0",
    "SELECT COUNT(*) FROM deposits WHERE len(list_resize([1], 2000000000)) > 0",
    "SELECT COUNT(*) FROM deposits WHERE len(range(2000000000)) > 0",
    "SELECT COUNT(*) FROM deposits WHERE regexp_matches(employer, '(a*)*b')",
    "SELECT COUNT(*) FROM deposits WHERE levenshtein(employer, 'x') > 0",
    "SELECT COUNT(*) FROM deposits WHERE lpad(employer, 2000000000, 'x') = 'x'",
    "SELECT COUNT(*) FROM deposits WHERE employer LIKE '" + "%a" * 150 + "'",
    "SELECT COUNT(*) FROM deposits WHERE amount_fen IN (" + ", ".join(str(i) for i in range(1_500)) + ")",
]


@pytest.fixture(scope="module")
def fed() -> Iterator[harness.Federation]:
    with tempfile.TemporaryDirectory(prefix="hpf-hardening-") as tmp:
        with harness.federation(Path(tmp), TABLES, NODE_ROWS, people=PEOPLE, min_deadline_ms=3_000) as f:
            yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


def _tls(fed: harness.Federation, who: str) -> TlsConfig:
    pki = fed.pki_dir
    if who == "coordinator":
        return TlsConfig(ca=pki / "ca.pem", cert=pki / "coordinator.pem", key=pki / "coordinator.key")
    return TlsConfig(ca=pki / "ca.pem", cert=pki / "people" / f"{who}.pem", key=pki / "people" / f"{who}.key")


def _signed(
    fed: harness.Federation, keys: he.ClientKeys, sql: str, person: str = "caseworker", purpose: str = ""
) -> pb.SignedEnvelope:
    signer = Signer.from_files(fed.pki_dir / "people" / f"{person}.pem", fed.pki_dir / "people" / f"{person}.key")
    return signer.sign(
        sql=sql,
        context_digest=he.context_digest(keys.public_context()),
        federation=fed.catalog.federation,
        purpose=purpose,
    )


def ask_coordinator(
    fed: harness.Federation, keys: he.ClientKeys, sql: str, person: str = "caseworker", purpose: str = ""
) -> tuple[pb.QueryResponse | None, FederationError | None]:
    """The attacker's own client: a signed question straight to the coordinator."""
    request = pb.QueryRequest(
        he_format=HE_FORMAT, envelope=_signed(fed, keys, sql, person, purpose), public_context=keys.public_context()
    )
    with secure_channel(f"127.0.0.1:{fed.coordinator.port}", _tls(fed, person)) as channel:
        try:
            return collect(pb_grpc.CoordinatorStub(channel).Query(request, timeout=RPC_TIMEOUT_S))[0], None
        except grpc.RpcError as err:
            return None, from_rpc_error(err)


def ask_node(
    fed: harness.Federation, keys: he.ClientKeys, node_id: str, sql: str, person: str = "caseworker"
) -> FederationError:
    """A coordinator colluding with the asker sends the signed question straight to a node."""
    signed = _signed(fed, keys, sql, person)
    request = pb.PartialRequest(
        he_format=HE_FORMAT,
        query_id=query_id(signed),
        public_context=keys.public_context(),
        plan_fingerprint="0" * 64,  # the coordinator could not plan it: whatever it claims
        envelope=signed,
        participants=fed.node_ids,
    )
    with secure_channel(f"127.0.0.1:{fed.nodes[node_id].port}", _tls(fed, "coordinator")) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.NodeStub(channel).ComputePartial(request, timeout=RPC_TIMEOUT_S)
    return from_rpc_error(info.value)


def assert_honest_question_answered(fed: harness.Federation) -> None:
    with fed.client() as client:
        answer = client.query(HONEST)
    assert answer.missing == [] and [tuple(r) for r in answer.rows] == fed.oracle(HONEST)


@pytest.fixture
def binds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL text any party in this process binds (client, coordinator and nodes share the process)."""
    seen: list[str] = []
    original = SchemaBinder.types

    def counted(self: SchemaBinder, sql: str) -> list[str]:
        seen.append(sql)
        return original(self, sql)

    monkeypatch.setattr(SchemaBinder, "types", counted)
    return seen


def _unique(sql: str) -> str:
    """The same question made new (plans are cached per SQL text): a comment never changes what is asked."""
    return f"{sql} -- {uuid.uuid4().hex}"


# ------------------------------------------------------------------------- 1-3: refused by every party, by code


# the codes each class may be refused with (the allow-list, or the totality stage's proofs)
NOT_ALLOWED = (
    "PLAN_EXPRESSION_NOT_ALLOWED",
    "PLAN_SUBQUERY",
    "PLAN_ROW_LEVEL",
    "PLAN_IDENTIFIER_MISUSE",
    "PLAN_SYNTAX",
    "PLAN_NOT_GROUPED",
)
NOT_TOTAL = ("PLAN_CAST_NOT_TOTAL", "PLAN_TYPE_MIX", "PLAN_MAY_OVERFLOW", "PLAN_EXPRESSION_NOT_ALLOWED")
ATTACKS = (
    [pytest.param(sql, NOT_ALLOWED, "n0", id=f"naming-{i}") for i, sql in enumerate(NAMING)]
    + [pytest.param(sql, NOT_TOTAL, "n1", id=f"failing-{i}") for i, sql in enumerate(FAILING)]
    + [pytest.param(sql, ("PLAN_EXPRESSION_NOT_ALLOWED",), "n2", id=f"costly-{i}") for i, sql in enumerate(COSTLY)]
)


@pytest.mark.parametrize(("sql", "codes", "node_id"), ATTACKS)
def test_each_attack_is_refused_by_every_party_before_anything_is_bound(
    fed: harness.Federation, keys: he.ClientKeys, binds: list[str], sql: str, codes: tuple[str, ...], node_id: str
) -> None:
    """Refused by the coordinator and by a node asked directly, with the same code, value-free; no party binds
    any of it; the next honest question is answered exactly."""
    sql = _unique(sql)
    reply, err = ask_coordinator(fed, keys, sql)
    assert reply is None and err is not None
    assert err.code in codes, err
    assert SECRET_ID not in err.message and SECRET_ID not in (err.hint or "")
    from_node = ask_node(fed, keys, node_id, sql)
    assert from_node.code == err.code, (from_node, err)
    assert binds == [], "nothing of a refused construct may be bound by any party"
    assert_honest_question_answered(fed)


def test_the_same_questions_from_the_client_library_are_refused_before_sending(fed: harness.Federation) -> None:
    with fed.client() as client:
        for sql in [NAMING[0], FAILING[0], COSTLY[0]]:
            err = harness.refusal(lambda sql=sql: client.query(sql))  # type: ignore[misc]
            assert err.code.startswith("PLAN_")


# -------------------------------------------------------------------------------------- 4: policy before work


CRAFTED = (
    "SELECT city_code, COUNT(*), SUM(amount_fen * 3) FROM deposits WHERE "
    + " OR ".join(f"(employer LIKE '%{i}%' AND CASE WHEN amount_fen > {i} THEN TRUE ELSE FALSE END)" for i in range(60))
    + " GROUP BY city_code"
)


def test_a_refused_role_makes_no_party_bind_anything(
    fed: harness.Federation, keys: he.ClientKeys, binds: list[str]
) -> None:
    sql = _unique(CRAFTED)
    reply, err = ask_coordinator(fed, keys, sql, person="auditor")
    assert reply is None and err is not None and err.code == "POLICY_ROLE_DENIED", err
    assert binds == [], "a role refused outright cost a party a binder run"
    # the count is real: the same question from an admitted role is bound (by every node, once each)
    reply, err = ask_coordinator(fed, keys, sql, person="caseworker")
    assert err is None and reply is not None
    assert len([b for b in binds if "SUM(" in b]) >= len(fed.node_ids)


def test_an_unknown_purpose_makes_no_party_bind_anything(
    fed: harness.Federation, keys: he.ClientKeys, binds: list[str]
) -> None:
    sql = _unique(CRAFTED)
    reply, err = ask_coordinator(fed, keys, sql, purpose="not-a-purpose")
    assert reply is None and err is not None and err.code == "POLICY_PURPOSE_UNKNOWN", err
    assert binds == []


def test_an_explain_by_a_refused_role_makes_no_party_bind_anything(
    fed: harness.Federation, keys: he.ClientKeys, binds: list[str]
) -> None:
    """Explain goes through the same admission as a question: every region's verdict, and nothing bound."""
    sql = _unique(CRAFTED)
    signer = Signer.from_files(fed.pki_dir / "people" / "auditor.pem", fed.pki_dir / "people" / "auditor.key")
    signed = signer.sign(
        sql=sql,
        context_digest=he.context_digest(keys.public_context()),
        federation=fed.catalog.federation,
        operation="explain",
    )
    with secure_channel(f"127.0.0.1:{fed.coordinator.port}", _tls(fed, "auditor")) as channel:
        reply = pb_grpc.CoordinatorStub(channel).Explain(pb.ExplainRequest(envelope=signed), timeout=RPC_TIMEOUT_S)
    assert [v.code for v in reply.verdicts] == ["POLICY_ROLE_DENIED"] * len(fed.node_ids)
    assert binds == []


def test_the_coordinator_never_binds_an_askers_sql(
    fed: harness.Federation, keys: he.ClientKeys, binds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every node's binder taken away, the question still reaches the nodes: the coordinator bound nothing."""
    sql = _unique(HONEST)
    reached: list[str] = []
    original = PartialExecutor.compute

    def compute(self: PartialExecutor, *args: Any, **kwargs: Any) -> Any:
        reached.append(self.node_id)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PartialExecutor, "compute", compute)
    reply, err = ask_coordinator(fed, keys, sql)
    assert err is None and reply is not None
    assert sorted(reached) == sorted(fed.node_ids)
    # each node bound the plan once (the probe, each summed argument, the finish): the coordinator added nothing
    probes = [b for b in binds if b.startswith("SELECT city_code")]
    assert len(probes) == len(fed.node_ids)


# ------------------------------------------------------------------------------------------------ 5: nesting


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM deposits WHERE " + "(" * 45 + "amount_fen > 0" + ")" * 45,
        "SELECT COUNT(*) FROM deposits WHERE " + "(" * 300 + "amount_fen > 0" + ")" * 300,
        "SELECT COUNT(*) FROM deposits WHERE " + "NOT " * 2000 + "amount_fen > 0",
        "SELECT COUNT(*) FROM deposits WHERE amount_fen" + " + 1" * 4000 + " > 0",
        "SELECT COUNT(*) FROM deposits WHERE " + "CASE WHEN TRUE THEN " * 40 + "TRUE" + " END" * 40,
        "SELECT COUNT(*) FROM deposits WHERE abs(" * 40 + "amount_fen" + ")" * 40 + " > 0",
    ],
    ids=["parens45", "parens300", "not2000", "chain4000", "case40", "calls40"],
)
def test_deep_nesting_is_refused_with_a_code(
    fed: harness.Federation, keys: he.ClientKeys, binds: list[str], sql: str
) -> None:
    reply, err = ask_coordinator(fed, keys, _unique(sql))
    assert reply is None and err is not None and err.code == "PLAN_TOO_NESTED", err
    assert ask_node(fed, keys, "n0", _unique(sql)).code == "PLAN_TOO_NESTED"
    assert binds == []
    assert_honest_question_answered(fed)


def test_deep_nesting_in_the_cli_is_a_one_line_error(fed: harness.Federation) -> None:
    sql = "SELECT COUNT(*) FROM deposits WHERE " + "(" * 300 + "amount_fen > 0" + ")" * 300
    done = subprocess.run(
        [sys.executable, "-m", "hpf.cli", "query", "--profile", str(fed.profile_path), sql],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "PLAN_TOO_NESTED" in done.stderr and "Traceback" not in done.stderr + done.stdout


# ------------------------------------------------------------------------------------------------- 6: the engine


def test_an_unknown_function_is_refused_by_name_and_never_reaches_the_engine(
    fed: harness.Federation, keys: he.ClientKeys, binds: list[str]
) -> None:
    for sql in [
        "SELECT COUNT(*) FROM deposits WHERE st_area(employer) > 0",  # a spatial extension's function
        "SELECT COUNT(*) FROM deposits WHERE read_text('/etc/passwd') IS NOT NULL",
        "SELECT COUNT(*) FROM deposits WHERE httpfs_thing(employer) > 0",
    ]:
        reply, err = ask_coordinator(fed, keys, _unique(sql))
        assert err is not None and err.code == "PLAN_EXPRESSION_NOT_ALLOWED", err
    assert binds == []
    assert_honest_question_answered(fed)


# ------------------------------------------------------------------------------------------ 7: the wait's floor


def test_an_askers_short_deadline_does_not_shorten_the_wait_below_the_floor(
    fed: harness.Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n2 takes 1.5 s; the asker asks for 100 ms; the floor is 3 s: every region is answered, none named."""
    original = PartialExecutor.compute
    slowed = threading.Event()

    def compute(self: PartialExecutor, *args: Any, **kwargs: Any) -> Any:
        if self.node_id == "n2":
            slowed.set()
            time.sleep(1.5)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PartialExecutor, "compute", compute)
    with fed.client() as client:
        answer = client.query(HONEST, deadline_ms=100)
    assert slowed.is_set()
    assert answer.missing == [] and sorted(answer.answered) == sorted(fed.node_ids)
    assert [tuple(r) for r in answer.rows] == fed.oracle(HONEST)


def test_answers_carry_no_region_timings(fed: harness.Federation, keys: he.ClientKeys) -> None:
    signed = _signed(fed, keys, _unique(HONEST))
    request = pb.PartialRequest(
        he_format=HE_FORMAT,
        query_id=query_id(signed),
        public_context=keys.public_context(),
        plan_fingerprint=harness_plan_fingerprint(fed, signed),
        envelope=signed,
        participants=fed.node_ids,
    )
    with secure_channel(f"127.0.0.1:{fed.nodes['n0'].port}", _tls(fed, "coordinator")) as channel:
        reply = pb_grpc.NodeStub(channel).ComputePartial(request, timeout=RPC_TIMEOUT_S)
    assert reply.ciphertexts
    sent = {field.name for field, _ in reply.ListFields()}
    assert not any("ms" in name for name in sent), sent  # no timing of any kind leaves the region
    assert not {"scan_ms", "encrypt_ms", "total_ms"} & {f.name for f in pb.PartialResponse.DESCRIPTOR.fields}
    with fed.client() as client:
        answer = client.query(HONEST)
    assert not any(k.startswith("node_") for k in answer.timings), answer.timings


def harness_plan_fingerprint(fed: harness.Federation, signed: pb.SignedEnvelope) -> str:
    from hpf.federation.planner import sketch_query

    return sketch_query(pb.QueryEnvelope.FromString(signed.envelope).sql, fed.catalog).fingerprint


def test_a_long_list_of_conditions_is_no_nesting(fed: harness.Federation) -> None:
    """A chain of ORs (or ANDs) is walked as a list by every stage: 600 conditions are answered exactly."""
    sql = "SELECT COUNT(*) AS n, SUM(amount_fen) AS total FROM deposits WHERE " + " OR ".join(
        f"amount_fen = {i}" for i in range(5, 605)
    )
    with fed.client() as client:
        answer = client.query(sql)
    assert [tuple(r) for r in answer.rows] == fed.oracle(sql) == [(2, 10)]
