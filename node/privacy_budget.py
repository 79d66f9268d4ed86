"""A node's privacy-budget ledger: how much epsilon and delta each identity has spent in the current period.

Each differentially private answer spends some of the asking identity's budget for the period (a calendar day,
week, month or year in UTC; a week starts on Monday). Once the next answer would exceed the period's budget the
node refuses with ``POLICY_PRIVACY_BUDGET`` and spends nothing; the budget renews when the next period begins.

Why a file, and why SQLite: a budget that a restart gives back is no budget, so every charge is committed and
fsynced before the answer leaves (WAL journal, ``synchronous=FULL``), and a crash right after a charge keeps
it. Each charge is one ``BEGIN IMMEDIATE`` transaction, so two threads, or two processes on the same
directory, cannot both pass the check against the same remainder.

Storage, in ``privacy-budget.sqlite3`` (mode 0600: identities are personal data): one row per (identity, period
kind, first day of the period) with the sums spent and the count of queries. Sums are integers, epsilon in
nano-epsilon (1e-9) and delta in atto-delta (1e-18), each amount converted through its shortest decimal form,
so ten charges of 0.1 are exactly 1.0 and never drift above it. The rounding to the unit is the only
tolerance: a charge that exceeds the budget by less than half a unit passes, and a delta below 5e-19 counts
as nothing. Rows of past periods are kept, not pruned: an auditor may ask what an identity spent, and a row
per identity per period is small.

A node restored from a backup (:mod:`node.backup`) cannot know what was spent on its lost host between the backup
and the restore: the ledger keeps each such gap and counts every period that overlaps one as spent in full, for every
identity, including identities it has never seen (:mod:`node.budget_gaps`).

An identity's name never appears in a message of this module (messages travel and are logged elsewhere).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Literal, get_args

from hpf.federation.errors import ConfigError, PolicyViolation
from hpf.federation.privacy.fixed_decimal import MAX_BUDGET_EPSILON
from hpf.node import budget_gaps

log = logging.getLogger("hpf.node.budget")

Period = Literal["day", "week", "month", "year"]
PERIODS: tuple[Period, ...] = get_args(Period)

PRIVACY_DIR = "privacy"  # the ledger's folder, under a node's state directory
LEDGER_FILE = "privacy-budget.sqlite3"
EPSILON_UNITS = 10**9  # the ledger counts nano-epsilon
DELTA_UNITS = 10**18  # and atto-delta
MAX_EPSILON = MAX_BUDGET_EPSILON  # a budget above this protects nothing, and its nano-epsilon sums stay in int64
BUSY_TIMEOUT_S = 30.0  # how long a charge waits for another process's transaction on the same file

_APPLICATION_ID = 0x48504642  # "HPFB": tells this ledger from any other SQLite file put at its path
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE spent (
    identity TEXT NOT NULL,
    period TEXT NOT NULL,
    period_start TEXT NOT NULL,
    nano_epsilon INTEGER NOT NULL CHECK (nano_epsilon >= 0),
    atto_delta INTEGER NOT NULL CHECK (atto_delta >= 0),
    queries INTEGER NOT NULL CHECK (queries >= 0),
    updated TEXT NOT NULL,
    PRIMARY KEY (identity, period, period_start)
) WITHOUT ROWID
"""
_THIS: dict[Period, str] = {"day": "today", "week": "this week", "month": "this month", "year": "this year"}


@dataclass(frozen=True)
class Budget:
    """What a node's policy grants one identity per period: ``epsilon`` > 0, ``delta`` in [0, 1)."""

    epsilon: float
    delta: float
    period: Period

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and 0 < self.epsilon <= MAX_EPSILON):
            raise ConfigError(
                f"a privacy budget's epsilon must be above 0 and at most {MAX_EPSILON:g}, not {self.epsilon!r}"
            )
        if not (math.isfinite(self.delta) and 0 <= self.delta < 1):
            raise ConfigError(f"a privacy budget's delta must be at least 0 and below 1, not {self.delta!r}")
        if self.period not in PERIODS:
            raise ConfigError(f"a privacy budget's period is one of {', '.join(PERIODS)}, not {self.period!r}")


@dataclass(frozen=True)
class Spent:
    """What one identity spent in one period; ``period_end`` is the first day of the next (when it renews)."""

    epsilon: float
    delta: float
    period_start: str
    period_end: str
    queries: int


def period_bounds(period: Period, now: float) -> tuple[dt.date, dt.date]:
    """The first day of the UTC calendar period holding ``now`` (Unix seconds), and of the next one.

    >>> period_bounds("week", dt.datetime(2026, 1, 4, 23, 59, 59, tzinfo=dt.UTC).timestamp())  # a Sunday
    (datetime.date(2025, 12, 29), datetime.date(2026, 1, 5))
    >>> period_bounds("month", dt.datetime(2026, 12, 31, tzinfo=dt.UTC).timestamp())
    (datetime.date(2026, 12, 1), datetime.date(2027, 1, 1))
    """
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "day":
        return day, day + dt.timedelta(days=1)
    if period == "week":
        start = day - dt.timedelta(days=day.weekday())
        return start, start + dt.timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        after = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return start, dt.date(*after, 1)
    if period == "year":
        return dt.date(day.year, 1, 1), dt.date(day.year + 1, 1, 1)
    raise ValueError(f"unknown period {period!r}")


def _units(amount: float, per: int) -> int:
    """``amount`` in integer units of ``1/per``, through its shortest decimal form (0.1 is exactly 10**8 nano)."""
    return int((Decimal(repr(float(amount))) * per).to_integral_value(ROUND_HALF_EVEN))


def _cost(epsilon: float, delta: float) -> tuple[int, int]:
    if not (math.isfinite(epsilon) and epsilon >= 0 and math.isfinite(delta) and delta >= 0):
        raise ValueError(f"a privacy cost is finite and not negative, not epsilon={epsilon!r} delta={delta!r}")
    return _units(epsilon, EPSILON_UNITS), _units(delta, DELTA_UNITS)


def _unreadable(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"the privacy budget ledger {path} cannot be used: {why}",
        code="CONFIG_BUDGET_LEDGER_UNREADABLE",
        hint="restore it from a backup, or move it aside to start every identity's budget afresh",
    )


class PrivacyLedger:
    """The spent epsilon and delta per identity and period, durable and thread-safe; open with :meth:`open`."""

    def __init__(
        self, path: Path, connection: sqlite3.Connection, on_refusal: Callable[[], None] | None = None
    ) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = connection
        self._lock = threading.Lock()  # one connection, whose transactions threads take in turn
        self._on_refusal = on_refusal  # told of each charge refused (the node's metrics count them)

    @classmethod
    def open(cls, directory: Path, on_refusal: Callable[[], None] | None = None) -> PrivacyLedger:
        """Open (or create, mode 0600) ``directory/privacy-budget.sqlite3``; ``on_refusal`` is told of each
        charge the budget refuses.

        A file that is not a ledger (not SQLite, damaged, another application's database, a newer schema) or
        that cannot be opened is refused with ConfigError ``CONFIG_BUDGET_LEDGER_UNREADABLE`` and left as it
        is: starting from zero would hand every identity its budget back.
        """
        path = Path(directory) / LEDGER_FILE
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600))
                directory_fd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory_fd)  # the new file's name survives a crash too
                finally:
                    os.close(directory_fd)
        except OSError as exc:
            log.error("privacy budget ledger %s: %s", path, exc)
            raise _unreadable(path, exc.strerror or "it cannot be created") from None
        try:
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.error("privacy budget ledger %s: %s", path, exc)
            raise _unreadable(path, "it cannot be opened") from None
        try:
            cls._prepare(db, path)
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                log.error("privacy budget ledger %s: %s", path, exc)
                raise _unreadable(path, "it is not a readable SQLite database") from None
            raise
        return cls(path, db, on_refusal)

    @staticmethod
    def _prepare(db: sqlite3.Connection, path: Path) -> None:
        """Check an existing ledger whole, or give a new (empty) file the schema."""
        if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            raise _unreadable(path, "its journal cannot be switched to WAL")
        db.execute("PRAGMA synchronous=FULL")
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            log.error("privacy budget ledger %s: quick_check: %s", path, "; ".join(problems[:5]))
            raise _unreadable(path, "it is damaged")
        db.execute("BEGIN IMMEDIATE")
        try:
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if application_id == 0 and version == 0 and tables == 0:
                db.execute(_SCHEMA)
                db.execute(f"PRAGMA application_id={_APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            elif application_id != _APPLICATION_ID:
                raise _unreadable(path, "it is another application's SQLite database")
            elif version == budget_gaps.VERSION and tables < 2:
                raise _unreadable(path, "its restore gaps are missing")
            elif version not in (_SCHEMA_VERSION, budget_gaps.VERSION):
                raise _unreadable(path, f"its schema version {version} is not {_SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def spent(self, identity: str, budget: Budget, now: float | None = None) -> Spent:
        """What ``identity`` spent in ``budget``'s period holding ``now`` (default: the current time)."""
        start, end = period_bounds(budget.period, time.time() if now is None else now)
        with self._transaction(write=False) as db:
            nano, atto, queries = self._row(db, identity, budget.period, start)
            if budget_gaps.within(db, start, end) is not None:  # spent in full, as far as this node can know
                nano, atto = _units(budget.epsilon, EPSILON_UNITS), _units(budget.delta, DELTA_UNITS)
        return _spent(nano, atto, queries, start, end)

    def add_gap(self, gap_start: float, gap_end: float, checkpoint: int) -> None:
        """Count every period that overlaps ``[gap_start, gap_end]`` (Unix seconds: from a backup to its restore,
        from checkpoint ``checkpoint``) as spent in full by every identity (:mod:`node.budget_gaps`)."""
        with self._transaction(write=True) as db:
            budget_gaps.add(db, gap_start, gap_end, checkpoint)

    def gaps(self) -> list[budget_gaps.Gap]:
        """The restore gaps, as (backup time, restore time, checkpoint), oldest first."""
        with self._transaction(write=False) as db:
            return budget_gaps.listed(db)

    def charge(
        self,
        identity: str,
        epsilon: float,
        delta: float,
        budget: Budget,
        *,
        rule: str,
        party: str,
        now: float | None = None,
    ) -> Spent:
        """Spend ``epsilon`` and ``delta`` of ``identity``'s budget for the period holding ``now``, durably,
        and return what is spent after it.

        If either would exceed ``budget``, raise PolicyViolation ``POLICY_PRIVACY_BUDGET`` (rule
        ``"{party}: {rule}"``) and spend nothing. Pass the same ``now`` to :meth:`refund` if the answer then
        never leaves.
        """
        cost_nano, cost_atto = _cost(epsilon, delta)
        start, end = period_bounds(budget.period, time.time() if now is None else now)
        with self._transaction(write=True) as db:
            if (gap := budget_gaps.within(db, start, end)) is not None:
                raise self._refused(budget_gaps.refusal(party, rule, _THIS[budget.period], end, gap))
            nano, atto, queries = self._row(db, identity, budget.period, start)
            limit_nano, limit_atto = _units(budget.epsilon, EPSILON_UNITS), _units(budget.delta, DELTA_UNITS)
            if nano + cost_nano > limit_nano:
                raise self._refused(
                    _refusal(party, rule, budget, end, "", nano / EPSILON_UNITS, budget.epsilon, epsilon)
                )
            if atto + cost_atto > limit_atto:
                raise self._refused(
                    _refusal(party, rule, budget, end, " (delta)", atto / DELTA_UNITS, budget.delta, delta)
                )
            nano, atto, queries = nano + cost_nano, atto + cost_atto, queries + 1
            self._write(db, identity, budget.period, start, nano, atto, queries)
        return _spent(nano, atto, queries, start, end)

    def _refused(self, refusal: PolicyViolation) -> PolicyViolation:
        if self._on_refusal is not None:
            self._on_refusal()
        return refusal

    def refund(self, identity: str, epsilon: float, delta: float, budget: Budget, now: float | None = None) -> None:
        """Give back a charge whose answer never left (the node failed before answering); never below zero.

        ``now`` is the one the charge was made with, so a refund after midnight goes back to the right period.
        """
        cost_nano, cost_atto = _cost(epsilon, delta)
        start, _ = period_bounds(budget.period, time.time() if now is None else now)
        with self._transaction(write=True) as db:
            nano, atto, queries = self._row(db, identity, budget.period, start)
            if queries or nano or atto:
                refunded = (max(0, nano - cost_nano), max(0, atto - cost_atto), max(0, queries - 1))
                self._write(db, identity, budget.period, start, *refunded)

    def close(self) -> None:
        """Close the ledger (every charge is already on disk); later calls raise."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *raised: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """The connection, inside ``BEGIN IMMEDIATE`` for a write; a failure of SQLite becomes
        ``CONFIG_BUDGET_LEDGER_UNAVAILABLE`` (the cause goes to the log), anything else is rolled back and
        raised as it is."""
        with self._lock:
            db = self._db
            if db is None:
                raise RuntimeError("the privacy budget ledger is closed")
            try:
                if write:
                    db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                if db.in_transaction:
                    db.execute("COMMIT")
            except sqlite3.Error as exc:
                log.error("privacy budget ledger %s: %s", self.path, exc)
                try:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise ConfigError(
                    "this node cannot read or write its privacy budget ledger now; nothing was answered or spent",
                    code="CONFIG_BUDGET_LEDGER_UNAVAILABLE",
                    hint="try again later; the node's operator sees the cause in its log",
                ) from None

    @staticmethod
    def _row(db: sqlite3.Connection, identity: str, period: Period, start: dt.date) -> tuple[int, int, int]:
        row = db.execute(
            "SELECT nano_epsilon, atto_delta, queries FROM spent WHERE identity=? AND period=? AND period_start=?",
            (identity, period, start.isoformat()),
        ).fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    @staticmethod
    def _write(
        db: sqlite3.Connection, identity: str, period: Period, start: dt.date, nano: int, atto: int, queries: int
    ) -> None:
        updated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        db.execute(
            "INSERT INTO spent (identity, period, period_start, nano_epsilon, atto_delta, queries, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (identity, period, period_start) DO UPDATE SET "
            "nano_epsilon=excluded.nano_epsilon, atto_delta=excluded.atto_delta, queries=excluded.queries, "
            "updated=excluded.updated",
            (identity, period, start.isoformat(), nano, atto, queries, updated),
        )


def _spent(nano: int, atto: int, queries: int, start: dt.date, end: dt.date) -> Spent:
    return Spent(nano / EPSILON_UNITS, atto / DELTA_UNITS, start.isoformat(), end.isoformat(), queries)


def _refusal(
    party: str, rule: str, budget: Budget, end: dt.date, which: str, used: float, limit: float, cost: float
) -> PolicyViolation:
    """POLICY_PRIVACY_BUDGET, naming the node and the period but never the identity."""
    this = _THIS[budget.period]
    if cost > limit:
        hint = f"this query alone costs more than the whole budget for a {budget.period}; ask for a cheaper one"
    else:
        hint = f"wait until {end.isoformat()} (UTC), or ask the node's operator for a larger budget"
    return PolicyViolation(
        f"{party}: the privacy budget{which} of this identity for {this} is spent "
        f"(used {used:.3g} of {limit:g}; a query costs {cost:g}); it renews on {end.isoformat()}",
        code="POLICY_PRIVACY_BUDGET",
        rule=f"{party}: {rule}",
        hint=hint,
    )
