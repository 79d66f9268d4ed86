"""The stages of a person lookup's check, after the asker's role and its lookups (:func:`policies.engine.check_lookup`).

Each stage takes the :class:`LookupCheck` and refuses with a ``POLICY_`` code; :data:`LOOKUP_STAGES` runs them
in order. The codes and what they mean are listed in :mod:`policies.engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from hpf.federation.errors import PolicyViolation
from hpf.policies.model import LookupPolicy, Policy
from hpf.policies.refusals import show, unclassified_hint


@dataclass(frozen=True)
class LookupCheck:
    """A lookup of ``subjects`` identifiers asking for ``facts``, and the role's ``lookups`` that judge it.

    ``unclassified`` are the columns every lookup reads that the catalog gives no class (``table.column``).
    """

    policy: Policy
    party: str
    role_name: str
    lookups: LookupPolicy
    # what is asked: which facts, why, under which consent, about how many people, per city or not
    facts: tuple[str, ...]
    purpose: str
    consent: bool
    subjects: int
    breakdown: bool
    home: str | None  # the asker's home region (their certificate's)
    regions: tuple[Collection[str], Collection[str]] | None  # the regions asked, and the catalog's; None: every region
    unclassified: Sequence[str]

    @property
    def base(self) -> str:
        """Where the role's lookups are written."""
        return f"roles.{self.role_name}.lookups"

    @property
    def purposes(self) -> str:
        return " | ".join(self.lookups.purposes)

    def refuse(self, code: str, message: str, rule: str, hint: str) -> PolicyViolation:
        """A refusal whose rule names this node."""
        return PolicyViolation(message, code=code, rule=f"{self.party}: {rule}", hint=hint)


def _columns_classified(c: LookupCheck) -> None:
    """``POLICY_COLUMN_UNCLASSIFIED``: no policy allows a column without a class, its lookups neither."""
    if c.unclassified:
        table, _, column = c.unclassified[0].partition(".")
        raise c.refuse(
            "POLICY_COLUMN_UNCLASSIFIED",
            f"a person lookup reads column {column} of {table}, which has no class in this node's catalog, so no "
            "policy allows it",
            "classes",
            unclassified_hint(table, column),
        )


def _purpose_allowed(c: LookupCheck) -> None:
    """``POLICY_PURPOSE_REQUIRED``, ``POLICY_PURPOSE_UNKNOWN``, ``POLICY_PURPOSE_NOT_ALLOWED``: a purpose is given,
    the policy declares it, and it is one of the role's lookup purposes."""
    known = f"purposes for a lookup here: {c.purposes}"
    if not c.purpose:
        raise c.refuse(
            "POLICY_PURPOSE_REQUIRED",
            "a person lookup needs a purpose",
            f"{c.base}.purposes",
            f"give --purpose {c.purposes}",
        )
    if c.purpose not in c.policy.purposes:
        raise c.refuse(
            "POLICY_PURPOSE_UNKNOWN",
            f"purpose {show(c.purpose)} is not declared by this node",
            "purposes",
            known,
        )
    if c.purpose not in c.lookups.purposes:
        raise c.refuse(
            "POLICY_PURPOSE_NOT_ALLOWED",
            f"purpose {c.purpose!r} does not allow a person lookup by role {c.role_name}",
            f"{c.base}.purposes",
            known,
        )


def _facts_allowed(c: LookupCheck) -> None:
    """``POLICY_FACTS_NOT_ALLOWED``: every fact asked for is under the role's ``facts``."""
    not_allowed = [f for f in c.facts if f not in c.lookups.facts]
    if not_allowed:
        raise c.refuse(
            "POLICY_FACTS_NOT_ALLOWED",
            f"role {c.role_name} may not receive {', '.join(show(f) for f in not_allowed)} from a person lookup at "
            "this node",
            f"{c.base}.facts",
            f"facts for role {c.role_name} here: {', '.join(c.lookups.facts)} (hpf lookup/screen --facts)",
        )


def _consent_given(c: LookupCheck) -> None:
    """``POLICY_CONSENT_REQUIRED``: a consent reference where the role's lookups require one."""
    if c.lookups.consent == "required" and not c.consent:
        raise c.refuse(
            "POLICY_CONSENT_REQUIRED",
            "a person lookup needs the person's consent reference",
            f"{c.base}.consent",
            "give --consent REF: the reference of the consent record",
        )


def _few_enough(c: LookupCheck) -> None:
    """``POLICY_LOOKUP_TOO_MANY``: at most ``max_subjects`` identifiers in one request."""
    most = c.lookups.max_subjects
    if c.subjects > most:
        raise c.refuse(
            "POLICY_LOOKUP_TOO_MANY",
            f"{c.subjects} people in one request; role {c.role_name} may ask about {most} at a time",
            f"{c.base}.max_subjects",
            f"send at most {most} per request",
        )


def _figures_allowed(c: LookupCheck) -> None:
    """``POLICY_BREAKDOWN_DENIED``: a region's own figures only for a purpose under ``breakdown``, whether asked
    for (a per-city answer) or shown by an answer from only some regions; except every region but the asker's
    home, where the role's lookups say ``exclude_home`` and two or more remain."""
    per_city = " | ".join(c.lookups.breakdown) or "none"
    if c.breakdown and c.purpose not in c.lookups.breakdown:
        raise c.refuse(
            "POLICY_BREAKDOWN_DENIED",
            f"this node does not show its own figures for purpose {c.purpose!r}; only federation-wide totals",
            f"{c.base}.breakdown",
            f"ask without --by-city; purposes with a per-city answer here: {per_city}",
        )
    if c.regions is None:
        return
    asked, everyone = c.regions
    if set(asked) == set(everyone):
        return
    but_home = set(everyone) - {c.home}
    home_left_out = set(asked) == but_home and len(but_home) < len(everyone)
    if not (c.lookups.exclude_home and home_left_out and len(but_home) >= 2) and c.purpose not in c.lookups.breakdown:
        raise c.refuse(
            "POLICY_BREAKDOWN_DENIED",
            "a lookup that leaves regions out shows the figures of those it asks; for purpose "
            f"{c.purpose!r} this node gives only federation-wide totals",
            f"{c.base}.exclude_home" if home_left_out else f"{c.base}.breakdown",
            "ask every region" + ("" if c.lookups.exclude_home else " (this role may not leave its home out)"),
        )


# the stages of a lookup's check after the role's (check_lookup), in order
LOOKUP_STAGES: tuple[Callable[[LookupCheck], None], ...] = (
    _columns_classified,
    _purpose_allowed,
    _facts_allowed,
    _consent_given,
    _few_enough,
    _figures_allowed,
)
