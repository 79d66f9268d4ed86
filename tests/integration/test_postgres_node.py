"""A real node whose table is in PostgreSQL, in a federation beside a node on files.

The oracle is DuckDB over every node's rows (the harness's Parquet files; the PostgreSQL node's rows are the
same rows, loaded into its database). A database that goes down makes that region missing (NODE_UNWELL) and its
health NOT_SERVING, until it is back, which the node sees by itself.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import harness
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pg import PRIVATE_PASSWORD, fresh_database, load_table, private_postgres

from hpf.federation.trust.channels import node_target, secure_channel
from hpf.federation.trust.tls import TlsConfig
from hpf.node.backends.postgres_backend import PostgresBackend

CITIES = ["310000", "330100", "320100"]
TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": CITIES}},
            "amount_fen": {"type": "BIGINT", "class": "public"},
            "balance": {"type": "DECIMAL(12,2)", "class": "public"},
        }
    }
}
PG_COLUMNS = {"city_code": "text", "amount_fen": "bigint", "balance": "numeric(12,2)"}
SQL = "SELECT city_code, COUNT(*), SUM(amount_fen), SUM(balance) FROM deposits GROUP BY city_code ORDER BY city_code"
ENV = "HPF_TEST_NODE_PG_DSN"


def rows(seed: int, n: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    return [
        (rng.choice(CITIES), rng.randrange(-(10**12), 10**12), Decimal(rng.randrange(-(10**9), 10**9)).scaleb(-2))
        for _ in range(n)
    ]


def on_postgres() -> dict[str, Any]:
    return {"tables": {"deposits": {"postgres": {"dsn_env": ENV}, "schema": "public", "table": "deposits"}}}


def health(fed: harness.Federation, node_id: str) -> int:
    pki = fed.pki_dir
    tls = TlsConfig(ca=pki / "ca.pem", cert=pki / "coordinator.pem", key=pki / "coordinator.key")
    port = fed.nodes[node_id].port
    with secure_channel(f"127.0.0.1:{port}", tls, server_name=node_target(tls, node_id)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service="hpf.v1.Node"), timeout=10).status)


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "the condition did not come true in time"
        time.sleep(0.2)


def test_a_region_on_postgres_answers_as_duckdb_over_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    node_rows = {"n0": {"deposits": rows(1, 2_000)}, "n1": {"deposits": rows(2, 500)}}
    with fresh_database() as dsn, tempfile.TemporaryDirectory(prefix="hpf-pg-node-") as tmp:
        load_table(dsn, "deposits", PG_COLUMNS, node_rows["n0"]["deposits"])
        monkeypatch.setenv(ENV, dsn)
        settings = {"n0": on_postgres()}
        with harness.federation(Path(tmp), TABLES, node_rows, node_settings=settings) as fed, fed.client() as c:
            assert isinstance(fed.nodes["n0"].handler.admission.executor.backend, PostgresBackend)
            answer = c.query(SQL)
            assert answer.missing == []
            assert answer.rows == [list(r) for r in fed.oracle(SQL)]
            assert answer.rows  # and not an empty agreement
            alone = c.query("SELECT COUNT(*), SUM(amount_fen) FROM deposits WHERE city_code = '310000'")
            sql = "SELECT COUNT(*), SUM(amount_fen) FROM deposits WHERE city_code = '310000'"
            assert alone.rows == [list(r) for r in fed.oracle(sql)]


def test_a_region_whose_database_goes_down_is_missing_until_it_is_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    node_rows = {"n0": {"deposits": rows(3, 300)}, "n1": {"deposits": rows(4, 200)}}
    with private_postgres() as server, fresh_database(server.dsn()) as dsn:
        load_table(dsn, "deposits", PG_COLUMNS, node_rows["n0"]["deposits"])
        monkeypatch.setenv(ENV, dsn)
        with tempfile.TemporaryDirectory(prefix="hpf-pg-node-") as tmp:
            settings = {"n0": on_postgres()}
            with harness.federation(Path(tmp), TABLES, node_rows, node_settings=settings) as fed, fed.client() as c:
                assert c.query(SQL).rows == [list(r) for r in fed.oracle(SQL)]
                server.stop()
                wait_for(lambda: health(fed, "n0") == health_pb2.HealthCheckResponse.NOT_SERVING)
                answer = c.query(SQL)
                assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n0", "NODE_UNWELL")]
                assert answer.rows == [list(r) for r in fed.node_oracle("n1", SQL)]
                assert PRIVATE_PASSWORD not in str(answer.missing)
                server.start()
                wait_for(lambda: health(fed, "n0") == health_pb2.HealthCheckResponse.SERVING)
                for _ in range(50):  # the coordinator takes n0 back once its next probe passes
                    answer = c.query(SQL)
                    if not answer.missing:
                        break
                    time.sleep(0.2)
                assert answer.missing == [] and answer.rows == [list(r) for r in fed.oracle(SQL)]
        assert "NODE_DATABASE_UNREACHABLE" in caplog.text  # the node's log says why, with no part of the DSN
        assert PRIVATE_PASSWORD not in caplog.text and f"port={server.port}" not in caplog.text


def test_a_region_on_postgres_runs_its_query_as_rendered_for_it_and_refuses_what_it_cannot_run_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node_rows = {"n0": {"deposits": rows(5, 1_500)}, "n1": {"deposits": rows(6, 400)}}
    with fresh_database() as dsn, tempfile.TemporaryDirectory(prefix="hpf-pg-node-") as tmp:
        load_table(dsn, "deposits", PG_COLUMNS, node_rows["n0"]["deposits"])
        monkeypatch.setenv(ENV, dsn)
        with (
            harness.federation(Path(tmp), TABLES, node_rows, node_settings={"n0": on_postgres()}) as fed,
            fed.client() as c,
        ):
            # text ordered by code point (COLLATE "C" on PostgreSQL), 128-bit limb sums, an integer division
            sql = (
                "SELECT city_code, COUNT(*), SUM(amount_fen), SUM(balance) FROM deposits "
                "WHERE city_code >= '320100' AND amount_fen // 7 > -1000 GROUP BY city_code ORDER BY city_code"
            )
            answer = c.query(sql)
            assert answer.missing == []
            assert answer.rows == [list(r) for r in fed.oracle(sql)]
            assert len(answer.rows) == 2
            with pytest.raises(Exception) as refused:  # case rules follow PostgreSQL's locale: not exact there
                c.query("SELECT COUNT(*) FROM deposits WHERE lower(city_code) = '310000'")
            assert getattr(refused.value, "code", None) == "PLAN_BACKEND_UNSUPPORTED"
            assert "310000" not in str(refused.value)
