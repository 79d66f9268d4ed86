"""The node's memory of nonces it has accepted, so a signed question runs at most once.

The nonces live in memory. The audit log is what makes them durable: every question a node runs or explains
is appended there, with its nonce, before the answer leaves, and the log is flushed to disk. At start the node
reads back the nonces of the recent allowed entries, so a restart does not reopen the window for replays, and
no second store has to be flushed on every request.

A nonce is remembered until its envelope could no longer pass the time window, then forgotten. A nonce read
back from the log is kept as if signed a whole window after the node received it (the latest it can have
been signed), so it is not forgotten too early.

Re-runs: when a region fails mid-question, the coordinator asks the survivors again under the same signed
question with a smaller participant set (a new run id: new masks, new noise). So a nonce may come back, but
only naming a strict subset of the participants it last ran with, and at most ``max_runs`` times in all; the
same set again, or a set with a region added back, is a replay.
"""

from __future__ import annotations

import bisect
import datetime as dt
import threading
import time
from collections.abc import Sequence

from hpf.federation.audit.log import AuditLog
from hpf.federation.errors import AuthError

SWEEP_EVERY_S = 60.0
MARGIN_S = 60.0  # clocks of the log's entries and of envelopes are not exact


def _replay() -> AuthError:
    return AuthError(
        "this signed question was already received: a replay",
        code="AUTH_REPLAY",
        hint="sign a new question (the hpf client signs each one afresh)",
    )


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _unix(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class ReplayGuard:
    """Nonces with the time their envelope was signed; thread-safe."""

    def __init__(self, window_s: float) -> None:
        self._keep_s = window_s + MARGIN_S
        self._seen: dict[bytes, float] = {}
        self._runs: dict[bytes, tuple[frozenset[str], int]] = {}  # nonce: last participant set, runs so far
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    @classmethod
    def from_audit(cls, audit: AuditLog, window_s: float, now: float | None = None) -> ReplayGuard:
        """A guard that remembers the nonces of the questions ``audit`` shows this node ran or explained
        recently enough to be replayed."""
        guard = cls(window_s)
        now = time.time() if now is None else now
        oldest = now - 2 * window_s - 2 * MARGIN_S  # received then, signed up to a window later, fresh a window more
        for entry in audit.entries(_first_index_since(audit, _iso(oldest))):
            received = _unix(entry.get("time"))
            nonce = entry.get("nonce")
            if received is None or entry.get("decision") != "allowed" or not isinstance(nonce, str) or not nonce:
                continue
            try:
                key = bytes.fromhex(nonce)
            except ValueError:
                continue
            guard._seen[key] = received + window_s
            participants = entry.get("participants")
            if isinstance(participants, str) and participants:
                runs = guard._runs.get(key, (frozenset(), 0))[1]
                guard._runs[key] = (frozenset(participants.split(",")), runs + 1)
        return guard

    def __len__(self) -> int:
        return len(self._seen)

    def _refuse_unless_rerun(self, nonce: bytes, participants: frozenset[str] | None, max_runs: int) -> bool:
        if nonce not in self._seen:
            return False
        last = self._runs.get(nonce)
        if participants is None or last is None or not participants < last[0] or last[1] >= max_runs:
            raise _replay()
        return True

    def check(self, nonce: bytes, participants: Sequence[str] | None = None, max_runs: int = 1) -> bool:
        """AuthError ``AUTH_REPLAY`` if ``nonce`` was recorded, unless this is an allowed re-run with
        ``participants`` (see the module): then True. Records nothing."""
        with self._lock:
            return self._refuse_unless_rerun(nonce, None if participants is None else frozenset(participants), max_runs)

    def record(
        self,
        nonce: bytes,
        signed_at: float,
        now: float | None = None,
        participants: Sequence[str] | None = None,
        max_runs: int = 1,
    ) -> int:
        """Remember ``nonce`` (its envelope signed at ``signed_at``, Unix seconds) and the run's participants;
        ``AUTH_REPLAY`` if seen and this is not an allowed re-run. Returns which run this is (1 for the first)."""
        now = time.time() if now is None else now
        members = None if participants is None else frozenset(participants)
        with self._lock:
            if now >= self._next_sweep:
                cutoff = now - self._keep_s
                self._seen = {n: t for n, t in self._seen.items() if t >= cutoff}
                self._runs = {n: r for n, r in self._runs.items() if n in self._seen}
                self._next_sweep = now + SWEEP_EVERY_S
            self._refuse_unless_rerun(nonce, members, max_runs)
            self._seen.setdefault(nonce, signed_at)
            if members is None:
                return 1
            runs = self._runs.get(nonce, (members, 0))[1] + 1
            self._runs[nonce] = (members, runs)
            return runs


def _first_index_since(audit: AuditLog, since: str) -> int:
    """The index of the first entry whose time is at least ``since`` (entries are appended in time order,
    give or take the moments between making an entry and appending it; MARGIN_S covers those)."""

    class _Times:
        def __len__(self) -> int:
            return audit.size

        def __getitem__(self, index: int) -> str:
            line = audit.entry(index)
            marker = line.find(b'"time":"')
            return line[marker + 8 : marker + 32].decode("ascii", "replace") if marker >= 0 else ""

    return bisect.bisect_left(_Times(), since)  # type: ignore[call-overload]
