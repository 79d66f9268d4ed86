"""Calendar arithmetic and the life events of synthetic contributors (birth, career, contribution history).

Months are integers counted from January 1970 (``month_index(1970, 1) == 0``); days are integers counted from
1970-01-01, which is how the generator hands dates to DuckDB.

>>> month_index(1995, 1)
300
>>> int(month_days(np.array([300]))[0]), int(yyyymmdd(np.array([9131]))[0])
(9131, 19950101)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

FIRST_MONTH = 300  # 1995-01: the earliest contribution on record
LAST_MONTH = 677  # 2026-06: the month the synthetic data is "as of"
RETIREMENT_AGE = {True: 60, False: 55}  # men, women (simplified)
STILL_CONTRIBUTING = 0.85  # share of working-age people whose latest account is still paid into


def month_index(year: int, month: int) -> int:
    """Months since January 1970."""
    return (year - 1970) * 12 + month - 1


def stream(seed: int, *key: int) -> np.random.Generator:
    """An independent PCG64 generator for ``(seed, *key)``: one per purpose and region."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *key])))


def month_days(months: npt.ArrayLike) -> IntArray:
    """Days since 1970-01-01 of the first day of each month index."""
    m = np.asarray(months, dtype=np.int64)
    return m.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def day_month(days: npt.ArrayLike) -> IntArray:
    """Month index of each day."""
    return np.asarray(days, dtype=np.int64).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def yyyymmdd(days: npt.ArrayLike) -> IntArray:
    """Days since 1970-01-01 as integers ``YYYYMMDD``."""
    d = np.asarray(days, dtype=np.int64).astype("datetime64[D]")
    months = d.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (d - months.astype("datetime64[D]")).astype(np.int64) + 1
    return year * 10_000 + month * 100 + day


def base_year(months: npt.ArrayLike) -> IntArray:
    """The contribution-base year of each month: bases are reset every July."""
    return (np.asarray(months, dtype=np.int64) - 6) // 12


@dataclass(frozen=True)
class Lives:
    """Per-person draws: birth, gender and the window in which they could contribute."""

    birth_day: IntArray
    male: BoolArray
    career_start: IntArray  # first month they could contribute
    career_end: IntArray  # last month they could contribute (retirement or LAST_MONTH)
    retired: BoolArray  # career_end is the month before retirement, before LAST_MONTH

    def __len__(self) -> int:
        return len(self.birth_day)

    def take(self, index: npt.NDArray[np.intp] | slice) -> Lives:
        return Lives(*(a[index] for a in self._arrays()))  # type: ignore[arg-type]

    def _arrays(self) -> tuple[npt.NDArray[np.generic], ...]:
        return (self.birth_day, self.male, self.career_start, self.career_end, self.retired)

    @staticmethod
    def concat(parts: list[Lives]) -> Lives:
        return Lives(*(np.concatenate(column) for column in zip(*(p._arrays() for p in parts), strict=True)))


def draw_lives(rng: np.random.Generator, n: int) -> Lives:
    """Ages 19-66 at the as-of month (most 28-48), gender, career start at about 23."""
    age = rng.normal(38.0, 10.0, n)
    outside = (age < 19.0) | (age > 66.0)
    age[outside] = rng.uniform(19.0, 66.0, int(outside.sum()))
    last_day = int(month_days([LAST_MONTH + 1])[0]) - 1
    birth_day = last_day - np.floor(age * 365.2425).astype(np.int64)
    male = rng.random(n) < 0.52
    birth_month = day_month(birth_day)
    start_age = 18.0 + rng.gamma(2.0, 2.5, n)
    career_start = np.maximum(birth_month + np.round(start_age * 12).astype(np.int64), FIRST_MONTH)
    retirement = birth_month + np.where(male, RETIREMENT_AGE[True], RETIREMENT_AGE[False]) * 12
    career_end = np.minimum(retirement - 1, LAST_MONTH)
    career_start = np.minimum(career_start, career_end)
    return Lives(birth_day, male, career_start, career_end, career_end < LAST_MONTH)


def draw_end(rng: np.random.Generator, lives: Lives, min_span: int = 1) -> IntArray:
    """Last month contributed: the career end for most, an earlier month for people who stopped."""
    n = len(lives)
    earliest = np.minimum(lives.career_start + min_span - 1, lives.career_end)
    early = month_in(rng, earliest, lives.career_end)
    keep = rng.random(n) < STILL_CONTRIBUTING
    return np.where(keep, lives.career_end, early)


def month_in(rng: np.random.Generator, lo: IntArray, hi: IntArray) -> IntArray:
    """A uniform month in ``[lo, hi]`` per element."""
    return lo + np.floor(rng.random(len(lo)) * (hi - lo + 1)).astype(np.int64)


def draw_lengths(rng: np.random.Generator, n: int, mean_months: float) -> IntArray:
    """History lengths in months: mostly a few years, from one month to decades (gamma, shape 1.2)."""
    shape = 1.2
    return np.ceil(rng.gamma(shape, mean_months / shape, n)).astype(np.int64)


def weighted_choice(rng: np.random.Generator, weights: npt.NDArray[np.float64], n: int) -> IntArray:
    """``n`` indices drawn with probability proportional to ``weights``."""
    cdf = np.cumsum(weights) / weights.sum()
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(weights) - 1).astype(np.int64)
