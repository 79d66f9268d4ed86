"""Who may see what (protocol.md, "What each party may learn"), checked on a running federation.

(a) the client's secret key is never serialized, pickled, shown or left readable by others;
(b) the coordinator only ever holds ciphertexts: every payload a node sends it is a BFV ciphertext under the
    client's key, no plaintext partial or row value appears in any message it receives, and its public
    context cannot decrypt; no row value travels back in an error message either, and a client cannot
    fetch one region's partial by calling a node itself;
(c) an answer encrypted under another key pair never becomes a silently wrong result.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import hashlib
import os
import pickle
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import harness
import numpy as np
import pytest
import tenseal as ts
import yaml

import coordinator.server
from coordinator.fanout import FanOut
from federation import he
from federation.client import FederationClient
from federation.config_files import parse_model
from federation.errors import FederationError, from_rpc_error
from federation.generated import hpf_federation_pb2 as pb
from federation.generated import hpf_federation_pb2_grpc as pb_grpc
from federation.limb_codec import LIMB_BITS
from federation.plan import Plan
from federation.planner import plan_query
from federation.profile import ClientProfile
from federation.slot_codec import chunks, encode_partials
from federation.tls import TlsConfig, secure_channel
from node.executor import PartialExecutor, PartialResult

RPC_TIMEOUT_S = 20.0

TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "employer": {"type": "VARCHAR"},
            "city_code": {"type": "VARCHAR", "domain": {"values": ["310000", "330100", "320100"]}},
            "month": {"type": "DATE", "domain": {"range": ["2015-01-01", "2024-12-31"]}},
            "amount_fen": {"type": "BIGINT"},
            "balance": {"type": "DECIMAL(12,2)"},
        }
    }
}

# Distinctive values: a match of one of them in a message cannot be a coincidence.
NODE_ROWS: dict[str, dict[str, list[tuple[Any, ...]]]] = {
    "n0": {
        "deposits": [
            (
                "PID-SECRET-00017",
                "Bohai Heavy Steel Works",
                "310000",
                dt.date(2019, 4, 1),
                7_431_559_281_337,
                Decimal("8812345.67"),
            ),
            (
                "PID-SECRET-00018",
                "Qiantang Silk Weavers",
                "330100",
                dt.date(2021, 9, 1),
                5_120_983_004_611,
                Decimal("1234567.89"),
            ),
            (
                "PID-SECRET-00019",
                "Bohai Heavy Steel Works",
                "310000",
                dt.date(2022, 1, 1),
                3_998_877_665_543,
                Decimal("4400221.13"),
            ),
        ]
    },
    "n1": {
        "deposits": [
            (
                "PID-SECRET-00101",
                "Jinling Optics Factory",
                "320100",
                dt.date(2018, 2, 1),
                9_007_199_254_740,
                Decimal("9988776.55"),
            ),
            (
                "PID-SECRET-00102",
                "Qiantang Silk Weavers",
                "330100",
                dt.date(2020, 6, 1),
                6_660_123_987_001,
                Decimal("3141592.65"),
            ),
        ]
    },
    "n2": {
        "deposits": [
            (
                "PID-SECRET-00200",
                "Xuanwu Lake Ferries",
                "320100",
                dt.date(2023, 11, 1),
                1_357_924_680_135,
                Decimal("2718281.83"),
            ),
        ]
    },
}
ROW_STRINGS = sorted({str(v) for rows in NODE_ROWS.values() for r in rows["deposits"] for v in (r[0], r[1])})

QUERIES = [
    "SELECT COUNT(*), SUM(amount_fen), SUM(balance) FROM deposits",
    "SELECT city_code, COUNT(*), SUM(amount_fen), AVG(balance) FROM deposits GROUP BY city_code ORDER BY 1",
    "SELECT EXTRACT(YEAR FROM month) AS y, VAR_POP(amount_fen), STDDEV_SAMP(balance) FROM deposits GROUP BY y "
    "ORDER BY y",
    "SELECT SUM(amount_fen) FILTER (WHERE employer LIKE 'Bohai%'), COUNT(*) FROM deposits",
]


@contextlib.contextmanager
def started(node_rows: dict[str, dict[str, list[tuple[Any, ...]]]] = NODE_ROWS) -> Iterator[harness.Federation]:
    with tempfile.TemporaryDirectory(prefix="hpf-secrecy-") as tmp:
        with harness.federation(Path(tmp), TABLES, node_rows) as fed:
            yield fed


def client_with_keys(fed: harness.Federation, keys: he.ClientKeys) -> FederationClient:
    """A client of ``fed`` holding ``keys`` (so the test can decrypt what the nodes sent)."""
    profile = parse_model(fed.profile_path, yaml.safe_load(fed.profile_path.read_text()), ClientProfile)
    return FederationClient(profile, keys=keys)


def node_oracle(fed: harness.Federation, node_id: str, sql: str) -> list[tuple[Any, ...]]:
    """DuckDB over one node's own files only."""
    files = {t: [p for p in paths if p.parent.name == node_id] for t, paths in fed.data_files.items()}
    return dataclasses.replace(fed, data_files=files).oracle(sql)


# ------------------------------------------------------------------------------ (a) the secret key


def test_public_context_holds_no_secret_key() -> None:
    keys = he.ClientKeys.generate()
    ctx = ts.context_from(keys.public_context())
    assert not ctx.has_secret_key()
    assert not ctx.is_private()
    assert ctx.has_public_key()
    assert not ctx.has_galois_keys() and not ctx.has_relin_keys()
    with pytest.raises(ValueError):
        ts.bfv_vector(ctx, [1, 2, 3]).decrypt()


def test_client_keys_cannot_be_pickled_or_copied() -> None:
    keys = he.ClientKeys.generate()
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(keys, protocol=protocol)
    with pytest.raises(TypeError):
        copy.deepcopy(keys)


def test_client_keys_repr_shows_no_key_material() -> None:
    keys = he.ClientKeys.generate()
    public = keys.public_context()
    for text in (repr(keys), str(keys)):
        assert text.startswith("ClientKeys(")
        assert len(text) < 80  # a digest prefix at most, never a serialized key
        assert public.hex()[:40] not in text and public[:40].decode("latin-1") not in text


def test_key_file_is_private_and_holds_the_same_key_pair(tmp_path: Path) -> None:
    key_file = tmp_path / "profile" / "keys" / "client.bfv"
    old_umask = os.umask(0o022)  # a permissive umask must not widen the file
    try:
        keys = he.ClientKeys.load_or_generate(key_file)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = he.ClientKeys.load_or_generate(key_file)
    assert again.public_context() == keys.public_context()
    blob = he.encrypt_slots(he.load_public_context(keys.public_context()), np.arange(5, dtype=np.int64))
    assert again.decrypt(blob, 5).tolist() == [0, 1, 2, 3, 4]
    assert key_file.read_bytes() != keys.public_context()  # the file holds more than the public part


# ------------------------------------------------------------------ (b) the coordinator's view


class NodeTrafficRecorder(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Records every request the coordinator sends to a node and every response it gets back."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.responses: list[Any] = []
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        with self._lock:
            self.requests.append(request)
        outcome = continuation(details, request)

        def record(call: Any) -> None:
            if call.exception() is None:
                with self._lock:
                    self.responses.append(call.result())

        outcome.add_done_callback(record)
        return outcome

    def wait_for(self, n_responses: int, timeout_s: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.responses) >= n_responses:
                    return list(self.responses)
            time.sleep(0.01)
        raise AssertionError(f"only {len(self.responses)} of {n_responses} node responses recorded")


@dataclasses.dataclass
class CoordinatorView:
    node_traffic: NodeTrafficRecorder
    queries: list[tuple[str, bytes]]  # what the coordinator received from the client
    answers: list[list[bytes]]  # the summed ciphertexts it sent back


@pytest.fixture
def coordinator_view(monkeypatch: pytest.MonkeyPatch) -> CoordinatorView:
    """Record what the coordinator handles; applies to federations started after it."""
    view = CoordinatorView(NodeTrafficRecorder(), [], [])

    def recording_channel(address: str, tls: TlsConfig | None, **kwargs: Any) -> grpc.Channel:
        return grpc.intercept_channel(secure_channel(address, tls, **kwargs), view.node_traffic)

    original_query = FanOut.query

    def recording_query(self: FanOut, sql: str, public_context: bytes, deadline_ms: int = 0) -> Any:
        view.queries.append((sql, public_context))
        answer = original_query(self, sql, public_context, deadline_ms)
        view.answers.append(list(answer.ciphertexts))
        return answer

    monkeypatch.setattr(coordinator.server, "secure_channel", recording_channel)
    monkeypatch.setattr(FanOut, "query", recording_query)
    return view


def plaintext_partials(fed: harness.Federation, node_id: str, plan: Plan) -> tuple[list[int], np.ndarray]:
    """A node's plaintext partial numbers (as scaled integers) and its slot vector, computed here with DuckDB."""
    rows = node_oracle(fed, node_id, plan.node_sql())
    numbers: list[int] = []
    n_keys = len(plan.keys)
    for row in rows:
        pos = n_keys
        for comp in (c for c in plan.components if c.from_sql):  # the withheld mark is no SQL result
            terms = row[pos : pos + len(comp.sql_terms())]
            pos += len(comp.sql_terms())
            if all(v is not None for v in terms):
                numbers.append(
                    comp.combine([int(Decimal(v).scaleb(0 if comp.kind == "sumsq" else comp.scale)) for v in terms])
                )
    return numbers, encode_partials(plan, rows)


def byte_patterns(value: int) -> list[bytes]:
    """How a number could show up in a message: decimal text, or 8/16-byte two's complement."""
    patterns = [str(value).encode()]
    for width in (8, 16):
        if -(1 << (8 * width - 1)) <= value < (1 << (8 * width - 1)):
            patterns += [value.to_bytes(width, "little", signed=True), value.to_bytes(width, "big", signed=True)]
    return patterns


def test_coordinator_only_ever_holds_ciphertexts(coordinator_view: CoordinatorView) -> None:
    keys = he.ClientKeys.generate()
    with started() as fed:
        with client_with_keys(fed, keys) as client:
            for sql in QUERIES:
                answer = client.query(sql)
                assert answer.missing == [] and [tuple(r) for r in answer.rows] == fed.oracle(sql)
        responses = coordinator_view.node_traffic.wait_for(len(QUERIES) * len(fed.node_ids))

        # what the client sent: the SQL and a public context without a secret key
        assert [sql for sql, _ in coordinator_view.queries] == QUERIES
        for _, public_context in coordinator_view.queries:
            received = ts.context_from(public_context)
            assert not received.has_secret_key() and not received.is_private()
        coordinator_ctx = he.load_public_context(coordinator_view.queries[0][1])

        plans = {plan.fingerprint: plan for plan in (plan_query(sql, fed.catalog) for sql in QUERIES)}
        assert len(responses) == len(QUERIES) * len(fed.node_ids)
        searched = 0  # distinctive plaintext partials looked for
        for response in responses:
            plan = plans[response.plan_fingerprint]
            numbers, slots = plaintext_partials(fed, response.node_id, plan)
            wire = response.SerializeToString()
            # no plaintext partial, no limb of one, no row string is in what the node sent
            for value in (v for v in numbers if abs(v) >= 10**6):
                searched += 1
                for pattern in byte_patterns(value):
                    assert pattern not in wire, f"a plaintext partial of {response.node_id} is in its answer"
            for limb in {int(v) for v in slots if abs(int(v)) >= 1 << 20}:
                assert limb.to_bytes(8, "little", signed=True) not in wire
            for text in ROW_STRINGS:
                assert text.encode() not in wire
            # every payload is a BFV ciphertext under the client's key, holding exactly the node's partials
            sizes = plan.layout.chunk_sizes
            assert len(response.ciphertexts) == len(sizes)
            for blob, expected, size in zip(response.ciphertexts, chunks(slots), sizes, strict=True):
                vector = ts.bfv_vector_from(coordinator_ctx, blob)
                assert vector.size() == size
                with pytest.raises(ValueError):  # the coordinator's context cannot decrypt
                    vector.decrypt()
                assert keys.decrypt(blob, size).tolist() == expected.tolist()

        assert searched >= 3 * len(QUERIES)
        # the summed answers it returned are ciphertexts too, and hold no row string
        for ciphertexts in coordinator_view.answers:
            for blob in ciphertexts:
                ts.bfv_vector_from(coordinator_ctx, blob)
                assert not any(text.encode() in blob for text in ROW_STRINGS)
        # and no request it sent to a node carried data: only the client's SQL, context and the plan fingerprint
        for request in coordinator_view.node_traffic.requests:
            assert request.sql in QUERIES
            assert not any(text.encode() in request.SerializeToString() for text in ROW_STRINGS)


LEAKY_QUERIES = [
    "SELECT COUNT(*) FROM deposits WHERE CAST(employer AS DATE) > DATE '2020-01-01'",
    "SELECT COUNT(*) FROM deposits WHERE CAST(employer AS DECIMAL(10, 2)) > 0",
    "SELECT COUNT(*) FROM deposits WHERE json_extract(employer, '$.a') IS NOT NULL",
    "SELECT COUNT(*) FROM deposits WHERE error(employer) IS NULL",
]


@pytest.mark.parametrize("sql", LEAKY_QUERIES, ids=["cast_date", "cast_decimal", "json", "error"])
def test_no_row_value_travels_back_in_an_error(sql: str) -> None:
    """A node's engine error about a row must reach neither the coordinator nor the client with the row's value."""
    with started() as fed:
        with fed.client() as client:
            try:
                answer = client.query(sql)
            except FederationError as err:
                texts = [err.message, err.hint or "", str(err)]
            else:
                texts = [m["message"] for m in answer.missing]
    for text in texts:
        for value in ROW_STRINGS:
            assert value not in text, f"the row value {value!r} crossed the wire: {text!r}"


def test_a_client_cannot_fetch_one_regions_partial_from_a_node() -> None:
    """Only the coordinator may ask a node for its partial: a client must never learn one region's partial."""
    keys = he.ClientKeys.generate()
    with started() as fed:
        pki = fed.root / "pki"
        caseworker = TlsConfig(
            ca=pki / "ca.pem", cert=pki / "people" / "caseworker.pem", key=pki / "people" / "caseworker.key"
        )
        sql = "SELECT SUM(amount_fen) FROM deposits"
        request = pb.PartialRequest(
            query_id="q-direct",
            sql=sql,
            public_context=keys.public_context(),
            plan_fingerprint=plan_query(sql, fed.catalog).fingerprint,
        )
        with secure_channel(f"127.0.0.1:{fed.nodes['n0'].port}", caseworker) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.NodeStub(channel).ComputePartial(request, timeout=RPC_TIMEOUT_S)
        assert info.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def test_node_describes_itself_to_the_coordinator_only() -> None:
    with started() as fed:
        pki = fed.root / "pki"
        coordinator = TlsConfig(ca=pki / "ca.pem", cert=pki / "coordinator.pem", key=pki / "coordinator.key")
        caseworker = TlsConfig(
            ca=pki / "ca.pem", cert=pki / "people" / "caseworker.pem", key=pki / "people" / "caseworker.key"
        )
        address = f"127.0.0.1:{fed.nodes['n0'].port}"
        with secure_channel(address, coordinator) as channel:
            reply = pb_grpc.NodeStub(channel).Describe(pb.DescribeRequest(), timeout=RPC_TIMEOUT_S)
        assert reply.node_id == "n0" and list(reply.tables) == sorted(fed.catalog.tables)
        assert reply.catalog_digest == hashlib.sha256(fed.catalog_path.read_bytes()).hexdigest()
        with secure_channel(address, caseworker) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.NodeStub(channel).Describe(pb.DescribeRequest(), timeout=RPC_TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert from_rpc_error(info.value).code == "PARTY_NOT_ALLOWED"


# ------------------------------------------------------------------- (c) answers under another key


@contextlib.contextmanager
def node_encrypting_with(
    monkeypatch: pytest.MonkeyPatch, node_id: str, encrypt: Callable[[np.ndarray], bytes]
) -> Iterator[None]:
    """Make ``node_id`` encrypt its (correct) partials with ``encrypt`` instead of the client's key."""
    original = PartialExecutor.compute

    def compute(
        self: PartialExecutor, query_id: str, sql: str, public_context: bytes, fingerprint: str, digest: str = ""
    ) -> PartialResult:
        result = original(self, query_id, sql, public_context, fingerprint, digest)
        if self.node_id != node_id:
            return result
        plan = plan_query(sql, self.catalog)
        flat = encode_partials(plan, self.backend.run(plan.node_sql()))
        return dataclasses.replace(result, ciphertexts=[encrypt(chunk) for chunk in chunks(flat)])

    monkeypatch.setattr(PartialExecutor, "compute", compute)
    yield


def oracle_without(fed: harness.Federation, node_id: str, sql: str) -> list[tuple[Any, ...]]:
    files = {t: [p for p in paths if p.parent.name != node_id] for t, paths in fed.data_files.items()}
    return dataclasses.replace(fed, data_files=files).oracle(sql)


SUM_SQL = "SELECT SUM(amount_fen), SUM(balance) FROM deposits"


def test_ciphertext_with_foreign_parameters_is_a_bad_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=8192, plain_modulus=he.PLAIN_MODULUS)

    def encrypt(chunk: np.ndarray) -> bytes:
        return bytes(ts.bfv_vector(foreign, chunk.tolist()).serialize())

    with started() as fed, node_encrypting_with(monkeypatch, "n1", encrypt):
        with fed.client() as client:
            answer = client.query(SUM_SQL)
        assert answer.answered == ["n0", "n2"]
        assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n1", "NODE_BAD_ANSWER")]
        assert [tuple(r) for r in answer.rows] == oracle_without(fed, "n1", SUM_SQL)


def test_ciphertext_under_another_key_pair_never_gives_a_silent_wrong_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same parameters, another key pair: the coordinator cannot tell, but the answer must not be garbage.

    Either the coordinator drops the region (NODE_BAD_ANSWER) or the client refuses the decrypted totals
    (each limb sum over k regions is below k * 2**30 in size, far from what a wrong key decrypts to).
    """
    other_keys = he.ClientKeys.generate()
    other_ctx = he.load_public_context(other_keys.public_context())
    with started() as fed, node_encrypting_with(monkeypatch, "n1", lambda c: he.encrypt_slots(other_ctx, c)):
        with fed.client() as client:
            try:
                answer = client.query(SUM_SQL)
            except FederationError as err:
                assert err.code in ("ANSWER_CORRUPT", "CIPHERTEXT_INVALID")
                return
        bound = len(fed.node_ids) << LIMB_BITS
        assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n1", "NODE_BAD_ANSWER")], (
            f"a region encrypted under another key was summed in; the client printed {answer.rows} "
            f"where the regions hold {fed.oracle(SUM_SQL)} (limb sums should stay below {bound})"
        )
        assert [tuple(r) for r in answer.rows] == oracle_without(fed, "n1", SUM_SQL)
