"""Person-lookup facts <-> BFV slots: up to nine slots per person (per city, for a breakdown), summed by the
coordinator.

A lookup names the facts it asks for (:data:`FACTS`, signed in its envelope); the layout is a pure function of
them, so every region lays out the same vector and leaves out every slot of a fact not asked for (a region never
computes a slot it is not asked: its figures for other facts are not in the answer, not even as zeros). Every
region answers with the same layout, so the coordinator's homomorphic sum gives the federation-wide facts; with
a breakdown each asked region writes into its own cell and nothing is summed across cities. Per person and cell,
the slots present, in this order (a field ``f<<s`` sits at bit ``s`` of its slot)::

    flags:   cities | cities_active<<9 | cities_sealed<<18 | loan_cities<<27     each 0 or 1 per region; always
    status:  contribution_months | failed<<29                                     months < 2**21; always
    loans:   active_loans | overdue_loans<<19                                     each < 2**11    (loans)
    contribution_fen, balance_fen, outstanding_fen: two 30-bit limbs (signed 60-bit) each
                                                      (contributions, balance, loans)

Fields of facts not asked for are zero in the flags and status slots. With every fact asked for the layout is
nine slots per cell, as it always was. With at most 256 regions (``limb_codec.MAX_REGIONS``) no field's sum
reaches the next field, and no slot sum reaches half the plain modulus. A region whose figures for a person do
not fit these ranges sends zeros and ``failed = 1`` for that person: the client then shows no figures for them
rather than wrong ones.

>>> facts = np.array([[1, 1, 0, 1, 120, 0, 1, 0, 3_000_000, 500_000, 80_000_000]], dtype=np.int64)
>>> slots = encode_facts(facts, cells=1, cell=0)
>>> decode_facts(slots + slots, subjects=1, cells=1)[0][0]["contribution_months"]
240
>>> bank = ("duplicate_loans", "loan_cities")
>>> slots = encode_facts(facts, cells=1, cell=0, facts=bank)
>>> len(slots), decode_facts(slots + slots, subjects=1, cells=1, facts=bank)[0][0].balance_fen
(2, None)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from hpf.federation.consent.tokens import FACTS
from hpf.federation.crypto.he import SLOTS
from hpf.federation.crypto.limb_codec import LIMB_BITS, LIMB_MASK
from hpf.federation.errors import CryptoError, PlanError

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
# a region's ``failed`` column: one bit per money sum that does not fit the layout. Only the bits of the sums a
# lookup asks for count: that a balance did not fit is a fact about a balance, which a bank's loan review never gets
FAILED_BITS = {"contribution_fen": 1, "balance_fen": 2, "outstanding_fen": 4}
SLOTS_PER_CELL = 9  # with every fact asked for
FLAG_BITS = 9
MONTHS_BITS, MONTHS_MAX = 29, 1 << 21
LOANS_BITS, LOANS_MAX = 19, 1 << 11
MONEY_MIN, MONEY_MAX = -(1 << 59), (1 << 59) - 1
LAYOUT_VERSION = "lookup/v2"
MAX_CELLS_SLOTS = 64 * 1024 * 1024  # no lookup lays out more slots than this

_COL = {name: i for i, name in enumerate(FACT_COLUMNS)}

# What each fact a lookup may ask for releases: the PersonFacts fields its slots carry. ``duplicate_loans`` is
# carried as the number of cities with an open loan (the client compares it with 2): a sum under BFV cannot be
# released as a yes or no without its count, and a threshold released alone needs another protocol.
FACT_FIELDS: dict[str, tuple[str, ...]] = {
    "duplicate_loans": ("loan_cities",),
    "loan_cities": ("loan_cities",),
    "balance": ("balance_fen",),
    "contributions": ("contribution_months", "contribution_fen"),
    "accounts": ("cities", "cities_active", "cities_sealed"),
    "loans": ("active_loans", "overdue_loans", "outstanding_fen"),
}
assert set(FACT_FIELDS) == set(FACTS)

# every slot of a cell with every fact asked for, in order, and the fact that brings it (None: always present)
_SLOTS: tuple[tuple[str, str | None], ...] = (
    ("flags", None),
    ("status", None),
    ("loans", "loans"),
    ("contribution_fen.lo", "contributions"),
    ("contribution_fen.hi", "contributions"),
    ("balance_fen.lo", "balance"),
    ("balance_fen.hi", "balance"),
    ("outstanding_fen.lo", "loans"),
    ("outstanding_fen.hi", "loans"),
)


# What a lookup asks for when the asker names no facts (hpf lookup/screen --facts): a fixed default per role and
# purpose, the same for every client, so that a bank's screening for a loan review asks for what a loan decision
# needs and nothing more; every other role and purpose asks for every fact its policy may allow. A region's
# policy (lookups.facts) has the last word: asking for more than it allows is refused, never trimmed.
DEFAULT_FACTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("integrator", "loan-review"): ("duplicate_loans", "loan_cities"),
}


def default_facts(role: str | None, purpose: str | None) -> tuple[str, ...]:
    """
    >>> default_facts("integrator", "loan-review"), default_facts("caseworker", "loan-review") == FACTS
    (('duplicate_loans', 'loan_cities'), True)
    """
    return DEFAULT_FACTS.get((role or "", purpose or ""), FACTS)


def requested_facts(names: Iterable[str]) -> tuple[str, ...]:
    """The facts asked for, each once, in :data:`FACTS` order; ValueError for none or an unknown one.

    >>> requested_facts(["loan_cities", "duplicate_loans", "loan_cities"])
    ('duplicate_loans', 'loan_cities')
    """
    asked = set()
    for name in names:
        if name not in FACT_FIELDS:
            raise ValueError(f"unknown fact {str(name)[:40]!r}: facts are {', '.join(FACTS)}")
        asked.add(name)
    if not asked:
        raise ValueError(f"name at least one fact: {', '.join(FACTS)}")
    return tuple(f for f in FACTS if f in asked)


def facts_asked(names: Iterable[str]) -> tuple[str, ...]:
    """The facts a signed lookup asks for (``LookupSpec.facts``; none named: every fact), or ``LOOKUP_MALFORMED``.

    >>> facts_asked([]) == FACTS, facts_asked(["balance"])
    (True, ('balance',))
    """
    names = list(names)
    if not names:
        return FACTS
    if len(names) > len(FACTS) or len(set(names)) != len(names):
        raise PlanError("a lookup names a fact twice, or too many", code="LOOKUP_MALFORMED")
    try:
        return requested_facts(names)
    except ValueError as err:
        raise PlanError(str(err), code="LOOKUP_MALFORMED", hint=f"facts: {', '.join(FACTS)}") from None


def fields_of(facts: Iterable[str]) -> frozenset[str]:
    """The PersonFacts fields the facts release."""
    return frozenset(field for fact in requested_facts(facts) for field in FACT_FIELDS[fact])


def _slots_of(facts: Iterable[str]) -> list[int]:
    """The positions (among the nine of every fact) of the slots a cell holds for these facts."""
    asked = requested_facts(facts)
    return [i for i, (_, fact) in enumerate(_SLOTS) if fact is None or fact in asked]


def slots_per_cell(facts: Iterable[str] = FACTS) -> int:
    """
    >>> slots_per_cell(), slots_per_cell(["duplicate_loans", "loan_cities"]), slots_per_cell(["balance"])
    (9, 2, 4)
    """
    return len(_slots_of(facts))


def layout_fingerprint(subjects: int, cells: int, facts: Iterable[str] = FACTS) -> str:
    """What every party must agree on for a lookup's answer: the layout is a function of these alone.

    >>> layout_fingerprint(3, 1, ["loan_cities", "duplicate_loans"])
    'lookup/v2:subjects=3:cells=1:facts=duplicate_loans,loan_cities'
    """
    return f"{LAYOUT_VERSION}:subjects={subjects}:cells={cells}:facts={','.join(requested_facts(facts))}"


def slot_count(subjects: int, cells: int, facts: Iterable[str] = FACTS) -> int:
    return subjects * cells * slots_per_cell(facts)


def chunk_sizes(subjects: int, cells: int, facts: Iterable[str] = FACTS) -> list[int]:
    total = slot_count(subjects, cells, facts)
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


def encode_facts(
    rows: npt.NDArray[np.int64], *, cells: int, cell: int, facts: Iterable[str] = FACTS
) -> npt.NDArray[np.int64]:
    """One region's slots for ``rows`` (one row per person, :data:`FACT_COLUMNS`), in cell ``cell`` of each,
    holding only the fields of ``facts`` (the others are zeroed before anything else, and their slots left out).

    A person whose counts or money do not fit (see :func:`fits`) keeps the flags, with zeros for the rest and
    ``failed = 1``; flags that are not 0 or 1 zero the whole row.
    """
    if rows.ndim != 2 or rows.shape[1] != len(FACT_COLUMNS) or not 0 <= cell < cells:
        raise CryptoError("lookup facts do not match the layout", code="LOOKUP_LAYOUT")
    try:
        keep = fields_of(facts)
        kept = _slots_of(facts)
    except ValueError:
        raise CryptoError("lookup facts do not match the layout", code="LOOKUP_LAYOUT") from None
    values = rows.copy()
    values[:, [i for i, name in enumerate(FACT_COLUMNS) if name not in keep and name != "failed"]] = 0
    failed = values[:, _COL["failed"]]
    known = sum(FAILED_BITS.values())
    # a failure of a sum not asked for is dropped; any other failure (not one of the sums' bits) stands
    values[:, _COL["failed"]] = np.where(
        failed & ~known, 1, failed & sum(bit for name, bit in FAILED_BITS.items() if name in keep)
    )
    n = values.shape[0]
    flags_ok = flags_fit(values)
    ok = fits(values) & flags_ok
    f = np.where(ok[:, None], values, 0)
    f[:, [_COL[name] for name in FLAGS]] = np.where(flags_ok[:, None], values[:, [_COL[name] for name in FLAGS]], 0)
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
    return out[:, :, kept].reshape(-1)


@dataclass(frozen=True)
class PersonFacts:
    """Federation-wide (or one city's) facts about one person; ``None`` for a fact not asked for, and for counts
    and money where a region's figures did not fit."""

    # in the order the CLI and the screening's output show them
    cities: int | None
    cities_active: int | None
    cities_sealed: int | None
    contribution_months: int | None
    contribution_fen: int | None
    balance_fen: int | None
    active_loans: int | None
    overdue_loans: int | None
    outstanding_fen: int | None
    loan_cities: int | None
    failed_regions: int

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    @property
    def duplicate_loans(self) -> bool | None:
        """Open (active or overdue) housing loans in two or more cities (None when not asked for)."""
        return None if self.loan_cities is None else self.loan_cities >= 2

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def only(self, facts: Iterable[str]) -> PersonFacts:
        """These facts as an answer asking for ``facts`` holds them: the fields of other facts None."""
        return _only(self.as_dict(), fields_of(facts))

    def shown(self, facts: Iterable[str] = FACTS) -> dict[str, Any]:
        """The fields of the facts asked for (``duplicate_loans`` as a yes or no), in the order shown, and
        ``failed_regions``.

        >>> PersonFacts(2, 1, 1, 13, 100, 50, 1, 0, 900, 3, 0).shown(["duplicate_loans"])
        {'duplicate_loans': True, 'failed_regions': 0}
        """
        asked = requested_facts(facts)
        fields = {field for fact in asked if fact != "duplicate_loans" for field in FACT_FIELDS[fact]}
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name in fields}
        if "duplicate_loans" in asked:
            out["duplicate_loans"] = self.duplicate_loans
        return out | {"failed_regions": self.failed_regions}


def decode_facts(
    slots: npt.NDArray[np.int64], *, subjects: int, cells: int, facts: Iterable[str] = FACTS
) -> list[list[PersonFacts]]:
    """The summed slots back into facts: ``[person][cell]``; fields of facts not asked for are None."""
    if slots.shape != (slot_count(subjects, cells, facts),):
        raise CryptoError("the answer does not match the lookup's layout", code="CIPHERTEXT_SHAPE")
    if int(slots.min(initial=0)) < -(1 << 38) or int(slots.max(initial=0)) >= 1 << 39:
        raise CryptoError("the answer holds values no lookup can produce", code="ANSWER_CORRUPT")
    facts = requested_facts(facts)
    keep = fields_of(facts)
    s = np.zeros((subjects * cells, SLOTS_PER_CELL), dtype=np.int64)
    s[:, _slots_of(facts)] = slots.reshape(subjects * cells, slots_per_cell(facts))

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
        found: dict[str, Any] = dict(
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
        flat.append(_only(found, keep))
    return [flat[i * cells : (i + 1) * cells] for i in range(subjects)]


_ALL = fields_of(FACTS)


def _only(values: dict[str, Any], keep: frozenset[str]) -> PersonFacts:
    kept: dict[str, Any] = {k: v if k in keep or k not in _ALL else None for k, v in values.items()}
    return PersonFacts(**kept)
