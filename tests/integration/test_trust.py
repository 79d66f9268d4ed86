"""Who may ask what, on a running federation: signed questions, replays, revocation, policies, explain, audit.

Every refusal is asserted with its stable code, and after each one the same servers answer the next valid
question exactly. Requests "from a compromised coordinator" are sent straight to a node with the
coordinator's own certificate: the node must refuse them on its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import harness
import pytest
import typer
from streamed import collect
from typer.testing import CliRunner

from hpf.cli.pki import register as register_pki
from hpf.client.federation_client import FederationClient
from hpf.federation.audit.keys import load_public_key
from hpf.federation.audit.proto import check_receipt
from hpf.federation.audit.records import Receipt
from hpf.federation.audit.verify import read_entries, verify_log
from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.errors import FederationError, from_rpc_error
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.planner import plan_query
from hpf.federation.trust import pki, revocation
from hpf.federation.trust.channels import secure_channel
from hpf.federation.trust.envelope import Signer, query_id
from hpf.federation.trust.tls import TlsConfig

SECRET_ID = "110101199003074477"
TABLES: dict[str, Any] = {
    "people": {
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "city": {"type": "VARCHAR", "class": "public", "domain": {"values": ["310000", "330100"]}},
            "amount": {"type": "BIGINT", "class": "public"},
            "salary": {"type": "BIGINT", "class": "sensitive"},
        }
    },
    "loans": {
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "status": {"type": "VARCHAR", "class": "sensitive", "domain": {"values": ["active", "settled"]}},
            "outstanding": {"type": "BIGINT", "class": "sensitive"},
        }
    },
}
NODE_ROWS: dict[str, dict[str, list[tuple[Any, ...]]]] = {
    "n0": {
        "people": [(SECRET_ID, "310000", 100, 9000), ("p2", "330100", 250, 12000)],
        "loans": [(SECRET_ID, "active", 5000), ("p2", "settled", 0)],
    },
    "n1": {
        "people": [("p3", "310000", 40, 7000), ("p4", None, 7, 3000), ("p5", "330100", 1, 1)],
        "loans": [("p3", "active", 700)],
    },
}
POLICY = """
version: 1
purposes:
  loan-review: checking a loan applicant
  statistics: reporting
# this federation has two regions (the default minimum is 3); masking itself is tested in test_secure_aggregation
secure_aggregation:
  min_participants: 2
classes:
  identifier: []
  public: [output, filter, group, aggregate]
  sensitive: [aggregate]
roles:
  caseworker:
    aggregates: [count, sum, avg]
    min_group_size: 1
    rate_limit: {requests: 10000, per_seconds: 60}
    tables:
      people: {}
      loans:
        purposes: [loan-review]
        columns: {status: [filter, group, output]}
  analyst:
    aggregates: [count]
    min_group_size: 1
    rate_limit: {requests: 3, per_seconds: 3600}
    tables:
      people: {}
  operator:                    # a table under a consent reference (never an integrator's: see policies/default.yaml)
    aggregates: [count, sum]
    min_group_size: 1
    tables:
      loans:
        purposes: [loan-review]
        consent: required
        columns: {status: [filter, group, output]}
"""
PEOPLE = (
    ("caseworker", "caseworker", "n0"),
    ("analyst", "analyst", None),
    ("auditor", "auditor", None),
    ("bob", "caseworker", None),
    ("clerk", "operator", None),
)
VALID = "SELECT city, COUNT(*) AS n, SUM(amount) AS total FROM people GROUP BY city ORDER BY city"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("trust")
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    with harness.federation(root, TABLES, NODE_ROWS, policy=policy, people=PEOPLE) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.fixture
def client(fed: harness.Federation, keys: he.ClientKeys) -> Iterator[FederationClient]:
    with fed.client(keys=keys) as c:
        yield c


def assert_serves(fed: harness.Federation, keys: he.ClientKeys) -> None:
    """The federation still answers a valid question exactly."""
    with fed.client(keys=keys) as c:
        answer = c.query(VALID)
    assert [tuple(r) for r in answer.rows] == fed.oracle(VALID)
    assert sorted(answer.answered) == ["n0", "n1"]


def refusal(call: Any) -> FederationError:
    with pytest.raises(FederationError) as info:
        call()
    err = info.value
    assert SECRET_ID not in str(err)
    return err


# --------------------------------------------------------------------- a compromised coordinator's view


@pytest.fixture(scope="module")
def node_stubs(fed: harness.Federation) -> Iterator[dict[str, pb_grpc.NodeStub]]:
    """Stubs holding the coordinator's certificate: what a compromised coordinator can send a node."""
    with fed.node_stubs_as_coordinator() as stubs:
        yield stubs


def signer(fed: harness.Federation, person: str = "caseworker") -> Signer:
    return Signer.from_files(fed.pki_dir / "people" / f"{person}.pem", fed.pki_dir / "people" / f"{person}.key")


def partial_request(
    fed: harness.Federation, keys: he.ClientKeys, signed: pb.SignedEnvelope, sql: str = VALID
) -> pb.PartialRequest:
    """What the coordinator sends each node for one run over every region (so a refusal is for the question)."""
    context = keys.public_context()
    return pb.PartialRequest(
        he_format=HE_FORMAT,
        query_id=query_id(signed),
        public_context=context,
        plan_fingerprint=plan_query(sql, fed.catalog).fingerprint,
        envelope=signed,
        participants=fed.node_ids,
    )


def sign(fed: harness.Federation, keys: he.ClientKeys, sql: str = VALID, person: str = "caseworker", **kw: Any):
    return signer(fed, person).sign(
        sql=sql, context_digest=he.context_digest(keys.public_context()), federation="test", **kw
    )


def node_refusal(stub: pb_grpc.NodeStub, request: pb.PartialRequest) -> FederationError:
    with pytest.raises(grpc.RpcError) as info:
        stub.ComputePartial(request, timeout=20)
    return from_rpc_error(info.value)


def refused_by_every_node(stubs: dict[str, pb_grpc.NodeStub], request: pb.PartialRequest, code: str) -> None:
    for stub in stubs.values():
        assert node_refusal(stub, request).code == code


def test_a_signed_question_is_answered_with_audit_receipts(fed: harness.Federation, client: FederationClient) -> None:
    answer = client.query(VALID)
    assert [tuple(r) for r in answer.rows] == fed.oracle(VALID)
    assert sorted(r.node_id for r in answer.receipts) == ["n0", "n1"]
    assert answer.receipts_verified == 2  # each checkpoint signature checked with the catalog's audit key
    assert answer.statements_verified == 2  # and each region's signed statement of the run it masked for
    for receipt in answer.receipts:
        entry = json.loads(receipt.entry)
        assert entry["identity"] == "caseworker" and entry["decision"] == "allowed"
        assert entry["query"] and entry["ciphertext"] and entry["operation"] == "query"
        assert receipt.checkpoint.size == receipt.index + 1


def test_unsigned_is_refused_by_the_coordinator_and_by_every_node(
    fed: harness.Federation, keys: he.ClientKeys, node_stubs: dict[str, pb_grpc.NodeStub]
) -> None:
    with secure_channel(
        f"127.0.0.1:{fed.coordinator.port}",
        TlsConfig(
            ca=fed.pki_dir / "ca.pem",
            cert=fed.pki_dir / "people" / "caseworker.pem",
            key=fed.pki_dir / "people" / "caseworker.key",
        ),
    ) as channel:
        with pytest.raises(grpc.RpcError) as info:
            stub = pb_grpc.CoordinatorStub(channel)
            list(stub.Query(pb.QueryRequest(he_format=HE_FORMAT, public_context=keys.public_context()), timeout=20))
    assert from_rpc_error(info.value).code == "AUTH_UNSIGNED"
    request = partial_request(fed, keys, pb.SignedEnvelope())
    refused_by_every_node(node_stubs, request, "AUTH_UNSIGNED")
    assert_serves(fed, keys)


def test_a_forged_question_is_refused_by_every_node(
    fed: harness.Federation, keys: he.ClientKeys, node_stubs: dict[str, pb_grpc.NodeStub], tmp_path: Path
) -> None:
    forger = pki.issue_certificate(fed.pki_dir, tmp_path, "mallory", "person", role="caseworker")
    forged_sig = Signer.from_files(forger.cert, forger.key).sign(
        sql=VALID, context_digest=he.context_digest(keys.public_context()), federation="test"
    )
    genuine = sign(fed, keys)
    # mallory's signature presented with the caseworker's certificate
    forged = pb.SignedEnvelope(
        envelope=forged_sig.envelope, signature=forged_sig.signature, signer_certificate=genuine.signer_certificate
    )
    refused_by_every_node(node_stubs, partial_request(fed, keys, forged), "AUTH_SIGNATURE_INVALID")
    assert_serves(fed, keys)


def test_a_question_altered_by_the_coordinator_is_refused(
    fed: harness.Federation, keys: he.ClientKeys, node_stubs: dict[str, pb_grpc.NodeStub]
) -> None:
    signed = sign(fed, keys, "SELECT COUNT(*) FROM people")
    envelope = pb.QueryEnvelope()
    envelope.ParseFromString(signed.envelope)
    envelope.sql = "SELECT COUNT(*) FROM people WHERE city = '310000'"
    altered = pb.SignedEnvelope(
        envelope=envelope.SerializeToString(),
        signature=signed.signature,
        signer_certificate=signed.signer_certificate,
    )
    request = partial_request(fed, keys, altered, envelope.sql)
    refused_by_every_node(node_stubs, request, "AUTH_SIGNATURE_INVALID")
    # the coordinator swaps in its own public key to read the answer: refused, the signed digest differs
    own = he.ClientKeys.generate()
    swapped = partial_request(fed, own, sign(fed, keys))
    refused_by_every_node(node_stubs, swapped, "AUTH_CONTEXT_MISMATCH")
    assert_serves(fed, keys)


def test_a_replayed_question_is_refused(
    fed: harness.Federation, keys: he.ClientKeys, node_stubs: dict[str, pb_grpc.NodeStub]
) -> None:
    request = partial_request(fed, keys, sign(fed, keys))
    reordered = pb.PartialRequest()
    reordered.CopyFrom(request)
    reordered.ClearField("participants")
    reordered.participants.extend(reversed(fed.node_ids))
    for stub in node_stubs.values():
        assert stub.ComputePartial(request, timeout=20).ciphertexts
        assert node_refusal(stub, request).code == "AUTH_REPLAY"
        # the same participant set in another order is the same run: still a replay
        assert node_refusal(stub, reordered).code == "AUTH_REPLAY"
    stale = partial_request(fed, keys, sign(fed, keys, now_ms=1_000))
    refused_by_every_node(node_stubs, stale, "AUTH_ENVELOPE_STALE")
    assert_serves(fed, keys)


def test_a_restarted_node_still_refuses_a_replay(tmp_path: Path, keys: he.ClientKeys) -> None:
    with harness.federation(tmp_path, TABLES, NODE_ROWS) as f:
        tls = TlsConfig(ca=f.pki_dir / "ca.pem", cert=f.pki_dir / "coordinator.pem", key=f.pki_dir / "coordinator.key")
        request = partial_request(f, keys, sign(f, keys))
        with secure_channel(f"127.0.0.1:{f.nodes['n0'].port}", tls) as channel:
            assert pb_grpc.NodeStub(channel).ComputePartial(request, timeout=20).ciphertexts
        f.restart_node("n0")  # the nonces come back from the node's audit log, with the run's participants
        rerun = pb.PartialRequest()
        rerun.CopyFrom(request)
        rerun.ClearField("participants")
        rerun.participants.append("n0")
        with secure_channel(f"127.0.0.1:{f.nodes['n0'].port}", tls) as channel:
            stub = pb_grpc.NodeStub(channel)
            assert node_refusal(stub, request).code == "AUTH_REPLAY"
            # a re-run with a strict subset (the survivors of a failed run) is allowed once; then it is a replay
            assert stub.ComputePartial(rerun, timeout=20).ciphertexts
            assert node_refusal(stub, rerun).code == "AUTH_REPLAY"
            assert node_refusal(stub, request).code == "AUTH_REPLAY"
        assert_serves(f, keys)


def test_a_replay_through_the_coordinator_is_refused(fed: harness.Federation, keys: he.ClientKeys) -> None:
    with fed.client(keys=keys) as c:
        signed = c.sign(VALID)
        request = pb.QueryRequest(he_format=HE_FORMAT, envelope=signed, public_context=keys.public_context())
        stub = c._stub  # the client's own channel to the coordinator
        assert collect(stub.Query(request, timeout=20))[1]
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Query(request, timeout=20))
    assert from_rpc_error(info.value).code == "AUTH_REPLAY"
    assert_serves(fed, keys)


def test_an_expired_certificate_is_refused(
    fed: harness.Federation, keys: he.ClientKeys, node_stubs: dict[str, pb_grpc.NodeStub], tmp_path: Path
) -> None:
    old = pki.issue_certificate(fed.pki_dir, tmp_path, "old", "person", role="caseworker", valid_days=-1)
    signed = Signer.from_files(old.cert, old.key).sign(
        sql=VALID, context_digest=he.context_digest(keys.public_context()), federation="test"
    )
    refused_by_every_node(node_stubs, partial_request(fed, keys, signed), "AUTH_CERT_EXPIRED")
    assert_serves(fed, keys)


def test_a_revoked_certificate_is_refused_once_the_list_changes(
    fed: harness.Federation, keys: he.ClientKeys, node_stubs: dict[str, pb_grpc.NodeStub]
) -> None:
    with fed.client(keys=keys, person="bob") as bob:
        assert bob.query(VALID).rows
        early = bob.sign(VALID)  # signed before the revocation, sent after it
        revocation.revoke(fed.pki_dir, (fed.pki_dir / "people" / "bob.pem").read_bytes())
        err = refusal(lambda: bob.query(VALID))
    assert err.code == "AUTH_CERT_REVOKED"
    refused_by_every_node(node_stubs, partial_request(fed, keys, early), "AUTH_CERT_REVOKED")
    assert_serves(fed, keys)


def test_an_older_revocation_list_put_back_does_not_unrevoke(tmp_path: Path, keys: he.ClientKeys) -> None:
    people = (("caseworker", "caseworker", None), ("bob", "caseworker", None))
    with harness.federation(tmp_path, TABLES, NODE_ROWS, people=people) as f:
        crl = f.pki_dir / "crl.pem"
        older = crl.read_bytes()  # list N, signed by the CA: bob not revoked
        with f.client(keys=keys, person="bob") as bob:
            assert bob.query(VALID).rows
            early = bob.sign(VALID)  # signed before the revocation, sent (straight to the nodes) after it
            revocation.revoke(f.pki_dir, (f.pki_dir / "people" / "bob.pem").read_bytes())  # list N + 1
            newest = crl.read_bytes()
            assert refusal(lambda: bob.query(VALID)).code == "AUTH_CERT_REVOKED"
            assert_serves(f, keys)  # every node has read list N + 1 by now (a party that never did cannot know it)
            crl.write_bytes(older)  # list N restored over list N + 1, where every party reads it
            os.utime(crl, ns=(time.time_ns(), time.time_ns() + 9_000_000))
            assert refusal(lambda: bob.query(VALID)).code == "AUTH_CERT_REVOKED"  # the coordinator keeps N + 1
        with f.node_stubs_as_coordinator() as stubs:  # and so does every node, on its own
            refused_by_every_node(stubs, partial_request(f, keys, early), "AUTH_CERT_REVOKED")
        assert_serves(f, keys)  # everyone else is still answered
        # a node restarted on list N remembers (in its state directory) that it accepted N + 1: it does not start
        with pytest.raises(FederationError) as err:
            f.restart_node("n0")
        assert err.value.code == "REVOCATION_ROLLBACK"
        crl.write_bytes(newest)
        f.restart_node("n0")
        f.wait_for_regions()
        assert_serves(f, keys)


@pytest.mark.parametrize("routine", [["crl"], ["revoke", "people/carol.pem"]], ids=["pki crl", "pki revoke carol"])
def test_a_rolled_back_list_stays_refused_after_the_operators_next_list(
    tmp_path: Path, keys: he.ClientKeys, routine: list[str]
) -> None:
    """The attacker copies the older list back over the one that revoked bob; every party refuses it. Then the
    operator does what comes next anyway, in the CA folder: the routine re-signing (also what a party's refusal
    hint names), or revoking someone else. The CA's next list is signed from its own record, so bob stays
    revoked at the coordinator and at every node, a restarted node too."""
    people = (("caseworker", "caseworker", None), ("bob", "caseworker", None), ("carol", "caseworker", None))
    with harness.federation(tmp_path, TABLES, NODE_ROWS, people=people) as f:
        crl = f.pki_dir / "crl.pem"
        older = crl.read_bytes()  # list 1: bob not revoked
        with f.client(keys=keys, person="bob") as bob:
            assert bob.query(VALID).rows
            early = [bob.sign(VALID) for _ in range(2)]  # signed before the revocation, sent straight to the nodes
            revocation.revoke(f.pki_dir, (f.pki_dir / "people" / "bob.pem").read_bytes())  # list 2
            assert refusal(lambda: bob.query(VALID)).code == "AUTH_CERT_REVOKED"
            assert_serves(f, keys)  # every node has read list 2
            crl.write_bytes(older)
            os.utime(crl, ns=(time.time_ns(), time.time_ns() + 9_000_000))
            assert refusal(lambda: bob.query(VALID)).code == "AUTH_CERT_REVOKED"
            app = typer.Typer()
            register_pki(app)
            args = ["pki", routine[0], "--ca-dir", str(f.pki_dir), *(str(f.pki_dir / a) for a in routine[1:])]
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
            assert "number 3" in result.stdout  # the CA's next number, not the rolled-back list's next
            os.utime(crl, ns=(time.time_ns(), time.time_ns() + 19_000_000))
            assert refusal(lambda: bob.query(VALID)).code == "AUTH_CERT_REVOKED"  # at the coordinator
        with f.node_stubs_as_coordinator() as stubs:  # at every node, on its own
            refused_by_every_node(stubs, partial_request(f, keys, early[0]), "AUTH_CERT_REVOKED")
        f.restart_node("n0")  # starts on list 3, which it accepts
        f.wait_for_regions()
        with f.node_stubs_as_coordinator() as stubs:
            refused_by_every_node(stubs, partial_request(f, keys, early[1]), "AUTH_CERT_REVOKED")
        assert_serves(f, keys)  # everyone else is answered


def test_the_catalog_is_given_only_to_people_not_revoked_and_within_their_rate(tmp_path: Path) -> None:
    people = (("caseworker", "caseworker", None), ("bob", "caseworker", None))
    limit = {"rate_limit": {"requests": 3, "per_seconds": 3600}}
    with harness.federation(tmp_path, TABLES, NODE_ROWS, people=people, coordinator_settings=limit) as f:
        address = f"127.0.0.1:{f.coordinator.port}"

        def get_catalog(cert: str) -> pb.CatalogResponse | FederationError:
            tls = TlsConfig(ca=f.pki_dir / "ca.pem", cert=f.pki_dir / f"{cert}.pem", key=f.pki_dir / f"{cert}.key")
            channel = secure_channel(address, tls)
            try:
                return pb_grpc.CoordinatorStub(channel).GetCatalog(pb.CatalogRequest(), timeout=20)
            except grpc.RpcError as err:
                return from_rpc_error(err)
            finally:
                channel.close()

        given = get_catalog("people/caseworker")
        assert isinstance(given, pb.CatalogResponse) and given.catalog_yaml == f.catalog_path.read_text()
        for party in ("nodes/n0", "coordinator"):  # a region's (or the coordinator's own) certificate: not a person
            refused = get_catalog(party)
            assert isinstance(refused, FederationError) and refused.code == "PARTY_NOT_ALLOWED", refused
        assert isinstance(get_catalog("people/bob"), pb.CatalogResponse)
        revocation.revoke(f.pki_dir, (f.pki_dir / "people" / "bob.pem").read_bytes())
        refused = get_catalog("people/bob")
        assert isinstance(refused, FederationError) and refused.code == "AUTH_CERT_REVOKED"
        for _ in range(2):  # the caseworker's second and third requests of the 3 an hour
            assert isinstance(get_catalog("people/caseworker"), pb.CatalogResponse)
        refused = get_catalog("people/caseworker")
        assert isinstance(refused, FederationError) and refused.code == "POLICY_RATE_LIMITED"


def _malformed(der: bytes, form: str) -> bytes:
    """A real signer certificate (DER) made malformed in one way; its signature no longer matters: a party must
    refuse it before it gets that far, and without failing."""
    if form == "version 5":  # [0] EXPLICIT INTEGER 2 (v3) -> 5: no such X.509 version
        at = der.find(bytes.fromhex("a003020102"))
        assert 0 < at < 16
        return der[: at + 4] + b"\x05" + der[at + 5 :]
    if form == "duplicate extension":  # the subject key identifier's OID made the authority key identifier's
        at = der.find(bytes.fromhex("0603551d0e"))
        assert at > 0
        return der[: at + 4] + b"\x23" + der[at + 5 :]
    if form == "broken key":  # a point that is not on the curve
        at = der.find(bytes.fromhex("03420004"))
        assert at > 0
        return der[: at + 10] + bytes([der[at + 10] ^ 0xFF]) + der[at + 11 :]
    return der[: len(der) // 2]  # cut short


@pytest.mark.parametrize("form", ["version 5", "duplicate extension", "broken key", "cut short"])
def test_a_malformed_signer_certificate_is_refused_with_a_code_everywhere(
    fed: harness.Federation,
    keys: he.ClientKeys,
    node_stubs: dict[str, pb_grpc.NodeStub],
    client: FederationClient,
    form: str,
) -> None:
    signed = sign(fed, keys)
    bad = pb.SignedEnvelope(
        envelope=signed.envelope,
        signature=signed.signature,
        signer_certificate=_malformed(signed.signer_certificate, form),
    )
    context = keys.public_context()
    coordinator = client._stub
    calls: dict[str, Any] = {
        "coordinator Query": lambda: list(
            coordinator.Query(pb.QueryRequest(he_format=HE_FORMAT, public_context=context, envelope=bad), timeout=20)
        ),
        "coordinator Explain": lambda: coordinator.Explain(pb.ExplainRequest(envelope=bad), timeout=20),
        "coordinator Lookup": lambda: list(
            coordinator.Lookup(pb.LookupRequest(he_format=HE_FORMAT, envelope=bad, public_context=context), timeout=20)
        ),
    }
    for node_id, stub in node_stubs.items():
        partial = partial_request(fed, keys, bad)
        lookup = pb.NodeLookupRequest(
            he_format=HE_FORMAT, query_id=query_id(bad), public_context=context, envelope=bad, participants=fed.node_ids
        )
        calls[f"{node_id} ComputePartial"] = lambda stub=stub, r=partial: stub.ComputePartial(r, timeout=20)
        calls[f"{node_id} Explain"] = lambda stub=stub, r=partial: stub.Explain(r, timeout=20)
        calls[f"{node_id} Lookup"] = lambda stub=stub, r=lookup: stub.Lookup(r, timeout=20)
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as info:
            call()
        err = from_rpc_error(info.value)
        assert (info.value.code(), err.code) == (grpc.StatusCode.UNAUTHENTICATED, "AUTH_CERT_INVALID"), name
    assert_serves(fed, keys)


def test_a_role_without_a_policy_is_refused_with_the_rule(fed: harness.Federation, keys: he.ClientKeys) -> None:
    with fed.client(keys=keys, person="auditor") as auditor:
        err = refusal(lambda: auditor.query(VALID))
    assert err.code == "POLICY_ROLE_DENIED"
    assert err.rule and "roles" in err.rule and ("n0" in err.rule or "n1" in err.rule)
    assert_serves(fed, keys)


@pytest.mark.parametrize(
    ("sql", "purpose", "code"),
    [
        ("SELECT person_id, COUNT(*) FROM people GROUP BY person_id", "", "PLAN_IDENTIFIER_MISUSE"),
        (f"SELECT COUNT(*) FROM people WHERE person_id = '{SECRET_ID}'", "", "POLICY_COLUMN_DENIED"),
        ("SELECT COUNT(*) FROM people WHERE salary > 5000", "", "POLICY_COLUMN_DENIED"),
        ("SELECT status, COUNT(*) FROM loans GROUP BY status", "", "POLICY_PURPOSE_REQUIRED"),
        ("SELECT status, COUNT(*) FROM loans GROUP BY status", "statistics", "POLICY_PURPOSE_NOT_ALLOWED"),
        ("SELECT VAR_POP(amount) FROM people", "", "POLICY_AGGREGATE_DENIED"),
    ],
)
def test_policy_refusals_name_the_rule_and_the_server_keeps_serving(
    fed: harness.Federation, keys: he.ClientKeys, sql: str, purpose: str, code: str
) -> None:
    with fed.client(keys=keys) as c:
        err = refusal(lambda: c.query(sql, purpose=purpose))
    assert err.code == code
    if code.startswith("POLICY_"):
        assert err.rule and err.hint
    assert_serves(fed, keys)


def test_the_right_purpose_is_answered(fed: harness.Federation, client: FederationClient) -> None:
    sql = "SELECT status, COUNT(*) AS n, SUM(outstanding) AS o FROM loans GROUP BY status ORDER BY status"
    answer = client.query(sql, purpose="loan-review")
    assert [tuple(r) for r in answer.rows] == fed.oracle(sql)


def test_a_consent_reference_is_required_where_the_policy_says_and_never_logged(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    sql = "SELECT COUNT(*) AS n, SUM(outstanding) AS o FROM loans WHERE status = 'active'"
    consent = "CONSENT-2026-000417"
    with fed.client(keys=keys, person="clerk") as clerk:
        err = refusal(lambda: clerk.query(sql, purpose="loan-review"))
        assert err.code == "POLICY_CONSENT_REQUIRED" and err.rule and "consent" in err.rule
        answer = clerk.query(sql, purpose="loan-review", consent=consent)
    assert [tuple(r) for r in answer.rows] == fed.oracle(sql)
    for node_id in fed.node_ids:
        entries = list(read_entries(fed.audit_dir(node_id)))
        assert any(e["identity"] == "clerk" and e["consent"] is True and e["decision"] == "allowed" for e in entries)
        assert consent not in (fed.audit_dir(node_id) / "entries.jsonl").read_text()
    assert_serves(fed, keys)


def test_explain_on_the_command_line_exits_4_and_names_the_rule(fed: harness.Federation) -> None:
    sql = "SELECT status, COUNT(*) FROM loans GROUP BY status"
    refused = subprocess.run(
        [sys.executable, "-m", "hpf.cli", "query", "--profile", str(fed.profile_path), "--explain", sql],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 4, refused.stderr
    assert (
        "POLICY_PURPOSE_REQUIRED" in refused.stdout and "n0: roles.caseworker.tables.loans.purposes" in refused.stdout
    )
    assert "0 of 2 region(s) would answer" in refused.stdout
    accepted = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpf.cli",
            "query",
            "-p",
            str(fed.profile_path),
            "--explain",
            "--purpose",
            "loan-review",
            "--format",
            "json",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert accepted.returncode == 0, accepted.stderr
    doc = json.loads(accepted.stdout)
    assert doc["plan"]["table"] == "loans"
    assert [r["accepted"] for r in doc["regions"]] == [True, True]


def test_the_rate_limit_refuses_then_other_identities_still_served(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    sql = "SELECT COUNT(*) FROM people"
    with fed.client(keys=keys, person="analyst") as analyst:
        for _ in range(3):
            assert analyst.query(sql).rows == [[5]]
        err = refusal(lambda: analyst.query(sql))
    assert err.code == "POLICY_RATE_LIMITED" and err.hint
    assert_serves(fed, keys)


def test_explain_shows_the_plan_and_every_region_verdict(fed: harness.Federation, client: FederationClient) -> None:
    sql = "SELECT status, COUNT(*) FROM loans GROUP BY status"
    plan, refused = client.explain(sql)
    assert plan.table == "loans"
    assert sorted(v.node_id for v in refused.verdicts) == ["n0", "n1"]
    assert all(not v.accepted and v.code == "POLICY_PURPOSE_REQUIRED" and v.rule and v.hint for v in refused.verdicts)
    for verdict in refused.verdicts:  # the refused explain is in the node's log, and the verdict proves it
        entry = json.loads(verdict.receipt.entry)
        assert (entry["operation"], entry["decision"], entry["code"]) == ("explain", "refused", verdict.code)
        assert verdict.receipt.checkpoint.size == verdict.receipt.index + 1
    _, accepted = client.explain(sql, purpose="loan-review")
    assert all(v.accepted and v.min_group_size == 1 for v in accepted.verdicts)


def test_every_request_is_in_a_verifiable_audit_log_without_values(
    fed: harness.Federation, client: FederationClient
) -> None:
    client.query(VALID)
    with pytest.raises(FederationError):
        client.query(f"SELECT COUNT(*) FROM people WHERE person_id = '{SECRET_ID}'")
    with pytest.raises(FederationError) as unknown:  # a purpose no policy declares is free text: never logged
        client.query(VALID, purpose=f"review-of-{SECRET_ID}")
    assert unknown.value.code == "POLICY_PURPOSE_UNKNOWN"
    for node_id in fed.node_ids:
        directory = fed.audit_dir(node_id)
        report = verify_log(directory)
        assert report.ok, report
        text = (directory / "entries.jsonl").read_text()
        assert SECRET_ID not in text and "310000" not in text and "SELECT" not in text.upper()
        entries = [json.loads(line) for line in text.splitlines()]
        decisions = {(e["decision"], e["code"]) for e in entries}
        assert ("allowed", "") in decisions and ("refused", "POLICY_COLUMN_DENIED") in decisions
        assert all(e["node"] == node_id for e in entries)
    # the receipts the client kept prove each of its answered questions is in each node's log
    assert client.profile.receipts is not None
    kept = [Receipt.from_dict(json.loads(line)) for line in client.profile.receipts.read_text().splitlines()]
    assert {r.node_id for r in kept} == set(fed.node_ids)
    for node_id in fed.node_ids:
        mine = [r for r in kept if r.node_id == node_id]
        report = verify_log(fed.audit_dir(node_id), receipts=mine)
        assert report.ok and len(mine) >= 2, report


def test_a_node_refuses_a_revoked_coordinator(tmp_path: Path, keys: he.ClientKeys) -> None:
    with harness.federation(tmp_path, TABLES, NODE_ROWS) as f:
        assert_serves(f, keys)
        revocation.revoke(f.pki_dir, (f.pki_dir / "coordinator.pem").read_bytes())
        with f.client(keys=keys) as c:
            err = refusal(lambda: c.query(VALID))
        assert err.code == "AUTH_CERT_REVOKED" and "coordinator" in err.message
        for node_id in f.node_ids:
            last = list(read_entries(f.audit_dir(node_id)))[-1]
            assert (last["decision"], last["code"], last["via"]) == ("refused", "AUTH_CERT_REVOKED", "coordinator")


def test_kept_receipts_are_readable_only_by_their_owner(fed: harness.Federation, client: FederationClient) -> None:
    path = client.profile.receipts
    assert path is not None
    client.query(VALID)
    assert path.stat().st_mode & 0o777 == 0o600  # who asked what, when: not for other users of the machine
    before = path.read_bytes()
    path.chmod(0o644)  # e.g. a file from before receipts were kept private, or a careless copy back
    client.query(VALID)
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_bytes().startswith(before)


def test_an_auditor_pins_the_key_from_the_catalog(
    fed: harness.Federation, client: FederationClient, tmp_path: Path
) -> None:
    client.query(VALID)
    client.query(VALID)
    directory = fed.audit_dir("n0")

    def verify(path: Path) -> subprocess.CompletedProcess[str]:
        args = ["audit", "verify", str(path), "--catalog", str(fed.catalog_path), "--node", "n0"]
        return subprocess.run([sys.executable, "-m", "hpf.cli", *args], capture_output=True, text=True, timeout=120)

    ok = verify(directory)
    assert ok.returncode == 0 and "key pinned" in ok.stdout and "node n0" in ok.stdout, ok.stderr
    copy = tmp_path / "audit"
    copy.mkdir()
    for name in ("entries.jsonl", "checkpoints.jsonl"):
        (copy / name).write_bytes((directory / name).read_bytes())
    lines = (copy / "entries.jsonl").read_text().splitlines(keepends=True)
    lines[1] = (
        lines[1]
        .replace('"decision":"allowed"', '"decision":"refused"')
        .replace('"decision":"refused"', '"decision":"allowed"', 0 if '"decision":"allowed"' in lines[1] else 1)
    )
    (copy / "entries.jsonl").write_text("".join(lines))
    tampered = verify(copy)
    assert tampered.returncode == 7 and "entry 1" in tampered.stderr, tampered.stderr


def test_another_regions_intact_log_does_not_verify_as_this_regions(
    fed: harness.Federation, client: FederationClient, tmp_path: Path
) -> None:
    """Region n1's whole log, checkpoints and all, copied to where n0's log should be: an auditor who asks for
    n0's log (the catalog's key for n0) is told it is n1's, and n1's saved checkpoint and receipts do not pass
    for n0's either."""
    client.query(VALID)
    answer = client.query(VALID)
    theirs = fed.audit_dir("n1")
    at_n0 = tmp_path / "n0" / "audit"  # the path the auditor verifies as region n0's
    at_n0.mkdir(parents=True)
    for name in ("entries.jsonl", "checkpoints.jsonl", "audit.pub"):
        (at_n0 / name).write_bytes((theirs / name).read_bytes())
    receipt = next(r for r in answer.receipts if r.node_id == "n1")
    (tmp_path / "checkpoint.json").write_text(json.dumps(receipt.checkpoint.to_dict()))
    (tmp_path / "receipts.jsonl").write_text(json.dumps(dataclasses.replace(receipt, node_id="n0").to_dict()) + "\n")

    def verify(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        args = ["audit", "verify", str(path), "--catalog", str(fed.catalog_path), "--node", "n0", *extra]
        return subprocess.run([sys.executable, "-m", "hpf.cli", *args], capture_output=True, text=True, timeout=120)

    copied = verify(at_n0)
    assert copied.returncode == 7 and "AUDIT_NODE_MISMATCH" in copied.stderr and "n1" in copied.stderr, copied
    own = fed.audit_dir("n0")
    for extra, code in (
        (("--checkpoint", str(tmp_path / "checkpoint.json")), "AUDIT_NODE_MISMATCH"),
        (("--receipts", str(tmp_path / "receipts.jsonl")), "AUDIT_NODE_MISMATCH"),  # relabelled as n0's
    ):
        result = verify(own, *extra)
        assert result.returncode == 7 and code in result.stderr, result
    # the same without the CLI: whoever names the node gets the mismatch, for the log and for a receipt
    n0_key = load_public_key(fed.catalog.nodes[0].audit_key or "")
    assert verify_log(at_n0, n0_key, node_id="n0").code == "AUDIT_NODE_MISMATCH"
    assert verify_log(own, n0_key, receipts=[receipt], node_id="n0").code == "AUDIT_NODE_MISMATCH"
    assert verify_log(theirs, node_id="n1", receipts=[receipt]).ok
    # the log's own files cannot say whose log it is: with --catalog, the node must be named
    unnamed = subprocess.run(
        [sys.executable, "-m", "hpf.cli", "audit", "verify", str(at_n0), "--catalog", str(fed.catalog_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unnamed.returncode == 2 and "CLI_BAD_OPTION" in unnamed.stderr, unnamed


def test_a_receipt_relabelled_as_another_regions_is_refused(fed: harness.Federation, client: FederationClient) -> None:
    answer = client.query(VALID)
    receipt = next(r for r in answer.receipts if r.node_id == "n1")
    keys = {n.id: n.audit_key for n in fed.catalog.nodes}
    entry = json.loads(receipt.entry)
    for forged in (
        dataclasses.replace(receipt, node_id="n0"),  # the label moved: the checkpoint signs n1
        dataclasses.replace(  # label and checkpoint both n0's would need n0's signature; the entry still says n1
            receipt, node_id="n0", checkpoint=dataclasses.replace(receipt.checkpoint, node_id="n0")
        ),
    ):
        with pytest.raises(FederationError):
            check_receipt(forged, nonce=bytes.fromhex(entry["nonce"]), signer="caseworker", audit_keys=keys)
        assert forged.problem() is not None
    assert check_receipt(receipt, nonce=bytes.fromhex(entry["nonce"]), signer="caseworker", audit_keys=keys)


def test_kept_receipts_are_proved_later_through_the_coordinator(
    fed: harness.Federation, client: FederationClient
) -> None:
    client.query(VALID)
    kept = client.kept_receipts()
    assert {r.node_id for r in kept} == set(fed.node_ids)
    client.query(VALID)  # the logs grow after the receipts were given
    for receipt in kept:
        latest = client.check_receipt(receipt)
        assert latest.size > receipt.index and latest.size >= receipt.checkpoint.size
    result = subprocess.run(
        [sys.executable, "-m", "hpf.cli", "audit", "receipts", "--profile", str(fed.profile_path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["rewritten"] == 0 and len(doc["receipts"]) >= len(kept)
    assert all(r["status"] == "still logged" for r in doc["receipts"])


def test_audit_proof_refusals(fed: harness.Federation, client: FederationClient) -> None:
    stub = client._stub
    for request, code in (
        (pb.AuditProofRequest(node_id="nowhere", index=0, old_size=1), "PLAN_UNKNOWN_REGION"),
        (pb.AuditProofRequest(node_id="n0", index=10**9, old_size=1), "AUDIT_PROOF_RANGE"),
        (pb.AuditProofRequest(node_id="n0", index=0, old_size=0), "AUDIT_PROOF_RANGE"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.AuditProof(request, timeout=20)
        assert from_rpc_error(info.value).code == code
    assert_serves(fed, client.keys)


def test_the_coordinator_limits_each_person_before_any_region_logs_it(tmp_path: Path, keys: he.ClientKeys) -> None:
    limit = {"rate_limit": {"requests": 2, "per_seconds": 3600}}
    with harness.federation(tmp_path, TABLES, NODE_ROWS, coordinator_settings=limit) as f:
        with f.client(keys=keys) as c:
            for _ in range(2):
                c.query(VALID)
            err = refusal(lambda: c.query(VALID))
        assert err.code == "POLICY_RATE_LIMITED" and err.rule == "coordinator: rate_limit"
        for node_id in f.node_ids:  # the refused question never reached a region
            assert len(list(read_entries(f.audit_dir(node_id)))) == 2
        with f.client(keys=keys, person="caseworker") as same:  # the same person, through a new connection
            assert refusal(lambda: same.query(VALID)).code == "POLICY_RATE_LIMITED"


def test_receipts_the_coordinator_rate_limits_are_reported_not_checked(tmp_path: Path, keys: he.ClientKeys) -> None:
    limit = {"rate_limit": {"requests": 3, "per_seconds": 3600}}
    with harness.federation(tmp_path, TABLES, NODE_ROWS, coordinator_settings=limit) as f:
        with f.client(keys=keys) as c:
            c.query(VALID)
            c.query(VALID)  # 4 receipts kept; 1 request of the budget left for proofs
        args = ["audit", "receipts", "--profile", str(f.profile_path), "--format", "json"]
        result = subprocess.run([sys.executable, "-m", "hpf.cli", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 4 and "POLICY_RATE_LIMITED" in result.stderr, result.stderr
    doc = json.loads(result.stdout)
    assert [r["status"] for r in doc["receipts"]] == ["still logged", "not checked", "not checked", "not checked"]
    assert doc["not_checked"] == 3 and doc["rewritten"] == 0
