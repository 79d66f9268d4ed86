"""Who may ask a node from where: the ``askers`` rules of a policy, per operation.

An :class:`AskerRule` admits askers by the home region their certificate names, or by its province; ``same``
is the node's own region or province. :func:`policies.engine.check_asker_home` applies them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, model_validator

from hpf.federation.regions import PROVINCES
from hpf.policies.fields import accepting

# what an asker may ask a node, as ``askers:`` names it: aggregate questions, explains of them, person lookups
# (``hpf lookup`` and ``hpf screen``)
OPERATIONS: tuple[str, ...] = ("query", "explain", "lookup")
SAME = "same"  # in askers: this node's own region, or its own province

_REGION_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # a node id, as a certificate names its home region
_OPERATION_ALIASES = {
    "aggregate": "query",
    "aggregates": "query",
    "queries": "query",
    "screen": "lookup",
    "lookups": "lookup",
    "screening": "lookup",
}
_PROVINCE_NAMES = {name.lower(): code for code, name in PROVINCES.items()}


def _operation(value: str) -> str:
    if value not in OPERATIONS:
        alias = _OPERATION_ALIASES.get(value.lower()) if isinstance(value, str) else None
        also = f" (write {alias!r} for it)" if alias else ""
        raise ValueError(
            f"unknown operation {value!r}{also}: operations are query (aggregate questions), explain and "
            "lookup (hpf lookup and hpf screen)"
        )
    return value


def _province(value: Any) -> Any:
    """A province code (two digits, of :data:`federation.regions.PROVINCES`) or ``same``."""
    if isinstance(value, int) and not isinstance(value, bool):  # provinces: [32, 33], unquoted in YAML
        value = str(value)
    if not isinstance(value, str) or value == SAME:
        return value
    if value in PROVINCES:
        return value
    if len(value) == 6 and value.isdigit() and value[:2] in PROVINCES:
        raise ValueError(f"{value!r} is a region code: its province is {value[:2]!r} (the first two digits)")
    if value.lower() in _PROVINCE_NAMES:
        raise ValueError(f"{value!r} is a province's name: write its code {_PROVINCE_NAMES[value.lower()]!r}")
    raise ValueError(
        f"{value!r} is not a province code: write the first two digits of its region codes (e.g. '32' for "
        f"Jiangsu, '33' for Zhejiang) or {SAME!r} for this node's own province"
    )


OperationName = Annotated[str, AfterValidator(_operation)]
ProvinceRef = Annotated[str, BeforeValidator(_province)]
RegionRef = Annotated[
    str,
    accepting(
        lambda v: v == SAME or _REGION_ID.fullmatch(v),
        "region {value!r} must be a node id, as certificates name home regions (e.g. 'hangzhou'), or "
        + repr(SAME)
        + " for this node itself",
    ),
]


class AskerRule(BaseModel):
    """Who may ask this node one operation, by their home region (the ``region`` of their certificate).

    An asker is admitted when their home region is one of ``regions`` or lies in one of ``provinces`` (the
    first two digits of its 6-digit code, from the catalog's node ``code``); ``same`` is this node's own
    region, or its own province. An asker whose certificate names no home region is admitted by no rule but
    ``anywhere: true``. An allow-list: everyone else is refused (POLICY_ASKER_REGION).
    """

    model_config = ConfigDict(extra="forbid")
    regions: list[RegionRef] = []
    provinces: list[ProvinceRef] = []
    anywhere: bool = False  # admits every asker (to open, for one role, what the top-level askers close)
    description: str | None = None

    @model_validator(mode="after")
    def _admits_someone(self) -> AskerRule:
        if self.anywhere and (self.regions or self.provinces):
            raise ValueError("anywhere: true admits every asker: give it alone, or list regions and provinces")
        if not self.anywhere and not (self.regions or self.provinces):
            raise ValueError(
                "admits nobody: list regions or provinces (e.g. provinces: [same]), or write anywhere: true; "
                "to refuse an operation to a role, leave it out of the role's tables or lookups"
            )
        return self

    def summary(self) -> str:
        if self.anywhere:
            return "from anywhere"
        parts = []
        for p in self.provinces:
            parts.append("its own province" if p == SAME else f"province {p} ({PROVINCES[p]})")
        for r in self.regions:
            parts.append("its own region" if r == SAME else f"region {r}")
        return "only from " + ", ".join(parts)


Askers = dict[OperationName, AskerRule]
