"""`hpf node doctor` finds every problem of a node's setup, each on one line with its stable code and its fix, and
exits 0 only for a node with none; `hpf node health` says whether the running node is SERVING."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import threading
from pathlib import Path

import harness
import pytest
import yaml
from node_files import TABLES, NodeFiles, free_port
from typer.testing import CliRunner, Result

from hpf.cli.app import _register, app
from hpf.federation.trust.pki import issue_certificate
from hpf.federation.trust.revocation import revoke
from hpf.node.config import load_node_config
from hpf.node.doctor import Report, examine
from hpf.node.server import running_node

_register()
runner = CliRunner()

PASSWORD = "Sup3r-secret-pw"
PKI: dict[str, Path] = {}  # the federation's certificates, made once: copied into each test's folder


class Node(NodeFiles):
    """North's files, and its doctor."""

    def doctor(self, *args: str) -> Result:
        return runner.invoke(app, ["node", "doctor", "--config", str(self.path), *args])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hpf.federation.trust.pki import init_federation

    root = tmp_path_factory.mktemp("pki")
    init_federation(root, ["north", "south"], federation="t")
    return root


@pytest.fixture
def node(tmp_path: Path, pki: Path) -> Node:
    return Node(tmp_path, pki)


def _problem(result: Result, code: str, fix: str) -> str:
    """The one problem line of ``code``, which must name ``fix``; the doctor exited 1."""
    lines = [line for line in result.output.splitlines() if f"[{code}]" in line]
    assert len(lines) >= 1, result.output
    assert lines[0].startswith("problem"), result.output
    assert "; fix: " in lines[0] and fix in lines[0].split("; fix: ", 1)[1], lines[0]
    assert result.exit_code == 1, result.output
    assert "fix the problems above" in result.output.splitlines()[-1]
    return lines[0]


def test_a_clean_node_has_no_problem(node: Node) -> None:
    result = node.doctor()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for check in ("config", "certificates", "catalog", "policy", "sources", "reachability"):
        assert f"ok       {check}" in lines
    assert not [line for line in lines if line.startswith(("problem", "warning", "skipped"))], result.output
    (note,) = [line for line in lines if "[NODE_NOT_RUNNING]" in line]
    assert note.startswith("note") and "hpf node serve" in note
    assert lines[-1] == "node north: no problem found (0 problems, 0 warnings)"


def test_a_node_not_running_is_a_problem_only_when_it_should_run(node: Node) -> None:
    _problem(node.doctor("--running"), "NODE_NOT_RUNNING", "hpf node serve")
    health = runner.invoke(app, ["node", "health", "--config", str(node.path), "--timeout", "1"])
    assert health.exit_code == 1 and health.output.startswith("NOT_RUNNING 127.0.0.1:")


def test_a_running_node_is_serving(node: Node) -> None:
    config = load_node_config(node.path)
    coordinator = node.root / "coordinator.yaml"
    coordinator.write_text(
        yaml.safe_dump(
            {
                "catalog": "federation.yaml",
                "listen": f"127.0.0.1:{free_port()}",
                "tls": {"ca": "pki/ca.pem", "cert": "pki/coordinator.pem", "key": "pki/coordinator.key"},
            }
        )
    )
    with running_node(config, f"127.0.0.1:{node.port}"):
        result = node.doctor("--running")
        health = runner.invoke(app, ["node", "health", "--config", str(node.path)])
        # the coordinator's own health check dialled at the node's port: the node's certificate is not the
        # coordinator's server name, so no answer is taken from it
        posing = runner.invoke(
            app, ["coordinator", "health", "--config", str(coordinator), "--address", f"127.0.0.1:{node.port}"]
        )
    assert result.exit_code == 0, result.output
    assert f"node north is running and SERVING on 127.0.0.1:{node.port}" in result.output
    assert health.exit_code == 0 and health.output == f"SERVING 127.0.0.1:{node.port}\n"
    assert posing.exit_code == 1 and posing.output.startswith(f"UNREACHABLE 127.0.0.1:{node.port}: "), posing.output
    not_running = runner.invoke(app, ["coordinator", "health", "--config", str(coordinator), "--timeout", "1"])
    assert not_running.exit_code == 1 and not_running.output.startswith("NOT_RUNNING 127.0.0.1:")


def test_another_program_on_the_port(node: Node) -> None:
    with socket.socket() as listener:  # listens, never speaks TLS
        listener.bind(("127.0.0.1", node.port))
        listener.listen()
        result = node.doctor("--timeout", "1")
    _problem(result, "NODE_HEALTH_UNANSWERED", "listens on its 'listen:' port")


def test_an_unreadable_config_is_one_problem_and_the_rest_skipped(node: Node) -> None:
    node.path.write_text("node_id: north\ncatalog: federation.yaml\n")
    result = node.doctor()
    assert result.exit_code == 2, result.output  # as every command exits for an invalid config
    assert result.output.startswith("problem  [CONFIG_INVALID]")
    assert (
        sum(line.startswith("skipped ") for line in result.output.splitlines()) == 5
        and "Traceback" not in result.output
    )


def test_an_expired_certificate(node: Node) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    issue_certificate(node.pki, node.pki / "nodes", "north", "node", region="north", valid_days=10, not_before=past)
    _problem(node.doctor(), "TLS_CERT_EXPIRED", "hpf pki issue")


def test_a_certificate_about_to_expire_is_a_warning(node: Node) -> None:
    issue_certificate(node.pki, node.pki / "nodes", "north", "node", region="north", valid_days=10)
    result = node.doctor()
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "[TLS_CERT_EXPIRING]" in x]
    assert line.startswith("warning") and "fix: issue a new one" in line


def test_another_nodes_certificate(node: Node) -> None:
    node.doc["tls"].update(cert="pki/nodes/south.pem", key="pki/nodes/south.key")
    node.write()
    _problem(node.doctor(), "TLS_CERT_OTHER_NODE", "pki/nodes/north.pem")


def test_a_key_that_is_not_the_certificates(node: Node) -> None:
    node.doc["tls"]["key"] = "pki/nodes/south.key"
    node.write()
    result = node.doctor()
    _problem(result, "TLS_KEY_MISMATCH", "issued together")
    assert "[TLS_CERT_OTHER_NODE]" not in result.output  # the certificate is north's


def test_a_certificate_file_larger_than_any_is_not_read(node: Node) -> None:
    """A path given as the CA that holds far more than a certificate (here a sparse 64 MiB file) is refused unread,
    and the port is not checked with it (the file is not read a second time)."""
    big = node.root / "big.pem"
    with big.open("wb") as fh:
        fh.truncate(64 << 20)
    node.doc["tls"]["ca"] = str(big)
    node.write()
    result = node.doctor()
    line = _problem(result, "TLS_FILE_UNREADABLE", "names the .pem or .key file")
    assert "larger than 1 MiB" in line, line
    skipped = [x for x in result.output.splitlines() if x.startswith("skipped") and "reachability" in x]
    assert skipped and skipped[0].endswith("(TLS_FILE_UNREADABLE)"), result.output


def _doctor_within(node: Node, fifo: Path, seconds: float) -> Report | None:
    """The doctor's report if it finished within ``seconds``, else None (the FIFO's other end is then opened, so
    the doctor's thread ends and the test leaves nothing behind)."""
    found: list[Report] = []
    worker = threading.Thread(target=lambda: found.append(examine(node.path, timeout=1.0)), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        return None
    return found[0]


def test_a_fifo_for_the_audit_public_key_is_a_problem_not_a_wait(node: Node) -> None:
    audit = node.root / "state" / "audit"
    (audit / "audit.pub").unlink()
    os.mkfifo(audit / "audit.pub")
    report = _doctor_within(node, audit / "audit.pub", 8.0)
    assert report is not None, "hpf node doctor waits on a FIFO given as the audit key's public half"
    (finding,) = [f for f in report.checks["catalog"] if f.code == "AUDIT_KEY_UNREADABLE"]
    assert finding.level == "problem" and "audit.pub" in finding.message and "not a regular file" in finding.message


def test_the_audit_keys_public_half_is_derived_not_written(node: Node) -> None:
    """The doctor reads the node's keys and makes or completes none: an audit key whose public half is gone is
    still the key the catalog publishes (no problem), and the state directory is left as it was."""
    audit = node.root / "state" / "audit"
    (audit / "audit.pub").unlink()
    before = sorted(p.name for p in audit.iterdir())
    result = node.doctor()
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in audit.iterdir()) == before


def test_an_audit_key_that_is_no_key_is_a_problem(node: Node) -> None:
    (node.root / "state" / "audit" / "audit.key").write_text("not a key\n")
    _problem(node.doctor(), "AUDIT_KEY_INVALID", "error reference")


def test_a_revoked_certificate(node: Node) -> None:
    revoke(node.pki, (node.pki / "nodes" / "north.pem").read_bytes())
    _problem(node.doctor(), "AUTH_CERT_REVOKED", "new certificate")


def test_catalog_keys_that_are_not_the_nodes(node: Node) -> None:
    other = _other_keys()
    node.write_catalog(keys=other)
    result = node.doctor()
    _problem(result, "NODE_KEY_MISMATCH", "restore the key file")


def _other_keys() -> dict[str, str]:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from hpf.federation.audit.keys import public_key_raw

    return {
        "audit_key": base64.b64encode(public_key_raw(Ed25519PrivateKey.generate().public_key())).decode(),
        "agreement_key": base64.b64encode(X25519PrivateKey.generate().public_key().public_bytes_raw()).decode(),
    }


def test_keys_missing_from_the_state_directory(node: Node) -> None:
    shutil.rmtree(node.root / "state")
    result = node.doctor()
    line = _problem(result, "NODE_KEYS_MISSING", "hpf node keys")
    assert "hpf catalog keys" in line
    assert not (node.root / "state").exists()  # the doctor made none


def test_keys_the_catalog_does_not_publish(node: Node) -> None:
    node.write_catalog(keys={})
    _problem(node.doctor(), "NODE_KEYS_UNPUBLISHED", "hpf catalog keys")


def test_a_node_missing_from_the_catalog(node: Node) -> None:
    node.write_catalog(nodes=[{"id": "south", "address": "127.0.0.1:1"}])
    result = node.doctor()
    _problem(result, "CATALOG_NODE_UNKNOWN", "add it to the catalog's nodes")
    assert "ok       sources" in result.output  # the other checks ran


def test_a_broken_policy(node: Node) -> None:
    policy = node.root / "policy.yaml"
    policy.write_text("version: 1\nextends: hpf:base\ntables: {}\n")
    node.doc["policy"] = "policy.yaml"
    node.write()
    line = _problem(node.doctor(), "POLICY_FILE_INVALID", "policies/base.yaml")
    assert "policy.yaml:3: tables: unknown key" in line


def test_a_policy_of_other_tables_is_a_line_per_problem(node: Node) -> None:
    del node.doc["policy"]  # the packaged default, written for other tables than this catalog's
    node.write()
    result = node.doctor()
    _problem(result, "POLICY_FILE_INVALID", "write one for yours")
    lines = [line for line in result.output.splitlines() if "[POLICY_FILE_INVALID]" in line]
    assert len(lines) > 1 and all(": the catalog " in line for line in lines)


def test_a_missing_data_file(node: Node) -> None:
    (node.root / "data" / "t.parquet").unlink()
    line = _problem(node.doctor(), "NODE_TABLE_UNREADABLE", "restore the file")
    assert "data/t.parquet" in line


def test_a_table_without_a_source_and_a_wrong_type(node: Node) -> None:
    tables = {**TABLES, "u": TABLES["t"]}
    node.catalog.write_text(
        yaml.safe_dump(
            {"federation": "t", "nodes": yaml.safe_load(node.catalog.read_text())["nodes"], "tables": tables}
        )
    )
    harness.write_table(node.root / "data" / "t.parquet", {"g": "VARCHAR", "v": "DECIMAL(15,2)"}, [("a", 1.5)])
    result = node.doctor()
    _problem(result, "DATA_TYPE_MISMATCH", "declare 'v'")
    _problem(result, "NODE_TABLE_MISSING", "'tables: {u: path/to/u.parquet}'")  # every problem, not the first


def test_an_unreachable_database_and_no_secret_shown(node: Node) -> None:
    dsn = node.root / "pg.dsn"
    dsn.write_text(f"postgresql://hpf:{PASSWORD}@127.0.0.1:{free_port()}/regiondb\n")
    dsn.chmod(0o600)
    node.doc["tables"] = {"t": {"postgres": {"dsn_file": "pg.dsn"}, "table": "t"}}
    node.write()
    result = node.doctor()
    _problem(result, "NODE_DATABASE_UNREACHABLE", "connection string")
    assert PASSWORD not in result.output and "regiondb" not in result.output and "hpf:" not in result.output


def test_database_tables_each_get_their_line(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg
    from pg import fresh_database

    node.catalog.write_text(
        yaml.safe_dump(
            {
                "federation": "t",
                "nodes": yaml.safe_load(node.catalog.read_text())["nodes"],
                "tables": {**TABLES, "u": TABLES["t"]},
            }
        )
    )
    with fresh_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (g text, v numeric(15,2))")
            conn.execute("INSERT INTO t VALUES ('a', 1.5)")
        monkeypatch.setenv("HPF_DOCTOR_DSN", dsn)
        source = {"postgres": {"dsn_env": "HPF_DOCTOR_DSN"}}
        node.doc["tables"] = {"t": {**source, "table": "t"}, "u": {**source, "table": "u"}}
        node.write()
        result = node.doctor()
    _problem(result, "DATA_TYPE_MISMATCH", "declare 'v'")
    assert "table 'u'" in _problem(result, "NODE_TABLE_UNREADABLE", "grant the node's database user SELECT")
    assert dsn not in result.output and "hpf_test_" not in result.output
