"""A node's tables in PostgreSQL: the partial plan runs there, and only its grouped result rows come back.

Connections come from a pool (psycopg 3, ``psycopg_pool``), whose first connection is made before the node
serves a question (at start, and again when the database is back), and which a question waits for at least a
short floor even when its wait leaves nothing beyond the node's time limit. Each new connection makes a
temporary view per catalog table, named as the catalog names it and casting every column to its catalog type
(:func:`pg_schema.view_sql`); PostgreSQL looks a table name up in the session's temporary schema first, so the
plan's SQL runs with the catalog's table names unchanged, and ``search_path`` is set to ``pg_catalog`` alone so
no other schema's objects are found. Each question runs in a READ ONLY transaction with ``statement_timeout``
(the node's ``query_ms``, or less when the coordinator's wait ends first) and ``work_mem`` (the node's memory
limit) set for that transaction alone; a question abandoned by the coordinator is cancelled in the database.

Faults, as for files (:mod:`node.backends.duckdb_backend`): a question that fails in the database after it
began (the time limit, a value out of range, out of memory) gives the masked failure mark; a database that is
down or refuses the node's credentials makes the region unwell (``NODE_UNWELL``, health NOT_SERVING) until a
probe finds it back. The database's error text never reaches the asker nor a log, which gets the SQLSTATE
class alone; nor does the connection string (its password).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from hpf.federation.catalog import Catalog
from hpf.federation.engine import DEFAULT_MEMORY, Abandon
from hpf.federation.errors import DataError, FederationError, UnavailableError
from hpf.node.backends import pg_schema
from hpf.node.backends.pg_session import (
    NumericAsDuckDB,
    Question,
    pin,
    read_facts,
    sqlstate_class,
    unreachable,
    work_mem_kb,
)
from hpf.node.backends.unwell import require_sources, unwell
from hpf.node.config import PostgresTable

log = logging.getLogger("hpf.node.postgres")
# the pool logs a failed connection's text (server, user, the server's words): none of it goes to a log
logging.getLogger("psycopg").setLevel(logging.CRITICAL + 1)

CONNECT_TIMEOUT_S = 3  # a database that does not answer a connection within this is down
PROBE_WAIT_S = 2.0  # how long a probe of a healthy database waits for a pooled connection
POOL_SLICE_S = 1.0  # a question waiting for a pooled connection probes the database this often
FACTS_SECONDS = 600.0  # each step of the lookup facts' computation (every person's, one statement) ends within this
POOL_WAIT_FACTS_S = 30.0  # and start within this
FACTS_BATCH = 50_000  # people's facts read from the database at a time
POOL_READY_S = 2.0 * CONNECT_TIMEOUT_S  # how long a new pool may take to make its first connection (and views)
POOL_FLOOR_S = 0.5  # the least a question waits for a pooled connection, within the time it has left
HUNG_GRACE_S = 3.0  # past its limit, a question waits this long for a database whose statement_timeout cannot fire
PROBE_LIMIT_S = 2.0 * CONNECT_TIMEOUT_S + 2.0  # a probe the database has not answered within this finds it down


class PostgresBackend:
    """Runs a node's partial plan in PostgreSQL, over the tables ``sources`` names."""

    dialect = "postgres"

    def __init__(
        self,
        catalog: Catalog,
        sources: dict[str, PostgresTable],
        *,
        memory_limit: str = DEFAULT_MEMORY,
        query_seconds: float | None = None,
        scans: int | None = None,
    ) -> None:
        require_sources(catalog.tables, sources, lambda name: f"{name}: {{postgres: ..., schema: ..., table: ...}}")
        dsns = {source.postgres.read() for source in sources.values()}
        if len(dsns) != 1:
            raise DataError(
                "the node's tables name more than one database; a question reads them through one connection",
                code="NODE_TABLE_UNREADABLE",
                hint="name the same connection string for every table",
            )
        self._dsn = dsns.pop()
        self._catalog = catalog
        self._sources = sources
        self.query_seconds = query_seconds
        self._work_mem_kb = work_mem_kb(memory_limit)
        self._max_size = scans or 8
        self.limit_hits = 0  # questions cancelled at the node's own time limit
        self.busy_refusals = 0  # questions that found no connection free in time
        self._listeners: list[Callable[[DataError | None], None]] = []
        self._checking = threading.Lock()
        self._verified: dict[str, dict[str, str]] = {}
        self._probing: threading.Thread | None = None  # table: the database types whose values were last checked
        self._refusal = self._probe(direct=True)
        if self._refusal is not None and self._refusal.code != "NODE_DATABASE_UNREACHABLE":
            raise self._refusal  # tables that do not fit the catalog: refused at start, as files are
        if self._refusal is not None:
            log.error("the node's database cannot be reached at start: the node is unwell until it can")
        self._pool = self._new_pool()
        if self._refusal is None:
            self._refusal = self._warm_up(self._pool)

    def _new_pool(self) -> ConnectionPool:
        pool = ConnectionPool(
            self._dsn,
            min_size=1,
            max_size=self._max_size,
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "hpf-node"},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            reconnect_timeout=30.0,
            open=False,
        )
        pool.open(wait=False)
        return pool

    def _warm_up(self, pool: ConnectionPool) -> DataError | None:
        """Wait for ``pool``'s first connection, so that a question the node admits right after start (or after
        the database is back) finds one ready, however little of its wait is left for the pool. A pool that makes
        none within :data:`POOL_READY_S` is closed, and the database taken as unreachable until a probe finds
        it back (a new pool then)."""
        try:
            pool.wait(timeout=POOL_READY_S)
            return None
        except PoolTimeout:
            log.error("the node's database took no connection of its pool in time: the node is unwell until it does")
            return unreachable()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """A new connection: NUMERIC read as DuckDB gives the same values, the catalog's tables as temporary views
        of this session, then read-only."""
        conn.adapters.register_loader("numeric", NumericAsDuckDB)
        conn.autocommit = True
        pin(conn)  # before anything is read: the session settings the node's SQL is written for
        for name, source in self._sources.items():
            conn.execute(pg_schema.view_sql(name, source, self._catalog.tables[name]))
        conn.autocommit = False
        conn.read_only = True

    def on_checked(self, listener: Callable[[DataError | None], None]) -> None:
        """Call ``listener`` with the result of every probe of the database (the node's health follows it)."""
        self._listeners.append(listener)

    def check_sources(self, *, direct: bool = False) -> DataError | None:
        """Probe the database: reachable with the node's credentials, every table there and fitting the catalog
        (the values of a narrowed column are read again only when the database's types changed). The node's
        health watch calls this between questions, so a database that went down or came back is seen without
        one; a question that fails in the database calls it at once, ``direct``: over a new connection (a pooled
        one may outlive, for a moment, a server going down)."""
        with self._checking:
            refusal = self._probe(direct=direct or self._refusal is not None)
            if refusal is None and self._refusal is not None:
                old, self._pool = self._pool, self._new_pool()  # its connections are dead: fresh ones
                old.close(timeout=0)
                refusal = self._warm_up(self._pool)
                if refusal is None:
                    log.warning("the node's database can be used again: the node serves it")
            elif refusal is not None and (self._refusal is None or self._refusal.code != refusal.code):
                log.error("the node's database cannot be served: %s", refusal.code)
            self._refusal = refusal
            for listener in self._listeners:
                listener(refusal)
            return refusal

    def _probe(self, *, direct: bool) -> DataError | None:
        """:meth:`_probe_now` in a thread of its own, waited for ``PROBE_LIMIT_S``: a database that hangs (up, but
        not answering) is found unusable, not waited for; while one probe still waits, the next finds it so too."""
        if self._probing is not None and self._probing.is_alive():
            return unreachable()
        verdicts: list[DataError | None] = []
        self._probing = threading.Thread(
            target=lambda: verdicts.append(self._probe_now(direct=direct)), name="hpf-node-postgres-probe", daemon=True
        )
        self._probing.start()
        self._probing.join(PROBE_LIMIT_S)
        if not verdicts:
            log.warning("the node's database did not answer a probe within %.0f s", PROBE_LIMIT_S)
            return unreachable()
        return verdicts[0]

    def _probe_now(self, *, direct: bool) -> DataError | None:
        """Check the tables over a pooled connection, or (``direct``: at start, or while unwell) over a connection
        of the probe's own, so neither the pool's waits between its attempts nor its connections' views, which
        a missing table makes fail, stand in the way of the verdict."""
        try:
            if not direct:
                with self._pool.connection(timeout=PROBE_WAIT_S) as conn:
                    return self._check_tables(conn)
            with psycopg.connect(
                self._dsn, connect_timeout=CONNECT_TIMEOUT_S, application_name="hpf-node", autocommit=True
            ) as conn:
                pin(conn)
                conn.autocommit = False
                return self._check_tables(conn)
        except DataError as refused:  # a database the node cannot answer exactly from (its encoding)
            return refused
        except (psycopg.Error, PoolTimeout) as err:
            log.warning("the node's database cannot be reached (SQLSTATE class %s)", sqlstate_class(err))
            return unreachable()

    def _check_tables(self, conn: psycopg.Connection[Any]) -> DataError | None:
        try:
            with conn.transaction(), conn.cursor() as cur:
                for name, source in self._sources.items():
                    verified = self._verified.get(name)
                    self._verified[name] = pg_schema.check_table(
                        cur, name, source, self._catalog.tables[name], verified
                    )
            return None
        except DataError as refused:
            return refused

    def _refuse_if_unwell(self) -> None:
        refused = self._refusal
        if refused is not None:
            why = "cannot be reached" if refused.code == "NODE_DATABASE_UNREACHABLE" else "does not fit the catalog"
            raise unwell(
                refused,
                "database",
                why,
                "the region's operator must restore its database; the node serves it again once it can",
            )

    def run(
        self, sql: str, on_abandon: Abandon | None = None, finish_by: float | None = None
    ) -> Sequence[tuple[Any, ...]]:
        """Run the node query of a plan (PostgreSQL SQL) within the node's own time limit, as
        :meth:`DuckDBBackend.run` does: whatever happens to the question once it runs is a DataError (the masked
        failure mark); only a database that cannot be reached or used makes the region unwell. The question runs
        in a thread of its own: a database that hangs (its statement_timeout cannot fire) is waited for only
        ``HUNG_GRACE_S`` past the limit, and the question's connection is closed once it answers at last."""
        self._refuse_if_unwell()
        wait, seconds = self._pool_wait(finish_by), self._limit(finish_by)
        question, done = Question(), threading.Event()
        rows: list[Sequence[tuple[Any, ...]]] = []
        errors: list[BaseException] = []
        if on_abandon is not None:
            on_abandon(question.cancel)

        def work() -> None:
            try:
                rows.append(self._run_pooled(sql, question, wait, seconds))
            except BaseException as err:  # noqa: BLE001 - handed to the asking thread as it is
                errors.append(err)
            finally:
                done.set()

        threading.Thread(target=work, name="hpf-node-postgres-question", daemon=True).start()
        if not done.wait(self._hung_after(finish_by, seconds)):
            question.drop()
            log.warning("the database did not answer a question in time; sending the failure mark")
            raise DataError("the node's database did not answer in time", code="NODE_EXECUTION_FAILED")
        if errors:
            raise errors[0]
        return rows[0]

    @staticmethod
    def _hung_after(finish_by: float | None, seconds: float | None) -> float | None:
        """How long a question waits for its thread: past the coordinator's wait (or the node's limit, without
        one) by ``HUNG_GRACE_S``, the database hangs."""
        if finish_by is not None:
            return max(0.0, finish_by - time.monotonic()) + HUNG_GRACE_S
        return None if seconds is None else seconds + HUNG_GRACE_S

    def _run_pooled(
        self, sql: str, question: Question, wait: float, seconds: float | None
    ) -> Sequence[tuple[Any, ...]]:
        try:
            with self._pooled(wait) as conn:
                return self._run(conn, sql, question, seconds)
        except PoolTimeout:
            self.busy_refusals += 1
            log.warning("a question found no database connection free in time; sending the failure mark")
            raise DataError(
                "the node was too busy to run the partial plan in time", code="NODE_EXECUTION_FAILED"
            ) from None

    def _pool_wait(self, finish_by: float | None) -> float:
        """How long a question may wait for a pooled connection: what its wait leaves beyond the node's own time
        limit, but never less than :data:`POOL_FLOOR_S` (a connection the pool is making, or checking, is
        ready in far less than the scan's limit), nor past ``finish_by``.

        >>> backend = PostgresBackend.__new__(PostgresBackend)
        >>> backend.query_seconds = 5.0
        >>> backend._pool_wait(None), backend._pool_wait(time.monotonic() + 5.0)  # a wait no longer than the limit
        (30.0, 0.5)
        """
        if finish_by is None:
            return 30.0
        left = max(0.0, finish_by - time.monotonic())
        return min(left, max(POOL_FLOOR_S, left - (self.query_seconds or 0.0)))

    @contextlib.contextmanager
    def _pooled(self, wait: float) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection within ``wait`` seconds (else PoolTimeout). Every second without one the database
        is probed: one that went down since the last probe refuses the question as the region's at once."""
        end = time.monotonic() + wait
        while True:
            try:
                conn = self._pool.getconn(timeout=max(0.0, min(POOL_SLICE_S, end - time.monotonic())))
                break
            except PoolTimeout:
                if self.check_sources(direct=True) is not None:
                    self._refuse_if_unwell()
                if time.monotonic() >= end:
                    raise
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    def _limit(self, finish_by: float | None) -> float | None:
        """The scan's time limit: the node's own, or less when the coordinator's wait ends before it."""
        if finish_by is None:
            return self.query_seconds
        left = max(0.001, finish_by - time.monotonic())
        return left if self.query_seconds is None else min(self.query_seconds, left)

    def _run(
        self, conn: psycopg.Connection[Any], sql: str, question: Question, seconds: float | None
    ) -> Sequence[tuple[Any, ...]]:
        timeout_ms = 0 if seconds is None else max(1, int(seconds * 1000))
        try:
            if not question.begin(conn):
                raise pg_errors.QueryCanceled()  # given up while it waited for a connection
            with conn.transaction():
                conn.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
                conn.execute(f"SET LOCAL work_mem = '{self._work_mem_kb}kB'")
                conn.execute("SET LOCAL search_path = pg_catalog")
                rows = conn.execute(sql.encode()).fetchall()  # the plan's SQL, rendered for PostgreSQL
            return rows
        except pg_errors.QueryCanceled:
            if question.cancelled:
                log.warning("a question was abandoned by the coordinator; its statement was cancelled")
            else:
                self.limit_hits += 1
                log.warning("a question ran past this node's time limit (%d ms); it was cancelled", timeout_ms)
            raise DataError(
                "the node stopped the partial plan at its own limit", code="NODE_EXECUTION_FAILED"
            ) from None
        except psycopg.Error as err:
            conn.close()  # the pool replaces it, with fresh views (a table re-created under it is seen again)
            raise self._failure(err) from None
        finally:
            if question.end():
                conn.close()  # a cancel sent to it must not reach the next question on it

    def _failure(self, err: psycopg.Error) -> FederationError:
        """The region's failure when the database cannot be used now (probed right then), else the question's."""
        log.warning("the partial query failed in the database (SQLSTATE class %s)", sqlstate_class(err))
        if self.check_sources(direct=True) is not None:
            try:
                self._refuse_if_unwell()
            except UnavailableError as refused:
                return refused
        return DataError("the node could not run the partial plan in its database", code="NODE_EXECUTION_FAILED")

    def data_version(self) -> object:
        """What the lookup index compares to know whether to compute the facts again: the database's types (rows
        change unseen, so the facts are computed again on a schedule, :mod:`node.lookup_refresh`). A region whose
        database cannot be served refuses lookups as it refuses questions (``NODE_UNWELL``)."""
        self._refuse_if_unwell()
        return tuple(sorted((name, tuple(types.items())) for name, types in self._verified.items()))

    def columns(self, sql: str) -> dict[str, Any]:
        """Run the node's own SQL (the lookup facts, one row per person) in a read-only transaction, each step
        within ``FACTS_SECONDS``, and return its result as NumPy columns, read ``FACTS_BATCH`` rows at a time
        through a cursor in the database (never every row as Python tuples at once). A failure is the region's:
        logged by SQLSTATE class, the database probed at once."""
        self._refuse_if_unwell()
        try:
            with self._pooled(POOL_WAIT_FACTS_S) as conn:
                return read_facts(conn, sql, self._work_mem_kb, FACTS_SECONDS, FACTS_BATCH)
        except PoolTimeout:
            raise DataError(
                "the node found no database connection free for its lookup facts", code="NODE_EXECUTION_FAILED"
            ) from None
        except psycopg.Error as err:
            raise self._failure(err) from None

    def close(self) -> None:
        self._pool.close()
