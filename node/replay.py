"""The node's memory of nonces it has accepted, so a signed question runs at most once.

Kept in SQLite in the node's state directory, so a restart does not reopen the window for replays. A nonce is
remembered until its envelope could no longer pass the time window, then forgotten.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from federation.errors import AuthError


def _replay() -> AuthError:
    return AuthError(
        "this signed question was already received: a replay",
        code="AUTH_REPLAY",
        hint="sign a new question (the hpf client signs each one afresh)",
    )


class ReplayGuard:
    """Nonces with the time their envelope was signed; one is forgotten once that time is outside the window
    (judged with the window in force now, so a restart with a wider window does not reopen replays)."""

    def __init__(self, path: Path, window_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a nonce accepted is a nonce remembered, power loss or not
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (nonce BLOB PRIMARY KEY, signed_at REAL NOT NULL)")
        self._lock = threading.Lock()
        self._keep_s = window_s + 60
        self._next_sweep = 0.0

    def check(self, nonce: bytes) -> None:
        """AuthError ``AUTH_REPLAY`` if ``nonce`` was recorded; records nothing."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM seen WHERE nonce = ?", (nonce,)).fetchone() is not None:
                raise _replay()

    def record(self, nonce: bytes, signed_at: float, now: float | None = None) -> None:
        """Remember ``nonce`` (its envelope signed at ``signed_at``, Unix seconds); ``AUTH_REPLAY`` if seen."""
        now = time.time() if now is None else now
        with self._lock:
            if now >= self._next_sweep:
                self._db.execute("DELETE FROM seen WHERE signed_at < ?", (now - self._keep_s,))
                self._next_sweep = now + 60
            try:
                self._db.execute("INSERT INTO seen VALUES (?, ?)", (nonce, signed_at))
            except sqlite3.IntegrityError:
                raise _replay() from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
