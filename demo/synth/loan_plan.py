"""Which housing loans exist in the federation: planned globally, so that loan rules hold across cities.

Rules the plan keeps:

- a loan belongs to one of the person's accounts and starts while they contributed there (after six months
  where the account is older than that); movers often borrow in an earlier city and contribute in a later one;
- everyone but the planted people has at most one loan that is not settled (an earlier one is always settled);
- planted people (a small share of movers) hold two ``active`` loans in two different cities: the duplicate
  loans risk control must find.

Amounts (principal, outstanding) are drawn per node; they do not cross cities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpf.demo.synth.timeline import LAST_MONTH, IntArray, month_in
from hpf.federation.hpf_schema import LOAN_STATUSES, TERM_MONTHS

TERMS = np.array(TERM_MONTHS, dtype=np.int64)
TERM_P = np.array([0.03, 0.10, 0.17, 0.25, 0.15, 0.30])
ACTIVE, SETTLED, OVERDUE = (LOAN_STATUSES.index(s) for s in ("active", "settled", "overdue"))
BORROW_RATE = 0.32  # of people who contributed two years or more
BORROW_RATE_NEW = 0.05
BORROW_AT_LATEST = 0.6  # movers: loan in the latest city; otherwise in an earlier one
PREPAY_MONTHS = 180.0  # a loan granted t months ago is prepaid with probability 1 - exp(-t / 180)
OVERDUE_RATE = 0.025
EARLIER_LOAN = 0.15
PLANTED_RATE = 0.004  # of all people
PLANTED_WINDOW = 300  # planted loans start in the last 25 years, so a 30-year term is still running


@dataclass(frozen=True)
class LoanPlan:
    """One row per loan, ordered by (region, start month, account)."""

    account: IntArray  # global account index: gives person and region
    region: IntArray
    start: IntArray  # month granted
    term: IntArray
    status: IntArray  # index into LOAN_STATUSES
    number: IntArray  # 1-based sequence within the region (the loan_id)


def _terms(rng: np.random.Generator, n: int) -> IntArray:
    return rng.choice(TERMS, size=n, p=TERM_P)


def _status(rng: np.random.Generator, start: IntArray, term: IntArray) -> IntArray:
    """Settled when the term has run out or prepaid (older loans more often); a few overdue; else active."""
    u = rng.random(len(start))
    prepaid = 1.0 - np.exp(-(LAST_MONTH - start) / PREPAY_MONTHS)
    status = np.where(u < prepaid, SETTLED, np.where(u < prepaid + OVERDUE_RATE, OVERDUE, ACTIVE))
    return np.where(start + term <= LAST_MONTH, SETTLED, status).astype(np.int64)


def _borrowing_month(rng: np.random.Generator, start: IntArray, length: IntArray) -> IntArray:
    """A month within the account's contributions, after the first six where there are more than six."""
    return month_in(rng, start + np.minimum(6, length - 1), start + length - 1)


def _planted(
    rng: np.random.Generator, first: IntArray, count: IntArray, start: IntArray, length: IntArray
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Planted persons and their two active loans: (persons, accounts, start months, terms)."""
    end = start + length - 1
    latest = first + count - 1
    recent = LAST_MONTH - PLANTED_WINDOW
    before_latest = np.maximum(latest - 1, 0)
    eligible = np.flatnonzero((count >= 2) & (end[latest] >= recent) & (end[before_latest] >= recent))
    n = min(len(eligible), max(1, round(PLANTED_RATE * len(first))))
    persons = np.sort(rng.choice(eligible, size=n, replace=False)) if n else eligible[:0]
    accounts = np.stack([first[persons] + count[persons] - 2, first[persons] + count[persons] - 1], axis=1)
    accounts = accounts.ravel()
    months = month_in(rng, np.maximum(start[accounts], recent), end[accounts])
    needed = LAST_MONTH + 12 - months  # the term must run at least a year beyond the as-of month
    terms = TERMS[np.searchsorted(TERMS, needed)]
    return persons, accounts, months, terms


def plan_loans(
    rng: np.random.Generator,
    first: IntArray,
    count: IntArray,
    region: IntArray,
    start: IntArray,
    length: IntArray,
) -> tuple[LoanPlan, IntArray]:
    """Plan every loan from per-person account ranges and per-account regions and contributions."""
    n_people = len(first)
    total = np.bincount(np.repeat(np.arange(n_people), count), weights=length, minlength=n_people)
    latest = rng.random(n_people) < BORROW_AT_LATEST
    offset = np.where(
        latest | (count == 1), count - 1, np.floor(rng.random(n_people) * np.maximum(count - 1, 1)).astype(np.int64)
    )
    borrows = rng.random(n_people) < np.where(total >= 24, BORROW_RATE, BORROW_RATE_NEW)
    persons = np.flatnonzero(borrows)
    acc = first[persons] + offset[persons]
    month = _borrowing_month(rng, start[acc], length[acc])
    term = _terms(rng, len(acc))
    status = _status(rng, month, term)

    earlier = (month - start[acc] >= 48) & (rng.random(len(acc)) < EARLIER_LOAN)
    e_acc = acc[earlier]
    e_month = month_in(rng, start[e_acc], month[earlier] - 36)
    e_term = _terms(rng, len(e_acc))

    planted, p_acc, p_month, p_term = _planted(rng, first, count, start, length)
    owner = np.repeat(np.arange(n_people), count)
    keep = ~np.isin(owner[acc], planted)
    e_keep = ~np.isin(owner[e_acc], planted)
    accounts = np.concatenate([acc[keep], e_acc[e_keep], p_acc])
    months = np.concatenate([month[keep], e_month[e_keep], p_month])
    terms = np.concatenate([term[keep], e_term[e_keep], p_term])
    statuses = np.concatenate([status[keep], np.full(int(e_keep.sum()), SETTLED), np.full(len(p_acc), ACTIVE)])

    regions = region[accounts]
    order = np.lexsort((accounts, months, regions))
    regions = regions[order]
    region_start = np.searchsorted(regions, regions, side="left")
    number = np.arange(len(order)) - region_start + 1
    plan = LoanPlan(
        accounts[order], regions, months[order], terms[order], statuses[order].astype(np.int64), number.astype(np.int64)
    )
    return plan, planted
