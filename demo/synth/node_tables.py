"""One node's four tables as columns of numpy arrays, from the registry and the node's own random stream.

Dates are days since 1970-01-01 (the writer turns them into DATE); strings are object arrays of ``str``.
Contributions: a wage (log-normal around the city's median, capped at three times the average, as the real
rules cap the contribution base) times a combined employee + employer rate of 10% to 24%, 6% lower for every
year back (bases reset each July).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hpf.demo.synth.loan_plan import ACTIVE, OVERDUE
from hpf.demo.synth.registry import Registry
from hpf.demo.synth.timeline import LAST_MONTH, IntArray, base_year, month_days, stream, yyyymmdd
from hpf.demo.synth.withdrawals import AccountMoney, draw_withdrawals
from hpf.federation.hpf_schema import ACCOUNT_STATUSES, GENDERS, LOAN_STATUSES, WITHDRAWAL_REASONS
from hpf.federation.regions import REGIONS

Columns = dict[str, npt.NDArray[np.generic]]

_NODE = 4  # stream key
RATES = (np.array([0.10, 0.14, 0.16, 0.20, 0.24]), np.array([0.15, 0.35, 0.20, 0.15, 0.15]))
WAGE_GROWTH = 1.06
CLOSED_WHEN_LEAVING = 0.3  # the rest of the accounts people stopped paying into are sealed (封存)
EMPLOYER_CHANGE = 0.3
PEOPLE_PER_EMPLOYER = 12
LOAN_RATE = 0.031 / 12  # monthly, the provident fund's five-year-plus rate
_ACTIVE, _SEALED, _CLOSED = (ACCOUNT_STATUSES.index(s) for s in ("active", "sealed", "closed"))


@dataclass(frozen=True)
class NodeTables:
    accounts: Columns
    deposits: Columns
    withdrawals: Columns
    loans: Columns

    def as_dict(self) -> dict[str, Columns]:
        return {
            "accounts": self.accounts,
            "deposits": self.deposits,
            "withdrawals": self.withdrawals,
            "loans": self.loans,
        }


def _labels(names: tuple[str, ...], index: IntArray) -> npt.NDArray[np.object_]:
    return np.array(names, dtype=object)[index]


def _constant(value: str, n: int) -> npt.NDArray[np.object_]:
    return np.full(n, value, dtype=object)


def _employers(rng: np.random.Generator, code: str, n: int) -> tuple[npt.NDArray[np.object_], IntArray, IntArray]:
    """The employer pool (a few big employers, many small) and two draws from it per account."""
    size = max(3, n // PEOPLE_PER_EMPLOYER)
    pool = np.array([f"E{code}{i:06d}" for i in range(size)], dtype=object)
    current = np.floor(size * rng.random(n) ** 2.5).astype(np.int64)
    previous = np.floor(size * rng.random(n) ** 2.5).astype(np.int64)
    return pool, current, previous


def _monthly_now(rng: np.random.Generator, weight: float, n: int) -> npt.NDArray[np.float64]:
    """Each account's contribution at the as-of month, in fen (before rounding)."""
    median = 5500.0 + 650.0 * weight  # monthly wage, yuan
    wage = np.clip(median * rng.lognormal(0.0, 0.5, n), 0.45 * median, 3.0 * 1.3 * median)
    rate = rng.choice(RATES[0], size=n, p=RATES[1])
    return wage * rate * 100.0


def _outstanding(principal: IntArray, term: IntArray, paid_months: IntArray) -> IntArray:
    """Principal still owed on an equal-instalment loan after ``paid_months`` instalments."""
    grow_n = (1.0 + LOAN_RATE) ** term
    grow_k = (1.0 + LOAN_RATE) ** np.clip(paid_months, 0, term)
    return np.rint(principal * (grow_n - grow_k) / (grow_n - 1.0)).astype(np.int64)


def _loans(
    rng: np.random.Generator, reg: Registry, region: int, accounts: IntArray, pids: npt.NDArray[np.object_]
) -> tuple[Columns, IntArray, IntArray, IntArray]:
    """The node's loans table and, per loan, (local account, start month, term) for withdrawals."""
    plan = reg.loans
    code, weight = REGIONS[region].code, REGIONS[region].weight
    idx = np.flatnonzero(plan.region == region)
    local = np.searchsorted(accounts, plan.account[idx])
    start, term, status = plan.start[idx], plan.term[idx], plan.status[idx]
    median = 350_000.0 * weight**0.25  # yuan
    principal = np.clip(median * rng.lognormal(0.0, 0.35, len(idx)), 50_000.0, 2.0 * median)
    principal_fen = (np.round(principal / 1000.0) * 1000.0 * 100.0).astype(np.int64)
    paid = LAST_MONTH - start - np.where(status == OVERDUE, rng.integers(1, 7, len(idx)), 0)
    running = (status == ACTIVE) | (status == OVERDUE)
    outstanding = np.where(running, _outstanding(principal_fen, term, paid), 0)
    loans: Columns = {
        "loan_id": np.array([f"L{code}{n:08d}" for n in plan.number[idx].tolist()], dtype=object),
        "person_id": pids[local],
        "city_code": _constant(code, len(idx)),
        "start_date": month_days(start) + rng.integers(0, 28, len(idx)),
        "principal_fen": principal_fen,
        "outstanding_fen": outstanding,
        "term_months": term.astype(np.int32),
        "status": _labels(LOAN_STATUSES, status),
    }
    return loans, local, start, term


def build_node(reg: Registry, region: int) -> NodeTables:
    """The four tables of region index ``region``: exactly ``reg.rows`` deposit rows."""
    rng = stream(reg.seed, _NODE, region)
    code = REGIONS[region].code
    accounts = reg.accounts_in(region)
    n = len(accounts)
    persons = reg.person[accounts]
    pids = reg.person_ids(persons)
    start, length = reg.start[accounts], reg.length[accounts]
    end = start + length - 1

    pool, current, previous = _employers(rng, code, n)
    changes = (length >= 24) & (rng.random(n) < EMPLOYER_CHANGE)
    change_at = np.where(changes, 6 + np.floor(rng.random(n) * (length - 11)).astype(np.int64), 0)
    now_fen = _monthly_now(rng, REGIONS[region].weight, n)

    owner = np.repeat(np.arange(n), length)
    offset = np.cumsum(length) - length
    step = np.arange(len(owner)) - offset[owner]
    month = start[owner] + step
    years_back = base_year(LAST_MONTH) - base_year(month)
    factor = WAGE_GROWTH ** -np.arange(int(years_back.max(initial=0)) + 1, dtype=np.float64)
    amount = np.rint(now_fen[owner] * factor[years_back]).astype(np.int64)
    employer = np.where(step < change_at[owner], previous[owner], current[owner])
    deposits: Columns = {
        "person_id": pids[owner],
        "city_code": _constant(code, len(owner)),
        "month": month_days(month),
        "amount_fen": amount,
        "employer_id": pool[employer],
    }

    retired = reg.retired_end[accounts]
    active = end == LAST_MONTH
    closed = ~active & (retired | (rng.random(n) < CLOSED_WHEN_LEAVING))
    status = np.where(active, _ACTIVE, np.where(closed, _CLOSED, _SEALED))

    loans, loan_account, loan_start, loan_term = _loans(rng, reg, region, accounts, pids)
    money = AccountMoney(start, length, closed, retired & closed, amount)
    out = draw_withdrawals(rng, money, loan_account, loan_start, loan_term)
    paid_in = np.bincount(owner, weights=amount, minlength=n)
    balance = np.rint(paid_in).astype(np.int64) - out.total_per_account(n)
    male = reg.male[persons]
    account_cols: Columns = {
        "person_id": pids,
        "city_code": _constant(code, n),
        "employer_id": pool[current],
        "open_date": month_days(start) - rng.integers(0, 25, n),
        "status": _labels(ACCOUNT_STATUSES, status),
        "balance_fen": balance,
        "monthly_deposit_fen": amount[offset + length - 1],
        "gender": _labels(GENDERS, male.astype(np.int64)),
        "birth_year": (yyyymmdd(reg.birth_day[persons]) // 10_000).astype(np.int32),
    }
    withdrawals: Columns = {
        "person_id": pids[out.account],
        "city_code": _constant(code, len(out.account)),
        "date": out.day,
        "amount_fen": out.amount,
        "reason": _labels(WITHDRAWAL_REASONS, out.reason),
    }
    return NodeTables(account_cols, deposits, withdrawals, loans)
