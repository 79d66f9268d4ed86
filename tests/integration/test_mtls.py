"""Mutual TLS end to end: a real gRPC server on port 0 serving the standard health service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hpf.federation.errors import AuthError, FederationError
from hpf.federation.trust import channels, key_files, pki, servers, tls

WHOAMI = "/hpf.test.Echo/WhoAmI"
SERVING = health_pb2.HealthCheckResponse.SERVING
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> pki.FederationFiles:
    return pki.init_federation(
        tmp_path_factory.mktemp("fed"), ["hangzhou"], federation="test", clients=[("alice", "analyst", "hangzhou")]
    )


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> pki.FederationFiles:
    clients = [("mallory", "analyst", None)]
    return pki.init_federation(tmp_path_factory.mktemp("other"), ["hangzhou"], federation="test", clients=clients)


def _config(files: key_files.CertFiles) -> tls.TlsConfig:
    return tls.TlsConfig(ca=files.ca, cert=files.cert, key=files.key)


def _whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
    try:
        ident = servers.peer_identity(context)
    except FederationError as exc:
        context.abort(exc.status, exc.message)
    if ident is None:
        return b"null"
    fields = {"cn": ident.common_name, "kind": ident.kind, "role": ident.role, "region": ident.region}
    return json.dumps(fields).encode()


@contextmanager
def serve(server_tls: tls.TlsConfig | None) -> Iterator[int]:
    """Start a health + WhoAmI server on 127.0.0.1:0; yield the bound port; always stop it."""
    server = servers.new_server(max_workers=4)
    servicer = health.HealthServicer()
    servicer.set("", SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    handlers = {"WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("hpf.test.Echo", handlers),))
    try:
        port = servers.add_port(server, "127.0.0.1:0", server_tls)
        assert port > 0
        server.start()
        yield port
    finally:
        server.stop(None)


def _check(channel: grpc.Channel) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    return reply.status


def _refused(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        _check(channel)
    return info.value.code()


def test_client_with_federation_certificate_gets_serving(fed: pki.FederationFiles) -> None:
    with serve(_config(fed["nodes"]["hangzhou"])) as port:
        client = _config(fed["people"]["alice"])
        for host in ("127.0.0.1", "localhost"):  # both are in the node certificate's SubjectAlternativeName
            assert _check(channels.secure_channel(f"{host}:{port}", client)) == SERVING


def test_server_sees_the_verified_client_identity(fed: pki.FederationFiles) -> None:
    with serve(_config(fed["nodes"]["hangzhou"])) as port:
        with channels.secure_channel(f"127.0.0.1:{port}", _config(fed["people"]["alice"])) as channel:
            reply = channel.unary_unary(WHOAMI)(b"", timeout=TIMEOUT)
        assert json.loads(reply) == {"cn": "alice", "kind": "person", "role": "analyst", "region": "hangzhou"}
        with channels.secure_channel(f"127.0.0.1:{port}", _config(fed["coordinator"])) as channel:
            reply = channel.unary_unary(WHOAMI)(b"", timeout=TIMEOUT)
        assert json.loads(reply)["kind"] == "coordinator"


def test_client_without_certificate_is_refused(fed: pki.FederationFiles) -> None:
    with serve(_config(fed["nodes"]["hangzhou"])) as port:
        creds = grpc.ssl_channel_credentials(root_certificates=fed["ca"].cert.read_bytes())
        assert _refused(grpc.secure_channel(f"127.0.0.1:{port}", creds)) == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(fed: pki.FederationFiles) -> None:
    with serve(_config(fed["nodes"]["hangzhou"])) as port:
        assert _refused(channels.secure_channel(f"127.0.0.1:{port}", None)) == grpc.StatusCode.UNAVAILABLE


def test_client_certificate_from_another_ca_is_refused(fed: pki.FederationFiles, other: pki.FederationFiles) -> None:
    mallory = other["people"]["mallory"]
    with serve(_config(fed["nodes"]["hangzhou"])) as port:
        # Trusts the right CA, but presents a certificate the federation CA never issued.
        creds = grpc.ssl_channel_credentials(
            root_certificates=fed["ca"].cert.read_bytes(),
            private_key=mallory.key.read_bytes(),
            certificate_chain=mallory.cert.read_bytes(),
        )
        assert _refused(grpc.secure_channel(f"127.0.0.1:{port}", creds)) == grpc.StatusCode.UNAVAILABLE


def test_client_refuses_a_server_certificate_from_another_ca(
    fed: pki.FederationFiles, other: pki.FederationFiles
) -> None:
    rogue = other["nodes"]["hangzhou"]
    # The rogue server trusts our CA for clients, but its own certificate comes from another CA.
    rogue_tls = tls.TlsConfig(ca=fed["ca"].cert, cert=rogue.cert, key=rogue.key)
    server = servers.new_server(max_workers=2)
    servicer = health.HealthServicer()
    servicer.set("", SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        material = (rogue.key.read_bytes(), rogue.cert.read_bytes())
        creds = grpc.ssl_server_credentials(
            [material], root_certificates=fed["ca"].cert.read_bytes(), require_client_auth=True
        )
        port = server.add_secure_port("127.0.0.1:0", creds)
        server.start()
        with pytest.raises(AuthError) as info:  # our own checks refuse to serve with it
            servers.add_port(servers.new_server(max_workers=1), "127.0.0.1:0", rogue_tls)
        assert info.value.code == "TLS_WRONG_CA"
        client = _config(fed["people"]["alice"])
        assert _refused(channels.secure_channel(f"127.0.0.1:{port}", client)) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)


def test_insecure_server_and_channel(fed: pki.FederationFiles) -> None:
    with serve(None) as port:
        assert _check(channels.secure_channel(f"127.0.0.1:{port}", None)) == SERVING
        with channels.secure_channel(f"127.0.0.1:{port}", None) as channel:
            assert channel.unary_unary(WHOAMI)(b"", timeout=TIMEOUT) == b"null"


def test_tls_client_cannot_talk_to_plaintext_server(fed: pki.FederationFiles) -> None:
    with serve(None) as port:
        client = _config(fed["people"]["alice"])
        assert _refused(channels.secure_channel(f"127.0.0.1:{port}", client)) == grpc.StatusCode.UNAVAILABLE
