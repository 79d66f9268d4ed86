"""Per-identity rate limits: a sliding window of requests per asker, as a node's policy sets per role."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque

from hpf.federation.errors import PolicyViolation
from hpf.policies.model import RateLimit


class RateLimiter:
    """At most ``limit.requests`` requests per identity in any ``limit.per_seconds`` window (a sliding log).

    A request may cost more than one (a lookup counts each person it asks about). Thread-safe. Memory is
    bounded: an identity keeps at most ``requests`` (time, cost) entries, identities idle past their window
    are forgotten, and beyond ``max_identities`` the least recently seen is dropped.
    """

    def __init__(self, max_identities: int = 100_000) -> None:
        self._lock = threading.Lock()
        # identity -> (window, [(time, cost)], cost in the window)
        self._log: OrderedDict[str, tuple[float, deque[tuple[float, int]], int]] = OrderedDict()
        self._max = max_identities

    def __len__(self) -> int:
        with self._lock:
            return len(self._log)

    def take(
        self,
        key: str,
        limit: RateLimit | None,
        *,
        party: str,
        role: str,
        now: float | None = None,
        rule: str | None = None,
        cost: int = 1,
    ) -> None:
        """Count ``cost`` requests by ``key``, or raise POLICY_RATE_LIMITED if they do not all fit in its window
        (none counted then).

        ``rule`` names the setting in the refusal (default: the node policy's ``roles.<role>.rate_limit``).
        """
        if limit is None or cost <= 0:
            return
        t = time.monotonic() if now is None else now
        with self._lock:
            self._forget_idle(t)
            window, stamps, used = self._log.pop(key, (limit.per_seconds, deque(), 0))
            window = limit.per_seconds
            while stamps and stamps[0][0] <= t - window:
                used -= stamps.popleft()[1]
            while used > limit.requests:  # the limit was lowered: keep the newest
                used -= stamps.popleft()[1]
            self._log[key] = (window, stamps, used)
            if used + cost > limit.requests:
                # the wait until enough of the window's oldest requests leave it
                freed, wait_until = used + cost - limit.requests, t + window
                for stamp, n in stamps:
                    freed -= n
                    if freed <= 0:
                        wait_until = stamp + window
                        break
                what = f"{cost} more would exceed " if cost > 1 else ""
                raise PolicyViolation(
                    f"rate limit reached: {what}{limit.requests} requests per {limit.per_seconds:g} s"
                    + (f" for role {role}" if role else " per person"),
                    code="POLICY_RATE_LIMITED",
                    rule=f"{party}: {rule or f'roles.{role}.rate_limit'}",
                    hint=f"wait {max(1, math.ceil(wait_until - t))} s"
                    if cost <= limit.requests
                    else f"ask about at most {limit.requests} at a time",
                )
            stamps.append((t, cost))
            self._log[key] = (window, stamps, used + cost)
            while len(self._log) > self._max:
                self._log.popitem(last=False)

    def give_back(self, key: str, cost: int) -> None:
        """Undo the latest :meth:`take` of ``cost`` by ``key`` (when a later check refused the request)."""
        with self._lock:
            found = self._log.get(key)
            if found is None or cost <= 0:
                return
            window, stamps, used = found
            for i in range(len(stamps) - 1, -1, -1):
                if stamps[i][1] == cost:
                    del stamps[i]
                    self._log[key] = (window, stamps, used - cost)
                    return

    def _forget_idle(self, now: float) -> None:
        """Drop identities, least recently seen first, whose newest request left their window."""
        while self._log:
            key, (window, stamps, _) = next(iter(self._log.items()))
            if stamps and stamps[-1][0] > now - window:
                return
            del self._log[key]
