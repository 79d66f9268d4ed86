"""The demo's regions on PostgreSQL: `hpf demo --backends duckdb,postgres`.

Regions take the backends round-robin (region i on ``backends[i % len(backends)]``). The demo makes a database
of its own on the server ``--postgres`` reaches (one per data directory, dropped and made again at every start,
dropped when the demo stops) and copies each PostgreSQL region's generated Parquet files into a schema named as
the region, one table per catalog table, every column of its catalog type (BIGINT stays ``bigint``, DATE
``date``, VARCHAR ``text``, DECIMAL(p,s) ``numeric(p,s)``). The files stay where they are: the oracle is still
DuckDB over every region's files, pooled. The region's node reads the connection string from a file of mode
0600 its config names; the string never appears in a config, a log line or an error (it may hold a password).

>>> parse_backends("duckdb, postgres")
('duckdb', 'postgres')
>>> from hpf.demo.launcher import layout_for
>>> layout_for(Path("demo-data"), 3, ("duckdb", "postgres")).backends
{'shanghai': 'duckdb', 'hangzhou': 'postgres', 'nanjing': 'duckdb'}
>>> demo_database(Path("/tmp/demo-data"))
'hpf_demo_2cacbbcbea'
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from hpf.demo.launcher import DemoLayout, Progress
from hpf.federation.errors import ConfigError, UnavailableError
from hpf.federation.hpf_schema import TABLE_NAMES, column_types
from hpf.node.backends.pg_schema import cast_type

BACKENDS: tuple[str, ...] = ("duckdb", "postgres", "spark")
POSTGRES_ENV = "HPF_DEMO_POSTGRES"
DEFAULT_POSTGRES = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
CONNECT_TIMEOUT_S = 5
COPY_CHUNK = 1 << 20  # bytes of CSV per write to COPY


def parse_backends(text: str) -> tuple[str, ...]:
    """The ``--backends`` list: names from BACKENDS, comma-separated, at least one (``DEMO_ARGS`` otherwise)."""
    names = tuple(n.strip().lower() for n in text.split(","))
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        shown = ", ".join(repr(n) for n in unknown) or "nothing"
        raise ConfigError(
            f"--backends takes a comma-separated list of {', '.join(BACKENDS)}, not {shown}",
            code="DEMO_ARGS",
            hint="e.g. --backends duckdb,postgres (regions take them in turn)",
        )
    return names


def postgres_dsn(option: str | None) -> str:
    """The admin connection string: ``--postgres``, else the environment's HPF_DEMO_POSTGRES, else the local
    server as user postgres."""
    return option or os.environ.get(POSTGRES_ENV, "").strip() or DEFAULT_POSTGRES


def demo_database(data: Path) -> str:
    """The name of the demo's database for the data directory ``data`` (so two demos never share one)."""
    return "hpf_demo_" + hashlib.sha256(str(data).encode()).hexdigest()[:10]


def backend_lines(layout: DemoLayout) -> list[str]:
    """What the demo prints of where each region's tables are."""
    lines = []
    for node_id in layout.node_ids:
        if layout.backend(node_id) == "postgres":
            where = f"PostgreSQL, schema {node_id} of the database {demo_database(layout.data)}"
        elif layout.backend(node_id) == "spark":
            where = f"Spark (local mode, in the node's process) over its Parquet files in {layout.data / node_id}"
        else:
            where = f"DuckDB over its Parquet files in {layout.data / node_id}"
        lines.append(f"region {node_id}: {where}")
    return lines


def _with_database(admin_dsn: str, dbname: str) -> str:
    try:
        params = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    except psycopg.Error:
        raise ConfigError(
            f"--postgres (or {POSTGRES_ENV}) is not a PostgreSQL connection string",
            code="DEMO_ARGS",
            hint="e.g. 'host=127.0.0.1 port=5432 user=postgres dbname=postgres' or postgresql://user@host/db",
        ) from None
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


@contextlib.contextmanager
def _connected(dsn: str, what: str) -> Iterator[psycopg.Connection]:
    """A connection (autocommit) to ``dsn``; the server out of reach or refusing is ``DEMO_POSTGRES_UNREACHABLE``,
    its words and the connection string never shown."""
    try:
        con = psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error:
        raise UnavailableError(
            f"the demo cannot connect to PostgreSQL ({what}): the server is not running there, or refused the "
            "connection",
            code="DEMO_POSTGRES_UNREACHABLE",
            hint=f"start PostgreSQL, or pass --postgres (or set {POSTGRES_ENV}) with a connection string to a "
            "server where that user may create a database",
        ) from None
    with con:
        yield con


def _refused(step: str) -> ConfigError:
    return ConfigError(
        f"PostgreSQL refused the demo {step}",
        code="DEMO_POSTGRES_REFUSED",
        hint="the user --postgres names needs to create databases (CREATEDB), or pass --postgres with one who may",
    )


def drop_demo_database(admin_dsn: str, data: Path) -> None:
    """Drop the demo's database of ``data`` if it is there (its connections are ended first)."""
    name = demo_database(data)
    with _connected(_with_database(admin_dsn, _admin_db(admin_dsn)), "to drop its database") as admin:
        try:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error:
            raise _refused(f"dropping its database {name}") from None


def _admin_db(admin_dsn: str) -> str:
    try:
        return str(psycopg.conninfo.conninfo_to_dict(admin_dsn).get("dbname") or "postgres")
    except psycopg.Error:
        return "postgres"


def make_database(layout: DemoLayout, admin_dsn: str, progress: Progress) -> None:
    """Make the demo's database of ``layout.data`` afresh (dropping one a former run left), and write its
    connection string to ``layout.dsn_file`` (mode 0600) for the PostgreSQL regions' nodes."""
    name = demo_database(layout.data)
    dsn = _with_database(admin_dsn, name)
    with _connected(admin_dsn, "to make its database") as admin:
        try:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error:
            raise _refused(f"making its database {name}") from None
    _write_dsn(layout.dsn_file, dsn)
    progress(f"PostgreSQL: made the database {name}")


def load_regions(layout: DemoLayout, progress: Progress) -> None:
    """Copy every PostgreSQL region's generated files into its schema of the demo's database."""
    dsn = layout.dsn_file.read_text(encoding="utf-8").strip()
    with _connected(dsn, "to its database") as con, duckdb.connect(":memory:") as duck:
        for region in (n for n in layout.node_ids if layout.backend(n) == "postgres"):
            started = time.perf_counter()
            copied = sum(_copy_table(layout, region, table, con, duck) for table in TABLE_NAMES)
            progress(
                f"PostgreSQL: copied {copied:,} rows of {region} into schema {region} "
                f"in {time.perf_counter() - started:.1f}s"
            )


def _copy_table(
    layout: DemoLayout, region: str, table: str, con: psycopg.Connection, duck: duckdb.DuckDBPyConnection
) -> int:
    """Create ``region.table`` with the catalog's column types and copy the region's file into it; its rows."""
    types = column_types(table)
    target = sql.Identifier(region, table)
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(cast_type(t))) for c, t in types.items()
    )
    select = ", ".join(f'CAST("{c}" AS {t})' for c, t in types.items())
    (parquet,) = layout.files(table, region)
    try:
        with con.transaction():
            con.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(region)))
            con.execute(sql.SQL("CREATE TABLE {} ({})").format(target, columns))
            with tempfile.TemporaryDirectory(dir=layout.data) as tmp:
                csv = Path(tmp) / f"{table}.csv"
                query = f"SELECT {select} FROM read_parquet({_quoted(parquet)})"
                duck.execute(f"COPY ({query}) TO {_quoted(str(csv))} (HEADER false)")
                copy_sql = sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(target)
                with con.cursor().copy(copy_sql) as copy, csv.open("rb") as fh:
                    while chunk := fh.read(COPY_CHUNK):
                        copy.write(chunk)
            row = con.execute(sql.SQL("SELECT COUNT(*) FROM {}").format(target)).fetchone()
    except psycopg.Error:
        raise _refused(f"loading the table {table} of {region}") from None
    return int(row[0]) if row else 0


def _quoted(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def _write_dsn(path: Path, dsn: str) -> None:
    """The connection string in a file only its owner may read or write (made so before it is written)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(dsn + "\n")
