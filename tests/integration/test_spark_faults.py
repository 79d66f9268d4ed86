"""A Spark cluster that is down before a question makes the region unwell.

The node's process can join one Spark application only, and the tests' own process already runs a local one, so
the node here runs in a process of its own, pointed at a standalone master on a loopback port where none
listens: it starts within its ``start_wait_s``, serving as unwell (NODE_UNWELL for every question), not after
the minute Spark takes to give up on the master.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.timeout(300)

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from hpf.federation.catalog import Catalog
    from hpf.federation.errors import FederationError
    from hpf.node.backends.spark_backend import SparkBackend
    from hpf.node.config import SparkSettings, SparkTable

    path, port = sys.argv[1], int(sys.argv[2])
    catalog = Catalog.model_validate({
        "federation": "t", "nodes": [{"id": "n", "address": "127.0.0.1:1"}],
        "tables": {"deposits": {"columns": {"amount_fen": {"type": "BIGINT"}}}},
    })
    sources = {"deposits": SparkTable.model_validate({"spark": {"path": path}})}
    began = time.monotonic()
    settings = SparkSettings(master=f"spark://127.0.0.1:{port}", start_wait_s=5)
    node = SparkBackend(catalog, sources, settings, query_seconds=5.0)
    started = time.monotonic() - began
    try:
        node.run("SELECT COUNT(*) FROM deposits")
        asked = "answered"
    except FederationError as err:
        asked = err.code
    print(json.dumps({"started_s": started, "question": asked}), flush=True)
    os._exit(0)  # Spark's own threads would go on trying the master
    """
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_cluster_down_at_start_leaves_the_node_serving_as_unwell(tmp_path: Path) -> None:
    path = tmp_path / "deposits.parquet"
    duckdb.sql(f"COPY (SELECT 1::BIGINT AS amount_fen) TO '{path}' (FORMAT parquet)")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), str(_closed_port())],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["question"] == "NODE_UNWELL", said
    assert said["started_s"] < 60, said  # it did not wait out Spark's minute of retries at start
