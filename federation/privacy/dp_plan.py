"""A plan under differential privacy: what one person can change, the node SQL that bounds it, the noise.

Every party derives this from the plan, the catalog and the policy's (epsilon, delta, threshold) alone, so all
regions of a run add shares of the same noise and the client states the noise it carries without being told.

What bounds one person's effect (the catalog declares it; see :mod:`federation.catalog`):

- rows: a node keeps at most ``contribution.max_rows`` rows per person (those with the highest ``prefer``
  values, then in the order of all columns), and a person holds rows in at most ``contribution.max_regions``
  regions. The cap is on the table, before the WHERE: which rows count does not depend on the question, so a
  node can keep the capped table ready instead of ranking every row for every question;
- values: every column summed is clamped into its ``bounds`` before the aggregate's argument is computed; the
  argument may combine bounded columns and numbers with ``+ - *``, CAST and CASE, so its range follows.

So a component of ``P = max_rows * max_regions`` rows, each at most ``b`` in absolute value, moves by at most
``P * b`` in total over all cells (its L1 and L2 sensitivity: all of one person's rows may land in one cell).

A sum whose sensitivity is large travels in a coarser ``unit`` (a power of ten): a region sends
``unit * (round(partial / unit) + noise)``. Rounding a region's cell moves it by at most 1 unit, so the
sensitivity in units is ``ceil(P * b / unit) + P``; the unit is the smallest keeping the Skellam parameter at
most :data:`federation.privacy.skellam.MAX_MU`, where the sampler is exact.

sqlglot is imported only to parse a summed argument (:func:`_per_row`), so a client reading an exact answer's
terms never loads it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from hpf.federation.catalog import Catalog, Table
from hpf.federation.errors import PlanError
from hpf.federation.lru import Lru
from hpf.federation.plan import WITHHELD, Aggregate, Component, Plan
from hpf.federation.privacy import fixed_decimal, skellam

if TYPE_CHECKING:
    from sqlglot import exp

_HINT = (
    "under differential privacy an aggregate may sum only columns with declared bounds, combined with numbers "
    "by + - *, CAST and CASE"
)


@dataclass(frozen=True)
class ComponentNoise:
    """The noise one plan component carries: sensitivity and Skellam parameter in units of ``unit``."""

    sensitivity: int  # L1 = L2 bound of one person's effect, in units (0: no noise, the withheld mark)
    unit: int  # the component travels as unit * (rounded partial + noise)
    mu_nano: int  # Skellam parameter of the total noise in units (variance 2 * mu), in 1e-9: exact, as signed

    @property
    def mu(self) -> float:
        """The Skellam parameter as the double every party samples and states with (the same everywhere)."""
        return fixed_decimal.value_of(self.mu_nano, fixed_decimal.MU_PLACES)

    @property
    def sd(self) -> float:
        """The noise's standard deviation, in the component's own integer units (before its decimal scale)."""
        return self.unit * skellam.noise_sd(self.mu)


_MAX_MU_NANO = int(skellam.MAX_MU) * 10**fixed_decimal.MU_PLACES
_TERM_KEYS = frozenset({"epsilon", "delta", "threshold", "components"})


def _count(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("not a non-negative integer")
    return value


@dataclass(frozen=True)
class DpTerms:
    """What every answer of a DP run carries, and what the client shows: epsilon, delta, noise, threshold."""

    epsilon: float
    delta: float
    threshold: int
    components: tuple[ComponentNoise, ...]

    def canonical(self) -> dict[str, Any]:
        """The terms as the regions sign them and bind their masks to: integers, and fixed decimal strings
        (:mod:`federation.privacy.fixed_decimal`: epsilon with 9 places, delta 18, each mu 9), never a float."""
        fd = fixed_decimal
        return {
            "epsilon": fd.units_text(fd.units_of(self.epsilon, fd.EPSILON_PLACES), fd.EPSILON_PLACES),
            "delta": fd.units_text(fd.units_of(self.delta, fd.DELTA_PLACES), fd.DELTA_PLACES),
            "threshold": self.threshold,
            "components": [[c.sensitivity, c.unit, fd.units_text(c.mu_nano, fd.MU_PLACES)] for c in self.components],
        }

    @classmethod
    def from_canonical(cls, terms: Mapping[str, Any]) -> DpTerms:
        """The terms :meth:`canonical` wrote; ValueError for any other form (a float, a missing or extra field,
        a decimal with other places), so the terms read are exactly the bytes signed.

        >>> t = DpTerms(1.0, 1e-8, 20, (ComponentNoise(4, 1, 12_345_678_901),))
        >>> t.canonical()["epsilon"], t.canonical()["delta"], t.canonical()["components"]
        ('1.000000000', '0.000000010000000000', [[4, 1, '12.345678901']])
        >>> DpTerms.from_canonical(t.canonical()) == t
        True
        """
        fd = fixed_decimal
        if set(terms) != _TERM_KEYS or type(terms["components"]) is not list:
            raise ValueError("the DP terms are epsilon, delta, threshold and components")
        components = []
        for c in terms["components"]:
            if type(c) is not list or len(c) != 3:
                raise ValueError("a component's noise is [sensitivity, unit, mu]")
            components.append(ComponentNoise(_count(c[0]), _count(c[1]), fd.units_from_text(c[2], fd.MU_PLACES)))
        return cls(
            epsilon=fd.value_of(fd.units_from_text(terms["epsilon"], fd.EPSILON_PLACES), fd.EPSILON_PLACES),
            delta=fd.value_of(fd.units_from_text(terms["delta"], fd.DELTA_PLACES), fd.DELTA_PLACES),
            threshold=_count(terms["threshold"]),
            components=tuple(components),
        )


def _refuse(message: str) -> PlanError:
    return PlanError(message, code="DP_UNBOUNDED", hint=_HINT)


def _contribution(plan: Plan, catalog: Catalog) -> tuple[Table, int]:
    table = catalog.tables.get(plan.table)
    if table is None or table.contribution is None:
        raise _refuse(f"table {plan.table} declares no per-person contribution bound (contribution: in the catalog)")
    c = table.contribution
    return table, c.max_rows * c.max_regions


Interval = tuple[Fraction, Fraction] | None  # None: the expression is only ever NULL (nothing summed)


def _hull(a: Interval, b: Interval) -> Interval:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), max(a[1], b[1])


def _bounded(node: exp.Expr, table: Table) -> tuple[exp.Expr, Interval]:
    """``node`` with every column clamped into its bounds, and the range of values it can take."""
    from sqlglot import exp

    if isinstance(node, exp.Paren):
        inner, iv = _bounded(node.this, table)
        return exp.Paren(this=inner), iv
    if isinstance(node, exp.Null):
        return node, None
    if isinstance(node, exp.Literal) and not node.is_string:
        v = Fraction(Decimal(node.this))
        return node, (v, v)
    if isinstance(node, exp.Column):
        column = table.columns.get(node.name)
        if column is None or column.bounds is None:
            raise _refuse(f"column {node.name} has no declared bounds")
        lo, hi = column.bounds
        # a CASE, not GREATEST/LEAST: those skip NULLs, and a NULL must stay NULL (neither summed nor counted);
        # it is also the cheaper of the two in DuckDB
        # plain decimals (never 2E+6, which DuckDB reads as a DOUBLE and would make the sum inexact)
        low, high = exp.Literal.number(format(lo, "f")), exp.Literal.number(format(hi, "f"))
        clamped = exp.Case(
            ifs=[
                exp.If(this=exp.LT(this=node.copy(), expression=low), true=low.copy()),
                exp.If(this=exp.GT(this=node.copy(), expression=high), true=high.copy()),
            ],
            default=node.copy(),
        )
        return clamped, (Fraction(lo), Fraction(hi))
    if isinstance(node, exp.Neg):
        inner, iv = _bounded(node.this, table)
        return exp.Neg(this=inner), None if iv is None else (-iv[1], -iv[0])
    if isinstance(node, exp.Add | exp.Sub | exp.Mul):
        left, a = _bounded(node.this, table)
        right, b = _bounded(node.expression, table)
        out = type(node)(this=left, expression=right)
        if a is None or b is None:  # NULL in arithmetic is NULL: nothing summed
            return out, None
        if isinstance(node, exp.Add):
            return out, (a[0] + b[0], a[1] + b[1])
        if isinstance(node, exp.Sub):
            return out, (a[0] - b[1], a[1] - b[0])
        products = [x * y for x in a for y in b]
        return out, (min(products), max(products))
    if isinstance(node, exp.Cast):
        inner, inner_iv = _bounded(node.this, table)
        cast = node.copy()
        cast.set("this", inner)
        to = node.to
        if to.is_type(*exp.DataType.INTEGER_TYPES):
            scale = 0
        elif to.is_type(exp.DataType.Type.DECIMAL):
            params = [p.sql() for p in to.expressions]
            scale = int(params[1]) if len(params) > 1 else 3  # DuckDB's DECIMAL without a scale is (18, 3)
        else:
            raise _refuse(f"a CAST to {to.sql(dialect='duckdb')} in a summed argument has no known range")
        if inner_iv is not None:  # the cast rounds (half away from zero) to its scale: widen outward to it
            step = Fraction(1, 10**scale)
            inner_iv = (math.floor(inner_iv[0] / step) * step, math.ceil(inner_iv[1] / step) * step)
        return cast, inner_iv
    if isinstance(node, exp.Case) and node.this is None:
        case = node.copy()
        hull: Interval = None
        for when in case.args.get("ifs") or []:
            then, branch = _bounded(when.args["true"], table)
            when.set("true", then)
            hull = _hull(hull, branch)
        default = case.args.get("default")
        if default is not None:
            value, branch = _bounded(default, table)
            case.set("default", value)
            hull = _hull(hull, branch)
        return case, hull
    raise _refuse(f"{node.key.upper()} in a summed argument has no known range")


def _per_row(component: Component, table: Table) -> tuple[Component, Fraction]:
    """The component with its argument clamped, and the most one row adds to it (in its integer units)."""
    if component.kind == "count":
        return component, Fraction(1)
    assert component.arg is not None
    import sqlglot

    parsed: exp.Expr = sqlglot.parse_one(component.arg, read="duckdb")
    clamped, iv = _bounded(parsed, table)
    widest = Fraction(0) if iv is None else max(abs(iv[0]), abs(iv[1]))
    per_row = widest * widest if component.kind == "sumsq" else widest
    return dataclasses.replace(component, arg=clamped.sql(dialect="duckdb")), per_row * 10**component.scale


def capped_table_sql(name: str, table: Table) -> str:
    """The rows of table ``name`` that count under DP: at most ``max_rows`` per person (see the module)."""
    c = table.contribution
    assert c is not None
    order = ", ".join([*([f'"{c.prefer}" DESC'] if c.prefer else []), *(f'"{col}"' for col in table.columns)])
    return (
        f'SELECT * FROM "{name}" QUALIFY row_number() OVER (PARTITION BY "{c.person}" ORDER BY {order}) <= {c.max_rows}'
    )


def dp_plan(plan: Plan, catalog: Catalog) -> tuple[Plan, str]:
    """The plan with clamped arguments, and the FROM source of its capped table (``(capped) AS table``).

    Refused (DP_UNBOUNDED) when the table or a summed column declares no bound. Kept per plan and declared
    bounds, like :func:`dp_terms`.
    """
    key = (plan.fingerprint, _declared(plan, catalog))
    cached = _PLANS.get(key)
    if cached is None:
        cached = _clamped(plan, catalog)
        _PLANS.put(key, cached)
    return cached


def _clamped(plan: Plan, catalog: Catalog) -> tuple[Plan, str]:
    table, _ = _contribution(plan, catalog)
    components = tuple(c if c.kind == WITHHELD else _per_row(c, table)[0] for c in plan.components)
    return dataclasses.replace(plan, components=components), f"({capped_table_sql(plan.table, table)}) AS {plan.table}"


_TERMS: Lru[tuple[str, str, float, float, int, float], DpTerms] = Lru(256)
_PLANS: Lru[tuple[str, str], tuple[Plan, str]] = Lru(256)


def _declared(plan: Plan, catalog: Catalog) -> str:
    """What of the catalog a DP plan depends on beyond its fingerprint: the table's contribution and bounds."""
    table = catalog.tables.get(plan.table)
    return "" if table is None else repr((table.contribution, [c.bounds for c in table.columns.values()]))


def dp_terms(
    plan: Plan, catalog: Catalog, epsilon: float, delta: float, threshold: int, threshold_sd: float = 0.0
) -> DpTerms:
    """The noise of every component for (epsilon, delta)-DP of one answer (its RDP composed over components),
    and the threshold under which a group's noisy row count is not shown: ``threshold``, or ``threshold_sd``
    times the noise sd of COUNT(*) where that is more (the terms carry the larger, so every party agrees).

    Calibrating takes a few hundred milliseconds, so each party keeps the terms of the plans it has seen (by
    fingerprint and the table's declared bounds).
    """
    key = (plan.fingerprint, _declared(plan, catalog), epsilon, delta, threshold, threshold_sd)
    cached = _TERMS.get(key)
    if cached is None:
        cached = _calibrated(plan, catalog, epsilon, delta, threshold)
        # a group of no rows is noise alone: below threshold_sd noise sd of its row count, a group is not shown
        floor = math.ceil(threshold_sd * cached.components[0].sd) if threshold_sd > 0 else 0
        cached = dataclasses.replace(cached, threshold=max(threshold, floor))
        _TERMS.put(key, cached)
    return cached


def _calibrated(plan: Plan, catalog: Catalog, epsilon: float, delta: float, threshold: int) -> DpTerms:
    table, people_rows = _contribution(plan, catalog)
    per_row = [None if c.kind == WITHHELD else _per_row(c, table)[1] for c in plan.components]
    units = [1] * len(per_row)
    while True:
        sens = [
            0 if b is None else math.ceil(people_rows * b / u) + (people_rows if u > 1 else 0)
            for b, u in zip(per_row, units, strict=True)
        ]
        noisy = [i for i, s in enumerate(sens) if s > 0]
        mus = skellam.calibrate([skellam.ComponentNoise(sens[i], sens[i]) for i in noisy], epsilon, delta)
        # as signed: in nano-units, rounded up (a party samples with exactly what it signs, never less noise)
        nanos = [fixed_decimal.units_above(mu, fixed_decimal.MU_PLACES) for mu in mus]
        too_big = [i for i, nano in zip(noisy, nanos, strict=True) if nano > _MAX_MU_NANO]
        if not too_big:
            break
        if any(sens[i] <= 2 * people_rows for i in too_big):  # a coarser unit cannot shrink it below P rows
            raise _refuse(
                f"one person's {people_rows} rows (max_rows x max_regions) need more noise than can be drawn "
                f"exactly at epsilon {epsilon:g}"
            )
        for i in too_big:
            units[i] *= 10
    mu_of = dict(zip(noisy, nanos, strict=True))
    return DpTerms(
        epsilon=epsilon,
        delta=delta,
        threshold=threshold,
        components=tuple(
            ComponentNoise(sensitivity=s, unit=u, mu_nano=mu_of.get(i, 0))
            for i, (s, u) in enumerate(zip(sens, units, strict=True))
        ),
    )


def suppress_small_groups(plan: Plan, totals: dict[int, list[int]], threshold: int) -> tuple[dict[int, list[int]], int]:
    """A DP answer's cells without the groups whose noisy row count is below ``threshold``, and how many went.

    A grouped answer drops them (every cell of the domain carries noise, so the empty ones go too); an ungrouped
    answer keeps its one row with NULL aggregates, as SQL always returns one row, by marking it withheld.
    """
    if threshold <= 0:  # no threshold: every cell is shown, noise and all
        return totals, 0
    if not plan.keys:
        cell = totals.get(0)
        if cell is None or cell[0] >= threshold:
            return totals, 0
        blank = [0] * len(cell)
        blank[plan.withheld_index] = 1
        return {0: blank}, 1
    kept = {c: v for c, v in totals.items() if v[0] >= threshold}
    return kept, len(totals) - len(kept)


def plain_outputs(plan: Plan) -> dict[int, Aggregate]:
    """Output column position -> its aggregate, for the columns that are just one aggregate call (as written or
    aliased; not an expression over it)."""
    import sqlglot
    from sqlglot import exp

    select = sqlglot.parse_one(plan.finish_sql, read="duckdb")
    out = {}
    for i, item in enumerate(select.expressions[: len(plan.output_names)]):
        inner = item.this if isinstance(item, exp.Alias) else item
        if isinstance(inner, exp.Column) and inner.name.startswith("a") and inner.name[1:].isdigit():
            out[i] = plan.aggregates[int(inner.name[1:])]
    return out


def never_negative(plan: Plan, catalog: Catalog) -> dict[int, str]:
    """Output column position -> its aggregate function, for the columns that are just a COUNT, or a SUM or AVG
    of an argument that is never below 0 once its columns are clamped into their bounds: the true value of such a
    cell is never negative, so under DP a negative one is noise alone.
    """
    import sqlglot

    table = catalog.tables.get(plan.table)
    out = {}
    for i, agg in plain_outputs(plan).items():
        if agg.func in ("sum", "avg") and table is not None and agg.sum is not None:
            arg = plan.components[agg.sum].arg
            try:
                _, iv = _bounded(sqlglot.parse_one(arg or "NULL", read="duckdb"), table)
            except (PlanError, sqlglot.errors.SqlglotError):
                continue
            if iv is None or iv[0] >= 0:
                out[i] = agg.func
        elif agg.func == "count":
            out[i] = agg.func
    return out


def component_label(component: Component) -> str:
    """How an answer names a component whose noise it states, e.g. ``SUM(amount_fen)``."""
    arg = component.arg or "*"
    return {"count": f"COUNT({arg})", "sum": f"SUM({arg})", "sumsq": f"SUM(({arg})^2)"}.get(component.kind, "")
