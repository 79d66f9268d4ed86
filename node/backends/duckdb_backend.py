"""The default backend: DuckDB over the region's own Parquet or CSV files.

Each catalog table becomes a view that casts every column to its catalog type, so a query binds the same
way here as in every other party's planner, and a file that does not fit the catalog is refused at start: a
column missing, or one whose values its catalog type cannot hold exactly (``type_check``; checked again
whenever the files change).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

from hpf.federation.catalog import Catalog
from hpf.federation.engine import (
    DEFAULT_MEMORY,
    Abandon,
    interrupting,
    locked_connection,
    runtime_failure,
)
from hpf.federation.errors import DataError, FederationError, UnavailableError
from hpf.node.backends import file_checks
from hpf.node.backends.unwell import require_sources, unwell
from hpf.node.config import TableSource

log = logging.getLogger("hpf.node.duckdb")
# the least time between two checks of unchanged files that failed questions force (a changed file is checked
# at once, whenever it changes)
FORCED_CHECK_INTERVAL_S = 30.0


def sql_string(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def reader_sql(path: Path, file_format: str) -> str:
    """The table function a node reads a source's files with (and `hpf init` reads their schemas with).

    >>> reader_sql(Path("/data/north/*.parquet"), "parquet"), reader_sql(Path("a.csv"), "csv")
    ("read_parquet('/data/north/*.parquet')", "read_csv('a.csv', header = true)")
    """
    if file_format == "parquet":
        return f"read_parquet({sql_string(str(path))})"
    return f"read_csv({sql_string(str(path))}, header = true)"


class DuckDBBackend:
    """Runs a node's partial plan on its local files."""

    dialect = "duckdb"  # the SQL dialect run() takes

    def __init__(
        self,
        catalog: Catalog,
        sources: dict[str, TableSource],
        threads: int | None = None,
        *,
        memory_limit: str = DEFAULT_MEMORY,
        query_seconds: float | None = None,
        scans: int | None = None,
    ) -> None:
        # the engine reads this region's data folders and nothing else, installs and loads nothing, and its
        # configuration is locked (federation.engine)
        self._con = locked_connection(readable=file_checks.folders(sources), memory_limit=memory_limit, threads=threads)
        self._lock = threading.Lock()
        self._limit_scans(query_seconds, scans)
        self._capping = threading.Lock()
        # (table, sql): (data version, table made for it, the one made before)
        self._capped: dict[tuple[str, str], tuple[object, str, str | None]] = {}
        self._made = 0
        self._watch_files(catalog, sources)
        self._open_tables(catalog, sources)

    def _limit_scans(self, query_seconds: float | None, scans: int | None) -> None:
        """The node's own time limit on a scan, and how many questions scan at once (None: any number)."""
        self.query_seconds = query_seconds
        self.limit_hits = 0  # questions interrupted at the node's own time limit (the log says which)
        # one past the scan slots waits for a slot only while it can still finish within its wait (see run)
        self._scans = threading.BoundedSemaphore(scans) if scans else None
        self.busy_refusals = 0  # questions that found no scan slot in time (answered with the failure mark)

    def _watch_files(self, catalog: Catalog, sources: dict[str, TableSource]) -> None:
        """What the checks of the files look at, and the version of the files as they are now."""
        self._paths = [str(s.path) for s in sources.values()]
        self._catalog = catalog
        self._readers: dict[str, str] = {}
        self._patterns: dict[str, str] = {}
        self._checking = threading.Lock()
        self._checks_begun = 0  # full checks begun: a failed question re-checks unless one began after it failed
        self._forced_at = -FORCED_CHECK_INTERVAL_S  # when a failed question last forced a check of unchanged files
        self._listeners: list[Callable[[DataError | None], None]] = []
        # the data version whose types were last checked, and the refusal it got (None: every column fits)
        self._checked: tuple[object, DataError | None] = (self.data_version(), None)

    def _open_tables(self, catalog: Catalog, sources: dict[str, TableSource]) -> None:
        """A view per catalog table over its source, whose files must fit the catalog (see :mod:`file_checks`)."""
        for name, table in catalog.tables.items():
            require_sources([name], sources, lambda missing: f"{missing}: path/to/{missing}.parquet")
            source = sources[name]
            reader = reader_sql(source.path, source.file_format)
            self._patterns[name] = str(source.path)
            file_checks.open_table(self._con, name, table, source.path, reader)
            self._readers[name] = reader

    def on_checked(self, listener: Callable[[DataError | None], None]) -> None:
        """Call ``listener`` with the result of every full check of the files (the node's health follows it)."""
        self._listeners.append(listener)

    def check_sources(self, *, failed_after: int | None = None) -> DataError | None:
        """Check the files again when they have changed since the last check; the refusal they got (None: they
        fit). The node's health watch calls this between questions, so a change is seen without one.

        Every column is checked against its catalog type (see type_check) and every value read once through the
        table's view, as a question reads it: a file truncated, emptied, garbled, or holding text that does not
        parse as its catalog type is refused, never blamed on a question. The files are checked once per change,
        not once per question; the log says which table (never a value). ``failed_after`` (a question failed in
        the engine; see :meth:`checks_begun`) checks them whatever their version says, unless a check began since:
        a file can break after the question's own look at it, or change without its version showing it."""
        with self._checking:
            version = self.data_version()
            # a check a failed question forces (the files' version unchanged) runs at most once a while: every
            # failing question would otherwise make the node read every value of every table again
            stale = (
                failed_after is not None
                and self._checks_begun <= failed_after
                and time.monotonic() - self._forced_at >= FORCED_CHECK_INTERVAL_S
            )
            if stale or self._checked[0] != version:
                if stale:
                    self._forced_at = time.monotonic()
                self._checks_begun += 1
                try:
                    refusal = self._check_all()
                except duckdb.OutOfMemoryException:  # busy, not broken: no verdict, the next look checks again
                    log.warning("checking the node's files ran out of memory; they are checked again at the next look")
                    return self._checked[1]
                if refusal is not None:
                    log.error("the node's files changed and cannot be served: %s", refusal)
                elif self._checked[1] is not None:
                    log.warning("the node's files fit the catalog again: the node serves them")
                self._checked = (version, refusal)
                for listener in self._listeners:
                    listener(refusal)
            return self._checked[1]

    @property
    def checks_begun(self) -> int:
        """How many full checks of the files have begun (for :meth:`check_sources`' ``failed_after``)."""
        return self._checks_begun

    def _check_all(self) -> DataError | None:
        """Every table's types and values, read as a question reads them (:func:`file_checks.check_tables`)."""
        with self._lock:
            cur = self._con.cursor()
        try:
            return file_checks.check_tables(cur, self._catalog, self._readers, self._patterns)
        finally:
            cur.close()

    def _types_still_fit(self) -> None:
        """A file replaced under the running node by one that cannot be read or does not fit the catalog makes the
        region unwell (reported missing, ``NODE_UNWELL``) until its files are good again."""
        self._refuse_if_unwell(self.check_sources())

    def _read_what_was_checked(self, looked_at: object) -> None:
        """After a question read the files: a file that changed since the question's look at them may have been
        read unchecked (e.g. values its catalog type rounds: a wrong answer, with no error), so the files are
        checked now, and a question that may have read a broken one is refused as the region's (NODE_UNWELL)."""
        if self.data_version() != looked_at:
            self._types_still_fit()

    @staticmethod
    def _refuse_if_unwell(refused: DataError | None) -> None:
        if refused is not None:
            why = "cannot be read" if refused.code == "NODE_TABLE_UNREADABLE" else "do not fit the catalog"
            restore = "the region's operator must restore its data files; the node serves them again once they fit"
            raise unwell(refused, "files", why, restore)

    def _engine_failure(self, err: duckdb.Error, begun: int, doing: str, done: str) -> FederationError:
        """What an engine failure on a question is: the region's, when its files cannot be read now (checked right
        then: one may have broken after the question's own look at it), else the question's (a masked failure)."""
        failure = runtime_failure(err)
        log.warning("%s failed: %s", doing, failure)
        try:
            self._refuse_if_unwell(self.check_sources(failed_after=begun))
        except UnavailableError as region_unwell:
            return region_unwell
        # the files were found sound: whatever failed (an I/O error too, e.g. spilling past the memory limit to a
        # temporary directory that cannot be written) happened to this question, and depends on its rows
        return DataError(f"the node could not {done}: {failure}", code="NODE_EXECUTION_FAILED")

    def run(
        self, sql: str, on_abandon: Abandon | None = None, finish_by: float | None = None
    ) -> Sequence[tuple[Any, ...]]:
        """Run the node query of a plan within the node's own time limit; engine errors come back value-free.

        Whatever happens to the question once it runs (a failure on a value, the time limit, the memory limit,
        the coordinator abandoning it) is a DataError: the asker gets a masked failure mark, on time, and no
        region is named for it. Only files that cannot be read make the region unwell (reported missing).

        ``finish_by`` (a ``time.monotonic()``) is when the scan must be over for the answer to reach the asker
        within the coordinator's wait. A question that finds every scan slot taken waits for one only while it
        could still run its whole limit before then, and a scan stops at ``finish_by`` if that comes before the
        limit: questions slow on the rows they look for, sent many at once, make a region answer failure marks
        on time, never miss the wait (which would name the region holding the rows as missing).
        """
        with self._scan_slot(finish_by) as seconds:
            return self._run(sql, on_abandon, seconds)

    @contextlib.contextmanager
    def _scan_slot(self, finish_by: float | None) -> Iterator[float | None]:
        """A scan slot, held while the scan runs; yields the scan's time limit (the node's, or less)."""
        limit = self.query_seconds
        if finish_by is not None:
            wait = finish_by - time.monotonic() - (limit or 0.0)
            if self._scans is not None and not self._scans.acquire(timeout=max(0.0, wait)):
                self.busy_refusals += 1
                log.warning("a question found no scan slot free in time; sending the failure mark")
                raise DataError("the node was too busy to run the partial plan in time", code="NODE_EXECUTION_FAILED")
            left = max(0.001, finish_by - time.monotonic())
            limit = left if limit is None else min(limit, left)
        elif self._scans is not None:
            self._scans.acquire()
        try:
            yield limit
        finally:
            if self._scans is not None:
                self._scans.release()

    def _run(self, sql: str, on_abandon: Abandon | None, seconds: float | None) -> Sequence[tuple[Any, ...]]:
        self._types_still_fit()
        looked_at = self._checked[0]
        begun = self.checks_begun
        with self._lock:
            cur = self._con.cursor()
        try:
            with interrupting(cur, seconds, on_abandon) as timed_out:
                try:
                    rows = cur.execute(sql).fetchall()
                    if timed_out():  # the engine checks for an interrupt between pieces of work: past the limit
                        raise duckdb.InterruptException("finished past the limit")  # is past it, however it ended
                    self._read_what_was_checked(looked_at)
                    return rows
                except duckdb.InterruptException:
                    if timed_out() and seconds == self.query_seconds:
                        self.limit_hits += 1
                        log.warning("a question ran past this node's time limit (%.0f ms)", (seconds or 0) * 1e3)
                    else:  # the coordinator gave it up, or its wait there ended before the node's own limit
                        log.warning("a question was abandoned by the coordinator; its scan was interrupted")
                    raise DataError(
                        "the node stopped the partial plan at its own limit", code="NODE_EXECUTION_FAILED"
                    ) from None
        except duckdb.Error as err:
            raise self._engine_failure(err, begun, "partial query", "run the partial plan") from None
        finally:
            cur.close()

    def capped_source(self, table: str, select_sql: str) -> str:
        """A FROM source (``"made" AS table``) holding the rows ``select_sql`` selects from ``table``: the rows a
        person may contribute under DP. Ranking a million rows takes about half a second, so it is done once per
        data version and kept in memory; the copy before the previous one is dropped then (the previous one is
        kept, so a question still reading it finishes). The version is read under the lock, so one change of the
        files makes one new copy however many questions arrive at once."""
        key = (table, select_sql)
        self._types_still_fit()
        begun = self.checks_begun
        with self._capping:
            version = self.data_version()
            held = self._capped.get(key)
            if held is None or held[0] != version:
                self._made += 1
                made = f"__dp_{table}_{self._made}"
                with self._lock:
                    cur = self._con.cursor()
                try:
                    cur.execute(f'CREATE TABLE "{made}" AS {select_sql}')
                    if held is not None and held[2] is not None:
                        cur.execute(f'DROP TABLE IF EXISTS "{held[2]}"')
                except duckdb.Error as err:
                    # its memory limit, during a question: a masked failure mark, like any other after admission
                    raise self._engine_failure(
                        err, begun, f"capping table {table}", "prepare the capped table"
                    ) from None
                finally:
                    cur.close()
                held = (version, made, None if held is None else held[1])
                self._capped[key] = held
                log.info("table %s capped for differential privacy (its data changed)", table)
        return f'"{held[1]}" AS "{table}"'

    def columns(self, sql: str) -> dict[str, Any]:
        """Run ``sql`` and return its result as NumPy columns (for results too large for tuples). Only the node's
        own SQL comes here (the lookup index), so a failure is the region's: its files are checked at once, so its
        health says so too."""
        self._types_still_fit()
        begun = self.checks_begun
        with self._lock:
            cur = self._con.cursor()
        try:
            return dict(cur.execute(sql).fetchnumpy())
        except duckdb.Error as err:
            failure = runtime_failure(err)
            log.warning("query failed: %s", failure)
            self._refuse_if_unwell(self.check_sources(failed_after=begun))
            raise UnavailableError(f"the node cannot read its tables: {failure}", code="NODE_UNWELL") from None
        finally:
            cur.close()

    def data_version(self) -> tuple[file_checks.FileVersion, ...]:
        """The version of the source files (:func:`file_checks.data_version`): changes when any is replaced or
        written."""
        return file_checks.data_version(self._paths)

    def close(self) -> None:
        self._con.close()
