"""Requests sent as raw bytes to every method of a running federation, and the check that a refusal is stable.

The tests of bad input (tests/integration/test_bad_input.py and its fuzz tests) send what no hpf client would:
bytes that are no protobuf, mutated messages, envelopes with mangled certificates. Every refusal must be a
status other than INTERNAL or UNKNOWN, with a stable code in its trailing metadata.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import harness
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2

from hpf.federation.errors import CODE_KEY, FederationError, from_rpc_error, is_code
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust.channels import coordinator_target, node_target, secure_channel
from hpf.federation.trust.tls import TlsConfig

RPC_TIMEOUT_S = 30.0
METHODS: dict[str, tuple[bool, type[Message]]] = {  # method -> (streams its answer, request type)
    "/hpf.v1.Node/ComputePartial": (False, pb.PartialRequest),
    "/hpf.v1.Node/Explain": (False, pb.PartialRequest),
    "/hpf.v1.Node/AuditProof": (False, pb.AuditProofRequest),
    "/hpf.v1.Node/Describe": (False, pb.DescribeRequest),
    "/hpf.v1.Node/Lookup": (False, pb.NodeLookupRequest),
    "/hpf.v1.Coordinator/Query": (True, pb.QueryRequest),
    "/hpf.v1.Coordinator/Lookup": (True, pb.LookupRequest),
    "/hpf.v1.Coordinator/Explain": (False, pb.ExplainRequest),
    "/hpf.v1.Coordinator/AuditProof": (False, pb.AuditProofRequest),
    "/hpf.v1.Coordinator/GetCatalog": (False, pb.CatalogRequest),
    "/grpc.health.v1.Health/Check": (False, health_pb2.HealthCheckRequest),  # of a node (and Watch: it streams)
}


@contextlib.contextmanager
def raw_channels(fed: harness.Federation) -> Iterator[dict[str, grpc.Channel]]:
    """Channels to every node (with the coordinator's certificate) and to the coordinator (a person's)."""
    pki = fed.pki_dir
    as_coordinator = TlsConfig(ca=pki / "ca.pem", cert=pki / "coordinator.pem", key=pki / "coordinator.key")
    people = pki / "people"
    as_person = TlsConfig(ca=pki / "ca.pem", cert=people / "caseworker.pem", key=people / "caseworker.key")
    channels = {
        n: secure_channel(f"127.0.0.1:{node.port}", as_coordinator, server_name=node_target(as_coordinator, n))
        for n, node in fed.nodes.items()
    }
    channels["coordinator"] = secure_channel(
        f"127.0.0.1:{fed.coordinator.port}", as_person, server_name=coordinator_target(as_person)
    )
    try:
        yield channels
    finally:
        for channel in channels.values():
            channel.close()


def send_raw(channel: grpc.Channel, method: str, streams: bool, data: bytes) -> grpc.RpcError | None:
    """Send ``data`` as the request of ``method`` as it is; the error the server answers with, if any."""
    try:
        if streams:
            call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
            for _ in call(data, timeout=RPC_TIMEOUT_S):
                pass
        else:
            channel.unary_unary(method, request_serializer=None, response_deserializer=None)(
                data, timeout=RPC_TIMEOUT_S
            )
    except grpc.RpcError as err:
        return err
    return None


def assert_stable(err: grpc.RpcError | None) -> FederationError | None:
    """A refusal is never INTERNAL or UNKNOWN, and carries a stable code in its trailing metadata."""
    if err is None:
        return None
    assert err.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (err.code(), err.details())
    codes = [v for k, v in err.trailing_metadata() or () if k == CODE_KEY]
    assert codes and is_code(str(codes[0])), (err.code(), err.details())
    return from_rpc_error(err)


def readable(kind: type[Message], data: bytes) -> bool:
    try:
        kind.FromString(data)
    except DecodeError:
        return False
    return True


def party_of(method: str) -> str:
    return "coordinator" if method.startswith("/hpf.v1.Coordinator/") else "n0"
