"""A node's policy, as validated data: roles, tables, column uses, aggregates, purposes, k and rate limits.

The file format (YAML; :mod:`policies.loader` reads it; ``policies/base.yaml`` documents it and is the
table-agnostic base, ``policies/default.yaml`` the demo federation's full example)::

    version: 1
    extends: hpf:base              # optional: start from that policy (a file relative to this one, or a packaged
                                   # policy: hpf:base, hpf:default); this file's keys replace the base's (mappings
                                   # merged key by key, lists and scalars replaced; a key set to null (~) removes
                                   # the base's entry)
    purposes:                      # purpose codes this node recognises, with what they are for
      loan-review: checking a loan applicant's declared history
      statistics: aggregate reporting
    classes:                       # default uses per column class (from the catalog), for every role
      identifier: []
      public: [output, filter, group, aggregate]
      sensitive: [filter, aggregate]
      commercial: []
    secure_aggregation: {min_participants: 3, max_runs: 3}   # masks: see SecureAggregation
    askers:                        # optional: who may ask from where, per operation (query, explain, lookup)
      lookup: {provinces: [same]}  # only askers whose home region is in this node's province (see AskerRule)
    roles:                         # a role not listed here is refused
      caseworker:
        aggregates: [count, sum, avg]
        min_group_size: 5          # k: this node releases no group built from fewer than k of its rows
        rate_limit: {requests: 60, per_seconds: 60}    # per identity; omit for none
        privacy: {mode: dp, epsilon: 1, delta: 1e-8, budget: {epsilon: 30, period: month}, threshold: 20}
                                   # optional (default exact); a table may override it (see Privacy)
        purposes: [statistics]     # optional: every table of this role needs one of these (a table may override)
        classes: {sensitive: [aggregate]}              # optional: this role's uses per class
        askers: {lookup: {anywhere: true}}             # optional: this role's own askers rules, per operation
        tables:                    # a table not listed (and no "*") is refused
          deposits: {}
          loans:
            purposes: [loan-review]                    # a request on this table must carry one of these
            consent: required                          # required | optional (default)
            min_group_size: 10                         # optional: k for this table
            columns: {outstanding_fen: [aggregate], status: [filter, group, output]}
          "*": {}                  # any other catalog table

Uses: ``filter`` (in WHERE, or in the condition of an aggregate's FILTER or CASE), ``group`` (in a GROUP BY
key), ``output`` (a group key's values reach the asker: every cell of the public slot layout is decrypted by
the asker, whether or not the query returns the key; so a list with ``group`` must have ``output`` too),
``aggregate`` (inside an aggregate's argument, kept as a value: ``+ - *``, a CAST to a number, the value of a
CASE). A column under anything else, in an aggregate's argument or a group key (a comparison, NULLIF,
GREATEST, SIGN, a cast to BOOLEAN, any other function), is a ``filter`` use as well. ``COUNT(*)`` uses no
column. A column's uses come from, first found: the table's ``columns``, the role's ``classes``, the top-level
``classes``; a class listed nowhere has no use, and a column the catalog gives no class has none at all (the
engine refuses it before reading any of these).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hpf.federation.catalog import ColumnClass
from hpf.federation.consent.tokens import FACTS
from hpf.federation.privacy.fixed_decimal import DELTA_PLACES, EPSILON_PLACES, MAX_BUDGET_EPSILON, units_of
from hpf.federation.regions import PROVINCES
from hpf.federation.trust.certificates import ROLES

USES: tuple[str, ...] = ("output", "filter", "group", "aggregate")
# what an asker may ask a node, as ``askers:`` names it: aggregate questions, explains of them, person lookups
# (``hpf lookup`` and ``hpf screen``)
OPERATIONS: tuple[str, ...] = ("query", "explain", "lookup")
SAME = "same"  # in askers: this node's own region, or its own province
AGGREGATES: tuple[str, ...] = ("count", "sum", "avg", "var_pop", "var_samp", "stddev_pop", "stddev_samp")
WILDCARD = "*"
GROUP_WITHOUT_OUTPUT = "group reveals the key's values: add output"

_NAME = re.compile(r"[a-z_][a-z0-9_]*")  # matched whole (fullmatch): "$" matches before a "\n"
_PURPOSE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
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

Loc = tuple[str | int, ...]


def written_at(where: dict[Loc, tuple[str, int]], loc: Loc) -> str | None:
    """``FILE:LINE`` where ``loc`` (or its nearest written parent) was written; None if nothing was."""
    for end in range(len(loc), -1, -1):
        found = where.get(loc[:end])
        if found is not None:
            return f"{found[0]}:{found[1]}"
    return None


def _use(value: str) -> str:
    if value not in USES:
        raise ValueError(f"unknown use {value!r}: uses are {', '.join(USES)}")
    return value


def _uses(values: list[str]) -> list[str]:
    if "group" in values and "output" not in values:
        raise ValueError(GROUP_WITHOUT_OUTPUT)
    return values


def _aggregate(value: str) -> str:
    v = value.lower()
    if v not in AGGREGATES:
        raise ValueError(f"unknown aggregate {value!r}: aggregates are {', '.join(AGGREGATES)}")
    return v


def _purpose_code(value: str) -> str:
    if not _PURPOSE.fullmatch(value):
        raise ValueError(f"purpose code {value!r} must be lower-case letters, digits, '-' and '_' (e.g. loan-review)")
    return value


def _k(v: int) -> int:
    if v < 1:
        raise ValueError(f"min_group_size (k) must be at least 1 (got {v}); 1 releases every group")
    return v


def _role(value: str) -> str:
    if value not in ROLES:
        raise ValueError(f"unknown role {value!r}: certificates carry one of {', '.join(ROLES)}")
    return value


def _table_name(value: str) -> str:
    if value != WILDCARD and not _NAME.fullmatch(value):
        raise ValueError(f'table name {value!r} must be lower-case letters, digits and underscores, or "*" (quoted)')
    return value


def _column_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"column name {value!r} must be lower-case letters, digits and underscores")
    return value


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


def _region_ref(value: str) -> str:
    if value != SAME and not _REGION_ID.fullmatch(value):
        raise ValueError(
            f"region {value!r} must be a node id, as certificates name home regions (e.g. 'hangzhou'), or "
            f"{SAME!r} for this node itself"
        )
    return value


Use = Annotated[str, AfterValidator(_use)]
Uses = Annotated[list[Use], AfterValidator(_uses)]
RoleName = Annotated[str, AfterValidator(_role)]
TableName = Annotated[str, AfterValidator(_table_name)]
ColumnName = Annotated[str, AfterValidator(_column_name)]
GroupSize = Annotated[int, AfterValidator(_k)]
AggregateName = Annotated[str, AfterValidator(_aggregate)]
PurposeCode = Annotated[str, AfterValidator(_purpose_code)]
OperationName = Annotated[str, AfterValidator(_operation)]
ProvinceRef = Annotated[str, BeforeValidator(_province)]
RegionRef = Annotated[str, AfterValidator(_region_ref)]


class RateLimit(BaseModel):
    """At most ``requests`` requests in any ``per_seconds`` window, per identity."""

    model_config = ConfigDict(extra="forbid")
    requests: int
    per_seconds: float

    @field_validator("requests")
    @classmethod
    def _requests(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"requests must be at least 1 (got {v}); to refuse a role, leave it out of roles")
        return v

    @field_validator("per_seconds")
    @classmethod
    def _per(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"per_seconds must be positive (got {v})")
        return v


class PrivacyBudget(BaseModel):
    """How much privacy loss one identity may spend on this node per calendar period (UTC)."""

    model_config = ConfigDict(extra="forbid")
    epsilon: float = Field(gt=0, le=MAX_BUDGET_EPSILON)  # what the node's privacy ledger takes
    delta: float = Field(default=1e-5, ge=0, lt=1)
    period: Literal["day", "week", "month", "year"] = "month"


class Privacy(BaseModel):
    """Whether answers are exact or differentially private, and at what cost.

    ``exact``: the sum of the regions' exact partials (small groups withheld by ``min_group_size``).
    ``dp``: every region adds its share of Skellam noise to every cell, so the sum carries noise that gives
    (``epsilon``, ``delta``)-DP per answer; each answer is charged to the asker's ``budget``; groups whose noisy
    row count is below ``threshold`` are not shown (``min_group_size`` does not apply: DP replaces it).
    """

    model_config = ConfigDict(extra="forbid")
    mode: Literal["exact", "dp"] = "exact"
    epsilon: float | None = Field(default=None, gt=0, le=20)
    delta: float = Field(default=1e-7, gt=0, lt=1e-2)
    budget: PrivacyBudget | None = None
    threshold: int = Field(default=0, ge=0)
    # and not below this many noise sd of the row count: a group of no rows is noise alone, and passes 3 sd
    # about once in 700 times
    threshold_sd: float = Field(default=0.0, ge=0, le=10)
    description: str | None = None

    @model_validator(mode="after")
    def _dp_needs(self) -> Privacy:
        if self.mode == "dp":
            if self.epsilon is None or self.budget is None:
                raise ValueError("mode dp needs epsilon (per answer) and budget: {epsilon, delta, period}")
            if self.epsilon > self.budget.epsilon or self.delta > self.budget.delta:
                raise ValueError("one answer's epsilon and delta must fit in the budget's")
            for name, value, places in (("epsilon", self.epsilon, EPSILON_PLACES), ("delta", self.delta, DELTA_PLACES)):
                try:  # the regions sign it as a fixed decimal: it must be one exactly
                    units_of(value, places)
                except ValueError:
                    raise ValueError(f"{name} may have at most {places} digits after the point") from None
        elif self.epsilon is not None or self.budget is not None or self.threshold or self.threshold_sd:
            raise ValueError("epsilon, budget, threshold and threshold_sd apply only to mode: dp")
        return self

    def summary(self) -> str:
        if self.mode == "exact" or self.budget is None:
            return "exact"
        b = self.budget
        return (
            f"differentially private, epsilon {self.epsilon:g} and delta {self.delta:g} per answer, "
            f"budget epsilon {b.epsilon:g} per {b.period}, groups under {self.threshold} rows"
            + (f" or {self.threshold_sd:g} noise sd" if self.threshold_sd else "")
            + " suppressed"
        )


class SecureAggregation(BaseModel):
    """The participant sets this node adds pairwise masks for."""

    model_config = ConfigDict(extra="forbid")
    # the fewest regions whose masked answers are summed: with two, each learns the other's partial from the sum
    min_participants: int = Field(default=3, ge=1, le=256)
    # how many participant sets one signed question is answered for: the first, then re-runs with survivors
    max_runs: int = Field(default=3, ge=1, le=16)
    # whether an EXACT answer may be summed over fewer than every region of the catalog (a re-run with the
    # survivors of a failure). Off by default: a coordinator colluding with an asker could subtract such a sum
    # from a full run's and read the left-out regions' exact partials. DP answers may always leave one out.
    exact_subsets: bool = False


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


class TablePolicy(BaseModel):
    """What a role may do with one table."""

    model_config = ConfigDict(extra="forbid")
    purposes: list[PurposeCode] | None = None  # None: the role's purposes apply
    consent: Literal["required", "optional"] = "optional"
    min_group_size: GroupSize | None = None
    privacy: Privacy | None = None  # None: the role's privacy applies
    columns: dict[ColumnName, Uses] = {}
    description: str | None = None


class LookupPolicy(BaseModel):
    """Whether a role may look people up by identifier (sealed to this node), for which purposes, how many."""

    model_config = ConfigDict(extra="forbid")
    purposes: list[PurposeCode]
    # required: a consent reference (free text, checked by people at a counter); token: each person's signed consent
    # token, from an issuer of consent_issuers, sealed with the identifier (federation.consent.tokens)
    consent: Literal["required", "optional", "token"] = "required"
    consent_issuers: list[str] = []  # catalog issuer ids whose tokens this role's lookups accept
    breakdown: list[PurposeCode] = []  # purposes for which this node's own figures may be shown as its city's
    # whether "every region but the asker's home" counts as federation-wide (it shows the home region's figures
    # by difference: right for a centre's own caseworkers, not for a bank whose certificate merely names a city)
    exclude_home: bool = False
    max_subjects: int = 1  # identifiers in one request; above 1 allows batch screening
    # the facts (federation.consent.tokens.FACTS) a lookup by this role may ask for: a request naming any other is
    # refused (POLICY_FACTS_NOT_ALLOWED). Omitted: every fact
    facts: list[str] = list(FACTS)
    rate_limit: RateLimit | None = None  # people looked up per identity: each identifier counts as one
    description: str | None = None

    @field_validator("purposes")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a lookup needs at least one purpose; to allow none, leave lookups out")
        return v

    @field_validator("facts")
    @classmethod
    def _known_facts(cls, v: list[str]) -> list[str]:
        unknown = [f for f in v if f not in FACTS]
        if unknown:
            raise ValueError(f"unknown fact {unknown[0][:40]!r}: facts are {', '.join(FACTS)}")
        if not v:
            raise ValueError("a lookup needs at least one fact; to allow none, leave lookups out")
        if len(set(v)) != len(v):
            raise ValueError("a fact is listed twice")
        return v

    @field_validator("max_subjects")
    @classmethod
    def _max(cls, v: int) -> int:
        if not 1 <= v <= 1_000_000:
            raise ValueError(f"max_subjects must be 1 to 1000000 (got {v})")
        return v

    @model_validator(mode="after")
    def _breakdown_within(self) -> LookupPolicy:
        odd = [p for p in self.breakdown if p not in self.purposes]
        if odd:
            raise ValueError(f"breakdown purpose {odd[0]!r} is not one of this role's lookup purposes")
        if (self.consent == "token") != bool(self.consent_issuers):
            raise ValueError("consent: token needs consent_issuers (the catalog's issuer ids), and only it takes them")
        return self


class RolePolicy(BaseModel):
    """What one role (from the asker's certificate) may ask this node."""

    model_config = ConfigDict(extra="forbid")
    aggregates: list[AggregateName]
    min_group_size: GroupSize
    rate_limit: RateLimit | None = None
    purposes: list[PurposeCode] | None = None
    classes: dict[ColumnClass, Uses] = {}
    tables: dict[TableName, TablePolicy]
    privacy: Privacy = Privacy()
    lookups: LookupPolicy | None = None  # None: this role looks nobody up
    askers: Askers = {}  # per operation, replacing the top-level askers' rule for this role
    description: str | None = None

    def table(self, name: str) -> tuple[str, TablePolicy] | None:
        """The entry that governs ``name``: its own, else the wildcard's; None if neither."""
        if name in self.tables:
            return name, self.tables[name]
        if WILDCARD in self.tables:
            return WILDCARD, self.tables[WILDCARD]
        return None


def reference_problems(data: Any) -> list[tuple[Loc, str]]:
    """Purposes a role, table or lookup of ``data`` (a policy as plain data) requires that its ``purposes`` does
    not declare. Read defensively, so the loader can report them beside a file's other problems: a part of the
    wrong shape is skipped (validation names it), and nothing is checked while ``purposes`` itself is malformed.

    >>> reference_problems({"purposes": {"statistics": "..."},
    ...                     "roles": {"analyst": {"purposes": ["statistics", "audit"], "tables": {}}}})
    [(('roles', 'analyst', 'purposes', 1), "purpose 'audit' is not declared in purposes (declared: statistics)")]
    """
    problems: list[tuple[Loc, str]] = []
    if not isinstance(data, dict) or not isinstance(data.get("purposes", {}), dict):
        return problems
    declared = {code for code in data.get("purposes", {}) if isinstance(code, str)}
    known = ", ".join(sorted(declared)) or "none"

    def check(loc: Loc, codes: Any) -> None:
        for i, code in enumerate(codes if isinstance(codes, list) else []):
            if isinstance(code, str) and code not in declared:
                problems.append(((*loc, i), f"purpose {code!r} is not declared in purposes (declared: {known})"))

    roles = data.get("roles")
    for role_name, role in roles.items() if isinstance(roles, dict) else ():
        if not isinstance(role, dict):
            continue
        check(("roles", role_name, "purposes"), role.get("purposes"))
        tables = role.get("tables")
        for table_name, table in tables.items() if isinstance(tables, dict) else ():
            if isinstance(table, dict):
                check(("roles", role_name, "tables", table_name, "purposes"), table.get("purposes"))
        if isinstance(role.get("lookups"), dict):
            check(("roles", role_name, "lookups", "purposes"), role["lookups"].get("purposes"))
    return problems


# the role of banks and platforms (a certificate's role): it never works under a free-text consent reference
INTEGRATOR = "integrator"


def consent_problems(data: Any) -> list[tuple[Loc, str]]:
    """Free-text consent a policy (as plain data) lets integrators use: lookups whose ``consent`` is not ``token``
    (``required`` and ``optional`` take any string, or none), and tables with ``consent: required``; and
    integrators' lookups that leave out ``facts`` (an allow-list: left out, it would be every fact). A free-text
    reference suits a caseworker at a counter, who has seen the person and their signed form; from a bank it
    vouches for no one. Read defensively, like :func:`reference_problems`.

    >>> consent_problems({"roles": {"integrator": {"lookups": {"purposes": ["loan-review"]},
    ...                                            "tables": {"loans": {"consent": "required"}}}}})[0][0]
    ('roles', 'integrator', 'lookups')
    >>> consent_problems({"roles": {"caseworker": {"lookups": {"purposes": ["x"], "consent": "required"}}}})
    []
    >>> consent_problems({"roles": {"integrator": {"lookups": {"consent": "token"}}}})[0][1][:40]
    "integrators' lookups list the facts a ba"
    """
    problems: list[tuple[Loc, str]] = []
    roles = data.get("roles") if isinstance(data, dict) else None
    role = roles.get(INTEGRATOR) if isinstance(roles, dict) else None
    if not isinstance(role, dict):
        return problems
    lookups = role.get("lookups")
    if isinstance(lookups, dict) and lookups.get("consent", "required") != "token":
        written = "consent" in lookups
        loc: Loc = ("roles", INTEGRATOR, "lookups", *(("consent",) if written else ()))
        problems.append(
            (
                loc,
                f"integrators look people up only under each person's consent token: consent: token with "
                f"consent_issuers, not {lookups.get('consent', 'required')!r}"
                + ("" if written else " (the default)")
                + ", which takes any free-text reference",
            )
        )
    if isinstance(lookups, dict) and "facts" not in lookups:
        problems.append(
            (
                ("roles", INTEGRATOR, "lookups"),
                "integrators' lookups list the facts a bank may receive (facts: [duplicate_loans, loan_cities] for "
                "a loan review): left out, it would be every fact, balances and contributions included",
            )
        )
    tables = role.get("tables")
    for table_name, table in tables.items() if isinstance(tables, dict) else ():
        if isinstance(table, dict) and table.get("consent") == "required":
            problems.append(
                (
                    ("roles", INTEGRATOR, "tables", table_name, "consent"),
                    "integrators' aggregate questions take no free-text consent reference (an aggregate has no "
                    "one person's token): leave consent out and keep the table's answers differentially private",
                )
            )
    return problems


class Policy(BaseModel):
    """One node's policy, after ``extends`` is resolved."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[1]
    description: str | None = None
    purposes: dict[PurposeCode, str] = {}
    classes: dict[ColumnClass, Uses] = {}
    secure_aggregation: SecureAggregation = SecureAggregation()
    # who may ask from where, per operation (a role's own askers replace an operation's rule for that role);
    # an operation listed nowhere is admitted from anywhere; explain follows query's rule unless given its own
    askers: Askers = {}
    roles: dict[RoleName, RolePolicy]

    # where each field was written: {field path: (file, line)}; set by the loader
    _where: dict[Loc, tuple[str, int]] = PrivateAttr(default_factory=dict)
    _source: str = PrivateAttr(default="policy")

    @model_validator(mode="after")
    def _purposes_declared(self, info: ValidationInfo) -> Policy:
        if isinstance(info.context, dict) and info.context.get("defer_references"):
            return self  # the loader reports these itself, with their lines
        problems = self.reference_problems()
        if problems:
            loc, msg = problems[0]
            raise ValueError(f"{'.'.join(map(str, loc))}: {msg}")
        return self

    def reference_problems(self) -> list[tuple[Loc, str]]:
        """Purposes a role or table requires that ``purposes`` does not declare."""
        return reference_problems(self.model_dump())

    def where(self, *loc: str | int) -> str:
        """``FILE:LINE`` where ``loc`` (or its nearest written parent) was written; the source if unknown."""
        return written_at(self._where, loc) or self._source

    def set_locations(self, source: str, where: dict[Loc, tuple[str, int]]) -> None:
        self._source, self._where = source, dict(where)

    def asker_rule(self, role_name: str, operation: str) -> tuple[AskerRule, str] | None:
        """The rule that says from where ``role_name`` may ask ``operation``, and where it is written: the role's
        own, else the top-level one; an explain without a rule of its own follows the query's. None: from
        anywhere.

        >>> p = Policy.model_validate({"version": 1, "askers": {"lookup": {"provinces": ["same"]}},
        ...     "roles": {"integrator": {"aggregates": [], "min_group_size": 1, "tables": {},
        ...                              "askers": {"lookup": {"anywhere": True}}}}})
        >>> p.asker_rule("caseworker", "lookup")[1], p.asker_rule("integrator", "lookup")[1]
        ('askers.lookup', 'roles.integrator.askers.lookup')
        >>> p.asker_rule("caseworker", "explain") is None
        True
        """
        role = self.roles.get(role_name)
        for op in (operation, "query") if operation == "explain" else (operation,):
            if role is not None and op in role.askers:
                return role.askers[op], f"roles.{role_name}.askers.{op}"
            if op in self.askers:
                return self.askers[op], f"askers.{op}"
        return None

    def summary(self) -> list[str]:
        """A few lines per role: k, rate limit, aggregates and tables (with purposes and consent), and from where
        it may ask each operation a rule limits."""
        lines = []
        for name, role in self.roles.items():
            rate = (
                f"{role.rate_limit.requests} requests / {role.rate_limit.per_seconds:g} s"
                if role.rate_limit
                else "no rate limit"
            )
            lines.append(f"{name}: k={role.min_group_size}, {rate}, aggregates {', '.join(role.aggregates)}")
            lines.append(f"  answers: {role.privacy.summary()}")
            for table_name, table in role.tables.items():
                purposes = table.purposes if table.purposes is not None else role.purposes
                notes = []
                if table.min_group_size is not None:
                    notes.append(f"k={table.min_group_size}")
                if purposes:
                    notes.append("purpose " + " | ".join(purposes))
                if table.consent == "required":
                    notes.append("consent required")
                if table.privacy is not None:
                    notes.append(table.privacy.summary())
                label = '"*" (any table not listed)' if table_name == WILDCARD else table_name
                lines.append(f"  {label}" + (f" ({'; '.join(notes)})" if notes else ""))
            lookups = role.lookups
            if lookups is not None:
                notes = [f"purpose {' | '.join(lookups.purposes)}", f"up to {lookups.max_subjects} per request"]
                notes.append(f"facts {', '.join(lookups.facts)}")
                if lookups.consent == "required":
                    notes.append("consent required")
                elif lookups.consent == "token":
                    notes.append(f"consent tokens from {' | '.join(lookups.consent_issuers)}")
                if lookups.breakdown:
                    notes.append(f"per city for {' | '.join(lookups.breakdown)}")
                if lookups.rate_limit:
                    notes.append(f"{lookups.rate_limit.requests} people / {lookups.rate_limit.per_seconds:g} s")
                lines.append(f"  person lookups ({'; '.join(notes)})")
            for op in OPERATIONS:
                found = self.asker_rule(name, op)
                if found is not None and (role.lookups is not None if op == "lookup" else bool(role.tables)):
                    lines.append(f"  {op}: askers {found[0].summary()} ({found[1]})")
        return lines

    def plain(self) -> dict[str, Any]:
        """The policy as plain data, for ``hpf policy show``."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        for role in data.get("roles", {}).values():
            for limit in (role.get("rate_limit"), role.get("lookups", {}).get("rate_limit")):
                if limit and float(limit["per_seconds"]).is_integer():
                    limit["per_seconds"] = int(limit["per_seconds"])
        return data
