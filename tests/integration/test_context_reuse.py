"""A node is sent a client's public context once; later requests name it by digest, and a node that lost it
(restart) is sent it again without the client noticing.

The resend carries the same signed question: a node remembers a nonce only once the context check has
passed, so the question refused with CONTEXT_UNKNOWN is not taken for a replay when it comes back.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import harness
import pytest
import tenseal as ts

from hpf.federation.catalog import Catalog
from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.crypto.slot_codec import chunks, encode_partials
from hpf.federation.errors import AuthError, CryptoError, FederationError, from_rpc_error
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.planner import plan_query
from hpf.federation.trust.channels import secure_channel
from hpf.federation.trust.envelope import Signer, query_id
from hpf.federation.trust.tls import TlsConfig
from hpf.node.executor import PartialExecutor

RPC_TIMEOUT_S = 20.0
TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": ["310000", "330100"]}},
            "month": {"type": "DATE", "class": "public"},
            "amount_fen": {"type": "BIGINT", "class": "public"},
        }
    }
}
ROWS = {
    "a": {"deposits": [("310000", dt.date(2020, 1, 1), 100), ("330100", dt.date(2021, 1, 1), 7)]},
    "b": {"deposits": [("310000", dt.date(2022, 1, 1), -40)]},
}
SQL = "SELECT city_code, SUM(amount_fen) FROM deposits GROUP BY city_code ORDER BY city_code"


def audit_entries(fed: harness.Federation, node_id: str) -> list[dict[str, Any]]:
    text = (fed.audit_dir(node_id) / "entries.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_context_travels_once_then_by_digest_and_is_resent_after_a_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int, str]] = []  # (node, context bytes received, signed digest)
    original = PartialExecutor.public_context

    forget: dict[str, bool] = {}

    def recording(self: PartialExecutor, public_context: bytes, signed_digest: str) -> ts.Context:
        """Where a node takes the context of a request: the bytes sent, else the one it holds by digest."""
        seen.append((self.node_id, len(public_context), signed_digest))
        if not public_context and forget.pop(self.node_id, False):
            raise CryptoError("this party does not hold that public context; send it", code="CONTEXT_UNKNOWN")
        return original(public_context, signed_digest)

    monkeypatch.setattr(PartialExecutor, "public_context", recording)
    with tempfile.TemporaryDirectory() as tmp, harness.federation(Path(tmp), TABLES, ROWS) as fed:
        with fed.client() as client:
            expected = [list(r) for r in fed.oracle(SQL)]
            assert client.query(SQL).rows == expected
            digest = he.context_digest(client.keys.public_context())
            first = sorted(seen)
            assert [n for n, _, _ in first] == ["a", "b"]
            assert all(size == len(client.keys.public_context()) and d == digest for _, size, d in first)

            seen.clear()
            assert client.query(SQL).rows == expected
            assert sorted(seen) == [("a", 0, digest), ("b", 0, digest)]  # digest only

            # node "a" loses the context (restart): it refuses once, the coordinator resends it
            forget["a"] = True
            seen.clear()
            answer = client.query(SQL)
            assert answer.rows == expected and answer.missing == []
            full = len(client.keys.public_context())
            assert sorted(seen) == [("a", 0, digest), ("a", full, digest), ("b", 0, digest)], seen

        # node "a" saw that one question twice, with the same nonce: refused for the context, then answered
        # (not refused as a replay), and both are in its audit log
        last_two = audit_entries(fed, "a")[-2:]
        assert [(e["decision"], e["code"]) for e in last_two] == [("refused", "CONTEXT_UNKNOWN"), ("allowed", "")]
        assert last_two[0]["nonce"] == last_two[1]["nonce"] != ""
        receipt_a = next(r for r in answer.receipts if r.node_id == "a")
        assert receipt_a.fields() == last_two[1]


# ------------------------------------------------------------------ a context that is not the signed one


class NoBackend:
    dialect = "duckdb"

    def run(self, sql: str, on_abandon: Any = None, finish_by: float | None = None) -> list[tuple[Any, ...]]:
        raise AssertionError("must not run")


def test_a_context_that_does_not_match_its_digest_is_refused() -> None:
    """The executor takes only the context the asker signed for: the one sent, if its digest is the signed one,
    else one it already holds under that digest."""
    keys = he.ClientKeys.generate()
    catalog = Catalog.model_validate({"federation": "t", "nodes": [{"id": "a", "address": "h:1"}], "tables": TABLES})
    executor = PartialExecutor("a", catalog, NoBackend())
    with pytest.raises(AuthError) as mismatch:
        executor.public_context(keys.public_context(), "0" * 64)
    assert mismatch.value.code == "AUTH_CONTEXT_MISMATCH"
    with pytest.raises(CryptoError) as unknown:
        executor.public_context(b"", "f" * 64)
    assert unknown.value.code == "CONTEXT_UNKNOWN"
    ctx = executor.public_context(keys.public_context(), he.context_digest(keys.public_context()))
    assert ctx.has_public_key() and not ctx.has_secret_key()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[harness.Federation, list[str]]]:
    """A federation whose nodes note every time they run a plan."""
    ran: list[str] = []
    original = PartialExecutor.compute

    def compute(self: PartialExecutor, *args: Any, **kwargs: Any) -> Any:
        ran.append(self.node_id)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PartialExecutor, "compute", compute)
    with tempfile.TemporaryDirectory() as tmp, harness.federation(Path(tmp), TABLES, ROWS) as fed:
        yield fed, ran


def node_refusal(stub: pb_grpc.NodeStub, request: pb.PartialRequest) -> FederationError:
    with pytest.raises(grpc.RpcError) as info:
        stub.ComputePartial(request, timeout=RPC_TIMEOUT_S)
    return from_rpc_error(info.value)


def test_a_node_runs_nothing_under_a_context_it_cannot_match_to_the_signed_digest(
    started: tuple[harness.Federation, list[str]],
) -> None:
    """On a running node, sent as the coordinator would: a context that is not the signed one is refused, and
    so is a bare digest the node does not hold; nothing runs, and the same signed question with the right
    context is then answered (its nonce was not used up by the refusals)."""
    fed, ran = started
    keys = he.ClientKeys.generate()  # a context no party of this process has seen yet
    context = keys.public_context()
    signed = Signer.from_files(fed.pki_dir / "people" / "caseworker.pem", fed.pki_dir / "people" / "caseworker.key")
    envelope = signed.sign(sql=SQL, context_digest=he.context_digest(context), federation=fed.catalog.federation)
    request = pb.PartialRequest(
        he_format=HE_FORMAT,
        query_id=query_id(envelope),
        public_context=he.ClientKeys.generate().public_context(),  # not the context signed for
        plan_fingerprint=plan_query(SQL, fed.catalog).fingerprint,
        envelope=envelope,
        # a run of "a" alone (the test policy's minimum is 1): its mask is zero, so its answer is its partial
        participants=["a"],
    )
    tls = TlsConfig(
        ca=fed.pki_dir / "ca.pem", cert=fed.pki_dir / "coordinator.pem", key=fed.pki_dir / "coordinator.key"
    )
    with secure_channel(f"127.0.0.1:{fed.nodes['a'].port}", tls) as channel:
        stub = pb_grpc.NodeStub(channel)
        err = node_refusal(stub, request)
        assert err.code == "AUTH_CONTEXT_MISMATCH" and isinstance(err, AuthError)
        request.public_context = b""  # the digest alone, which this node does not hold
        err = node_refusal(stub, request)
        assert err.code == "CONTEXT_UNKNOWN" and isinstance(err, CryptoError)
        assert ran == []
        request.public_context = context
        reply = stub.ComputePartial(request, timeout=RPC_TIMEOUT_S)
    assert reply.node_id == "a" and len(reply.ciphertexts) == 1 and ran == ["a"]
    plan = plan_query(SQL, fed.catalog)
    slots = keys.decrypt(reply.ciphertexts[0], plan.layout.chunk_sizes[0])
    # encrypted under the signed context: the asker's key decrypts it to exactly the region's partial
    expected = chunks(encode_partials(plan, fed.node_oracle("a", plan.node_sql())))
    assert len(expected) == 1 and slots.tolist() == expected[0].tolist()
