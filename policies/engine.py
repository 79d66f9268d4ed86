"""Checking one request against a node's policy, and per-identity rate limits.

:func:`check_query` takes the plan the node derived itself (never the coordinator's) and refuses with a
:class:`~federation.errors.PolicyViolation` whose ``code`` is stable, whose ``message`` names tables, columns,
roles and purposes but never a value or a literal of the query, whose ``rule`` is the policy path that refused
(``hangzhou: roles.analyst.tables.loans.purposes``) and whose ``hint`` says how to ask instead.

The checks, in order, each with its code:

=============================  ============================================================================
``POLICY_ROLE_DENIED``         the asker's role is not under ``roles``
``POLICY_TABLE_DENIED``        the role lists neither the table nor ``"*"``
``POLICY_PURPOSE_REQUIRED``    the table (or role) requires a purpose and none was given
``POLICY_PURPOSE_NOT_ALLOWED`` the purpose given is not one the table (or role) accepts
``POLICY_PURPOSE_UNKNOWN``     the purpose given is not declared under ``purposes``
``POLICY_CONSENT_REQUIRED``    the table requires a consent reference and none was given
``POLICY_AGGREGATE_DENIED``    an aggregate function is not in the role's ``aggregates``
``POLICY_COLUMN_DENIED``       a column is used where its uses do not allow
=============================  ============================================================================

:class:`RateLimiter` adds ``POLICY_RATE_LIMITED``.

>>> from federation.catalog import Catalog
>>> from federation.planner import plan_query
>>> catalog = Catalog.model_validate({"federation": "f", "nodes": [{"id": "a", "address": "h:1"}],
...     "tables": {"t": {"columns": {"g": {"type": "VARCHAR", "domain": {"values": ["x", "y"]}},
...                                  "v": {"type": "BIGINT", "class": "sensitive"}}}}})
>>> uses = column_uses(plan_query("SELECT g, SUM(v) FILTER (WHERE v > 0) FROM t GROUP BY g", catalog))
>>> {column: sorted(u) for column, u in sorted(uses.items())}
{'g': ['group', 'output'], 'v': ['aggregate', 'filter']}
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp

from federation.catalog import Catalog, ColumnClass
from federation.errors import PolicyViolation
from federation.lru import Lru
from federation.plan import Plan
from policies.model import USES, WILDCARD, Policy, RateLimit, RolePolicy, TablePolicy

USE_PHRASES = {
    "output": "in the output",
    "filter": "in a filter",
    "group": "as a group key",
    "aggregate": "inside an aggregate",
}
ROLE_HINTS = {
    "auditor": "auditors run no data queries: read and verify a node's audit log with `hpf audit`",
}
_SHOWABLE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_KEY_REF = re.compile(r"^k(\d+)$")


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


# -- column uses ---------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _parse(sql: str) -> exp.Expression:
    """A plan's own SQL snippet (DuckDB dialect, made by the planner); cached, never mutated."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(tree, exp.Expression)
    return tree


def _in_condition(col: exp.Expr, root: exp.Expr) -> bool:
    """Whether ``col`` sits in a condition of a CASE/IF under ``root`` (a filter), not in a value it returns."""
    node: exp.Expr = col
    while node is not root and node.parent is not None:
        parent = node.parent
        if isinstance(parent, exp.If) and parent.args.get("this") is node:
            return True
        if isinstance(parent, exp.Case) and parent.args.get("this") is node:  # CASE x WHEN ...: x is compared
            return True
        node = parent
    return False


def _columns(sql: str) -> list[exp.Column]:
    return list(_parse(sql).find_all(exp.Column))


def output_keys(plan: Plan) -> set[int]:
    """Keys whose values reach the asker: returned as a column, or named by the finishing query at all
    (in an output expression, HAVING or ORDER BY), which ties rows to key values."""
    out = {i for i in plan.bare_key_outputs if i is not None}
    if plan.finish_sql:
        for col in _columns(plan.finish_sql):
            m = _KEY_REF.match(col.name)
            if m and int(m.group(1)) < len(plan.keys):
                out.add(int(m.group(1)))
    return out


_USES: Lru[str, dict[str, frozenset[str]]] = Lru(1024)  # by plan fingerprint: a plan's uses never change


def column_uses(plan: Plan) -> dict[str, set[str]]:
    """``{column: uses}`` of the plan's table: ``filter``, ``group``, ``output``, ``aggregate``.

    WHERE is a filter; so is a CASE/IF condition inside an aggregate's argument (an aggregate's FILTER clause
    arrives as ``CASE WHEN cond THEN x END``). A GROUP BY key's columns are ``group`` uses, and ``output``
    uses too when the key reaches the result. The rest of an aggregate's argument is an ``aggregate`` use.
    """
    cached = _USES.get(plan.fingerprint) if plan.fingerprint else None
    if cached is None:
        cached = {column: frozenset(u) for column, u in _column_uses(plan).items()}
        if plan.fingerprint:
            _USES.put(plan.fingerprint, cached)
    return {column: set(u) for column, u in cached.items()}


def _column_uses(plan: Plan) -> dict[str, set[str]]:
    uses: dict[str, set[str]] = defaultdict(set)
    if plan.where:
        for col in _columns(plan.where):
            uses[col.name].add("filter")
    shown = output_keys(plan)
    for i, key in enumerate(plan.keys):
        for col in _columns(key.expr):
            uses[col.name].add("group")
            if i in shown:
                uses[col.name].add("output")
    for component in plan.components:
        if component.arg is None:
            continue
        root = _parse(component.arg)
        for col in root.find_all(exp.Column):
            uses[col.name].add("filter" if _in_condition(col, root) else "aggregate")
    return dict(uses)


# -- the check -----------------------------------------------------------------------------------------


def _show(value: str) -> str:
    """A client-given code, quoted if it looks like a code, else not echoed."""
    return repr(value) if _SHOWABLE.match(value) else "given"


def _uses_for(
    policy: Policy, role_name: str, role: RolePolicy, table_key: str, table: TablePolicy, column: str, cls: ColumnClass
) -> tuple[set[str], str]:
    """The uses allowed for one column, and the rule that says so."""
    if column in table.columns:
        return set(table.columns[column]), f"roles.{role_name}.tables.{table_key}.columns.{column}"
    if cls in role.classes:
        return set(role.classes[cls]), f"roles.{role_name}.classes.{cls.value}"
    return set(policy.classes.get(cls, [])), f"classes.{cls.value}"


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
    """Allow the request (a Decision) or raise PolicyViolation naming the rule that refused and how to ask."""

    def refuse(code: str, message: str, rule: str, hint: str) -> PolicyViolation:
        return PolicyViolation(message, code=code, rule=f"{party}: {rule}", hint=hint)

    allowed: list[str] = []
    role_name = asker.role
    role = policy.roles.get(role_name)
    if role is None:
        roles = ", ".join(policy.roles) or "none"
        raise refuse(
            "POLICY_ROLE_DENIED",
            f"role {_show(role_name) if role_name else '(none)'} may not query this node",
            "roles",
            ROLE_HINTS.get(role_name, f"roles that may query this node: {roles}"),
        )
    allowed.append(f"roles.{role_name}")

    table_name = plan.table
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

    for aggregate in plan.aggregates:
        if aggregate.func not in role.aggregates:
            raise refuse(
                "POLICY_AGGREGATE_DENIED",
                f"aggregate {aggregate.func.upper()} is not allowed for role {role_name}",
                f"roles.{role_name}.aggregates",
                f"aggregates role {role_name} may use: {', '.join(a.upper() for a in role.aggregates) or 'none'}",
            )
    if plan.aggregates:
        allowed.append(f"roles.{role_name}.aggregates")

    columns = catalog.tables[table_name].columns if table_name in catalog.tables else {}
    uses = column_uses(plan)
    for column in sorted(uses):
        spec = columns.get(column)
        if spec is None:  # not from this catalog's table: nothing allows it
            raise refuse(
                "POLICY_COLUMN_DENIED",
                f"column {column} is not a column of {table_name} in this node's catalog",
                table_rule,
                "the coordinator and this node may hold different catalogs",
            )
        cls = spec.column_class
        may, rule = _uses_for(policy, role_name, role, table_key, table, column, cls)
        for use in USES:
            if use in uses[column] and use not in may:
                can = ", ".join(USE_PHRASES[u] for u in USES if u in may)
                raise refuse(
                    "POLICY_COLUMN_DENIED",
                    f"column {column} ({cls.value}) may not be used {USE_PHRASES[use]}",
                    rule,
                    f"column {column} may be used here only {can}" if can else f"leave column {column} out",
                )
        allowed.append(rule)

    if table.min_group_size is not None:
        k, k_rule = table.min_group_size, f"{table_rule}.min_group_size"
    else:
        k, k_rule = role.min_group_size, f"roles.{role_name}.min_group_size"
    allowed.append(k_rule)
    return Decision(min_group_size=k, role=role_name, rules=tuple(f"{party}: {r}" for r in dict.fromkeys(allowed)))


# -- rate limits ---------------------------------------------------------------------------------------


class RateLimiter:
    """At most ``limit.requests`` requests per identity in any ``limit.per_seconds`` window (a sliding log).

    Thread-safe. Memory is bounded: an identity keeps at most ``requests`` timestamps, identities idle past
    their window are forgotten, and beyond ``max_identities`` the least recently seen is dropped.
    """

    def __init__(self, max_identities: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._log: OrderedDict[str, tuple[float, deque[float]]] = OrderedDict()
        self._max = max_identities

    def __len__(self) -> int:
        with self._lock:
            return len(self._log)

    def take(self, key: str, limit: RateLimit | None, *, party: str, role: str, now: float | None = None) -> None:
        """Count one request by ``key``, or raise POLICY_RATE_LIMITED if its window is full (not counted then)."""
        if limit is None:
            return
        t = time.monotonic() if now is None else now
        with self._lock:
            self._forget_idle(t)
            window, stamps = self._log.pop(key, (limit.per_seconds, deque()))
            window = limit.per_seconds
            while stamps and stamps[0] <= t - window:
                stamps.popleft()
            while len(stamps) > limit.requests:  # the limit was lowered: keep the newest
                stamps.popleft()
            self._log[key] = (window, stamps)
            if len(stamps) >= limit.requests:
                wait = max(1, math.ceil(stamps[0] + window - t))
                raise PolicyViolation(
                    f"rate limit reached: {limit.requests} requests per {limit.per_seconds:g} s for role {role}",
                    code="POLICY_RATE_LIMITED",
                    rule=f"{party}: roles.{role}.rate_limit",
                    hint=f"wait {wait} s",
                )
            stamps.append(t)
            while len(self._log) > self._max:
                self._log.popitem(last=False)

    def _forget_idle(self, now: float) -> None:
        """Drop identities, least recently seen first, whose newest request left their window."""
        while self._log:
            key, (window, stamps) = next(iter(self._log.items()))
            if stamps and stamps[-1] > now - window:
                return
            del self._log[key]
