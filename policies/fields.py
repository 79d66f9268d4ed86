"""The values a policy file holds, each checked as it is read: column uses, aggregates, names, purpose codes, k.

Each is an annotated type the models of :mod:`policies.model` use; a value the format refuses gets a message
that says what it must be. A field's place in a policy document is a :data:`Loc` (``("roles", "analyst",
"purposes", 1)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator

from hpf.federation.trust.certificates import ROLES

USES: tuple[str, ...] = ("output", "filter", "group", "aggregate")
AGGREGATES: tuple[str, ...] = ("count", "sum", "avg", "var_pop", "var_samp", "stddev_pop", "stddev_samp")
WILDCARD = "*"
GROUP_WITHOUT_OUTPUT = "group reveals the key's values: add output"

_NAME = re.compile(r"[a-z_][a-z0-9_]*")  # matched whole (fullmatch): "$" matches before a "\n"
_PURPOSE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

Loc = tuple[str | int, ...]


def written_at(where: dict[Loc, tuple[str, int]], loc: Loc) -> str | None:
    """``FILE:LINE`` where ``loc`` (or its nearest written parent) was written; None if nothing was."""
    for end in range(len(loc), -1, -1):
        found = where.get(loc[:end])
        if found is not None:
            return f"{found[0]}:{found[1]}"
    return None


def accepting(ok: Callable[[Any], object], problem: str) -> AfterValidator:
    """A validator that keeps a value ``ok`` accepts and refuses any other with ``problem``, in which
    ``{value}`` (or ``{value!r}``) stands for the value."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(problem.format(value=value))
        return value

    return AfterValidator(check)


def _aggregate(value: str) -> str:
    v = value.lower()
    if v not in AGGREGATES:
        raise ValueError(f"unknown aggregate {value!r}: aggregates are {', '.join(AGGREGATES)}")
    return v


Use = Annotated[str, accepting(lambda v: v in USES, "unknown use {value!r}: uses are " + ", ".join(USES))]
Uses = Annotated[list[Use], accepting(lambda v: "group" not in v or "output" in v, GROUP_WITHOUT_OUTPUT)]
RoleName = Annotated[
    str, accepting(lambda v: v in ROLES, "unknown role {value!r}: certificates carry one of " + ", ".join(ROLES))
]
TableName = Annotated[
    str,
    accepting(
        lambda v: v == WILDCARD or _NAME.fullmatch(v),
        'table name {value!r} must be lower-case letters, digits and underscores, or "*" (quoted)',
    ),
]
ColumnName = Annotated[
    str, accepting(_NAME.fullmatch, "column name {value!r} must be lower-case letters, digits and underscores")
]
GroupSize = Annotated[
    int, accepting(lambda v: v >= 1, "min_group_size (k) must be at least 1 (got {value}); 1 releases every group")
]
AggregateName = Annotated[str, AfterValidator(_aggregate)]
PurposeCode = Annotated[
    str,
    accepting(
        _PURPOSE.fullmatch,
        "purpose code {value!r} must be lower-case letters, digits, '-' and '_' (e.g. loan-review)",
    ),
]
