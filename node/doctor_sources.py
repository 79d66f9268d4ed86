"""``hpf node doctor``'s check of the data sources: every catalog table's, by the checks the node's backend runs
at start (:mod:`node.backends.file_checks`, :mod:`node.backends.pg_schema`), each table on its own so that every
table's problem is listed, not the first one's.

No value, and no part of a database connection string, is in a finding: the backends' refusals name tables,
columns and types alone, and a database that cannot be reached is ``NODE_DATABASE_UNREACHABLE`` whatever the
driver said.
"""

from __future__ import annotations

from collections.abc import Callable

from hpf.federation.catalog import Catalog
from hpf.federation.errors import DataError, FederationError
from hpf.node.backends.unwell import require_sources
from hpf.node.config import NodeConfig
from hpf.node.doctor import Finding


def source_findings(config: NodeConfig, catalog: Catalog) -> list[Finding]:
    """Every catalog table's source: there, readable, and of the catalog's columns and types."""
    if config.on_postgres:
        return _postgres(config, catalog)
    if config.on_spark:
        return _spark(config, catalog)
    return _files(config, catalog)


def _missing(config: NodeConfig, catalog: Catalog, form: Callable[[str], str]) -> list[Finding]:
    """A finding for each catalog table the config gives no source (``NODE_TABLE_MISSING``)."""
    found: list[Finding] = []
    for name in catalog.tables:
        try:
            require_sources([name], config.tables, form)
        except DataError as err:
            found += Finding.of(err)
    return found


def _files(config: NodeConfig, catalog: Catalog) -> list[Finding]:
    import duckdb

    from hpf.federation.engine import locked_connection
    from hpf.node.backends import file_checks
    from hpf.node.backends.duckdb_backend import reader_sql

    findings = _missing(config, catalog, lambda name: f"{name}: path/to/{name}.parquet")
    sources = {n: s for n, s in config.on_files.items() if n in catalog.tables}
    con = locked_connection(
        readable=file_checks.folders(sources), memory_limit=config.limits.memory, threads=config.duckdb_threads
    )
    try:
        for name, source in sources.items():
            try:
                reader = reader_sql(source.path, source.file_format)
                file_checks.open_table(con, name, catalog.tables[name], source.path, reader)
            except DataError as err:
                findings += Finding.of(err)
            except duckdb.Error:  # out of the engine's memory: nothing said of the file
                findings.append(
                    Finding(
                        "problem",
                        "NODE_TABLE_UNREADABLE",
                        f"table {name!r}: {source.path} cannot be checked within the node's memory limit",
                        "raise 'limits.memory' in the node configuration",
                    )
                )
    finally:
        con.close()
    return findings


def _postgres(config: NodeConfig, catalog: Catalog) -> list[Finding]:
    import psycopg

    from hpf.node.backends import pg_schema
    from hpf.node.backends.pg_session import pin, unreachable
    from hpf.node.backends.postgres_backend import CONNECT_TIMEOUT_S

    findings = _missing(config, catalog, lambda name: f"{name}: {{postgres: ..., schema: ..., table: ...}}")
    sources = {n: s for n, s in config.on_postgres.items() if n in catalog.tables}
    dsns: set[str] = set()
    for where in {s.postgres.model_dump_json(): s.postgres for s in sources.values()}.values():
        try:
            dsns.add(where.read())
        except FederationError as err:
            findings += Finding.of(err)
    if len(dsns) != 1:
        if len(dsns) > 1:
            findings.append(
                Finding(
                    "problem",
                    "NODE_TABLE_UNREADABLE",
                    "the node's tables name more than one database; a question reads them through one connection",
                    "name the same connection string for every table",
                )
            )
        return findings
    try:
        with psycopg.connect(
            dsns.pop(), connect_timeout=CONNECT_TIMEOUT_S, application_name="hpf-node-doctor", autocommit=True
        ) as conn:
            pin(conn)
            conn.autocommit = False
            for name, source in sources.items():
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        pg_schema.check_table(cur, name, source, catalog.tables[name])
                except DataError as err:
                    findings += Finding.of(err)
    except DataError as err:  # the database's encoding
        findings += Finding.of(err)
    except psycopg.Error:  # its words may name the server, the user, the password: none of them is shown
        findings += Finding.of(unreachable())
    return findings


def _spark(config: NodeConfig, catalog: Catalog) -> list[Finding]:
    findings = _missing(config, catalog, lambda name: f"{name}: {{spark: {{table: ...}}}}")
    from hpf.node.backends.spark_backend import require_pyspark

    try:
        require_pyspark()
    except FederationError as err:
        return findings + Finding.of(err)
    findings.append(
        Finding("note", None, "sources: the node's tables are on Spark: the node checks them when it starts")
    )
    return findings
