"""A real, small federation for tests: Parquet files per node, a CA, nodes and a coordinator on port 0 with mTLS.

Every server runs in this process on a free port and is always stopped on exit. The oracle is DuckDB over
the union of every node's files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import yaml

from coordinator.config import CoordinatorConfig
from coordinator.server import RunningCoordinator, start_coordinator
from federation.catalog import Catalog, load_catalog
from federation.client import FederationClient
from federation.config_files import parse_model
from federation.he import ClientKeys
from federation.pki import init_federation
from federation.profile import ClientProfile
from node.config import NodeConfig
from node.server import RunningNode, start_node


@dataclass
class Federation:
    root: Path
    catalog_path: Path
    catalog: Catalog
    profile_path: Path
    nodes: dict[str, RunningNode]
    coordinator: RunningCoordinator
    node_ids: list[str]
    data_files: dict[str, list[Path]] = field(default_factory=dict)  # table -> files of every node

    def client(self, keys: ClientKeys | None = None) -> FederationClient:
        profile = parse_model(self.profile_path, yaml.safe_load(self.profile_path.read_text()), ClientProfile)
        return FederationClient(profile, keys=keys)

    def oracle(self, sql: str) -> list[tuple[Any, ...]]:
        """DuckDB over the union of all nodes' files: the answer every federated query must equal."""
        con = duckdb.connect(":memory:")
        try:
            for table, files in self.data_files.items():
                listed = ", ".join(f"'{f}'" for f in files)
                con.execute(self.catalog.tables[table].view_sql(table, f"read_parquet([{listed}])"))
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def stop_node(self, node_id: str) -> None:
        self.nodes[node_id].stop(0)


def write_table(path: Path, columns: Mapping[str, str], rows: Sequence[Sequence[Any]]) -> None:
    """Write ``rows`` as a Parquet file with the given DuckDB column types."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    try:
        cols = ", ".join(f'"{c}" {t}' for c, t in columns.items())
        con.execute(f"CREATE TABLE t ({cols})")
        if rows:
            marks = ", ".join("?" for _ in columns)
            con.executemany(f"INSERT INTO t VALUES ({marks})", [tuple(r) for r in rows])
        con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    finally:
        con.close()


@contextlib.contextmanager
def federation(
    root: Path,
    tables: Mapping[str, Mapping[str, Any]],
    node_rows: Mapping[str, Mapping[str, Sequence[Sequence[Any]]]],
    *,
    deadline_ms: int = 10_000,
    write_data: bool = True,
) -> Iterator[Federation]:
    """Start a federation whose nodes hold ``node_rows[node_id][table]`` for the catalog ``tables``."""
    node_ids = list(node_rows)
    pki_dir = root / "pki"
    init_federation(pki_dir, node_ids)
    catalog_doc = {
        "federation": "test",
        "nodes": [{"id": n, "address": "127.0.0.1:1"} for n in node_ids],
        "tables": tables,
    }
    catalog_path = root / "federation.yaml"
    catalog_path.write_text(yaml.safe_dump(catalog_doc, sort_keys=False, allow_unicode=True))
    catalog = load_catalog(catalog_path)
    data_files: dict[str, list[Path]] = {t: [] for t in tables}
    nodes: dict[str, RunningNode] = {}
    coordinator: RunningCoordinator | None = None
    try:
        for node_id in node_ids:
            sources = {}
            for table, spec in catalog.tables.items():
                path = root / "data" / node_id / f"{table}.parquet"
                if write_data:
                    types = {c: col.type for c, col in spec.columns.items()}
                    write_table(path, types, node_rows[node_id].get(table, []))
                data_files[table].append(path)
                sources[table] = {"path": str(path)}
            config = parse_model(
                root / f"{node_id}.yaml",
                {
                    "node_id": node_id,
                    "listen": "127.0.0.1:0",
                    "catalog": str(catalog_path),
                    "tables": sources,
                    "tls": {
                        "ca": str(pki_dir / "ca.pem"),
                        "cert": str(pki_dir / "nodes" / f"{node_id}.pem"),
                        "key": str(pki_dir / "nodes" / f"{node_id}.key"),
                    },
                },
                NodeConfig,
            )
            nodes[node_id] = start_node(config, catalog=catalog)
        coord_config = CoordinatorConfig.model_validate(
            {
                "listen": "127.0.0.1:0",
                "catalog": str(catalog_path),
                "deadline_ms": deadline_ms,
                "tls": {
                    "ca": str(pki_dir / "ca.pem"),
                    "cert": str(pki_dir / "coordinator.pem"),
                    "key": str(pki_dir / "coordinator.key"),
                },
            }
        )
        addresses = {n: f"127.0.0.1:{r.port}" for n, r in nodes.items()}
        coordinator = start_coordinator(coord_config, catalog=catalog, addresses=addresses)
        person = "caseworker"
        profile_path = root / "client.yaml"
        profile_path.write_text(
            yaml.safe_dump(
                {
                    "coordinator": f"127.0.0.1:{coordinator.port}",
                    "catalog": str(catalog_path),
                    "keys": str(root / "keys" / "client.bfv"),
                    "tls": {
                        "ca": str(pki_dir / "ca.pem"),
                        "cert": str(pki_dir / "people" / f"{person}.pem"),
                        "key": str(pki_dir / "people" / f"{person}.key"),
                    },
                }
            )
        )
        yield Federation(
            root=root,
            catalog_path=catalog_path,
            catalog=catalog,
            profile_path=profile_path,
            nodes=nodes,
            coordinator=coordinator,
            node_ids=node_ids,
            data_files=data_files,
        )
    finally:
        if coordinator is not None:
            coordinator.stop(0)
        for node in nodes.values():
            node.stop(0)
