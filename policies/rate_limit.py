"""Per-identity rate limits: a sliding window of requests per asker, as a node's policy sets per role."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque

from federation.errors import PolicyViolation
from policies.model import RateLimit


class RateLimiter:
    """At most ``limit.requests`` requests per identity in any ``limit.per_seconds`` window (a sliding log).

    Thread-safe. Memory is bounded: an identity keeps at most ``requests`` timestamps, identities idle past
    their window are forgotten, and beyond ``max_identities`` the least recently seen is dropped.
    """

    def __init__(self, max_identities: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._log: OrderedDict[str, tuple[float, deque[float]]] = OrderedDict()
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
    ) -> None:
        """Count one request by ``key``, or raise POLICY_RATE_LIMITED if its window is full (not counted then).

        ``rule`` names the setting in the refusal (default: the node policy's ``roles.<role>.rate_limit``).
        """
        if limit is None:
            return
        t = time.monotonic() if now is None else now
        with self._lock:
            self._forget_idle(t)
            window, stamps = self._log.pop(key, (limit.per_seconds, deque()))
            window = limit.per_seconds
            while stamps and stamps[0] <= t - window:
                stamps.popleft()
            while len(stamps) > limit.requests:  # the limit was lowered: keep the newest
                stamps.popleft()
            self._log[key] = (window, stamps)
            if len(stamps) >= limit.requests:
                wait = max(1, math.ceil(stamps[0] + window - t))
                raise PolicyViolation(
                    f"rate limit reached: {limit.requests} requests per {limit.per_seconds:g} s"
                    + (f" for role {role}" if role else " per person"),
                    code="POLICY_RATE_LIMITED",
                    rule=f"{party}: {rule or f'roles.{role}.rate_limit'}",
                    hint=f"wait {wait} s",
                )
            stamps.append(t)
            while len(self._log) > self._max:
                self._log.popitem(last=False)

    def _forget_idle(self, now: float) -> None:
        """Drop identities, least recently seen first, whose newest request left their window."""
        while self._log:
            key, (window, stamps) = next(iter(self._log.items()))
            if stamps and stamps[-1] > now - window:
                return
            del self._log[key]
