"""`hpf demo --once`: real node and coordinator processes with mTLS, example queries equal to the oracle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml


def _hpf(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_demo_once_runs_examples_equal_to_oracle(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    result = _hpf("demo", "--nodes", "3", "--rows", "5000", "--seed", "11", "--data", str(data), "--once")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("equals DuckDB over the pooled files") == 4
    assert "DIFFERS" not in result.stdout
    assert "[PLAN_NOT_ADDITIVE]" in result.stdout  # the refused examples say why, and which rule refused
    assert "[POLICY_PURPOSE_REQUIRED]" in result.stdout and "(rule: shanghai: roles.caseworker" in result.stdout
    assert "0 of 3 region(s) would answer" in result.stdout  # the explained refusal
    assert "3 logs, 18 entries, every root and checkpoint signature verified" in result.stdout
    for node in ("shanghai", "hangzhou", "nanjing"):
        assert (data / node / "deposits.parquet").exists()
        assert f"node {node} serving" in result.stderr
    profile = yaml.safe_load((data / "client.yaml").read_text())
    assert profile["tls"]["cert"].endswith("caseworker.pem")  # TLS by default, no insecure flag
    assert "insecure" not in profile
    # the node processes were stopped: their ports are free again
    assert "coordinator serving" in result.stderr


def test_demo_refuses_bad_arguments(tmp_path: Path) -> None:
    result = _hpf("demo", "--nodes", "42", "--data", str(tmp_path / "d"), "--once")
    assert result.returncode == 2
    assert "DEMO_ARGS" in result.stderr and "41" in result.stderr
    result = _hpf("demo", "--rows", "10", "--data", str(tmp_path / "d"), "--once")
    assert result.returncode == 2 and "--rows" in result.stderr


def test_query_cli_json_and_csv_against_demo_layout(tmp_path: Path) -> None:
    """`hpf query` over the files a demo leaves: start the parties, query as JSON and CSV, stop."""
    from cli.demo_federation import ensure_data, layout_for, running_parties, write_configs

    layout = layout_for(tmp_path / "q", 2)
    ensure_data(layout, 3000, 5, lambda _msg: None)
    write_configs(layout, 0)
    sql = "SELECT status, COUNT(*) AS n FROM loans GROUP BY status ORDER BY status"
    with running_parties(layout, lambda _msg: None):
        profile = str(layout.client_profile)
        as_json = _hpf("query", "--profile", profile, "--purpose", "loan-review", "--format", "json", sql)
        as_csv = _hpf("query", "--profile", profile, "--purpose", "loan-review", "--format", "csv", sql)
        refused = _hpf("query", "--profile", str(layout.client_profile), "SELECT COUNT(person_id) FROM loans")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["columns"] == ["status", "n"]
    assert doc["regions"] == {"answered": ["shanghai", "hangzhou"], "missing": []}
    counts = [r[1] for r in doc["rows"]]  # a group some region holds fewer than k rows of is withheld (NULL)
    assert any(isinstance(n, int) for n in counts)
    assert sum(n is None for n in counts) <= doc["withheld_groups"]
    assert all(isinstance(n, int) or n is None for n in counts)
    assert as_csv.returncode == 0
    lines = as_csv.stdout.strip().splitlines()
    assert lines[0] == "status,n" and len(lines) == len(doc["rows"]) + 1
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: [PLAN_IDENTIFIER_MISUSE]")


def test_node_serves_plaintext_only_with_explicit_insecure_and_warns(tmp_path: Path) -> None:
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from cli.demo_federation import free_ports

    catalog = {
        "federation": "t",
        "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
        "tables": {"t": {"columns": {"a": {"type": "BIGINT"}}}},
    }
    (tmp_path / "federation.yaml").write_text(yaml.safe_dump(catalog))
    (tmp_path / "t.csv").write_text("a\n1\n")
    (port,) = free_ports(1)
    config = {"node_id": "north", "listen": f"127.0.0.1:{port}", "catalog": "federation.yaml", "tables": {"t": "t.csv"}}
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(config))

    refused = _hpf("node", "serve", "--config", str(tmp_path / "node.yaml"), timeout=30)
    assert refused.returncode == 2 and "hpf pki init" in refused.stderr  # no TLS, no --insecure: refused
    # without TLS a node still verifies every signed question, so it needs the federation CA
    untrusting = _hpf("node", "serve", "--config", str(tmp_path / "node.yaml"), "--insecure", timeout=30)
    assert untrusting.returncode == 2 and "federation_ca" in untrusting.stderr
    from federation.pki import init_federation

    init_federation(tmp_path / "pki", ["north"])
    config["federation_ca"] = "pki/ca.pem"
    config["state_dir"] = "state"
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(config))
    unfitting = _hpf("node", "serve", "--config", str(tmp_path / "node.yaml"), "--insecure", timeout=30)
    assert unfitting.returncode == 2 and "no policy" in unfitting.stderr  # the default names tables t lacks
    policy = {"version": 1, "roles": {"analyst": {"aggregates": ["count"], "min_group_size": 5, "tables": {"t": {}}}}}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    config["policy"] = "policy.yaml"
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(config))

    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "node", "serve", "--config", str(tmp_path / "node.yaml"), "--insecure"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while True:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service="hpf.v1.Node"), timeout=1).status
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=15)
    assert "TLS is off" in stderr and "unencrypted" in stderr
