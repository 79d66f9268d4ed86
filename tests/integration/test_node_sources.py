"""A node reads its region's tables from Parquet or CSV through DuckDB, and refuses files that do not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hpf.federation.catalog import Catalog
from hpf.federation.errors import DataError
from hpf.node.backends.duckdb_backend import DuckDBBackend
from hpf.node.config import TableSource

CATALOG = Catalog.model_validate(
    {
        "federation": "t",
        "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
        "tables": {
            "loans": {
                "columns": {
                    "status": {"type": "VARCHAR", "class": "public", "domain": {"values": ["active", "settled"]}},
                    "principal_fen": {"type": "BIGINT", "class": "public"},
                    "rate": {"type": "DECIMAL(6,4)", "class": "public"},
                }
            }
        },
    }
)


def _source(path: Path) -> dict[str, TableSource]:
    return {"loans": TableSource(path=path)}


def test_csv_source_is_read_with_catalog_types(tmp_path: Path) -> None:
    csv = tmp_path / "loans.csv"
    csv.write_text("status,principal_fen,rate,extra\nactive,100,0.0325,x\nsettled,250,0.0410,y\nactive,7,0.0001,z\n")
    backend = DuckDBBackend(CATALOG, _source(csv))
    rows = backend.run("SELECT status, SUM(principal_fen), SUM(rate) FROM loans GROUP BY status ORDER BY status")
    assert [(r[0], r[1], str(r[2])) for r in rows] == [("active", 107, "0.0326"), ("settled", 250, "0.0410")]


def test_missing_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        DuckDBBackend(CATALOG, _source(tmp_path / "absent.parquet"))
    assert info.value.code == "NODE_TABLE_UNREADABLE"
    assert "loans" in info.value.message


def test_missing_column_is_refused_at_start(tmp_path: Path) -> None:
    csv = tmp_path / "loans.csv"
    csv.write_text("status,principal_fen\nactive,1\n")
    with pytest.raises(DataError) as info:
        DuckDBBackend(CATALOG, _source(csv))
    assert info.value.code == "NODE_TABLE_SCHEMA" and "rate" in info.value.message


def test_values_that_do_not_fit_the_catalog_type_are_refused(tmp_path: Path) -> None:
    csv = tmp_path / "loans.csv"
    csv.write_text("status,principal_fen,rate\nactive,lots,0.1\n")
    with pytest.raises(DataError) as info:
        backend = DuckDBBackend(CATALOG, _source(csv))
        backend.run("SELECT SUM(principal_fen) FROM loans")
    assert info.value.code == "DATA_TYPE_MISMATCH" and "principal_fen" in info.value.message
    assert "lots" not in info.value.message  # engine messages come back value-free


def test_table_without_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        DuckDBBackend(CATALOG, {})
    assert info.value.code == "NODE_TABLE_MISSING" and "tables:" in (info.value.hint or "")


def test_node_config_short_and_long_table_forms(tmp_path: Path) -> None:
    from hpf.node.config import load_node_config

    path = tmp_path / "node.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "node_id": "north",
                "catalog": "federation.yaml",
                "insecure": True,
                "tables": {"loans": "d/loans.csv", "other": {"path": "d/x.dat", "format": "csv"}},
            }
        )
    )
    config = load_node_config(path)
    assert config.tables["loans"].file_format == "csv"
    assert config.tables["other"].file_format == "csv"
