"""``hpf node doctor``: a node's setup checked before (or while) it runs, every problem with its fix.

Each check runs what the node runs at start, and collects every refusal instead of stopping at the first:

1. ``config``: node.yaml loads and validates (else nothing else can run: the rest is skipped);
2. ``certificates``: the TLS files as the server reads them (:func:`federation.trust.tls_material.
   material_problems`), the certificate this node's own, not revoked, and not about to expire;
3. ``catalog``: the catalog loads and lists this node, and publishes this node's own keys;
4. ``policy``: the node's policy loads and names only the catalog's tables and columns (as at start);
5. ``sources``: every catalog table has a source that reads and fits the catalog (:mod:`node.doctor_sources`);
6. ``reachability``: the node's port (a health check over mutual TLS, as ``hpf node health``), and the
   catalog's address for the node.

A finding is a problem, a warning or a note; a check that cannot run says why (``skipped``). Nothing here writes
the node's state: keys are read only when both are there, never made nor completed (a missing public half is
derived from its key), the revocation list is read without its state, and every file is read as the node reads
it: a FIFO or a device in its place is refused, never waited on, and no file is read past its kind's size.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509

from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.crypto import he
from hpf.federation.errors import AuthError, ConfigError, FederationError
from hpf.federation.health_check import NODE_SERVICE, Health, check_health, local_address
from hpf.federation.trust.certificates import Identity, identity_of
from hpf.federation.trust.channels import node_target
from hpf.federation.trust.revocation import RevocationList
from hpf.federation.trust.tls_material import check_material, same_federation
from hpf.node.config import NodeConfig, load_node_config
from hpf.node.keys import KEY_FILES, check_published, read_own_keys
from hpf.node.server import load_node_policy

Level = Literal["problem", "warning", "note", "skipped"]
EXPIRY_WARNING_DAYS = 30
CHECKS = ("config", "certificates", "catalog", "policy", "sources", "reachability")
TLS_FILE_PROBLEMS = ("TLS_FILE_MISSING", "TLS_FILE_UNREADABLE")  # a file not read: the port is not checked


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report: a stable code (None for a skipped check), what is wrong, and the fix."""

    level: Level
    code: str | None
    message: str
    fix: str | None = None

    @classmethod
    def of(cls, err: FederationError, level: Level = "problem") -> list[Finding]:
        """The findings of one refusal: one per line of its message (a policy lists each of its problems)."""
        lines = [line.strip() for line in err.message.split("\n") if line.strip()] or [err.code]
        fix = err.hint or f"see {err.code} in the error reference (docs/errors.md)"
        return [cls(level, err.code, line, fix) for line in lines]


@dataclass
class Report:
    """Every check's findings, in the order they ran; ``config_error`` when the config itself did not load."""

    node_id: str | None = None
    checks: dict[str, list[Finding]] = field(default_factory=dict)
    config_error: FederationError | None = None

    def count(self, level: Level) -> int:
        return sum(f.level == level for found in self.checks.values() for f in found)

    @property
    def healthy(self) -> bool:
        return self.count("problem") == 0


def examine(config_path: Path, *, running: bool = False, timeout: float = 3.0) -> Report:
    """Run every check on the node whose config is ``config_path``; ``running``: its not running is a problem."""
    report = Report()
    try:
        config = load_node_config(config_path)
    except FederationError as err:
        report.config_error = err
        report.checks["config"] = Finding.of(err)
        for name in CHECKS[1:]:
            report.checks[name] = [Finding("skipped", None, f"{name}: not checked, the node's config did not load")]
        return report
    report.node_id = config.node_id
    report.checks["config"] = []
    catalog: Catalog | None = None
    try:
        catalog = load_catalog(config.catalog)
    except FederationError as err:
        catalog_error = err
    report.checks["certificates"] = _guarded("certificates", lambda: certificate_findings(config, catalog))
    if catalog is None:
        report.checks["catalog"] = Finding.of(catalog_error)
        for name in ("policy", "sources"):
            report.checks[name] = [Finding("skipped", None, f"{name}: not checked, the catalog did not load")]
    else:
        from hpf.node.doctor_sources import source_findings

        known = catalog
        report.checks["catalog"] = _guarded("catalog", lambda: catalog_findings(config, known, config_path))
        report.checks["policy"] = _guarded("policy", lambda: policy_findings(config, known))
        report.checks["sources"] = _guarded("sources", lambda: source_findings(config, known))
    unreadable = next((f.code for f in report.checks["certificates"] if f.code in TLS_FILE_PROBLEMS), None)
    report.checks["reachability"] = _guarded(
        "reachability",
        lambda: reachability_findings(
            config, catalog, config_path, running=running, timeout=timeout, unreadable=unreadable
        ),
    )
    return report


def _guarded(name: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """``check``'s findings; a failure no check foresaw is one problem line naming its class alone (its words
    may quote a file), never a traceback."""
    try:
        return check()
    except Exception as err:  # noqa: BLE001 (every other check still runs)
        return [
            Finding(
                "problem",
                "DOCTOR_CHECK_FAILED",
                f"{name}: the check could not finish ({type(err).__name__})",
                "run the node (`hpf node serve`): its start-up says what it finds, with its code",
            )
        ]


def _collect(findings: list[Finding], check: Callable[[], object], level: Level = "problem") -> bool:
    """Run ``check``; its refusal becomes findings. Whether it passed."""
    try:
        check()
        return True
    except FederationError as err:
        findings.extend(Finding.of(err, level))
        return False


def certificate_findings(config: NodeConfig, catalog: Catalog | None) -> list[Finding]:
    """The TLS files as the server reads them, then what makes them this node's: its identity, the catalog's
    federation, the revocation list, and the time left."""
    tls = config.tls
    if tls is None:
        return [Finding("note", None, "certificates: not checked, the node runs without TLS (insecure)")]
    checked = check_material(tls, "server")  # each file read once, as the server reads it (a FIFO: refused)
    findings = [f for err in checked.problems for f in Finding.of(err)]
    if not checked.chain or checked.cas is None:
        return findings  # the file's own problem is listed above
    leaf, cas = checked.chain[0], checked.cas
    _collect(findings, lambda: _own_identity(config, tls.cert, identity_of(leaf)))
    if catalog is not None:
        _collect(findings, lambda: same_federation(tls.ca, cas, catalog.federation, f"node {config.node_id}"))
    crl = config.revocations
    if crl is not None and cas:
        _collect(findings, lambda: _not_revoked(crl, cas[0], leaf.serial_number))
    left = leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)
    if dt.timedelta(0) < left < dt.timedelta(days=EXPIRY_WARNING_DAYS):
        findings.append(
            Finding(
                "warning",
                "TLS_CERT_EXPIRING",
                f"{tls.cert}: certificate expires on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
                f"({left.days} days left)",
                "issue a new one before then with `hpf pki issue` (or `hpf pki init --dir DIR`, which re-issues "
                f"certificates with fewer than {EXPIRY_WARNING_DAYS} days left)",
            )
        )
    return findings


def _own_identity(config: NodeConfig, path: Path, identity: Identity) -> None:
    if identity.kind != "node" or identity.region != config.node_id:
        whose = f"node {identity.region}'s" if identity.kind == "node" else f"a {identity.kind}'s"
        raise AuthError(
            f"{path}: this is {whose} certificate, not node {config.node_id}'s",
            code="TLS_CERT_OTHER_NODE",
            hint=f"use the certificate issued for node {config.node_id} (pki/nodes/{config.node_id}.pem), or issue "
            f"one: `hpf pki issue --ca-dir DIR --kind node --region {config.node_id} {config.node_id}`",
        )


def _not_revoked(crl: Path, ca: x509.Certificate, serial: int) -> None:
    RevocationList(crl, ca).check(serial, "node's")  # no state: the doctor writes none of the node's


def catalog_findings(config: NodeConfig, catalog: Catalog, config_path: Path) -> list[Finding]:
    """This node listed in the catalog, and the keys the catalog publishes for it its own (as at start)."""
    findings: list[Finding] = []
    entry = next((n for n in catalog.nodes if n.id == config.node_id), None)
    if entry is None:
        return Finding.of(
            ConfigError(
                f"node {config.node_id} is not listed in the catalog {config.catalog}",
                code="CATALOG_NODE_UNKNOWN",
                hint=f"add it to the catalog's nodes (- id: {config.node_id}, address: HOST:PORT) and copy the "
                f"catalog to every party; listed: {', '.join(catalog.node_ids)}",
            )
        )
    _collect(findings, lambda: he.check_catalog_format(catalog.he_format, f"node {config.node_id}"))
    keys_hint = (
        f"make them and publish them: `hpf node keys --config {config_path} --output {config.node_id}.keys.yaml`, "
        f"then `hpf catalog keys {config.catalog} {config.node_id}.keys.yaml`"
    )
    missing = [str(config.state_dir / f) for f in KEY_FILES.values() if not (config.state_dir / f).is_file()]
    if missing:
        findings.append(
            Finding(
                "problem",
                "NODE_KEYS_MISSING",
                f"the node's keys are not in its state directory: {', '.join(missing)}",
                keys_hint,
            )
        )
        return findings
    try:
        own = read_own_keys(config)  # read, never made nor completed: the doctor writes nothing of the node's
    except FederationError as err:
        return findings + Finding.of(err)
    if not _collect(findings, lambda: check_published(config, entry, own)):
        return findings
    unpublished = [f for f in KEY_FILES if getattr(entry, f) is None]
    if unpublished:
        findings.append(
            Finding(
                "problem",
                "NODE_KEYS_UNPUBLISHED",
                f"the catalog publishes no {' and no '.join(unpublished)} for node {config.node_id}",
                f"publish them: `hpf catalog keys {config.catalog} --node-config {config_path}`, and copy the catalog "
                "to every party",
            )
        )
    return findings


def policy_findings(config: NodeConfig, catalog: Catalog) -> list[Finding]:
    """The node's policy, loaded and checked against the catalog as the node does at start."""
    findings: list[Finding] = []
    _collect(findings, lambda: load_node_policy(config, catalog))
    return findings


def reachability_findings(
    config: NodeConfig,
    catalog: Catalog | None,
    config_path: Path,
    *,
    running: bool,
    timeout: float,
    unreadable: str | None = None,
) -> list[Finding]:
    """The node's own port, health-checked as ``hpf node health`` does, and the catalog's address for it.
    ``unreadable``: the code of a certificate file already found unreadable, which is not read again."""
    findings: list[Finding] = []
    address = local_address(config.listen)
    why = f"reachability: port {address} not checked, the node's certificate files cannot be used"
    if unreadable is not None:
        findings.append(Finding("skipped", None, f"{why} ({unreadable})"))
    else:
        try:
            target = node_target(config.tls, config.node_id)
            health = check_health(address, config.tls, target, NODE_SERVICE, timeout)
            findings.extend(_health_findings(config, config_path, health, running))
        except FederationError as err:  # its own problem is listed under certificates
            findings.append(Finding("skipped", None, f"{why} ({err.code})"))
    entry = None if catalog is None else next((n for n in catalog.nodes if n.id == config.node_id), None)
    if entry is not None:
        host, _, port = entry.address.rpartition(":")
        try:
            socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            findings.append(
                Finding(
                    "problem",
                    "NODE_ADDRESS_UNRESOLVED",
                    f"the catalog's address for node {config.node_id} ({entry.address}) does not resolve here",
                    "give the node's host name or IP address as the coordinator reaches it in the catalog's "
                    "'address:', or fix the name service",
                )
            )
    return findings


def _health_findings(config: NodeConfig, config_path: Path, health: Health, running: bool) -> Iterable[Finding]:
    if health.state == "SERVING":
        yield Finding("note", None, f"node {config.node_id} is running and SERVING on {health.address}")
    elif health.state == "NOT_RUNNING":
        yield Finding(
            "problem" if running else "note",
            "NODE_NOT_RUNNING",
            f"node {config.node_id} is not running: nothing listens on {health.address}",
            f"start it: `hpf node serve --config {config_path}`",
        )
    elif health.state == "NOT_SERVING":
        yield Finding(
            "problem",
            "NODE_NOT_SERVING",
            f"node {config.node_id} runs on {health.address} but is NOT_SERVING: it cannot read its data now",
            "fix its data sources (see the sources check and the node's log); it serves again by itself once it can",
        )
    else:
        yield Finding(
            "problem",
            "NODE_HEALTH_UNANSWERED",
            f"{health.address}: {health.detail}",
            "check that this node (not another program or party) listens on its 'listen:' port, and see its log",
        )
