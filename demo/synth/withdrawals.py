"""Withdrawals (提取) of one node's accounts, consistent with the deposits and loans.

Events: yearly rent withdrawals, a purchase withdrawal when a loan is granted (and some purchases without
one), yearly repayment withdrawals during a loan, rare medical withdrawals, and a closing withdrawal of the
whole balance when an account is closed (``retirement`` or, leaving the city, ``other``).

An event never takes more than what was paid in since the account's previous withdrawal, so a balance never
goes negative; a closing withdrawal takes exactly the rest. Hence, per account,
``balance_fen == SUM(deposits.amount_fen) - SUM(withdrawals.amount_fen)`` and closed accounts hold 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpf.demo.synth.timeline import LAST_MONTH, BoolArray, IntArray, month_days, month_in
from hpf.federation.hpf_schema import WITHDRAWAL_REASONS

REASON = {name: i for i, name in enumerate(WITHDRAWAL_REASONS)}
RENTERS, PURCHASE_AT_LOAN, PURCHASE_NO_LOAN, REPAYERS, MEDICAL = 0.22, 0.75, 0.04, 0.45, 0.008
TAKEN = {  # share of the money paid in since the previous withdrawal that one withdrawal takes
    "rent": (0.5, 0.9),
    "purchase": (0.85, 1.0),
    "repayment": (0.6, 1.0),
    "medical": (0.3, 0.8),
}


@dataclass(frozen=True)
class AccountMoney:
    """One node's accounts and their deposit rows (account-major, months ascending)."""

    start: IntArray
    length: IntArray
    closed: BoolArray
    retired: BoolArray  # closed because the holder retired
    amount: IntArray  # per deposit row

    @property
    def end(self) -> IntArray:
        return self.start + self.length - 1


@dataclass(frozen=True)
class Withdrawals:
    account: IntArray
    day: IntArray
    amount: IntArray
    reason: IntArray

    def total_per_account(self, n_accounts: int) -> IntArray:
        return np.rint(np.bincount(self.account, weights=self.amount, minlength=n_accounts)).astype(np.int64)


def _expand(counts: IntArray) -> tuple[IntArray, IntArray]:
    """For each event count: the owner index of every event and its 0-based number within the owner."""
    owner = np.repeat(np.arange(len(counts)), counts)
    firsts = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, np.arange(int(counts.sum())) - firsts


class _Events:
    """Accumulates (account, month, reason, final) events."""

    def __init__(self) -> None:
        self.parts: list[tuple[IntArray, IntArray, int, bool]] = []

    def add(self, account: IntArray, month: IntArray, reason: str, final: bool = False) -> None:
        self.parts.append((account.astype(np.int64), month.astype(np.int64), REASON[reason], final))

    def arrays(self) -> tuple[IntArray, IntArray, IntArray, BoolArray]:
        def cat(i: int) -> IntArray:
            return np.concatenate([p[i] for p in self.parts])

        reason = np.concatenate([np.full(len(p[0]), p[2]) for p in self.parts])
        final = np.concatenate([np.full(len(p[0]), p[3]) for p in self.parts])
        return cat(0), cat(1), reason, final


def _events(
    rng: np.random.Generator, acc: AccountMoney, loan_account: IntArray, loan_start: IntArray, loan_term: IntArray
) -> _Events:
    n, end = len(acc.start), acc.end
    ev = _Events()
    renters = np.flatnonzero((acc.length >= 12) & (rng.random(n) < RENTERS))
    years = np.minimum(acc.length[renters] // 12, rng.geometric(0.3, len(renters)))
    owner, j = _expand(years)
    a = renters[owner]
    ev.add(a, np.minimum(acc.start[a] + 12 * j + rng.integers(0, 12, len(a)), end[a]), "rent")

    buy = rng.random(len(loan_account)) < PURCHASE_AT_LOAN
    ev.add(loan_account[buy], loan_start[buy], "purchase")
    cash = np.flatnonzero((acc.length >= 12) & (rng.random(n) < PURCHASE_NO_LOAN))
    ev.add(cash, month_in(rng, acc.start[cash] + 6, end[cash]), "purchase")

    repays = np.flatnonzero(rng.random(len(loan_account)) < REPAYERS)
    la = loan_account[repays]
    last = np.minimum(end[la], loan_start[repays] + loan_term[repays] - 1)
    owner, j = _expand(np.clip((last - loan_start[repays]) // 12, 0, 10))
    ev.add(la[owner], loan_start[repays][owner] + 12 * (j + 1), "repayment")

    sick = np.flatnonzero(rng.random(n) < MEDICAL)
    ev.add(sick, month_in(rng, acc.start[sick], end[sick]), "medical")

    closed = np.flatnonzero(acc.closed)
    month = np.minimum(end[closed] + 1 + rng.integers(0, 4, len(closed)), LAST_MONTH)
    retired = acc.retired[closed]
    ev.add(closed[retired], month[retired], "retirement", final=True)
    ev.add(closed[~retired], month[~retired], "other", final=True)
    return ev


def draw_withdrawals(
    rng: np.random.Generator, acc: AccountMoney, loan_account: IntArray, loan_start: IntArray, loan_term: IntArray
) -> Withdrawals:
    """All withdrawals of one node, ordered by account and date."""
    account, month, reason, final = _events(rng, acc, loan_account, loan_start, loan_term).arrays()
    order = np.lexsort((reason, final, month, account))
    account, month, reason, final = account[order], month[order], reason[order], final[order]

    n = len(acc.start)
    offset = np.cumsum(acc.length) - acc.length
    cum = np.cumsum(acc.amount)
    before = cum[offset] - acc.amount[offset]  # paid in before each account's first month
    paid = cum[offset[account] + np.minimum(month, acc.end[account]) - acc.start[account]] - before[account]
    first_of_account = np.ones(len(account), dtype=bool)
    first_of_account[1:] = account[1:] != account[:-1]
    previous = np.where(first_of_account, 0, np.roll(paid, 1))
    low = np.zeros(len(reason))
    high = np.ones(len(reason))
    for name, (lo, hi) in TAKEN.items():
        low[reason == REASON[name]], high[reason == REASON[name]] = lo, hi
    share = low + rng.random(len(reason)) * (high - low)
    amount = np.floor(share * (paid - previous)).astype(np.int64) * ~final

    total = np.bincount(np.repeat(np.arange(n), acc.length), weights=acc.amount, minlength=n)
    taken = np.bincount(account, weights=amount, minlength=n)
    rest = np.rint(total - taken).astype(np.int64)
    amount = np.where(final, rest[account], amount)
    day = month_days(month) + rng.integers(0, 28, len(month))
    keep = amount > 0
    return Withdrawals(account[keep], day[keep], amount[keep], reason[keep])
