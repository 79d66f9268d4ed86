"""Impostor servers: a party holding some valid certificate of the federation poses as another server.

Each server is dialled by its name in the federation (``coordinator.test``, ``<id>.node.test``), which the CA
writes only into that server's certificate. The impostors here are written as an attacker would: a plain gRPC
server, not our own server code (which refuses misnamed certificates before it listens), presenting a real
certificate issued by the federation CA, requiring client certificates like a real party, and counting every
call that reaches it. The honest parties must refuse it in the TLS handshake, before any question is sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import harness
import pytest
import typer
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from hpf.cli.pki import register
from hpf.client.federation_client import FederationClient
from hpf.client.profile import ClientProfile
from hpf.coordinator.config import CoordinatorConfig
from hpf.coordinator.server import running_coordinator
from hpf.federation.config_files import parse_model
from hpf.federation.crypto import he
from hpf.federation.errors import ConfigError, FederationError
from hpf.federation.trust import certificates, key_files, pki, servers, tls

TABLES: dict[str, Any] = {
    "t": {
        "columns": {
            "g": {"type": "VARCHAR", "class": "public", "domain": {"values": ["a", "b"]}},
            "x": {"type": "BIGINT", "class": "public"},
        }
    }
}
ROWS = {"n0": {"t": [("a", 1), ("b", 2)]}, "n1": {"t": [("a", 4)]}}
SQL = "SELECT g, COUNT(*), SUM(x) FROM t GROUP BY g ORDER BY g"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    with harness.federation(tmp_path_factory.mktemp("names"), TABLES, ROWS) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@contextmanager
def impostor(fed: harness.Federation, cert: str) -> Iterator[tuple[int, list[str]]]:
    """A server presenting the federation certificate ``pki/<cert>.pem`` and answering every method with an empty
    message; yields its port and the list of methods called on it (a call is only seen after the handshake)."""
    calls: list[str] = []

    class Everything(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            calls.append(details.method)
            return grpc.unary_unary_rpc_method_handler(lambda request, context: b"")

    pki_dir = fed.pki_dir
    credentials = grpc.ssl_server_credentials(
        [((pki_dir / f"{cert}.key").read_bytes(), (pki_dir / f"{cert}.pem").read_bytes())],
        root_certificates=(pki_dir / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    server = servers.new_server(max_workers=2)
    server.add_generic_rpc_handlers((Everything(),))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port, calls
    finally:
        server.stop(None)


def client_at(fed: harness.Federation, address: str, keys: he.ClientKeys, *, pinned: bool = True) -> FederationClient:
    """The caseworker's client with its profile pointing at ``address`` (``pinned``: with its own catalog copy,
    else fetching the catalog from whatever answers there)."""
    doc = yaml.safe_load(fed.profile_path.read_text())
    doc["coordinator"] = address
    if not pinned:
        del doc["catalog"]
    return FederationClient(parse_model(fed.profile_path, doc, ClientProfile), keys=keys)


def coordinator_config(fed: harness.Federation) -> CoordinatorConfig:
    pki_dir = fed.pki_dir
    return CoordinatorConfig.model_validate(
        {
            "listen": "127.0.0.1:0",
            "catalog": str(fed.catalog_path),
            "deadline_ms": 3_000,
            "min_deadline_ms": 1_000,
            "revocations": str(pki_dir / "crl.pem"),
            "tls": {
                "ca": str(pki_dir / "ca.pem"),
                "cert": str(pki_dir / "coordinator.pem"),
                "key": str(pki_dir / "coordinator.key"),
            },
        }
    )


def refusal(call: Any) -> FederationError:
    with pytest.raises(FederationError) as info:
        call()
    return info.value


# ------------------------------------------------------------------------------------------ honest parties


def test_honest_parties_still_reach_each_other_by_name(fed: harness.Federation, keys: he.ClientKeys) -> None:
    with fed.client(keys) as client:
        answer = client.query(SQL)
    assert answer.rows == [list(r) for r in fed.oracle(SQL)] and answer.answered == ["n0", "n1"]
    unpinned = client_at(fed, f"127.0.0.1:{fed.coordinator.port}", keys, pinned=False)
    with unpinned:
        assert unpinned.catalog.federation == "test"


# ----------------------------------------------------------------------------- posing as the coordinator


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned-catalog", "catalog-from-coordinator"])
def test_a_node_certificate_posing_as_the_coordinator_never_sees_the_question(
    fed: harness.Federation, keys: he.ClientKeys, pinned: bool
) -> None:
    with impostor(fed, "nodes/n0") as (port, calls):
        with client_at(fed, f"127.0.0.1:{port}", keys, pinned=pinned) as client:
            err = refusal(lambda: client.query(SQL))
    assert err.code == "SERVER_UNREACHABLE" and err.status == grpc.StatusCode.UNAVAILABLE, str(err)
    assert calls == []  # the handshake failed: neither the catalog request nor the signed SQL reached it


def test_the_same_impostor_with_the_coordinator_certificate_is_reached(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    """The control for the test above: what refuses the impostor is the name in its certificate, nothing else."""
    with impostor(fed, "coordinator") as (port, calls):
        with client_at(fed, f"127.0.0.1:{port}", keys) as client:
            refusal(lambda: client.query(SQL))  # its empty answer is no answer
    assert calls == ["/hpf.v1.Coordinator/Query"]


# ------------------------------------------------------------------------------------ posing as a node


@pytest.mark.parametrize("cert", ["nodes/n0", "coordinator", "people/caseworker"])
def test_the_coordinator_refuses_any_other_certificate_where_it_dials_a_node(
    fed: harness.Federation, keys: he.ClientKeys, cert: str
) -> None:
    """n1's address leads to a server holding another party's certificate (n0's, the coordinator's own, a
    person's): the coordinator never sends it a partial plan, and the question is answered without n1."""
    with impostor(fed, cert) as (port, calls):
        addresses = {"n0": f"127.0.0.1:{fed.nodes['n0'].port}", "n1": f"127.0.0.1:{port}"}
        with running_coordinator(coordinator_config(fed), addresses=addresses) as coordinator:
            n1_channel = coordinator.channels[fed.catalog.node_ids.index("n1")]

            async def check() -> None:  # on the coordinator's loop, where its channels live
                await health_pb2_grpc.HealthStub(n1_channel).Check(health_pb2.HealthCheckRequest(), timeout=5)

            with pytest.raises(grpc.RpcError) as info:
                coordinator.run(check())
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            with client_at(fed, f"127.0.0.1:{coordinator.port}", keys) as client:
                try:
                    answer = client.query(SQL)
                    assert [m["node_id"] for m in answer.missing] == ["n1"]
                except FederationError as err:  # an exact answer may wait for every region
                    assert err.code.startswith("REGIONS_"), str(err)
    assert calls == []


def test_the_coordinator_reaches_the_right_node_at_any_address(fed: harness.Federation, keys: he.ClientKeys) -> None:
    """The control: the real n1 behind the same kind of address mapping is dialled and answers."""
    addresses = {n: f"127.0.0.1:{node.port}" for n, node in fed.nodes.items()}
    with running_coordinator(coordinator_config(fed), addresses=addresses) as coordinator:
        with client_at(fed, f"127.0.0.1:{coordinator.port}", keys) as client:
            assert client.query(SQL).answered == ["n0", "n1"]


# -------------------------------------------------------------------------------- the CA hands out names


@pytest.mark.parametrize(
    ("name", "kind", "region", "hosts", "code"),
    [
        ("evil", "node", "n9", ["coordinator.test"], "PKI_RESERVED_NAME"),
        ("evil", "node", "n9", ["n1.node.test"], "PKI_RESERVED_NAME"),  # another node's name
        ("evil", "node", "n9", ["*.node.test"], "PKI_RESERVED_NAME"),  # a wildcard over every node
        ("evil", "node", "n9", ["Coordinator.TEST."], "PKI_RESERVED_NAME"),  # TLS compares names case-blind
        ("evil", "node", "n9", ["test"], "PKI_RESERVED_NAME"),
        ("evil", "coordinator", None, ["n0.node.test"], "PKI_RESERVED_NAME"),
        ("coordinator.test", "person", None, [], "PKI_RESERVED_NAME"),  # gRPC matches a SAN-less cert by CN
        ("n0.node.test", "node", "n9", [], "PKI_RESERVED_NAME"),
        ("evil", "person", None, ["localhost"], "PKI_BAD_HOST"),
        ("evil", "node", None, [], "PKI_BAD_NODE_ID"),  # a node's name comes from its id
        ("evil", "node", "N9", [], "PKI_BAD_REGION"),
    ],
)
def test_the_ca_refuses_to_issue_a_name_to_anyone_but_its_server(
    fed: harness.Federation, tmp_path: Path, name: str, kind: str, region: str | None, hosts: list[str], code: str
) -> None:
    role = "caseworker" if kind == "person" else None
    with pytest.raises(ConfigError) as info:
        pki.issue_certificate(fed.pki_dir, tmp_path, name, kind, hosts=hosts, role=role, region=region)  # type: ignore[arg-type]
    assert info.value.code == code, str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_hpf_pki_issue_refuses_a_reserved_host_and_writes_nothing(fed: harness.Federation, tmp_path: Path) -> None:
    cli = typer.Typer()
    register(cli)
    args = ["pki", "issue", "--ca-dir", str(fed.pki_dir), "--out", str(tmp_path), "--name", "evil", "--kind", "node"]
    result = CliRunner().invoke(cli, [*args, "--region", "n9", "--host", "coordinator.test"])
    assert result.exit_code == 2 and "PKI_RESERVED_NAME" in result.stderr, result.output
    assert list(tmp_path.iterdir()) == []


def test_a_server_certificate_carries_its_own_name_and_the_operators_hosts(
    fed: harness.Federation, tmp_path: Path
) -> None:
    files = pki.issue_certificate(
        fed.pki_dir, tmp_path, "gw", "coordinator", hosts=["COORDINATOR.test", "gw.example", "10.0.0.5"]
    )
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["coordinator.test", "gw.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]


# ------------------------------------------------------------------------------------ certificates made by hand


def _hand_made(fed: harness.Federation, tmp_path: Path, *, signed_by_ca: bool) -> tls.TlsConfig:
    """Node n0's identity with the coordinator's name, made without the CA's issue path: signed with the CA's key
    (what only a CA key holder can do) or by a CA of the attacker's own that claims the same federation."""
    if signed_by_ca:
        ca_cert, ca_key = key_files.load_ca(fed.pki_dir)
    else:
        own = pki.create_ca(tmp_path / "own", federation="test")
        ca_cert, ca_key = key_files.load_ca(own)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    payload = '{"kind": "node", "region": "n0", "role": null, "v": 1}'
    subject = [
        (NameOID.ORGANIZATION_NAME, certificates.ORGANIZATION),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "node"),
        (NameOID.LOCALITY_NAME, "n0"),
        (NameOID.COMMON_NAME, "n0"),
    ]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in subject]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(certificates.IDENTITY_OID, certificates.der_utf8(payload)), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("coordinator.test")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out = tmp_path / "hand"
    out.mkdir()
    pem = serialization.Encoding.PEM
    (out / "n0.pem").write_bytes(cert.public_bytes(pem))
    (out / "n0.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tls.TlsConfig(ca=fed.pki_dir / "ca.pem", cert=out / "n0.pem", key=out / "n0.key")


def test_a_hand_made_name_from_another_ca_is_refused(
    fed: harness.Federation, keys: he.ClientKeys, tmp_path: Path
) -> None:
    """An attacker's own CA may claim the federation's name and write any name; the client trusts only the
    federation's CA, so the handshake fails all the same."""
    forged = _hand_made(fed, tmp_path, signed_by_ca=False)
    credentials = grpc.ssl_server_credentials(
        [(forged.key.read_bytes(), forged.cert.read_bytes())],
        root_certificates=(fed.pki_dir / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    server = servers.new_server(max_workers=2)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        with client_at(fed, f"127.0.0.1:{port}", keys) as client:
            assert refusal(lambda: client.query(SQL)).code == "SERVER_UNREACHABLE"
    finally:
        server.stop(None)


def test_a_misnamed_certificate_signed_with_the_ca_key_cannot_serve(fed: harness.Federation, tmp_path: Path) -> None:
    """A node identity with the coordinator's name can only come from the CA's key, never from its issue path
    (tested above). Whoever holds that key can also mint a plain coordinator certificate, so no check by the
    asker could tell the two apart: the CA key is the federation's root of trust and stays offline. What the
    federation's own code does with such a certificate is refuse to serve with it, and the nodes, which answer
    only coordinator certificates, would refuse its holder as a caller (a node identity) all the same."""
    forged = _hand_made(fed, tmp_path, signed_by_ca=True)
    with pytest.raises(FederationError) as info:
        servers.add_port(servers.new_server(max_workers=1), "127.0.0.1:0", forged)
    assert info.value.code == "TLS_SERVER_MISNAMED"


def test_a_catalog_of_another_federation_than_the_ca_stops_every_server(
    fed: harness.Federation, tmp_path: Path
) -> None:
    """A party would dial servers under the CA's federation and accept questions signed for the catalog's: the
    two must be one federation, or neither the coordinator nor a node starts."""
    from hpf.coordinator.server import start_coordinator
    from hpf.node.server import start_node

    other = tmp_path / "elsewhere.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load(fed.catalog_path.read_text()), "federation": "elsewhere"}))
    assert fed.coordinator_config is not None
    with pytest.raises(ConfigError) as info:
        start_coordinator(fed.coordinator_config.model_copy(update={"catalog": other}), "127.0.0.1:0")
    assert info.value.code == "PKI_FEDERATION_MISMATCH" and "'elsewhere'" in info.value.message
    node_id = fed.node_ids[0]
    with pytest.raises(ConfigError) as info:
        start_node(fed.node_configs[node_id].model_copy(update={"catalog": other}), "127.0.0.1:0")
    assert info.value.code == "PKI_FEDERATION_MISMATCH"
