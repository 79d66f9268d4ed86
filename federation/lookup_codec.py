"""Person-lookup facts <-> BFV slots: nine slots per person (per city, for a breakdown), summed by the coordinator.

Every region answers a lookup with the same layout, so the coordinator's homomorphic sum gives the
federation-wide facts; with a breakdown each asked region writes into its own cell and nothing is summed
across cities. Per person and cell, slot by slot (a field ``f<<s`` sits at bit ``s`` of its slot)::

    0: cities | cities_active<<9 | cities_sealed<<18 | loan_cities<<27     each 0 or 1 per region
    1: contribution_months | failed<<29                                     months < 2**21 per region
    2: active_loans | overdue_loans<<19                                     each < 2**11 per region
    3-4: contribution_fen, 5-6: balance_fen, 7-8: outstanding_fen           two 30-bit limbs (signed 60-bit)

With at most 256 regions (``limb_codec.MAX_REGIONS``) no field's sum reaches the next field, and no slot sum
reaches half the plain modulus. A region whose figures for a person do not fit these ranges sends zeros and
``failed = 1`` for that person: the client then shows no figures for them rather than wrong ones.

>>> facts = np.array([[1, 1, 0, 1, 120, 0, 1, 0, 3_000_000, 500_000, 80_000_000]], dtype=np.int64)
>>> slots = encode_facts(facts, cells=1, cell=0)
>>> decode_facts(slots + slots, subjects=1, cells=1)[0][0]["contribution_months"]
240
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from federation.errors import CryptoError
from federation.he import SLOTS
from federation.limb_codec import LIMB_BITS, LIMB_MASK

# the columns of a facts matrix, in order (one row per person, as a region computes them)
FACT_COLUMNS: tuple[str, ...] = (
    "cities",
    "cities_active",
    "cities_sealed",
    "loan_cities",
    "contribution_months",
    "failed",
    "active_loans",
    "overdue_loans",
    "contribution_fen",
    "balance_fen",
    "outstanding_fen",
)
FLAGS = ("cities", "cities_active", "cities_sealed", "loan_cities")
MONEY = ("contribution_fen", "balance_fen", "outstanding_fen")
SLOTS_PER_CELL = 9
FLAG_BITS = 9
MONTHS_BITS, MONTHS_MAX = 29, 1 << 21
LOANS_BITS, LOANS_MAX = 19, 1 << 11
MONEY_MIN, MONEY_MAX = -(1 << 59), (1 << 59) - 1
LAYOUT_VERSION = "lookup/v1"
MAX_CELLS_SLOTS = 64 * 1024 * 1024  # no lookup lays out more slots than this

_COL = {name: i for i, name in enumerate(FACT_COLUMNS)}


def layout_fingerprint(subjects: int, cells: int) -> str:
    """What every party must agree on for a lookup's answer: the layout is a function of these alone."""
    return f"{LAYOUT_VERSION}:subjects={subjects}:cells={cells}"


def slot_count(subjects: int, cells: int) -> int:
    return subjects * cells * SLOTS_PER_CELL


def chunk_sizes(subjects: int, cells: int) -> list[int]:
    total = slot_count(subjects, cells)
    if not 0 < total <= MAX_CELLS_SLOTS:
        raise CryptoError("a lookup of this size cannot be laid out", code="LOOKUP_TOO_LARGE")
    full, rest = divmod(total, SLOTS)
    return [SLOTS] * full + ([rest] if rest else [])


def flags_fit(facts: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Per person, whether a region's flags are each 0 or 1."""
    flags = facts[:, [_COL[f] for f in FLAGS]]
    return ((flags == 0) | (flags == 1)).all(axis=1)


def fits(facts: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Per person, whether a region's counts and money fit the layout's ranges (and it did not fail)."""
    ok = np.ones(facts.shape[0], dtype=bool)
    months = facts[:, _COL["contribution_months"]]
    loans = facts[:, [_COL["active_loans"], _COL["overdue_loans"]]]
    money = facts[:, [_COL[m] for m in MONEY]]
    ok &= (months >= 0) & (months < MONTHS_MAX)
    ok &= ((loans >= 0) & (loans < LOANS_MAX)).all(axis=1)
    ok &= ((money >= MONEY_MIN) & (money <= MONEY_MAX)).all(axis=1)
    return ok & (facts[:, _COL["failed"]] == 0)


def encode_facts(facts: npt.NDArray[np.int64], *, cells: int, cell: int) -> npt.NDArray[np.int64]:
    """One region's slots for ``facts`` (one row per person, :data:`FACT_COLUMNS`), in cell ``cell`` of each.

    A person whose counts or money do not fit (see :func:`fits`) keeps the flags, with zeros for the rest and
    ``failed = 1``; flags that are not 0 or 1 zero the whole row.
    """
    if facts.ndim != 2 or facts.shape[1] != len(FACT_COLUMNS) or not 0 <= cell < cells:
        raise CryptoError("lookup facts do not match the layout", code="LOOKUP_LAYOUT")
    n = facts.shape[0]
    flags_ok = flags_fit(facts)
    ok = fits(facts) & flags_ok
    f = np.where(ok[:, None], facts, 0)
    f[:, [_COL[name] for name in FLAGS]] = np.where(flags_ok[:, None], facts[:, [_COL[name] for name in FLAGS]], 0)
    out = np.zeros((n, cells, SLOTS_PER_CELL), dtype=np.int64)
    c = out[:, cell, :]
    for i, name in enumerate(FLAGS):
        c[:, 0] |= f[:, _COL[name]] << (FLAG_BITS * i)
    c[:, 1] = f[:, _COL["contribution_months"]] | ((~ok).astype(np.int64) << MONTHS_BITS)
    c[:, 2] = f[:, _COL["active_loans"]] | (f[:, _COL["overdue_loans"]] << LOANS_BITS)
    for i, name in enumerate(MONEY):
        v = f[:, _COL[name]]
        c[:, 3 + 2 * i] = v & LIMB_MASK
        c[:, 4 + 2 * i] = v >> LIMB_BITS  # arithmetic shift: the signed top limb
    return out.reshape(-1)


@dataclass(frozen=True)
class PersonFacts:
    """Federation-wide (or one city's) facts about one person; ``None`` where a region's figures did not fit."""

    # in the order the CLI and the screening's output show them
    cities: int
    cities_active: int
    cities_sealed: int
    contribution_months: int | None
    contribution_fen: int | None
    balance_fen: int | None
    active_loans: int | None
    overdue_loans: int | None
    outstanding_fen: int | None
    loan_cities: int
    failed_regions: int

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    @property
    def duplicate_loans(self) -> bool:
        """Open (active or overdue) housing loans in two or more cities."""
        return self.loan_cities >= 2

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def decode_facts(slots: npt.NDArray[np.int64], *, subjects: int, cells: int) -> list[list[PersonFacts]]:
    """The summed slots back into facts: ``[person][cell]``."""
    if slots.shape != (slot_count(subjects, cells),):
        raise CryptoError("the answer does not match the lookup's layout", code="CIPHERTEXT_SHAPE")
    if int(slots.min(initial=0)) < -(1 << 38) or int(slots.max(initial=0)) >= 1 << 39:
        raise CryptoError("the answer holds values no lookup can produce", code="ANSWER_CORRUPT")
    s = slots.reshape(subjects * cells, SLOTS_PER_CELL)

    def col(i: int, shift: int, bits: int) -> list[int]:
        return ((s[:, i] >> shift) & ((1 << bits) - 1)).tolist()

    failed = col(1, MONTHS_BITS, FLAG_BITS)
    # joined as Python integers: a federation-wide sum of 60-bit values can pass 64 bits
    money = [
        [lo + (hi << LIMB_BITS) for lo, hi in zip(s[:, 3 + 2 * i].tolist(), s[:, 4 + 2 * i].tolist(), strict=True)]
        for i in range(len(MONEY))
    ]
    columns = zip(
        col(0, 0, FLAG_BITS),
        col(0, FLAG_BITS, FLAG_BITS),
        col(0, 2 * FLAG_BITS, FLAG_BITS),
        col(0, 3 * FLAG_BITS, FLAG_BITS),
        col(1, 0, MONTHS_BITS),
        col(2, 0, LOANS_BITS),
        col(2, LOANS_BITS, LOANS_BITS),
        money[0],
        money[1],
        money[2],
        failed,
        strict=True,
    )
    flat = []
    for c, ca, cs, lc, m, al, ol, cf, bf, of, fr in columns:
        exact = fr == 0  # else some region's figures did not fit: none are shown
        flat.append(
            PersonFacts(
                cities=c,
                cities_active=ca,
                cities_sealed=cs,
                contribution_months=m if exact else None,
                contribution_fen=cf if exact else None,
                balance_fen=bf if exact else None,
                active_loans=al if exact else None,
                overdue_loans=ol if exact else None,
                outstanding_fen=of if exact else None,
                loan_cities=lc,
                failed_regions=fr,
            )
        )
    return [flat[i * cells : (i + 1) * cells] for i in range(subjects)]


def _inconsistent(what: str) -> CryptoError:
    return CryptoError(
        f"the answer's facts contradict each other ({what}): it is not a sum of regions' answers",
        code="ANSWER_INCONSISTENT",
        hint="the coordinator or a region is misbehaving; ask again, and tell the federation operator if it repeats",
    )


def check_consistent(grid: list[list[PersonFacts]], *, answered: list[int], by_city: bool) -> None:
    """Refuse decoded facts that no set of regions' honest answers can sum to.

    Each region sends, per person, flags of 0 or 1 (an account, an active one, a sealed one, an open loan) and
    counts that follow from its rows: an active or sealed account is an account, an open loan is an active or
    overdue loan, and outstanding money, a balance or contributions only come with a loan, an account or a
    month of deposits. These hold of every region's figures, so of every sum of them; a sum that breaks one
    came from something other than the regions' answers. ``answered`` are the cells (by position in the
    breakdown) of the regions that answered: in a breakdown every other cell must be empty.

    >>> ok = PersonFacts(2, 1, 1, 13, 100, 50, 1, 0, 900, 1, 0)
    >>> check_consistent([[ok]], answered=[0, 1], by_city=False)
    >>> bad = PersonFacts(0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # an active account, and no account
    >>> check_consistent([[bad]], answered=[0, 1], by_city=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    federation.errors.CryptoError: [ANSWER_INCONSISTENT] the answer's facts contradict each other (an active or ...
    """
    present = set(answered)
    for row in grid:
        for cell, facts in enumerate(row):
            if by_city and cell not in present:
                if any(facts.as_dict().values()):
                    raise _inconsistent("figures from a region that did not answer")
                continue
            _check_person(facts, 1 if by_city else len(answered))


def _check_person(f: PersonFacts, most: int) -> None:
    if not 0 <= f.cities <= most or not 0 <= f.loan_cities <= most or not 0 <= f.failed_regions <= most:
        raise _inconsistent("more cities than regions answered")
    if f.cities_active > f.cities or f.cities_sealed > f.cities:
        raise _inconsistent("an active or sealed account without an account")
    if f.failed_regions:
        return  # the counts and money are not shown: nothing more to compare
    assert f.active_loans is not None and f.overdue_loans is not None and f.outstanding_fen is not None
    open_loans = f.active_loans + f.overdue_loans
    if f.loan_cities > open_loans or (open_loans and not f.loan_cities):
        raise _inconsistent("open loans and the cities holding them disagree")
    if not open_loans and f.outstanding_fen:
        raise _inconsistent("money outstanding without an open loan")
    if not f.cities and f.balance_fen:
        raise _inconsistent("a balance without an account")
    if not f.contribution_months and f.contribution_fen:
        raise _inconsistent("contributions without a month of deposits")
