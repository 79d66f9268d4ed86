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


class ReplayGuard:
    def __init__(self, path: Path, window_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce BLOB PRIMARY KEY, expires REAL NOT NULL)")
        self._lock = threading.Lock()
        self._keep_s = 2 * window_s + 60
        self._next_sweep = 0.0

    def record(self, nonce: bytes, now: float | None = None) -> None:
        """Remember ``nonce``; AuthError ``AUTH_REPLAY`` if it was seen before."""
        now = time.time() if now is None else now
        with self._lock:
            if now >= self._next_sweep:
                self._db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
                self._next_sweep = now + 60
            try:
                self._db.execute("INSERT INTO nonces VALUES (?, ?)", (nonce, now + self._keep_s))
            except sqlite3.IntegrityError:
                raise AuthError(
                    "this signed question was already received: a replay",
                    code="AUTH_REPLAY",
                    hint="sign a new question (the hpf client signs each one afresh)",
                ) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
