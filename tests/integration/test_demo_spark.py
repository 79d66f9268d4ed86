"""`hpf demo --backends duckdb,postgres,spark`: the regions in turn on files, PostgreSQL and Spark (local mode, in
the region's node process), every answer checked against DuckDB over the pooled files by the demo itself."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pg import fresh_database

from hpf.demo.postgres import drop_demo_database
from hpf.federation.hpf_schema import TABLE_NAMES

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def admin_dsn(tmp_path: Path) -> Iterator[str]:
    with fresh_database() as dsn:
        try:
            yield dsn
        finally:
            drop_demo_database(dsn, (tmp_path / "demo").resolve())


def test_demo_once_on_three_backends_checks_every_answer(tmp_path: Path, admin_dsn: str) -> None:
    data = (tmp_path / "demo").resolve()
    result = subprocess.run(
        [
            sys.executable, "-m", "hpf.cli", "demo", "--once", "--nodes", "3", "--rows", "100000", "--seed", "11",
            "--data", str(data), "--backends", "duckdb,postgres,spark", "--postgres", admin_dsn,
        ],
        capture_output=True, text=True, timeout=840, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out, err = result.stdout, result.stderr
    assert (
        f"region nanjing: Spark (local mode, in the node's process) over its Parquet files in {data / 'nanjing'}" in err
    )
    config = yaml.safe_load((data / "config" / "node-nanjing.yaml").read_text())
    assert config["tables"] == {t: {"spark": {"path": str(data / "nanjing" / f"{t}.parquet")}} for t in TABLE_NAMES}
    assert config["spark"]["master"] == "local[2]"
    # every answer checked against DuckDB over the pooled files, as on files alone
    assert out.count("equals DuckDB over the pooled files") == 3 + 3, out[-3000:]
    assert out.count("sd of DuckDB over the pooled files (clamped), epsilon 1 spent)") == 3
    assert "DIFFERS" not in out and "NOT the" not in out and "MORE THAN" not in out
    assert "; exactly the " in out and "planted among them" in out
    assert "sampled applicants equal DuckDB)" in out and "DIFFER FROM" not in out
    assert "3 logs, " in out and "every root and checkpoint signature verified" in out
