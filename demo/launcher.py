"""Lay out and run a local demo federation: data, certificates, configs, and one process per party."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hpf.demo.synth import generate_node
from hpf.federation.audit.log import AuditLog
from hpf.federation.consent import revocations as consent_revocations
from hpf.federation.consent.issuer import Issuer, make_issuer, public_raw
from hpf.federation.crypto.sealing import AgreementKey
from hpf.federation.errors import ConfigError, UnavailableError
from hpf.federation.hpf_schema import DEMO_CONSENT_ISSUER, TABLE_NAMES, demo_catalog
from hpf.federation.regions import first_regions
from hpf.federation.trust.channels import coordinator_target, node_target, secure_channel
from hpf.federation.trust.pki import FederationFiles, init_federation
from hpf.federation.trust.tls import TlsConfig
from hpf.policies import DEFAULT_POLICY

Progress = Callable[[str], None]


# a demo region on Spark: Spark in the node's own process, on two cores, with time for a cold engine's first plans
SPARK_NODE = {
    "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "1g"}},
    "limits": {"query_ms": 8_000},
}


@dataclass
class DemoLayout:
    data: Path
    node_ids: list[str]
    ports: dict[str, int] = field(default_factory=dict)  # node ids and "coordinator"
    backends: dict[str, str] = field(default_factory=dict)  # node id -> "duckdb" (the default), "postgres", "spark"

    def backend(self, node_id: str) -> str:
        return self.backends.get(node_id, "duckdb")

    @property
    def dsn_file(self) -> Path:
        """The connection string of the demo's PostgreSQL database (mode 0600), for its PostgreSQL regions."""
        return self.data / "secrets" / "postgres.dsn"

    def sources(self, node_id: str) -> dict[str, object]:
        """The node config's ``tables:``: the region's Parquet files, or its schema of the demo's database."""
        if self.backend(node_id) == "postgres":
            dsn = str(self.dsn_file)
            return {t: {"postgres": {"dsn_file": dsn}, "schema": node_id, "table": t} for t in TABLE_NAMES}
        if self.backend(node_id) == "spark":
            return {t: {"spark": {"path": str(self.data / node_id / f"{t}.parquet")}} for t in TABLE_NAMES}
        return {t: str(self.data / node_id / f"{t}.parquet") for t in TABLE_NAMES}

    @property
    def pki(self) -> Path:
        return self.data / "pki"

    @property
    def catalog(self) -> Path:
        return self.data / "federation.yaml"

    @property
    def client_profile(self) -> Path:
        return self.data / "client.yaml"

    def profile_of(self, person: str) -> Path:
        """The caseworker's profile is ``client.yaml``; every other demo person has ``client-<name>.yaml``."""
        return self.client_profile if person == "caseworker" else self.data / f"client-{person}.yaml"

    @property
    def policy(self) -> Path:
        return self.data / "policies" / "default.yaml"

    def state(self, node_id: str) -> Path:
        return self.data / "state" / node_id

    def files(self, table: str, node: str) -> list[str]:
        """The Parquet files of ``table`` at ``node`` (``"*"``: at every node), as the oracle reads them."""
        return [str(self.data / n / f"{table}.parquet") for n in self.node_ids if node in ("*", n)]

    @property
    def consent_issuer(self) -> Path:
        """The demo's consent service: its key folder (``hpf consent ... --dir`` reads it)."""
        return self.data / "consent" / "issuer"

    @property
    def consent_revocations(self) -> Path:
        """The consent service's signed revocation list, which every node re-reads when it changes."""
        return self.data / "consent" / "revocations.json"

    def node_config(self, node_id: str) -> Path:
        return self.data / "config" / f"node-{node_id}.yaml"

    @property
    def coordinator_config(self) -> Path:
        return self.data / "config" / "coordinator.yaml"

    def log(self, name: str) -> Path:
        return self.data / "logs" / f"{name}.log"

    def tls(self, cert: str) -> dict[str, str]:
        return {
            "ca": str(self.pki / "ca.pem"),
            "cert": str(self.pki / f"{cert}.pem"),
            "key": str(self.pki / f"{cert}.key"),
        }


def ensure_data(layout: DemoLayout, rows: int, seed: int, progress: Progress) -> None:
    """Generate each node's tables unless files made with the same rows and seed are there."""
    for node_id in layout.node_ids:
        node_dir = layout.data / node_id
        meta_path = node_dir / "_generated.json"
        wanted = {"rows": rows, "seed": seed}
        complete = all((node_dir / f"{t}.parquet").exists() for t in TABLE_NAMES)
        if complete and meta_path.exists() and json.loads(meta_path.read_text()) == wanted:
            progress(f"data for {node_id}: present")
            continue
        started = time.perf_counter()
        generate_node(layout.data, node_id, rows, seed)
        meta_path.write_text(json.dumps(wanted))
        progress(f"data for {node_id}: generated {rows:,} deposit rows in {time.perf_counter() - started:.1f}s")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (bound and released; the demo binds them right after)."""
    sockets, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def write_configs(
    layout: DemoLayout, base_port: int, node_threads: int | None = None, *, audit_fsync: bool = True
) -> None:
    """Certificates, the catalog, one config per node, the coordinator's and the client profile.

    Every node of a demo shares this machine's cores, so each gets ``cores // nodes`` DuckDB threads (at
    least one) unless ``node_threads`` says otherwise: oversubscribed scans only queue behind each other.
    """
    n = len(layout.node_ids)
    node_threads = node_threads or max(1, (os.cpu_count() or 1) // n)
    ports = list(range(base_port, base_port + n + 1)) if base_port else free_ports(n + 1)
    layout.ports = {"coordinator": ports[0], **dict(zip(layout.node_ids, ports[1:], strict=True))}
    layout.policy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFAULT_POLICY, layout.policy)  # what an operator does: copy the documented defaults
    audit_keys = {n: _audit_key(layout.state(n) / "audit", n) for n in layout.node_ids}
    # each node's agreement key, which person lookups seal identifiers to (made now in its state directory)
    agreement_keys = {n: AgreementKey.load_or_create(layout.state(n)).public_b64() for n in layout.node_ids}
    addresses = {node_id: f"127.0.0.1:{layout.ports[node_id]}" for node_id in layout.node_ids}
    issuer = consent_service(layout)
    catalog = demo_catalog(
        addresses,
        audit_keys=audit_keys,
        agreement_keys=agreement_keys,
        issuers=[{"id": issuer.id, "key": issuer.public_b64}],
    )
    _certificates(layout, catalog["federation"])
    _dump(layout.catalog, catalog)
    for node_id in layout.node_ids:
        _dump(
            layout.node_config(node_id),
            {
                "node_id": node_id,
                "listen": addresses[node_id],
                "catalog": str(layout.catalog),
                "tables": layout.sources(node_id),
                "tls": layout.tls(f"nodes/{node_id}"),
                "policy": str(layout.policy),
                "state_dir": str(layout.state(node_id)),
                "audit_fsync": audit_fsync,
                "revocations": str(layout.pki / "crl.pem"),
                "consent_revocations": {issuer.id: str(layout.consent_revocations)},
                **({"duckdb_threads": node_threads} if node_threads else {}),
                **(SPARK_NODE if layout.backend(node_id) == "spark" else {}),
            },
        )
    _dump(
        layout.coordinator_config,
        {
            "listen": f"127.0.0.1:{layout.ports['coordinator']}",
            "catalog": str(layout.catalog),
            "deadline_ms": 10_000,
            "revocations": str(layout.pki / "crl.pem"),
            "revocation_state": str(layout.state("coordinator") / "revocation-state.json"),
            "tls": layout.tls("coordinator"),
        },
    )
    for person, _, _ in demo_people(layout):
        _dump(
            layout.profile_of(person),
            {
                "coordinator": f"127.0.0.1:{layout.ports['coordinator']}",
                "catalog": "federation.yaml",
                "keys": f"keys/{person}.bfv",
                "receipts": f"receipts/{person}.jsonl",
                "tls": {
                    "ca": "pki/ca.pem",
                    "cert": f"pki/people/{person}.pem",
                    "key": f"pki/people/{person}.key",
                },
            },
        )


def consent_service(layout: DemoLayout) -> Issuer:
    """The demo's consent service (the issuer the default policy names for banks' lookups): its key, kept across
    runs like the nodes' keys, and its first revocation list (nothing revoked) when it has none yet. A list is never
    re-signed here: every node remembers the number of the newest one it accepted."""
    issuer, _ = make_issuer(layout.consent_issuer, DEMO_CONSENT_ISSUER)
    path = layout.consent_revocations
    if path.exists():
        try:
            consent_revocations.load_list(path, issuer.id, public_raw(issuer.key))
            return issuer
        except ConfigError:  # signed under a key the demo no longer has: the new key's lists start afresh
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    consent_revocations.revoke(path, issuer.key, issuer.id, [])
    return issuer


def _certificates(layout: DemoLayout, federation: str) -> FederationFiles:
    """The demo's CA (named for the catalog's federation) and every party's certificate.

    The demo owns ``pki/``: a CA left there by an older demo, naming no federation or another one, is replaced
    (with every certificate) rather than refused, as an operator would after reading the error.
    """
    try:
        return init_federation(layout.pki, layout.node_ids, federation=federation, clients=demo_people(layout))
    except ConfigError as err:
        if err.code not in ("PKI_CA_NO_FEDERATION", "PKI_FEDERATION_MISMATCH"):
            raise
    return init_federation(layout.pki, layout.node_ids, federation=federation, clients=demo_people(layout), force=True)


def _audit_key(directory: Path, node_id: str) -> str:
    """The node's audit public key for the catalog (the log and its key are made now if absent)."""
    with AuditLog.open(directory, node_id, check_all_signatures=False) as log:
        return log.public_key_b64()


def demo_people(layout: DemoLayout) -> tuple[tuple[str, str, str | None], ...]:
    """The demo's people: (name, role, home region)."""
    home = layout.node_ids[0]
    return (
        ("caseworker", "caseworker", home),
        ("analyst", "analyst", home),
        ("operator", "operator", home),  # the one role with exact answers, for internal statistics
        ("bank", "integrator", None),
        ("auditor", "auditor", None),
    )


def use_policy_extending_default(layout: DemoLayout, name: str, description: str, roles: object) -> Path:
    """Write ``name`` (a policy that extends the copied default with ``roles`` merged over it) beside the default
    and point every node's config at it (as a benchmark raises rate limits); returns its path."""
    path = layout.policy.parent / name
    doc = {"version": 1, "extends": layout.policy.name, "description": description, "roles": roles}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    for node_id in layout.node_ids:
        config_path = layout.node_config(node_id)
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        config["policy"] = str(path)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _dump(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")


@dataclass
class Party:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path


def _spawn(layout: DemoLayout, name: str, args: list[str], port: int) -> Party:
    log_path = layout.log(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpf.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return Party(name=name, process=proc, port=port, log=log_path)


def _wait_serving(party: Party, tls: TlsConfig, server_name: str | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with secure_channel(f"127.0.0.1:{party.port}", tls, server_name=server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if party.process.poll() is not None:
                tail = party.log.read_text(errors="replace").strip().splitlines()[-5:]
                raise UnavailableError(
                    f"{party.name} exited at start (code {party.process.returncode}): " + " | ".join(tail),
                    code="DEMO_START_FAILED",
                    hint=f"see {party.log}",
                )
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise UnavailableError(
        f"{party.name} did not start in {timeout_s:.0f}s", code="DEMO_START_FAILED", hint=f"see {party.log}"
    )


@contextlib.contextmanager
def running_parties(layout: DemoLayout, progress: Progress, timeout_s: float = 60.0) -> Iterator[list[Party]]:
    """Start every node, then the coordinator, as separate processes; always stop them on exit."""
    parties: list[Party] = []
    probe = TlsConfig.model_validate(layout.tls("coordinator"))
    try:
        for node_id in layout.node_ids:
            parties.append(
                _spawn(
                    layout,
                    node_id,
                    ["node", "serve", "--config", str(layout.node_config(node_id))],
                    layout.ports[node_id],
                )
            )
        for party in parties:
            _wait_serving(party, probe, node_target(probe, party.name), timeout_s)
            progress(f"node {party.name} serving on 127.0.0.1:{party.port} (mTLS)")
        coordinator = _spawn(
            layout,
            "coordinator",
            ["coordinator", "serve", "--config", str(layout.coordinator_config)],
            layout.ports["coordinator"],
        )
        parties.append(coordinator)
        caseworker = TlsConfig.model_validate(layout.tls("people/caseworker"))
        _wait_serving(coordinator, caseworker, coordinator_target(caseworker), timeout_s)
        progress(f"coordinator serving on 127.0.0.1:{coordinator.port} (mTLS)")
        yield parties
    finally:
        for party in reversed(parties):
            if party.process.poll() is None:
                party.process.send_signal(signal.SIGTERM)
        for party in parties:
            try:
                party.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                party.process.kill()


def layout_for(data: Path, nodes: int, backends: tuple[str, ...] = ("duckdb",)) -> DemoLayout:
    """The first ``nodes`` regions in ``data``, region i on ``backends[i % len(backends)]``."""
    try:
        ids = [r.node_id for r in first_regions(nodes)]
    except ValueError as err:
        raise ConfigError(str(err), code="DEMO_ARGS") from None
    on = {node_id: backends[i % len(backends)] for i, node_id in enumerate(ids)}
    return DemoLayout(data=data.resolve(), node_ids=ids, backends=on)
