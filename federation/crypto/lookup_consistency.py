"""The client's last check of a person lookup's decoded answer: figures no set of regions' honest answers can sum
to are refused (``ANSWER_INCONSISTENT``), so a coordinator or region that made them up is caught, not shown."""

from __future__ import annotations

from hpf.federation.crypto.lookup_codec import PersonFacts
from hpf.federation.errors import CryptoError


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
    hpf.federation.errors.CryptoError: [ANSWER_INCONSISTENT] the answer's facts contradict each other (an active or ...
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
    """The checks whose facts were asked for (a field not asked for is None, and its checks are skipped)."""
    if any(v is not None and not 0 <= v <= most for v in (f.cities, f.loan_cities, f.failed_regions)):
        raise _inconsistent("more cities than regions answered")
    if f.cities is not None and (
        f.cities_active is None or f.cities_sealed is None or f.cities_active > f.cities or f.cities_sealed > f.cities
    ):
        raise _inconsistent("an active or sealed account without an account")
    if f.failed_regions:
        return  # the counts and money are not shown: nothing more to compare
    if f.active_loans is not None and f.overdue_loans is not None and f.outstanding_fen is not None:
        open_loans = f.active_loans + f.overdue_loans
        if f.loan_cities is not None and (f.loan_cities > open_loans or (open_loans and not f.loan_cities)):
            raise _inconsistent("open loans and the cities holding them disagree")
        if not open_loans and f.outstanding_fen:
            raise _inconsistent("money outstanding without an open loan")
    if f.cities is not None and not f.cities and f.balance_fen:
        raise _inconsistent("a balance without an account")
    if f.contribution_months is not None and not f.contribution_months and f.contribution_fen:
        raise _inconsistent("contributions without a month of deposits")
