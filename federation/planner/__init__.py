"""From SQL text to a :class:`federation.plan.Plan`: a tuple of small stages, each a pure function.

parse -> check_shape -> resolve_table/resolve_columns -> check_identifiers -> split_query -> bind.
Every party runs the same stages on the same catalog and gets the same plan (and fingerprint).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from sqlglot import exp

from federation.catalog import Catalog, Table
from federation.errors import PlanError
from federation.plan import WITHHELD, Aggregate, Component, GroupKey, Plan, fingerprint
from federation.planner.binder import CatalogKey, SchemaBinder, binder_for, exact_scale
from federation.planner.domains import coerce_to_type, key_domain
from federation.planner.resolve import check_identifiers, resolve_columns, resolve_table
from federation.planner.shape import check_shape, parse
from federation.planner.split import AggregateCall, Split, split_query

MAX_SLOTS = 64 * 4096  # 64 ciphertexts per node answer

COUNT_BITS, SUM_BITS, SUMSQ_BITS = 64, 90, 150
WITHHELD_BITS = 2  # a 0/1 mark per region: one limb, whose sum over 256 regions is checked to be 0..regions


def plan_query(sql: str, catalog: Catalog) -> Plan:
    """Check ``sql`` against ``catalog`` and derive its partial plan, or raise a PlanError.

    Plans are pure functions of (SQL, catalog), so the last few are cached.
    """
    return _cached_plan(sql, CatalogKey(catalog))


@lru_cache(maxsize=256)
def _cached_plan(sql: str, key: CatalogKey) -> Plan:
    return _derive_plan(sql, key.catalog)


def _derive_plan(sql: str, catalog: Catalog) -> Plan:
    tree = check_shape(parse(sql))
    table_name, table = resolve_table(tree, catalog)
    tree = resolve_columns(tree, table_name, table)
    binder = binder_for(catalog)
    split = split_query(tree, set(table.columns), binder.aggregate_functions)  # says why before who
    tree = check_identifiers(tree, table_name, table)
    where = tree.args.get("where")
    where_sql = where.this.sql("duckdb") if where is not None else None
    return _bind(split, table_name, table, where_sql, binder)


def _bind(split: Split, table_name: str, table: Table, where_sql: str | None, binder: SchemaBinder) -> Plan:
    key_sqls = [k.sql("duckdb") for k in split.keys]
    agg_sqls = [c.source.sql("duckdb") for c in split.calls]
    probe = "SELECT " + ", ".join([*key_sqls, *agg_sqls, "COUNT(*)"]) + f" FROM {table_name}"
    if where_sql:
        probe += f" WHERE {where_sql}"
    if key_sqls:
        probe += " GROUP BY " + ", ".join(key_sqls)
    types = binder.types(probe)
    key_types, agg_types = types[: len(key_sqls)], types[len(key_sqls) : len(key_sqls) + len(agg_sqls)]

    keys = []
    for key, sql, type_name in zip(split.keys, key_sqls, key_types, strict=True):
        values = key_domain(key, table)
        coerced = coerce_to_type(values, type_name) if values is not None else None
        if coerced is None:
            cols = sorted({c.name for c in key.find_all(exp.Column)})
            raise PlanError(
                f"GROUP BY {sql} has no declared finite domain",
                code="PLAN_GROUP_NO_DOMAIN",
                hint=(
                    f"declare a domain for {', '.join(cols)} in the catalog, or group by a declared column, "
                    "EXTRACT(YEAR|QUARTER|MONTH FROM a declared date) or CASE ... THEN literals"
                ),
            )
        keys.append(GroupKey(expr=sql, values=coerced, type=type_name))

    components: list[Component] = [Component("count", None, 0, COUNT_BITS)]

    def component(c: Component) -> int:
        if c not in components:
            components.append(c)
        return components.index(c)

    aggregates = []
    for call, result_type in zip(split.calls, agg_types, strict=True):
        aggregates.append(_aggregate(call, result_type, binder, table_name, component))
    components.append(Component(WITHHELD, None, 0, WITHHELD_BITS))  # every plan, so every party lays it out

    plan = Plan(
        table=table_name,
        where=where_sql,
        keys=tuple(keys),
        components=tuple(components),
        aggregates=tuple(aggregates),
        finish_sql=split.finish.sql("duckdb") if split.finish is not None else "",
        output_names=tuple(split.output_names),
        bare_key_outputs=tuple(split.bare_key_outputs),
    )
    if plan.layout.total > MAX_SLOTS:
        raise PlanError(
            f"the query needs {plan.layout.total} slots ({plan.layout.cells} groups); at most {MAX_SLOTS} fit",
            code="PLAN_TOO_LARGE",
            hint="group by fewer or smaller domains",
        )
    _check_finish(plan, binder)
    object.__setattr__(plan, "fingerprint", fingerprint(plan))
    return plan


def _aggregate(
    call: AggregateCall,
    result_type: str,
    binder: SchemaBinder,
    table_name: str,
    component: Callable[[Component], int],
) -> Aggregate:
    """The aggregate's finishing recipe; ``component`` returns the (shared) index of a needed component."""
    if call.arg is None:
        return Aggregate("count", count=0, result_type=result_type)
    arg_sql = call.arg.sql("duckdb")
    count = component(Component("count", arg_sql, 0, COUNT_BITS))
    if call.func == "count":
        return Aggregate("count", count=count, result_type=result_type)
    (arg_type,) = binder.types(f"SELECT {arg_sql} FROM {table_name}")
    scale = exact_scale(arg_type)
    if scale is None:
        raise PlanError(
            f"{call.func.upper()}'s argument must be an exact number (integer or DECIMAL), not {arg_type}",
            code="PLAN_INEXACT_ARGUMENT",
            hint="declare the column as DECIMAL(p,s) in the catalog, or CAST it to DECIMAL",
        )
    total = component(Component("sum", arg_sql, scale, SUM_BITS))
    if call.func in ("sum", "avg"):
        return Aggregate(call.func, count=count, sum=total, scale=scale, result_type=result_type)
    squares = component(Component("sumsq", arg_sql, 2 * scale, SUMSQ_BITS))
    return Aggregate(call.func, count=count, sum=total, sumsq=squares, scale=scale, result_type=result_type)


def finish_columns(plan: Plan) -> list[tuple[str, str]]:
    """Name and type of every ``__groups`` column: keys, aggregates, "other" flags."""
    cols = [(f"k{i}", k.type) for i, k in enumerate(plan.keys)]
    cols += [(f"a{i}", a.result_type) for i, a in enumerate(plan.aggregates)]
    cols += [(f"__other{i}", "BOOLEAN") for i in range(len(plan.keys))]
    return cols or [("dummy", "INTEGER")]


def finish_table_ddl(plan: Plan) -> str:
    return "CREATE TEMP TABLE __groups (" + ", ".join(f"{n} {t}" for n, t in finish_columns(plan)) + ")"


def _check_finish(plan: Plan, binder: SchemaBinder) -> None:
    """Bind the finishing query over an empty ``__groups`` of the right types."""
    empty = ", ".join(f"CAST(NULL AS {t}) AS {n}" for n, t in finish_columns(plan))
    try:
        binder.types(f"WITH __groups AS (SELECT {empty} WHERE FALSE) {plan.finish_sql}")
    except PlanError as err:
        raise PlanError(
            "the query's HAVING, ORDER BY or expressions over aggregates cannot be run: "
            + err.message.removeprefix("the query cannot be run: "),
            code="PLAN_BIND",
        ) from None
