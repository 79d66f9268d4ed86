"""Write synthetic nodes as Parquet (``DATA_DIR/<node-id>/<table>.parquet``) and report what was planted.

A node's files depend only on ``(seed, rows)`` and the node: generating 4 nodes or 41 gives the same files
for the first 4. Every node has exactly ``rows`` deposit rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from hpf.demo.synth.loan_plan import ACTIVE
from hpf.demo.synth.node_tables import Columns, build_node
from hpf.demo.synth.registry import build_registry
from hpf.federation.hpf_schema import TABLE_NAMES, column_types
from hpf.federation.regions import BY_NODE_ID, REGIONS

_REGION_INDEX = {r.node_id: i for i, r in enumerate(REGIONS)}


@dataclass(frozen=True)
class NodeReport:
    node_id: str
    city_code: str
    directory: Path
    rows: dict[str, int]  # table -> rows written
    persons: int  # distinct people with an account in this node
    seconds: float


@dataclass(frozen=True)
class PlantedDuplicate:
    """A person holding ``active`` loans in two cities (``node_ids`` in region order)."""

    person_id: str
    node_ids: tuple[str, ...]


@dataclass(frozen=True)
class FederationReport:
    seed: int
    rows: int
    nodes: tuple[NodeReport, ...]
    planted: tuple[PlantedDuplicate, ...]
    seconds: float


def _region(node_id: str) -> int:
    if node_id not in BY_NODE_ID:
        raise ValueError(f"unknown node id {node_id!r}: use a region node id from federation/regions.py")
    return _REGION_INDEX[node_id]


def _select_list(table: str, data: Columns) -> str:
    """``SELECT`` expressions casting each numpy column to its catalog type, in catalog order."""
    exprs = []
    for name, type_ in column_types(table).items():
        if name not in data:
            raise KeyError(f"the generator made no column {table}.{name}")
        col = f'"{name}"'
        value = f"DATE '1970-01-01' + CAST({col} AS INTEGER)" if type_ == "DATE" else col
        exprs.append(f"CAST({value} AS {type_}) AS {col}")
    return ", ".join(exprs)


def write_parquet(con: duckdb.DuckDBPyConnection, path: Path, table: str, data: Columns) -> None:
    """Write one table atomically (to a temporary name, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    target = str(tmp).replace("'", "''")
    con.register("frame", {name: np.ascontiguousarray(values) for name, values in data.items()})
    try:
        con.execute(f"COPY (SELECT {_select_list(table, data)} FROM frame) TO '{target}' (FORMAT parquet)")
    finally:
        con.unregister("frame")
    os.replace(tmp, path)


def generate_node(data_dir: Path, node_id: str, rows: int, seed: int) -> NodeReport:
    """Write ``data_dir/<node_id>/{accounts,deposits,withdrawals,loans}.parquet`` for one node."""
    began = time.perf_counter()
    region = _region(node_id)
    tables = build_node(build_registry(seed, rows), region).as_dict()
    directory = Path(data_dir) / node_id
    directory.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        for table in TABLE_NAMES:
            write_parquet(con, directory / f"{table}.parquet", table, tables[table])
    finally:
        con.close()
    counts = {table: len(tables[table]["person_id"]) for table in TABLE_NAMES}
    persons = len(set(tables["accounts"]["person_id"].tolist()))
    return NodeReport(node_id, REGIONS[region].code, directory, counts, persons, time.perf_counter() - began)


def planted_duplicate_loans(seed: int, rows: int, node_ids: list[str] | tuple[str, ...]) -> list[PlantedDuplicate]:
    """Planted people with ``active`` loans in two or more of ``node_ids``, sorted by person_id."""
    regions = sorted({_region(n) for n in node_ids})
    reg = build_registry(seed, rows)
    plan = reg.loans
    active = plan.status == ACTIVE
    owner = reg.person[plan.account]
    chosen = np.isin(owner, reg.planted) & active & np.isin(plan.region, regions)
    found: dict[int, set[int]] = {}
    for person, region in zip(owner[chosen].tolist(), plan.region[chosen].tolist(), strict=True):
        found.setdefault(person, set()).add(region)
    persons = np.array(sorted(p for p, rs in found.items() if len(rs) >= 2), dtype=np.int64)
    ids = reg.person_ids(persons).tolist() if len(persons) else []
    out = [
        PlantedDuplicate(pid, tuple(REGIONS[r].node_id for r in sorted(found[p])))
        for pid, p in zip(ids, persons.tolist(), strict=True)
    ]
    return sorted(out, key=lambda d: d.person_id)


def generate_federation(
    data_dir: Path,
    node_ids: list[str] | tuple[str, ...],
    rows: int,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> FederationReport:
    """Generate every node in ``node_ids`` and report the planted duplicate loans among them."""
    began = time.perf_counter()
    for node_id in node_ids:
        _region(node_id)
    if len(set(node_ids)) != len(node_ids):
        raise ValueError("a node id is listed twice")
    reports = []
    for node_id in node_ids:
        report = generate_node(data_dir, node_id, rows, seed)
        reports.append(report)
        if progress is not None:
            progress(
                f"{node_id}: {report.rows['deposits']:,} deposit rows, {report.persons:,} people "
                f"in {report.seconds:.1f}s"
            )
    planted = tuple(planted_duplicate_loans(seed, rows, node_ids))
    return FederationReport(seed, rows, tuple(reports), planted, time.perf_counter() - began)
