"""`hpf demo --backends duckdb,postgres`: regions on both backends, every answer checked against DuckDB over the
pooled files, the tables in PostgreSQL as the catalog types them, and no connection string in any output, config
or log. Each test runs on a fresh database of the shared server and drops the demo's own database after."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
import yaml
from pg import fresh_database

from hpf.demo.launcher import ensure_data, layout_for
from hpf.demo.postgres import demo_database, drop_demo_database, load_regions, make_database
from hpf.federation.hpf_schema import TABLE_NAMES, column_types

pytestmark = pytest.mark.timeout(600)
NODES = ("shanghai", "hangzhou", "nanjing")


@pytest.fixture
def admin_dsn(tmp_path: Path) -> Iterator[str]:
    """A fresh database's DSN, the demo's admin connection; the demo's database of ``tmp_path / "demo"`` is
    dropped after, whatever the test did."""
    with fresh_database() as dsn:
        try:
            yield dsn
        finally:
            drop_demo_database(dsn, (tmp_path / "demo").resolve())


def _databases(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as con:
        return {r[0] for r in con.execute("SELECT datname FROM pg_database").fetchall()}


def _hpf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpf.cli", *args], capture_output=True, text=True, timeout=540, stdin=subprocess.DEVNULL
    )


def test_demo_once_on_duckdb_and_postgres_checks_every_answer(tmp_path: Path, admin_dsn: str) -> None:
    data = (tmp_path / "demo").resolve()
    # as many rows as test_demo's: fewer, and the DP examples' groups fall under their thresholds (nothing shown to
    # check against the oracle)
    result = _hpf(
        "demo", "--once", "--nodes", "3", "--rows", "100000", "--seed", "11", "--data", str(data),
        "--backends", "duckdb,postgres", "--postgres", admin_dsn,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out, err = result.stdout, result.stderr
    # the regions took the backends in turn, and the demo says which is where
    name = demo_database(data)
    assert f"region shanghai: DuckDB over its Parquet files in {data / 'shanghai'}" in err
    assert f"region hangzhou: PostgreSQL, schema hangzhou of the database {name}" in err
    assert f"region nanjing: DuckDB over its Parquet files in {data / 'nanjing'}" in err
    assert "PostgreSQL: copied " in err and " rows of hangzhou into schema hangzhou" in err
    configs = {n: yaml.safe_load((data / "config" / f"node-{n}.yaml").read_text()) for n in NODES}
    for node in ("shanghai", "nanjing"):
        assert configs[node]["tables"] == {t: str(data / node / f"{t}.parquet") for t in TABLE_NAMES}
    dsn_file = str(data / "secrets" / "postgres.dsn")
    assert configs["hangzhou"]["tables"] == {
        t: {"postgres": {"dsn_file": dsn_file}, "schema": "hangzhou", "table": t} for t in TABLE_NAMES
    }
    # every answer checked against DuckDB over the pooled files: the operator's 3 exact queries, the caseworker's
    # 3 lookups (one of them answered by the region on PostgreSQL), the DP answers within 6 sd, the screening
    assert out.count("equals DuckDB over the pooled files") == 3 + 3, out[-3000:]
    assert out.count("sd of DuckDB over the pooled files (clamped), epsilon 1 spent)") == 3
    assert "DIFFERS" not in out and "NOT the" not in out and "MORE THAN" not in out
    assert "; exactly the " in out and "planted among them" in out
    assert "sampled applicants equal DuckDB)" in out and "DIFFER FROM" not in out
    assert "applicant 1 withheld by every region (CONSENT_REVOKED)" in out
    assert "3 logs, " in out and "every root and checkpoint signature verified" in out
    # no connection string anywhere: output, configs, logs (the DSN file is removed with the database)
    secret_parts = (admin_dsn, admin_dsn.split("dbname=")[1], "host=", "user=postgres")
    for part in secret_parts:
        assert part not in out and part not in err, part
    assert not Path(dsn_file).exists()
    for path in data.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(p.encode() in content for p in secret_parts), path
    # the demo's database lived as long as the demo
    assert name not in _databases(admin_dsn)


def test_regions_on_postgres_hold_their_files_rows_with_the_catalogs_types(tmp_path: Path, admin_dsn: str) -> None:
    """What the demo loads: each PostgreSQL region's four tables, column for column of the catalog's types, row
    for row its files; the connection string in a file only its owner may read."""
    layout = layout_for(tmp_path / "demo", 3, ("postgres", "duckdb"))
    said: list[str] = []
    make_database(layout, admin_dsn, said.append)
    ensure_data(layout, 2000, 5, said.append)
    load_regions(layout, said.append)
    assert layout.dsn_file.stat().st_mode & 0o777 == 0o600
    dsn = layout.dsn_file.read_text().strip()
    assert not any(admin_dsn in line or "host=" in line for line in said)
    expected_types = {"BIGINT": "bigint", "INTEGER": "integer", "DATE": "date", "VARCHAR": "text"}
    with psycopg.connect(dsn) as pg, duckdb.connect() as duck:
        schemas = {r[0] for r in pg.execute("SELECT nspname FROM pg_namespace").fetchall()}
        assert {"shanghai", "nanjing"} <= schemas and "hangzhou" not in schemas
        for region in ("shanghai", "nanjing"):
            for table in TABLE_NAMES:
                types = column_types(table)
                got = pg.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    (region, table),
                ).fetchall()
                assert got == [(c, expected_types[t]) for c, t in types.items()]
                columns = ", ".join(types)
                rows = pg.execute(f'SELECT {columns} FROM "{region}"."{table}"').fetchall()
                (parquet,) = layout.files(table, region)
                files = duck.execute(f"SELECT {columns} FROM read_parquet(?)", [parquet]).fetchall()
                assert len(rows) == len(files) > 0
                assert sorted(rows, key=repr) == sorted(files, key=repr), (region, table)
    drop_demo_database(admin_dsn, layout.data)
    assert demo_database(layout.data) not in _databases(admin_dsn)
