"""The global person registry: every contributor of all 41 regions, their accounts and their loans.

Built from ``(seed, rows)`` alone, so a region's data never depends on which other regions are generated.
Two populations:

- movers (about 8% of people) hold accounts in 2 to 4 cities, one after another (the latest usually in a
  bigger city); they are drawn first, for the whole federation;
- stayers hold one account; each region draws stayers until its deposit months reach exactly ``rows``.

Accounts are contiguous per person and in time order. Only integers live here; identity strings are made
per node (:meth:`Registry.person_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from hpf.demo.synth.loan_plan import LoanPlan, plan_loans
from hpf.demo.synth.timeline import (
    BoolArray,
    IntArray,
    Lives,
    draw_end,
    draw_lengths,
    draw_lives,
    stream,
    weighted_choice,
    yyyymmdd,
)
from hpf.federation.person_id import person_id_array
from hpf.federation.regions import REGIONS

MIN_ROWS = 100
WEIGHTS = np.array([r.weight for r in REGIONS], dtype=np.float64)
CODES = np.array([int(r.code) for r in REGIONS], dtype=np.int64)
MEAN_MONTHS = 36.0 * (WEIGHTS.max() / WEIGHTS) ** 0.3  # big cities: more people, shorter histories
MOVER_RATE = 0.097  # movers per expected person; comes out at about 8% of all people
MOVER_MEAN_MONTHS = 90.0
MOVER_CITIES = (np.array([2, 3, 4]), np.array([0.80, 0.17, 0.03]))
MOVER_MIN_WINDOW = 24
BORN_AT_HOME = 0.75

_MOVERS, _STAYERS, _LOANS = 1, 2, 3  # stream keys


@dataclass(frozen=True)
class Registry:
    """Persons (index p) and accounts (index a) of the whole federation."""

    seed: int
    rows: int
    birth_region: IntArray  # region index of the person_id's 6-digit code
    birth_day: IntArray
    male: BoolArray
    sequence: IntArray  # 3-digit sequence of the person_id (odd for men)
    first_account: IntArray
    account_count: IntArray
    mover: BoolArray
    person: IntArray  # per account
    region: IntArray
    start: IntArray  # first month contributed
    length: IntArray  # months contributed (= deposit rows)
    retired_end: BoolArray  # the account stopped at retirement
    loans: LoanPlan
    planted: IntArray  # persons holding two active loans in two cities

    def accounts_in(self, region: int) -> npt.NDArray[np.intp]:
        """Account indices of one region, ascending."""
        return np.flatnonzero(self.region == region)

    def person_ids(self, persons: npt.NDArray[np.intp]) -> npt.NDArray[np.object_]:
        """Identity numbers of the given persons."""
        born = yyyymmdd(self.birth_day[persons])
        return person_id_array(CODES[self.birth_region[persons]], born, self.sequence[persons])


@dataclass(frozen=True)
class _Accounts:
    person: IntArray
    region: IntArray
    start: IntArray
    length: IntArray
    retired_end: BoolArray


def _expected_people(rows: int) -> float:
    return float((rows / MEAN_MONTHS).sum())


def _draw_movers(seed: int, rows: int) -> tuple[Lives, _Accounts, IntArray]:
    """Movers' lives, their accounts (person-major, time order) and the region of their first account."""
    rng = stream(seed, _MOVERS)
    n = max(2, round(MOVER_RATE * _expected_people(rows)))
    pool = draw_lives(rng, 2 * n)
    ok = np.flatnonzero(pool.career_end - pool.career_start + 1 >= MOVER_MIN_WINDOW)
    while len(ok) < n:  # movers have worked at least two years
        pool = Lives.concat([pool, draw_lives(rng, n)])
        ok = np.flatnonzero(pool.career_end - pool.career_start + 1 >= MOVER_MIN_WINDOW)
    lives = pool.take(ok[:n])
    k = rng.choice(MOVER_CITIES[0], size=n, p=MOVER_CITIES[1])
    keys = np.log(WEIGHTS)[None, :] + rng.gumbel(size=(n, len(REGIONS)))
    top = np.argsort(-keys, axis=1, kind="stable")[:, :4]
    regions = top[:, ::-1]  # column 3 (the latest account) is the most likely, biggest city
    valid = np.arange(4)[None, :] >= (4 - k)[:, None]

    end = draw_end(rng, lives, MOVER_MIN_WINDOW)
    avail = end - lives.career_start + 1
    gaps = rng.integers(0, 5, size=(n, 4)) * valid
    gaps[:, 3] = 0
    gaps[avail - gaps.sum(axis=1) < 2 * k] = 0
    total = np.clip(draw_lengths(rng, n, MOVER_MEAN_MONTHS), 2 * k, avail - gaps.sum(axis=1))
    share = rng.gamma(2.0, size=(n, 4)) * valid
    length = 1 + np.floor(share / share.sum(axis=1)[:, None] * (total - k)[:, None]).astype(np.int64)
    length *= valid
    length[:, 3] += total - length.sum(axis=1)
    start = np.zeros((n, 4), dtype=np.int64)
    seg_end = end.copy()
    for j in range(3, -1, -1):  # lay segments out backwards from the last month contributed
        start[:, j] = seg_end - length[:, j] + 1
        seg_end = start[:, j] - gaps[:, j - 1] - 1
    retired = np.zeros((n, 4), dtype=bool)
    retired[:, 3] = lives.retired & (end == lives.career_end)
    person = np.broadcast_to(np.arange(n)[:, None], (n, 4))
    accounts = _Accounts(person[valid], regions[valid], start[valid], length[valid], retired[valid])
    first_region = regions[np.arange(n), 4 - k]
    return lives, accounts, first_region


def _trim(accounts: _Accounts, rows: int) -> None:
    """Keep movers under half of each region's deposit rows (matters only for tiny ``rows``)."""
    cap = rows // 2
    for r in range(len(REGIONS)):
        mask = accounts.region == r
        total = int(accounts.length[mask].sum())
        if total > cap:
            new = np.maximum(1, accounts.length[mask] * cap // total)
            accounts.start[mask] += accounts.length[mask] - new
            accounts.length[mask] = new


def _draw_stayers(seed: int, region: int, months: int) -> tuple[Lives, IntArray, IntArray]:
    """Stayers of one region whose histories add up to exactly ``months``: lives, starts, lengths."""
    rng = stream(seed, _STAYERS, region)
    mean = float(MEAN_MONTHS[region])
    parts: list[tuple[Lives, IntArray, IntArray]] = []
    total = 0
    while total < months:
        n = int((months - total) / (0.6 * mean)) + 16
        lives = draw_lives(rng, n)
        end = draw_end(rng, lives)
        length = np.minimum(draw_lengths(rng, n, mean), end - lives.career_start + 1)
        parts.append((lives, end, length))
        total += int(length.sum())
    lives = Lives.concat([p[0] for p in parts])
    end = np.concatenate([p[1] for p in parts])
    length = np.concatenate([p[2] for p in parts])
    cum = np.cumsum(length)
    keep = int(np.searchsorted(cum, months)) + 1  # first prefix reaching ``months``
    length = length[:keep].copy()
    length[-1] -= int(cum[keep - 1]) - months
    return lives.take(slice(0, keep)), end[:keep] - length + 1, length


def _sequences(birth_region: IntArray, birth_day: IntArray, male: BoolArray) -> IntArray:
    """Unique person_id sequences: rank within (birth region, birth day, gender), odd for men."""
    order = np.lexsort((np.arange(len(male)), male, birth_day, birth_region))
    key = np.stack([birth_region[order], birth_day[order], male[order].astype(np.int64)])
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = (key[:, 1:] != key[:, :-1]).any(axis=0)
    starts = np.flatnonzero(new_group)
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.append(starts, len(order))))
    if len(rank) and rank.max() >= 500:
        raise ValueError("too many synthetic people born on one day in one region; use fewer rows")
    seq = np.empty(len(order), dtype=np.int64)
    seq[order] = 2 * rank + male[order]
    return seq


@lru_cache(maxsize=2)
def build_registry(seed: int, rows: int) -> Registry:
    """The registry for ``(seed, rows)``: cheap (persons only), cached for the last two calls."""
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed}")
    if rows < MIN_ROWS:
        raise ValueError(f"rows must be at least {MIN_ROWS} deposit rows per node, not {rows}")
    lives, movers, first_region = _draw_movers(seed, rows)
    _trim(movers, rows)
    n_movers = len(lives)
    born_rng = stream(seed, _MOVERS, 1)
    away = weighted_choice(born_rng, WEIGHTS, n_movers)
    birth_region = [np.where(born_rng.random(n_movers) < 0.6, first_region, away)]
    all_lives = [lives]
    acc = [movers]
    for r in range(len(REGIONS)):
        months = rows - int(movers.length[movers.region == r].sum())
        s_lives, s_start, s_length = _draw_stayers(seed, r, months)
        n = len(s_lives)
        p0 = sum(len(x) for x in all_lives)
        rng = stream(seed, _STAYERS, r, 1)
        birth_region.append(np.where(rng.random(n) < BORN_AT_HOME, r, weighted_choice(rng, WEIGHTS, n)))
        all_lives.append(s_lives)
        retired_end = s_lives.retired & (s_start + s_length - 1 == s_lives.career_end)
        acc.append(_Accounts(np.arange(p0, p0 + n), np.full(n, r), s_start, s_length, retired_end))
    born = np.concatenate([x.birth_day for x in all_lives])
    male = np.concatenate([x.male for x in all_lives])
    region_of_birth = np.concatenate(birth_region).astype(np.int64)
    person = np.concatenate([a.person for a in acc]).astype(np.int64)
    count = np.bincount(person, minlength=len(born)).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    region = np.concatenate([a.region for a in acc]).astype(np.int64)
    start = np.concatenate([a.start for a in acc]).astype(np.int64)
    length = np.concatenate([a.length for a in acc]).astype(np.int64)
    loans, planted = plan_loans(stream(seed, _LOANS), first, count, region, start, length)
    registry = Registry(
        seed=seed,
        rows=rows,
        birth_region=region_of_birth,
        birth_day=born,
        male=male,
        sequence=_sequences(region_of_birth, born, male),
        first_account=first,
        account_count=count,
        mover=count > 1,
        person=person,
        region=region,
        start=start,
        length=length,
        retired_end=np.concatenate([a.retired_end for a in acc]),
        loans=loans,
        planted=planted,
    )
    for holder in (registry, loans):  # shared through the cache: nobody may change them
        for f in fields(holder):
            value = getattr(holder, f.name)
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
    return registry
