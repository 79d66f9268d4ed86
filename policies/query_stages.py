"""The stages of an aggregate question's check, after the asker's (:func:`policies.engine.check_asker`).

Each stage takes the :class:`QueryCheck` and refuses with a ``POLICY_`` code or appends the rules that allowed
it; :data:`QUERY_STAGES` runs them in order and :func:`terms` gives the answer's privacy terms last. The codes
and what they mean are listed in :mod:`policies.engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from hpf.federation.catalog import Column, ColumnClass
from hpf.federation.errors import PolicyViolation
from hpf.federation.plan import Plan
from hpf.policies.fields import USES
from hpf.policies.model import Policy, Privacy, RolePolicy, TablePolicy
from hpf.policies.refusals import unclassified_hint
from hpf.policies.uses import PlanUses

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


@dataclass
class QueryCheck:
    """What the stages judge, and what they have allowed so far (the rules, in order)."""

    policy: Policy
    plan: Plan
    columns: Mapping[str, Column]  # the catalog's columns of the plan's table
    analysis: PlanUses
    party: str
    role_name: str
    role: RolePolicy
    table_key: str
    table: TablePolicy
    table_rule: str
    allowed: list[str]

    def refuse(self, code: str, message: str, rule: str, hint: str) -> PolicyViolation:
        """A refusal whose rule names this node."""
        return PolicyViolation(message, code=code, rule=f"{self.party}: {rule}", hint=hint)


def _uses_for(q: QueryCheck, column: str, cls: ColumnClass) -> tuple[set[str], str]:
    """The uses allowed for one column, and the rule that says so."""
    if column in q.table.columns:
        return set(q.table.columns[column]), f"roles.{q.role_name}.tables.{q.table_key}.columns.{column}"
    if cls in q.role.classes:
        return set(q.role.classes[cls]), f"roles.{q.role_name}.classes.{cls.value}"
    return set(q.policy.classes.get(cls, [])), f"classes.{cls.value}"


def _aggregates_allowed(q: QueryCheck) -> None:
    """``POLICY_AGGREGATE_DENIED``: every aggregate function is one of the role's ``aggregates``."""
    denied = next((a.func for a in q.plan.aggregates if a.func not in q.role.aggregates), None)
    if denied is not None:
        raise q.refuse(
            "POLICY_AGGREGATE_DENIED",
            f"aggregate {denied.upper()} is not allowed for role {q.role_name}",
            f"roles.{q.role_name}.aggregates",
            f"aggregates role {q.role_name} may use: {', '.join(a.upper() for a in q.role.aggregates) or 'none'}",
        )
    if q.plan.aggregates:
        q.allowed.append(f"roles.{q.role_name}.aggregates")


def _column_use_refusal(
    q: QueryCheck, column: str, cls: ColumnClass, use: str, may: Collection[str], rule: str
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


def _columns_allowed(q: QueryCheck) -> None:
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
                unclassified_hint(q.plan.table, column),
            )
        may, rule = _uses_for(q, column, cls)
        for use in USES:
            if use in uses[column] and use not in may:
                raise _column_use_refusal(q, column, cls, use, may, rule)
        q.allowed.append(rule)


def _shapes_allowed(q: QueryCheck, k: int, k_rule: str) -> None:
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


def terms(q: QueryCheck) -> tuple[int, Privacy, str]:
    """The answer's privacy terms (the k its groups are released at, the privacy, where that was written): DP
    (noise on every cell replaces withholding, so k is 1), or exact with the minimum group size k, whose shapes
    are checked; the table's terms where it has them, else the role's."""
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
        return 1, privacy, privacy_rule
    _shapes_allowed(q, k, k_rule)
    q.allowed.append(k_rule)
    return k, Privacy(), privacy_rule  # exact


# the stages of a query's check after the asker's (check_asker), in order; terms() comes last
QUERY_STAGES: tuple[Callable[[QueryCheck], None], ...] = (_aggregates_allowed, _columns_allowed)
