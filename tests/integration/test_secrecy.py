"""Who may see what (protocol.md, "What each party may learn"), checked on a running federation.

(a) the client's secret key is never serialized, pickled, shown or left readable by others;
(b) the coordinator only ever holds ciphertexts: every payload a node sends it is a BFV ciphertext under the
    client's key, no row value, plaintext partial or person identifier appears in any message it receives
    (signed questions, node answers with their audit receipts, explain verdicts, error statuses), and its
    public context cannot decrypt; no row value travels back in an error message either, and a client
    cannot fetch one region's partial by calling a node itself, even with a properly signed question; nor,
    colluding with the coordinator, by decrypting one region's answer: it is masked for the run's other
    participants, and only the sum over the whole run is the sum of the partials;
(c) an answer encrypted under another key pair never becomes a silently wrong result.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import os
import pickle
import stat
import struct
import tempfile
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
from coordinator_recorder import CoordinatorRecorder, recording
from grpc_health.v1 import health_pb2

from hpf.client.federation_client import FederationClient
from hpf.client.profile import ClientProfile
from hpf.federation.config_files import parse_model
from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.crypto.limb_codec import LIMB_BITS
from hpf.federation.crypto.slot_codec import FAILED, chunks, encode_partials
from hpf.federation.errors import FederationError, from_rpc_error
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.plan import Plan
from hpf.federation.planner import plan_query
from hpf.federation.trust.channels import secure_channel
from hpf.federation.trust.envelope import query_id
from hpf.federation.trust.tls import TlsConfig
from hpf.node.executor import Noisy, PartialExecutor, PartialResult

RPC_TIMEOUT_S = 20.0

TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "employer": {"type": "VARCHAR", "class": "public"},
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": ["310000", "330100", "320100"]}},
            "month": {"type": "DATE", "class": "public", "domain": {"range": ["2015-01-01", "2024-12-31"]}},
            "amount_fen": {"type": "BIGINT", "class": "public"},
            "balance": {"type": "DECIMAL(12,2)", "class": "public"},
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


LEAKY_QUERIES = [
    "SELECT COUNT(*) FROM deposits WHERE CAST(employer AS DATE) > DATE '2020-01-01'",
    "SELECT COUNT(*) FROM deposits WHERE CAST(employer AS DECIMAL(10, 2)) > 0",
    "SELECT COUNT(*) FROM deposits WHERE json_extract(employer, '$.a') IS NOT NULL",
    "SELECT COUNT(*) FROM deposits WHERE error(employer) IS NULL",
]
EXPLAINED = "SELECT city_code, SUM(balance) FROM deposits GROUP BY city_code"


@pytest.fixture
def coordinator_view(monkeypatch: pytest.MonkeyPatch) -> Iterator[CoordinatorRecorder]:
    """Record what the coordinator receives; applies to federations started after it."""
    with recording(monkeypatch) as recorder:
        yield recorder


def centred(total: np.ndarray) -> np.ndarray:
    """``total`` modulo the plain modulus, in [-(t-1)/2, (t-1)/2]: what decrypting a sum of ciphertexts gives."""
    out = np.remainder(total, he.PLAIN_MODULUS)
    out[out > he.HALF_PLAIN] -= he.PLAIN_MODULUS
    return out


def plaintext_partials(fed: harness.Federation, node_id: str, plan: Plan) -> tuple[list[int], np.ndarray, list[Any]]:
    """A node's plaintext partials, computed here with DuckDB on its own files: the numbers (as scaled integers),
    its slot vector, and the raw values DuckDB returns for the partial plan."""
    rows = fed.node_oracle(node_id, plan.node_sql())
    numbers: list[int] = []
    raw: list[Any] = []
    n_keys = len(plan.keys)
    for row in rows:
        raw += list(row[n_keys:])
        pos = n_keys
        for comp in (c for c in plan.components if c.from_sql):  # the withheld mark is no SQL result
            terms = row[pos : pos + len(comp.sql_terms())]
            pos += len(comp.sql_terms())
            if all(v is not None for v in terms):
                numbers.append(
                    comp.combine([int(Decimal(v).scaleb(0 if comp.kind == "sumsq" else comp.scale)) for v in terms])
                )
    return numbers, encode_partials(plan, rows), raw


def byte_patterns(value: int) -> list[bytes]:
    """How a whole number could show up in a message: decimal text, or 8/16-byte two's complement."""
    patterns = [str(value).encode()]
    for width in (8, 16):
        if -(1 << (8 * width - 1)) <= value < (1 << (8 * width - 1)):
            patterns += [value.to_bytes(width, "little", signed=True), value.to_bytes(width, "big", signed=True)]
    return patterns


def float_patterns(value: float) -> list[bytes]:
    return [struct.pack("<d", value), struct.pack(">d", value)]


EPOCH = dt.date(1970, 1, 1)
# Digits shorter than this could turn up by chance in the hex digests and nonces the coordinator legitimately
# receives; every partial searched for as text is longer.
MIN_TEXT_CHARS = 9
MIN_BINARY = 1 << 20  # an 8-byte pattern of a smaller number (0, 1, 2, sizes) is in any protobuf or SEAL header


def row_value_patterns(fed: harness.Federation) -> dict[bytes, str]:
    """Every distinct cell of the test data, in each form it could plausibly travel in, with what it is.

    City codes are left out: they are the catalog's declared domain, which the coordinator holds anyway.
    """
    columns = fed.catalog.tables["deposits"].columns
    listed = {c for c, col in columns.items() if col.domain is not None and col.domain.values is not None}
    names = list(columns)
    patterns: dict[bytes, str] = {}
    for rows in NODE_ROWS.values():
        for row in rows["deposits"]:
            for column, value in zip(names, row, strict=True):
                what = f"the row value {value!r} ({column})"
                forms: list[bytes] = []
                if column in listed:
                    continue
                if isinstance(value, str):
                    forms += [value.encode(), value.encode("utf-16-le")]
                elif isinstance(value, dt.date):
                    days = (value - EPOCH).days
                    forms += [value.isoformat().encode(), value.strftime("%Y%m%d").encode()]
                    forms += [days.to_bytes(8, "little"), days.to_bytes(8, "big")]
                    forms += [(days * 86_400_000_000).to_bytes(8, "little")]  # a timestamp in microseconds
                elif isinstance(value, Decimal):
                    scaled = int(value.scaleb(2))
                    forms += [str(value).encode(), *byte_patterns(scaled), *float_patterns(float(value))]
                else:
                    forms += [*byte_patterns(value), *float_patterns(float(value))]
                for form in forms:
                    assert len(form) >= 8, (what, form)  # long enough not to turn up by chance
                    patterns[form] = what
    return patterns


def partial_patterns(fed: harness.Federation, plans: list[Plan]) -> tuple[dict[bytes, str], int]:
    """Every distinctive plaintext partial of every node for ``plans``, as text and 8/16-byte integers."""
    patterns: dict[bytes, str] = {}
    searched = 0
    for plan in plans:
        for node_id in fed.node_ids:
            numbers, slots, raw = plaintext_partials(fed, node_id, plan)
            what = f"a plaintext partial of {node_id} for plan {plan.fingerprint[:12]}"
            for value in {v for v in numbers if abs(v) >= MIN_BINARY}:
                searched += 1
                for form in byte_patterns(value):
                    if len(form) >= MIN_TEXT_CHARS or not form.isdigit():
                        patterns[form] = f"{what}: {value}"
            for limb in {int(v) for v in slots if abs(int(v)) >= MIN_BINARY}:
                patterns[limb.to_bytes(8, "little", signed=True)] = f"{what}: limb {limb}"
            for value in raw:  # DuckDB's own rendering of the partial (e.g. a DECIMAL sum)
                if value is not None and len(str(value)) >= MIN_TEXT_CHARS:
                    patterns[str(value).encode()] = f"{what}: {value}"
                if isinstance(value, (int, float, Decimal)) and abs(value) >= MIN_BINARY:
                    patterns.update({p: f"{what}: {value}" for p in float_patterns(float(value))})
    return patterns, searched


def test_coordinator_only_ever_holds_ciphertexts(
    coordinator_view: CoordinatorRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A curious coordinator records every message it receives during a run of federated queries, a failing
    query and an explain: none contains a row, a plaintext partial or an identifier."""
    keys = he.ClientKeys.generate()
    leaky = "SELECT COUNT(*) FROM deposits WHERE employer LIKE '%a%'"  # every node stops it at its own limit
    with started() as fed:
        with client_with_keys(fed, keys) as client:
            for sql in QUERIES:
                answer = client.query(sql)
                assert answer.missing == [] and [tuple(r) for r in answer.rows] == fed.oracle(sql)
            with pytest.raises(FederationError) as failed, harness.scans_stopped(monkeypatch, fed, fed.node_ids):
                client.query(leaky)
            assert failed.value.code == "NODE_EXECUTION_FAILED" and "3 region(s)" in failed.value.message
            plan, explained = client.explain(EXPLAINED)
            assert all(v.accepted for v in explained.verdicts)
        n_nodes = len(fed.node_ids)
        from_nodes = coordinator_view.from_nodes((len(QUERIES) + 2) * n_nodes)
        received = coordinator_view.received

        # the recording is complete: every question the client sent, every answer of every node
        from_client = [r for r in received if r.source == "client"]
        assert [r.method.rsplit("/", 1)[1] for r in from_client] == ["Query"] * (len(QUERIES) + 1) + ["Explain"]
        envelopes = [pb.QueryEnvelope.FromString(r.message.envelope.envelope) for r in from_client]
        assert [e.sql for e in envelopes] == [*QUERIES, leaky, EXPLAINED]
        answers = [r for r in from_nodes if r.method.endswith("ComputePartial") and r.message is not None]
        verdicts = [r for r in from_nodes if r.method.endswith("Explain")]
        errors = [r for r in from_nodes if r.message is None]
        assert len(from_nodes) == len(coordinator_view.node_requests) == (len(QUERIES) + 2) * n_nodes
        # besides the questions, the coordinator only asks each region's health, naming the service alone
        probe = health_pb2.HealthCheckRequest(service="hpf.v1.Node")
        assert all(r == probe for r in coordinator_view.health_probes)
        # a failure on a region's rows travels encrypted like an answer: the coordinator sees no error at all
        assert len(answers) == (len(QUERIES) + 1) * n_nodes and len(verdicts) == n_nodes and errors == []
        assert all(r.message.receipt.entry for r in answers + verdicts)  # audit receipts are in what is searched

        # what the client sent: a signed question and a public context without a secret key
        for r in from_client:
            if r.method.endswith("Query"):
                received_ctx = ts.context_from(r.message.public_context)
                assert not received_ctx.has_secret_key() and not received_ctx.is_private()
        coordinator_ctx = he.load_public_context(from_client[0].message.public_context)

        # no message it received holds a row value, an identifier or a plaintext partial of any node
        forbidden = row_value_patterns(fed)
        identifiers = {r[0] for rows in NODE_ROWS.values() for r in rows["deposits"]}
        assert all(i.encode() in forbidden for i in identifiers)
        plans = [plan_query(sql, fed.catalog) for sql in QUERIES]
        partials, searched = partial_patterns(fed, [*plans, plan])
        assert searched >= 3 * len(QUERIES)
        forbidden.update(partials)
        for r in received:
            for pattern, what in forbidden.items():
                assert pattern not in r.wire, f"{what} is in a {r.method} message from the {r.source}"
        # nor what it sends back to the client
        for reply in coordinator_view.replies:
            wire = reply.SerializeToString()
            for pattern, what in forbidden.items():
                assert pattern not in wire, f"{what} is in the coordinator's reply"

        # every payload a node sent is a BFV ciphertext under the client's key, masked: decrypted alone (the
        # coordinator colluding with the client) it differs from the region's partials in every slot, and the
        # answers of all the regions of one run sum to exactly the sum of their partials
        by_fingerprint = {p.fingerprint: p for p in plans}
        failing = plan_query(leaky, fed.catalog)
        runs: dict[str, list[pb.PartialResponse]] = {}
        for r in answers:
            runs.setdefault(r.message.plan_fingerprint, []).append(r.message)
        assert sorted(runs) == sorted([*by_fingerprint, failing.fingerprint])
        for fingerprint, responses in runs.items():
            assert sorted(response.node_id for response in responses) == fed.node_ids
            sizes = (failing if fingerprint == failing.fingerprint else by_fingerprint[fingerprint]).layout.chunk_sizes
            decrypted_sum = [np.zeros(size, dtype=np.int64) for size in sizes]
            expected_sum = [np.zeros(size, dtype=np.int64) for size in sizes]
            for response in responses:
                if fingerprint == failing.fingerprint:  # the failure mark, and randomness in every other slot
                    expected_chunks = [np.zeros(size, dtype=np.int64) for size in sizes]
                    for piece in expected_chunks:
                        piece[-1] = FAILED
                else:
                    _, slots, _ = plaintext_partials(fed, response.node_id, by_fingerprint[fingerprint])
                    expected_chunks = chunks(slots)
                assert len(response.ciphertexts) == len(sizes)
                pieces = zip(response.ciphertexts, expected_chunks, decrypted_sum, expected_sum, strict=True)
                for blob, expected, got_sum, want_sum in pieces:
                    vector = ts.bfv_vector_from(coordinator_ctx, blob)
                    assert vector.size() == want_sum.size
                    with pytest.raises(ValueError):  # the coordinator's context cannot decrypt
                        vector.decrypt()
                    alone = keys.decrypt(blob, want_sum.size)
                    assert (alone != expected).all(), f"{response.node_id}'s answer decrypts to its partial"
                    got_sum += alone
                    want_sum += expected
            for got, want in zip(decrypted_sum, expected_sum, strict=True):
                if fingerprint == failing.fingerprint:  # every region failed: only the canaries can be checked,
                    assert centred(got)[-1] == want[-1]  # and they count every failure; the rest is random
                    assert np.count_nonzero(centred(got)[:-1]) >= got.size - 2
                else:
                    assert centred(got).tolist() == want.tolist()
        # the regions' answers it relayed are ciphertexts too, each exactly as a region sent it
        sent = {blob for r in answers for blob in r.message.ciphertexts}
        parts = [r for r in coordinator_view.replies if isinstance(r, pb.AnswerPart)]
        relayed = [r.ciphertext.ciphertext for r in parts if r.HasField("ciphertext")]
        assert relayed and set(relayed) <= sent
        for blob in relayed:
            ts.bfv_vector_from(coordinator_ctx, blob)

        # and every request it sent a node carried the client's signed question untouched, and its context;
        # every question was one run over all the regions
        signed = [r.message.envelope.SerializeToString() for r in from_client]
        contexts = {b"", from_client[0].message.public_context}
        for method, request in coordinator_view.node_requests:
            assert request.envelope.SerializeToString() in signed, method
            assert request.public_context in contexts
            if method.endswith("ComputePartial"):
                assert list(request.participants) == fed.node_ids
            for pattern, what in forbidden.items():
                assert pattern not in request.SerializeToString(), f"{what} is in a request to a node"


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
        # the client's own, properly signed question, exactly as the coordinator would forward it
        with fed.client(keys=keys) as client:
            signed = client.sign(sql)
        plan = plan_query(sql, fed.catalog)
        request = pb.PartialRequest(
            he_format=HE_FORMAT,
            query_id=query_id(signed),
            public_context=keys.public_context(),
            plan_fingerprint=plan.fingerprint,
            envelope=signed,
            participants=fed.node_ids,
        )
        address = f"127.0.0.1:{fed.nodes['n0'].port}"
        with secure_channel(address, caseworker) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.NodeStub(channel).ComputePartial(request, timeout=RPC_TIMEOUT_S)
        assert info.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
        assert from_rpc_error(info.value).code == "PARTY_NOT_ALLOWED"
        entries = [json.loads(line) for line in (fed.audit_dir("n0") / "entries.jsonl").read_text().splitlines()]
        assert [(e["decision"], e["code"]) for e in entries] == [("refused", "PARTY_NOT_ALLOWED")]
        # the refusal is about who called: the same request from the coordinator is answered, and even then
        # n0's answer, decrypted with the client's key, is masked for a run of 3: not its partial in any slot
        coordinator_tls = TlsConfig(ca=pki / "ca.pem", cert=pki / "coordinator.pem", key=pki / "coordinator.key")
        (size,) = plan.layout.chunk_sizes
        (partial,) = chunks(plaintext_partials(fed, "n0", plan)[1])
        alone = pb.PartialRequest()
        alone.CopyFrom(request)
        alone.ClearField("participants")
        alone.participants.append("n0")
        with secure_channel(address, coordinator_tls) as channel:
            stub = pb_grpc.NodeStub(channel)
            (blob,) = stub.ComputePartial(request, timeout=RPC_TIMEOUT_S).ciphertexts
            assert (keys.decrypt(blob, size) != partial).all()
            # the control: a run of n0 alone is its own sum, so its answer decrypts to exactly its partial
            # (allowed only because this test policy's minimum is 1; the default, 3, refuses such a run)
            (blob,) = stub.ComputePartial(alone, timeout=RPC_TIMEOUT_S).ciphertexts
            assert keys.decrypt(blob, size).tolist() == partial.tolist()


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
    """Make ``node_id`` encrypt its (correct, masked) partials with ``encrypt`` instead of the client's key."""
    original = PartialExecutor.compute

    def compute(
        self: PartialExecutor,
        query_id: str,
        plan: Plan,
        ctx: ts.Context,
        min_group_size: int = 1,
        *,
        noisy: Noisy | None = None,
        mask: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
        on_abandon: Any = None,
        finish_by: float | None = None,
        rendered: Any = None,
    ) -> PartialResult:
        passed = {"on_abandon": on_abandon, "finish_by": finish_by, "rendered": rendered}
        if self.node_id != node_id:
            return original(self, query_id, plan, ctx, min_group_size, noisy=noisy, mask=mask, **passed)
        sent: list[list[np.ndarray]] = []

        def keep(pieces: list[np.ndarray]) -> list[np.ndarray]:
            """The run's masks added as the node would, and what it would have encrypted kept."""
            masked = list(pieces) if mask is None else mask(pieces)
            sent.append(masked)
            return masked

        result = original(self, query_id, plan, ctx, min_group_size, noisy=noisy, mask=keep, **passed)
        (pieces,) = sent
        return dataclasses.replace(result, ciphertexts=[encrypt(chunk) for chunk in pieces])

    monkeypatch.setattr(PartialExecutor, "compute", compute)
    yield


def oracle_without(fed: harness.Federation, node_id: str, sql: str) -> list[tuple[Any, ...]]:
    files = {t: [p for p in paths if p.parent.name != node_id] for t, paths in fed.data_files.items()}
    return dataclasses.replace(fed, data_files=files).oracle(sql)


SUM_SQL = "SELECT SUM(amount_fen), SUM(balance) FROM deposits"


def test_ciphertext_with_foreign_parameters_is_a_bad_answer(
    monkeypatch: pytest.MonkeyPatch, coordinator_view: CoordinatorRecorder
) -> None:
    foreign = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=8192, plain_modulus=he.PLAIN_MODULUS)

    def encrypt(chunk: np.ndarray) -> bytes:
        return bytes(ts.bfv_vector(foreign, chunk.tolist()).serialize())

    with started() as fed, node_encrypting_with(monkeypatch, "n1", encrypt):
        with fed.client() as client:
            answer = client.query(SUM_SQL)
        assert answer.answered == ["n0", "n2"]
        assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n1", "NODE_BAD_ANSWER")]
        assert [tuple(r) for r in answer.rows] == oracle_without(fed, "n1", SUM_SQL)
        assert [tuple(r) for r in answer.rows] != fed.oracle(SUM_SQL)  # n1's rows really are left out
        # n0 and n2 had masked against n1: the coordinator dropped n1 and asked them again as a run of two
        assert coordinator_view.heads[-1].timings.runs == 2 and answer.statements_verified == 2


def test_ciphertext_under_another_key_pair_never_gives_a_silent_wrong_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same parameters, another key pair: the coordinator cannot tell, but the answer must not be garbage.

    Either the coordinator drops the region (NODE_BAD_ANSWER) or the client refuses the decrypted totals
    (every ciphertext's check slot must add up to the regions that answered, and each limb sum over k regions
    is below k * 2**30 in size, far from what a wrong key decrypts to). The region still adds its masks, as an
    honest one would: the masks of the others must not make the wrong key go unnoticed.
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
