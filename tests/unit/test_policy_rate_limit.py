"""Per-identity rate limits: n requests in any window, the (n+1)th refused with how long to wait."""

from __future__ import annotations

import threading

import pytest

from federation.errors import PolicyViolation
from policies.model import RateLimit
from policies.rate_limit import RateLimiter

LIMIT = RateLimit(requests=3, per_seconds=60)


def take(limiter: RateLimiter, now: float, key: str = "li.na", limit: RateLimit | None = LIMIT) -> None:
    limiter.take(key, limit, party="hangzhou", role="caseworker", now=now)


def test_the_next_request_in_a_full_window_is_refused_and_allowed_after_it() -> None:
    limiter = RateLimiter()
    for t in (0.0, 10.0, 20.0):
        take(limiter, t)
    with pytest.raises(PolicyViolation) as info:
        take(limiter, 30.0)
    err = info.value
    assert err.code == "POLICY_RATE_LIMITED"
    assert err.rule == "hangzhou: roles.caseworker.rate_limit"
    assert err.hint == "wait 30 s"  # the request at 0 leaves the window at 60
    assert err.message == "rate limit reached: 3 requests per 60 s for role caseworker"
    with pytest.raises(PolicyViolation):
        take(limiter, 59.9)  # a refused request does not count, but the window is still full
    take(limiter, 60.0)
    with pytest.raises(PolicyViolation) as info:
        take(limiter, 61.0)
    assert info.value.hint == "wait 9 s"  # next slot frees at 70


def test_identities_are_limited_separately() -> None:
    limiter = RateLimiter()
    for t in (0.0, 1.0, 2.0):
        take(limiter, t, key="li.na")
    take(limiter, 3.0, key="wang.fang")
    with pytest.raises(PolicyViolation):
        take(limiter, 4.0, key="li.na")


def test_no_limit_counts_nothing() -> None:
    limiter = RateLimiter()
    for t in range(1000):
        take(limiter, float(t), limit=None)
    assert len(limiter) == 0


def test_idle_identities_are_forgotten_and_memory_is_bounded() -> None:
    limiter = RateLimiter(max_identities=50)
    for i in range(200):
        take(limiter, float(i) / 1000, key=f"person-{i}")
    assert len(limiter) == 50
    take(limiter, 1000.0, key="late")  # everyone else is past their window
    assert len(limiter) == 1


def test_a_short_wait_is_at_least_one_second() -> None:
    limiter = RateLimiter()
    fast = RateLimit(requests=1, per_seconds=0.5)
    take(limiter, 0.0, limit=fast)
    with pytest.raises(PolicyViolation) as info:
        take(limiter, 0.1, limit=fast)
    assert info.value.hint == "wait 1 s"
    take(limiter, 0.5, limit=fast)


def test_concurrent_takes_admit_exactly_the_limit() -> None:
    limiter = RateLimiter()
    limit = RateLimit(requests=100, per_seconds=3600)
    admitted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            try:
                limiter.take("shared", limit, party="a", role="analyst", now=1.0)
                outcome = admitted
            except PolicyViolation:
                outcome = refused
            with lock:
                outcome.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 100 and len(refused) == 300
