"""A node's tables in Spark: the partial plan runs on the cluster, and only its grouped result rows come back.

The node joins the Spark application its ``spark:`` settings name (``master``: ``local[*]`` in one process, or a
cluster) and keeps a session of its own (``newSession``: its temporary views and settings are its own, its
cluster is shared), with the settings the Spark column of the allow-list assumes
(:data:`federation.planner.spark_dialect.SPARK_SESSION_CONF`: ANSI arithmetic, UTC). Each catalog table is a
temporary view casting every column to its catalog type, over the table or files the node's config names; its
types are checked against the catalog at start by the files' rule (:mod:`node.backends.spark_schema`).

Each question runs as a job group of its own. At the node's time limit (``query_ms``, or less when the
coordinator's wait ends first), or when the coordinator abandons the question, the group is cancelled on the
cluster until none of its jobs runs, and the question gives the masked failure mark; a cluster that cannot run a
trivial query, or a table Spark cannot read, makes the region unwell (``NODE_UNWELL``, health NOT_SERVING)
until a probe finds it back. Spark's own error text never reaches the asker nor a log (its loggers are
silenced), which gets the error's class name alone.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hpf.federation.catalog import Catalog
from hpf.federation.engine import Abandon
from hpf.federation.errors import ConfigError, DataError, FederationError, UnavailableError
from hpf.federation.planner.spark_dialect import SPARK_SESSION_CONF
from hpf.federation.planner.spark_types import spark_value
from hpf.node.backends import spark_schema
from hpf.node.backends.unwell import require_sources, unwell
from hpf.node.config import SparkSettings, SparkTable
from hpf.node.lookup_index import as_columns

log = logging.getLogger("hpf.node.spark")
for _noisy in ("py4j", "pyspark", "SQLQueryContextLogger", "DataFrameQueryContextLogger"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL + 1)  # their messages carry the engine's words

FACTS_BATCH = 50_000  # people's facts gathered into NumPy columns at a time
CANCEL_EVERY_S = 0.2  # a cancelled question's job group is cancelled again this often until it has stopped
PROBE_SECONDS = 10.0  # a cluster that cannot run a job of one row within this is down
PROBE_EVERY_S = 5.0  # how often a well node probes its cluster
SESSION_CONF = SPARK_SESSION_CONF  # the settings the Spark column of the allow-list is written for
_SESSION_LOCK = threading.Lock()


def require_pyspark() -> None:
    """``NODE_SPARK_MISSING`` unless Spark's Python library can be imported."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the node's tables are on Spark, and pyspark is not installed",
            code="NODE_SPARK_MISSING",
            hint="install the node with Spark: pip install 'hpf-federation[spark]' (Java 17 or newer on the path)",
        ) from None


def spark_session(settings: SparkSettings) -> Any:
    """The process's Spark application (made on first use from ``settings``), with a session of the caller's."""
    require_pyspark()
    from pyspark.sql import SparkSession

    with _SESSION_LOCK:
        builder = SparkSession.builder.master(settings.master).appName(settings.app_name)
        quiet = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
        for key, value in {**quiet, **settings.conf}.items():
            builder = builder.config(key, value)
        base = builder.getOrCreate()
        base.sparkContext.setLogLevel("OFF")
    session = base.newSession()
    for key, value in SESSION_CONF.items():
        session.conf.set(key, value)
    return session


def _failure_name(err: BaseException) -> str:
    """What a log may say of Spark's error: its class (and Spark's error class, a fixed name), never its text."""
    condition = getattr(err, "getCondition", None) or getattr(err, "getErrorClass", None)
    try:
        named = condition() if callable(condition) else None
    except Exception:  # noqa: BLE001 - a failure to name the failure is no failure of the question
        named = None
    return f"{type(err).__name__}{f' {named}' if named else ''}"


class SparkBackend:
    """Runs a node's partial plan on Spark, over the tables or files ``sources`` names."""

    dialect = "spark"

    def __init__(
        self,
        catalog: Catalog,
        sources: dict[str, SparkTable],
        settings: SparkSettings,
        *,
        query_seconds: float | None = None,
        scans: int | None = None,
    ) -> None:
        require_sources(catalog.tables, sources, lambda name: f"{name}: {{spark: {{table: ...}}}}")
        self._catalog, self._sources = catalog, sources
        self.query_seconds = query_seconds
        self._scans = threading.BoundedSemaphore(scans) if scans else None
        self.limit_hits = 0  # questions cancelled at the node's own time limit
        self.busy_refusals = 0
        self._listeners: list[Callable[[DataError | None], None]] = []
        self._checking = threading.Lock()
        self._settings = settings
        self._verified: dict[str, dict[str, str]] = {}  # table: the Spark types its view was made for
        self._probed_at = time.monotonic()
        self._spark: Any = None  # made by the first probe that can (a cluster out of reach: later)
        self._refusal = self._first_probe(settings.start_wait_s)
        if self._refusal is not None and self._refusal.code != "NODE_DATABASE_UNREACHABLE":
            raise self._refusal  # tables Spark cannot read, or that do not fit the catalog: refused at start
        if self._refusal is not None:
            log.error("the node's Spark cannot run a job at start: the node is unwell until it can")

    # -- the tables and the node's health

    def _first_probe(self, seconds: float) -> DataError | None:
        """The first probe, waited for ``seconds``: a cluster that does not take the node's application in that
        time (one out of reach takes a minute to say so) leaves the node serving as unwell meanwhile."""
        verdicts: list[DataError | None] = []

        def probe() -> None:
            with self._checking:
                verdicts.append(self._probe())

        first = threading.Thread(target=probe, name="hpf-node-spark-start", daemon=True)
        first.start()
        first.join(seconds)
        if not verdicts:
            log.warning("the node's Spark did not run a job within %.0f s of the start", seconds)
            return DataError(
                "the node's Spark cannot run a job", code="NODE_DATABASE_UNREACHABLE", hint="see the node's log"
            )
        return verdicts[0]

    def _source_sql(self, name: str) -> str:
        """The relation a table's view reads: a table of Spark's catalog, or files (a view of the reader)."""
        source = self._sources[name].spark
        if source.table is not None:
            return ".".join(spark_schema.quoted(part) for part in source.table.split("."))
        raw = f"__hpf_source_{name}"
        reader = self._spark.read.format(source.format)
        if source.format == "csv":
            reader = reader.option("header", "true")
        reader.load(source.path).createOrReplaceTempView(raw)
        return spark_schema.quoted(raw)

    def _open(self) -> None:
        """A view per catalog table, whose Spark types must fit the catalog. The values of narrowed columns are
        read, and the views made, only when a table's types changed since the last look (or the application is
        new): a look at unchanged tables reads their schemas alone."""
        for name, table in self._catalog.tables.items():
            source = self._source_sql(name)
            fields = self._spark.sql(f"SELECT * FROM {source} LIMIT 0").schema.fields
            described = {f.name: spark_schema.catalog_type(f.dataType.simpleString()) for f in fields}
            if self._verified.get(name) == described:
                continue
            checked = spark_schema.narrowed(name, described, table)
            if checked:
                spark_schema.check_values(self._rows, name, source, checked, table)
            self._spark.sql(spark_schema.view_sql(name, source, table))
            self._verified[name] = described

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` with DuckDB's values for them (:func:`spark_value`: a DECIMAL of scale 0 an int)."""
        return [tuple(spark_value(v) for v in row) for row in self._spark.sql(sql).collect()]

    def _probe(self) -> DataError | None:
        """Run a job of one row on the cluster within ``PROBE_SECONDS`` (a new application first if the node's
        has stopped), then open every table again: None when all is well, else why not."""
        try:
            if self._spark is None or self._spark.sparkContext._jsc.sc().isStopped():
                self._spark, self._verified = None, {}
                self._spark = spark_session(self._settings)
            if not self._within(PROBE_SECONDS, lambda: self._spark.range(0, 1, 1, 1).count()):
                raise TimeoutError("the probe's job did not run in time")
        except ConfigError:
            raise  # no pyspark: no probe will find it
        except Exception as err:  # noqa: BLE001 - whatever Spark raises, the cluster cannot run a question
            log.warning("Spark cannot run a job (%s)", _failure_name(err))
            return DataError(
                "the node's Spark cannot run a job",
                code="NODE_DATABASE_UNREACHABLE",
                hint="the region's operator must bring the cluster back; the node serves it again once it can",
            )
        try:
            self._open()
        except DataError as refused:
            return refused
        except Exception as err:  # noqa: BLE001 - a table Spark cannot read
            log.warning("Spark cannot read the node's tables (%s)", _failure_name(err))
            return DataError(
                "Spark cannot read a table the node config names",
                code="NODE_TABLE_UNREADABLE",
                hint="check the node config's spark tables and paths, and that the cluster may read them",
            )
        return None

    def _within(self, seconds: float, job: Callable[[], object]) -> bool:
        """Run ``job`` as a job group of its own, cancelled after ``seconds``: whether it ended in time."""
        context, group, done = self._spark.sparkContext, f"hpf-probe-{uuid.uuid4().hex}", threading.Event()
        timer = threading.Timer(seconds, lambda: self._cancel_until_done(group, done))
        context.setJobGroup(group, "hpf probe", interruptOnCancel=True)
        timer.start()
        try:
            job()
            return True
        except Exception:  # noqa: BLE001 - cancelled, or failed: either way not in time
            if timer.is_alive():
                raise
            return False
        finally:
            done.set()
            timer.cancel()
            context.setLocalProperty("spark.jobGroup.id", None)

    def on_checked(self, listener: Callable[[DataError | None], None]) -> None:
        """Call ``listener`` with the result of every probe (the node's health follows it)."""
        self._listeners.append(listener)

    def check_sources(self, *, direct: bool = False) -> DataError | None:
        """Probe the cluster and the tables. The node's health watch calls this every second, and it probes every
        ``PROBE_EVERY_S`` (at once while unwell, or ``direct``: after a question failed)."""
        with self._checking:
            due = self._probed_at + PROBE_EVERY_S
            if not direct and self._refusal is None and time.monotonic() < due:
                return None
            refusal = self._probe()
            self._probed_at = time.monotonic()
            if refusal is None and self._refusal is not None:
                log.warning("the node's Spark can be used again: the node serves it")
            elif refusal is not None and (self._refusal is None or self._refusal.code != refusal.code):
                log.error("the node's Spark cannot be served: %s", refusal.code)
            self._refusal = refusal
            for listener in self._listeners:
                listener(refusal)
            return refusal

    def _refuse_if_unwell(self) -> None:
        refused = self._refusal
        if refused is not None:
            raise unwell(
                refused,
                "Spark",
                "cannot be used" if refused.code == "NODE_DATABASE_UNREACHABLE" else "tables do not fit the catalog",
                "the region's operator must restore the cluster or its tables; the node serves it again once it can",
            )

    # -- questions

    def run(
        self, sql: str, on_abandon: Abandon | None = None, finish_by: float | None = None
    ) -> Sequence[tuple[Any, ...]]:
        """Run the node query of a plan (Spark SQL) within the node's own time limit, as
        :meth:`DuckDBBackend.run` does: whatever happens to the question once it runs is a DataError (the masked
        failure mark); only a cluster that cannot be used makes the region unwell."""
        self._refuse_if_unwell()
        if self._scans is not None and not self._scans.acquire(timeout=self._slot_wait(finish_by)):
            self.busy_refusals += 1
            log.warning("a question found no scan slot free in time; sending the failure mark")
            raise DataError("the node was too busy to run the partial plan in time", code="NODE_EXECUTION_FAILED")
        try:
            return self._run(sql, on_abandon, self._limit(finish_by))
        finally:
            if self._scans is not None:
                self._scans.release()

    def _slot_wait(self, finish_by: float | None) -> float:
        if finish_by is None:
            return 30.0
        return max(0.0, finish_by - time.monotonic() - (self.query_seconds or 0.0))

    def _limit(self, finish_by: float | None) -> float | None:
        if finish_by is None:
            return self.query_seconds
        left = max(0.001, finish_by - time.monotonic())
        return left if self.query_seconds is None else min(self.query_seconds, left)

    def _run(self, sql: str, on_abandon: Abandon | None, seconds: float | None) -> Sequence[tuple[Any, ...]]:
        context = self._spark.sparkContext
        group = f"hpf-{uuid.uuid4().hex}"
        done, abandoned, timed_out = threading.Event(), threading.Event(), threading.Event()

        def stop_it(reason: threading.Event) -> None:
            reason.set()
            threading.Thread(target=self._cancel_until_done, args=(group, done), daemon=True).start()

        if on_abandon is not None:
            on_abandon(lambda: None if done.is_set() else stop_it(abandoned))
        timer = threading.Timer(seconds, lambda: None if done.is_set() else stop_it(timed_out)) if seconds else None
        context.setJobGroup(group, "hpf partial answer", interruptOnCancel=True)
        try:
            if timer is not None:
                timer.start()
            return self._rows(sql)  # the plan's SQL, rendered for Spark
        except Exception as err:  # noqa: BLE001 - Spark's errors are Java exceptions of many kinds
            raise self._failure(err, abandoned, timed_out, seconds) from None
        finally:
            done.set()
            if timer is not None:
                timer.cancel()
            context.setLocalProperty("spark.jobGroup.id", None)

    def _cancel_until_done(self, group: str, done: threading.Event) -> None:
        """Cancel ``group`` until its question has stopped (a job the question starts after a cancel is cancelled
        by the next one)."""
        context = self._spark.sparkContext
        while not done.is_set():
            context.cancelJobGroup(group)
            done.wait(CANCEL_EVERY_S)

    def _failure(
        self, err: BaseException, abandoned: threading.Event, timed_out: threading.Event, seconds: float | None
    ) -> FederationError:
        if abandoned.is_set():
            log.warning("a question was abandoned by the coordinator; its jobs were cancelled")
        elif timed_out.is_set():
            self.limit_hits += 1
            log.warning(
                "a question ran past this node's time limit (%d ms); its jobs were cancelled", (seconds or 0) * 1e3
            )
        else:
            log.warning("the partial query failed in Spark (%s)", _failure_name(err))
            if self.check_sources(direct=True) is not None:
                try:
                    self._refuse_if_unwell()
                except UnavailableError as refused:
                    return refused
        return DataError("the node could not run the partial plan in Spark", code="NODE_EXECUTION_FAILED")

    # -- lookups

    def data_version(self) -> object:
        """The lookup facts are computed again on a schedule (rows change unseen); unwell refuses lookups."""
        self._refuse_if_unwell()
        return "spark"

    def columns(self, sql: str) -> dict[str, Any]:
        """Run the node's own SQL (the lookup facts, one row per person) and return its result as NumPy columns,
        read a partition at a time (never every person as Python tuples at once)."""
        self._refuse_if_unwell()
        parts: list[dict[str, Any]] = []
        try:
            frame = self._spark.sql(sql)
            names = frame.columns
            batch: list[tuple[Any, ...]] = []
            for row in frame.toLocalIterator(prefetchPartitions=False):
                batch.append(tuple(row))
                if len(batch) >= FACTS_BATCH:
                    parts.append(as_columns(names, batch))
                    batch = []
            parts.append(as_columns(names, batch))
        except Exception as err:  # noqa: BLE001 - Spark's errors are Java exceptions of many kinds
            raise self._failure(err, threading.Event(), threading.Event(), None) from None
        return {name: np.concatenate([part[name] for part in parts]) for name in names}

    def close(self) -> None:
        """The session's views go with it; the process's Spark application stays for others in the process."""
