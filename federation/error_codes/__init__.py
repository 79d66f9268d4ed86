"""Every stable error code, declared once: its class (so its gRPC status and CLI exit code), what it is about,
what it does to a question, and one public line saying what it means.

The tables the parties act on are derived from here, by exact name:

- :func:`class_for` rebuilds a relayed error with its class (:func:`federation.errors.error_for_code`);
- :data:`FAILS_QUESTION`, :data:`NEEDS_THE_MISSING`: a region's refusal that fails the whole question
  (:mod:`coordinator.fanout`), and those that only say regions are missing;
- :data:`TRANSPORT_CODES`: the coordinator's word for a region it got nothing usable from
  (:mod:`federation.trust.verdicts`);
- :data:`MASKED_FAILURES`: failures on a region's own rows, sent as an encrypted failure mark (:mod:`node.executor`);
- :data:`VERDICT_REFUSALS`: refusals of the question itself, a signed verdict in an explain (:mod:`node.handler`);
- :data:`APPLICANT_CODES`: a region's consent refusals, which carry its signed refusal (:mod:`federation.errors`).

A code no declaration names (a newer party's, or a made-up one) is taken safely: the generic class (its status
decides, :func:`federation.errors.from_rpc_error`) and :attr:`Effect.REGION_MISSING` (the region is named missing,
its answer is left out). ``docs/errors.md`` is generated from here (``scripts/gen_error_reference.py``).

>>> class_for("CONSENT_REVOKED").__name__, effect_of("CONSENT_REVOKED").value, REGISTRY["CONSENT_REVOKED"].scope.value
('PolicyViolation', 'fails the question', 'applicant')
>>> class_for("NOT_A_CODE_ANYONE_DECLARED").__name__, effect_of("NOT_A_CODE_ANYONE_DECLARED").value
('FederationError', 'region missing')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from hpf.federation.error_codes import audit, auth, config, crypto, lookup, plan, policy, region
from hpf.federation.error_codes.model import Area, Code, Effect, Scope
from hpf.federation.errors import FederationError

__all__ = [
    "APPLICANT_CODES",
    "FAILS_QUESTION",
    "MASKED_FAILURES",
    "NEEDS_THE_MISSING",
    "REGISTRY",
    "TRANSPORT_CODES",
    "VERDICT_REFUSALS",
    "Area",
    "Code",
    "Effect",
    "Scope",
    "class_for",
    "effect_of",
]


def _index(codes: Iterable[Code]) -> dict[str, Code]:
    registry: dict[str, Code] = {}
    for code in codes:
        if code.name in registry:
            raise ValueError(f"{code.name} is declared twice")
        registry[code.name] = code
    return registry


# in the reference's order: by area as listed here, then as each area declares them
REGISTRY: dict[str, Code] = _index(
    (
        *plan.CODES,
        *policy.CODES,
        *lookup.CODES,
        *auth.CODES,
        *crypto.CODES,
        *region.CODES,
        *audit.CODES,
        *config.CODES,
    )
)


def _where(test: Callable[[Code], bool]) -> frozenset[str]:
    return frozenset(name for name, code in REGISTRY.items() if test(code))


FAILS_QUESTION = _where(lambda c: c.effect.fails_question)
NEEDS_THE_MISSING = _where(lambda c: c.effect is Effect.NEEDS_THE_MISSING)
MASKED_FAILURES = _where(lambda c: c.effect is Effect.MASKED_FAILURE)
TRANSPORT_CODES = _where(lambda c: c.effect is Effect.TRANSPORT)
VERDICT_REFUSALS = _where(lambda c: c.scope is Scope.QUESTION)
APPLICANT_CODES = _where(lambda c: c.scope is Scope.APPLICANT)


def class_for(code: str) -> type[FederationError]:
    """The class ``code`` is declared with; the generic class for a code no declaration names."""
    declared = REGISTRY.get(code)
    return FederationError if declared is None else declared.cls


def effect_of(code: str) -> Effect:
    """What a region's error with ``code`` does to a question; a code no declaration names marks it missing."""
    declared = REGISTRY.get(code)
    return Effect.REGION_MISSING if declared is None else declared.effect
