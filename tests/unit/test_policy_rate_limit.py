"""Per-identity rate limits: n requests in any window, the (n+1)th refused with how long to wait."""

from __future__ import annotations

import threading

import pytest

from hpf.federation.errors import PolicyViolation
from hpf.policies.model import RateLimit
from hpf.policies.rate_limit import RateLimiter

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


# -- costs: a lookup counts each person it asks about


PEOPLE = RateLimit(requests=10, per_seconds=60)
LOOKUP_RULE = "roles.integrator.lookups.rate_limit"


def take_people(limiter: RateLimiter, now: float, cost: int, key: str = "bank-1") -> None:
    limiter.take(key, PEOPLE, party="suzhou", role="integrator", now=now, rule=LOOKUP_RULE, cost=cost)


def test_a_cost_that_does_not_fit_is_refused_and_not_counted() -> None:
    limiter = RateLimiter()
    take_people(limiter, 0.0, 7)
    with pytest.raises(PolicyViolation) as info:
        take_people(limiter, 1.0, 4)  # 7 + 4 > 10
    err = info.value
    assert err.code == "POLICY_RATE_LIMITED"
    assert err.rule == f"suzhou: {LOOKUP_RULE}"
    assert err.message == "rate limit reached: 4 more would exceed 10 requests per 60 s for role integrator"
    assert err.hint == "wait 59 s"  # the 7 taken at 0 leave the window at 60
    take_people(limiter, 2.0, 3)  # the refused 4 were not counted: exactly 10 now
    with pytest.raises(PolicyViolation):
        take_people(limiter, 3.0, 1)
    take_people(limiter, 60.0, 7)  # the 7 of time 0 left the window; the 3 of time 2 are still in it
    with pytest.raises(PolicyViolation) as info:
        take_people(limiter, 61.0, 1)
    assert info.value.hint == "wait 1 s"  # the 3 of time 2 leave at 62


def test_the_wait_is_until_enough_of_the_oldest_costs_leave() -> None:
    limiter = RateLimiter()
    take_people(limiter, 0.0, 5)
    take_people(limiter, 10.0, 5)
    with pytest.raises(PolicyViolation) as info:
        take_people(limiter, 20.0, 6)  # needs both earlier costs gone: the second leaves at 70
    assert info.value.hint == "wait 50 s"
    with pytest.raises(PolicyViolation) as info:
        take_people(limiter, 20.0, 5)  # needs only the first gone: it leaves at 60
    assert info.value.hint == "wait 40 s"


def test_a_cost_larger_than_the_limit_says_how_many_fit_at_once() -> None:
    limiter = RateLimiter()
    with pytest.raises(PolicyViolation) as info:
        take_people(limiter, 0.0, 11)
    assert info.value.hint == "ask about at most 10 at a time"
    assert "11 more would exceed 10" in info.value.message
    take_people(limiter, 0.0, 10)  # nothing was counted for the refused 11


def test_a_cost_of_zero_counts_nothing_and_costs_are_per_identity() -> None:
    limiter = RateLimiter()
    take_people(limiter, 0.0, 10)
    take_people(limiter, 1.0, 0)  # a question that asks about nobody is not refused either
    take_people(limiter, 1.0, 10, key="bank-2")
    with pytest.raises(PolicyViolation):
        take_people(limiter, 2.0, 1)
    with pytest.raises(PolicyViolation):
        take_people(limiter, 2.0, 1, key="bank-2")


def test_concurrent_costs_admit_at_most_the_limit() -> None:
    limiter = RateLimiter()
    limit = RateLimit(requests=1000, per_seconds=3600)
    admitted: list[int] = []
    lock = threading.Lock()

    def worker(cost: int) -> None:
        for _ in range(40):
            try:
                limiter.take("shared", limit, party="a", role="integrator", now=1.0, cost=cost)
            except PolicyViolation:
                continue
            with lock:
                admitted.append(cost)

    threads = [threading.Thread(target=worker, args=(c,)) for c in (3, 7, 11, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) <= 1000
    # what was admitted is exactly what was counted: the rest of the window still fits, and no more
    rest = 1000 - sum(admitted)
    limiter.take("shared", limit, party="a", role="integrator", now=2.0, cost=rest)
    with pytest.raises(PolicyViolation):
        limiter.take("shared", limit, party="a", role="integrator", now=2.0, cost=1)


def test_give_back_undoes_the_latest_take_of_that_cost() -> None:
    limiter = RateLimiter()
    limit = RateLimit(requests=10, per_seconds=60)
    limiter.take("ann", limit, party="n", role="r", now=0.0, cost=4)
    limiter.take("ann", limit, party="n", role="r", now=1.0, cost=6)
    with pytest.raises(PolicyViolation):
        limiter.take("ann", limit, party="n", role="r", now=2.0, cost=1)
    limiter.give_back("ann", 6)
    limiter.take("ann", limit, party="n", role="r", now=3.0, cost=6)  # fits again
    with pytest.raises(PolicyViolation):
        limiter.take("ann", limit, party="n", role="r", now=4.0, cost=1)
    limiter.give_back("bob", 3)  # nobody to give back to: nothing happens
    assert len(limiter) == 1
