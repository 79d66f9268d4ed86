"""The metrics endpoint's own server: who may read a party's metrics over TLS, and what a client can hold."""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import CollectorRegistry

from hpf.federation import metrics_endpoint
from hpf.federation.errors import ConfigError
from hpf.federation.metrics import MetricsServer, MetricsSettings, RequestMetrics, serve_metrics
from hpf.federation.trust import certificates, pki
from hpf.federation.trust.revocation import RevocationList, revoke
from hpf.federation.trust.tls import TlsConfig

PEOPLE = [
    ("ops", "operator", None),
    ("ops-old", "operator", None),
    ("cw", "caseworker", None),
    ("aud", "auditor", None),
]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> pki.FederationFiles:
    root = tmp_path_factory.mktemp("pki")
    files = pki.init_federation(root, ["north"], federation="t", clients=PEOPLE)
    revoke(root, files["people"]["ops-old"].cert.read_bytes())
    return files


def _ca(fed: pki.FederationFiles) -> Path:
    return fed["ca"].cert


def _der(path: Path) -> bytes:
    return certificates.load_certificate(path.read_bytes()).public_bytes(Encoding.DER)


def _revocations(fed: pki.FederationFiles) -> RevocationList:
    ca = _ca(fed)
    return RevocationList(ca.parent / "crl.pem", certificates.load_certificate(ca.read_bytes()))


def test_only_an_operators_certificate_in_force_may_read(fed: pki.FederationFiles) -> None:
    gate = metrics_endpoint.ScraperGate(_revocations(fed))
    people = fed["people"]
    assert gate.refusal(_der(people["ops"].cert)) is None
    assert gate.refusal(_der(people["ops-old"].cert)) == "AUTH_CERT_REVOKED"
    for other in (people["cw"].cert, people["aud"].cert, fed["nodes"]["north"].cert, fed["coordinator"].cert):
        refusal = gate.refusal(_der(other))
        assert refusal is not None and "not an operator's" in refusal
    assert gate.refusal(None) == "no client certificate"
    assert gate.refusal(b"\x30\x03\x02\x01\x01") == "a malformed certificate"
    assert gate.refusal(_der(_ca(fed))) == "IDENTITY_MISSING"  # the CA's own certificate is no party's


def test_a_revocation_list_that_cannot_be_read_refuses_every_scraper(fed: pki.FederationFiles, tmp_path: Path) -> None:
    crl = tmp_path / "crl.pem"
    crl.write_bytes((_ca(fed).parent / "crl.pem").read_bytes())
    gate = metrics_endpoint.ScraperGate(RevocationList(crl, certificates.load_certificate(_ca(fed).read_bytes())))
    ops = _der(fed["people"]["ops"].cert)
    assert gate.refusal(ops) is None
    crl.write_bytes(b"not a list, and longer than the one before")
    assert gate.refusal(ops) == "AUTH_CRL_INVALID"  # fail closed, as the gRPC service does


@pytest.fixture
def plain() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    RequestMetrics(registry).observe("Query", "OK", 0.01)
    server = serve_metrics(MetricsSettings(listen="127.0.0.1:0"), None, registry, "test")
    try:
        yield server
    finally:
        server.stop()


def _get(port: int, path: str = "/metrics", context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    scheme = "https" if context else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}{path}", timeout=5, context=context) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_only_get_metrics_is_answered(plain: MetricsServer) -> None:
    status, body = _get(plain.port)
    assert status == 200 and b'hpf_requests_total{code="OK",operation="Query"} 1.0' in body
    assert _get(plain.port, "/metrics?name[]=hpf_requests_total")[0] == 200
    assert _get(plain.port, "/")[0] == 404
    assert _get(plain.port, "/metrics/../secrets")[0] == 404
    request = urllib.request.Request(f"http://127.0.0.1:{plain.port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 501


def test_connections_beyond_the_cap_are_closed_and_the_endpoint_serves_again(plain: MetricsServer) -> None:
    held = [socket.create_connection(("127.0.0.1", plain.port)) for _ in range(metrics_endpoint.MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # each is handed to its own thread
        extra = socket.create_connection(("127.0.0.1", plain.port))
        extra.settimeout(5)
        with extra:
            assert extra.recv(1) == b""  # closed at once, not queued behind the silent ones
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while True:  # the held threads see their clients gone and give their places back
        try:
            assert _get(plain.port)[0] == 200
            break
        except OSError:
            assert time.monotonic() < deadline, "the endpoint never served again"
            time.sleep(0.05)


def test_a_silent_connection_is_cut_at_its_deadline(monkeypatch: pytest.MonkeyPatch, plain: MetricsServer) -> None:
    monkeypatch.setattr(metrics_endpoint, "CONNECTION_DEADLINE_S", 0.5)
    monkeypatch.setattr(metrics_endpoint._MetricsHandler, "timeout", 30.0)  # so the deadline is what cuts it
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", plain.port)) as silent:
        silent.settimeout(10)
        silent.sendall(b"GET /metr")  # and never the rest
        assert silent.recv(1) == b""
    assert time.monotonic() - started < 5


def test_over_tls_a_silent_handshake_times_out_and_an_operator_reads(
    monkeypatch: pytest.MonkeyPatch, fed: pki.FederationFiles
) -> None:
    monkeypatch.setattr(metrics_endpoint, "HANDSHAKE_TIMEOUT_S", 0.5)
    node = fed["nodes"]["north"]
    tls = TlsConfig(ca=_ca(fed), cert=node.cert, key=node.key)
    registry = CollectorRegistry()
    RequestMetrics(registry).observe("ComputePartial", "OK", 0.3)
    server = serve_metrics(
        MetricsSettings(listen="127.0.0.1:0", tls=True), tls, registry, "test", revocations=_revocations(fed)
    )
    try:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port)) as silent:
            silent.settimeout(10)
            assert silent.recv(1) == b""  # no hello: the handshake gives up, the connection is closed
        assert time.monotonic() - started < 5
        context = ssl.create_default_context(cafile=str(_ca(fed)))
        context.check_hostname = False
        ops = fed["people"]["ops"]
        context.load_cert_chain(ops.cert, ops.key)
        status, body = _get(server.port, context=context)
        assert status == 200 and b"hpf_request_seconds_bucket" in body
        auditor = ssl.create_default_context(cafile=str(_ca(fed)))
        auditor.check_hostname = False
        auditor.load_cert_chain(fed["people"]["aud"].cert, fed["people"]["aud"].key)
        assert _get(server.port, context=auditor) == (403, b"forbidden\n")
    finally:
        server.stop()


def test_metrics_over_tls_need_the_partys_revocation_list(fed: pki.FederationFiles) -> None:
    node = fed["nodes"]["north"]
    tls = TlsConfig(ca=_ca(fed), cert=node.cert, key=node.key)
    with pytest.raises(ConfigError) as info:
        serve_metrics(MetricsSettings(listen="127.0.0.1:0", tls=True), tls, CollectorRegistry(), "test")
    assert info.value.code == "CONFIG_INVALID"
