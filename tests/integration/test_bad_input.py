"""Bad input of every kind gets a stable code and a clear line, never a traceback or INTERNAL (issue 14).

Each test here names one way bad input used to escape: text that is not text, a state directory the node
cannot write, bytes that are no protobuf, an identifier echoed whole, a budget the node would refuse.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import harness
import yaml

from cli.demo_federation import free_ports
from federation.pki import init_federation


def _hpf(*args: str | bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
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
    for args, field in (
        (["--purpose", b"loan\x80"], "purpose"),
        (["--consent", b"\xed\xb2\x80"], "consent reference"),
        ([], "SQL"),
    ):
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
