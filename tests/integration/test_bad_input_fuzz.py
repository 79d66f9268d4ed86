"""Fuzzing a running federation with what no hpf client sends (Hypothesis, a few examples each, derandomized).

Over SQL text, purposes and consent references, the certificate inside a signed question, and the raw bytes of
every method's request: no party answers INTERNAL or UNKNOWN, every refusal carries a stable code, and after the
fuzzing an honest question still gets the exact answer (DuckDB over the pooled files).

Mangled questions are sent as ``explain``: every party verifies, plans and applies its policy as for a query,
without the homomorphic work, so many examples fit in a few seconds. Questions with odd literals (huge integers,
NaN, text where a number belongs) go through the client library and the whole encrypted path: each is answered
exactly as DuckDB over the pooled files answers it, or refused with a stable code.

Examples (derandomized, so every run sends the same): SQL 150, purposes and consent references 150, certificates
150, request bytes 400, questions through the client 40; about 10 s together.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import harness
import pytest
from cryptography.hazmat.primitives import serialization
from examples import budget
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from raw_rpc import METHODS, assert_stable, party_of, raw_channels, readable, send_raw

from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT, ClientKeys
from hpf.federation.errors import FederationError, is_code
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust.certificates import load_certificate
from hpf.federation.trust.envelope import MAX_CONSENT_CHARS, MAX_PURPOSE_CHARS, Signer

TABLES = {
    "t": {
        "columns": {
            "a": {"type": "BIGINT", "class": "public"},
            "g": {"type": "VARCHAR", "class": "public", "domain": {"values": ["x", "y"]}},
        }
    }
}
ROWS = {
    "n0": {"t": [(i, "x" if i % 2 else "y") for i in range(6)]},
    "n1": {"t": [(i * 7, "x") for i in range(4)]},
}
HONEST = "SELECT g, COUNT(*) AS n, SUM(a) AS total FROM t GROUP BY g ORDER BY g"
FUZZ = settings(
    max_examples=budget(150),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# every character, lone surrogates (what a command-line byte that is no UTF-8 becomes) drawn often, some texts
# longer than the envelope allows a purpose (64) or a consent reference (128)
CHARACTERS = st.one_of(
    st.characters(exclude_categories=()),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from(["\udc80", "\ud800", "\udfff"]),
    st.sampled_from("\x00\x1b\n\u202e\ufeff'\"\\%_;"),
)
ANY_TEXT = st.one_of(
    st.text(CHARACTERS, max_size=40),
    st.text(st.characters(categories=["L", "N", "P", "Zs"]), min_size=60, max_size=200),
)
SQL_WORDS = st.sampled_from(
    "SELECT FROM WHERE GROUP BY ORDER HAVING LIMIT COUNT(*) SUM(a) AVG(a) MAX(a) a g t ( ) , = < 1 -1 0.5 'x' "
    'NULL AND OR NOT IN CAST AS DOUBLE VARCHAR * / + - ; -- /* */ " \\ \u202e \x00 \udc80 9223372036854775807'.split()
)
SQL = st.one_of(ANY_TEXT, st.lists(SQL_WORDS, max_size=24).map(" ".join))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    unlimited = {"rate_limit": {"requests": 1_000_000, "per_seconds": 1}}  # the fuzzing, not the limit, is tested
    with harness.federation(tmp_path_factory.mktemp("fuzz"), TABLES, ROWS, coordinator_settings=unlimited) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> ClientKeys:
    return ClientKeys.generate()


@pytest.fixture(scope="module")
def channels(fed: harness.Federation) -> Iterator[dict[str, grpc.Channel]]:
    with raw_channels(fed) as c:
        yield c


@pytest.fixture(scope="module")
def signer(fed: harness.Federation) -> Signer:
    people = fed.pki_dir / "people"
    return Signer.from_files(people / "caseworker.pem", people / "caseworker.key")


def explain(
    channels: dict[str, grpc.Channel],
    keys: ClientKeys,
    signer: Signer,
    sql: str,
    purpose: str = "",
    consent: str = "",
    certificate: bytes | None = None,
) -> list[FederationError | None]:
    """Sign ``sql`` as an explain and send it to the coordinator and, as the coordinator would, to a node;
    what each refused with (None: answered). Text that no UTF-8 can encode is refused before signing."""
    try:
        signed = signer.sign(
            sql=sql,
            context_digest=he.context_digest(keys.public_context()),
            federation=harness.FEDERATION,
            operation="explain",
            purpose=purpose,
            consent_ref=consent,
        )
    except FederationError as err:
        assert err.code == "INPUT_NOT_TEXT", err
        return [err]
    if certificate is not None:
        signed.signer_certificate = certificate
    return [
        assert_stable(send_raw(channels["coordinator"], "/hpf.v1.Coordinator/Explain", False, _bytes(signed))),
        assert_stable(send_raw(channels["n0"], "/hpf.v1.Node/Explain", False, _bytes(signed, node=True))),
    ]


def _bytes(signed: pb.SignedEnvelope, node: bool = False) -> bytes:
    if node:
        return pb.PartialRequest(envelope=signed).SerializeToString()
    return pb.ExplainRequest(envelope=signed).SerializeToString()


def honest_answer_is_exact(fed: harness.Federation) -> None:
    with fed.client() as client:
        assert [tuple(r) for r in client.query(HONEST).rows] == fed.oracle(HONEST)


@FUZZ
@given(sql=SQL)
@example(sql="SELECT COUNT(*) FROM t -- \udc80").via("a byte that is no UTF-8 in a comment")
def test_fuzzed_sql_is_answered_or_refused_with_a_stable_code(
    fed: harness.Federation, channels: dict[str, grpc.Channel], keys: ClientKeys, signer: Signer, sql: str
) -> None:
    explain(channels, keys, signer, sql)


@FUZZ
@given(purpose=ANY_TEXT, consent=ANY_TEXT)
@example(purpose="loan\udc80", consent="").via("a command-line byte that is no UTF-8")
@example(purpose="", consent="\ud800ref").via("a lone high surrogate")
@example(purpose="p" * (MAX_PURPOSE_CHARS + 1), consent="").via("one character too long")
@example(purpose="\x1b[2J\u202e", consent="\n").via("terminal escapes and a bidi override")
def test_fuzzed_purposes_and_consent_references_are_answered_or_refused_with_a_stable_code(
    fed: harness.Federation,
    channels: dict[str, grpc.Channel],
    keys: ClientKeys,
    signer: Signer,
    purpose: str,
    consent: str,
) -> None:
    refusals = explain(channels, keys, signer, HONEST, purpose=purpose, consent=consent)
    if any(not c.isprintable() or 0xD800 <= ord(c) <= 0xDFFF for c in purpose + consent):
        return  # whatever the policy makes of it, as long as it is a stable code (checked in explain)
    if len(purpose) > MAX_PURPOSE_CHARS or len(consent) > MAX_CONSENT_CHARS:
        assert [r and r.code for r in refusals] == ["AUTH_ENVELOPE_MALFORMED"] * 2, refusals


@pytest.fixture(scope="module")
def certificates(fed: harness.Federation) -> list[bytes]:
    """DER of the caseworker's certificate (the one that signs) and of parties that are no person."""
    pki = fed.pki_dir
    paths = [pki / "people" / "caseworker.pem", pki / "coordinator.pem", pki / "ca.pem", pki / "nodes" / "n0.pem"]
    return [load_certificate(p.read_bytes()).public_bytes(serialization.Encoding.DER) for p in paths]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of ``seeds`` with bytes flipped, cut, inserted or the lot replaced."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "random", "pem"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif how == "cut":
            data = data[:at]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "random":
            data = bytearray(draw(st.binary(max_size=300)))
        else:  # the PEM text where DER belongs
            data = bytearray(b"-----BEGIN CERTIFICATE-----\n" + bytes(data[:64]).hex().encode() + b"\n")
    return bytes(data)


@FUZZ
@given(data=st.data())
def test_fuzzed_certificates_inside_signed_questions_are_refused_with_a_stable_code(
    channels: dict[str, grpc.Channel], keys: ClientKeys, signer: Signer, certificates: list[bytes], data: st.DataObject
) -> None:
    seeds = certificates
    certificate = data.draw(mutated(seeds))
    refusals = explain(channels, keys, signer, HONEST, certificate=certificate)
    if certificate != seeds[0]:  # only the signer's own certificate lets the question through
        assert all(r is not None for r in refusals), certificate


@pytest.fixture(scope="module")
def requests(keys: ClientKeys, signer: Signer) -> dict[str, bytes]:
    """A well-formed request of each method, to mutate (the same for every example)."""
    signed = {
        op: signer.sign(
            sql=HONEST if op != "lookup" else "",
            context_digest=he.context_digest(keys.public_context()),
            federation=harness.FEDERATION,
            operation=op,
            lookup=pb.LookupSpec(subjects=1, seal_public_key=b"k" * 32, regions=["n0"]) if op == "lookup" else None,
        )
        for op in ("query", "explain", "lookup")
    }
    small = b"ctx"  # a public context is large; a short wrong one is refused as readily
    return {
        "/hpf.v1.Node/ComputePartial": pb.PartialRequest(
            envelope=signed["query"], public_context=small, query_id="q"
        ).SerializeToString(),
        "/hpf.v1.Node/Explain": pb.PartialRequest(envelope=signed["explain"]).SerializeToString(),
        "/hpf.v1.Node/AuditProof": pb.AuditProofRequest(node_id="n0", index=0, old_size=1).SerializeToString(),
        "/hpf.v1.Node/Describe": pb.DescribeRequest().SerializeToString(),
        "/hpf.v1.Node/Lookup": pb.NodeLookupRequest(envelope=signed["lookup"]).SerializeToString(),
        "/hpf.v1.Coordinator/Query": pb.QueryRequest(
            envelope=signed["query"], public_context=small, he_format=HE_FORMAT
        ).SerializeToString(),
        "/hpf.v1.Coordinator/Lookup": pb.LookupRequest(
            envelope=signed["lookup"], public_context=small, he_format=HE_FORMAT
        ).SerializeToString(),
        "/hpf.v1.Coordinator/Explain": pb.ExplainRequest(envelope=signed["explain"]).SerializeToString(),
        "/hpf.v1.Coordinator/AuditProof": pb.AuditProofRequest(node_id="n1", index=0, old_size=1).SerializeToString(),
        "/hpf.v1.Coordinator/GetCatalog": pb.CatalogRequest().SerializeToString(),
        "/grpc.health.v1.Health/Check": health_pb2.HealthCheckRequest(service="hpf.v1.Node").SerializeToString(),
    }


@settings(FUZZ, max_examples=budget(400))
@given(data=st.data())
def test_fuzzed_request_bytes_to_every_method_are_refused_with_a_stable_code(
    channels: dict[str, grpc.Channel], requests: dict[str, bytes], data: st.DataObject
) -> None:
    method = data.draw(st.sampled_from(sorted(METHODS)))
    streams, kind = METHODS[method]
    raw = data.draw(st.one_of(st.binary(max_size=300), mutated([requests[method]])))
    refusal = assert_stable(send_raw(channels[party_of(method)], method, streams, raw))
    if not readable(kind, raw):
        assert refusal is not None and refusal.code == "RPC_MALFORMED", (method, raw)


def _double(f: float) -> str:
    return repr(f) if math.isfinite(f) else f"'{f}'::DOUBLE"


LITERALS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(_double),
    st.text(CHARACTERS, max_size=12).map(lambda t: "'" + t.replace("'", "''") + "'"),
    st.sampled_from(["NULL", "TRUE", "'x'", "'y'", "-0", "1e308", "0.1"]),
)


@st.composite
def questions(draw: st.DrawFn) -> str:
    """An aggregate over ``t`` filtered by a comparison with a drawn literal (big, odd, mistyped), some by ``g``."""
    grouped = draw(st.booleans())
    aggs = draw(st.sampled_from(["COUNT(*) AS n", "SUM(a) AS s", "COUNT(*) AS n, SUM(a) AS s"]))
    col = draw(st.sampled_from(["a", "g", "a + 1", "-a"]))
    lit = draw(LITERALS)
    test = draw(st.sampled_from(["{} = {}", "{} < {}", "{} >= {}", "{} <> {}", "{} IN ({})", "{} BETWEEN 0 AND {}"]))
    where = test.format(col, lit)
    if grouped:
        return f"SELECT g, {aggs} FROM t WHERE {where} GROUP BY g ORDER BY g"
    return f"SELECT {aggs} FROM t WHERE {where}"


@settings(FUZZ, max_examples=budget(40))
@given(sql=questions())
def test_fuzzed_questions_through_the_client_are_answered_exactly_or_refused_with_a_stable_code(
    fed: harness.Federation, sql: str
) -> None:
    try:
        with fed.client() as client:
            rows = [tuple(r) for r in client.query(sql).rows]
    except FederationError as err:
        assert is_code(err.code) and err.code not in ("INTERNAL", "NODE_INTERNAL", "COORDINATOR_INTERNAL"), err
        return
    assert rows == fed.oracle(sql), sql


def test_after_the_fuzzing_an_honest_question_is_answered_exactly(fed: harness.Federation) -> None:
    honest_answer_is_exact(fed)
