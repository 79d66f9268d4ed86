"""The operator features held to the project's rules by an attacker: a node's metrics endpoint over mutual TLS
(one silent connection must not stop it; a revoked certificate must not read it), `hpf node doctor` (it writes
nothing of the node's state, and a hostile path never hangs it), and the compose file (no container but a region's
own receives that region's private keys; only the setup job writes what every party reads)."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from node_files import NodeFiles

from hpf.federation.trust.revocation import revoke
from hpf.node.config import load_node_config
from hpf.node.doctor import Report, examine
from hpf.node.server import running_node

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
SCRAPE_TIMEOUT_S = 5.0


Node = NodeFiles


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hpf.federation.trust.pki import init_federation

    root = tmp_path_factory.mktemp("pki")
    init_federation(
        root,
        ["north", "south"],
        federation="t",
        clients=(("caseworker", "caseworker", None), ("ops", "operator", None), ("ops-old", "operator", None)),
    )
    return root


@pytest.fixture
def node(tmp_path: Path, pki: Path) -> Node:
    return Node(tmp_path, pki)


def _scraper(node: Node, person: str) -> ssl.SSLContext:
    """A scraper's TLS: the federation's CA, and ``person``'s certificate (one `hpf pki init` issued)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(node.pki / "ca.pem"))
    context.check_hostname = False  # the node's certificate names its own host; the CA is still verified
    people = node.pki / "people"
    context.load_cert_chain(people / f"{person}.pem", people / f"{person}.key")
    return context


def _scrape(port: int, context: ssl.SSLContext) -> str:
    """The metrics text, or what went wrong (an exception's class: the scrape was refused or got no answer)."""
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S, context=context
        ) as reply:
            return str(reply.read().decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - the class is what the assertions tell apart
        return f"refused: {type(exc).__name__}"


def _serving_metrics_over_tls(node: Node) -> None:
    node.doc["metrics"] = {"listen": "127.0.0.1:0", "tls": True}
    node.write()


# --- metrics ----------------------------------------------------------------------------------------------------


def test_one_silent_connection_does_not_stop_the_mtls_metrics_endpoint(node: Node) -> None:
    """A client that opens a TCP connection to the HTTPS metrics port and never sends a TLS hello (slowloris; no
    certificate needed, anyone who reaches the off-loopback port can) must not stop the scraper of the federation
    from reading the metrics: the TLS handshake must not run, without a deadline, on the one thread that accepts."""
    _serving_metrics_over_tls(node)
    with running_node(load_node_config(node.path), f"127.0.0.1:{node.port}") as running:
        port = running.metrics_port
        assert port is not None
        assert "hpf_requests_total" in _scrape(port, _scraper(node, "ops"))  # it serves, before
        silent = socket.create_connection(("127.0.0.1", port))
        try:
            started = time.monotonic()
            during = _scrape(port, _scraper(node, "ops"))
            waited = time.monotonic() - started
        finally:
            silent.close()
    assert "hpf_requests_total" in during, f"{during} after {waited:.1f} s, while one connection said nothing"


def test_a_revoked_certificate_cannot_read_the_metrics(node: Node) -> None:
    """The endpoint is documented as the party's own mutual TLS, "as its gRPC service does": the gRPC service
    refuses a revoked certificate (AUTH_CERT_REVOKED, crl.pem re-read on change); the metrics endpoint must too."""
    _serving_metrics_over_tls(node)
    revoke(node.pki, (node.pki / "people" / "ops-old.pem").read_bytes())
    with running_node(load_node_config(node.path), f"127.0.0.1:{node.port}") as running:
        port = running.metrics_port
        assert port is not None
        allowed = _scrape(port, _scraper(node, "ops"))
        revoked = _scrape(port, _scraper(node, "ops-old"))
    assert "hpf_requests_total" in allowed, allowed  # a certificate in force reads them
    assert revoked.startswith("refused: "), "a revoked certificate read the node's metrics"


def test_an_askers_certificate_cannot_read_a_regions_metrics(node: Node) -> None:
    """A region's metrics hold its own timings (hpf_request_seconds of ComputePartial), its budget refusals and
    audit appends: what protocol.md keeps from askers ("per-region timings stay in the region's log and metrics",
    an asker learns nothing "by timing"). The endpoint takes any certificate the federation's CA issued, of any
    kind and role; certificate kinds are an allow-list (protocol.md): an asker's (caseworker's) is refused, and the
    operator's is taken."""
    _serving_metrics_over_tls(node)
    with running_node(load_node_config(node.path), f"127.0.0.1:{node.port}") as running:
        port = running.metrics_port
        assert port is not None
        operator = _scrape(port, _scraper(node, "ops"))
        asker = _scrape(port, _scraper(node, "caseworker"))
    assert "hpf_request_seconds" in operator, operator
    assert asker.startswith("refused: "), "an asker's certificate read the region's timings and refusals"


# --- hpf node doctor ------------------------------------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_doctor_writes_nothing_in_the_state_directory(node: Node) -> None:
    """node/doctor.py: "Nothing here writes the node's state". A state directory whose audit key's public half
    is missing must be found as it is, not completed by the doctor."""
    state = node.root / "state"
    (state / "audit" / "audit.pub").unlink()
    before = _tree(state)
    examine(node.path, timeout=1.0)
    assert _tree(state) == before, f"the doctor wrote {sorted(set(_tree(state)) - set(before))}"


def _examine_within(node: Node, fifo: Path, seconds: float) -> tuple[bool, Report | None]:
    """Run the doctor in a thread; whether it finished within ``seconds`` (a thread stuck on ``fifo`` is let go by
    opening the FIFO's other end, so the test leaves nothing behind)."""
    found: list[Report] = []
    worker = threading.Thread(target=lambda: found.append(examine(node.path, timeout=1.0)), daemon=True)
    worker.start()
    worker.join(seconds)
    finished = not worker.is_alive()
    if not finished:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # a reader waits on it: this lets it read an end
        os.close(fd)
        worker.join(10)
    return finished, found[0] if found else None


@pytest.mark.parametrize("which", ["cert", "ca"])
def test_a_fifo_in_place_of_a_certificate_does_not_hang_the_doctor(node: Node, which: str) -> None:
    """A hostile or broken setup (a FIFO where a certificate should be) is a finding (TLS_FILE_MISSING: not a
    file), as the server's own reader says, never a doctor that waits forever for a writer."""
    fifo = node.root / f"{which}.fifo"
    os.mkfifo(fifo)
    node.doc["tls"][which] = str(fifo)
    node.write()
    finished, report = _examine_within(node, fifo, 8.0)
    assert finished, f"hpf node doctor still waits on the FIFO given as tls.{which} after 8 s"
    assert report is not None
    codes = {f.code for f in report.checks["certificates"]}
    assert "TLS_FILE_MISSING" in codes, codes


# --- docker/compose.yaml ----------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's named volumes, each with its mode (``rw`` unless the mount says ``:ro``)."""
    mounts = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        mounts[parts[0]] = parts[2] if len(parts) > 2 else "rw"
    return mounts


REGIONS = ("shanghai", "hangzhou", "nanjing")


def test_no_container_but_a_regions_own_mounts_its_state() -> None:
    """A region's state volume holds its TLS key, audit signing key and agreement key (and, once it serves, its
    subject-tag key): no other party's container may receive it, read-only or not (the setup job, which writes
    every volume once, aside). An auditor verifies a log with the region's published key, not its private one."""
    services = _compose()["services"]
    leaks = {
        name: sorted(v for v in _mounts(service) if v.endswith("-state") and v != f"{name}-state")
        for name, service in services.items()
        if name != "setup"
    }
    assert {name: v for name, v in leaks.items() if v} == {}, "containers given other regions' private keys"


def test_only_the_setup_job_may_write_what_every_party_reads() -> None:
    """The federation volume (catalog, CA certificate, revocation lists, policy, every party's config) is read by
    every party: a container other than the setup job that mounts it writable (running as the user that owns it)
    can change every party's catalog, policy or revocation list."""
    services = _compose()["services"]
    writers = sorted(
        name
        for name, service in services.items()
        if name != "setup" and _mounts(service).get("federation", "ro") != "ro"
    )
    assert writers == [], f"{writers} mount the federation volume writable"
