"""Bad input of every kind gets a stable code and a clear line, never a traceback or INTERNAL (issue 14).

Each test here names one way bad input used to escape: text that is not text, a state directory the node
cannot write, bytes that are no protobuf, an identifier echoed whole, a budget the node would refuse.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import harness
import pytest
import yaml
from grpc_health.v1 import health_pb2
from raw_rpc import METHODS, RPC_TIMEOUT_S, assert_stable, party_of, raw_channels, readable, send_raw

from hpf.demo.launcher import free_ports
from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.trust.envelope import Signer
from hpf.federation.trust.pki import init_federation
from hpf.node.privacy_budget import Budget

TABLES = {"t": {"columns": {"a": {"type": "BIGINT", "class": "public"}}}}


def _hpf(*args: str | bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpf.cli", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _catalog(path: Path) -> Path:
    doc = {
        "federation": "t",
        "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
        "tables": {"t": {"columns": {"a": {"type": "BIGINT", "class": "public"}}}},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def _profile(tmp_path: Path) -> Path:
    init_federation(tmp_path / "pki", ["north"], federation="t")
    (port,) = free_ports(1)
    profile = {
        "coordinator": f"127.0.0.1:{port}",
        "catalog": str(_catalog(tmp_path / "federation.yaml")),
        "keys": "keys/me.bfv",
        "tls": {"ca": "pki/ca.pem", "cert": "pki/people/caseworker.pem", "key": "pki/people/caseworker.key"},
    }
    path = tmp_path / "client.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_a_purpose_consent_or_sql_that_is_not_text_is_refused_before_signing(tmp_path: Path) -> None:
    """A byte that is no UTF-8 in an argument reaches Python as a lone surrogate, which no protobuf can hold."""
    profile = str(_profile(tmp_path))
    sql = "SELECT COUNT(*) FROM t"
    cases: list[tuple[list[str | bytes], str]] = [
        (["--purpose", b"loan\x80"], "purpose"),
        (["--consent", b"\xed\xb2\x80"], "consent reference"),
        ([], "SQL"),
    ]
    for args, field in cases:
        query: str | bytes = sql if args else b"SELECT COUNT(*) FROM t WHERE a = 1 -- \x80"
        result = _hpf("query", "-p", profile, *args, query)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: [INPUT_NOT_TEXT]"), result.stderr
        assert field in result.stderr and "Traceback" not in result.stderr


def _node_files(tmp_path: Path, state: Path) -> Path:
    """A node's config (insecure, open policy) over one small file, its state in ``state``."""
    catalog = _catalog(tmp_path / "federation.yaml")
    if not (tmp_path / "pki").exists():
        init_federation(tmp_path / "pki", ["north"], federation="t")
    harness.write_table(tmp_path / "t.parquet", {"a": "BIGINT"}, [(1,)])
    config = {
        "node_id": "north",
        "listen": "127.0.0.1:0",
        "catalog": str(catalog),
        "tables": {"t": {"path": str(tmp_path / "t.parquet")}},
        "policy": str(harness.OPEN_POLICY),
        "state_dir": str(state),
        "audit_fsync": False,
        "federation_ca": str(tmp_path / "pki" / "ca.pem"),
    }
    path = tmp_path / f"{state.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_node_whose_state_cannot_be_written_refuses_to_start_naming_the_directory(tmp_path: Path) -> None:
    """Root writes through any mode bits: a directory that is a regular file stops everyone."""
    for i, below in enumerate(("audit", "privacy", "")):
        state = tmp_path / f"state{i}"
        config = _node_files(tmp_path, state)
        blocked = state / below if below else state
        blocked.parent.mkdir(parents=True, exist_ok=True)
        blocked.write_text("not a directory\n")
        result = _hpf("node", "serve", "-c", str(config), "--insecure")
        assert result.returncode == 2, result.stderr
        assert "error: [CONFIG_STATE_UNWRITABLE]" in result.stderr, result.stderr
        assert str(blocked) in result.stderr and "Traceback" not in result.stderr


ROWS = {
    "n0": {"t": [(i,) for i in range(5)]},
    "n1": {"t": [(i * 7,) for i in range(4)]},
}
HONEST = "SELECT COUNT(*) AS n, SUM(a) AS total FROM t"
# no protobuf message of any type: a field number 0, a length past the end, a truncated varint, a field tag of
# wire type 7; and one that only a type with a string field 1 cannot read (bytes that are no UTF-8)
UNDECODABLE = [b"\x00", b"\x0a\xff\x01", b"\x08\x80\x80\x80", b"\x0f", b"\x0a\x02\xff\xfe"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    with harness.federation(tmp_path_factory.mktemp("badinput"), TABLES, ROWS) as f:
        yield f


def honest_answer_is_exact(fed: harness.Federation) -> None:
    with fed.client() as client:
        assert [tuple(r) for r in client.query(HONEST).rows] == fed.oracle(HONEST)


def test_bytes_that_are_no_protobuf_are_refused_as_malformed_by_every_rpc(fed: harness.Federation) -> None:
    with raw_channels(fed) as channels:
        for method, (streams, kind) in METHODS.items():
            for data in UNDECODABLE:
                err = send_raw(channels[party_of(method)], method, streams, data)
                refusal = assert_stable(err)
                if not readable(kind, data):
                    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, data, err)
                    assert refusal is not None and refusal.code == "RPC_MALFORMED", (method, data)
        for party in ("coordinator", "n1"):  # the health service of each kind of server, Watch too
            for method, streams in (("/grpc.health.v1.Health/Check", False), ("/grpc.health.v1.Health/Watch", True)):
                refusal = assert_stable(send_raw(channels[party], method, streams, b"\x0a\x02\xff\xfe"))
                assert refusal is not None and refusal.code == "RPC_MALFORMED", (party, method)
    honest_answer_is_exact(fed)


def test_an_identifier_the_caller_gives_is_echoed_only_as_a_short_printable_prefix(fed: harness.Federation) -> None:
    huge = "\x1b[2J\u202e" + "n" * 1_000_000
    people = fed.pki_dir / "people"
    signer = Signer.from_files(people / "caseworker.pem", people / "caseworker.key")
    keys = he.ClientKeys.generate()
    wrong_operation = signer.sign(
        sql=HONEST, context_digest=he.context_digest(keys.public_context()), federation="test", operation=huge
    )
    with raw_channels(fed) as channels:
        stub = pb_grpc.CoordinatorStub(channels["coordinator"])
        node = pb_grpc.NodeStub(channels["n0"])
        calls = {
            "PLAN_UNKNOWN_REGION": lambda: stub.AuditProof(pb.AuditProofRequest(node_id=huge), timeout=RPC_TIMEOUT_S),
            "AUTH_ENVELOPE_OPERATION": lambda: list(
                stub.Query(
                    pb.QueryRequest(
                        envelope=wrong_operation, public_context=keys.public_context(), he_format=HE_FORMAT
                    ),
                    timeout=RPC_TIMEOUT_S,
                )
            ),
            "AUTH_ENVELOPE_OPERATION ": lambda: node.Explain(
                pb.PartialRequest(envelope=wrong_operation), timeout=RPC_TIMEOUT_S
            ),
        }
        for code, call in calls.items():
            with pytest.raises(grpc.RpcError) as info:
                call()
            refusal = assert_stable(info.value)
            assert refusal is not None and refusal.code == code.strip(), refusal
            details = info.value.details() or ""
            assert len(details) < 300 and "\x1b" not in details and "\u202e" not in details, details[:300]
    honest_answer_is_exact(fed)


def test_policy_check_refuses_a_privacy_budget_the_node_would_refuse_with_its_file_and_line(tmp_path: Path) -> None:
    """A budget above the node's ledger limit used to pass the check, and then fail every DP question."""
    policy = tmp_path / "big-budget.yaml"
    dp = "privacy: {mode: dp, epsilon: 1.0, delta: 1.0e-6, budget: {epsilon: 2000000, delta: 1.0e-4, period: day}}"
    policy.write_text(f"version: 1\nextends: {harness.OPEN_POLICY}\n\nroles:\n  caseworker:\n    {dp}\n")
    result = _hpf("policy", "check", str(policy))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[POLICY_FILE_INVALID]" in result.stderr and "Traceback" not in result.stderr
    assert f"{policy}:6:" in result.stderr and "budget.epsilon" in result.stderr, result.stderr
    # the largest budget the check lets through is one the node's ledger takes
    ok = tmp_path / "largest-budget.yaml"
    ok.write_text(policy.read_text().replace("2000000", "1000000"))
    assert _hpf("policy", "check", str(ok)).returncode == 0
    assert Budget(1e6, 1e-4, "day").epsilon == 1e6


def test_no_string_field_of_any_request_is_echoed_whole(fed: harness.Federation) -> None:
    """Every string field of every method's request (nested ones too), filled with 256 KB of escapes."""
    huge = "\x1b[2J\u202e" + "x" * 256 * 1024
    with raw_channels(fed) as channels:
        for method, (streams, kind) in METHODS.items():
            for path in _string_fields(kind.DESCRIPTOR):
                request = kind()
                target = request
                for name in path[:-1]:
                    target = getattr(target, name)
                field = target.DESCRIPTOR.fields_by_name[path[-1]]
                if field.is_repeated:
                    getattr(target, path[-1]).append(huge)
                else:
                    setattr(target, path[-1], huge)
                err = send_raw(channels[party_of(method)], method, streams, request.SerializeToString())
                refusal = assert_stable(err)
                if refusal is not None:
                    assert len(refusal.message) < 1000 and "\x1b" not in refusal.message, (method, path)
                    assert "\u202e" not in refusal.message, (method, path)
    honest_answer_is_exact(fed)


def test_a_health_check_of_a_service_no_server_knows_is_not_found_with_a_code(fed: harness.Federation) -> None:
    """The standard health service answers NOT_FOUND alone for a service it does not know; every party's carries a
    stable code too, on the node's (threads) and the coordinator's (event loop) servers alike."""
    request = health_pb2.HealthCheckRequest(service="\x00no such service").SerializeToString()
    with raw_channels(fed) as channels:
        for party in ("n0", "coordinator"):
            err = send_raw(channels[party], "/grpc.health.v1.Health/Check", False, request)
            assert err is not None and err.code() == grpc.StatusCode.NOT_FOUND, party
            refusal = assert_stable(err)
            assert refusal is not None and refusal.code == "HEALTH_SERVICE_UNKNOWN", party
            assert send_raw(channels[party], "/grpc.health.v1.Health/Check", False, b"") is None  # the server's own


def _string_fields(descriptor: Any, prefix: tuple[str, ...] = (), depth: int = 0) -> list[tuple[str, ...]]:
    """The paths of a message type's string fields, through singular nested messages (two levels)."""
    paths: list[tuple[str, ...]] = []
    for field in descriptor.fields:
        if field.type == field.TYPE_STRING:
            paths.append((*prefix, field.name))
        elif field.type == field.TYPE_MESSAGE and not field.is_repeated and depth < 2:
            paths += _string_fields(field.message_type, (*prefix, field.name), depth + 1)
    return paths
