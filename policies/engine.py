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
``POLICY_AGGREGATE_SHAPE``     with k > 1, an aggregate's argument computes a condition as a value (e.g.
                               ``SUM(CASE WHEN c THEN 1 ELSE 0 END)``), which would count rows k never sees
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
COMPUTED_NOTE = (
    "a comparison or a function of a column, anything but + - * and a CAST to a number, counts as a filter on it"
)
SHAPE_HINT = (
    "write it as AGG(x) FILTER (WHERE cond) or CASE WHEN cond THEN x END (no ELSE), so the minimum group size "
    "applies to the rows it covers"
)
ROLE_HINTS = {
    "auditor": "auditors run no data queries: read and verify a node's audit log with `hpf audit`",
}
_SHOWABLE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


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


# The value whitelist. A column keeps its own value (an ``aggregate`` use inside an aggregate's argument, a
# ``group`` use in a key) only through these; a CASE/IF condition makes it a ``filter`` use; anything else
# (a comparison, NOT/AND/OR, IN, BETWEEN, LIKE, IS, NULLIF, COALESCE, GREATEST/LEAST, SIGN, ABS, any other
# function, a cast to BOOLEAN or VARCHAR, TRY_CAST, division ...) can turn a value into a condition, so it is
# a ``filter`` use as well. Fail closed: a node type not named here is "anything else".
_ARITHMETIC = (exp.Paren, exp.Add, exp.Sub, exp.Mul, exp.Neg)
_NUMERIC_TYPES = frozenset(exp.DataType.NUMERIC_TYPES - {exp.DataType.Type.BIT})
# date parts the planner gives a domain (keys only): the date is their operand, the part a constant
_DATE_PART_FUNCS = (
    exp.Year,
    exp.Quarter,
    exp.Month,
    exp.Day,
    exp.DayOfMonth,
    exp.DayOfWeek,
    exp.DateTrunc,
    exp.TimestampTrunc,
)
_DATE_PART_NAMES = frozenset({"date_part", "datepart", "date_trunc"})

_VALUE, _CONDITION, _OTHER = "value", "condition", "other"


def _numeric_cast(node: exp.Expr) -> bool:
    """``CAST(x AS <number>)``: keeps x's value. TRY_CAST is no such cast: it makes out-of-range values NULL,
    which filters on them (``COUNT(TRY_CAST(x - 1000 AS UTINYINT))`` counts the x in 1000..1255)."""
    to = node.args.get("to")
    return type(node) is exp.Cast and isinstance(to, exp.DataType) and to.this in _NUMERIC_TYPES


def _date_part(child: exp.Expr, parent: exp.Expr) -> bool:
    """Whether ``parent`` takes a date part (year, quarter, month, ...) of ``child``."""
    if isinstance(parent, exp.Extract):
        return parent.args.get("expression") is child
    if isinstance(parent, _DATE_PART_FUNCS):
        return parent.args.get("this") is child
    if isinstance(parent, exp.Anonymous) and str(parent.this).lower() in _DATE_PART_NAMES:
        args = parent.expressions
        return len(args) == 2 and args[1] is child and isinstance(args[0], exp.Literal) and args[0].is_string
    return False


def _edge(child: exp.Expr, parent: exp.Expr, *, date_parts: bool) -> str:
    """How ``parent`` uses ``child``: keeps its value, tests it as a CASE/IF condition, or anything else."""
    if isinstance(parent, exp.If):  # a WHEN of a CASE, or IF(cond, a, b)
        return _CONDITION if parent.args.get("this") is child else _VALUE
    if isinstance(parent, exp.Case):  # CASE x WHEN ...: x is compared; else a WHEN (its If decides) or ELSE
        return _CONDITION if parent.args.get("this") is child else _VALUE
    if isinstance(parent, _ARITHMETIC):
        return _VALUE
    if _numeric_cast(parent) and parent.args.get("this") is child:
        return _VALUE
    if date_parts and _date_part(child, parent):
        return _VALUE
    return _OTHER


def _occurrence(col: exp.Column, root: exp.Expr, *, date_parts: bool) -> tuple[bool, bool]:
    """(in a condition, computed) for one column occurrence under ``root``.

    ``in a condition``: a CASE/IF condition is on its path. ``computed``: a node off the value whitelist is on
    its path, above the outermost condition if there is one (below it, comparisons are what conditions are).
    """
    in_condition = computed = False
    node: exp.Expr = col
    while node is not root and node.parent is not None:
        parent = node.parent
        edge = _edge(node, parent, date_parts=date_parts)
        if edge == _CONDITION:
            in_condition, computed = True, False
        elif edge == _OTHER:
            computed = True
        node = parent
    return in_condition, computed


def _columns(sql: str) -> list[exp.Column]:
    return list(_parse(sql).find_all(exp.Column))


@dataclass(frozen=True)
class _Uses:
    uses: dict[str, frozenset[str]]
    computed: frozenset[str]  # columns that are a filter use only because something computes on them


_USES: Lru[str, _Uses] = Lru(1024)  # by plan fingerprint: a plan's uses never change


def column_uses(plan: Plan) -> dict[str, set[str]]:
    """``{column: uses}`` of the plan's table: ``filter``, ``group``, ``output``, ``aggregate``.

    Fail closed, by a whitelist of nodes that keep a column's value: ``+ - *``, unary minus, parentheses,
    a CAST to a number, and the value (THEN / ELSE) of a CASE/IF.

    - WHERE: ``filter``.
    - An aggregate's argument: a column reached only through the whitelist is an ``aggregate`` use; one in a
      CASE/IF condition a ``filter`` use (an aggregate's FILTER clause arrives as ``CASE WHEN cond THEN x
      END``); one reached through anything else (a comparison, NULLIF, GREATEST, SIGN, a cast to BOOLEAN,
      any other function ...) both ``filter`` and ``aggregate``: ``SUM(CAST(x > 100 AS INTEGER))`` counts
      the rows with x > 100.
    - A GROUP BY key: ``group`` and ``output`` always (the slot layout is public and the asker decrypts
      every cell, so a key's values reach the asker whether or not the query returns them); ``filter`` as
      well when the column is in the key's CASE condition or under anything but the whitelist and a date
      part (``EXTRACT(YEAR FROM d)``, ``YEAR(d)``, ``date_part('month', d)``, ``date_trunc``).
    """
    return {column: set(u) for column, u in _analyse(plan).uses.items()}


def _analyse(plan: Plan) -> _Uses:
    cached = _USES.get(plan.fingerprint) if plan.fingerprint else None
    if cached is None:
        cached = _column_uses(plan)
        if plan.fingerprint:
            _USES.put(plan.fingerprint, cached)
    return cached


def _column_uses(plan: Plan) -> _Uses:
    uses: dict[str, set[str]] = defaultdict(set)
    explicit: set[str] = set()  # columns filtered on in WHERE or a condition
    computed: set[str] = set()
    if plan.where:
        for col in _columns(plan.where):
            uses[col.name].add("filter")
            explicit.add(col.name)
    for key in plan.keys:
        root = _parse(key.expr)
        for col in root.find_all(exp.Column):
            uses[col.name] |= {"group", "output"}
            in_condition, off = _occurrence(col, root, date_parts=True)
            if in_condition or off:
                uses[col.name].add("filter")
                (explicit if in_condition else computed).add(col.name)
    for component in plan.components:
        if component.arg is None:
            continue
        root = _parse(component.arg)
        for col in root.find_all(exp.Column):
            in_condition, off = _occurrence(col, root, date_parts=False)
            if in_condition:
                uses[col.name].add("filter")
                explicit.add(col.name)
            if off:
                uses[col.name].add("filter")
                if not in_condition:
                    computed.add(col.name)
            if off or not in_condition:
                uses[col.name].add("aggregate")
    return _Uses({c: frozenset(u) for c, u in uses.items()}, frozenset(computed - explicit))


def _k_countable(node: exp.Expr) -> bool:
    """Whether an aggregate argument is NULL exactly on the rows it does not cover, and a value (never a
    condition) on the rows it does; so its own count of non-NULL values is the number of rows it covers.

    Columns and literals; ``+ - *``, unary minus, parentheses, a CAST to a number (all NULL when an operand
    is); a CASE/IF with no ELSE (or ELSE NULL) whose WHENs all return the same value. ``CASE WHEN c THEN 1
    ELSE 0 END`` counts every row while its sum reveals how many match c; so do ``CAST(c AS INTEGER)`` and
    ``CASE WHEN c THEN 1 WHEN NOT c THEN 0 END``.
    """
    if isinstance(node, exp.Column | exp.Literal | exp.Null):
        return True
    if isinstance(node, exp.Paren | exp.Neg):
        return _k_countable(node.this)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul):
        return _k_countable(node.this) and _k_countable(node.expression)
    if _numeric_cast(node):
        return _k_countable(node.this)
    if isinstance(node, exp.Case | exp.If):
        branches = node.args.get("ifs", []) if isinstance(node, exp.Case) else [node]
        otherwise = node.args.get("default" if isinstance(node, exp.Case) else "false")
        if otherwise is not None and not isinstance(otherwise, exp.Null):
            return False
        values = [b.args.get("true") for b in branches if isinstance(b, exp.If)]
        if len(values) != len(branches) or any(v is None for v in values):
            return False
        returned = {v.sql("duckdb") for v in values if v is not None and not isinstance(v, exp.Null)}
        return len(returned) <= 1 and all(_k_countable(v) for v in values if v is not None)
    return False


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
    analysis = _analyse(plan)
    uses = analysis.uses
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
                hint = f"column {column} may be used here only {can}" if can else f"leave column {column} out"
                if use == "filter" and column in analysis.computed:
                    hint += f" ({COMPUTED_NOTE})"
                raise refuse(
                    "POLICY_COLUMN_DENIED",
                    f"column {column} ({cls.value}) may not be used {USE_PHRASES[use]}",
                    rule,
                    hint,
                )
        allowed.append(rule)

    if table.min_group_size is not None:
        k, k_rule = table.min_group_size, f"{table_rule}.min_group_size"
    else:
        k, k_rule = role.min_group_size, f"roles.{role_name}.min_group_size"
    if k > 1:
        for aggregate in plan.aggregates:
            arg = plan.components[aggregate.count].arg
            if arg is not None and not _k_countable(_parse(arg)):
                raise refuse(
                    "POLICY_AGGREGATE_SHAPE",
                    f"the argument of {aggregate.func.upper()} computes a condition as a value: it would count "
                    f"rows that the minimum group size ({k}) does not see",
                    k_rule,
                    SHAPE_HINT,
                )
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
