"""One node's files for tests that check a node's setup (`hpf node doctor`, its metrics endpoint): certificates of
a federation of north and south, a table, the catalog with north's published keys, and north's node.yaml."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import harness
import yaml

from hpf.node.config import load_node_config
from hpf.node.keys import own_keys

TABLES = {
    "t": {
        "columns": {
            "g": {"type": "VARCHAR", "class": "public", "domain": {"values": ["a", "b"]}},
            "v": {"type": "BIGINT", "class": "public"},
        }
    }
}


def free_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeFiles:
    """Node north's files under ``root``, from a copy of the federation's certificates in ``pki``."""

    def __init__(self, root: Path, pki: Path) -> None:
        self.root = root
        self.pki = root / "pki"
        shutil.copytree(pki, self.pki)
        harness.write_table(root / "data" / "t.parquet", {"g": "VARCHAR", "v": "BIGINT"}, [("a", 1), ("b", 2)])
        self.catalog = root / "federation.yaml"
        self.path = root / "node.yaml"
        self.port = free_port()
        self.doc: dict[str, Any] = {
            "node_id": "north",
            "listen": f"127.0.0.1:{self.port}",
            "catalog": "federation.yaml",
            "tables": {"t": "data/t.parquet"},
            "policy": str(harness.OPEN_POLICY),
            "state_dir": "state",
            "revocations": "pki/crl.pem",
            "audit_fsync": False,
            "tls": {"ca": "pki/ca.pem", "cert": "pki/nodes/north.pem", "key": "pki/nodes/north.key"},
        }
        self.write()
        self.nodes: list[dict[str, Any]] = [{"id": "north", "address": f"127.0.0.1:{self.port}"}]
        self.write_catalog(keys=own_keys(load_node_config(self.path)).model_dump(exclude={"node"}))

    def write(self) -> None:
        self.path.write_text(yaml.safe_dump(self.doc))

    def write_catalog(self, keys: dict[str, str] | None = None, nodes: list[dict[str, Any]] | None = None) -> None:
        if nodes is None:
            nodes = [{**self.nodes[0], **(keys or {})}]
        self.catalog.write_text(yaml.safe_dump({"federation": "t", "nodes": nodes, "tables": TABLES}))
