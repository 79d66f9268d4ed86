"""A node's tables in Spark (local mode, the session the tests share): views cast to the catalog types, checked
against the catalog by the files' rule; a question over the node's limit or abandoned leaves no Spark job
running and gives the masked failure mark; a table Spark can no longer read makes the region unwell until it
can; the lookup facts come out of Spark as DuckDB computes them over the same rows. Spark's own words never reach
an error or a log."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from hpf.demo.synth import generate_node
from hpf.federation.catalog import Catalog
from hpf.federation.errors import DataError, FederationError
from hpf.federation.hpf_schema import hpf_tables
from hpf.node.backends.spark_backend import SparkBackend
from hpf.node.config import SparkSettings, SparkTable
from hpf.node.lookup_index import FACTS_SQL, facts_sql

pytestmark = pytest.mark.integration
SETTINGS = SparkSettings(master="local[2]", conf={"spark.sql.shuffle.partitions": "2"})
ROWS = 200_000
# over the limit whatever the machine: a cross join of the table with itself, counted
SLOW = "SELECT COUNT(*) FROM deposits a CROSS JOIN deposits b WHERE a.amount_fen + b.amount_fen = 3"


def catalog(columns: dict[str, str]) -> Catalog:
    return Catalog.model_validate(
        {
            "federation": "t",
            "nodes": [{"id": "n", "address": "127.0.0.1:1"}],
            "tables": {"deposits": {"columns": {c: {"type": t} for c, t in columns.items()}}},
        }
    )


COLUMNS = {"person_id": "VARCHAR", "amount_fen": "BIGINT", "balance": "DECIMAL(18,2)"}


def write(path: Path, rows: int = ROWS, balance: str = "DECIMAL(12,2)", amount: str = "INTEGER") -> Path:
    duckdb.sql(
        f"COPY (SELECT 'p' || (r % 1000) AS person_id, (r % 7)::{amount} AS amount_fen, "
        f"(r * 1.25)::{balance} AS balance FROM range({rows}) t(r)) TO '{path}' (FORMAT parquet)"
    )
    return path


def backend(path: Path, columns: dict[str, str] = COLUMNS, **kwargs: Any) -> SparkBackend:
    source = {"deposits": SparkTable.model_validate({"spark": {"path": str(path)}})}
    return SparkBackend(catalog(columns), source, SETTINGS, **kwargs)


@pytest.fixture(scope="module")
def deposits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("spark") / "deposits.parquet")


@pytest.fixture(scope="module")
def node(deposits: Path) -> Iterator[SparkBackend]:
    made = backend(deposits, query_seconds=30.0)
    yield made
    made.close()


def test_the_views_cast_to_the_catalog_types_and_sum_as_duckdb(node: SparkBackend, deposits: Path) -> None:
    got = node.run("SELECT COUNT(*), SUM(amount_fen), SUM(balance) FROM deposits")
    expected = duckdb.sql(
        f"SELECT COUNT(*), SUM(amount_fen::BIGINT), SUM(balance::DECIMAL(18,2)) FROM '{deposits}'"
    ).fetchall()
    assert got == expected and isinstance(got[0][2], Decimal) and got[0][2].as_tuple().exponent == -2


def test_a_narrowing_passes_only_when_every_value_fits(tmp_path: Path) -> None:
    fits = write(tmp_path / "fits.parquet", rows=100, amount="BIGINT")
    made = backend(fits, {**COLUMNS, "amount_fen": "INTEGER"})  # BIGINT values that all fit INTEGER: read once
    made.close()
    big = tmp_path / "big.parquet"
    duckdb.sql(
        f"COPY (SELECT 'p' AS person_id, 3000000000::BIGINT AS amount_fen, 1.25::DECIMAL(12,2) AS balance) "
        f"TO '{big}' (FORMAT parquet)"
    )
    with pytest.raises(DataError) as info:
        backend(big, {**COLUMNS, "amount_fen": "INTEGER"})
    assert info.value.code == "DATA_TYPE_MISMATCH" and "3000000000" not in info.value.message
    cents = write(tmp_path / "cents.parquet", rows=10)
    with pytest.raises(DataError) as info:  # 1.25 does not fit DECIMAL(18,1): never rounded
        backend(cents, {**COLUMNS, "balance": "DECIMAL(18,1)"})
    assert info.value.code == "DATA_TYPE_MISMATCH"
    with pytest.raises(DataError) as info:
        backend(cents, {**COLUMNS, "missing": "BIGINT"})
    assert info.value.code == "NODE_TABLE_SCHEMA"


def _active_jobs(node: SparkBackend) -> list[int]:
    return list(node._spark.sparkContext.statusTracker().getActiveJobsIds())


def _stopped(node: SparkBackend) -> bool:
    end = time.monotonic() + 30
    while _active_jobs(node):
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def test_a_question_over_the_limit_leaves_no_spark_job_running(
    node: SparkBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hits = node.limit_hits
    node.query_seconds = 1.0
    try:
        began = time.monotonic()
        with pytest.raises(DataError) as info:
            node.run(SLOW)
        took = time.monotonic() - began
    finally:
        node.query_seconds = 30.0
    assert info.value.code == "NODE_EXECUTION_FAILED" and node.limit_hits == hits + 1
    assert took < 20, took  # stopped at the limit, not run to its end
    assert _stopped(node), _active_jobs(node)
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "time limit" in said and "CROSS JOIN" not in said and "deposits" not in said
    assert node.run("SELECT COUNT(*) FROM deposits") == [(ROWS,)]  # and the region goes on answering


def test_a_question_the_coordinator_abandons_is_cancelled_on_the_cluster(node: SparkBackend) -> None:
    cancel: list[Any] = []
    failed: list[FederationError] = []

    def ask() -> None:
        try:
            node.run(SLOW, on_abandon=cancel.append)
        except FederationError as err:
            failed.append(err)

    asking = threading.Thread(target=ask)
    asking.start()
    end = time.monotonic() + 60
    while not _active_jobs(node):  # the question's job is running
        assert time.monotonic() < end, "the question started no job"
        time.sleep(0.05)
    hits = node.limit_hits
    cancel[0]()
    asking.join(60)
    assert not asking.is_alive() and failed and failed[0].code == "NODE_EXECUTION_FAILED"
    assert node.limit_hits == hits  # the coordinator's abandonment, not the node's limit
    assert _stopped(node), _active_jobs(node)


def test_a_table_spark_cannot_read_makes_the_region_unwell_until_it_can(tmp_path: Path) -> None:
    folder = tmp_path / "deposits"
    folder.mkdir()
    write(folder / "part-0.parquet", rows=1_000)
    made = backend(folder)
    try:
        assert made.run("SELECT COUNT(*) FROM deposits") == [(1_000,)]
        shutil.move(folder, tmp_path / "away")
        with pytest.raises(FederationError) as info:
            made.run("SELECT COUNT(*) FROM deposits")
        assert info.value.code == "NODE_UNWELL"
        assert made.check_sources() is not None  # and so its health says NOT_SERVING
        shutil.move(tmp_path / "away", folder)
        assert made.check_sources() is None
        assert made.run("SELECT COUNT(*) FROM deposits") == [(1_000,)]
    finally:
        made.close()


def test_lookup_facts_from_spark_are_duckdbs(tmp_path: Path) -> None:
    generate_node(tmp_path, "hangzhou", 5_000, 4)
    tables = hpf_tables()
    lookup_catalog = Catalog.model_validate(
        {"federation": "t", "nodes": [{"id": "hangzhou", "address": "127.0.0.1:1"}], "tables": tables}
    )
    sources = {
        t: SparkTable.model_validate({"spark": {"path": str(tmp_path / "hangzhou" / f"{t}.parquet")}}) for t in tables
    }
    made = SparkBackend(lookup_catalog, sources, SETTINGS)
    try:
        spark = made.columns(facts_sql("spark"))
    finally:
        made.close()
    con = duckdb.connect()
    for t in tables:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM '{tmp_path / 'hangzhou' / f'{t}.parquet'}'")
    oracle = con.execute(FACTS_SQL).fetchnumpy()
    assert len(spark["pid"]) == len(oracle["pid"]) > 100
    mine = {pid: i for i, pid in enumerate(spark["pid"])}
    theirs = {pid: i for i, pid in enumerate(oracle["pid"])}
    assert mine.keys() == theirs.keys()
    for column in oracle:
        if column != "pid":
            assert [int(spark[column][mine[p]]) for p in theirs] == [int(oracle[column][theirs[p]]) for p in theirs]
