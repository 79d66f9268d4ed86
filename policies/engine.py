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

The checks after the asker's are stages, each small and named, run in order by one loop:
:mod:`policies.query_stages` for a query, :mod:`policies.lookup_stages` for a lookup. How columns are used is
worked out by :mod:`policies.uses`; :class:`policies.rate_limit.RateLimiter` adds ``POLICY_RATE_LIMITED``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from hpf.federation.catalog import Catalog
from hpf.federation.consent.tokens import FACTS
from hpf.federation.errors import PolicyViolation
from hpf.federation.plan import Plan
from hpf.federation.regions import PROVINCES, province_of
from hpf.policies.asker_rules import SAME
from hpf.policies.fields import WILDCARD
from hpf.policies.lookup_stages import LOOKUP_STAGES, LookupCheck
from hpf.policies.model import Policy, Privacy, RolePolicy, TablePolicy
from hpf.policies.query_stages import QUERY_STAGES, QueryCheck, terms
from hpf.policies.refusals import show
from hpf.policies.uses import analyse

ROLE_HINTS = {
    "auditor": "auditors run no data queries: read and verify a node's audit log with `hpf audit`",
}
OPERATION_PHRASES = {"query": "aggregate questions", "explain": "explains", "lookup": "person lookups"}


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


# -- the checks ----------------------------------------------------------------------------------------

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
            f"role {show(name) if name else '(none)'} may not query this node",
            "roles",
            ROLE_HINTS.get(name, f"roles that may query this node: {', '.join(policy.roles) or 'none'}"),
        )
    return role


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
        + f"; the asker's home region {show(home)} is in {_place(home_code)}",
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
            f"the {show(purpose)} purpose does not allow role {role_name} to query {table_name}",
            purpose_rule,
            f"purposes that allow it: {', '.join(required)}",
        )
    if purpose and purpose not in policy.purposes:
        known = ", ".join(policy.purposes) or "none"
        raise refuse(
            "POLICY_PURPOSE_UNKNOWN",
            f"purpose {show(purpose)} is not one this node recognises",
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
    asker's role, table, purpose and consent (:func:`check_asker`), then
    :data:`~policies.query_stages.QUERY_STAGES`, then the privacy terms (:func:`~policies.query_stages.terms`)."""
    role, table_key, table, allowed = check_asker(policy, plan.table, asker, purpose, consent, party=party)
    columns = catalog.tables[plan.table].columns if plan.table in catalog.tables else {}
    q = QueryCheck(
        policy=policy,
        plan=plan,
        columns=columns,
        analysis=analyse(plan, columns=columns),
        party=party,
        role_name=asker.role,
        role=role,
        table_key=table_key,
        table=table,
        table_rule=f"roles.{asker.role}.tables.{table_key}",
        allowed=allowed,
    )
    for stage in QUERY_STAGES:
        stage(q)
    k, privacy, privacy_rule = terms(q)
    return Decision(
        min_group_size=k,
        role=asker.role,
        rules=tuple(f"{party}: {r}" for r in dict.fromkeys(q.allowed)),
        privacy=privacy,
        privacy_rule=privacy_rule,
    )


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
    PolicyViolation with its rule: the asker's role, whether it looks people up at all, then
    :data:`~policies.lookup_stages.LOOKUP_STAGES`.

    ``asked`` are the regions the lookup asks and ``everyone`` the catalog's (both None: every region). An answer
    from only some regions shows their own figures, so it is judged as a per-city answer (``breakdown``), except
    every region but the asker's home where the role's lookups say ``exclude_home`` and two or more remain.
    """
    refuse = _refuser(party)
    role = _role(policy, asker, refuse)
    if role.lookups is None:
        allowed = ", ".join(n for n, r in policy.roles.items() if r.lookups is not None) or "none"
        raise refuse(
            "POLICY_LOOKUP_DENIED",
            f"role {asker.role} may not look people up at this node",
            f"roles.{asker.role}.lookups",
            f"roles that may look people up here: {allowed}",
        )
    check = LookupCheck(
        policy=policy,
        party=party,
        role_name=asker.role,
        lookups=role.lookups,
        facts=tuple(facts),
        purpose=purpose,
        consent=consent,
        subjects=subjects,
        breakdown=breakdown,
        home=asker.region,
        regions=(asked, everyone) if asked is not None and everyone is not None else None,
        unclassified=unclassified,
    )
    for stage in LOOKUP_STAGES:
        stage(check)
    return Decision(min_group_size=1, role=asker.role, rules=(f"{check.base}.purposes",))
