"""Every refusal path, with its exact code and class: through the client (which plans locally) and on the wire.

On the wire a refusal is a gRPC status plus the stable code (and hint) in trailing metadata; the client
library turns it back into a FederationError with :func:`federation.errors.from_rpc_error`. Every request
on the wire is a properly signed question (the caseworker's envelope, bound to the public context sent), so
each refusal here is about the one thing the test got wrong, not about a missing signature. After any
refusal the server keeps serving. Regions that fail (down, slow) are listed in ``missing`` and the
others, asked again as a run of their own (their masks cancel only among themselves), still sum exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import tempfile
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import harness
import pytest
import tenseal as ts
import yaml
from coordinator_recorder import recording
from streamed import collect

from hpf.client.federation_client import FederationClient
from hpf.client.profile import ClientProfile
from hpf.coordinator.server import start_coordinator
from hpf.federation.audit.verify import read_entries
from hpf.federation.config_files import parse_model
from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.errors import (
    CryptoError,
    DataError,
    FederationError,
    PlanError,
    RequestTooLarge,
    UnavailableError,
    from_rpc_error,
)
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.planner import plan_query
from hpf.federation.trust.channels import secure_channel
from hpf.federation.trust.envelope import Signer, query_id
from hpf.federation.trust.tls import TlsConfig
from hpf.node.executor import PartialExecutor
from hpf.node.server import start_node

RPC_TIMEOUT_S = 20.0
SECRET_ID = "P-4401-SECRET"

TABLES = harness.DEPOSIT_TABLES


def _row(person: str, city: str | None, amount: int, balance: str, year: int) -> tuple[Any, ...]:
    return (person, "Acme Co", city, dt.date(year, 3, 1), amount, Decimal(balance), 0.25)


NODE_ROWS: dict[str, dict[str, list[tuple[Any, ...]]]] = {
    "n0": {"deposits": [_row(SECRET_ID, "310000", 120_000, "10.50", 2019), _row("p2", "330100", -4_000, "3.25", 2020)]},
    "n1": {"deposits": [_row("p3", "310000", 77_000, "1.00", 2021), _row("p4", None, 5, "0.01", 2019)]},
    "n2": {"deposits": [_row("p5", "320100", 900_000_000_000, "99999.99", 2024)]},
}

VALID_SQL = "SELECT city_code, COUNT(*), SUM(amount_fen), SUM(balance) FROM deposits GROUP BY 1 ORDER BY 1"

# ------------------------------------------------------------------------------------ plan refusals


@dataclasses.dataclass(frozen=True)
class Refusal:
    sql: str
    code: str
    hint_contains: str | None = None


PLAN_REFUSALS: dict[str, Refusal] = {
    "row_level_select": Refusal("SELECT amount_fen FROM deposits", "PLAN_ROW_LEVEL"),
    "row_level_select_where": Refusal(
        f"SELECT city_code FROM deposits WHERE person_id = '{SECRET_ID}'", "PLAN_ROW_LEVEL"
    ),
    "select_star": Refusal("SELECT * FROM deposits", "PLAN_ROW_LEVEL"),
    "select_distinct": Refusal("SELECT DISTINCT city_code FROM deposits", "PLAN_ROW_LEVEL"),
    "min": Refusal("SELECT MIN(amount_fen) FROM deposits", "PLAN_NOT_ADDITIVE"),
    "max": Refusal("SELECT city_code, MAX(balance) FROM deposits GROUP BY city_code", "PLAN_NOT_ADDITIVE"),
    "count_distinct": Refusal("SELECT COUNT(DISTINCT city_code) FROM deposits", "PLAN_NOT_ADDITIVE"),
    "sum_distinct": Refusal("SELECT SUM(DISTINCT amount_fen) FROM deposits", "PLAN_NOT_ADDITIVE"),
    "median": Refusal("SELECT MEDIAN(amount_fen) FROM deposits", "PLAN_NOT_ADDITIVE"),
    "join": Refusal("SELECT COUNT(*) FROM deposits a JOIN deposits b ON a.city_code = b.city_code", "PLAN_JOIN"),
    "comma_join": Refusal("SELECT COUNT(*) FROM deposits a, deposits b", "PLAN_JOIN"),
    "scalar_subquery": Refusal(
        "SELECT COUNT(*) FROM deposits WHERE amount_fen > (SELECT AVG(amount_fen) FROM deposits)", "PLAN_SUBQUERY"
    ),
    "in_subquery": Refusal(
        "SELECT COUNT(*) FROM deposits WHERE city_code IN (SELECT city_code FROM deposits)", "PLAN_SUBQUERY"
    ),
    "exists_subquery": Refusal("SELECT COUNT(*) FROM deposits WHERE EXISTS (SELECT 1 FROM deposits)", "PLAN_SUBQUERY"),
    "cte": Refusal("WITH d AS (SELECT * FROM deposits) SELECT COUNT(*) FROM d", "PLAN_CTE"),
    "union": Refusal("SELECT COUNT(*) FROM deposits UNION SELECT COUNT(*) FROM deposits", "PLAN_SET_OPERATION"),
    "union_all": Refusal(
        "SELECT SUM(amount_fen) FROM deposits UNION ALL SELECT SUM(balance) FROM deposits", "PLAN_SET_OPERATION"
    ),
    "unknown_table": Refusal("SELECT COUNT(*) FROM deposit", "PLAN_UNKNOWN_TABLE", "did you mean 'deposits'"),
    "unknown_column": Refusal(
        "SELECT SUM(amount_fn) FROM deposits", "PLAN_UNKNOWN_COLUMN", "did you mean 'amount_fen'"
    ),
    "unknown_column_in_where": Refusal(
        "SELECT COUNT(*) FROM deposits WHERE city = '310000'", "PLAN_UNKNOWN_COLUMN", "did you mean 'city_code'"
    ),
    "identifier_in_select_and_group": Refusal(
        "SELECT person_id, COUNT(*) FROM deposits GROUP BY person_id", "PLAN_IDENTIFIER_MISUSE"
    ),
    "identifier_in_group_by": Refusal("SELECT COUNT(*) FROM deposits GROUP BY person_id", "PLAN_IDENTIFIER_MISUSE"),
    "identifier_in_count": Refusal("SELECT COUNT(person_id) FROM deposits", "PLAN_IDENTIFIER_MISUSE"),
    "identifier_in_sum": Refusal("SELECT SUM(LENGTH(person_id)) FROM deposits", "PLAN_IDENTIFIER_MISUSE"),
    "identifier_in_like": Refusal(
        "SELECT COUNT(*) FROM deposits WHERE person_id LIKE 'P-44%'", "PLAN_IDENTIFIER_MISUSE"
    ),
    "identifier_in_range": Refusal(
        f"SELECT COUNT(*) FROM deposits WHERE person_id > '{SECRET_ID}'", "PLAN_IDENTIFIER_MISUSE"
    ),
    "identifier_in_or": Refusal(
        f"SELECT COUNT(*) FROM deposits WHERE person_id = '{SECRET_ID}' OR amount_fen > 0", "PLAN_IDENTIFIER_MISUSE"
    ),
    "identifier_in_filter_like": Refusal(
        "SELECT COUNT(*) FILTER (WHERE person_id LIKE 'P%') FROM deposits", "PLAN_IDENTIFIER_MISUSE"
    ),
    "group_without_domain": Refusal(
        "SELECT amount_fen, COUNT(*) FROM deposits GROUP BY amount_fen", "PLAN_GROUP_NO_DOMAIN"
    ),
    "group_by_undeclared_date_part": Refusal(
        "SELECT COUNT(*) FROM deposits GROUP BY EXTRACT(YEAR FROM month) + 1", "PLAN_GROUP_NO_DOMAIN"
    ),
    "sum_double": Refusal("SELECT SUM(score) FROM deposits", "PLAN_INEXACT_ARGUMENT"),
    "avg_double": Refusal("SELECT AVG(score) FROM deposits", "PLAN_INEXACT_ARGUMENT"),
    "stddev_double": Refusal("SELECT STDDEV_POP(score * 2) FROM deposits", "PLAN_INEXACT_ARGUMENT"),
    "division_in_sum": Refusal("SELECT SUM(amount_fen / 2) FROM deposits", "PLAN_INEXACT_ARGUMENT"),
    "syntax_dangling_and": Refusal(f"SELECT COUNT(*) FROM deposits WHERE person_id = '{SECRET_ID}' AND", "PLAN_SYNTAX"),
    "syntax_unclosed_quote": Refusal(f"SELECT COUNT(*) FROM deposits WHERE person_id = '{SECRET_ID}", "PLAN_SYNTAX"),
    "syntax_typo": Refusal(f"SELEC COUNT(*) FROM deposits WHERE person_id = '{SECRET_ID}'", "PLAN_SYNTAX"),
    "syntax_stray_paren": Refusal(f"SELECT COUNT(*) FROM deposits WHERE person_id = '{SECRET_ID}' )", "PLAN_SYNTAX"),
    "syntax_unclosed_in": Refusal(
        f"SELECT COUNT(*) FROM deposits WHERE person_id = '{SECRET_ID}' AND city_code IN (", "PLAN_SYNTAX"
    ),
}


def _assert_public(err: FederationError) -> None:
    """A refusal never echoes the person id written in the query, in its message or its hint."""
    for text in (err.message, err.hint or "", str(err)):
        assert SECRET_ID not in text
        assert "SECRET" not in text and "4401" not in text


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def client_keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@contextlib.contextmanager
def started(
    node_rows: dict[str, dict[str, list[tuple[Any, ...]]]] = NODE_ROWS, deadline_ms: int = 10_000
) -> Iterator[harness.Federation]:
    with tempfile.TemporaryDirectory(prefix="hpf-refusals-") as tmp:
        with harness.federation(Path(tmp), TABLES, node_rows, deadline_ms=deadline_ms) as fed:
            yield fed


@pytest.fixture(scope="module")
def fed() -> Iterator[harness.Federation]:
    """A federation the refusal tests share; tests that stop or slow nodes start their own."""
    with started() as federation:
        yield federation


def offline_client(fed: harness.Federation) -> FederationClient:
    """A client with the federation's catalog and certificates, but whose coordinator address answers nothing."""
    profile = parse_model(fed.profile_path, yaml.safe_load(fed.profile_path.read_text()), ClientProfile)
    return FederationClient(profile.model_copy(update={"coordinator": "127.0.0.1:1"}))


def caseworker_tls(fed: harness.Federation) -> TlsConfig:
    pki = fed.root / "pki"
    return TlsConfig(ca=pki / "ca.pem", cert=pki / "people" / "caseworker.pem", key=pki / "people" / "caseworker.key")


def coordinator_tls(fed: harness.Federation) -> TlsConfig:
    pki = fed.root / "pki"
    return TlsConfig(ca=pki / "ca.pem", cert=pki / "coordinator.pem", key=pki / "coordinator.key")


def signer(fed: harness.Federation, person: str = "caseworker") -> Signer:
    return Signer.from_files(fed.pki_dir / "people" / f"{person}.pem", fed.pki_dir / "people" / f"{person}.key")


def sign(fed: harness.Federation, sql: str, public_context: bytes) -> pb.SignedEnvelope:
    """The caseworker's signed question ``sql``, bound to ``public_context`` (whatever its bytes are)."""
    return signer(fed).sign(
        sql=sql, context_digest=he.context_digest(public_context), federation=fed.catalog.federation
    )


def query_request(
    fed: harness.Federation, keys: he.ClientKeys, sql: str, public_context: bytes | None = None
) -> pb.QueryRequest:
    """What the hpf client sends for ``sql``: signed, with the public context it signed for."""
    context = keys.public_context() if public_context is None else public_context
    return pb.QueryRequest(he_format=HE_FORMAT, envelope=sign(fed, sql, context), public_context=context)


def partial_request(
    fed: harness.Federation,
    keys: he.ClientKeys,
    sql: str,
    *,
    fingerprint: str | None = None,
    signed: pb.SignedEnvelope | None = None,
    participants: list[str] | None = None,
) -> pb.PartialRequest:
    """What the coordinator sends a node for the caseworker's signed ``sql`` (the plan's own fingerprint and a
    run over every region by default)."""
    context = keys.public_context()
    signed = sign(fed, sql, context) if signed is None else signed
    return pb.PartialRequest(
        he_format=HE_FORMAT,
        query_id=query_id(signed),
        public_context=context,
        plan_fingerprint=plan_query(sql, fed.catalog).fingerprint if fingerprint is None else fingerprint,
        envelope=signed,
        participants=fed.node_ids if participants is None else participants,
    )


@pytest.fixture(scope="module")
def coordinator_stub(fed: harness.Federation) -> Iterator[pb_grpc.CoordinatorStub]:
    channel = secure_channel(f"127.0.0.1:{fed.coordinator.port}", caseworker_tls(fed))
    with channel:
        yield pb_grpc.CoordinatorStub(channel)


def wire_refusal(stub: pb_grpc.CoordinatorStub, request: pb.QueryRequest) -> tuple[grpc.RpcError, FederationError]:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Query(request, timeout=RPC_TIMEOUT_S))
    return info.value, from_rpc_error(info.value)


def oracle_without(fed: harness.Federation, absent: set[str], sql: str) -> list[tuple[Any, ...]]:
    """The oracle over the files of every node except ``absent``."""
    files = {t: [p for p in paths if p.parent.name not in absent] for t, paths in fed.data_files.items()}
    return dataclasses.replace(fed, data_files=files).oracle(sql)


def rows_as_tuples(rows: list[list[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in rows]


def logged_runs(fed: harness.Federation, node_id: str) -> list[tuple[str, str]]:
    """The (nonce, participants) of every question ``node_id`` answered, in its audit log's order."""
    text = (fed.audit_dir(node_id) / "entries.jsonl").read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    return [(e["nonce"], e["participants"]) for e in entries if e["decision"] == "allowed"]


# ------------------------------------------------------------------------------ plan refusals: client


@pytest.mark.parametrize("case", list(PLAN_REFUSALS.values()), ids=list(PLAN_REFUSALS))
def test_client_refuses_before_sending(fed: harness.Federation, case: Refusal) -> None:
    """The client plans locally: pointed at no coordinator at all, it still refuses with the plan's own error."""
    with offline_client(fed) as client:
        with pytest.raises(PlanError) as info:
            client.query(case.sql)
    err = info.value
    assert err.code == case.code
    assert type(err) is PlanError
    if case.hint_contains:
        assert err.hint is not None and case.hint_contains in err.hint
    _assert_public(err)


# -------------------------------------------------------------------------------- plan refusals: wire


@pytest.mark.parametrize("case", list(PLAN_REFUSALS.values()), ids=list(PLAN_REFUSALS))
def test_coordinator_refuses_on_the_wire(
    fed: harness.Federation, coordinator_stub: pb_grpc.CoordinatorStub, client_keys: he.ClientKeys, case: Refusal
) -> None:
    rpc_error, err = wire_refusal(coordinator_stub, query_request(fed, client_keys, case.sql))
    assert rpc_error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.code == case.code
    assert type(err) is PlanError
    if case.hint_contains:
        assert err.hint is not None and case.hint_contains in err.hint
    _assert_public(err)
    assert SECRET_ID not in (rpc_error.details() or "")


def test_coordinator_keeps_serving_after_refusals(
    fed: harness.Federation, coordinator_stub: pb_grpc.CoordinatorStub, client_keys: he.ClientKeys
) -> None:
    for case in PLAN_REFUSALS.values():
        wire_refusal(coordinator_stub, query_request(fed, client_keys, case.sql))
    wire_refusal(coordinator_stub, query_request(fed, client_keys, VALID_SQL, public_context=b"garbage"))
    reply, blobs = collect(coordinator_stub.Query(query_request(fed, client_keys, VALID_SQL), timeout=RPC_TIMEOUT_S))
    assert list(reply.answered) == fed.node_ids and all(len(blobs[n]) == 1 for n in fed.node_ids)
    with fed.client() as client:
        answer = client.query(VALID_SQL)
    assert rows_as_tuples(answer.rows) == fed.oracle(VALID_SQL)


# ------------------------------------------------------------------------------------ crypto refusals


def _context_with_secret(keys: he.ClientKeys) -> bytes:
    ctx = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=he.POLY_MODULUS_DEGREE, plain_modulus=he.PLAIN_MODULUS)
    return ctx.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False)


CONTEXT_REFUSALS = {
    "garbage": (lambda keys: b"\x00garbage" * 64, "CONTEXT_INVALID"),
    "empty": (lambda keys: b"", "CONTEXT_INVALID"),
    "truncated": (lambda keys: keys.public_context()[: len(keys.public_context()) // 2], "CONTEXT_INVALID"),
    "secret_key": (_context_with_secret, "CONTEXT_HAS_SECRET"),
}


@pytest.mark.parametrize("make_context, code", list(CONTEXT_REFUSALS.values()), ids=list(CONTEXT_REFUSALS))
def test_bad_public_context_is_refused_on_the_wire(
    fed: harness.Federation,
    coordinator_stub: pb_grpc.CoordinatorStub,
    client_keys: he.ClientKeys,
    make_context: Any,
    code: str,
) -> None:
    """A bad context the asker really signed for (its digest is in the envelope) is refused for what it is, and
    the class a caller catches follows the code's family (CONTEXT_* is a CryptoError), as in error_for_code."""
    request = query_request(fed, client_keys, VALID_SQL, public_context=make_context(client_keys))
    rpc_error, err = wire_refusal(coordinator_stub, request)
    assert rpc_error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.code == code
    assert isinstance(err, CryptoError), f"{code} came back as {type(err).__name__}"


def test_a_context_other_than_the_signed_one_is_refused(
    fed: harness.Federation, coordinator_stub: pb_grpc.CoordinatorStub, client_keys: he.ClientKeys
) -> None:
    """A valid public context is refused too when it is not the one the asker signed for."""
    request = query_request(fed, client_keys, VALID_SQL)
    request.public_context = he.ClientKeys.generate().public_context()
    rpc_error, err = wire_refusal(coordinator_stub, request)
    assert rpc_error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.code == "AUTH_CONTEXT_MISMATCH"


def test_oversized_request_is_resource_exhausted(
    fed: harness.Federation, coordinator_stub: pb_grpc.CoordinatorStub, client_keys: he.ClientKeys
) -> None:
    """The coordinator accepts requests of at most 4 MiB (coordinator.server.MAX_REQUEST_BYTES)."""
    oversized = query_request(fed, client_keys, VALID_SQL, public_context=b"\x01" * (5 * 1024 * 1024))
    rpc_error, err = wire_refusal(coordinator_stub, oversized)
    assert rpc_error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(err, RequestTooLarge)
    reply, _ = collect(coordinator_stub.Query(query_request(fed, client_keys, VALID_SQL), timeout=RPC_TIMEOUT_S))
    assert list(reply.answered) == fed.node_ids


def test_node_refuses_an_oversized_request(fed: harness.Federation, client_keys: he.ClientKeys) -> None:
    """A node accepts requests of at most 8 MiB (node.server.MAX_REQUEST_BYTES)."""
    channel = secure_channel(f"127.0.0.1:{fed.nodes['n0'].port}", coordinator_tls(fed))
    with channel:
        stub = pb_grpc.NodeStub(channel)
        good = partial_request(fed, client_keys, "SELECT COUNT(*) FROM deposits")
        oversized = pb.PartialRequest()
        oversized.CopyFrom(good)
        oversized.public_context = b"\x01" * (9 * 1024 * 1024)
        with pytest.raises(grpc.RpcError) as info:
            stub.ComputePartial(oversized, timeout=RPC_TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # the same signed question at its normal size is answered: the refusal was about the size alone
        assert stub.ComputePartial(good, timeout=RPC_TIMEOUT_S).node_id == "n0"


def test_overlong_sql_is_refused(
    fed: harness.Federation, coordinator_stub: pb_grpc.CoordinatorStub, client_keys: he.ClientKeys
) -> None:
    sql = "SELECT COUNT(*) FROM deposits WHERE " + " OR ".join(["amount_fen > 1"] * 3000)
    rpc_error, err = wire_refusal(coordinator_stub, query_request(fed, client_keys, sql))
    assert rpc_error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.code == "PLAN_TOO_LONG" and isinstance(err, PlanError)


# ------------------------------------------------------------------------------- regions that fail


def test_dead_node_is_listed_missing_and_the_rest_sums_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    with recording(monkeypatch) as recorder, started() as fed:
        fed.stop_node("n1")
        with fed.client() as client:
            answer = client.query(VALID_SQL)
        assert answer.answered == ["n0", "n2"]
        assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n1", "NODE_UNREACHABLE")]
        assert rows_as_tuples(answer.rows) == oracle_without(fed, {"n1"}, VALID_SQL)
        assert rows_as_tuples(answer.rows) != fed.oracle(VALID_SQL)  # n1's rows really are left out
        # the survivors had masked against n1 in the first run; they were asked again, as a run of their own
        assert recorder.heads[-1].timings.runs == 2 and answer.statements_verified == 2
        for node_id in answer.answered:
            assert [p for _, p in logged_runs(fed, node_id)] == ["n0,n1,n2", "n0,n2"]


@contextlib.contextmanager
def slow_node(monkeypatch: pytest.MonkeyPatch, node_id: str) -> Iterator[threading.Event]:
    """Make ``node_id`` hold every partial until released (at the latest after 10 s)."""
    release = threading.Event()
    original = PartialExecutor.compute

    def compute(self: PartialExecutor, *args: Any, **kwargs: Any) -> Any:
        if self.node_id == node_id:
            release.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PartialExecutor, "compute", compute)
    try:
        yield release
    finally:
        release.set()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where_deadline", ["request", "coordinator"])
def test_slow_node_times_out_and_the_rest_sums_exactly(monkeypatch: pytest.MonkeyPatch, where_deadline: str) -> None:
    deadline_ms = 3_000
    with (
        recording(monkeypatch) as recorder,
        started(deadline_ms=deadline_ms if where_deadline == "coordinator" else 10_000) as fed,
    ):
        with fed.client() as client:
            client.query(VALID_SQL)  # warm up: every node has loaded the client's context
            with slow_node(monkeypatch, "n2"):
                answer = client.query(VALID_SQL, deadline_ms=deadline_ms if where_deadline == "request" else None)
        assert answer.answered == ["n0", "n1"]
        assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n2", "NODE_TIMEOUT")]
        assert rows_as_tuples(answer.rows) == oracle_without(fed, {"n2"}, VALID_SQL)
        assert rows_as_tuples(answer.rows) != fed.oracle(VALID_SQL)  # n2's rows really are left out
        # the first run's sum would not cancel without n2's masks: the survivors answered a second run, the
        # same signed question (one nonce) under a smaller participant set
        assert recorder.heads[-1].timings.runs == 2 and answer.statements_verified == 2
        for node_id in answer.answered:
            (nonce, first), (again, second) = logged_runs(fed, node_id)[-2:]
            assert nonce == again and (first, second) == ("n0,n1,n2", "n0,n1")


def test_all_nodes_down_is_regions_unavailable(client_keys: he.ClientKeys) -> None:
    with started() as fed:
        for node_id in fed.node_ids:
            fed.stop_node(node_id)
        with fed.client() as client:
            with pytest.raises(UnavailableError) as info:
                client.query(VALID_SQL)
        assert info.value.code == "REGIONS_UNAVAILABLE"
        assert all(n in info.value.message for n in fed.node_ids)
        channel = secure_channel(f"127.0.0.1:{fed.coordinator.port}", caseworker_tls(fed))
        with channel:
            rpc_error, err = wire_refusal(pb_grpc.CoordinatorStub(channel), query_request(fed, client_keys, VALID_SQL))
        assert rpc_error.code() == grpc.StatusCode.UNAVAILABLE
        assert err.code == "REGIONS_UNAVAILABLE" and isinstance(err, UnavailableError)


def test_every_node_failing_alike_comes_back_as_a_data_error(
    fed: harness.Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every region failing to run a plan (NODE_EXECUTION_FAILED) is passed on with a NODE_* code and class."""
    sql = "SELECT COUNT(*) FROM deposits WHERE employer LIKE 'A%'"
    with fed.client() as client, harness.scans_stopped(monkeypatch, fed, fed.node_ids):
        with pytest.raises(FederationError) as info:
            client.query(sql)
    assert info.value.code == "NODE_EXECUTION_FAILED"
    assert isinstance(info.value, DataError), f"came back as {type(info.value).__name__}"


# ----------------------------------------------------------------------------- the Node service itself


def test_node_refuses_a_plan_fingerprint_it_does_not_derive(
    fed: harness.Federation, client_keys: he.ClientKeys
) -> None:
    sql = "SELECT COUNT(*), SUM(amount_fen) FROM deposits"
    channel = secure_channel(f"127.0.0.1:{fed.nodes['n0'].port}", coordinator_tls(fed))
    with channel:
        stub = pb_grpc.NodeStub(channel)
        request = partial_request(fed, client_keys, sql, fingerprint="0" * 64)
        with pytest.raises(grpc.RpcError) as info:
            stub.ComputePartial(request, timeout=RPC_TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        err = from_rpc_error(info.value)
        assert err.code == "PLAN_MISMATCH" and isinstance(err, PlanError)
        # the same request (the same signed question, whose nonce a refusal does not use up) with the plan's
        # real fingerprint is answered: the refusal was about the fingerprint
        good = partial_request(fed, client_keys, sql, signed=request.envelope)
        assert good.envelope == request.envelope and good.plan_fingerprint != request.plan_fingerprint
        reply = stub.ComputePartial(good, timeout=RPC_TIMEOUT_S)
        assert reply.node_id == "n0" and len(reply.ciphertexts) == 1


@pytest.mark.parametrize(
    "participants",
    [[], ["n1", "n2"], ["n0", "n0", "n1"], ["n0", "n9"], ["n0", ""]],
    ids=["none", "not_this_region", "twice", "not_in_catalog", "empty_id"],
)
def test_node_refuses_a_malformed_participant_set(
    fed: harness.Federation, client_keys: he.ClientKeys, participants: list[str]
) -> None:
    """A run must name this region, each region once and only regions of the catalog: otherwise the masks
    could not cancel (or would cancel for a set the node never agreed to)."""
    sql = "SELECT COUNT(*), SUM(amount_fen) FROM deposits"
    channel = secure_channel(f"127.0.0.1:{fed.nodes['n0'].port}", coordinator_tls(fed))
    with channel:
        stub = pb_grpc.NodeStub(channel)
        request = partial_request(fed, client_keys, sql, participants=participants)
        with pytest.raises(grpc.RpcError) as info:
            stub.ComputePartial(request, timeout=RPC_TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        err = from_rpc_error(info.value)
        assert err.code == "SECAGG_PARTICIPANTS_INVALID" and isinstance(err, PlanError)
        # the same signed question (its nonce not used up by the refusal) over a proper set is answered
        good = partial_request(fed, client_keys, sql, signed=request.envelope)
        reply = stub.ComputePartial(good, timeout=RPC_TIMEOUT_S)
        assert reply.node_id == "n0" and len(reply.ciphertexts) == 1


def test_node_refuses_a_connection_without_client_certificate(
    fed: harness.Federation, client_keys: he.ClientKeys
) -> None:
    ca = (fed.root / "pki" / "ca.pem").read_bytes()
    channel = grpc.secure_channel(
        f"127.0.0.1:{fed.nodes['n0'].port}", grpc.ssl_channel_credentials(root_certificates=ca)
    )
    with channel:
        request = partial_request(fed, client_keys, "SELECT COUNT(*) FROM deposits")
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.NodeStub(channel).ComputePartial(request, timeout=RPC_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails: no RPC reaches the node


def test_coordinator_refuses_a_connection_without_client_certificate(
    fed: harness.Federation, client_keys: he.ClientKeys
) -> None:
    ca = (fed.root / "pki" / "ca.pem").read_bytes()
    address = f"127.0.0.1:{fed.coordinator.port}"
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca)) as channel:
        with pytest.raises(grpc.RpcError) as info:
            stub = pb_grpc.CoordinatorStub(channel)
            list(stub.Query(query_request(fed, client_keys, VALID_SQL), timeout=RPC_TIMEOUT_S))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------ failures specific to one query, not to a region


def test_what_used_to_overflow_on_one_row_is_computed_wide_and_exact() -> None:
    """amount_fen * 4 overflowed BIGINT on n0's row alone, a failure that told the asker n0 held such a row. The
    planner computes row arithmetic in HUGEINT, so the answer is exact; a sum whose slots could overflow is
    refused at plan time, for every region alike, before anything runs."""
    rows = {
        "n0": {"deposits": [_row("p1", "310000", 2**62, "1.00", 2019)]},
        "n1": {"deposits": [_row("p2", "310000", 3, "1.00", 2019)]},
    }
    with started(rows) as fed, fed.client() as client:
        assert client.query("SELECT SUM(amount_fen * 4) FROM deposits").rows == [[(2**62 + 3) * 4]]
        too_wide = "SELECT SUM(CAST(amount_fen AS DECIMAL(38, 0)) * 100000000000) FROM deposits"
        with pytest.raises(PlanError) as info:
            client.query(too_wide)
        assert info.value.code == "PLAN_MAY_OVERFLOW"


def test_one_region_failing_a_query_fails_the_query_not_silently_short(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A region that stops the query after admitting it (its own limit) fails the whole query, value-free, and
    without telling the coordinator (or the asker) which region: that would say something about its rows."""
    sql = "SELECT SUM(amount_fen * 4) FROM deposits"
    rows = {
        "n0": {"deposits": [_row("p1", "310000", 2**62, "1.00", 2019)]},
        "n1": {"deposits": [_row("p2", "310000", 3, "1.00", 2019)]},
    }
    with started(rows) as fed, fed.client() as client:
        caplog.clear()
        caplog.set_level(logging.INFO, logger="hpf.coordinator")
        with pytest.raises(DataError) as info, harness.scans_stopped(monkeypatch, fed, ["n0"]):
            client.query(sql)
        assert info.value.code == "NODE_EXECUTION_FAILED"
        assert info.value.message.startswith("1 region(s) could not compute this query over their own rows")
        assert "n0" not in info.value.message and "n1" not in info.value.message
        assert str(2**62) not in info.value.message and "4611" not in info.value.message
        # both regions answered with a ciphertext: the coordinator saw no failure and listed no region missing
        coordinator_lines = [r.getMessage() for r in caplog.records if r.name == "hpf.coordinator"]
        assert not any("missing (" in line for line in coordinator_lines)
        assert any("2 region(s) answered, 0 missing" in line for line in coordinator_lines)
        # the federation keeps serving
        assert client.query("SELECT SUM(amount_fen) FROM deposits").rows == [[2**62 + 3]]


def test_a_region_whose_files_are_gone_is_listed_missing_not_as_a_failure_on_rows() -> None:
    rows = {
        "n0": {"deposits": [_row("p1", "310000", 5, "1.00", 2019)]},
        "n1": {"deposits": [_row("p2", "310000", 3, "1.00", 2019)]},
    }
    with started(rows) as fed, fed.client() as client:
        for path in fed.data_files["deposits"]:
            if path.parent.name == "n0":
                path.unlink()
        answer = client.query("SELECT SUM(amount_fen) FROM deposits")
    assert answer.rows == [[3]] and answer.answered == ["n1"]
    assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n0", "NODE_UNWELL")]


def test_a_bad_literal_is_refused_at_plan_time_without_echoing_it(fed: harness.Federation) -> None:
    sql = f"SELECT COUNT(*) FROM deposits WHERE month = '{SECRET_ID}'"
    with fed.client() as client:
        with pytest.raises(PlanError) as info:
            client.query(sql)
    assert info.value.code == "PLAN_BIND"
    assert "SECRET" not in str(info.value) and "4401" not in str(info.value)


def test_an_identifier_equality_inside_filter_is_refused(fed: harness.Federation) -> None:
    sql = f"SELECT COUNT(*) FILTER (WHERE person_id = '{SECRET_ID}') FROM deposits"
    with fed.client() as client:
        with pytest.raises(PlanError) as info:
            client.query(sql)
    assert info.value.code == "PLAN_IDENTIFIER_MISUSE"


# ----------------------------------------------------------------------------- the HE wire format

OTHER_HE_FORMAT = "tenseal-0.3.14/seal-4.1/bfv-4096"  # what an older TenSEAL writes: SEAL 4.1 cannot read 4.3


def _names_both_formats(err: FederationError, theirs: str) -> None:
    assert err.code == "HE_FORMAT_MISMATCH" and isinstance(err, CryptoError), err
    assert theirs in err.message and HE_FORMAT in err.message, err.message


@pytest.mark.parametrize("theirs", [OTHER_HE_FORMAT, ""], ids=["older", "unstated"])
def test_a_request_in_another_he_format_is_refused_before_its_context_is_parsed(
    fed: harness.Federation, client_keys: he.ClientKeys, coordinator_stub: pb_grpc.CoordinatorStub, theirs: str
) -> None:
    sql = "SELECT COUNT(*), SUM(amount_fen) FROM deposits"
    parsed: list[bytes] = []
    with pytest.MonkeyPatch.context() as m:  # neither party parses a context stated in another format
        original = he.load_public_context
        m.setattr(he, "load_public_context", lambda data, digest=None: parsed.append(data) or original(data, digest))
        request = query_request(fed, client_keys, sql)
        request.he_format = theirs
        rpc_error, err = wire_refusal(coordinator_stub, request)
        assert rpc_error.code() == grpc.StatusCode.INVALID_ARGUMENT
        _names_both_formats(err, theirs or "(none stated)")
        with secure_channel(f"127.0.0.1:{fed.nodes['n0'].port}", coordinator_tls(fed)) as channel:
            stub = pb_grpc.NodeStub(channel)
            partial = partial_request(fed, client_keys, sql)
            partial.he_format = theirs
            with pytest.raises(grpc.RpcError) as info:
                stub.ComputePartial(partial, timeout=RPC_TIMEOUT_S)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            _names_both_formats(from_rpc_error(info.value), theirs or "(none stated)")
            assert parsed == []
            # the same signed question in this federation's format is answered: the refusal was the format's
            partial.he_format = HE_FORMAT
            assert stub.ComputePartial(partial, timeout=RPC_TIMEOUT_S).node_id == "n0"
    last = list(read_entries(fed.audit_dir("n0")))[-2]  # the node logged the refusal (the answer came after)
    assert (last["decision"], last["code"]) == ("refused", "HE_FORMAT_MISMATCH")
    with fed.client(keys=client_keys) as client:  # the client states its format: the honest path answers
        assert rows_as_tuples(client.query(sql).rows) == fed.oracle(sql)


def test_a_catalog_naming_another_he_format_stops_nodes_and_the_coordinator_from_starting(
    fed: harness.Federation, tmp_path: Path
) -> None:
    text = fed.node_configs["n0"].catalog.read_text(encoding="utf-8")
    assert "he_format:" not in text

    def catalog_stating(he_format: str) -> Path:  # the federation's catalog file, stating a format
        path = tmp_path / f"federation-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(f"he_format: {he_format}\n" + text, encoding="utf-8")
        return path

    other = catalog_stating(OTHER_HE_FORMAT)
    with pytest.raises(CryptoError) as at_node:
        start_node(fed.node_configs["n0"].model_copy(update={"catalog": other}), "127.0.0.1:0")
    assert fed.coordinator_config is not None
    with pytest.raises(CryptoError) as at_coordinator:
        start_coordinator(fed.coordinator_config.model_copy(update={"catalog": other}), "127.0.0.1:0", addresses={})
    for err, party in ((at_node.value, "node n0"), (at_coordinator.value, "the coordinator")):
        assert err.code == "HE_FORMAT_MISMATCH" and party in err.message, err
        assert OTHER_HE_FORMAT in err.message and HE_FORMAT in err.message, err.message
    # the catalog naming this federation's own format starts (the coordinator holds no state to share)
    own = fed.coordinator_config.model_copy(update={"catalog": catalog_stating(HE_FORMAT)})
    start_coordinator(own, "127.0.0.1:0", addresses={}).stop(0)


def test_the_pinned_tenseal_is_the_installed_one_and_writes_the_expected_format() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'"tenseal=={ts.__version__}"' in pyproject  # exact: the wire format depends on it
    assert HE_FORMAT == he.EXPECTED_HE_FORMAT
