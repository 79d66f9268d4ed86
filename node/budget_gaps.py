"""The gaps of a node's privacy ledger: from a backup to its restore, every budget period counts as spent.

A node restored from a backup (:mod:`node.restore`) cannot know what its lost host charged between the backup and
the restore, nor to whom. The ledger keeps each such gap (table ``restore_gaps``, made with the first one, which
raises the ledger's schema version to :data:`VERSION` so that an older node, which would not charge gaps, refuses
the ledger) and :meth:`node.privacy_budget.PrivacyLedger.charge` refuses every charge in a period that overlaps
one, for every identity, including identities it has never seen; periods after the gap are charged as usual.
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3

from hpf.federation.errors import PolicyViolation

VERSION = 2  # the ledger's schema version once it holds a gap
_TABLE = """
CREATE TABLE IF NOT EXISTS restore_gaps (
    gap_start REAL NOT NULL,
    gap_end REAL NOT NULL,
    checkpoint INTEGER NOT NULL,
    PRIMARY KEY (gap_start, gap_end)
) WITHOUT ROWID
"""

Gap = tuple[float, float, int]  # backup time, restore time (Unix seconds), the checkpoint restored from


def add(db: sqlite3.Connection, gap_start: float, gap_end: float, checkpoint: int) -> None:
    """Keep a gap (inside the caller's write transaction); the same gap twice is kept once."""
    if not (math.isfinite(gap_start) and math.isfinite(gap_end) and gap_start <= gap_end):
        raise ValueError("a restore gap runs from its backup time to its restore time")
    db.execute(_TABLE)  # made with the first gap: a ledger without one is as it always was
    db.execute(f"PRAGMA user_version={VERSION}")
    db.execute(
        "INSERT INTO restore_gaps (gap_start, gap_end, checkpoint) VALUES (?, ?, ?) "
        "ON CONFLICT (gap_start, gap_end) DO NOTHING",
        (gap_start, gap_end, checkpoint),
    )


def _kept(db: sqlite3.Connection) -> bool:
    return bool(db.execute("PRAGMA user_version").fetchone()[0] == VERSION)


def listed(db: sqlite3.Connection) -> list[Gap]:
    """Every gap, oldest first."""
    if not _kept(db):
        return []
    rows = db.execute("SELECT gap_start, gap_end, checkpoint FROM restore_gaps ORDER BY gap_start").fetchall()
    return [(float(a), float(b), int(c)) for a, b, c in rows]


def within(db: sqlite3.Connection, start: dt.date, end: dt.date) -> Gap | None:
    """The latest gap that overlaps the period from ``start`` to ``end`` (the first day of the next), if any."""
    if not _kept(db):
        return None
    first = dt.datetime.combine(start, dt.time(), dt.UTC).timestamp()
    after = dt.datetime.combine(end, dt.time(), dt.UTC).timestamp()
    row = db.execute(
        "SELECT gap_start, gap_end, checkpoint FROM restore_gaps WHERE gap_start < ? AND gap_end >= ? "
        "ORDER BY gap_end DESC LIMIT 1",
        (after, first),
    ).fetchone()
    return None if row is None else (float(row[0]), float(row[1]), int(row[2]))


def refusal(party: str, rule: str, this: str, end: dt.date, gap: Gap) -> PolicyViolation:
    """POLICY_PRIVACY_BUDGET for a period (``this``: "today", "this week", ...) that overlaps ``gap``."""
    restored = dt.datetime.fromtimestamp(gap[1], dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return PolicyViolation(
        f"{party}: the privacy budget of every identity for {this} counts as spent: this node was restored from a "
        f"backup (checkpoint {gap[2]}) at {restored}, and what was spent between the backup and the restore is "
        f"unknown to it; it renews on {end.isoformat()}",
        code="POLICY_PRIVACY_BUDGET",
        rule=f"{party}: {rule}",
        hint=f"wait until {end.isoformat()} (UTC): a period that overlaps a restore's gap is charged in full",
    )
