"""A region on PostgreSQL: the node's own time for an aggregate against the database's own time for the same SQL.

    python bench/postgres_bench.py --rows 10000000 --repeat 15

One region (Shanghai) whose four tables are in a database of this bench's own on the machine's PostgreSQL server
(``--dsn``, default 127.0.0.1:5432, user postgres; database ``--database``, default hpf_bench_pg). The rows are the
demo's synthetic region (hpf.demo.synth, ``--rows`` deposit rows and its other tables), generated as Parquet
files under ``--data`` and copied into the database once (CSV through ``COPY ... FREEZE``, then VACUUM ANALYZE);
later runs with the same ``--rows`` and ``--seed`` reuse both. ``--drop`` drops the database and exits.

The node and a coordinator start as real processes with mutual TLS (as the other benches do) and the node reads
its tables through its PostgreSQL backend. In turn, ``--repeat`` times each (the order alternating, so
background load hits both alike):

- node: the aggregate asked through the client library as the operator (exact answers); the node's own stages
  are read from its log after the run: ``scan_ms`` (the node query in the database, fetched) and ``encrypt_ms``
  from ``query <id> answered``, and the handler's total (checks, audit entry, scan, encode and encrypt, signed
  statement) from ``handled in .. ms``;
- direct: the same node query, rendered for PostgreSQL as the node renders it, over one warm psycopg connection
  with the node's own session settings (the same temporary views, ``search_path`` and ``work_mem``): the
  database's own time, fetched.

The target: the node adds at most 20% plus 50 ms to the database's own time (median handler total <= 1.2 x
median direct + 50 ms). The answers are checked in the run: every decrypted answer equals DuckDB over the Parquet
files the database was loaded from and PostgreSQL's own answer of the federated SQL over the loaded table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import duckdb
import psycopg
import yaml
from aggregate_bench import read_node_log
from common import code_version, prepared_layout
from psycopg import sql

from hpf.client.answers import QueryAnswer
from hpf.client.federation_client import FederationClient
from hpf.client.profile import load_profile
from hpf.demo.launcher import DemoLayout, running_parties, use_policy_extending_default
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.engine import DEFAULT_MEMORY
from hpf.federation.hpf_schema import TABLE_NAMES
from hpf.federation.planner.dialects import plan_node_sql
from hpf.node.backends import pg_schema
from hpf.node.backends.pg_session import NumericAsDuckDB, work_mem_kb
from hpf.node.config import PostgresTable

PERSON, PURPOSE = "operator", "statistics"  # the one demo role answered exactly
QUERY = (
    "SELECT EXTRACT(YEAR FROM month) AS year, COUNT(*) AS n, SUM(amount_fen) AS total_fen, "
    "AVG(amount_fen) AS avg_fen FROM deposits GROUP BY year ORDER BY year"
)
DSN_ENV = "HPF_BENCH_PG_DSN"  # the node reads its connection string from here (never from its config file)
TARGET = "node_ms <= 1.2 * direct_ms + 50 (medians; node_ms: the node's handler total)"
# raised for this bench only: a 10M-row scan may take longer than the defaults (3 s node, 10 s coordinator)
QUERY_MS = 60_000
DEADLINE_MS = 2 * QUERY_MS  # a question waits for a database connection only while its scan can still end in time
POLICY_OVERRIDES: dict[str, Any] = {PERSON: {"rate_limit": {"requests": 1_000_000, "per_seconds": 60}}}
# one region alone: its answer is summed with no other (the default asks for 3), so its masks are empty
SECURE_AGGREGATION = {"min_participants": 1}

Say = Callable[[str], None]


def with_dbname(dsn: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


def loaded_marker(admin_dsn: str, database: str) -> dict[str, Any] | None:
    """What the database was loaded with (its comment, written after a complete load), None if absent."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
    if row is None or not row[0]:
        return None
    try:
        marker = json.loads(row[0])
    except ValueError:
        return None
    return marker if isinstance(marker, dict) else None


def drop_database(admin_dsn: str, database: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def copy_table(conn: psycopg.Connection[Any], name: str, catalog: Catalog, parquet: Path, tmp: Path) -> None:
    """Create ``name`` with the catalog's types and copy the Parquet file's rows into it (as CSV, frozen)."""
    columns = catalog.tables[name].columns
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(pg_schema.cast_type(col.type))) for c, col in columns.items()
    )
    csv = tmp / f"{name}.csv"
    listed = ", ".join(f'"{c}"' for c in columns)
    with duckdb.connect(":memory:") as con:
        con.execute(f"COPY (SELECT {listed} FROM read_parquet('{parquet}')) TO '{csv}' (FORMAT csv, HEADER false)")
    with conn.transaction():
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(name), cols))
        copy_sql = sql.SQL("COPY {} FROM STDIN (FORMAT csv, FREEZE)").format(sql.Identifier(name))
        with conn.cursor().copy(copy_sql) as copy, open(csv, "rb") as fh:
            while chunk := fh.read(1 << 20):
                copy.write(chunk)
    csv.unlink()


def ensure_database(admin_dsn: str, database: str, layout: DemoLayout, wanted: dict[str, Any], say: Say) -> float:
    """The database loaded with the region's tables (kept from an earlier run with the same rows and seed);
    returns the seconds this run spent loading it (0 when reused)."""
    if loaded_marker(admin_dsn, database) == wanted:
        say(f"database {database}: present ({wanted})")
        return 0.0
    t = time.perf_counter()
    drop_database(admin_dsn, database)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    catalog = load_catalog(layout.catalog)
    region = layout.node_ids[0]
    with psycopg.connect(with_dbname(admin_dsn, database)) as conn, tempfile.TemporaryDirectory() as tmp:
        for name in TABLE_NAMES:
            copy_table(conn, name, catalog, layout.data / region / f"{name}.parquet", Path(tmp))
            say(f"database {database}: {name} copied ({time.perf_counter() - t:.0f}s)")
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(database), json.dumps(wanted)))
    seconds = time.perf_counter() - t
    say(f"database {database}: loaded in {seconds:.0f}s")
    return seconds


def point_node_at_postgres(layout: DemoLayout, dsn: str) -> dict[str, Any]:
    """The node's config: every table from the database (the DSN in the environment), the scan limit raised; and
    the coordinator's wait raised to match. Returns what was changed, for the output."""
    os.environ[DSN_ENV] = dsn  # the node processes inherit it
    path = layout.node_config(layout.node_ids[0])
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["tables"] = {t: {"postgres": {"dsn_env": DSN_ENV}, "schema": "public", "table": t} for t in TABLE_NAMES}
    config["limits"] = {"query_ms": QUERY_MS}
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    coordinator = yaml.safe_load(layout.coordinator_config.read_text(encoding="utf-8"))
    coordinator["deadline_ms"] = DEADLINE_MS
    layout.coordinator_config.write_text(yaml.safe_dump(coordinator, sort_keys=False), encoding="utf-8")
    policy = use_policy_extending_default(
        layout, "postgres-bench.yaml", "postgres bench: one region alone, rate limit raised", POLICY_OVERRIDES
    )
    doc = yaml.safe_load(policy.read_text(encoding="utf-8"))
    doc["secure_aggregation"] = SECURE_AGGREGATION
    policy.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return {
        "node_limits_query_ms": QUERY_MS,
        "coordinator_deadline_ms": DEADLINE_MS,
        "policy": str(policy),
        "policy_roles": POLICY_OVERRIDES,
        "policy_secure_aggregation": SECURE_AGGREGATION,
    }


class Direct:
    """The node query over one warm connection with the node's session settings: the database's own time."""

    def __init__(self, dsn: str, catalog: Catalog) -> None:
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._conn.adapters.register_loader("numeric", NumericAsDuckDB)
        for name in TABLE_NAMES:
            source = PostgresTable.model_validate({"postgres": {"dsn_env": DSN_ENV}, "table": name})
            self._conn.execute(pg_schema.view_sql(name, source, catalog.tables[name]))
        self._conn.execute(f"SET work_mem = '{work_mem_kb(DEFAULT_MEMORY)}kB'")
        self._conn.execute("SET search_path = pg_catalog")

    def run(self, node_sql: str) -> float:
        t = time.perf_counter()
        self._conn.execute(node_sql.encode()).fetchall()
        return (time.perf_counter() - t) * 1e3

    def answer(self, federated_sql: str) -> list[tuple[Any, ...]]:
        """PostgreSQL's own answer of the federated SQL over the loaded table (not through the views)."""
        self._conn.execute("SET search_path = public")
        try:
            return [tuple(r) for r in self._conn.execute(federated_sql.encode()).fetchall()]
        finally:
            self._conn.execute("SET search_path = pg_catalog")

    def settings(self) -> dict[str, str]:
        names = ("server_version", "max_parallel_workers_per_gather", "shared_buffers", "work_mem", "jit")
        shown = {}
        for n in names:
            row = self._conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()
            shown[n] = str(row[0]) if row else "?"
        return shown

    def close(self) -> None:
        self._conn.close()


def equal_rows(got: Sequence[Sequence[Any]], want: Sequence[Sequence[Any]]) -> bool:
    """Year, count and sum exactly; the average within 1e-9 of its value."""
    return len(got) == len(want) and all(
        int(g[0]) == int(w[0])
        and g[1] == w[1]
        and g[2] == w[2]
        and abs(float(g[3]) - float(w[3])) <= 1e-9 * abs(float(w[3]))
        for g, w in zip(got, want, strict=True)
    )


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    read = [v for v in values if v is not None]
    if not read or len(read) != len(values):
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(read), 2), "min": round(min(read), 2), "max": round(max(read), 2)}


class Timed(Protocol):
    """The same node query run directly on the engine, timed in ms (Direct here, and spark_bench's)."""

    def run(self, node_sql: str) -> float: ...


def measure(
    layout: DemoLayout, direct: Timed, node_sql: str, repeat: int, say: Say, start_s: float = 60.0
) -> tuple[list[QueryAnswer], list[float]]:
    """The node's answers and the direct times, in turn (the first of each pair alternating)."""
    answers: list[QueryAnswer] = []
    direct_ms: list[float] = []
    with running_parties(layout, say, start_s), FederationClient(load_profile(layout.profile_of(PERSON))) as client:
        for _ in range(2):  # warm: keys, plan caches, the pool's connections, the table's pages
            client.query(QUERY, purpose=PURPOSE)
            direct.run(node_sql)
        steps = [
            lambda: answers.append(client.query(QUERY, purpose=PURPOSE)),
            lambda: direct_ms.append(direct.run(node_sql)),
        ]
        for i in range(repeat):
            for j in range(2):
                steps[(i + j) % 2]()
            total = answers[-1].timings["total_ms"]
            say(f"run {i + 1}/{repeat}: direct {direct_ms[-1]:.0f} ms, client total {total:.0f} ms")
    return answers, direct_ms


def duckdb_answer(parquet: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(":memory:") as con:
        con.execute(f"CREATE VIEW deposits AS SELECT * FROM read_parquet('{parquet}')")
        return con.execute(QUERY).fetchall()


def node_figures(layout: DemoLayout, answers: list[QueryAnswer]) -> dict[str, list[float | None]]:
    """Per answer, the node's logged stages (None where a line was not read)."""
    stages = read_node_log(layout.log(layout.node_ids[0]))
    read = [stages.get(a.query_id[:12]) for a in answers]
    return {
        "handler": [r.handler_ms if r else None for r in read],
        "scan": [r.scan_ms if r else None for r in read],
        "encrypt": [r.encrypt_ms if r else None for r in read],
        "outside_scan": [r.handler_ms - r.scan_ms if r and r.handler_ms is not None else None for r in read],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--data", type=Path, default=Path("bench-data-pg"))
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    parser.add_argument("--database", default="hpf_bench_pg")
    parser.add_argument("--drop", action="store_true", help="drop the bench's database and exit")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    say: Say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if args.drop:
        drop_database(args.dsn, args.database)
        say(f"database {args.database}: dropped")
        return 0
    layout, data_s = prepared_layout(args.data, 1, args.rows, args.seed, say)
    load_s = ensure_database(args.dsn, args.database, layout, {"rows": args.rows, "seed": args.seed}, say)
    dsn = with_dbname(args.dsn, args.database)
    changed = point_node_at_postgres(layout, dsn)
    catalog = load_catalog(layout.catalog)
    with FederationClient(load_profile(layout.profile_of(PERSON))) as planner:
        node_sql = plan_node_sql(planner.plan(QUERY), catalog, "postgres")
    direct = Direct(dsn, catalog)
    try:
        settings = direct.settings()
        pg_rows = direct.answer(QUERY)
        answers, direct_ms = measure(layout, direct, node_sql, args.repeat, say)
    finally:
        direct.close()
    duck_rows = duckdb_answer(layout.data / layout.node_ids[0] / "deposits.parquet")
    node = node_figures(layout, answers)
    handler, direct_spread = spread(node["handler"]), spread(direct_ms)
    node_med, direct_med = handler["median"], direct_spread["median"]
    equal_duckdb = all(equal_rows(a.rows, duck_rows) and not a.missing for a in answers)
    equal_postgres = all(equal_rows(a.rows, pg_rows) for a in answers)
    result = {
        "query": QUERY,
        "node_sql_postgres": node_sql,
        "region": layout.node_ids[0],
        "rows": args.rows,
        "seed": args.seed,
        "repeat": args.repeat,
        "cpu_count": os.cpu_count(),
        "postgres": settings,
        "data_generated_s": round(data_s, 1),
        "database_loaded_s": round(load_s, 1) if load_s else "reused",
        "node_ms": handler,
        "node_scan_ms": spread(node["scan"]),
        "node_encrypt_ms": spread(node["encrypt"]),
        "node_outside_scan_ms": spread(node["outside_scan"]),  # per question: handler total minus its own scan
        "direct_ms": direct_spread,
        "client_total_ms": spread([a.timings["total_ms"] for a in answers]),
        "node_added_ms": None if node_med is None or direct_med is None else round(node_med - direct_med, 2),
        "target": TARGET,
        "target_ms": None if direct_med is None else round(1.2 * direct_med + 50, 2),
        "meets_target": None if node_med is None or direct_med is None else node_med <= 1.2 * direct_med + 50,
        "answers_equal_duckdb": equal_duckdb,
        "answers_equal_postgres": equal_postgres,
        "node_log": str(layout.log(layout.node_ids[0])),
        "raised_for_bench": changed,
        "code": code_version(),
    }
    print(json.dumps(result, indent=2, default=str))
    return 0 if equal_duckdb and equal_postgres else 1


if __name__ == "__main__":
    sys.exit(main())
