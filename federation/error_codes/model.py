"""What one declaration of an error code says: its class, what it is about, what it does to a question.

A code's class fixes its gRPC status (:attr:`federation.errors.FederationError.grpc_status`) and the CLI's exit
code (:mod:`cli.errors`); its :class:`Effect` is what the coordinator does when a region's error carries it; its
:class:`Scope` says what it is about (a signed verdict in an explain is a refusal of the question itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from hpf.federation.errors import FederationError, is_code


class Effect(Enum):
    """What the coordinator does when a region's error carries the code."""

    FAILS_QUESTION = "fails the question"
    # fails the question, except that with regions already missing from the run it says they are missing
    NEEDS_THE_MISSING = "fails the question, or names the missing regions"
    # on a region's own rows: the failure travels encrypted inside the sum (only the asker learns it); were it
    # sent in the clear it would fail the question
    MASKED_FAILURE = "masked failure"
    # the coordinator's own word for a region it got nothing usable from (the only unsigned explain verdicts)
    TRANSPORT = "region missing (transport)"
    # the region is reported missing and the others are asked again without it; also any code not declared
    REGION_MISSING = "region missing"

    @property
    def fails_question(self) -> bool:
        return self in (Effect.FAILS_QUESTION, Effect.NEEDS_THE_MISSING, Effect.MASKED_FAILURE)


class Scope(Enum):
    """What a code is about."""

    QUESTION = "question"  # the question itself (plan, policy, privacy terms): a signed verdict in an explain
    APPLICANT = "applicant"  # one applicant of a lookup (their consent): a region signs whom it refused
    REQUEST = "request"  # the request's form, signature, identity, keys or ciphertexts
    REGION = "region"  # a region's or a server's state, data or answer
    AUDIT = "audit"  # an audit log, checkpoint, receipt or proof
    LOCAL = "local"  # this party's own files, keys, configuration or command line


@dataclass(frozen=True)
class Code:
    """One error code, declared once."""

    name: str
    cls: type[FederationError]
    scope: Scope
    effect: Effect
    description: str  # one public line: what the code means
    area: str = ""  # the heading the reference lists it under

    def __post_init__(self) -> None:
        if not is_code(self.name):
            raise ValueError(f"{self.name!r} is not of the stable code form")
        if not self.description or "\n" in self.description:
            raise ValueError(f"{self.name}: the description is one line")


@dataclass(frozen=True)
class Area:
    """The defaults of one area's codes; :meth:`code` declares one, overriding what differs."""

    title: str
    cls: type[FederationError]
    scope: Scope
    effect: Effect

    def code(
        self,
        name: str,
        description: str,
        cls: type[FederationError] | None = None,
        *,
        scope: Scope | None = None,
        effect: Effect | None = None,
    ) -> Code:
        return Code(
            name,
            cls or self.cls,
            scope or self.scope,
            effect or self.effect,
            description,
            self.title,
        )
