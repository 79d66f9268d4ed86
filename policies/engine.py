"""Checking one request against a node's policy.

:func:`check_query` takes the plan the node derived itself (never the coordinator's) and refuses with a
:class:`~federation.errors.PolicyViolation` whose ``code`` is stable, whose ``message`` names tables, columns,
roles and purposes but never a value or a literal of the query, whose ``rule`` is the policy path that refused
(``hangzhou: roles.analyst.tables.loans.purposes``) and whose ``hint`` says how to ask instead.

The checks, in order, each with its code:

==============================  =========================================================================
``POLICY_ROLE_DENIED``          the asker's role is not under ``roles``
``POLICY_TABLE_DENIED``         the role lists neither the table nor ``"*"``
``POLICY_PURPOSE_REQUIRED``     the table (or role) requires a purpose and none was given
``POLICY_PURPOSE_NOT_ALLOWED``  the purpose given is not one the table (or role) accepts
``POLICY_PURPOSE_UNKNOWN``      the purpose given is not declared under ``purposes``
``POLICY_CONSENT_REQUIRED``     the table requires a consent reference and none was given
``POLICY_AGGREGATE_DENIED``     an aggregate function is not in the role's ``aggregates``
``POLICY_COLUMN_UNCLASSIFIED``  a column the catalog gives no ``class`` is used at all: no policy, not even a
                                per-column entry, grants anything on it until an operator classifies it
``POLICY_COLUMN_DENIED``        a column is used where its uses do not allow
``POLICY_AGGREGATE_PRODUCT``    with k > 1, an aggregate's argument multiplies two row values and a factor is
                                no plain value of measured quantities (:mod:`policies.products`): a condition,
                                a 0/1 or undeclared column, a category, a column times itself; or a
                                variance's argument whose square multiplies such columns
``POLICY_AGGREGATE_SHAPE``      with k > 1, an aggregate's argument computes a condition as a value otherwise
                                (``SUM(CASE WHEN c THEN 1 ELSE 0 END)``), which would count rows k never sees
==============================  =========================================================================

:func:`check_lookup` judges a person lookup (identifiers sealed to this node) by the role's ``lookups``:
``POLICY_ROLE_DENIED``, ``POLICY_LOOKUP_DENIED`` (the role has no ``lookups``), ``POLICY_COLUMN_UNCLASSIFIED``
(a column every lookup reads has no class in the catalog), the purpose codes above,
``POLICY_FACTS_NOT_ALLOWED`` (a fact asked for that is not under the role's ``facts``),
``POLICY_CONSENT_REQUIRED``, ``POLICY_LOOKUP_TOO_MANY`` (more identifiers than ``max_subjects``) and
``POLICY_BREAKDOWN_DENIED`` (a per-city answer for a purpose not under ``breakdown``).

:func:`check_asker_home` judges where the asker asks from, before any of these (a node runs it first for a
query, an explain and a lookup): ``POLICY_ASKER_REGION`` when the policy's ``askers`` rule for the operation
(the role's own, else the top-level one) admits neither the asker's home region (their certificate's) nor its
province, or when the certificate names no home region. A refusal, like every ``POLICY_`` one, fails the whole
question: the coordinator never answers it without the refusing region.

How columns are used is worked out by :mod:`policies.uses`; :class:`policies.rate_limit.RateLimiter` adds
``POLICY_RATE_LIMITED``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from hpf.federation.catalog import Catalog, Column, ColumnClass
from hpf.federation.consent.tokens import FACTS
from hpf.federation.errors import PolicyViolation
from hpf.federation.plan import Plan
from hpf.federation.regions import PROVINCES, province_of
from hpf.policies.model import SAME, USES, WILDCARD, Policy, Privacy, RolePolicy, TablePolicy
from hpf.policies.uses import PlanUses, analyse

USE_PHRASES = {
    "output": "in the output",
    "filter": "in a filter",
    "group": "as a group key",
    "aggregate": "inside an aggregate",
}
COMPUTED_NOTE = (
    "a comparison or a function of a column counts as a filter on it; so does a large literal factor or a CAST to "
    "anything but HUGEINT, DOUBLE or DECIMAL(38, s)"
)
SHAPE_HINT = (
    "write it as AGG(x) FILTER (WHERE cond) or CASE WHEN cond THEN x END (no ELSE), so the minimum group size "
    "applies to the rows it covers"
)
ROLE_HINTS = {
    "auditor": "auditors run no data queries: read and verify a node's audit log with `hpf audit`",
}
_SHOWABLE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # matched whole


@dataclass(frozen=True)
class Asker:
    """Who asks: the certificate's common name, its role and its home region."""

    name: str
    role: str
    region: str | None


@dataclass(frozen=True)
class Decision:
    """An allowed request: the role it was judged as, the k its groups are released at, the rules that allowed it."""

    min_group_size: int
    role: str
    rules: tuple[str, ...]
    privacy: Privacy = field(default_factory=Privacy)  # exact, or the DP terms every answer carries
    privacy_rule: str = ""  # where ``privacy`` was written (e.g. roles.analyst.privacy)


# -- the check -----------------------------------------------------------------------------------------


def _show(value: str) -> str:
    """A client-given code, quoted if it looks like a code, else not echoed."""
    return repr(value) if _SHOWABLE.fullmatch(value) else "given"


def _uses_for(
    policy: Policy, role_name: str, role: RolePolicy, table_key: str, table: TablePolicy, column: str, cls: ColumnClass
) -> tuple[set[str], str]:
    """The uses allowed for one column, and the rule that says so."""
    if column in table.columns:
        return set(table.columns[column]), f"roles.{role_name}.tables.{table_key}.columns.{column}"
    if cls in role.classes:
        return set(role.classes[cls]), f"roles.{role_name}.classes.{cls.value}"
    return set(policy.classes.get(cls, [])), f"classes.{cls.value}"


Refuse = Callable[[str, str, str, str], PolicyViolation]


def _refuser(party: str) -> Refuse:
    """A maker of refusals (code, message, rule, hint) whose rule names this node."""

    def refuse(code: str, message: str, rule: str, hint: str) -> PolicyViolation:
        return PolicyViolation(message, code=code, rule=f"{party}: {rule}", hint=hint)

    return refuse


def _role(policy: Policy, asker: Asker, refuse: Refuse) -> RolePolicy:
    """The asker's role's policy, or POLICY_ROLE_DENIED."""
    role = policy.roles.get(asker.role)
    if role is None:
        name = asker.role
        raise refuse(
            "POLICY_ROLE_DENIED",
            f"role {_show(name) if name else '(none)'} may not query this node",
            "roles",
            ROLE_HINTS.get(name, f"roles that may query this node: {', '.join(policy.roles) or 'none'}"),
        )
    return role


OPERATION_PHRASES = {"query": "aggregate questions", "explain": "explains", "lookup": "person lookups"}


def _place(code: str | None) -> str:
    """A region's province, as a refusal names it."""
    province = province_of(code) if code else None
    return f"province {province} ({PROVINCES[province]})" if province else "no province the catalog gives"


def check_asker_home(
    policy: Policy,
    asker: Asker,
    operation: str,
    *,
    party: str,
    region_code: Callable[[str], str | None],
) -> str | None:
    """Admit the asker to ``operation`` (query, explain or lookup) from their home region, or raise
    POLICY_ASKER_REGION; return the rule that admitted them (None: no rule limits the operation).

    ``party`` is this node's id (``same`` in a rule is its region, or its province) and ``region_code`` gives a
    region's 6-digit code (the catalog's :meth:`~federation.catalog.Catalog.region_code`). The asker's home
    region comes from their certificate only, never from anything they sign or send.
    """
    found = policy.asker_rule(asker.role, operation)
    if found is None:
        return None
    rule, rule_path = found
    if rule.anywhere:
        return rule_path
    refuse = _refuser(party)
    what = OPERATION_PHRASES.get(operation, operation)
    here_code = region_code(party)
    here_province = province_of(here_code) if here_code else None
    if asker.region is None:
        raise refuse(
            "POLICY_ASKER_REGION",
            f"this node admits {what} {rule.summary()}, and the asker's certificate names no home region",
            rule_path,
            "ask with a certificate that names your centre as its home region (hpf pki issue --kind person "
            "--region NODE_ID ...)",
        )
    home = asker.region
    if home in {party if r == SAME else r for r in rule.regions}:
        return rule_path
    home_code = region_code(home)
    home_province = province_of(home_code) if home_code else None
    provinces = {here_province if p == SAME else p for p in rule.provinces}
    if home_province is not None and home_province in provinces:
        return rule_path
    unplaced = SAME in rule.provinces and here_province is None
    raise refuse(
        "POLICY_ASKER_REGION",
        f"this node admits {what} {rule.summary()}"
        + (f" (its own: {_place(here_code)})" if SAME in rule.provinces and here_province else "")
        + f"; the asker's home region {_show(home)} is in {_place(home_code)}",
        rule_path,
        "ask this node's operators which centres it admits"
        + ("; the catalog gives this node no code, so it has no province of its own" if unplaced else "")
        + ("; the catalog gives the asker's region no code" if home_code is None else ""),
    )


def check_asker(
    policy: Policy, table_name: str, asker: Asker, purpose: str, consent: bool, *, party: str
) -> tuple[RolePolicy, str, TablePolicy, list[str]]:
    """The checks that need only who asks, which table and why: role, table, purpose and consent.

    A node runs these before it binds anything of the question (a role refused outright costs it no work),
    and :func:`check_query` runs them first again. Returns the role's policy, the table's key and policy, and
    the rules that allowed it so far.
    """
    refuse = _refuser(party)
    allowed: list[str] = []
    role_name = asker.role
    role = _role(policy, asker, refuse)
    allowed.append(f"roles.{role_name}")

    found = role.table(table_name)
    if found is None:
        listed = ", ".join(t for t in role.tables if t != WILDCARD) or "none"
        raise refuse(
            "POLICY_TABLE_DENIED",
            f"role {role_name} may not query table {table_name} on this node",
            f"roles.{role_name}.tables",
            f"tables role {role_name} may query here: {listed}",
        )
    table_key, table = found
    table_rule = f"roles.{role_name}.tables.{table_key}"
    allowed.append(table_rule)

    if table.purposes is not None:
        required, purpose_rule = table.purposes, f"{table_rule}.purposes"
    else:
        required, purpose_rule = role.purposes or [], f"roles.{role_name}.purposes"
    if required and not purpose:
        raise refuse(
            "POLICY_PURPOSE_REQUIRED",
            f"a query on {table_name} by role {role_name} must state its purpose",
            purpose_rule,
            f"ask again with a purpose: {' or '.join(required)}",
        )
    if required and purpose not in required:
        raise refuse(
            "POLICY_PURPOSE_NOT_ALLOWED",
            f"the {_show(purpose)} purpose does not allow role {role_name} to query {table_name}",
            purpose_rule,
            f"purposes that allow it: {', '.join(required)}",
        )
    if purpose and purpose not in policy.purposes:
        known = ", ".join(policy.purposes) or "none"
        raise refuse(
            "POLICY_PURPOSE_UNKNOWN",
            f"purpose {_show(purpose)} is not one this node recognises",
            "purposes",
            f"purposes this node recognises: {known}",
        )
    if required:
        allowed.append(purpose_rule)

    if table.consent == "required":
        if not consent:
            raise refuse(
                "POLICY_CONSENT_REQUIRED",
                f"a query on {table_name} by role {role_name} needs the applicant's consent",
                f"{table_rule}.consent",
                "ask again with the reference of the applicant's consent record",
            )
        allowed.append(f"{table_rule}.consent")

    return role, table_key, table, allowed


@dataclass
class _Query:
    """What the stages of :func:`check_query` judge, and what they have allowed so far (the rules, in order)."""

    policy: Policy
    plan: Plan
    refuse: Refuse
    party: str
    role_name: str
    role: RolePolicy
    table_key: str
    table: TablePolicy
    table_rule: str
    columns: Mapping[str, Column]
    analysis: PlanUses
    allowed: list[str]

    def decision(self, min_group_size: int, privacy: Privacy, privacy_rule: str) -> Decision:
        return Decision(
            min_group_size=min_group_size,
            role=self.role_name,
            rules=tuple(f"{self.party}: {r}" for r in dict.fromkeys(self.allowed)),
            privacy=privacy,
            privacy_rule=privacy_rule,
        )


def _aggregates_allowed(q: _Query) -> None:
    """``POLICY_AGGREGATE_DENIED``: every aggregate function is one of the role's ``aggregates``."""
    for aggregate in q.plan.aggregates:
        if aggregate.func not in q.role.aggregates:
            raise q.refuse(
                "POLICY_AGGREGATE_DENIED",
                f"aggregate {aggregate.func.upper()} is not allowed for role {q.role_name}",
                f"roles.{q.role_name}.aggregates",
                f"aggregates role {q.role_name} may use: {', '.join(a.upper() for a in q.role.aggregates) or 'none'}",
            )
    if q.plan.aggregates:
        q.allowed.append(f"roles.{q.role_name}.aggregates")


def _column_use_refusal(
    q: _Query, column: str, cls: ColumnClass, use: str, may: Collection[str], rule: str
) -> PolicyViolation:
    """``POLICY_COLUMN_DENIED`` for ``column`` used as ``use`` where it may be used only as ``may``."""
    can = ", ".join(USE_PHRASES[u] for u in USES if u in may)
    hint = f"column {column} may be used here only {can}" if can else f"leave column {column} out"
    message = f"column {column} ({cls.value}) may not be used {USE_PHRASES[use]}"
    factor = q.analysis.factors.get(column) if use == "filter" else None
    if factor is not None:  # a product that weighs by a condition filters on its factors
        square = " (the square a variance sums)" if factor.squared else ""
        message += f": it is a factor of a product{square} that {factor.what()}, which counts as a filter"
        hint += f"; {factor.hint()}"
    elif use == "filter" and column in q.analysis.computed:
        hint += f" ({COMPUTED_NOTE})"
    return q.refuse("POLICY_COLUMN_DENIED", message, rule, hint)


def _columns_allowed(q: _Query) -> None:
    """``POLICY_COLUMN_DENIED`` / ``POLICY_COLUMN_UNCLASSIFIED``: every column is the table's, has a class, and is
    used only as its class (or its own entry) allows."""
    uses = q.analysis.uses
    for column in sorted(uses):
        spec = q.columns.get(column)
        if spec is None:  # not from this catalog's table: nothing allows it
            raise q.refuse(
                "POLICY_COLUMN_DENIED",
                f"column {column} is not a column of {q.plan.table} in this node's catalog",
                q.table_rule,
                "the coordinator and this node may hold different catalogs",
            )
        cls = spec.column_class
        if cls is None:  # every policy refuses it, whatever it says (a column entry too): uses come from a class
            raise q.refuse(
                "POLICY_COLUMN_UNCLASSIFIED",
                f"column {column} of {q.plan.table} has no class in this node's catalog, so no policy allows it",
                "classes",
                f"an operator must classify it first: set class: (one of {', '.join(c.value for c in ColumnClass)}) "
                f"for tables.{q.plan.table}.columns.{column} in the catalog every party holds",
            )
        may, rule = _uses_for(q.policy, q.role_name, q.role, q.table_key, q.table, column, cls)
        for use in USES:
            if use in uses[column] and use not in may:
                raise _column_use_refusal(q, column, cls, use, may, rule)
        q.allowed.append(rule)


def _shapes_allowed(q: _Query, k: int, k_rule: str) -> None:
    """With k > 1: ``POLICY_AGGREGATE_PRODUCT`` and ``POLICY_AGGREGATE_SHAPE``, the aggregates whose argument
    would count rows the minimum group size does not see."""
    if k <= 1:
        return
    for aggregate in q.plan.aggregates:
        product = q.analysis.products.get(aggregate.count)
        if product is None and aggregate.sumsq is not None:  # a variance sums its argument's square too
            product = q.analysis.products.get(aggregate.sumsq)
        if product is not None:
            func = aggregate.func.upper()
            raise q.refuse(
                "POLICY_AGGREGATE_PRODUCT",
                f"{product.subject(func)} a product that {product.what()}: {product.why(k)}",
                k_rule,
                product.hint(func),
            )
        if aggregate.count in q.analysis.uncountable:
            raise q.refuse(
                "POLICY_AGGREGATE_SHAPE",
                f"the argument of {aggregate.func.upper()} computes a condition as a value: it would count "
                f"rows that the minimum group size ({k}) does not see",
                k_rule,
                SHAPE_HINT,
            )


def _terms(q: _Query) -> Decision:
    """The answer's privacy terms: DP (noise on every cell replaces withholding, so k is 1), or exact with the
    minimum group size k, whose shapes are checked; the table's terms where it has them, else the role's."""
    if q.table.privacy is not None:
        privacy, privacy_rule = q.table.privacy, f"{q.table_rule}.privacy"
    else:
        privacy, privacy_rule = q.role.privacy, f"roles.{q.role_name}.privacy"
    if q.table.min_group_size is not None:
        k, k_rule = q.table.min_group_size, f"{q.table_rule}.min_group_size"
    else:
        k, k_rule = q.role.min_group_size, f"roles.{q.role_name}.min_group_size"
    if privacy.mode == "dp":  # noise on every cell replaces withholding: whether a cell is withheld tells its count
        q.allowed.append(privacy_rule)
        return q.decision(1, privacy, privacy_rule)
    _shapes_allowed(q, k, k_rule)
    q.allowed.append(k_rule)
    return q.decision(k, Privacy(), privacy_rule)  # exact


# the stages of a query's check after the asker's (check_asker), in order; the last gives the decision
QUERY_STAGES: tuple[Callable[[_Query], None], ...] = (_aggregates_allowed, _columns_allowed)


def check_query(
    policy: Policy,
    catalog: Catalog,
    plan: Plan,
    asker: Asker,
    purpose: str,
    consent: bool,
    *,
    party: str,
) -> Decision:
    """Allow the request (a Decision) or raise PolicyViolation naming the rule that refused and how to ask: the
    asker's role, table, purpose and consent (:func:`check_asker`), then :data:`QUERY_STAGES`, then the
    privacy terms (:func:`_terms`)."""
    role, table_key, table, allowed = check_asker(policy, plan.table, asker, purpose, consent, party=party)
    columns = catalog.tables[plan.table].columns if plan.table in catalog.tables else {}
    q = _Query(
        policy=policy,
        plan=plan,
        refuse=_refuser(party),
        party=party,
        role_name=asker.role,
        role=role,
        table_key=table_key,
        table=table,
        table_rule=f"roles.{asker.role}.tables.{table_key}",
        columns=columns,
        analysis=analyse(plan, columns=columns),
        allowed=allowed,
    )
    for stage in QUERY_STAGES:
        stage(q)
    return _terms(q)


def check_lookup(
    policy: Policy,
    asker: Asker,
    purpose: str,
    consent: bool,
    subjects: int,
    breakdown: bool,
    *,
    party: str,
    asked: Collection[str] | None = None,
    everyone: Collection[str] | None = None,
    unclassified: Sequence[str] = (),
    facts: Sequence[str] = FACTS,
) -> Decision:
    """Allow a person lookup of ``subjects`` identifiers asking for ``facts`` (a Decision) or raise
    PolicyViolation with its rule.

    ``asked`` are the regions the lookup asks and ``everyone`` the catalog's (both None: every region). An answer
    from only some regions shows their own figures, so it is judged as a per-city answer (``breakdown``), except
    every region but the asker's home where the role's lookups say ``exclude_home`` and two or more remain.
    """

    refuse = _refuser(party)
    role_name = asker.role
    role = _role(policy, asker, refuse)
    lookups = role.lookups
    base = f"roles.{role_name}.lookups"
    if lookups is None:
        allowed = ", ".join(n for n, r in policy.roles.items() if r.lookups is not None) or "none"
        raise refuse(
            "POLICY_LOOKUP_DENIED",
            f"role {role_name} may not look people up at this node",
            base,
            f"roles that may look people up here: {allowed}",
        )
    if unclassified:  # what every lookup reads: no policy allows a column without a class, its lookups neither
        table, _, column = unclassified[0].partition(".")
        raise refuse(
            "POLICY_COLUMN_UNCLASSIFIED",
            f"a person lookup reads column {column} of {table}, which has no class in this node's catalog, so no "
            "policy allows it",
            "classes",
            f"an operator must classify it first: set class: (one of {', '.join(c.value for c in ColumnClass)}) "
            f"for tables.{table}.columns.{column} in the catalog every party holds",
        )
    purposes = " | ".join(lookups.purposes)
    if not purpose:
        raise refuse(
            "POLICY_PURPOSE_REQUIRED",
            "a person lookup needs a purpose",
            f"{base}.purposes",
            f"give --purpose {purposes}",
        )
    if purpose not in policy.purposes:
        raise refuse(
            "POLICY_PURPOSE_UNKNOWN",
            f"purpose {_show(purpose)} is not declared by this node",
            "purposes",
            f"purposes for a lookup here: {purposes}",
        )
    if purpose not in lookups.purposes:
        raise refuse(
            "POLICY_PURPOSE_NOT_ALLOWED",
            f"purpose {purpose!r} does not allow a person lookup by role {role_name}",
            f"{base}.purposes",
            f"purposes for a lookup here: {purposes}",
        )
    not_allowed = [f for f in facts if f not in lookups.facts]
    if not_allowed:
        raise refuse(
            "POLICY_FACTS_NOT_ALLOWED",
            f"role {role_name} may not receive {', '.join(_show(f) for f in not_allowed)} from a person lookup at "
            "this node",
            f"{base}.facts",
            f"facts for role {role_name} here: {', '.join(lookups.facts)} (hpf lookup/screen --facts)",
        )
    if lookups.consent == "required" and not consent:
        raise refuse(
            "POLICY_CONSENT_REQUIRED",
            "a person lookup needs the person's consent reference",
            f"{base}.consent",
            "give --consent REF: the reference of the consent record",
        )
    if subjects > lookups.max_subjects:
        raise refuse(
            "POLICY_LOOKUP_TOO_MANY",
            f"{subjects} people in one request; role {role_name} may ask about {lookups.max_subjects} at a time",
            f"{base}.max_subjects",
            f"send at most {lookups.max_subjects} per request",
        )
    per_city = " | ".join(lookups.breakdown) or "none"
    if breakdown and purpose not in lookups.breakdown:
        raise refuse(
            "POLICY_BREAKDOWN_DENIED",
            f"this node does not show its own figures for purpose {purpose!r}; only federation-wide totals",
            f"{base}.breakdown",
            f"ask without --by-city; purposes with a per-city answer here: {per_city}",
        )
    if asked is not None and everyone is not None and set(asked) != set(everyone):
        but_home = set(everyone) - {asker.region}
        home_left_out = set(asked) == but_home and len(but_home) < len(everyone)
        if not (lookups.exclude_home and home_left_out and len(but_home) >= 2) and purpose not in lookups.breakdown:
            raise refuse(
                "POLICY_BREAKDOWN_DENIED",
                "a lookup that leaves regions out shows the figures of those it asks; for purpose "
                f"{purpose!r} this node gives only federation-wide totals",
                f"{base}.exclude_home" if home_left_out else f"{base}.breakdown",
                "ask every region" + ("" if lookups.exclude_home else " (this role may not leave its home out)"),
            )
    return Decision(min_group_size=1, role=role_name, rules=(f"{base}.purposes",))
